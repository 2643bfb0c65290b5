"""Fused context: what worked for a kind of task, computed from its cluster's trajectories.

For each cluster of a tenant (one DuckDB pass over the steps of every member):

- ``plans``: ordered tool sequences (consecutive repeats of a tool are collapsed), each with
  ``support`` (runs that followed it), ``success_rate``, a Wilson lower bound that ranks
  them in the cluster (a plan seen once is not trusted over one seen ten times), and
  ``sources``: up to ``MAX_CITED`` runs that followed it, successful first (then unknown
  outcome, then failed), most recent first within each. ``PLAN_POOL`` are kept; a query is
  served ``TOP_PLANS`` plans by ``for_query``: on exact and hit the plan of the run to
  replay first, then those that worked for its own neighbours (in the pool or not), so a
  cluster that mixes refunds and cancels answers a refund with the refund plan;
- ``tools``: per tool: calls, runs using it, the success rate of those runs, error rate,
  median latency and median cost;
- ``pitfalls``: tools, tool errors and the runs' own errors frequent in failed runs and
  rare in successful ones (``fail_share - success_share`` ≥ ``PITFALL_MIN_LIFT``), with
  their ``kind`` (``tool``: calling it; ``tool_error``: its error; ``error``: an ``error``
  step, e.g. the exception that ended a run, its type in ``error``, ``tool`` None), their
  counts and ``sources``: up to ``MAX_CITED`` of the failed runs that show it, most recent
  first. ``error`` is a pattern (``error_pattern``): numbers, ids, emails and quoted
  values become ``<n>``, ``<email>``, ``'…'``, so an error about order #W1 and the same
  about #W2 are one pitfall; ``examples``: each source's text. The client's own
  ``steps_refused`` step is not a pitfall (it says what the lake refused, not the task);
- ``expected``: median steps, tool calls, cost and tokens of the successful runs (of all
  runs when none succeeded);
- ``runs`` / ``success_rate`` / ``sources``: how many runs back the numbers, and which.

Runs whose outcome is unknown count for support, never for success rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

TOP_PLANS = 3  # plans served per query
PLAN_POOL = 32  # plans kept per cluster, for the per-query ranking
MAX_CITED = 5  # trajectory ids cited per plan and per pitfall
TOP_PITFALLS = 5
PITFALL_MIN_LIFT = 0.2
MAX_SOURCES = 20  # trajectory ids cited per cluster (the count is always given)
ERROR_PREFIX = 80  # errors are grouped by the first characters of their pattern
# an error's pattern (``error_pattern``), applied in order: RE2 (DuckDB's regexp_replace)
ERROR_VALUES = ((r"(^|[^\w])'[^']*'", "\\1'…'"), (r'(^|[^\w])"[^"]*"', '\\1"…"'),
                (r"[\w.+-]+@[\w-]+(\.[\w-]+)+", "<email>"),
                (r"[\w@+-]*\d([\w.@+-]*\w)?", "<n>"))


def wilson_low(successes: float, n: float, z: float = 1.96) -> float:
    """Lower bound of the 95% Wilson interval of a success rate (0 for n = 0)."""
    if n <= 0:
        return 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / denom)


def empty() -> dict[str, Any]:
    """A fused context with nothing in it (no runs in the cluster, or no cluster yet): every
    field there, empty, so a client reading ``fused["plans"]`` never fails on a new lake."""
    return {"label": None, "runs": 0, "success_rate": None, "plans": [], "tools": [],
            "pitfalls": [], "expected": {}, "sources": []}


def compute(members: pa.Table, runs: pa.Table, steps: pa.Table) -> dict[int, dict[str, Any]]:
    """Fused stats per cluster.

    members: (trajectory_id, cluster_id); runs: trajectories (trajectory_id, success, n_steps,
    cost_usd, tokens_in, tokens_out, started_at); steps: (trajectory_id, index, kind, name, error,
    duration_ms, cost_usd) of those trajectories.
    """
    con = duckdb.connect()
    con.register("m", members)
    con.register("r", runs)
    con.register("s", steps)
    out: dict[int, dict[str, Any]] = {}
    for cid, n, rate, sources in con.execute(
        "select cluster_id, count(*), avg(success::int), list(trajectory_id order by "
        "success desc nulls last, trajectory_id) from m join r using (trajectory_id) "
        "group by 1").fetchall():
        out[cid] = {**empty(), "runs": n, "success_rate": rate,
                    "sources": sources[:MAX_SOURCES]}
    _plans(con, out)
    _tools(con, out)
    _pitfalls(con, out)
    _expected(con, out)
    return out


# a plan's runs, cited in this order: successful, unknown outcome, failed
_OUTCOME_FIRST = "case when r.success then 0 when r.success is null then 1 else 2 end"


def _plans(con: duckdb.DuckDBPyConnection, out: dict[int, dict]) -> None:
    rows = con.execute(f"""
        with seq as (
          select trajectory_id, name, index,
                 lag(name) over (partition by trajectory_id order by index) as prev
          from s where kind = 'tool' and name is not null),
        plans as (
          select trajectory_id, list(name order by index) as plan
          from seq where prev is distinct from name group by 1)
        select m.cluster_id, p.plan, count(*) as support,
               count(r.success) as known, sum(r.success::int) as wins,
               (list(trajectory_id order by {_OUTCOME_FIRST}, r.started_at desc nulls last,
                     trajectory_id))[1:{MAX_CITED}] as sources
        from plans p join m using (trajectory_id) join r using (trajectory_id)
        group by 1, 2""").fetchall()
    by: dict[int, list[dict]] = {}
    for cid, plan, support, known, wins, sources in rows:
        wins = wins or 0
        by.setdefault(cid, []).append({
            "tools": plan, "support": support,
            "success_rate": (wins / known) if known else None,
            "score": wilson_low(wins, known), "sources": sources})
    for cid, plans in by.items():
        # the tools last: equal plans by score come out the same on every run (DuckDB's
        # group-by order is not stable), so the pool's cut is deterministic
        plans.sort(key=lambda p: (-p["score"], -p["support"], len(p["tools"]), p["tools"]))
        if cid in out:
            out[cid]["plans"] = [{**p, "score": round(p["score"], 4)} for p in plans[:PLAN_POOL]]


# why a plan is served where it is (``for_query``), first to last
REPLAY, SUCCEEDED, FOLLOWED, CLUSTER = ("replay", "neighbor_succeeded", "neighbor_followed",
                                        "cluster_best")


def for_query(plans: list[dict], index: dict[tuple[str, ...], int], neighbors: list[dict],
              replay: bool = False, top: int = TOP_PLANS) -> list[dict]:
    """The ``top`` plans for one query, from its cluster's pool (``plans``, in the cluster's
    ranking; ``index``: a plan's position by its tools) and its ``neighbors`` (best first,
    the one a verdict is about first). A few microseconds: it runs on every answer.

    A neighbour *followed* a plan when its tool sequence is the plan's. In order, each
    plan's ``why`` saying which rule put it there: ``replay`` (``replay``: the verdict is
    exact or hit): the first neighbour's plan, the run to replay cited first; then
    ``neighbor_succeeded``: plans that worked for a neighbour, the nearest such neighbour
    first; ``neighbor_followed``: plans of the pool neighbours followed without success, the
    nearest first; ``cluster_best``: the rest of the pool, by score. A plan of a neighbour
    outside the pool (rare in the cluster, from another cluster, or newer than the stats) is
    counted over the neighbours only (``counted``: ``neighbors``, else ``cluster``). Each
    plan gets ``neighbors_followed`` / ``neighbors_succeeded``, and its ``sources`` start
    with the run to replay, then the neighbours it worked for, nearest first."""
    by: dict[int | tuple[str, ...], list[dict]] = {}  # plan (pool position or tools) ->
    won: dict[int | tuple[str, ...], int] = {}  # its neighbours; the first it worked for
    for pos, n in enumerate(neighbors):
        tools = tuple(n["tools"])
        at = index.get(tools)
        key = tools if at is None else at
        by.setdefault(key, []).append(n)
        if n["success"] is True and key not in won:
            won[key] = pos
    first = next(iter(by)) if replay and by else None  # neighbour 0's plan comes first
    never = len(neighbors)
    keys = [k for k in by if type(k) is int or k == first or (k and k in won)]  # nearest first
    order = sorted(keys, key=lambda k: (k != first, won.get(k, never)))[:top]  # stable
    i = 0
    while len(order) < top and i < len(plans):
        if i not in by:
            order.append(i)
        i += 1
    return [_served(plans, key, by.get(key, ()), key == first) for key in order]


def _served(plans: list[dict], key: int | tuple[str, ...], followers: Sequence[dict],
            replayed: bool) -> dict:
    """A plan as served: ``key`` its pool position, or its tools when it is not in the pool
    (then counted over ``followers``, the neighbours that followed it, nearest first)."""
    ok = [n["trajectory_id"] for n in followers if n["success"] is True]
    cite = ok
    if replayed and (not ok or ok[0] != followers[0]["trajectory_id"]):
        cite = [followers[0]["trajectory_id"], *ok]
    why = REPLAY if replayed else SUCCEEDED if ok else FOLLOWED if followers else CLUSTER
    if type(key) is int:
        p = plans[key]
        return {**p, "sources": _cite(cite, p["sources"]) if cite else p["sources"],
                "counted": "cluster", "neighbors_followed": len(followers),
                "neighbors_succeeded": len(ok), "why": why}
    known = sum(n["success"] is not None for n in followers)
    runs = followers if len(followers) == 1 else sorted(
        followers, key=lambda n: _OUTCOME_RANK[n["success"]])  # stable: nearest first
    return {"tools": list(key), "support": len(followers),
            "success_rate": len(ok) / known if known else None,
            "score": round(wilson_low(len(ok), known), 4),
            "sources": _cite(cite, [n["trajectory_id"] for n in runs]),
            "counted": "neighbors", "neighbors_followed": len(followers),
            "neighbors_succeeded": len(ok), "why": why}


_OUTCOME_RANK = {True: 0, None: 1, False: 2}


def pitfalls_for_query(pitfalls: list[dict], neighbors: list[dict]) -> list[dict]:
    """A cluster's pitfalls (in its ranking) for one query: first those on a tool the
    query's ``neighbors`` called (``neighbors_using``: how many did), so a refund's answer
    leads with refund tools' pitfalls, not the cancels' sharing its cluster."""
    used: dict[str | None, int] = {}
    for n in neighbors:
        for tool in set(n["tools"]):
            used[tool] = used.get(tool, 0) + 1
    out = [{**p, "neighbors_using": used.get(p["tool"], 0)} for p in pitfalls]
    return sorted(out, key=lambda p: p["neighbors_using"] == 0)  # stable: lift order kept


def _cite(first: list[str], then: list[str]) -> list[str]:
    """``first``, then ``then`` less those already cited, up to ``MAX_CITED``."""
    out = first[:MAX_CITED]
    for s in then:
        if len(out) >= MAX_CITED:
            break
        if s not in out:
            out.append(s)
    return out


def _tools(con: duckdb.DuckDBPyConnection, out: dict[int, dict]) -> None:
    rows = con.execute("""
        select m.cluster_id, s.name, count(*) as calls,
               count(distinct s.trajectory_id) as runs,
               avg(r.success::int) as run_success,
               avg((s.error is not null)::int) as error_rate,
               median(s.duration_ms) as p50_ms, median(s.cost_usd) as p50_cost
        from s join m using (trajectory_id) join r using (trajectory_id)
        where s.kind = 'tool' and s.name is not null
        group by 1, 2 order by 1, calls desc, 2""").fetchall()
    for cid, name, calls, nruns, succ, err, p50, cost in rows:
        if cid in out:
            out[cid]["tools"].append({"name": name, "calls": calls, "runs": nruns,
                                      "run_success_rate": succ, "error_rate": err,
                                      "p50_ms": p50, "p50_cost_usd": cost})


def error_pattern(text: str) -> str:
    """SQL: the pattern of the error text ``text`` (an SQL expression): ``ERROR_VALUES``
    replaced, cut to ``ERROR_PREFIX`` characters."""
    out = f"left({text}, {4 * ERROR_PREFIX})"
    for find, put in ERROR_VALUES:
        out = f"regexp_replace({out}, {_sql_text(find)}, {_sql_text(put)}, 'g')"
    return f"left({out}, {ERROR_PREFIX})"


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# an error step's text: its name (the client's: the exception type) and message
_STEP_ERROR = """case when s.kind <> 'error' then s.error when s.error is null then s.name
                      when s.name is null or starts_with(s.error, s.name) then s.error
                      else s.name || ': ' || s.error end"""


def _pitfalls(con: duckdb.DuckDBPyConnection, out: dict[int, dict]) -> None:
    rows = con.execute(f"""
        with texts as (
          select s.trajectory_id, s.kind, s.name, {_STEP_ERROR} as error from s
          where s.kind = 'tool' or (s.kind = 'error' and s.name is distinct from 'steps_refused')),
        marks as (
          select trajectory_id,
                 case when kind = 'error' then 'error' when error is null then 'tool'
                      else 'tool_error' end as kind,
                 case when kind = 'tool' then name end as tool,
                 {error_pattern("error")} as pattern,
                 min(left(error, {ERROR_PREFIX})) as example
          from texts group by all),
        runs as (
          select m.cluster_id, r.trajectory_id, r.success, r.started_at
          from m join r using (trajectory_id) where r.success is not null),
        totals as (
          select cluster_id, sum((not success)::int) as failed, sum(success::int) as ok
          from runs group by 1)
        select u.cluster_id, k.kind, k.tool, k.pattern,
               count(distinct case when not u.success then u.trajectory_id end) as in_failed,
               count(distinct case when u.success then u.trajectory_id end) as in_ok,
               t.failed, t.ok,
               (list(u.trajectory_id order by u.started_at desc nulls last, u.trajectory_id)
                filter (where not u.success))[1:{MAX_CITED}] as sources,
               (list(k.example order by u.started_at desc nulls last, u.trajectory_id)
                filter (where not u.success))[1:{MAX_CITED}] as examples
        from marks k join runs u using (trajectory_id) join totals t using (cluster_id)
        group by u.cluster_id, k.kind, k.tool, k.pattern, t.failed, t.ok""").fetchall()
    by: dict[int, list[dict]] = {}
    for cid, kind, tool, pattern, in_failed, in_ok, failed, ok, sources, examples in rows:
        fail_share = in_failed / failed if failed else 0.0
        ok_share = in_ok / ok if ok else 0.0
        lift = fail_share - ok_share
        if failed and lift >= PITFALL_MIN_LIFT:
            by.setdefault(cid, []).append({
                "kind": kind, "tool": tool, "error": pattern, "failed_runs": in_failed,
                "successful_runs": in_ok, "fail_share": round(fail_share, 4),
                "success_share": round(ok_share, 4), "lift": round(lift, 4),
                "sources": sources, "examples": examples})
    for cid, items in by.items():
        items.sort(key=lambda p: (-(p["error"] is not None), -p["lift"], -p["failed_runs"],
                                  p["kind"], p["tool"] or "", p["error"] or ""))
        if cid in out:
            out[cid]["pitfalls"] = items[:TOP_PITFALLS]


def _expected(con: duckdb.DuckDBPyConnection, out: dict[int, dict]) -> None:
    rows = con.execute("""
        with calls as (select trajectory_id, count(*) as tool_calls from s
                       where kind = 'tool' group by 1),
        x as (select m.cluster_id, r.*, coalesce(c.tool_calls, 0) as tool_calls,
                     bool_or(r.success) over (partition by m.cluster_id) as any_ok
              from m join r using (trajectory_id) left join calls c using (trajectory_id))
        select cluster_id, any_ok, median(n_steps), median(tool_calls), median(cost_usd),
               median(coalesce(tokens_in, 0) + coalesce(tokens_out, 0))
        from x where success or not coalesce(any_ok, false) group by 1, 2""").fetchall()
    for cid, any_ok, steps, tools, cost, tokens in rows:
        if cid in out:
            out[cid]["expected"] = {"basis": "successful runs" if any_ok else "all runs",
                                    "steps": steps, "tool_calls": tools, "cost_usd": cost,
                                    "tokens": tokens}
