"""gRPC status codes for the lake's errors: the one table, applied in one place.

    raised by the lake / server     status                client gets back
    InvalidArgument                 INVALID_ARGUMENT      InvalidArgument (+ field path)
    NotFound                        NOT_FOUND             NotFound
    AlreadyExists                   ALREADY_EXISTS        AlreadyExists
    Conflict                        ABORTED               Conflict
    PermissionDenied                PERMISSION_DENIED     PermissionDenied
    Unauthenticated                 UNAUTHENTICATED       Unauthenticated
    ResourceExhausted               RESOURCE_EXHAUSTED    ResourceExhausted (+ retry_after_s)
    Unavailable                     UNAVAILABLE           Unavailable (also: server unreachable)
    DeadlineExceeded                DEADLINE_EXCEEDED     DeadlineExceeded (also: the client's)
    LakeError (any other)           FAILED_PRECONDITION   LakeError
    NotImplementedError             UNIMPLEMENTED         NotImplementedError
    anything else (a bug)           INTERNAL              LakeError (generic message)

``ErrorLayer`` applies the table to every RPC: servicers raise, never set codes.
The status message is the error's full text (``field: what is wrong and what to do``);
trailers carry the parts: ``lake-field-bin`` (the field path, UTF-8), ``lake-location-bin``
and, on RESOURCE_EXHAUSTED, ``retry-after-ms``. An unknown exception becomes INTERNAL with a
generic message and an incident id; its traceback is logged under that id. Request bytes
that do not parse as the method's message are INVALID_ARGUMENT too (``Undecodable``), and
messages and field paths are cut to a size any HTTP/2 peer takes (they may quote a
caller's value). ``from_rpc_error`` is the inverse, used by the Python client.
"""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc

from lake.errors import (
    AlreadyExists,
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    LakeError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    disk_error,
)

from .methods import PACKAGES

log = logging.getLogger(__name__)
Code = grpc.StatusCode

STATUS: dict[type[BaseException], grpc.StatusCode] = {
    InvalidArgument: Code.INVALID_ARGUMENT,
    NotFound: Code.NOT_FOUND,
    AlreadyExists: Code.ALREADY_EXISTS,
    Conflict: Code.ABORTED,
    PermissionDenied: Code.PERMISSION_DENIED,
    Unauthenticated: Code.UNAUTHENTICATED,
    ResourceExhausted: Code.RESOURCE_EXHAUSTED,
    Unavailable: Code.UNAVAILABLE,
    DeadlineExceeded: Code.DEADLINE_EXCEEDED,
    LakeError: Code.FAILED_PRECONDITION,
    NotImplementedError: Code.UNIMPLEMENTED,
}
ERROR_OF: dict[grpc.StatusCode, type[BaseException]] = {c: e for e, c in STATUS.items()}

FIELD_KEY, LOCATION_KEY, RETRY_KEY = "lake-field-bin", "lake-location-bin", "retry-after-ms"
INTERNAL_MESSAGE = ("internal error (incident {}): the server logged the details; acknowledged "
                    "writes are safe in the write-ahead log. Retry, and report it if it recurs")

MAX_MESSAGE_CHARS, MAX_FIELD_CHARS = 2000, 500  # gRPC refuses metadata over 16 KiB

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters, cut)"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, list[tuple[str, Any]]]:
    """(code, message, trailing metadata) for an exception; INTERNAL for unknown ones. A
    disk the user fixes (full, read-only), under any call, says so (``disk_error``)."""
    if not isinstance(exc, LakeError):
        exc = disk_error(exc, "the lake (or its log)", "retry") or exc
    code = next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), Code.INTERNAL)
    if code is Code.INTERNAL:
        return code, INTERNAL_MESSAGE, []
    trailers: list[tuple[str, Any]] = []
    if isinstance(exc, LakeError):
        if exc.field:
            trailers.append((FIELD_KEY, _cut(exc.field, MAX_FIELD_CHARS).encode()))
        if exc.location:
            trailers.append((LOCATION_KEY, _cut(exc.location, MAX_FIELD_CHARS).encode()))
    if isinstance(exc, ResourceExhausted):
        trailers.append((RETRY_KEY, str(max(1, round(exc.retry_after_s * 1000)))))
    return code, _cut(str(exc) or type(exc).__name__, MAX_MESSAGE_CHARS), trailers


def _status(context: Any, exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """(code, message) to abort the call with; the trailers are set on ``context``. An
    INTERNAL error is logged under a new incident id, which the message names."""
    code, message, trailers = status_of(exc)
    if code is Code.INTERNAL:
        incident = secrets.token_hex(4)
        log.error("internal error (incident %s) in %s", incident, method, exc_info=exc)
        message = message.format(incident)
    if trailers:
        context.set_trailing_metadata(tuple(trailers))
    return code, message


def abort(context: grpc.ServicerContext, exc: BaseException, method: str = "") -> NoReturn:
    context.abort(*_status(context, exc, method))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


async def abort_async(context: grpc.aio.ServicerContext, exc: BaseException,
                      method: str = "") -> NoReturn:
    await context.abort(*_status(context, exc, method))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


class Undecodable:
    """What a request's bytes gave when they did not parse as the method's message: reading
    anything of it raises ``InvalidArgument``, which the servicer's call then answers with
    (a stream's bad message ends the stream there). No check on the good path."""

    def __init__(self, message: str, error: BaseException):
        self._error = InvalidArgument(
            f"the request is not a valid {message} message ({type(error).__name__}: "
            f"{error}): send bytes serialized from proto/contextlake/v1/lake.proto (the "
            "stubs generated from it do)", field="request")

    def __getattr__(self, name: str) -> NoReturn:
        raise self._error


def tolerant(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` whose request deserializer returns ``Undecodable`` instead of raising
    (gRPC would answer UNKNOWN or INTERNAL, and log a traceback)."""
    parse = handler.request_deserializer
    if parse is None:
        return handler
    owner = getattr(parse, "__self__", None)  # generated stubs: the message's FromString
    name = owner.DESCRIPTOR.name if hasattr(owner, "DESCRIPTOR") else method.rsplit("/")[-1]

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as e:  # noqa: BLE001 - any parse failure is the caller's bytes
            return Undecodable(name, e)

    return handler._replace(request_deserializer=deserialize)


def wrap_handler(handler: grpc.RpcMethodHandler,
                 decorate: Callable[[Behavior], Behavior]) -> grpc.RpcMethodHandler:
    """The handler with its behavior (whatever its streaming kind) wrapped by ``decorate``."""
    kind = ("stream" if handler.request_streaming else "unary") + "_" + \
           ("stream" if handler.response_streaming else "unary")
    return handler._replace(**{kind: decorate(getattr(handler, kind))})


class Layer:
    """What every call of a method passes through (errors, auth, limits), wrapped around its
    behavior once, when the server registers it: nothing is built per call. ``decorate``
    wraps a plain function (the server runs it on its thread pool); ``decorate_async`` a
    coroutine function (run on the server's event loop: it must not block)."""

    def applies(self, method: str) -> bool:
        return method.startswith(PACKAGES)

    def decorate(self, method: str, behavior: Behavior) -> Behavior:
        raise NotImplementedError

    def decorate_async(self, method: str, behavior: Behavior) -> Behavior:
        raise NotImplementedError


def layered(method: str, handler: grpc.RpcMethodHandler,
            layers: Sequence[Layer]) -> grpc.RpcMethodHandler:
    """``handler`` wrapped by the ``layers`` that apply to ``method``, the first outermost."""
    def wrap(layer: Layer) -> Callable[[Behavior], Behavior]:
        def decorate(behavior: Behavior) -> Behavior:
            if inspect.iscoroutinefunction(behavior):
                return layer.decorate_async(method, behavior)
            return layer.decorate(method, behavior)
        return decorate

    applied = False
    for layer in reversed(layers):
        if layer.applies(method):
            handler, applied = wrap_handler(handler, wrap(layer)), True
    return tolerant(method, handler) if applied else handler


class ErrorLayer(Layer):
    """Outermost layer: any exception an RPC raises becomes its status (the table)."""

    def decorate(self, method: str, behavior: Behavior) -> Behavior:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            except Exception as exc:  # noqa: BLE001 - every error gets its status here
                abort(context, exc, method)

        return guarded

    def decorate_async(self, method: str, behavior: Behavior) -> Behavior:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            except Exception as exc:  # noqa: BLE001 - every error gets its status here
                await abort_async(context, exc, method)

        return guarded


# -- client side ------------------------------------------------------------------------------

def from_rpc_error(err: grpc.RpcError) -> BaseException:
    """The lake error a failed call stands for (the table, inverted)."""
    code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    details: str = err.details() or ""  # type: ignore[attr-defined]
    trailers = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    cls = ERROR_OF.get(code)
    if cls is None or not issubclass(cls, LakeError):
        if cls is NotImplementedError:
            return NotImplementedError(details)
        return LakeError(f"the server answered {code.name}: {details}")
    field = _text(trailers.get(FIELD_KEY))
    location = _text(trailers.get(LOCATION_KEY))
    where = ", ".join(x for x in (location, field) if x)
    message = details.removeprefix(f"{where}: ") if where else details
    if cls is Unavailable and not trailers:  # the transport's, not our server's: say what to do
        return Unavailable(f"the server is unavailable ({details}); retry the same call: calls "
                           "carrying your ids are idempotent")
    if cls is ResourceExhausted:
        retry = trailers.get(RETRY_KEY)
        return ResourceExhausted(message, retry_after_s=int(retry) / 1000 if retry else 1.0,
                                 field=field, location=location)
    return cls(message, field=field, location=location)


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
