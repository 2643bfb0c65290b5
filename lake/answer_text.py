"""A semantic-cache answer (``ContextService.get_context``) as short text: what
GetContext's ``context`` field and ``lake context`` print."""

from __future__ import annotations

from typing import Any


def describe(a: dict[str, Any]) -> str:
    """The answer as short text: for people, and ready to put in an agent's prompt."""
    out = [f"verdict: {a['verdict']} ({a['reason']})"]
    c = a.get("cluster")
    if c:
        rate = "n/a" if c["success_rate"] is None else f"{c['success_rate']:.0%}"
        out.append(f"cluster {c['id']}: {c['size']} runs, success {rate}, hit threshold "
                   f"{c['hit_threshold']:.2f}")
    for n in a["neighbors"]:
        ok = {True: "ok  ", False: "FAIL", None: "?   "}[n["success"]]
        out.append(f"  {n['similarity']:.3f} {ok} {n['trajectory_id']}  "
                   f"{' > '.join(n['tools'][:6])}")
    if a["verdict"] == "miss":
        out.append("no plan or pitfalls: nothing close enough was done before")
    for p in a["fused"].get("plans", [])[:1]:
        rate = "n/a" if p["success_rate"] is None else f"{p['success_rate']:.0%}"
        what = "plan to replay" if p.get("why") == "replay" else "plan"
        out.append(f"{what} ({p['support']} runs, {rate} success): "
                   f"{' > '.join(p['tools']) or '(no tool calls)'}" + _cited(p))
    for p in a["fused"].get("pitfalls", [])[:3]:
        what = "run error" if p.get("kind") == "error" else p["tool"]
        out.append(f"pitfall: {what}{': ' + p['error'] if p['error'] else ''} "
                   f"(in {p['failed_runs']} failed, {p['successful_runs']} successful runs)"
                   + _cited(p))
    out.append(f"context_id: {a['context_id']}")
    return "\n".join(out)


def _cited(item: dict[str, Any]) -> str:
    """The runs a plan or pitfall comes from (the first two): GetTrajectory reads them."""
    ids = item.get("sources") or []
    return f"; e.g. {', '.join(ids[:2])}" if ids else ""
