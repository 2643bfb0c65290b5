"""``LakeClient.report``: what it answers (stored or a repeat, the threshold it moved), the
latest report on a context counting, and a run named before it exists."""

from __future__ import annotations

from server.client import LakeClient, ReportReply

from .conftest import run


def _served_hit(client: LakeClient) -> dict:
    reply = client.ingest_arrow([run("t0", task="Book a flight from NYC to SF on May 3")])
    served = client.get_context("book a flight from NYC to SF on May 3, please",
                                min_lsn=reply.lsn)
    assert served["verdict"] == "hit"
    return served


def test_report_says_whether_it_was_stored_and_the_threshold_it_left(server, client):
    served = _served_hit(client)
    cid, default = served["context_id"], served["cluster"]["hit_threshold"]
    first = client.report(cid, used=True, success=True)
    assert isinstance(first, ReportReply)
    assert (first.stored, first.hit_threshold) == (True, default)
    assert first.lsn >= 0
    assert not client.report(cid, used=True, success=True).stored  # a retry: nothing new
    failed = client.report(cid, used=True, success=False)  # the run failed after all
    assert failed.stored and failed.hit_threshold > default
    fixed = client.report(cid, used=True, success=True)  # no: it worked; the latest counts
    assert (fixed.stored, fixed.hit_threshold) == (True, default)
    assert server.lake.sql("select success from feedback order by reported_at").fetchall() \
        == [(True,), (False,), (True,)]


def test_a_report_may_name_a_run_not_committed_yet(server, client):
    served = _served_hit(client)
    assert client.report(served["context_id"], used=True, success=True,
                         trajectory_id="later-1").stored  # the run is still in flight
    lsn = client.ingest_arrow([run("later-1", task="Book a flight from NYC to SF on May 3, "
                                                   "please")]).lsn
    client.get_trajectory("later-1", min_lsn=lsn)
    assert server.lake.sql("select t.trajectory_id from feedback f join trajectories t "
                           "using (trajectory_id)").fetchall() == [("later-1",)]
