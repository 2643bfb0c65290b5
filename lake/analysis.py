"""Compare agents per kind of task, and report cost: SQL views and macros, and the functions
`lake compare` and `lake cost` call.

``install(con)`` (run by ``lake.sql.connect`` on every connection) adds, over the tenant's
tables, so analysts can slice further with ``lake sql``:

    run_costs        one row per trajectory: its columns plus ``tokens`` and ``day``
    run_facts        run_costs plus ``tool_calls``, ``duration_s``, ``cluster_id`` and
                     ``cluster``, the kind of task `compare` groups by by default
    cluster_labels   (tenant, cluster_id) -> label (the clusters table's, else the member
                     task nearest the centroid)
    cost_by_agent, cost_by_version, cost_by_model, cost_by_day, cost_by_tool
    wilson_low(k, n [, z]), wilson_high(k, n [, z])    Wilson score interval of k / n
    compare_arms(dim [, z])            per (group, arm): runs, success rate and interval, ...
    compare_runs(dim, a [, b] [, z])   compare_arms plus B - A and its interval, and a flag

``dim`` is 'agent', 'agent_version' or 'model'; ``z`` 1.96 (95%). A group is a ``cluster``
value; the row of group ``(all)`` covers every run. A run is keyed by (tenant,
trajectory_id): every join and distinct count uses both, as ``--all-tenants`` shows several.
The B - A interval is Newcombe's hybrid score interval, built from the two Wilson intervals;
a B arm is flagged ``worse`` in a group when that whole interval is below zero (``better``
when above). See docs/analysis.md.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import duckdb

from .errors import InvalidArgument, NotFound
from .tables import quote

DIMENSIONS = ("agent", "agent_version", "model")
ADJUSTMENTS = ("none", "bonferroni")  # for the many (group, B) tests of one comparison
COST_DIMENSIONS = ("agent", "agent_version", "model", "day", "tool", "actor")
Z95 = 1.959963984540054
NONE = "(none)"  # the arm / group of runs whose value is NULL
ALL = "(all)"  # the group of every run

# tokens of a run: in + out (NULL only when both are unknown); day: UTC date it started
# (else ended, else was ingested)
_TOKENS = ("CASE WHEN tokens_in IS NULL AND tokens_out IS NULL THEN NULL "
           "ELSE coalesce(tokens_in, 0) + coalesce(tokens_out, 0) END")
_DAY = "CAST(timezone('UTC', coalesce(started_at, ended_at, ingested_at)) AS DATE)"


def _exact(agg: str, x: str) -> str:
    """``agg(x)`` over fixed-point values: the same result in any row order (a float sum is
    not), so the same runs give the same output bytes however they were ingested. Values
    beyond 10^28 (nonsense) are left out."""
    return f"CAST({agg}(TRY_CAST({x} AS DECIMAL(38, 10))) AS DOUBLE)"


_VIEWS = {
    "run_costs": f"SELECT *, {_TOKENS} AS tokens, {_DAY} AS day FROM trajectories",
    "run_facts": f"""
SELECT r.*, coalesce(s.tool_calls, 0) AS tool_calls,
       coalesce(epoch(r.ended_at) - epoch(r.started_at), s.step_ms / 1000.0) AS duration_s,
       m.cluster_id,
       CASE WHEN m.cluster_id IS NOT NULL THEN {{cluster}}
            ELSE coalesce(r.meta->>'domain', '(unclustered)') END AS cluster
FROM run_costs r
LEFT JOIN (SELECT tenant, trajectory_id, count_if(kind = 'tool') AS tool_calls,
                  {_exact("sum", "duration_ms")} AS step_ms
           FROM steps GROUP BY tenant, trajectory_id) s USING (tenant, trajectory_id)
LEFT JOIN cluster_members m USING (tenant, trajectory_id)""",
    "cluster_labels": """
SELECT m.tenant, m.cluster_id,
       coalesce(any_value(c.label),
                left(first(t.task ORDER BY m.similarity DESC, t.trajectory_id), 120)) AS label
FROM cluster_members m JOIN trajectories t USING (tenant, trajectory_id)
LEFT JOIN clusters c USING (tenant, cluster_id)
GROUP BY m.tenant, m.cluster_id""",
}

# A row's runs all in one cluster (of one tenant: each tenant numbers its own clusters).
_ONE_CLUSTER = ("count(cluster_id) = count(*) AND min(cluster_id) = max(cluster_id) AND "
                "min(tenant) = max(tenant)")

# Per (group, arm) and per arm over every group. {group}, {arm}, {where}: SQL expressions
# over run_facts; {z}: the normal quantile.
ARM_STATS = f"""
WITH r AS (
  SELECT coalesce(CAST(({{group}}) AS VARCHAR), '{NONE}') AS grp,
         coalesce(CAST(({{arm}}) AS VARCHAR), '{NONE}') AS arm,
         tenant, cluster_id, label, success, reward, n_steps, tool_calls, tokens, cost_usd,
         duration_s
  FROM run_facts LEFT JOIN cluster_labels USING (tenant, cluster_id) WHERE ({{where}}))
SELECT CASE WHEN grouping(grp) = 1 THEN '{ALL}' ELSE grp END AS "group",
       grouping(grp) = 1 AS overall,
       CASE WHEN {_ONE_CLUSTER} THEN min(cluster_id) END AS cluster_id,
       CASE WHEN {_ONE_CLUSTER} THEN min(label) END AS label,
       arm,
       count(*) AS runs,
       count(success) AS outcomes,
       CAST(count_if(success) AS BIGINT) AS successes,
       count_if(success) / nullif(count(success), 0) AS success_rate,
       wilson_low(count_if(success), count(success), {{z}}) AS ci_low,
       wilson_high(count_if(success), count(success), {{z}}) AS ci_high,
       {_exact("avg", "reward")} AS mean_reward,
       median(n_steps) AS median_steps,
       avg(tool_calls) AS tool_calls,
       avg(tokens) AS tokens,
       {_exact("avg", "cost_usd")} AS cost_usd,
       {_exact("sum", "cost_usd")} AS total_cost_usd,
       {_exact("avg", "duration_s")} AS duration_s
FROM r GROUP BY GROUPING SETS ((grp, arm), (arm))"""

# Every arm next to arm {a} of the same group: B - A, its interval, the flag. {stats}: a
# relation shaped like ARM_STATS; {a}, {b}: SQL values ({b} NULL: every arm); {dim}: the
# dimension's name as SQL text. An {a} or {b} no run has is an error listing the arms: an
# empty answer would read as "no regressions".
PAIRING = """
WITH s AS (FROM {stats}),
missing AS (
  SELECT 'compare_runs: no runs with ' || {dim} || ' = ''' || v || '''; give a value '
         || 'present: ' || coalesce((SELECT string_agg('''' || arm || ''' (' || runs ||
                                                       ' runs)', ', ' ORDER BY arm)
                                     FROM s WHERE overall),
                                    'none, as this tenant has no runs (check --tenant)')
         AS message
  FROM (VALUES ({a}), ({b})) AS given(v) WHERE v IS NOT NULL AND v NOT IN (SELECT arm FROM s)),
base AS (SELECT "group", success_rate AS a_rate, ci_low AS a_low, ci_high AS a_high
         FROM s WHERE arm = {a}),
d AS (
  SELECT s.*, CASE WHEN s.arm = {a} THEN 'A' ELSE 'B' END AS role,
         CASE WHEN s.arm <> {a} THEN s.success_rate - base.a_rate END AS diff,
         CASE WHEN s.arm <> {a} THEN s.success_rate - base.a_rate - sqrt(
           (s.success_rate - s.ci_low) ** 2 + (base.a_high - base.a_rate) ** 2) END AS diff_low,
         CASE WHEN s.arm <> {a} THEN s.success_rate - base.a_rate + sqrt(
           (s.ci_high - s.success_rate) ** 2 + (base.a_rate - base.a_low) ** 2) END AS diff_high
  FROM s LEFT JOIN base USING ("group")
  WHERE s.arm = {a} OR {b} IS NULL OR s.arm = {b})
SELECT d."group", d.cluster_id, d.label, d.arm, d.role, d.runs, d.outcomes, d.successes,
       d.success_rate, d.ci_low, d.ci_high, d.mean_reward, d.median_steps, d.tool_calls,
       d.tokens, d.cost_usd, d.total_cost_usd, d.duration_s, d.diff, d.diff_low, d.diff_high,
       CASE WHEN d.diff_high < 0 THEN 'worse' WHEN d.diff_low > 0 THEN 'better' END AS flag
FROM d
WHERE (SELECT CASE WHEN count(*) = 0 THEN true ELSE error(min(message)) END FROM missing)
ORDER BY d.overall DESC, d.cluster_id NULLS LAST, d."group", d.role, d.arm"""

_MACROS = [
    # Wilson score interval of k successes out of n (NULL when n = 0)
    "wilson_low(k, n, z := {z}) AS CASE WHEN n > 0 THEN (k / n + z * z / (2 * n) - z * sqrt("
    "(k / n) * (1 - k / n) / n + z * z / (4 * n * n))) / (1 + z * z / n) END",
    "wilson_high(k, n, z := {z}) AS CASE WHEN n > 0 THEN (k / n + z * z / (2 * n) + z * sqrt("
    "(k / n) * (1 - k / n) / n + z * z / (4 * n * n))) / (1 + z * z / n) END",
    "compare_arms(dim, z := {z}) AS TABLE " + ARM_STATS.format(
        group="cluster", where="true", z="z",
        arm="CASE dim WHEN 'agent' THEN agent WHEN 'agent_version' THEN agent_version "
            "WHEN 'model' THEN model ELSE error('compare: dim must be agent, agent_version or "
            "model, got ' || dim) END"),
    "compare_runs(dim, a, b := NULL, z := {z}) AS TABLE " + PAIRING.format(
        stats="compare_arms(dim, z := z)", a="a", b="b", dim="dim"),
]

_COST = f"""count(*) AS runs, CAST(count_if(success) AS BIGINT) AS successes,
  {_exact("sum", "cost_usd")} AS cost_usd, {_exact("avg", "cost_usd")} AS cost_per_run,
  {_exact("sum", "cost_usd")} / nullif(count_if(success), 0) AS cost_per_success,
  sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out, avg(tokens) AS tokens_per_run"""
_COST_KEYS = {"agent": "agent", "agent_version": "agent, agent_version", "model": "model",
              "day": "day"}
_COST_VIEWS = {"agent": "cost_by_agent", "agent_version": "cost_by_version",
               "model": "cost_by_model", "day": "cost_by_day", "tool": "cost_by_tool",
               "actor": "cost_by_actor"}


def _cost_sql(by: str, where: str = "true") -> str:
    runs = ("" if where == "true" else f" AND (s.tenant, s.trajectory_id) IN (SELECT "
            f"tenant, trajectory_id FROM run_costs WHERE ({where}))")
    if by == "actor":  # whose steps cost what: the agent's, a simulated user's, ...
        return f"""
SELECT coalesce(s.actor, '{NONE}') AS actor, count(*) AS steps,
       count(DISTINCT (s.tenant, s.trajectory_id)) AS runs,
       {_exact("sum", "s.cost_usd")} AS cost_usd, sum(s.tokens_in) AS tokens_in,
       sum(s.tokens_out) AS tokens_out
FROM steps s WHERE true{runs}
GROUP BY 1 ORDER BY cost_usd DESC NULLS LAST, actor"""
    if by == "tool":
        return f"""
SELECT s.name AS tool, count(*) AS calls, count(DISTINCT (s.tenant, s.trajectory_id)) AS runs,
       count(s.error) AS errors, {_exact("sum", "s.cost_usd")} AS cost_usd,
       sum(s.tokens_in) AS tokens_in, sum(s.tokens_out) AS tokens_out,
       {_exact("sum", "s.duration_ms")} AS duration_ms,
       median(s.duration_ms) AS p50_ms
FROM steps s WHERE s.kind = 'tool'{runs}
GROUP BY s.name ORDER BY calls DESC, tool"""
    keys = _COST_KEYS[by]
    order = "day" if by == "day" else f"cost_usd DESC NULLS LAST, {keys}"
    return (f"SELECT {keys}, {_COST} FROM run_costs WHERE ({where}) "
            f"GROUP BY {keys} ORDER BY {order}")


VIEWS = (*_VIEWS, *_COST_VIEWS.values())  # what install adds, for listings (lake sql --help)
MACROS = tuple(m.split("(", 1)[0] for m in _MACROS)


def install(con: duckdb.DuckDBPyConnection, *, all_tenants: bool = False) -> None:
    """Create the analysis views and macros on a connection made by ``lake.sql.connect``.
    ``all_tenants``: the connection shows several tenants, so a cluster's group names its
    tenant too (``cluster 3 (acme)``)."""
    cluster = "'cluster ' || m.cluster_id" + (" || ' (' || r.tenant || ')'" if all_tenants
                                              else "")
    for name, body in _VIEWS.items():
        con.execute(f'CREATE VIEW "{name}" AS {body.replace("{cluster}", cluster)}')
    for macro in _MACROS:
        con.execute("CREATE MACRO " + macro.replace("{z}", repr(Z95)))
    for by, view in _COST_VIEWS.items():
        con.execute(f'CREATE VIEW "{view}" AS {_cost_sql(by)}')


# -- compare -------------------------------------------------------------------------------
ROUND = {"success_rate": 4, "ci_low": 4, "ci_high": 4, "diff": 4, "diff_low": 4,
         "diff_high": 4, "mean_reward": 4, "median_steps": 1, "tool_calls": 2, "tokens": 1,
         "cost_usd": 6, "total_cost_usd": 6, "duration_s": 3}


@dataclass
class Comparison:
    """Rows of ``compare``: per group (overall first), arm A then the B arms."""

    by: str
    a: str
    b: list[str]
    group_by: str
    where: str | None
    confidence: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    adjust: str = "none"
    tests: int = 0  # (group, B) pairs with outcomes on both sides: what the flags test
    level: float = 0.0  # the intervals' level: ``confidence``, or 1 - (1 - it) / tests

    @property
    def flagged(self) -> list[dict[str, Any]]:
        """Rows of B arms whose success rate is worse than A's beyond the interval."""
        return [r for r in self.rows if r["flag"] == "worse"]

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "a": self.a, "b": self.b, "group_by": self.group_by,
                "where": self.where, "confidence": self.confidence, "adjust": self.adjust,
                "tests": self.tests, "level": self.level, "rows": self.rows,
                "flagged": [{"group": r["group"], "arm": r["arm"]} for r in self.flagged]}


def natural_key(value: str) -> list[Any]:
    """Sort '1.10' after '1.9' (versions): digit runs compare as numbers."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", value)]


def compare(con: duckdb.DuckDBPyConnection, by: str = "agent", a: str | None = None,
            b: str | None = None, *, group_by: str | None = None, where: str | None = None,
            confidence: float = 0.95, adjust: str = "none") -> Comparison:
    """Success rate (with its Wilson interval), reward, steps, tool calls, tokens, cost and
    duration of each value of ``by`` per group, each B next to A, flagged when worse.

    ``a`` defaults to the first value in natural order (the oldest version), ``b`` to every
    other value; ``group_by`` (default ``cluster``) and ``where`` are SQL over ``run_facts``.
    ``adjust="bonferroni"``: the intervals are at level 1 - (1 - confidence) / tests, so the
    chance of any false flag over all the (group, B) pairs is at most 1 - confidence."""
    if by not in DIMENSIONS:
        raise InvalidArgument(f"cannot compare by {by!r}: use one of {', '.join(DIMENSIONS)}",
                              field="--by")
    if not 0 < confidence < 1:
        raise InvalidArgument(f"confidence must be between 0 and 1 (e.g. 0.95), got "
                              f"{confidence}", field="--confidence")
    if adjust not in ADJUSTMENTS:
        raise InvalidArgument(f"unknown adjustment {adjust!r}: use one of "
                              f"{', '.join(ADJUSTMENTS)}", field="--adjust")

    def arm_stats(level: float) -> Any:
        z = NormalDist().inv_cdf(0.5 + level / 2)
        return _run(con, ARM_STATS.format(group=group_by or "cluster", arm=f'"{by}"',
                                          where=where or "true", z=repr(z)), group_by, where)

    stats = arm_stats(confidence)
    arm_rows = stats.to_pylist()
    arms = {r["arm"]: r["runs"] for r in arm_rows if r["overall"]}
    a, bs = _arms(con, by, arms, a, b, where)
    tests, level = _tests(arm_rows, a, bs), confidence
    if adjust == "bonferroni" and tests > 1:
        level = 1 - (1 - confidence) / tests
        stats = arm_stats(level)
    name = f"_compare_{uuid.uuid4().hex}"
    con.register(name, stats)
    try:
        rel = con.sql(PAIRING.format(stats=name, a=quote(a), dim=quote(by),
                                     b="NULL" if b is None else quote(b)))
        cols, rows = rel.columns, rel.fetchall()
    finally:
        con.unregister(name)
    out = [{c: _round(c, v) for c, v in zip(cols, r, strict=True)} for r in rows]
    return Comparison(by, a, bs, group_by or "cluster", where, confidence, out, adjust,
                      tests, level)


def _tests(rows: list[dict[str, Any]], a: str, bs: list[str]) -> int:
    """(group, B) pairs where both arms have outcomes (``rows``: ARM_STATS'): the intervals
    a flag may come from."""
    have = {(r["group"], r["arm"]) for r in rows if r["outcomes"]}
    return sum((g, a) in have for g, arm in have if arm in bs)


def _run(con: duckdb.DuckDBPyConnection, sql: str, group_by: str | None,
         where: str | None) -> Any:
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as e:
        cols = ", ".join(con.sql("FROM run_facts LIMIT 0").columns)
        what = " and ".join(f"{k} {v!r}" for k, v in (("--group-by", group_by),
                                                       ("--where", where)) if v)
        raise InvalidArgument(f"the comparison query failed: {e}; {what or 'it'} must be SQL "
                              f"over the run_facts view, whose columns are {cols}",
                              field="--group-by" if group_by else "--where") from e


def _arms(con: duckdb.DuckDBPyConnection, by: str, arms: dict[str, int], a: str | None,
          b: str | None, where: str | None) -> tuple[str, list[str]]:
    if not arms:
        n = con.sql("SELECT count(*) FROM trajectories").fetchall()[0][0]
        if n and where:
            raise NotFound(f"no runs match --where {where!r} (of {n} in the lake); loosen it")
        raise NotFound("no trajectories to compare in this tenant: load some with "
                       "`lake ingest FILE` (or `lake init` for the sample), or check --tenant "
                       "/ --data")
    present = sorted(arms, key=natural_key)
    listing = ", ".join(f"{v!r} ({arms[v]} runs)" for v in present)
    for flag, value in (("--a", a), ("--b", b)):
        if value is not None and value not in arms:
            raise InvalidArgument(f"no runs with {by} = {value!r}; the values present are "
                                  f"{listing}", field=flag)
    if len(arms) < 2:
        raise InvalidArgument(f"nothing to compare: every run has {by} = {present[0]!r}; "
                              f"compare by another of {', '.join(DIMENSIONS)}", field="--by")
    a = a if a is not None else next(v for v in present if v != b)
    if b == a:
        raise InvalidArgument(f"--a and --b are both {a!r}: give two different values of "
                              f"{by} ({listing})", field="--b")
    return a, [b] if b is not None else [v for v in present if v != a]


def _round(col: str, v: Any) -> Any:
    return round(float(v), ROUND[col]) if v is not None and col in ROUND else v


# -- cost ----------------------------------------------------------------------------------
def cost(con: duckdb.DuckDBPyConnection, by: str = "agent", *,
         where: str | None = None) -> dict[str, Any]:
    """Totals, and cost and tokens by ``by`` (agent, agent_version, model, day, tool or
    actor: whose steps, e.g. the agent's or a simulated user's)."""
    if by not in COST_DIMENSIONS:
        raise InvalidArgument(f"cannot report cost by {by!r}: use one of "
                              f"{', '.join(COST_DIMENSIONS)}", field="--by")
    total_sql = (f"SELECT {_COST}, CAST(min(day) AS VARCHAR) AS first_day, "
                 f"CAST(max(day) AS VARCHAR) AS last_day, count(*) - count(cost_usd) "
                 f"AS runs_without_cost FROM run_costs WHERE ({where or 'true'})")
    try:
        rel = con.sql(total_sql)
        total = dict(zip(rel.columns, rel.fetchall()[0], strict=True))
        rel = con.sql(_cost_sql(by, where or "true"))
        cols, rows = rel.columns, rel.fetchall()
    except duckdb.Error as e:
        cols = ", ".join(con.sql("FROM run_costs LIMIT 0").columns)
        raise InvalidArgument(f"the cost query failed: {e}; --where must be SQL over the "
                              f"run_costs view, whose columns are {cols}", field="--where") from e
    if not total["runs"]:
        raise NotFound("no trajectories in this tenant" + (f" match --where {where!r}" if where
                       else ": load some with `lake ingest FILE` (or `lake init`)"))
    fix = {"cost_usd": 6, "cost_per_run": 6, "cost_per_success": 6, "tokens_per_run": 1,
           "duration_ms": 3, "p50_ms": 3}
    out = [{c: (round(float(v), fix[c]) if v is not None and c in fix else
                str(v) if c == "day" else v) for c, v in zip(cols, r, strict=True)}
           for r in rows]
    total = {c: round(float(v), fix[c]) if v is not None and c in fix else v
             for c, v in total.items()}
    return {"by": by, "where": where, "view": _COST_VIEWS[by], "total": total, "rows": out}
