"""The semantic cache's verdict on runs of the query's own text, on a real lake with the real
model: ``exact`` (replay it) only when a run of that text did not fail."""

from __future__ import annotations

from lake.index import Filters
from lake.records import now_us

TASK = "Change the shipping address of order #W4817420 to 445 Maple Drive, Suite 394, Boston"



def _runs(outcomes: list[bool | None], task: str = TASK, prefix: str = "r") -> list[dict]:
    return [{"trajectory_id": f"{prefix}{i}", "task": task,
             "steps": [{"kind": "tool", "name": "get_order_details"},
                       {"kind": "tool", "name": "modify_pending_order_address"}],
             "outcome": {"success": ok}} for i, ok in enumerate(outcomes)]


OTHERS = ["Cancel order #W2378156 because it was ordered by mistake",
          "Return the water bottle of order #W6390527 to the original card"]


def test_a_task_that_failed_every_time_is_not_exact(cache):
    others = [{**r, "task": t} for r, t in zip(_runs([True, True], prefix="o"), OTHERS,
                                                strict=True)]
    cache.lake.ingest(_runs([False] * 5) + others)
    a = cache.get_context("default", {"text": TASK, "k": 5})
    assert a["verdict"] == "similar", a["reason"]
    assert a["reason"] == ("the same task failed every time it was run (5 run(s)): adapt it, "
                           "do not replay it")
    assert [n["success"] for n in a["neighbors"]] == [False] * 5
    assert cache.contexts.get(a["context_id"])["slots_equal"] is True


def test_a_success_among_the_runs_is_exact_and_comes_first(cache):
    cache.lake.ingest(_runs([False, False, True, False, None]))
    a = cache.get_context("default", {"text": "  " + TASK.upper(), "k": 5})
    assert a["verdict"] == "exact", a["reason"]
    assert "1 of 5 run(s) of it succeeded" in a["reason"]
    assert [n["trajectory_id"] for n in a["neighbors"]][:2] == ["r2", "r4"]
    assert [n["success"] for n in a["neighbors"]] == [True, None, False, False, False]


def test_a_success_beyond_k_still_makes_it_exact(cache):
    """Runs of one text tie: with more of them than k, the successful one may not be among
    the k found; it is looked for before the task is said to have failed every time."""
    cache.lake.ingest(_runs([False] * 7 + [True]))
    idx, vec = cache.index("default"), cache.embed_queries("default", [TASK])[0]
    ids, _ = idx.search(vec, 3, Filters(), now_us())
    assert "r7" not in {idx.rows[int(i)].trajectory_id for i in ids}  # the case under test
    a = cache.get_context("default", {"text": TASK, "k": 3})
    assert a["verdict"] == "exact", a["reason"]
    assert [n["trajectory_id"] for n in a["neighbors"]][0] == "r7"
    assert len(a["neighbors"]) == 3
    b = cache.get_context("default", {"text": TASK, "k": 3, "filters": {"agent": "nobody"}})
    assert b["verdict"] == "miss"  # the look-up keeps the query's filters


def test_runs_without_an_outcome_are_not_held_against_it(cache):
    cache.lake.ingest(_runs([None, None]))
    a = cache.get_context("default", {"text": TASK})
    assert a["verdict"] == "exact" and "no outcome reported" in a["reason"]
    cache.wait_indexed(cache.lake.ingest(_runs([False], prefix="f")).lsn)
    b = cache.get_context("default", {"text": TASK})
    assert b["verdict"] == "similar" and "never succeeded" in b["reason"]
    assert [n["success"] for n in b["neighbors"]] == [None, None, False]


REVERSED = [  # QA F-HIT: a successful run of the first text; the second reverses its roles
    ("Move the user's line from plan P-100 to plan P-200 on 555-123-2002",
     "Move the user's line from plan P-200 to plan P-100 on 555-123-2002", "'P-100' is to vs from"),
    ("Transfer $50 from checking to savings for John Smith",
     "Transfer $50 from savings to checking for John Smith", "'checking' is to vs from"),
    ("Switch the user from the basic plan to the premium plan",
     "Switch the user from the premium plan to the basic plan", "'basic' is to vs from"),
    ("Enable roaming and disable mobile data on 555-123-2002",
     "Disable roaming and enable mobile data on 555-123-2002", "'data' is enable vs disable"),
    ("Exchange 2 blue T-shirts size M for size L in order #W1000002",
     "Exchange 2 blue T-shirts size L for size M in order #W1000002", "'l' is from vs to"),
]
REWORDED = [  # the same roles in another order: still a hit
    ("Switch the user from the basic plan to the premium plan",
     "Switch the user to the premium plan from the basic plan"),
    ("Enable roaming and disable mobile data on 555-123-2002",
     "Disable mobile data and enable roaming on 555-123-2002"),
]


def test_a_task_with_its_roles_reversed_is_similar_not_hit(cache):
    """The reversed task embeds at cosine ~0.99 and has the same slot values; the reason
    names the swapped word and its role in the query vs in the run. A rewording that keeps
    the roles stays a hit."""
    tasks = [a for a, _, _ in REVERSED]
    for i, task in enumerate(tasks):
        cache.lake.ingest(_runs([True], task, prefix=f"t{i}-"))
    cache.wait_indexed(cache.lake.ingest(_runs([True], OTHERS[0], prefix="o")).lsn)
    for _, reversed_, role in REVERSED:
        a = cache.get_context("default", {"text": reversed_, "k": 3})
        assert a["neighbors"][0]["similarity"] >= 0.95, a["neighbors"][0]
        assert a["verdict"] == "similar", (reversed_, a["reason"])
        assert a["reason"] == f"slot 'role' differs: {role}", a["reason"]
    for _, reworded in REWORDED:
        a = cache.get_context("default", {"text": reworded, "k": 3})
        assert a["verdict"] == "hit", (reworded, a["reason"])
