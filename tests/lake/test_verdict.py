"""Verdicts with the real all-MiniLM-L6-v2 model on labelled pairs, and the calibration rule.

The fixed pair selection (pair ids of /work/shared/data/dev/pairs.jsonl):
* HARD_NEGATIVES: the 40 same_customer_different_actions pairs with the highest cosine in
  the *calibration* half of benchmarks/bench_verdicts.py's seeded split (cosine 0.80-0.998):
  a regression guard for the calibrated rules. The held-out half has 4 hard negatives that
  still hit (benchmarks/RESULTS.md); they are pinned in KNOWN_LEAKS as a strict xfail, so
  fixing one shows up.
* SAME_TASK: 40 same_task_rewritten pairs, ``random.Random(0).sample`` of the 85 sorted ids.
"""

from __future__ import annotations

import numpy as np
import pytest

from lake import verdict as V

HARD_NEGATIVES = """
taubench:retail:test:93|taubench:retail:test:94 taubench:retail:test:94|taubench:retail:test:95
taubench:retail:test:31|taubench:retail:test:32 taubench:retail:test:102|taubench:retail:test:103
taubench:retail:test:12|taubench:retail:test:13 taubench:retail:test:46|taubench:retail:test:47
taubench:retail:test:99|taubench:retail:test:100
taubench:retail:train:172|taubench:retail:train:379
taubench:retail:test:10|taubench:retail:test:11 taubench:retail:test:110|taubench:retail:test:111
taubench:retail:test:67|taubench:retail:test:68
taubench:retail:train:299|taubench:retail:train:379
taubench:retail:train:172|taubench:retail:train:299
taubench:retail:test:112|taubench:retail:test:113 taubench:retail:test:91|taubench:retail:test:92
taubench:retail:test:94|taubench:retail:test:96 taubench:retail:test:93|taubench:retail:test:96
taubench:retail:test:95|taubench:retail:test:96 taubench:retail:test:30|taubench:retail:test:32
taubench:retail:train:344|taubench:retail:train:430
taubench:retail:train:155|taubench:retail:train:398
taubench:retail:train:122|taubench:retail:train:196
taubench:retail:test:30|taubench:retail:test:31
taubench:retail:train:144|taubench:retail:train:352
taubench:retail:train:78|taubench:retail:train:330
taubench:retail:test:13|taubench:retail:test:14 taubench:retail:test:85|taubench:retail:test:86
taubench:retail:train:134|taubench:retail:train:201
taubench:retail:train:219|taubench:retail:train:288
taubench:retail:test:12|taubench:retail:test:14
taubench:retail:train:42|taubench:retail:train:321
taubench:retail:train:327|taubench:retail:train:355
taubench:retail:train:327|taubench:retail:train:400
taubench:retail:test:47|taubench:retail:test:48
taubench:retail:train:48|taubench:retail:train:409
taubench:retail:train:355|taubench:retail:train:400
taubench:retail:train:260|taubench:retail:train:477
taubench:retail:train:26|taubench:retail:train:466
taubench:retail:test:46|taubench:retail:test:48
taubench:retail:train:245|taubench:retail:train:305
""".split()

SAME_TASK = [f"taubench:retail:test:{a}|tau2:retail:{b}" for a, b in (
    (104, 103), (106, 105), (10, 10), (112, 111), (113, 112), (14, 14), (15, 15), (16, 16),
    (19, 19), (1, 1), (20, 20), (27, 27), (28, 28), (30, 30), (32, 32), (33, 33), (35, 35),
    (40, 40), (44, 44), (45, 45), (46, 46), (49, 49), (52, 52), (56, 56), (5, 5), (61, 61),
    (63, 63), (66, 66), (67, 67), (6, 6), (70, 70), (74, 74), (75, 75), (78, 78), (80, 80),
    (82, 82), (85, 85), (8, 8), (90, 90), (92, 92))]

KNOWN_LEAKS = ["taubench:retail:test:60|taubench:retail:test:61",
               "taubench:retail:test:82|taubench:retail:test:83",
               "taubench:retail:test:104|taubench:retail:test:105",
               "taubench:retail:train:13|taubench:retail:train:49"]

# the tau/retail cluster's threshold as calibrated by benchmarks/bench_verdicts.py
RETAIL_THRESHOLD = 0.80


def _verdicts(minilm, pairs: list[dict], threshold: float) -> list[V.Verdict]:
    texts = sorted({t for p in pairs for t in (p["a"], p["b"])})
    vecs = dict(zip(texts, minilm.embed(texts), strict=True))
    return [V.decide(p["a"], p["b"], float(np.dot(vecs[p["a"]], vecs[p["b"]])), threshold)
            for p in pairs]


def _pairs(dev_pairs, ids):
    return [dev_pairs["tau/" + i] for i in ids]


@pytest.fixture(scope="module")
def labelled(minilm, dev_pairs):
    hard = _pairs(dev_pairs, HARD_NEGATIVES)
    same = _pairs(dev_pairs, SAME_TASK)
    assert len(hard) == len(same) == 40
    assert all(p["kind"] == "same_customer_different_actions" for p in hard)
    assert all(p["kind"] == "same_task_rewritten" for p in same)
    verdicts = _verdicts(minilm, hard + same, RETAIL_THRESHOLD)
    return hard, verdicts[:40], same, verdicts[40:]


def test_no_hard_negative_is_a_hit(labelled):
    hard, verdicts, _, _ = labelled
    leaks = [(p["pair_id"], v.cosine) for p, v in zip(hard, verdicts, strict=True)
             if v.reusable]
    assert not leaks
    assert max(v.cosine for v in verdicts) > 0.99  # the selection is hard for a cosine
    assert all(v.verdict == "similar" for v in verdicts if v.cosine >= RETAIL_THRESHOLD)


def test_half_of_same_task_pairs_hit(labelled):
    _, _, same, verdicts = labelled
    hits = sum(v.reusable for v in verdicts)
    assert hits >= 20, [(p["pair_id"], v.reason) for p, v in zip(same, verdicts, strict=True)
                        if not v.reusable]


def test_same_task_pairs_are_at_least_similar(labelled):
    _, _, _, verdicts = labelled
    assert all(v.verdict != "miss" for v in verdicts)


def test_ticket_vs_user_instructions_is_similar(minilm, dev_pairs):
    """A support ticket and the user's own instructions: same task, other words (cosine
    ~0.64-0.73): adapt, do not replay."""
    pairs = [p for p in dev_pairs.values()
             if p["kind"] == "same_task_ticket_vs_user_instructions"][:4]
    for v in _verdicts(minilm, pairs, V.DEFAULT_THRESHOLD):
        assert v.verdict == "similar", v


@pytest.mark.xfail(strict=True, reason="known held-out leaks (benchmarks/RESULTS.md): a "
                   "deleted clause or a swapped cancel reason the slot rules do not see")
def test_known_leaks_are_still_hits(minilm, dev_pairs):
    verdicts = _verdicts(minilm, _pairs(dev_pairs, KNOWN_LEAKS), RETAIL_THRESHOLD)
    assert not any(v.reusable for v in verdicts)


def test_flight_direction_is_not_a_hit(minilm):
    a, b = "book a flight NYC to SF", "book a flight SF to NYC"
    va, vb = minilm.embed([a, b])
    cos = float(va @ vb)
    assert cos > 0.95  # the embedding cannot tell them apart
    v = V.decide(a, b, cos, V.MIN_THRESHOLD)
    assert v.verdict == "similar" and "order" in v.reason and v.slots_equal is False


def test_exact_and_miss(minilm):
    a = "Cancel order #W1 for  Isabella"
    assert V.decide(a, "cancel ORDER #W1 for isabella", 0.2).verdict == "exact"
    va, vb = minilm.embed([a, "What is the capital of France?"])
    v = V.decide(a, "What is the capital of France?", float(va @ vb))
    assert v.verdict == "miss" and v.cosine < V.SIMILAR_MIN


def test_embedder_contract(minilm):
    vecs = minilm.embed(["a", "b c", ""])
    assert minilm.dim == 384
    assert vecs.dtype == np.float32 and vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)
    assert np.allclose(minilm.embed(["b c"])[0], vecs[1], atol=1e-5)
    with pytest.raises(TypeError):
        minilm.embed("not a list")


def test_embedder_is_thread_safe_and_shares_the_model(minilm):
    from concurrent.futures import ThreadPoolExecutor

    from lake.embedder import get

    texts = [f"cancel order #W{i} for user_{i}" for i in range(16)]
    want = minilm.embed(texts)
    other = get("all-MiniLM-L6-v2")
    assert other.loaded  # the session's model, not a second copy
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda t: other.embed([t])[0], texts))
    assert np.allclose(np.stack(got), want, atol=1e-4)


# -- decide without the model -------------------------------------------------------------

def test_decide_reasons():
    v = V.decide("Cancel order #W1", "Cancel order #W2", 0.99, 0.9)
    assert v.verdict == "similar" and v.reason == "slot 'order_id' differs: #W1 vs #W2"
    v = V.decide("Cancel order #W1 now", "Cancel order #W1 today", 0.85, 0.9)
    assert v.verdict == "similar" and v.reason.startswith("cosine 0.850 < hit threshold 0.90")
    v = V.decide("mention the robotic one", "mention the canister one", 0.97, 0.9)
    assert v.verdict == "similar" and "wording" in v.reason
    assert V.decide("Cancel order #W1 now", "cancel order #W1, now!", 0.97, 0.9).verdict == "hit"
    assert V.decide("a", "b", 0.3).verdict == "miss"


def test_wording_tolerates_typos_and_inflections():
    assert not V.wording_differences("exchange it if availabe", "exchange it if available")
    assert not V.wording_differences("the agent asks twice", "the agent asked twice")
    assert V.wording_differences("along with a speaker", "along with sneakers")


def test_wording_a_pronoun_spelled_out_is_no_swap_but_a_quantifier_is():
    assert not V.wording_differences("exchange your current one to the largest size",
                                     "exchange your current bottle for the largest size")
    assert not V.wording_differences("you like it extremely", "you like it a lot")
    assert V.wording_differences("you want to return all in that order",
                                 "you want to return the kettle in that order")
    assert V.wording_differences("mention the robotic one", "mention the canister one")


# -- calibration --------------------------------------------------------------------------

def test_calibrate_keeps_the_default_without_evidence():
    assert V.calibrate([]) == V.DEFAULT_THRESHOLD
    few = [(0.85, True, True)] * 20 + [(0.5, True, False)] * 50
    c = V.calibration(few)
    assert c.threshold == V.DEFAULT_THRESHOLD and c.action == "kept"


def test_calibrate_raises_on_one_false_hit():
    obs = [(0.97, True, False)] + [(0.3, True, False)] * 10 + [(0.99, True, True)] * 5
    c = V.calibration(obs)
    assert c.action == "raised" and c.threshold == 0.98 and c.false_hits == 0


def test_calibrate_lowers_only_with_enough_clean_evidence():
    dups = [(0.85, True, True)] * 30
    clean = [(0.9, False, False)] * 150 + [(0.6, True, False)] * 50   # n=200, no false hit
    c = V.calibration(dups + clean)
    assert c.action == "lowered" and c.threshold == V.MIN_THRESHOLD
    assert c.false_hit_upper <= 0.01
    small = [(0.9, False, False)] * 150   # n=150: the bound stays above 1%
    assert V.calibrate(dups + small) == V.DEFAULT_THRESHOLD
    one_fh = clean + [(0.82, True, False)]  # a false hit at 0.82 keeps 0.80 out of reach
    assert V.calibrate(dups + one_fh) > 0.82
    assert V.calibrate(clean + [(0.97, True, True)] * 5) == V.DEFAULT_THRESHOLD  # no gain


def test_upper_bound():
    assert V.false_hit_upper_bound(0, 0) == 1.0
    assert V.false_hit_upper_bound(0, 190) > 0.01 >= V.false_hit_upper_bound(0, 191)
    assert V.false_hit_upper_bound(1, 389) > 0.01 >= V.false_hit_upper_bound(1, 390)


def _runs_of(*outcomes: bool | None, text: str = "Change the shipping address of #W1") -> list:
    return [{"trajectory_id": f"r{i}", "task": text, "similarity": 1.0, "success": ok}
            for i, ok in enumerate(outcomes)]


@pytest.mark.parametrize("outcomes, verdict, first, words", [
    ((False,) * 5, "similar", "r0", "failed every time it was run (5 run(s)): adapt it"),
    ((False, False, True, False), "exact", "r2", "1 of 4 run(s) of it succeeded"),
    ((False, None, False), "similar", "r1", "never succeeded (2 run(s) failed, 1 without"),
    ((None, None), "exact", "r0", "no outcome reported for its 2 run(s)"),
    ((None, True, False), "exact", "r1", "1 of 3"),
])
def test_same_text_is_exact_only_if_a_run_of_it_did_not_fail(outcomes, verdict, first, words):
    """M1: the runs of the query's own text come first, a successful one first, then those of
    unknown outcome; ``exact`` (replay it) only if one succeeded or none is known to have
    failed. Slots stay equal: the text is the same."""
    other = {"trajectory_id": "x", "task": "Cancel order #W2", "similarity": 0.8,
             "success": True}
    ns = [other, *_runs_of(*outcomes)]
    hashes = ["h-other"] + ["h"] * len(outcomes)
    got = V.of_neighbors("change the shipping address of #W1", "h", ns, hashes, 0.95)
    assert got["verdict"] == verdict and words in got["reason"], got
    assert got["slots_equal"] is True
    assert ns[0]["trajectory_id"] == first and ns[-1] is other
    ranks = [{True: 0, None: 1, False: 2}[n["success"]] for n in ns[:-1]]
    assert ranks == sorted(ranks)


def test_a_failed_near_duplicate_is_no_hit_and_a_vector_at_most_similar():
    ns = [{"trajectory_id": "r0", "task": "Book a flight from NYC to SF on May 3",
           "similarity": 0.99, "success": False}]
    got = V.of_neighbors("book a flight from NYC to SF on May 3 please", "q", ns, ["h"], 0.95)
    assert got["verdict"] == "similar" and "failed" in got["reason"]
    assert V.of_neighbors(None, None, ns, ["h"], 0.95)["verdict"] == "similar"
    assert V.of_neighbors("x", "q", [], [], 0.95)["verdict"] == "miss"
