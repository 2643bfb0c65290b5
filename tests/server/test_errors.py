"""Every lake error maps to one status code and comes back to the client as the same class."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import grpc
import pytest

from lake.errors import (
    ALL_ERRORS,
    InvalidArgument,
    LakeError,
    ResourceExhausted,
    Unavailable,
)
from server.client import LakeClient
from server.errors import (
    ERROR_OF,
    FIELD_KEY,
    RETRY_KEY,
    STATUS,
    ErrorInterceptor,
    from_rpc_error,
)

# A real server with the real interceptor; its one test method raises what it is told to.
METHOD = "/contextlake.test.Errors/Raise"
RAISE: dict[str, BaseException] = {}


def _raise(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RAISE[request.decode()]


@pytest.fixture(scope="module")
def call() -> Iterator[grpc.UnaryUnaryMultiCallable]:
    server = grpc.server(ThreadPoolExecutor(2), interceptors=[ErrorInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "contextlake.test.Errors", {"Raise": grpc.unary_unary_rpc_method_handler(_raise)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel.unary_unary(METHOD)
    server.stop(0)


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


def test_no_server_is_unavailable_and_says_to_retry():
    with LakeClient("127.0.0.1:1", timeout=2) as c, pytest.raises(Unavailable) as e:
        c.stats()
    assert "retry" in str(e.value)


def test_an_interceptor_wraps_a_method_once_and_a_new_handler_again():
    """The wrapped handler is reused call after call (no new closures per call); a method
    whose handler changed is wrapped again; methods outside the service pass through."""
    interceptor = ErrorInterceptor()
    first = grpc.unary_unary_rpc_method_handler(_raise)
    details = SimpleNamespace(method=METHOD)
    wrapped = interceptor.intercept_service(lambda d: first, details)
    assert wrapped.unary_unary is not _raise
    assert interceptor.intercept_service(lambda d: first, details) is wrapped
    second = grpc.unary_unary_rpc_method_handler(_raise)
    again = interceptor.intercept_service(lambda d: second, details)
    assert again is not wrapped and again.unary_unary is not _raise
    health = SimpleNamespace(method="/grpc.health.v1.Health/Check")
    assert interceptor.intercept_service(lambda d: first, health) is first
