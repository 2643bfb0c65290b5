"""Fused plans and pitfalls on a real lake with the real model: ranked for the query's own
neighbours (not only for its cluster), each citing the runs it comes from."""

from __future__ import annotations

import pytest

from lake import Lake
from lake.context import ContextService

NAMES = ["Yusuf Rossi", "Mei Davis", "Omar Khan", "Sofia Garcia", "Ethan Lee"]
CANCEL = ["get_order_details", "cancel_pending_order"]
REFUND = ["find_user_id_by_email", "get_order_details", "return_delivered_order_items"]
# other kinds of task, so that k-means (k = round(sqrt(n))) spends its clusters on them
# and keeps the retail orders in one cluster: refunds and cancels share their fused stats
OTHER = ["My phone shows no signal since this morning, can you fix my mobile data?",
         "Book a flight from Boston to Denver on May 3 in economy",
         "What is the weather going to be like in Paris tomorrow?",
         "Write a haiku about autumn leaves falling on a quiet pond",
         "Explain how to compute the determinant of a 3x3 matrix",
         "Recommend a vegetarian lasagna recipe for six people",
         "My internet roaming does not work in Italy, please enable it",
         "Reserve a table for two at an Italian restaurant on Friday at 8pm",
         "Translate 'good morning, how are you' into Japanese",
         "Summarize the plot of Pride and Prejudice in three sentences",
         "How many calories does a 30 minute run burn?",
         "Set up a weekly meeting with the design team every Tuesday at 10"]
REFUND_QUERY = "Refund order #W3000001 to the original card"


def _run(tid: str, task: str, tools: list[str], ok: bool, minute: int,
         error: str | None = None) -> dict:
    steps = [{"kind": "tool", "name": t} for t in tools]
    if error:
        steps[-1]["error"] = error
    return {"trajectory_id": tid, "task": task, "steps": steps, "outcome": {"success": ok},
            "started_at": f"2026-11-20T10:{minute:02d}:00Z"}


def _runs() -> list[dict]:
    """Five cancels (all worked) and three refunds (one failed, its return refused): the
    cancel plan is the cluster's best, the refund plan is what refunds do."""
    out = [_run(f"cancel{i}", f"Cancel my pending order #W10000{i} because I ordered it by "
                f"mistake. I am {NAMES[i]}.", CANCEL, True, i) for i in range(5)]
    out += [_run(f"refund{i}", f"Refund order #W20000{i} to the original card: return the "
                 f"delivered items. I am {NAMES[i]}.", REFUND, i != 1, 10 + i,
                 "Error: order #W200001 is not delivered yet" if i == 1 else None)
            for i in range(3)]
    out += [_run(f"other{i}", t, ["search"], True, 20 + i) for i, t in enumerate(OTHER)]
    return out


@pytest.fixture
def cache(tmp_path, minilm):
    lake = Lake.open(str(tmp_path / "lake"))
    lake.ingest(_runs())
    cs = ContextService(lake, embedder=minilm)
    yield cs
    cs.close()
    lake.close()


def _tools_of(cache: ContextService) -> dict[str, list[str]]:
    """Each run's tool sequence, consecutive repeats collapsed (what a plan is)."""
    out: dict[str, list[str]] = {}
    for tid, name in cache.lake.sql("select trajectory_id, name from steps where kind = 'tool' "
                                    "order by trajectory_id, index").fetchall():
        seq = out.setdefault(tid, [])
        if not seq or seq[-1] != name:
            seq.append(name)
    return out


def test_a_refund_gets_the_refund_plan_although_cancels_rank_higher_in_its_cluster(cache):
    a = cache.get_context("default", {"text": REFUND_QUERY, "k": 5})
    idx = cache.index("default")
    kinds = {idx.cluster_of(f"{k}{i}") for k in ("cancel", "refund") for i in range(3)}
    assert kinds == {a["cluster"]["id"]}  # one cluster for both kinds: the case under test
    pool = cache.fused.cluster("default", a["cluster"]["id"])["plans"]
    assert pool[0]["tools"] == CANCEL  # the cluster's best, what plans[0] used to be
    plan = a["fused"]["plans"][0]
    assert plan["tools"] == REFUND
    assert plan["neighbors_followed"] == 3 and plan["neighbors_succeeded"] == 2
    nearest_ok = next(n["trajectory_id"] for n in a["neighbors"]
                      if n["tools"] == REFUND and n["success"])
    assert plan["sources"][0] == nearest_ok
    cancel = cache.get_context("default", {"text": "Cancel order #W1000009, I ordered it by "
                                                   "mistake", "k": 5})
    assert cancel["fused"]["plans"][0]["tools"] == CANCEL
    assert [p["tools"] for p in a["fused"]["plans"]][:2] == [REFUND, CANCEL]


def test_every_plan_and_pitfall_cites_runs_that_show_it(cache):
    tools = _tools_of(cache)
    outcome = dict(cache.lake.sql("select trajectory_id, success from trajectories").fetchall())
    errors = set(cache.lake.sql("select trajectory_id, name, error from steps "
                                "where error is not null").fetchall())
    for q in (REFUND_QUERY, "Cancel order #W1000009", "Please cancel and refund #W2000002"):
        fused = cache.get_context("default", {"text": q, "k": 3})["fused"]
        assert fused["plans"] and fused["pitfalls"]
        for p in fused["plans"]:
            assert 1 <= len(p["sources"]) <= min(5, p["support"])
            assert all(tools[s] == p["tools"] for s in p["sources"]), p
            oks = [outcome[s] for s in p["sources"]]
            assert oks == sorted(oks, reverse=True)  # the successful ones first
        for p in fused["pitfalls"]:
            assert 1 <= len(p["sources"]) <= p["failed_runs"]
            for s in p["sources"]:
                assert outcome[s] is False and p["tool"] in tools[s]
            assert p["error"] is None or (p["sources"][0], p["tool"], p["example"]) in errors
    refused = [p for p in fused["pitfalls"] if p["error"]]
    assert refused and refused[0]["sources"] == ["refund1"]
    from lake.answer_text import describe  # the text answer names them too

    text = describe(cache.get_context("default", {"text": REFUND_QUERY, "k": 5}))
    plan_line = next(line for line in text.splitlines() if line.startswith("plan"))
    assert plan_line.endswith("; e.g. " + ", ".join(fused_sources(cache)[:2]))
    assert any(line.startswith("pitfall:") and "; e.g. " in line for line in text.splitlines())


def fused_sources(cache: ContextService) -> list[str]:
    return cache.get_context("default", {"text": REFUND_QUERY, "k": 5})["fused"]["plans"][0][
        "sources"]


def test_cited_runs_follow_retractions(cache):
    cache.get_context("default", {"text": REFUND_QUERY})
    cache.retract("default", ["refund0", "refund1"], "bad data")
    fused = cache.get_context("default", {"text": REFUND_QUERY})["fused"]
    cited = {s for p in fused["plans"] + fused["pitfalls"] for s in p["sources"]}
    assert cited and not cited & {"refund0", "refund1"}
    assert fused["plans"][0]["tools"] == REFUND and fused["plans"][0]["sources"] == ["refund2"]


def test_pitfalls_on_the_neighbours_tools_come_first(cache):
    from lake.fused import pitfalls_for_query

    pool = [{"tool": "cancel_pending_order", "error": "already shipped", "lift": 0.9},
            {"tool": None, "error": "ValueError: bad id", "lift": 0.5},
            {"tool": "return_delivered_order_items", "error": "not delivered", "lift": 0.4}]
    neighbors = [{"tools": REFUND}, {"tools": REFUND + ["get_order_details"]}, {"tools": []}]
    got = pitfalls_for_query(pool, neighbors)
    assert [(p["tool"], p["neighbors_using"]) for p in got] == [
        ("return_delivered_order_items", 2), ("cancel_pending_order", 0), (None, 0)]
    served = cache.get_context("default", {"text": REFUND_QUERY, "k": 5})["fused"]["pitfalls"]
    assert served and served[0]["tool"] in REFUND and served[0]["neighbors_using"] >= 1


def _plan_of(a: dict) -> tuple[list[str], str]:
    p = a["fused"]["plans"][0]
    return p["tools"], p["sources"][0]


def test_exact_serves_the_plan_of_the_run_to_replay_even_outside_the_pool(cache, monkeypatch):
    import lake.fused as fused

    monkeypatch.setattr(fused, "PLAN_POOL", 1)  # the pool: the cancels' plan only
    task = "Refund order #W2000005 to the original card: return the delivered items. I am Li."
    own = ["get_order_details", "issue_store_credit"]
    assert not cache.lake.ingest([_run("mine", task, own, True, 30)]).rejected
    a = cache.get_context("default", {"text": task, "k": 5})
    assert a["verdict"] == "exact" and a["neighbors"][0]["trajectory_id"] == "mine"
    assert cache.fused.cluster("default", a["cluster"]["id"])["plans"][0]["tools"] == CANCEL
    plan = a["fused"]["plans"][0]
    assert (plan["tools"], plan["sources"], plan["why"]) == (own, ["mine"], "replay")
    assert (plan["support"], plan["success_rate"], plan["counted"]) == (1, 1.0, "neighbors")
    # the refunds' own plan (out of the pool too) worked for neighbours: it comes next
    assert [p["why"] for p in a["fused"]["plans"]][1] == "neighbor_succeeded"
    assert a["fused"]["plans"][1]["tools"] == REFUND
    # a run newer than the fused stats (computed at most every few seconds) is replayed too
    again = task.replace("W2000005", "W2000006")
    assert not cache.lake.ingest([_run("newer", again, ["issue_gift_card"], True, 31)]).rejected
    cache.wait_indexed(cache.lake.writer.lag["applied_lsn"] if cache.lake.writer else 0)
    b = cache.get_context("default", {"text": again, "k": 5})
    assert b["verdict"] == "exact" and _plan_of(b) == (["issue_gift_card"], "newer")


def test_the_replayed_plan_cites_the_run_to_replay_first_when_its_outcome_is_unknown(cache):
    from lake.fused import for_query

    pool = [{"tools": CANCEL, "support": 5, "success_rate": 1.0, "score": 0.57,
             "sources": ["cancel0", "cancel1"]},
            {"tools": REFUND, "support": 3, "success_rate": 0.5, "score": 0.09,
             "sources": ["refund0", "refund2", "refund1"]}]
    index = {tuple(p["tools"]): i for i, p in enumerate(pool)}
    near = [{"trajectory_id": "new", "tools": REFUND, "success": None},
            {"trajectory_id": "cancel3", "tools": CANCEL, "success": True}]
    got = for_query(pool, index, near, replay=True)
    assert [(p["tools"], p["why"], p["sources"][0]) for p in got] == [
        (REFUND, "replay", "new"), (CANCEL, "neighbor_succeeded", "cancel3")]
    similar = for_query(pool, index, near, replay=False)  # adapt, not replay: what worked first
    assert [(p["tools"], p["why"]) for p in similar] == [
        (CANCEL, "neighbor_succeeded"), (REFUND, "neighbor_followed")]


def test_plans_come_in_the_documented_order_the_pool_by_score(cache):
    from lake.fused import for_query

    pool = [{"tools": [f"t{i}"], "support": 9 - i, "success_rate": 1.0, "score": 0.9 - i / 10,
             "sources": [f"r{i}"]} for i in range(6)]
    index = {tuple(p["tools"]): i for i, p in enumerate(pool)}
    near = [{"trajectory_id": "x", "tools": ["t4"], "success": False},
            {"trajectory_id": "y", "tools": ["t5"], "success": True},
            {"trajectory_id": "z", "tools": ["own"], "success": True},
            {"trajectory_id": "w", "tools": ["gone"], "success": False}]  # failed, not pooled
    got = for_query(pool, index, near, top=6)
    assert [(p["tools"][0], p["why"]) for p in got] == [
        ("t5", "neighbor_succeeded"), ("own", "neighbor_succeeded"), ("t4", "neighbor_followed"),
        ("t0", "cluster_best"), ("t1", "cluster_best"), ("t2", "cluster_best")]
    best = [p["score"] for p in got if p["why"] == "cluster_best"]
    assert best == sorted(best, reverse=True)


def test_a_miss_serves_no_plans_or_pitfalls(cache):
    from lake.answer_text import describe

    a = cache.get_context("default", {"text": "zebra quartz violin nebula", "k": 5})
    assert a["verdict"] == "miss" and a["cluster"] is not None
    assert a["fused"]["plans"] == [] and a["fused"]["pitfalls"] == []
    assert "no plan or pitfalls" in describe(a)


def _failing(tid: str, task: str, minute: int, last: dict) -> dict:
    run = _run(tid, task, ["get_order_details"], False, minute)
    run["steps"].append(last)
    return run


def test_pitfalls_group_one_error_about_different_ids_and_name_run_errors(cache):
    task = "Refund order #W30000{} to the original card: return the delivered items"
    tool = {"kind": "tool", "name": "return_delivered_order_items"}
    runs = [_failing(f"bad{i}", task.format(i), 40 + i, {
        **tool, "error": f"ValueError: order #W{oid} is not in a valid state"})
        for i, oid in enumerate(("1781527", "9332820"))]
    runs += [_failing(f"boom{i}", task.format(5 + i), 45 + i, {
        "kind": "error", "name": "RuntimeError", "error": "LLM API timeout"}) for i in range(2)]
    runs += [_failing("refused", task.format(8), 48, {
        "kind": "error", "name": "steps_refused", "error": "1 refusal(s) when this run's "
        "steps were sent: steps[3].duration_ms: must be >= 0"})]
    assert not cache.lake.ingest(runs).rejected
    got = cache.get_context("default", {"text": task.format(9), "k": 5})["fused"]["pitfalls"]
    by = {(p["kind"], p["tool"], p["error"]): p for p in got}
    state = by[("tool_error", "return_delivered_order_items",
                "ValueError: order #<n> is not in a valid state")]
    assert state["failed_runs"] == 2 and state["sources"] == ["bad1", "bad0"]
    assert state["example"] == "ValueError: order #W9332820 is not in a valid state"
    raised = by[("error", None, "RuntimeError: LLM API timeout")]
    assert raised["failed_runs"] == 2 and raised["example"] == "RuntimeError: LLM API timeout"
    assert not [p for p in got if "refused" in (p["error"] or "")]  # the client's, not the task's
    assert all(p["tool"] is not None for p in got if p["kind"] != "error")
