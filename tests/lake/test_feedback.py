"""Reports on served contexts: every one is kept in ``feedback``, but a context's latest
report is the one that counts in its cluster's hit threshold, live and when reloaded."""

from __future__ import annotations

from lake.context import ContextService

FLIGHT = "Book a flight from NYC to SF on May 3"



def _served_hit(cache: ContextService) -> dict:
    cache.lake.ingest([{"trajectory_id": "r0", "task": FLIGHT,
                        "steps": [{"kind": "tool", "name": "book"}],
                        "outcome": {"success": True}}])
    served = cache.get_context("default", {"text": "book a flight from NYC to SF on May 3, please"})
    assert served["verdict"] == "hit"
    return served


def _counted(cache: ContextService, cluster: int, *, reload: bool = False) -> tuple:
    if reload:  # as at a restart or a refit: from the table
        cache.flush_log()
        cache.feedback.load("default", {"r0": cluster}.get)
    return (cache.threshold("default", cluster),
            cache.feedback.stats("default", cluster)["reports_used"])


def test_the_latest_report_on_a_context_is_the_one_that_counts(cache):
    served = _served_hit(cache)
    cid, cluster = served["context_id"], served["cluster"]["id"]
    default = served["cluster"]["hit_threshold"]
    for success in (True, False, True):  # changed its mind twice: it worked after all
        assert cache.report("default", cid, used=True, success=success)["stored"]
    assert _counted(cache, cluster) == (default, 1)  # the false hit no longer counts
    assert _counted(cache, cluster, reload=True) == (default, 1)
    assert cache.report("default", cid, used=True, success=False)["stored"]
    raised = _counted(cache, cluster)
    assert raised[0] > default and raised[1] == 1
    assert _counted(cache, cluster, reload=True) == raised
    assert cache.lake.sql("select success from feedback order by reported_at").fetchall() == \
        [(True,), (False,), (True,), (False,)]  # SQL keeps the history


def test_a_latest_report_of_not_used_withdraws_the_context(cache):
    served = _served_hit(cache)
    cid, cluster = served["context_id"], served["cluster"]["id"]
    cache.report("default", cid, used=True, success=False)
    assert _counted(cache, cluster)[0] > served["cluster"]["hit_threshold"]
    cache.report("default", cid, used=False)  # it was not used after all
    assert _counted(cache, cluster) == (served["cluster"]["hit_threshold"], 0)
    assert _counted(cache, cluster, reload=True) == (served["cluster"]["hit_threshold"], 0)


def test_a_context_whose_best_run_had_failed_says_nothing_of_the_threshold(cache):
    """Its verdict said not to replay it (a failed near-duplicate, or the same text that
    failed every time): a failure after it is no false hit, live or reloaded."""
    cache.lake.ingest([{"trajectory_id": "r0", "task": FLIGHT,
                        "steps": [{"kind": "tool", "name": "book"}],
                        "outcome": {"success": False}}])
    for text in ("book a flight from NYC to SF on May 3, please", FLIGHT):
        served = cache.get_context("default", {"text": text})
        assert served["verdict"] == "similar"  # downgraded: the run failed
        cid, cluster = served["context_id"], served["cluster"]["id"]
        default = served["cluster"]["hit_threshold"]
        assert cache.report("default", cid, used=True, success=False)["stored"]
        assert _counted(cache, cluster) == (default, 0)
        assert _counted(cache, cluster, reload=True) == (default, 0)
    assert cache.lake.sql("select top_success from contexts").fetchall() == [(False,), (False,)]


def test_a_run_whose_replays_keep_failing_is_no_longer_served_as_one_to_replay(cache):
    """The agent QA's loop: one failed reuse after a hit tightened the threshold, then 20
    more failed reuses of the same run still came back `hit` ("reuse it"). Reports are
    remembered per replayed run: after two failed replays (more than succeeded) the verdict
    is `similar`, naming the run and its record; a later success report restores it."""
    cache.lake.ingest([{"trajectory_id": "r0", "task": FLIGHT,
                        "steps": [{"kind": "tool", "name": "book"}],
                        "outcome": {"success": True}}])
    served = []
    for _ in range(2):
        got = cache.get_context("default", {"text": FLIGHT})
        assert got["verdict"] == "exact"
        cache.report("default", got["context_id"], used=True, success=False)
        served.append(got["context_id"])
    got = cache.get_context("default", {"text": FLIGHT})
    assert got["verdict"] == "similar" and got["neighbors"][0]["trajectory_id"] == "r0"
    assert "replaying run 'r0' failed 2 of 2 reported times" in got["reason"]
    cache.flush_log()  # as after a restart: from the tables
    cache.feedback.load("default", {"r0": got["cluster"]["id"]}.get)
    assert cache.get_context("default", {"text": FLIGHT})["verdict"] == "similar"
    for cid in served:  # the agent corrects its reports: it worked after all
        cache.report("default", cid, used=True, success=True)
    assert cache.get_context("default", {"text": FLIGHT})["verdict"] == "exact"


def test_an_exact_passes_over_a_run_whose_replays_fail_to_another_run_of_the_text(cache):
    cache.lake.ingest([{"trajectory_id": tid, "task": FLIGHT,
                        "steps": [{"kind": "tool", "name": "book"}],
                        "outcome": {"success": True}} for tid in ("r0", "r1")])
    first = None
    for _ in range(2):
        got = cache.get_context("default", {"text": FLIGHT})
        first = first or got["neighbors"][0]["trajectory_id"]
        assert got["verdict"] == "exact" and got["neighbors"][0]["trajectory_id"] == first
        cache.report("default", got["context_id"], used=True, success=False)
    got = cache.get_context("default", {"text": FLIGHT})
    other = ({"r0", "r1"} - {first}).pop()
    assert got["verdict"] == "exact" and got["neighbors"][0]["trajectory_id"] == other
    assert f"run {first!r}, whose replays failed 2 of 2 reported times, passed over" \
        in got["reason"]
