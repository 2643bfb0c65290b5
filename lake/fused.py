"""Fused context: what worked for a kind of task, computed from its cluster's trajectories.

For each cluster of a tenant (one DuckDB pass over the steps of every member):

- ``plans``: the most successful ordered tool sequences (consecutive repeats of a tool are
  collapsed), each with ``support`` (runs that followed it), ``success_rate`` and a Wilson
  lower bound that ranks them (a plan seen once is not trusted over one seen ten times);
- ``tools``: per tool: calls, runs using it, the success rate of those runs, error rate,
  median latency and median cost;
- ``pitfalls``: tools and tool errors frequent in failed runs and rare in successful ones
  (``fail_share - success_share`` ≥ ``PITFALL_MIN_LIFT``), with their counts;
- ``expected``: median steps, tool calls, cost and tokens of the successful runs (of all
  runs when none succeeded);
- ``runs`` / ``success_rate`` / ``sources``: how many runs back the numbers, and which.

Runs whose outcome is unknown count for support, never for success rates.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa

TOP_PLANS = 3
TOP_PITFALLS = 5
PITFALL_MIN_LIFT = 0.2
MAX_SOURCES = 20  # trajectory ids cited per cluster (the count is always given)
ERROR_PREFIX = 80  # errors are grouped by their first characters


def wilson_low(successes: float, n: float, z: float = 1.96) -> float:
    """Lower bound of the 95% Wilson interval of a success rate (0 for n = 0)."""
    if n <= 0:
        return 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / denom)


def compute(members: pa.Table, runs: pa.Table, steps: pa.Table) -> dict[int, dict[str, Any]]:
    """Fused stats per cluster.

    members: (trajectory_id, cluster_id); runs: trajectories (trajectory_id, success, n_steps,
    cost_usd, tokens_in, tokens_out); steps: (trajectory_id, index, kind, name, error,
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
        out[cid] = {"runs": n, "success_rate": rate, "sources": sources[:MAX_SOURCES],
                    "plans": [], "tools": [], "pitfalls": [], "expected": {}}
    _plans(con, out)
    _tools(con, out)
    _pitfalls(con, out)
    _expected(con, out)
    return out


def _plans(con: duckdb.DuckDBPyConnection, out: dict[int, dict]) -> None:
    rows = con.execute("""
        with seq as (
          select trajectory_id, name, index,
                 lag(name) over (partition by trajectory_id order by index) as prev
          from s where kind = 'tool' and name is not null),
        plans as (
          select trajectory_id, list(name order by index) as plan
          from seq where prev is distinct from name group by 1)
        select m.cluster_id, p.plan, count(*) as support,
               count(r.success) as known, sum(r.success::int) as wins
        from plans p join m using (trajectory_id) join r using (trajectory_id)
        group by 1, 2""").fetchall()
    by: dict[int, list[dict]] = {}
    for cid, plan, support, known, wins in rows:
        wins = wins or 0
        by.setdefault(cid, []).append({
            "tools": plan, "support": support,
            "success_rate": (wins / known) if known else None,
            "score": wilson_low(wins, known)})
    for cid, plans in by.items():
        # the tools last: equal plans by score come out the same on every run (DuckDB's
        # group-by order is not stable), so the top-plans cut is deterministic
        plans.sort(key=lambda p: (-p["score"], -p["support"], len(p["tools"]), p["tools"]))
        if cid in out:
            out[cid]["plans"] = [{**p, "score": round(p["score"], 4)} for p in plans[:TOP_PLANS]]


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


def _pitfalls(con: duckdb.DuckDBPyConnection, out: dict[int, dict]) -> None:
    rows = con.execute(f"""
        with marks as (
          select distinct s.trajectory_id, s.name as tool,
                 case when s.error is not null then left(s.error, {ERROR_PREFIX}) end as error
          from s where s.kind in ('tool', 'error')),
        runs as (
          select m.cluster_id, r.trajectory_id, r.success from m join r using (trajectory_id)
          where r.success is not null),
        totals as (
          select cluster_id, sum((not success)::int) as failed, sum(success::int) as ok
          from runs group by 1)
        select u.cluster_id, k.tool, k.error,
               count(distinct case when not u.success then u.trajectory_id end) as in_failed,
               count(distinct case when u.success then u.trajectory_id end) as in_ok,
               t.failed, t.ok
        from marks k join runs u using (trajectory_id) join totals t using (cluster_id)
        group by u.cluster_id, k.tool, k.error, t.failed, t.ok""").fetchall()
    by: dict[int, list[dict]] = {}
    for cid, tool, error, in_failed, in_ok, failed, ok in rows:
        fail_share = in_failed / failed if failed else 0.0
        ok_share = in_ok / ok if ok else 0.0
        lift = fail_share - ok_share
        if failed and lift >= PITFALL_MIN_LIFT:
            by.setdefault(cid, []).append({
                "tool": tool, "error": error, "failed_runs": in_failed,
                "successful_runs": in_ok, "fail_share": round(fail_share, 4),
                "success_share": round(ok_share, 4), "lift": round(lift, 4)})
    for cid, items in by.items():
        items.sort(key=lambda p: (-(p["error"] is not None), -p["lift"], -p["failed_runs"],
                                  p["tool"] or "", p["error"] or ""))
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
