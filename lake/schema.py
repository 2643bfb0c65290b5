"""The Arrow schemas of every lake table: the single source of truth.

Lance tables are created from these schemas, DuckDB views read them, Parquet exports
write them, and ``docs/schema.md`` is checked against them by a test. Nothing else in
the code base spells out a column list.

Conventions:
- every row carries ``tenant``; tables are keyed by ``(tenant, <id>...)``;
- times are ``timestamp[us, UTC]``; free-form objects are JSON text (``meta``,
  ``attributes``) so DuckDB's ``json`` functions and ``->>`` work on them;
- columns whose name starts with ``_`` are internal (hashes used for idempotence) and
  are not shown in SQL views.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
JSON = pa.string()  # JSON text
JSON_COLUMNS = frozenset({"meta", "attributes", "detail", "stats"})  # typed JSON in SQL views

STATUSES = ("running", "succeeded", "failed", "abandoned")
STEP_KINDS = ("llm", "tool", "user", "observation", "error")  # other values are kept as given


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


TRAJECTORIES = pa.schema(
    [
        _f("tenant", pa.string(), "tenant that owns the row", False),
        _f("trajectory_id", pa.string(), "client-supplied id, unique per tenant", False),
        _f("task", pa.string(), "the task text the agent was given", False),
        _f("task_hash", pa.string(), "sha256 (16 hex) of the normalized task text", False),
        _f("agent", pa.string(), "agent name"),
        _f("agent_version", pa.string(), "agent version"),
        _f("model", pa.string(), "model the agent ran on"),
        _f("session_id", pa.string(), "conversation or session id"),
        _f("on_behalf_of", pa.string(), "user or principal the agent acted for"),
        _f("parent_id", pa.string(), "trajectory this one was forked from"),
        _f("fork_step", pa.int32(), "step index of the parent at which this run forked"),
        _f("status", pa.string(), "running | succeeded | failed | abandoned", False),
        _f("started_at", TS, "when the run started"),
        _f("ended_at", TS, "when the run ended"),
        _f("success", pa.bool_(), "outcome.success (null: unknown)"),
        _f("reward", pa.float64(), "outcome.reward"),
        _f("scores", pa.map_(pa.string(), pa.float64()), "outcome.scores: name -> value"),
        _f("n_steps", pa.int32(), "number of steps", False),
        _f("tokens_in", pa.int64(), "input tokens (given, else the sum over steps)"),
        _f("tokens_out", pa.int64(), "output tokens (given, else the sum over steps)"),
        _f("cost_usd", pa.float64(), "cost in USD (given, else the sum over steps)"),
        _f("tags", pa.list_(pa.string()), "free-form labels"),
        _f("meta", JSON, "JSON object: the record's meta plus every unmodelled field"),
        _f("ingested_at", TS, "when this version of the trajectory was accepted", False),
        _f("expires_at", TS, "not served after this time"),
        _f("retracted_at", TS, "when it was retracted (never served again; kept for audit)"),
        _f("retract_reason", pa.string(), "why it was retracted"),
        _f("_record_hash", pa.string(), "hash of the accepted record (idempotence)", False),
    ]
)

STEPS = pa.schema(
    [
        _f("tenant", pa.string(), "tenant that owns the row", False),
        _f("trajectory_id", pa.string(), "the trajectory the step belongs to", False),
        _f("index", pa.int32(), "position of the step in its trajectory (0-based)", False),
        _f("step_id", pa.string(), "client-supplied step id (default: the index)", False),
        _f("parent_step_id", pa.string(), "enclosing step (span tree)"),
        _f("kind", pa.string(), "llm | tool | user | observation | error (others kept)", False),
        _f("name", pa.string(), "tool name (tool steps) or model/function name"),
        _f("input", pa.string(), "input text; a preview when input_ref is set"),
        _f("output", pa.string(), "output text; a preview when output_ref is set"),
        _f("error", pa.string(), "error message, when the step failed"),
        _f("actor", pa.string(), "who acted: agent | user | system | ..."),
        _f("started_at", TS, "when the step started"),
        _f("duration_ms", pa.float64(), "duration in milliseconds"),
        _f("tokens_in", pa.int64(), "input (prompt) tokens"),
        _f("tokens_out", pa.int64(), "output (completion) tokens"),
        _f("cost_usd", pa.float64(), "cost in USD"),
        _f("attributes", JSON, "JSON object: the step's attributes plus every unmodelled field"),
        _f("input_ref", pa.string(), "sha256 of the full input in `payloads`, when large"),
        _f("output_ref", pa.string(), "sha256 of the full output in `payloads`, when large"),
    ]
)

PAYLOADS = pa.schema(
    [
        _f("tenant", pa.string(), "tenant that owns the row", False),
        _f("sha256", pa.string(), "sha256 of the UTF-8 payload", False),
        _f("size", pa.int64(), "payload size in bytes", False),
        _f("data", pa.large_string(), "the full payload text", False),
    ]
)

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2; another embedder brings its own table

# The semantic cache ------------------------------------------------------------------------
# Vectors are a content-addressed cache: (model, hash of the normalized text) -> vector. A
# trajectory's vector is its task_hash's row, so the same task text is embedded once, for
# every tenant and every lake version (a vector is a fact about a text, never stale).
EMBEDDINGS = pa.schema(
    [
        _f("model_id", pa.string(), "embedder that made the vector", False),
        _f("text_hash", pa.string(), "task_hash of the embedded (normalized) text", False),
        _f("vector", pa.list_(pa.float32(), EMBEDDING_DIM), "L2-normalized embedding", False),
    ]
)

CLUSTERS = pa.schema(
    [
        _f("tenant", pa.string(), "tenant that owns the row", False),
        _f("cluster_id", pa.int32(), "cluster number within the tenant's current fit", False),
        _f("size", pa.int64(), "member trajectories", False),
        _f("label", pa.string(), "the member task nearest the centroid"),
        _f("success_rate", pa.float64(), "share of members that succeeded (known outcomes)"),
        _f("hit_threshold", pa.float64(), "calibrated cosine above which a slot-equal match "
           "is a `hit`", False),
        _f("stats", JSON, "JSON: how the cluster was fitted, to reload it "
           "(`{\"fit\": {embedder, norm, n_probe, beta, exact, seed}}`)"),
        _f("centroid", pa.list_(pa.float32(), EMBEDDING_DIM), "unit-length centroid", False),
        _f("fitted_at", TS, "when the clustering was fitted", False),
    ]
)

CLUSTER_MEMBERS = pa.schema(
    [
        _f("tenant", pa.string(), "tenant that owns the row", False),
        _f("trajectory_id", pa.string(), "member trajectory", False),
        _f("cluster_id", pa.int32(), "its cluster", False),
        _f("similarity", pa.float32(), "cosine to the cluster centroid", False),
    ]
)

CONTEXTS = pa.schema(
    [
        _f("tenant", pa.string(), "tenant that owns the row", False),
        _f("context_id", pa.string(), "id returned with the context", False),
        _f("created_at", TS, "when it was served", False),
        _f("query", pa.string(), "query text (null for a vector query)"),
        _f("agent", pa.string(), "agent that asked"),
        _f("verdict", pa.string(), "exact | hit | similar | miss", False),
        _f("cluster_id", pa.int32(), "the query's cluster"),
        _f("top_similarity", pa.float64(), "cosine of the best neighbour"),
        _f("slots_equal", pa.bool_(), "the best neighbour's slots equal the query's"),
        _f("neighbors", pa.list_(pa.string()), "trajectory ids served, best first"),
        _f("lake_version", pa.int64(), "lake version the context was computed from"),
        _f("top_success", pa.bool_(), "the best neighbour's outcome when served (null: "
           "unknown; a failed one says nothing of the hit threshold)"),
    ]
)

FEEDBACK = pa.schema(
    [
        _f("tenant", pa.string(), "tenant that owns the row", False),
        _f("context_id", pa.string(), "the context reported on", False),
        _f("reported_at", TS, "when", False),
        _f("used", pa.bool_(), "the agent used the context"),
        _f("success", pa.bool_(), "the agent's run succeeded"),
        _f("reward", pa.float64(), "the agent's reward"),
        _f("trajectory_id", pa.string(), "the run that used the context, if known"),
        _f("verdict", pa.string(), "the verdict that was served"),
        _f("cluster_id", pa.int32(), "the query's cluster"),
        _f("top_similarity", pa.float64(), "cosine of the best neighbour served"),
    ]
)

# Lake-level versions: each row pins one Lance version of every table.
VERSIONS = pa.schema(
    [
        _f("version", pa.int64(), "lake version number (1, 2, ...)", False),
        _f("created_at", TS, "commit time", False),
        _f("operation", pa.string(), "create | ingest | compact | restore | ...", False),
        _f("tables", JSON, "JSON object: table name -> Lance version", False),
        _f("writer", pa.string(), "id of the write-ahead log that made the commit", False),
        _f("wal_lsn", pa.int64(), "last log sequence number applied by this commit", False),
        _f("detail", JSON, "JSON object: what the commit did (counts, restored version...)"),
    ]
)

TAGS = pa.schema(
    [
        _f("name", pa.string(), "tag name", False),
        _f("version", pa.int64(), "lake version the tag points at", False),
        _f("created_at", TS, "when the tag was set", False),
    ]
)

# System tables: outside the per-version pinning, so a restore never brings back a revoked
# token nor rewrites the audit trail. Written directly (no write-ahead log), by any process.
TOKENS = pa.schema(
    [
        _f("token_id", pa.string(), "public id, the `<id>` of `cl_<id>_<secret>`", False),
        _f("tenant", pa.string(), "tenant every call with the token acts as", False),
        _f("agent", pa.string(), "agent identity the token stands for", False),
        _f("scopes", pa.list_(pa.string()), "ingest | read | admin", False),
        _f("secret_sha256", pa.string(), "sha256 (hex) of the secret; the secret is never stored",
           False),
        _f("created_at", TS, "when the token was created", False),
        _f("revoked_at", TS, "when it was revoked (null: valid)"),
    ]
)

AUDIT = pa.schema(
    [
        _f("tenant", pa.string(), "the caller's tenant (of a revoked or wrongly-signed token: "
           "the token's); empty when the caller is unknown", False),
        _f("time", TS, "when it happened", False),
        _f("actor", pa.string(), "agent of the token, `anonymous` (also a token's id with a "
           "wrong secret), or `cli:<user>`", False),
        _f("token_id", pa.string(), "id of the token used or tried, when there was one"),
        _f("action", pa.string(),
           "RPC (`AdminService/Restore`) or command (`restore`, `token.create`)", False),
        _f("resource", pa.string(), "what it acted on: `version 3`, `tag before`, `token ab12`; "
           "of a refused call, its top-level text and number fields (`trajectory_id: 'r1'`)"),
        _f("outcome", pa.string(), "ok, or the refusal: unauthenticated, permission_denied, ...",
           False),
        _f("detail", JSON, "JSON object: the error message, the caller's address, ..."),
    ]
)
SYSTEM_TABLES: dict[str, pa.Schema] = {"tokens": TOKENS}

# Data tables (tenant-scoped, shown in SQL) and internal catalog tables.
DATA_TABLES: dict[str, pa.Schema] = {
    "trajectories": TRAJECTORIES,
    "steps": STEPS,
    "payloads": PAYLOADS,
    "clusters": CLUSTERS,
    "cluster_members": CLUSTER_MEMBERS,
}
# Append-only logs of what happened: tenant-scoped views read at their latest; a restore
# does not roll them back and appending to them makes no lake version.
LOG_TABLES: dict[str, pa.Schema] = {
    "contexts": CONTEXTS,
    "feedback": FEEDBACK,
    "audit": AUDIT,
}
CATALOG_TABLES: dict[str, pa.Schema] = {"_versions": VERSIONS, "_tags": TAGS,
                                        "_embeddings": EMBEDDINGS}
# The lake's on-disk format, recorded by the versions that create or migrate a lake. Bump it
# when this package writes what an older one cannot read or write (a column it would not
# fill, a changed meaning): an older package then refuses the lake instead of damaging it.
# Adding nullable columns alone needs no bump: an older package ignores them.
FORMAT = 1

ALL_TABLES: dict[str, pa.Schema] = {**DATA_TABLES, **LOG_TABLES, **CATALOG_TABLES,
                                     **SYSTEM_TABLES}

# Primary keys (used by upserts and documented in docs/schema.md).
KEYS: dict[str, tuple[str, ...]] = {
    "trajectories": ("tenant", "trajectory_id"),
    "steps": ("tenant", "trajectory_id", "index"),
    "payloads": ("tenant", "sha256"),
    "clusters": ("tenant", "cluster_id"),
    "cluster_members": ("tenant", "trajectory_id"),
    "contexts": ("tenant", "context_id"),
    "feedback": ("tenant", "context_id", "reported_at"),
    "_embeddings": ("model_id", "text_hash"),
    "_versions": ("version",),
    "_tags": ("name",),
    "tokens": ("token_id",),
}


def public_columns(schema: pa.Schema) -> list[str]:
    """Columns shown to users (SQL views, exports): internal ``_`` columns hidden."""
    return [f.name for f in schema if not f.name.startswith("_")]


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def markdown() -> str:
    """docs/schema.md, generated from the schemas above (a test keeps the file in sync)."""
    out = ["# Lake tables", "",
           "Generated from `lake/schema.py` by `lake schema`; do not edit by hand.", "",
           "Every table is a Lance dataset under the lake root (`<root>/<table>.lance`). SQL "
           "views (`lake sql`) show one tenant's rows and hide internal `_` columns. "
           "`meta` / `attributes` are JSON (`meta->>'domain'`).", ""]
    for name, schema in {**DATA_TABLES, **LOG_TABLES}.items():
        kind = ("versioned: `--as-of` reads it as it was" if name in DATA_TABLES else
                "append-only log, not versioned: `--as-of` and `lake restore` leave it as it is")
        key = f"Key: `({', '.join(KEYS[name])})`; " if name in KEYS else ""
        out += [f"## `{name}`", "", f"{key}{kind}.", "",
                "| column | type | null | meaning |", "| --- | --- | --- | --- |"]
        out += [_row(f) for f in schema if not f.name.startswith("_")] + [""]
    out += ["`audit` rows of callers whose tenant is unknown have an empty tenant: "
            "`--all-tenants` shows them.", ""]
    out += ["## `versions`", "",
            "One row per lake version: `version`, `created_at`, `operation` (create, ingest, "
            "replay, compact, restore), `tags`, `detail`. Each version pins one Lance version "
            "of every table; `lake sql --as-of VERSION|TAG` reads the lake as it was then.", ""]
    return "\n".join(out)


def _row(f: pa.Field) -> str:
    doc = (f.metadata or {}).get(b"doc", b"").decode().replace("|", "\\|")
    return f"| `{f.name}` | `{f.type}` | {'yes' if f.nullable else 'no'} | {doc} |"
