"""Overload protection: a bounded number of calls in flight, the rest refused at once.

A call beyond ``max_inflight`` gets RESOURCE_EXHAUSTED with a ``retry-after-ms`` hint
instead of waiting in an unbounded queue, and so does a tenant's call beyond its share:
``max_inflight - inflight_reserve`` (at least half of them), so one tenant, however many
calls or idle streams it opens, leaves the reserve to the others. (gRPC's own
``maximum_concurrent_rpcs`` is a backstop far above this limit: lake calls reach this check,
which audits the refusal, rather than being turned away by gRPC.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from lake.errors import InvalidArgument, ResourceExhausted

from .auth import current_tenant
from .errors import Behavior, Layer

RETRY_AFTER_S = 0.2


class Limiter:
    """At most ``limit`` calls in flight, at most ``per_tenant`` of one tenant's."""

    def __init__(self, limit: int, retry_after_s: float = RETRY_AFTER_S, reserve: int = 0):
        if reserve < 0:
            raise InvalidArgument(f"inflight_reserve={reserve} is negative: set 0 (no "
                                  "per-tenant limit) or more", field="inflight_reserve")
        self.limit, self.retry_after_s = limit, retry_after_s
        self.reserve = min(reserve, limit // 2)
        self.per_tenant = limit - self.reserve
        self.inflight = 0
        self._held: dict[str | None, int] = {}  # tenant -> its calls in flight (when > 0)
        self._lock = threading.Lock()

    def acquire(self, tenant: str | None = None) -> None:
        with self._lock:
            held = self._held.get(tenant, 0)
            if self.inflight < self.limit and held < self.per_tenant:
                self._held[tenant] = held + 1
                self.inflight += 1
                return
        raise self._busy(tenant, held)

    def release(self, tenant: str | None = None) -> None:
        with self._lock:
            self.inflight -= 1
            held = self._held.pop(tenant) - 1
            if held:
                self._held[tenant] = held

    @contextmanager
    def slot(self, tenant: str | None = None) -> Iterator[None]:
        self.acquire(tenant)
        try:
            yield
        finally:
            self.release(tenant)

    def _busy(self, tenant: str | None, held: int) -> ResourceExhausted:
        retry = f"retry after {round(self.retry_after_s * 1000)} ms, with backoff"
        if held < self.per_tenant:
            message = f"the server is busy: {self.limit} calls in flight (max_inflight); {retry}"
        else:
            message = (f"tenant {tenant!r} has {held} calls in flight, the most one tenant may "
                       f"hold (max_inflight {self.limit} less inflight_reserve {self.reserve}, "
                       f"kept for other tenants); {retry}, and close the streams you do not "
                       "use")
        return ResourceExhausted(message, retry_after_s=self.retry_after_s)


class LimitLayer(Layer):
    """Innermost layer: holds a slot of the limiter, in its tenant's name, for the whole
    call."""

    def __init__(self, limiter: Limiter):
        self.limiter = limiter

    def decorate(self, method: str, behavior: Behavior) -> Behavior:
        acquire, release = self.limiter.acquire, self.limiter.release

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            who = current_tenant()
            acquire(who)
            try:
                return behavior(request, context)
            finally:
                release(who)

        return limited

    def decorate_async(self, method: str, behavior: Behavior) -> Behavior:
        acquire, release = self.limiter.acquire, self.limiter.release

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            who = current_tenant()
            acquire(who)  # a lock held for a few instructions: never blocks long
            try:
                return await behavior(request, context)
            finally:
                release(who)

        return limited
