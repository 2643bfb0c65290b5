"""Training datasets from the lake: ``sft``, ``preference`` and ``rft`` JSONL, with a manifest.

    result = export_dataset(lake, "sft", "out/", where="agent = 'gpt-4.1'", as_of="v1")
    # out/sft.jsonl, out/sft.manifest.json

Every read is pinned to one lake version (``as_of``: a number or a tag; default the
latest) and one tenant. ``where`` is a SQL predicate over the ``trajectories`` view (any
column of docs/schema.md; subqueries over ``steps`` work too). Retracted trajectories
are never exported, nor those expired at the version's commit time.

Kinds (one JSON object per line, ordered by trajectory id / task hash):

``sft``         each successful trajectory (``success = true``) as a chat: ``messages`` of
                ``user`` / ``assistant`` (with ``tool_calls``) / ``tool`` turns; see ``chat``.
``preference``  pairs ``chosen`` (a success) / ``rejected`` (a failure) of the same task:
                same ``task_hash`` (``match: "task_hash"``); else, for tasks whose runs
                all succeeded or all failed, a task of the same cluster that the semantic
                cache would call a ``hit`` (``match: "cluster"``, see ``CLUSTER_RULE``).
``rft``         one task per line: its runs, success rate, rewards, and the reference tool
                plan of its best successful run (``reference``; null when none succeeded).

The manifest (``<kind>.manifest.json``) names the lake version, the ``as_of`` given, the
tenant, the filter, the rules, the counts, and each file's size and sha256. Output is
deterministic: the same version, kind, tenant and filter give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from .errors import InvalidArgument
from .tables import quote

if TYPE_CHECKING:
    from .lake import Lake
    from .versions import Version

FORMAT = "context-lake.dataset/1"
KINDS = ("sft", "preference", "rft")
CLUSTER_RULE = ("runs of different task hashes in the same cluster, paired only when the "
                "semantic cache's verdict between the two task texts is `hit` (cosine of the "
                "stored embeddings >= the cluster's calibrated hit_threshold, at least "
                "lake.verdict.MIN_THRESHOLD = 0.80, and every slot equal), greedily by "
                "cosine, each task hash used at most once")
CHAT_RULE = ("user steps -> user turns (input, else output); llm steps -> assistant turns "
             "(output); a tool step -> a call (id call_<step index>) in the assistant turn "
             "before it, or a new one after a user turn, plus a tool turn with its result "
             "(else its error); other step kinds left out; no user step: the task is the "
             "first user turn")
TASK_HASH_RULE = ("within a task hash, successes sorted by (reward desc, id) and failures "
                  "by (reward asc, id) are paired round robin: max(successes, failures) "
                  "pairs, every run used, never two successes or two failures")
BATCH = 512
Progress = Callable[[int, int], None]


@dataclass
class DatasetResult:
    kind: str
    directory: str
    manifest: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "directory": self.directory, **self.manifest}


def export_dataset(lake: Lake, kind: str, out_dir: str | Path, *, where: str | None = None,
                   as_of: int | str | None = None, tenant: str | None = None,
                   on_progress: Progress | None = None) -> DatasetResult:
    """Write ``<kind>.jsonl`` and ``<kind>.manifest.json`` under ``out_dir``."""
    if kind not in KINDS:
        raise InvalidArgument(f"dataset kind {kind!r} is not one of {', '.join(KINDS)}",
                              field="kind")
    version = lake.version(as_of)
    tenant = tenant or lake.settings.tenant
    con = lake.connect(as_of=version.version, tenant=tenant)
    sel = _selection(con, where, version)
    gone = sorted(tid for _, tid in lake.retractions(tenant))  # since ``version`` too
    retracted_since = 0
    if gone:
        kept = f"{sel} AND trajectory_id NOT IN ({', '.join(quote(t) for t in gone)})"
        retracted_since = _count(con, sel) - _count(con, kept)
        sel = kept
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tick = on_progress or (lambda done, total: None)
    writer = {"sft": _sft, "preference": _preference, "rft": _rft}[kind]
    with _JsonlFile(out / f"{kind}.jsonl") as f:
        counts, rules = writer(lake, con, sel, f, tick)
    manifest = {
        "format": FORMAT, "kind": kind,
        "lake": {"version": version.version, "as_of": None if as_of is None else str(as_of),
                 "created_at": _iso(version.created_at)},
        "tenant": tenant, "where": where, "rules": rules,
        "counts": {**counts, "retracted_since": retracted_since},
        "files": [f.describe()],
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(out / f"{kind}.manifest.json", text.encode())
    return DatasetResult(kind, str(out), manifest)


# -- selection -------------------------------------------------------------------------------

def _selection(con: duckdb.DuckDBPyConnection, where: str | None, version: Version) -> str:
    """The SQL condition on ``trajectories`` that every kind starts from (checked here)."""
    served = (f"retracted_at IS NULL AND (expires_at IS NULL OR expires_at > "
              f"TIMESTAMPTZ {quote(_iso(version.created_at))})")
    if where is None or not where.strip():
        return served
    probe = f"SELECT trajectory_id FROM trajectories WHERE ({where}) LIMIT 0"
    try:
        if len(duckdb.extract_statements(probe)) != 1:
            raise InvalidArgument(f"--where {where!r} must be one predicate, not several "
                                  "statements", field="where")
        con.sql(probe).fetchall()
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0]
        raise InvalidArgument(f"--where {where!r} is not a SQL predicate over the trajectories "
                              f"view: {first}; e.g. --where \"agent = 'support-bot' and reward "
                              ">= 0.5\" (columns: docs/schema.md)", field="where") from e
    return f"{served} AND ({where})"


def _rows(con: duckdb.DuckDBPyConnection, query: str) -> Iterator[dict[str, Any]]:
    """Rows of ``query`` as dicts, streamed in Arrow batches."""
    try:
        reader = con.sql(query).to_arrow_reader(batch_size=BATCH)
        for batch in reader:
            yield from batch.to_pylist()
    except duckdb.Error as e:  # a --where that binds but fails on some row (a cast...)
        raise InvalidArgument(f"reading the dataset failed: {str(e).splitlines()[0]}; "
                              "check --where", field="where") from e


def _with_steps(sel: str, cols: str, step_filter: str = "true") -> str:
    """Trajectories matching ``sel`` with their steps (full payloads) in ``steps``, by id."""
    return f"""
    WITH t AS (SELECT {cols} FROM trajectories WHERE {sel}),
    s AS (
      SELECT s.trajectory_id, s."index", s.kind, s.name,
             coalesce(pi.data, s.input) AS input, coalesce(po.data, s.output) AS output, s.error
      FROM steps s
      LEFT JOIN payloads pi ON pi.sha256 = s.input_ref
      LEFT JOIN payloads po ON po.sha256 = s.output_ref
      WHERE s.trajectory_id IN (SELECT trajectory_id FROM t) AND ({step_filter}))
    SELECT t.*, list(struct_pack("index" := s."index", kind := s.kind, name := s.name,
                                 input := s.input, output := s.output, error := s.error)
                     ORDER BY s."index") FILTER (WHERE s."index" IS NOT NULL) AS steps
    FROM t LEFT JOIN s USING (trajectory_id)
    GROUP BY ALL ORDER BY t.trajectory_id"""


def _count(con: duckdb.DuckDBPyConnection, sel: str) -> int:
    return int(next(_rows(con, f"SELECT count(*) AS n FROM trajectories WHERE {sel}"))["n"])


# -- chat messages ---------------------------------------------------------------------------

def chat(task: str, steps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """A trajectory as chat messages (OpenAI style); returns (messages, steps left out).

    ``user`` steps -> user turns (their input, else output); ``llm`` steps -> assistant
    turns (their output); a ``tool`` step -> a call in the assistant turn before it (a new
    empty assistant turn when a user turn came in between) plus a ``tool`` turn with its
    result (or error). Call ids are ``call_<step index>``. Other kinds are left out. A
    trajectory without user steps starts with its task as the user turn."""
    msgs: list[dict[str, Any]] = []
    if not any(s["kind"] == "user" for s in steps):
        msgs.append({"role": "user", "content": task})
    left_out = 0
    turn: dict[str, Any] | None = None  # the assistant turn tool calls attach to
    for s in steps:
        kind = s["kind"]
        if kind == "user":
            msgs.append({"role": "user", "content": s["input"] or s["output"] or ""})
            turn = None
        elif kind == "llm":
            turn = {"role": "assistant", "content": s["output"] or None}
            msgs.append(turn)
        elif kind == "tool" and s["name"]:
            if turn is None:
                turn = {"role": "assistant", "content": None}
                msgs.append(turn)
            cid = f"call_{s['index']}"
            turn.setdefault("tool_calls", []).append(
                {"id": cid, "type": "function",
                 "function": {"name": s["name"], "arguments": s["input"] or "{}"}})
            result = s["output"] if s["output"] is not None else s["error"]
            msgs.append({"role": "tool", "tool_call_id": cid, "name": s["name"],
                         "content": result or ""})
        else:
            left_out += 1
    return msgs, left_out


# -- sft ---------------------------------------------------------------------------------------

def _sft(lake: Lake, con: duckdb.DuckDBPyConnection, sel: str, f: _JsonlFile,
         tick: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    sel = f"{sel} AND success"
    total = _count(con, sel)
    counts = {"trajectories": 0, "messages": 0, "tool_calls": 0, "steps_left_out": 0}
    cols = "trajectory_id, task, task_hash, agent, agent_version, model, reward"
    for row in _rows(con, _with_steps(sel, cols)):
        msgs, left_out = chat(row["task"], row.pop("steps") or [])
        f.write({**row, "messages": msgs})
        counts["trajectories"] += 1
        counts["messages"] += len(msgs)
        counts["tool_calls"] += sum(len(m.get("tool_calls", ())) for m in msgs)
        counts["steps_left_out"] += left_out
        if counts["trajectories"] % BATCH == 0:
            tick(counts["trajectories"], total)
    tick(counts["trajectories"], total)
    return counts, {"select": "success = true", "messages": CHAT_RULE}


# -- preference ----------------------------------------------------------------------------------

def _preference(lake: Lake, con: duckdb.DuckDBPyConnection, sel: str, f: _JsonlFile,
                tick: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    sel = f"{sel} AND success IS NOT NULL"
    runs = list(_rows(con, f"""
        SELECT t.trajectory_id, t.task, t.task_hash, t.success, t.reward, m.cluster_id,
               c.hit_threshold
        FROM trajectories t LEFT JOIN cluster_members m USING (trajectory_id)
        LEFT JOIN clusters c ON c.cluster_id = m.cluster_id
        WHERE {sel} ORDER BY t.trajectory_id"""))
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        groups[r["task_hash"]].append(r)
    pairs = [(a, b, "task_hash", 1.0) for h in sorted(groups)
             for a, b in _round_robin(groups[h])]
    lonely = {h: g for h, g in groups.items() if len({r["success"] for r in g}) == 1}
    matched, note = _cluster_matches(lake, lonely)
    for h1, h2, cos in matched:
        pairs += [(a, b, "cluster", cos) for a, b in _round_robin(lonely[h1] + lonely[h2])]
    wanted = sorted({r["trajectory_id"] for a, b, _, _ in pairs for r in (a, b)})
    sides = _sides(con, sel, wanted, tick)
    for a, b, match, cos in pairs:
        head = orjson.dumps({"task_hash": a["task_hash"], "match": match,
                             "similarity": round(float(cos), 6)})
        f.write_raw(head[:-1] + b',"chosen":' + sides[a["trajectory_id"]] + b',"rejected":'
                    + sides[b["trajectory_id"]] + b"}")
    counts = {"pairs": len(pairs), "pairs_task_hash": sum(p[2] == "task_hash" for p in pairs),
              "pairs_cluster": sum(p[2] == "cluster" for p in pairs),
              "trajectories": len(wanted), "tasks": len(groups),
              "tasks_one_outcome": len(lonely)}
    return counts, {"select": "success is not null", "task_hash": TASK_HASH_RULE,
                    "cluster": CLUSTER_RULE, "cluster_note": note}


def _sides(con: duckdb.DuckDBPyConnection, sel: str, ids: list[str],
           tick: Progress) -> dict[str, bytes]:
    """The JSON of each paired run (id, task, agent, model, reward, messages), by id."""
    sides: dict[str, bytes] = {}
    if not ids:
        return sides
    name = f"_pairs_{uuid.uuid4().hex}"
    con.register(name, pa.table({"trajectory_id": pa.array(ids, pa.string())}))
    try:
        only = f"{sel} AND trajectory_id IN (SELECT trajectory_id FROM {name})"
        for row in _rows(con, _with_steps(only, "trajectory_id, task, agent, model, reward")):
            msgs, _ = chat(row["task"], row.pop("steps") or [])
            sides[row["trajectory_id"]] = orjson.dumps({**row, "messages": msgs})
            tick(len(sides), len(ids))
    finally:
        con.unregister(name)
    return sides


def _round_robin(runs: list[dict]) -> list[tuple[dict, dict]]:
    ok = sorted((r for r in runs if r["success"]),
                key=lambda r: (-(r["reward"] if r["reward"] is not None else -1e300),
                               r["trajectory_id"]))
    bad = sorted((r for r in runs if r["success"] is False),
                 key=lambda r: (r["reward"] if r["reward"] is not None else -1e300,
                                r["trajectory_id"]))
    if not ok or not bad:
        return []
    return [(ok[i % len(ok)], bad[i % len(bad)]) for i in range(max(len(ok), len(bad)))]


def _cluster_matches(lake: Lake, lonely: dict[str, list[dict]]
                     ) -> tuple[list[tuple[str, str, float]], str]:
    """Pairs (success-only hash, failure-only hash, cosine) by ``CLUSTER_RULE``."""
    from .embedder import MiniLMEmbedder
    from .verdict import MIN_THRESHOLD, decide

    by_cluster: dict[int, list[str]] = defaultdict(list)
    for h, g in sorted(lonely.items()):
        if g[0]["cluster_id"] is not None:
            by_cluster[g[0]["cluster_id"]].append(h)
    if not by_cluster:
        return [], ("no cluster pairs: no clusters at this version (`lake recluster`)"
                    if lonely else "no task with a single outcome")
    vecs = _vectors(lake, MiniLMEmbedder.model_id, sorted(h for hs in by_cluster.values()
                                                          for h in hs))
    edges = []
    for cid in sorted(by_cluster):
        hashes = [h for h in by_cluster[cid] if h in vecs]
        ok = [h for h in hashes if lonely[h][0]["success"]]
        bad = [h for h in hashes if not lonely[h][0]["success"]]
        if not ok or not bad:
            continue
        thr = max(float(lonely[ok[0]][0]["hit_threshold"] or 0.0), MIN_THRESHOLD)
        cos = np.stack([vecs[h] for h in ok]) @ np.stack([vecs[h] for h in bad]).T
        for i, j in zip(*np.nonzero(cos >= thr), strict=True):
            a, b = lonely[ok[i]][0]["task"], lonely[bad[j]][0]["task"]
            if decide(a, b, float(cos[i, j]), thr).verdict == "hit":
                edges.append((-round(float(cos[i, j]), 6), ok[i], bad[j]))
    used: set[str] = set()
    out = []
    for neg, a, b in sorted(edges):
        if a not in used and b not in used:
            used |= {a, b}
            out.append((a, b, -neg))
    missing = sum(1 for hs in by_cluster.values() for h in hs if h not in vecs)
    note = f"{len(out)} task pairs matched in {len(by_cluster)} clusters"
    return out, note + (f"; {missing} task hashes without a stored embedding skipped"
                        if missing else "")


def _vectors(lake: Lake, model_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
    if not hashes or not lake.store.exists("_embeddings"):
        return {}
    import pyarrow.compute as pc

    t = lake.store.dataset("_embeddings").to_table(
        columns=["text_hash", "vector"], filter=f"model_id = {quote(model_id)}")
    t = t.filter(pc.is_in(t["text_hash"], value_set=pa.array(hashes, pa.string())))
    return {h: np.asarray(v, dtype=np.float32)
            for h, v in zip(t["text_hash"].to_pylist(), t["vector"].to_pylist(), strict=True)}


# -- rft ---------------------------------------------------------------------------------------

def _rft(lake: Lake, con: duckdb.DuckDBPyConnection, sel: str, f: _JsonlFile,
         tick: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    tasks: dict[str, list[dict]] = defaultdict(list)
    query = _with_steps(sel, "trajectory_id, task, task_hash, success, reward, n_steps",
                        "s.kind = 'tool' AND s.name IS NOT NULL AND s.error IS NULL "
                        "AND s.trajectory_id IN (SELECT trajectory_id FROM t WHERE success)")
    for row in _rows(con, query):
        tasks[row["task_hash"]].append(row)
    with_ref = 0
    for n, h in enumerate(sorted(tasks), 1):
        runs = tasks[h]
        ok = [r for r in runs if r["success"]]
        ref = min(ok, key=lambda r: (-(r["reward"] if r["reward"] is not None else -1e300),
                                     len(r["steps"] or ()), r["n_steps"], r["trajectory_id"]),
                  default=None)
        rewards = [r["reward"] for r in runs if r["reward"] is not None]
        known = [r for r in runs if r["success"] is not None]
        f.write({
            "task_hash": h, "task": (ref or min(runs, key=lambda r: r["trajectory_id"]))["task"],
            "runs": len(runs), "successes": len(ok),
            "success_rate": round(len(ok) / len(known), 6) if known else None,
            "mean_reward": round(sum(rewards) / len(rewards), 6) if rewards else None,
            "max_reward": max(rewards) if rewards else None,
            "reference": None if ref is None else {
                "trajectory_id": ref["trajectory_id"], "reward": ref["reward"],
                "plan": [{"step": s["index"], "name": s["name"], "arguments": s["input"]}
                         for s in ref["steps"] or ()]},
        })
        with_ref += ref is not None
        tick(n, len(tasks))
    counts = {"tasks": len(tasks), "tasks_with_reference": with_ref,
              "trajectories": sum(len(r) for r in tasks.values())}
    rules = {"task": "trajectories grouped by task_hash (the normalized task text)",
             "reference": "the successful run with the highest reward, then the fewest tool "
                          "calls, then the fewest steps, then the smallest id",
             "plan": "the reference run's tool calls in step order, failed calls left out"}
    return counts, rules


# -- files ---------------------------------------------------------------------------------------

class _JsonlFile:
    """Write JSON lines to ``path`` through a temp file (renamed on success), hashing them."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.sha = hashlib.sha256()
        self.records = 0
        self.bytes = 0

    def __enter__(self) -> _JsonlFile:
        self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed in __exit__
        return self

    def write(self, obj: dict[str, Any]) -> None:
        self.write_raw(orjson.dumps(obj))

    def write_raw(self, line: bytes) -> None:
        line += b"\n"
        self.f.write(line)
        self.sha.update(line)
        self.records += 1
        self.bytes += len(line)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {"path": self.path.name, "records": self.records, "bytes": self.bytes,
                "sha256": self.sha.hexdigest()}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _iso(t: Any) -> str:
    if isinstance(t, int):
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)
    return t.astimezone(UTC).isoformat()
