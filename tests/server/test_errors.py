"""Every lake error maps to one status code and comes back to the client as the same class."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator

import grpc
import pytest

from lake.errors import (
    ALL_ERRORS,
    InvalidArgument,
    LakeError,
    ResourceExhausted,
    Unavailable,
)
from server.app import LoopServer
from server.client import LakeClient
from server.errors import (
    ERROR_OF,
    FIELD_KEY,
    RETRY_KEY,
    STATUS,
    ErrorLayer,
    Layer,
    from_rpc_error,
    layered,
)

# A real server with the real error layer; its test methods raise what they are told to:
# Raise as a plain function (run on the server's thread pool), RaiseAsync on the event loop.
SERVICE = "contextlake.test.Errors"
RAISE: dict[str, BaseException] = {}


def _raise(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RAISE[request.decode()]


async def _raise_async(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RAISE[request.decode()]


def _add(servicer: object, server: object) -> None:
    server.add_registered_method_handlers(SERVICE, {  # type: ignore[attr-defined]
        "Raise": grpc.unary_unary_rpc_method_handler(_raise),
        "RaiseAsync": grpc.unary_unary_rpc_method_handler(_raise_async)})


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    rpc = LoopServer(workers=2)
    rpc.register(_add, None, [ErrorLayer()])
    port = rpc.server.add_insecure_port("127.0.0.1:0")
    rpc.run(rpc.server.start())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    rpc.run(rpc.server.stop(0))
    rpc.close()


@pytest.fixture(params=["Raise", "RaiseAsync"])
def call(channel: grpc.Channel, request: pytest.FixtureRequest) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{SERVICE}/{request.param}")


def _fail(call: grpc.UnaryUnaryMultiCallable, exc: BaseException) -> grpc.RpcError:
    RAISE[repr(exc)] = exc
    with pytest.raises(grpc.RpcError) as e:
        call(repr(exc).encode(), timeout=10)
    return e.value


def test_every_lake_error_class_has_its_own_status():
    assert set(ALL_ERRORS) <= set(STATUS), "map every class of lake.errors in server/errors.py"
    codes = [STATUS[c] for c in ALL_ERRORS]
    assert len(set(codes)) == len(codes), "two classes share a status: the client can't tell"
    assert all(ERROR_OF[STATUS[c]] is c for c in ALL_ERRORS)
    assert grpc.StatusCode.INTERNAL not in codes and grpc.StatusCode.OK not in codes


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_each_error_travels_and_comes_back_as_itself(call, cls):
    exc = cls("what failed and what to do", field="steps[3].kind", location="item 7")
    err = _fail(call, exc)
    assert err.code() == STATUS[cls]
    assert err.details() == str(exc)  # the full text, naming where
    back = from_rpc_error(err)
    assert type(back) is cls
    assert (back.message, back.field, back.location) == (exc.message, exc.field, exc.location)


def test_field_paths_travel_in_utf8_and_retry_hints_in_ms(call):
    err = _fail(call, InvalidArgument("bad score", field="outcome.scores.été"))
    assert dict(err.trailing_metadata())[FIELD_KEY] == "outcome.scores.été".encode()
    assert from_rpc_error(err).field == "outcome.scores.été"
    err = _fail(call, ResourceExhausted("busy", retry_after_s=0.25))
    assert dict(err.trailing_metadata())[RETRY_KEY] == "250"
    assert from_rpc_error(err).retry_after_s == 0.25


def test_a_bug_is_internal_with_a_generic_message_and_a_logged_traceback(call, caplog):
    with caplog.at_level(logging.ERROR, logger="server.errors"):
        err = _fail(call, KeyError("secret-internal-detail"))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "secret-internal-detail" not in err.details() and "incident" in err.details()
    incident = err.details().split("incident ")[1].split(")")[0]
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].exc_info and "secret-internal-detail" in caplog.text
    back = from_rpc_error(err)
    assert type(back) is LakeError and "INTERNAL" in str(back)


def test_not_implemented_is_unimplemented(call):
    err = _fail(call, NotImplementedError("Recluster is not yet implemented"))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert isinstance(from_rpc_error(err), NotImplementedError)


def test_no_server_is_unavailable_and_says_to_start_one():
    with LakeClient("127.0.0.1:1", timeout=2) as c, pytest.raises(Unavailable) as e:
        c.stats()
    assert "127.0.0.1:1" in str(e.value) and "lake serve" in str(e.value)


class _Tag(Layer):
    """Appends its name to what the behavior returns (shows the order of the layers)."""

    def __init__(self, name: str):
        self.name = name

    def decorate(self, method, behavior):
        return lambda request, context: behavior(request, context) + [self.name]

    def decorate_async(self, method, behavior):
        async def tagged(request, context):
            return await behavior(request, context) + [self.name]
        return tagged


async def _async_behavior(request, context):
    return []


def test_layers_wrap_plain_and_async_methods_in_order_and_leave_others_alone():
    """Wrapped once, at registration: a plain method stays plain (the server runs it on its
    thread pool), an async one async (on the event loop); the first layer is outermost;
    methods outside the lake's services (health, reflection) pass through."""
    import asyncio

    layers = [_Tag("outer"), _Tag("inner")]
    plain = layered(f"/{SERVICE}/Raise",
                    grpc.unary_unary_rpc_method_handler(lambda r, c: []), layers)
    assert not inspect.iscoroutinefunction(plain.unary_unary)
    assert plain.unary_unary(b"", None) == ["inner", "outer"]
    coro = layered(f"/{SERVICE}/RaiseAsync",
                   grpc.unary_unary_rpc_method_handler(_async_behavior), layers)
    assert inspect.iscoroutinefunction(coro.unary_unary)
    assert asyncio.run(coro.unary_unary(b"", None)) == ["inner", "outer"]
    health = grpc.unary_unary_rpc_method_handler(_raise)
    assert layered("/grpc.health.v1.Health/Check", health, layers) is health


def test_a_full_or_read_only_disk_under_any_call_is_said_so_not_internal():
    """Lance raises its own text for ENOSPC from a Tag's commit or a context log append
    (operator QA): RESOURCE_EXHAUSTED naming the disk, with a retry hint, not INTERNAL."""
    import grpc

    from server.errors import status_of

    code, message, trailers = status_of(OSError(
        "LanceError(IO): No space left on device (os error 28), rust/lance/src/io/commit.rs"))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "is full" in message
    assert any(k == "retry-after-ms" for k, _ in trailers)
    code, message, _ = status_of(PermissionError(13, "Permission denied"))
    assert code is grpc.StatusCode.UNAVAILABLE and "cannot be written" in message
    assert status_of(KeyError("x"))[0] is grpc.StatusCode.INTERNAL
