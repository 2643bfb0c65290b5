"""Overload protection: a bounded number of calls in flight, the rest refused at once.

A call beyond ``max_inflight`` gets RESOURCE_EXHAUSTED with a ``retry-after-ms`` hint
instead of waiting in an unbounded queue. (The server's thread pool and gRPC's own
``maximum_concurrent_rpcs`` are sized a little above the limit, so calls reach this check
rather than queueing in gRPC.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from lake.errors import ResourceExhausted

from .errors import Behavior, Layer

RETRY_AFTER_S = 0.2


class Limiter:
    def __init__(self, limit: int, retry_after_s: float = RETRY_AFTER_S):
        self.limit, self.retry_after_s = limit, retry_after_s
        self.inflight = 0
        self._lock = threading.Lock()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self.inflight >= self.limit:
                raise ResourceExhausted(
                    f"the server is busy: {self.limit} calls in flight (max_inflight); retry "
                    f"after {round(self.retry_after_s * 1000)} ms, with backoff",
                    retry_after_s=self.retry_after_s)
            self.inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self.inflight -= 1


class LimitLayer(Layer):
    """Innermost layer: holds a slot of the limiter for the whole call."""

    def __init__(self, limiter: Limiter):
        self.limiter = limiter

    def decorate(self, method: str, behavior: Behavior) -> Behavior:
        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            with self.limiter.slot():
                return behavior(request, context)

        return limited

    def decorate_async(self, method: str, behavior: Behavior) -> Behavior:
        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with self.limiter.slot():  # a lock held for a few instructions: never blocks long
                return await behavior(request, context)

        return limited
