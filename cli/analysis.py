"""`lake compare`, `lake cost`: agents side by side per kind of task, and where the money goes."""

from __future__ import annotations

import shutil
import sys
from typing import Any

import click

from lake import Lake, Settings
from lake.analysis import ADJUSTMENTS, COST_DIMENSIONS, DIMENSIONS, Comparison, compare, cost
from lake.errors import NotFound

from .main import _common, _echo_json, cli


def _console() -> Any:
    from rich.console import Console

    # piped output (no terminal) gets a wide page rather than rich's 80 columns
    return Console(file=sys.stdout, width=shutil.get_terminal_size((160, 24)).columns,
                   highlight=False)


@cli.command("compare")
@_common
@click.option("--by", type=click.Choice(DIMENSIONS), default="agent", show_default=True,
              help="What the arms are.")
@click.option("--a", "a", default=None, metavar="VALUE",
              help="Baseline [default: the first value in natural order, e.g. the oldest version].")
@click.option("--b", "b", default=None, metavar="VALUE",
              help="Candidate [default: every other value, each against A].")
@click.option("--group-by", default=None, metavar="SQL",
              help="Kind of task, SQL over run_facts [default: cluster = the k-means cluster, "
                   "else meta->>'domain'].")
@click.option("--where", default=None, metavar="SQL", help="Only runs matching (run_facts).")
@click.option("--confidence", type=float, default=0.95, show_default=True,
              help="Level of the intervals.")
@click.option("--adjust", type=click.Choice(ADJUSTMENTS), default="none", show_default=True,
              help="bonferroni: widen every interval so that --confidence holds for all the "
                   "(group, B) flags together, not for each alone.")
@click.option("--as-of", default=None, metavar="VERSION|TAG", help="Read the lake as of then.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def compare_cmd(settings: Settings, by: str, a: str | None, b: str | None,
                group_by: str | None, where: str | None, confidence: float, adjust: str,
                as_of: str | None, as_json: bool) -> None:
    """Compare agents, versions or models per kind of task: success rate with its Wilson
    interval, reward, steps, tool calls, tokens, cost, duration.

    B is flagged 'worse' in a group when the whole interval of its success rate minus A's
    (Newcombe, from the two Wilson intervals) is below zero. The same numbers come from
    SQL: `lake sql "from compare_runs('agent', 'A-VALUE')"` (docs/analysis.md).

    \b
    Examples:
      lake compare --by agent --group-by "meta->>'domain'"
      lake compare --by agent_version --a 1.4.0 --b 2.0.0 --where "agent = 'support-agent'"
      lake compare --by model --json
    """
    lake = _open(settings)
    res = compare(lake.connect(as_of=as_of), by, a, b, group_by=group_by, where=where,
                  confidence=confidence, adjust=adjust)
    if as_json:
        _echo_json(res.as_dict())
    else:
        _print_comparison(res)


def _open(settings: Settings) -> Lake:
    """The lake, read-only; if the tenant has no runs and others do, say which (a wrong
    --tenant otherwise reads as an empty lake)."""
    lake = Lake.open(settings=settings, readonly=True)
    if lake.count("trajectories") == 0:
        others = lake.sql("select tenant, count(*) from trajectories group by 1 order by 2 "
                          "desc", all_tenants=True).fetchall()
        if others:
            listing = ", ".join(f"{t!r} ({n})" for t, n in others[:5])
            raise NotFound(f"tenant {lake.settings.tenant!r} has no trajectories; this lake's "
                           f"tenants: {listing}: pass --tenant {others[0][0]}")
    return lake


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 0) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def _print_comparison(res: Comparison) -> None:
    from rich.table import Table

    level = f"{100 * res.level:.4g}%"
    t = Table(title=f"{res.by}: A = {res.a}; B = {', '.join(res.b)}", title_justify="left")
    for col, right in [("group", False), ("", False), ("arm", False), ("runs", True),
                       (f"success % [{level}]", True), ("B - A pts [interval]", True),
                       ("reward", True), ("steps p50", True), ("tool calls", True),
                       ("tokens", True), ("cost $", True), ("time s", True), ("flag", False)]:
        t.add_column(col, justify="right" if right else "left", overflow="fold")
    last = None
    for r in res.rows:
        group = ""
        if r["group"] != last:
            group = r["group"] + (f"\n[dim]{r['label'][:48]}[/dim]" if r["label"] else "")
            if last is not None:
                t.add_section()
            last = r["group"]
        rate = (f"{_pct(r['success_rate'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
                if r["success_rate"] is not None else "")
        diff = (f"{_pct(r['diff'])} [{_pct(r['diff_low'])}, {_pct(r['diff_high'])}]"
                if r["diff"] is not None else "")
        flag = {"worse": "[bold red]worse[/]", "better": "[green]better[/]"}.get(r["flag"], "")
        t.add_row(group, r["role"], r["arm"], str(r["runs"]), rate, diff,
                  _num(r["mean_reward"], 3), _num(r["median_steps"], 1),
                  _num(r["tool_calls"], 1), _num(r["tokens"]), _num(r["cost_usd"], 4),
                  _num(r["duration_s"], 1), flag)
    con = _console()
    con.print(t)
    worse = [f"{r['group']} ({r['arm']})" for r in res.flagged]
    family = (f" ({100 * res.confidence:g}% for all {res.tests} tests together: Bonferroni)"
              if res.adjust == "bonferroni" else "")
    con.print(f"groups: {res.group_by}; means per run except steps (median); "
              + (f"B worse than A beyond the {level} interval{family} in: {', '.join(worse)}"
                 if worse else
                 f"no group where B is worse than A beyond the {level} interval{family}"))


@cli.command("cost")
@_common
@click.option("--by", type=click.Choice(COST_DIMENSIONS), default="agent", show_default=True,
              help="agent_version: per agent and version; tool: the tool steps' own cost "
                   "and time; day: UTC day the run started.")
@click.option("--where", default=None, metavar="SQL", help="Only runs matching (run_costs).")
@click.option("--as-of", default=None, metavar="VERSION|TAG", help="Read the lake as of then.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals and rows as JSON.")
def cost_cmd(settings: Settings, by: str, where: str | None, as_of: str | None,
             as_json: bool) -> None:
    """Cost and tokens: totals, then by agent, version, model, day, tool or actor (whose
    steps: the agent's, a simulated user's...).

    The rows are those of the SQL views cost_by_agent, cost_by_version, cost_by_model,
    cost_by_day, cost_by_tool (docs/analysis.md).

    \b
    Examples:
      lake cost
      lake cost --by day --where "agent = 'support-agent'" --json
    """
    lake = _open(settings)
    res = cost(lake.connect(as_of=as_of), by, where=where)
    if as_json:
        _echo_json(res)
        return
    from rich.table import Table

    tot = res["total"]
    per = f"${tot['cost_per_run']:.4f} a run" if tot["cost_per_run"] is not None else "no cost"
    if tot["cost_per_success"] is not None:
        per += f", ${tot['cost_per_success']:.4f} a success"
    t = Table(title=f"cost by {by} (view {res['view']})", title_justify="left")
    cols = list(res["rows"][0]) if res["rows"] else []
    for c in cols:
        t.add_column(c, justify="left" if c in ("agent", "agent_version", "model", "day", "tool",
                                                "actor")
                     else "right", overflow="fold")
    for r in res["rows"]:
        t.add_row(*[_cell(c, r[c]) for c in cols])
    con = _console()
    con.print(t)
    con.print(f"{tot['runs']:,} runs ({tot['first_day']} to {tot['last_day']}): "
              f"${_num(tot['cost_usd'], 2) or '0'} ({per}); tokens {_num(tot['tokens_in'])} in, "
              f"{_num(tot['tokens_out'])} out"
              + (f"; {tot['runs_without_cost']:,} runs report no cost"
                 if tot["runs_without_cost"] else ""))


def _cell(col: str, v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, int | float) and col.startswith("cost"):
        return f"{v:,.4f}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)
