"""Long-lived calls: what a stream must keep proving while it is open.

- ``OpenStreams``: the streams of the services open to all (health ``Watch``, server
  reflection) are capped at ``max_open_streams`` at once; more are refused with
  RESOURCE_EXHAUSTED. They need no token, so without a cap of their own a caller with none
  could hold every call gRPC takes at once and shut every tenant out.
- ``StreamLayer``: a client stream of the lake's services (``StreamSteps``) ends when it
  sends no message for ``stream_idle_ms`` (UNAVAILABLE: reopen it and send again; its step
  indexes make that a no-op), so an idle stream cannot hold its call slot for ever; and its
  token is verified again, as a message arrives at least ``RECHECK_S`` after the last
  check and when the stream ends, so a revoked token ends the stream (UNAUTHENTICATED,
  audited by ``AuthLayer``) and nothing it sent is acknowledged.

Both run on the server's event loop (one thread): their counters need no lock.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool

from lake.errors import ResourceExhausted, Unauthenticated, Unavailable

from .auth import Authenticator
from .errors import Behavior, Layer, abort_async, wrap_handler
from .methods import SCOPES

RECHECK_S = 1.0  # a stream's token is verified again this often (the token cache's refresh)
OPEN_RETRY_S = 1.0
TICK = 0.001  # the idle timer's tolerance: a loop may run a timer this much early


class OpenStreams:
    """At most ``limit`` streams of the open services at once; ``wrap`` is given each method
    handler when the service is registered (unary methods are left as they are)."""

    def __init__(self, limit: int):
        self.limit, self.open = limit, 0

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if not (handler.request_streaming or handler.response_streaming):
            return handler
        return wrap_handler(handler, lambda behavior: self._capped(method, behavior))

    def _capped(self, method: str, behavior: Behavior) -> Behavior:
        if inspect.isasyncgenfunction(behavior):
            async def generated(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._enter(method, context)
                try:
                    async for reply in behavior(request, context):
                        yield reply
                finally:
                    self.open -= 1
            return generated
        if inspect.iscoroutinefunction(behavior):
            async def written(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._enter(method, context)
                try:
                    return await behavior(request, context)
                finally:
                    self.open -= 1
            return written
        raise TypeError(f"{method}: an open service's stream must be served on the event loop "
                        "(a coroutine or an async generator) to be capped")

    async def _enter(self, method: str, context: grpc.aio.ServicerContext) -> None:
        if self.open >= self.limit:
            await abort_async(context, ResourceExhausted(
                f"{self.limit} health Watch / reflection streams are open, the most this server "
                f"keeps (max_open_streams): retry after {round(OPEN_RETRY_S * 1000)} ms, or "
                "poll with the unary Health/Check", retry_after_s=OPEN_RETRY_S), method)
        self.open += 1


class StreamLayer(Layer):
    """Between auth and limits: watches the request stream of each client-streaming method
    (idle timeout, token verified again). Unary methods are not wrapped."""

    def __init__(self, auth: Authenticator, idle_s: float, recheck_s: float | None = None):
        self.auth, self.idle_s = auth, idle_s
        self.recheck_s = RECHECK_S if recheck_s is None else recheck_s

    def applies(self, method: str) -> bool:
        return method in SCOPES and _client_streaming(method)

    def decorate(self, method: str, behavior: Behavior) -> Behavior:
        raise TypeError(f"{method}: a client stream must be served on the event loop (a "
                        "coroutine) for its idle timeout and token checks to apply")

    def decorate_async(self, method: str, behavior: Behavior) -> Behavior:
        async def watched(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            stream = ClientStream(requests, context.invocation_metadata(), self)
            try:
                return await behavior(stream, context)
            finally:
                stream.close()

        return watched

    async def recheck(self, metadata: Sequence[tuple[str, Any]] | None) -> None:
        try:
            await self.auth.identify_async(metadata)
        except Unauthenticated as e:
            raise Unauthenticated(f"{e.message}; this stream was ended there and nothing sent "
                                  "on it is acknowledged") from None

    def idle_error(self) -> Unavailable:
        return Unavailable(
            f"this stream sent no message for {round(self.idle_s * 1000)} ms (stream_idle_ms), "
            "so the server ended it to free its call slot; nothing sent on it is "
            "acknowledged: reopen the stream and send it again (a retry is idempotent: step "
            "indexes make steps already logged a no-op), and keep messages coming, or use "
            "AppendSteps when steps come slowly")


class ClientStream:
    """The request messages of one client stream, as the servicer reads them
    (``async for``, in the call's own task), watched: per message, two clock reads and a
    comparison; the idle timer is one per stream, not per message."""

    def __init__(self, requests: Any, metadata: Sequence[tuple[str, Any]] | None,
                 layer: StreamLayer):
        self._requests, self._next = requests, self._first
        self._metadata, self._layer = metadata, layer
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        now = self._loop.time()
        self._check_at = now + layer.recheck_s
        self._waiting_since: float | None = None  # the servicer awaits a message since then
        self._expired = False
        self._timer = self._loop.call_at(now + layer.idle_s, self._expire)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        self._waiting_since = self._loop.time()
        try:
            message = await self._next()
        except StopAsyncIteration:
            self._waiting_since = None  # (not idle while checking)
            await self._layer.recheck(self._metadata)  # the call answers next: a last check
            raise
        except asyncio.CancelledError:
            if not self._expired or self._task is None:
                raise  # the client cancelled, or the server stops
            self._task.uncancel()
            raise self._layer.idle_error() from None
        finally:
            self._waiting_since = None
        now = self._loop.time()
        if now >= self._check_at:
            self._check_at = now + self._layer.recheck_s
            await self._layer.recheck(self._metadata)
        return message

    async def _first(self) -> Any:
        """The first message; the request iterator is made here, not before: a call
        refused before it reads leaves no iterator unawaited."""
        self._next = aiter(self._requests).__anext__
        return await self._next()

    def _expire(self) -> None:
        """The idle timer: ends the call if the servicer has waited ``idle_s`` for a
        message; else looks again when it could have (time spent on the servicer's own
        work, such as logging a group, is not idleness)."""
        since, now, idle = self._waiting_since, self._loop.time(), self._layer.idle_s
        if since is not None and now - since + TICK >= idle and self._task is not None:
            self._expired = True
            self._task.cancel()
        else:
            self._timer = self._loop.call_at(now + idle if since is None else since + idle,
                                             self._expire)

    def close(self) -> None:
        self._timer.cancel()


def _client_streaming(method: str) -> bool:
    """True for a method whose requests are a stream (from its proto descriptor)."""
    service, _, name = method.strip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).methods_by_name.get(name)
    except KeyError:
        return False
    return found is not None and found.client_streaming
