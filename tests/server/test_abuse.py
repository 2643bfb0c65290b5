"""Call admission under abuse: open streams capped, idle streams ended, revoked tokens end
their streams, and one tenant cannot take every slot. Real server, real channels; the
limits are set small and short, and waits are bounded by generous deadlines, not timed."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lake.errors import ResourceExhausted, Unauthenticated, Unavailable
from lake.tokens import Tokens
from proto.contextlake.v1 import lake_pb2 as pb
from proto.contextlake.v1 import lake_pb2_grpc as pb_grpc
from server import streams
from server.app import Server, serve
from server.client import LakeClient
from server.errors import from_rpc_error
from server.limits import Limiter
from server.streams import StreamLayer

from .conftest import audit_rows, make_settings, token

DEADLINE_S = 20.0


class Feed:
    """A client stream's requests, fed by the test: ``send`` a message, ``close`` it."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def __iter__(self) -> Iterator[Any]:
        while (item := self._queue.get()) is not None:
            yield item

    def send(self, tid: str, index: int) -> None:
        self._queue.put(pb.StreamStepsRequest(
            trajectory_id=tid, steps=[pb.Step(index=index, kind="tool", name=f"s{index}")]))

    def close(self) -> None:
        self._queue.put(None)


def open_stream(channel: grpc.Channel, text: str | None = None) -> tuple[Feed, Any]:
    feed = Feed()
    metadata = (("authorization", f"Bearer {text}"),) if text else ()
    call = pb_grpc.IngestServiceStub(channel).StreamSteps.future(
        iter(feed), metadata=metadata, timeout=DEADLINE_S * 2)
    return feed, call


def wait_for(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.05)


def failure(call: Any) -> BaseException:
    with pytest.raises(grpc.RpcError) as e:
        call.result(timeout=DEADLINE_S * 2)
    return from_rpc_error(e.value)


# -- the open services: health Watch, reflection --------------------------------------------

def test_open_streams_are_capped_and_the_lake_still_answers(lake_dir):
    settings = make_settings(lake_dir, auth="on", max_inflight=1, max_open_streams=2)
    with serve(settings, "127.0.0.1", 0) as srv, grpc.insecure_channel(srv.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S * 2)
                   for _ in range(2)]
        assert all(next(w).status == health_pb2.HealthCheckResponse.SERVING for w in watches)
        for _ in range(3 * (settings.max_inflight + 4)):  # past gRPC's old limit: ours refuses
            with pytest.raises(grpc.RpcError) as e:
                next(health.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S))
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_open_streams" in e.value.details()
            assert dict(e.value.trailing_metadata())["retry-after-ms"] == "1000"
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as e:
            list(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([listing]), timeout=DEADLINE_S))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S).status == \
            health_pb2.HealthCheckResponse.SERVING  # unary: not capped
        with LakeClient(srv.target, token(srv)) as c:
            assert c.stats()["tenant"] == "acme"  # every tenant is still served

        watches.pop().cancel()  # a slot frees: reflection works again

        def reflects() -> bool:
            try:
                list(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                    iter([listing]), timeout=DEADLINE_S))
                return True
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
        wait_for(reflects, "a reflection stream once a Watch closed")
        watches[0].cancel()


# -- idle client streams ---------------------------------------------------------------------

def test_an_idle_stream_is_ended_and_frees_its_slot(lake_dir):
    with serve(make_settings(lake_dir, stream_idle_ms=300), "127.0.0.1", 0) as srv, \
            grpc.insecure_channel(srv.target) as ch:
        feed, call = open_stream(ch)
        feed.send("idle", 0)  # then nothing
        err = failure(call)
        feed.close()
        assert isinstance(err, Unavailable)
        assert "no message for 300 ms (stream_idle_ms)" in str(err)
        assert "reopen the stream" in str(err) and "idempotent" in str(err)
        wait_for(lambda: srv.limiter.inflight == 0, "the idle stream's slot freed")


def test_a_stream_that_keeps_sending_is_not_idle(lake_dir):
    with serve(make_settings(lake_dir, stream_idle_ms=1500), "127.0.0.1", 0) as srv, \
            grpc.insecure_channel(srv.target) as ch:
        with LakeClient(srv.target) as c:
            c.start("steady work", trajectory_id="steady")
        feed, call = open_stream(ch)
        for i in range(25):  # 2.5 s in all, a message each 0.1 s: never 1.5 s apart
            feed.send("steady", i)
            time.sleep(0.1)
        feed.close()
        assert call.result(timeout=DEADLINE_S).accepted == 25


class _Open:
    async def identify_async(self, metadata: Any) -> None:
        return None


async def _read(layer: StreamLayer, messages: Any, busy_s: float = 0.0) -> list[Any]:
    """Read a watched stream as a servicer does, ``busy_s`` of work after each message."""
    stream = streams.ClientStream(messages, (), layer)
    try:
        got = []
        async for m in stream:
            got.append(m)
            await asyncio.sleep(busy_s)
        return got
    finally:
        stream.close()


def test_the_servicers_own_work_is_not_idleness():
    async def quick() -> Any:  # messages always there at once: the servicer is the slow one
        for i in range(3):
            yield i

    layer = StreamLayer(_Open(), idle_s=0.05)  # type: ignore[arg-type]
    assert asyncio.run(_read(layer, quick(), busy_s=0.2)) == [0, 1, 2]


def test_a_stream_waiting_past_the_idle_time_ends():
    async def stalled() -> Any:
        yield 0
        await asyncio.sleep(3600)
        yield 1

    layer = StreamLayer(_Open(), idle_s=0.05)  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="stream_idle_ms"):
        asyncio.run(_read(layer, stalled()))


# -- revocation while a stream is open -------------------------------------------------------

def _revoke_and_wait(srv: Server, text: str) -> None:
    """Revoke ``text`` as `lake token revoke` does; return once the server refuses it."""
    Tokens.at(srv.lake.settings, actor="cli:test").revoke(text.split("_")[1])

    def refused() -> bool:
        with LakeClient(srv.target, text) as c:
            try:
                c.stats()
            except Unauthenticated:
                return True
        return False
    wait_for(refused, "the revocation known to the server")


@pytest.mark.parametrize("ending", ["closed", "kept-open"])
def test_a_revoked_token_ends_its_open_stream_unacknowledged(lake_dir, monkeypatch, ending):
    if ending == "closed":  # no check as messages come: the one at the end must catch it
        monkeypatch.setattr(streams, "RECHECK_S", 3600.0)
    with serve(make_settings(lake_dir, auth="on"), "127.0.0.1", 0) as srv:
        _revoked_midstream(srv, ending)


def _revoked_midstream(secure: Server, ending: str) -> None:
    text = token(secure, scopes="ingest,read")
    with LakeClient(secure.target, text) as c:
        c.start("a long stream", trajectory_id="live")
    with grpc.insecure_channel(secure.target) as ch:
        feed, call = open_stream(ch, text)
        feed.send("live", 0)
        wait_for(lambda: secure.limiter.inflight == 1, "the stream open")
        _revoke_and_wait(secure, text)
        if ending == "closed":  # the end of the stream is checked: no answer acknowledges it
            feed.send("live", 1)
            feed.close()
        else:  # an open stream is checked as messages come, at least each second
            for i in range(1, 1000):
                if call.done():
                    break
                feed.send("live", i)
                time.sleep(0.05)
        err = failure(call)
        feed.close()
    assert isinstance(err, Unauthenticated)
    assert "revoked" in str(err) and "nothing sent on it is acknowledged" in str(err)
    rows = [r for r in audit_rows(secure) if r["action"] == "IngestService/StreamSteps"]
    assert [(r["tenant"], r["outcome"], r["token_id"]) for r in rows] == \
        [("acme", "unauthenticated", text.split("_")[1])]


# -- one tenant's share of the slots ---------------------------------------------------------

def test_a_tenant_holds_at_most_its_share_and_others_are_served(lake_dir):
    settings = make_settings(lake_dir, auth="on", max_inflight=4, inflight_reserve=2)
    with serve(settings, "127.0.0.1", 0) as srv, grpc.insecure_channel(srv.target) as ch:
        acme, globex = token(srv, "acme"), token(srv, "globex")
        streams = [open_stream(ch, acme) for _ in range(3)]  # idle: one too many
        calls = [call for _, call in streams]
        wait_for(lambda: srv.limiter.inflight == 2 and sum(c.done() for c in calls) == 1,
                 "acme's share taken, its third stream refused")
        [refused] = [failure(c) for c in calls if c.done()]
        with LakeClient(srv.target, acme) as c, pytest.raises(ResourceExhausted) as e:
            c.call(c.admin.Stats, pb.StatsRequest())
        with LakeClient(srv.target, globex) as c:
            assert c.stats()["tenant"] == "globex"  # the reserve is left to the others
        held = [c for c in calls if not c.done()]
        for feed, _ in streams:
            feed.close()
        assert [c.result(timeout=DEADLINE_S).accepted for c in held] == [0, 0]
        outcomes = [(r["tenant"], r["outcome"]) for r in audit_rows(srv)]
    assert isinstance(refused, ResourceExhausted) and e.value.retry_after_s == 0.2
    assert "tenant 'acme' has 2 calls in flight" in str(e.value)
    assert "max_inflight 4 less inflight_reserve 2" in str(e.value)
    assert outcomes.count(("acme", "resource_exhausted")) == 2


@pytest.mark.parametrize(("limit", "reserve", "per_tenant"),
                         [(32, 4, 28), (40, 4, 36), (4, 4, 2), (1, 4, 1), (8, 0, 8)])
def test_a_tenants_share_keeps_at_least_half_the_slots(limit, reserve, per_tenant):
    limiter = Limiter(limit, reserve=reserve)
    assert limiter.per_tenant == per_tenant
    for _ in range(per_tenant):
        limiter.acquire("acme")
    with pytest.raises(ResourceExhausted):
        limiter.acquire("acme")
    if per_tenant < limit:
        limiter.acquire("globex")
        limiter.release("globex")
    for _ in range(per_tenant):
        limiter.release("acme")
    assert limiter.inflight == 0
