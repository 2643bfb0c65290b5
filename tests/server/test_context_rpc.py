"""The semantic cache over gRPC: a real server on port 0, the client, the real model."""

from __future__ import annotations

import grpc
import pytest

from lake import InvalidArgument, NotFound
from proto.contextlake.v1 import lake_pb2 as pb

from .conftest import run


def _runs() -> list[dict]:
    tasks = ["Refund order #W1 to the original card", "Book a flight from NYC to SF on May 3",
             "Cancel my hotel booking in Paris", "Upgrade my seat on flight UA 100"]
    return [run(f"t{i}", task=t) for i, t in enumerate(tasks)]


def test_ingest_get_context_report_and_sql_sees_the_feedback(server, client):
    reply = client.ingest_arrow(_runs())
    client.get_trajectory("t0", min_lsn=reply.lsn)  # committed
    a = client.get_context("book a flight from NYC to SF on May 3, please", k=3)
    assert a["verdict"] == "hit" and a["neighbors"][0]["trajectory_id"] == "t1"
    assert {"context_id", "cluster", "fused", "provenance"} <= set(a)
    client.report(a["context_id"], used=True, success=True, reward=1.0)
    client.report(a["context_id"], used=True, success=True, reward=1.0)  # a retry
    rows = server.lake.sql("select context_id, used, success, reward, verdict "
                           "from feedback").fetchall()
    assert rows == [(a["context_id"], True, True, 1.0, "hit")]
    with pytest.raises(InvalidArgument) as e:
        client.report(a["context_id"], used=True, reward=float("nan"))
    assert e.value.field == "reward"
    swapped = client.get_context("Book a flight from SF to NYC on May 3")
    assert swapped["verdict"] == "similar"
    raw = client.call(client.context.GetContext, pb.GetContextRequest(text="refund order W1"))
    assert raw.context_id and raw.verdict.label and "verdict:" in raw.context
    assert raw.neighbours[0].trajectory.trajectory_id == "t0"
    assert raw.verdict.confidence == pytest.approx(raw.neighbours[0].similarity)
    assert raw.verdict.confidence > 0


def test_context_errors_name_the_field(server, client):
    client.ingest_arrow(_runs())
    with pytest.raises(InvalidArgument) as e:
        client.get_context(vector=[0.5] * 7)
    assert e.value.field == "vector"
    with pytest.raises(InvalidArgument) as e:
        client.call(client.context.GetContext, pb.GetContextRequest())
    assert e.value.field == "query"
    with pytest.raises(InvalidArgument) as e:
        client.call(client.context.GetContext, pb.GetContextRequest(
            text="x", filter=pb.Filter(model="gpt")))
    assert e.value.field == "filter.model"
    with pytest.raises(NotFound):
        client.report("ctx_nope", used=True)
    with pytest.raises(InvalidArgument) as e:
        client.get_context("x", min_lsn=10**12)
    assert e.value.field == "min_lsn"
    with pytest.raises(InvalidArgument) as e:
        client.retract([], "x")
    assert e.value.field == "trajectory_ids"


def test_retract_and_recluster_over_rpc(server, client):
    reply = client.ingest_arrow(_runs())
    client.get_context("warm the index", min_lsn=reply.lsn)
    more = client.ingest_arrow([run("t9", task="Book a flight from NYC to SF on May 4")])
    a = client.get_context("Book a flight from NYC to SF on May 4", min_lsn=more.lsn)
    assert a["verdict"] == "exact"  # indexed after the index was loaded: in the background
    assert client.retract(["t1"], "wrong route") == 1
    versions = len(client.versions())
    assert client.retract(["t1"], "another reason") == 0  # a retry: no new version
    assert len(client.versions()) == versions
    assert server.lake.sql("select retract_reason from trajectories where trajectory_id = "
                           "'t1'").fetchall() == [("wrong route",)]
    a = client.get_context("Book a flight from NYC to SF on May 3", k=4)
    assert "t1" not in {n["trajectory_id"] for n in a["neighbors"]}
    older = max(v["version"] for v in client.versions() if v["operation"] == "ingest")
    for as_of in (None, older):  # never served again, at no version
        with pytest.raises(NotFound, match="'t1' was retracted at .*never served again"):
            client.get_trajectory("t1", as_of=as_of)
    res = client.recluster()
    assert res["clusters"] >= 1 and res["trajectories"] == 4


def test_the_server_stays_up_after_bad_context_requests(server, client):
    lsn = client.ingest_arrow(_runs()).lsn
    for bad in (pb.GetContextRequest(text="x", k=10_000),
                pb.GetContextRequest(vector=pb.Vector(values=[float("nan")] * 384))):
        with pytest.raises(InvalidArgument):
            client.call(client.context.GetContext, bad)
    assert client.get_context("refund", min_lsn=lsn)["neighbors"]
    with pytest.raises(grpc.RpcError):
        client.context.GetContext(pb.GetContextRequest(text=""), timeout=30)


def test_after_a_restore_the_cache_serves_only_what_the_lake_holds(server, client):
    """A restore may remove, bring back or change any run: GetContext answers from the
    restored lake at once, never citing a run it no longer holds."""
    lsn = client.ingest_arrow(_runs()[:2]).lsn
    assert client.get_context("Refund order #W1 to the original card",
                              min_lsn=lsn)["verdict"] == "exact"
    client.tag("two")
    lsn = client.ingest_arrow(_runs()[2:]).lsn
    paris = client.get_context("Cancel my hotel booking in Paris", min_lsn=lsn)
    assert (paris["verdict"], paris["neighbors"][0]["trajectory_id"]) == ("exact", "t2")
    client.restore("two")
    paris = client.get_context("Cancel my hotel booking in Paris")
    assert paris["verdict"] != "exact"
    assert {n["trajectory_id"] for n in paris["neighbors"]} <= {"t0", "t1"}
    assert set(paris["fused"]["sources"]) <= {"t0", "t1"}
    assert set(paris["provenance"]["sources"]) <= {"t0", "t1"}
