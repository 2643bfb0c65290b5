"""The server as a whole: health, reflection, malformed input, overload, graceful shutdown."""

from __future__ import annotations

import threading

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from lake import Lake
from lake.errors import Conflict, InvalidArgument, NotFound, ResourceExhausted, Unauthenticated
from proto.contextlake.v1 import lake_pb2 as pb
from server.app import serve
from server.client import LakeClient
from server.errors import status_of
from server.service import SERVICE_NAMES

from .conftest import audit_rows, make_settings, run


def test_health_answers_serving_for_the_server_and_each_service(server):
    with grpc.insecure_channel(server.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", *SERVICE_NAMES):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_reflection_lists_the_services_and_calls_stats_without_the_proto(server):
    with grpc.insecure_channel(server.target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        assert set(SERVICE_NAMES) | {"grpc.health.v1.Health"} <= set(db.get_services())
        service = DescriptorPool(db).FindServiceByName("contextlake.v1.AdminService")
        method = service.methods_by_name["Stats"]
        request = message_factory.GetMessageClass(method.input_type)
        reply = message_factory.GetMessageClass(method.output_type)
        stats = ch.unary_unary(f"/{service.full_name}/{method.name}",
                               request_serializer=request.SerializeToString,
                               response_deserializer=reply.FromString)(request(), timeout=5)
    assert stats.tenant == "default" and stats.version >= 1 and stats.auth == "off"


def _unchanged(client: LakeClient, before: dict) -> None:
    """The server still answers and nothing was logged or committed."""
    after = client.stats()
    assert {k: after[k] for k in ("submitted_lsn", "version", "trajectories")} == \
        {k: before[k] for k in ("submitted_lsn", "version", "trajectories")}


@pytest.mark.parametrize("data", [b"garbage", b"\xff" * 64, b"ARROW1\x00\x00garbage"],
                         ids=["text", "ff", "file-magic"])
def test_garbage_arrow_is_refused_whole_naming_the_field(client, data):
    before = client.stats()
    with pytest.raises(InvalidArgument) as e:
        client.call(client.ingest.IngestArrow, pb.IngestArrowRequest(arrow_ipc=data))
    assert e.value.field == "arrow_ipc" and "Arrow IPC" in e.value.message
    _unchanged(client, before)


@pytest.mark.parametrize("method", ["ContextService/GetTrajectory",
                                    "IngestService/StartTrajectory",
                                    "IngestService/StreamSteps"])
def test_bytes_that_are_no_message_are_invalid_argument(server, client, method, caplog):
    before = client.stats()
    with grpc.insecure_channel(server.target) as ch:
        name = f"/contextlake.v1.{method}"
        call = ch.stream_unary(name) if "Stream" in method else ch.unary_unary(name)
        data = b"\xff\xff\xff\xff"
        with pytest.raises(grpc.RpcError) as e:
            call(iter([data]) if "Stream" in method else data, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid" in e.value.details() and "Request message" in e.value.details()
    assert "Traceback" not in caplog.text
    _unchanged(client, before)


def test_a_long_value_quoted_in_an_error_still_travels(client):
    for call in (lambda: client.report("ctx_" + "x" * 30_000, used=True),
                 lambda: client.retract(["x" * 30_000], "cleanup")):
        with pytest.raises((NotFound, InvalidArgument)) as e:  # not "metadata ... hard limit"
            call()
        assert len(str(e.value)) < 3000
    code, message, trailers = status_of(InvalidArgument("y" * 30_000, field="z" * 30_000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "characters, cut" in message
    assert len(message) < 3000 and all(len(v) < 1000 for _, v in trailers)


def test_an_unknown_enum_number_names_the_field(client):
    request = pb.ListTrajectoriesRequest()
    request.filter.status.append(17)
    with pytest.raises(InvalidArgument) as e:
        client.call(client.context.ListTrajectories, request)
    assert e.value.field == "filter.status[0]" and "17" in e.value.message


def test_an_oversize_message_is_refused_and_the_server_stays_up(lake_dir):
    with serve(make_settings(lake_dir, max_message_bytes=1 << 20), "127.0.0.1", 0) as srv, \
            LakeClient(srv.target) as client:
        before = client.stats()
        big = pb.IngestArrowRequest(arrow_ipc=b"\0" * (2 << 20))
        with pytest.raises(grpc.RpcError) as raw:  # gRPC's own status for it
            client.ingest.IngestArrow(big, timeout=30)
        assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(InvalidArgument) as e:  # the client: no retry can fit it
            client.call(client.ingest.IngestArrow, big)
        assert "larger than max" in str(e.value) and e.value.field == "request"
        _unchanged(client, before)
        # the client splits what does not fit one message: rejects keep their row numbers
        with LakeClient(srv.target, max_message_bytes=1 << 20) as small:
            rows = [run(f"r{i}", steps=[{"kind": "llm", "output": "y" * 30_000}])
                    for i in range(60)]
            rows[45] = {"trajectory_id": "r45"}
            reply = small.ingest_arrow(rows)
        assert reply.accepted == 59 and [r["index"] for r in reply.rejects] == [45]


def test_overload_is_refused_with_a_retry_hint_and_audited(lake_dir):
    with serve(make_settings(lake_dir, max_inflight=1), "127.0.0.1", 0) as srv, \
            LakeClient(srv.target) as client:
        with srv.limiter.slot():  # one call in flight: the limit
            with pytest.raises(grpc.RpcError) as raw:
                client.admin.Stats(pb.StatsRequest(), timeout=5)
            with pytest.raises(ResourceExhausted) as e:
                client.stats()
        assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(raw.value.trailing_metadata())["retry-after-ms"] == "200"
        assert e.value.retry_after_s == 0.2 and "max_inflight" in str(e.value)
        assert client.stats()["tenant"] == "default"  # the slot is free again
        assert [r["outcome"] for r in audit_rows(srv)] == ["resource_exhausted"] * 2


def test_concurrent_calls_beyond_the_limit_finish_or_are_refused(lake_dir):
    outcomes: list[str] = []
    with serve(make_settings(lake_dir, max_inflight=2), "127.0.0.1", 0) as srv, \
            LakeClient(srv.target) as client:
        def work(i: int) -> None:
            try:
                client.ingest_arrow([run(f"t{i}-{j}", 5) for j in range(20)])
                outcomes.append("ok")
            except ResourceExhausted:
                outcomes.append("busy")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(outcomes) == 12 and "ok" in outcomes
        assert srv.limiter.inflight == 0


def test_stopping_flushes_the_write_path_and_the_audit_buffer(lake_dir):
    settings = make_settings(lake_dir, auth="on", flush_interval_ms=60_000)
    srv = serve(settings, "127.0.0.1", 0)
    with LakeClient(srv.target, srv.tokens.create("acme", "bot", "ingest")[0]) as c:
        reply = c.ingest_arrow([run("a", 4), run("b", 1)])
    with LakeClient(srv.target) as anonymous, pytest.raises(Unauthenticated):
        anonymous.stats()
    assert srv.lake.writer.lag["applied_lsn"] < reply.lsn  # logged, not yet committed
    assert srv.audit.pending >= 1
    srv.stop()
    with Lake.open(str(lake_dir), readonly=True) as lake:  # a reader replays nothing
        assert lake.version().operation == "ingest"  # committed at shutdown
        assert lake.sql("select count(*) from steps", tenant="acme").fetchall() == [(5,)]
        assert lake.sql("select outcome from audit", all_tenants=True).fetchall() == \
            [("unauthenticated",)]


def test_a_port_in_use_is_a_conflict_and_leaves_nothing_locked(lake_dir, tmp_path):
    with serve(make_settings(lake_dir), "127.0.0.1", 0) as first:
        other = tmp_path / "other"
        with pytest.raises(Conflict) as e:
            serve(make_settings(other), "127.0.0.1", first.port)
        assert "--port" in str(e.value)
        Lake.open(str(other)).close()  # its lake was closed again
