"""Prometheus metrics for the people running the server: ``lake serve --metrics-port 9464``
serves them at ``http://HOST:9464/metrics``.

- ``lake_rpc_calls_total{method, code}``: finished calls by status code (``OK``,
  ``INVALID_ARGUMENT``, ``RESOURCE_EXHAUSTED``, ...), counted by a layer just inside the
  error layer, so refused calls (auth, overload) count too;
- ``lake_rpc_duration_seconds{method}``: call latency in the server (a histogram);
- read at each scrape, from the parts themselves: calls in flight, the write path's log
  positions (submitted, applied: their gap is the commit lag) and pending steps, the
  semantic cache's index lag, the lake's version, audit events not yet written, whether
  the writer takes writes (``lake_writer_up``);
- ``process_*``: the process's resident memory, CPU seconds, open files (prometheus_client).

Each server has a registry of its own (several servers may run in one process: tests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import Behavior, Layer, status_of

BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("lake_rpc_calls", "Finished RPCs by method and status code",
                             ["method", "code"], registry=self.registry)
        self.seconds = Histogram("lake_rpc_duration_seconds", "RPC latency in the server, "
                                 "seconds", ["method"], buckets=BUCKETS, registry=self.registry)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu, fds
        self._http: Any = None

    def watch(self, gauges: Callable[[], dict[str, tuple[str, float]]]) -> None:
        """Gauges read at each scrape: ``gauges()`` -> {name: (help, value)}."""
        self.registry.register(_Gauges(gauges))

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP; returns the port (0: any free one)."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _Gauges(Collector):
    def __init__(self, read: Callable[[], dict[str, tuple[str, float]]]):
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (doc, value) in self.read().items():
            yield GaugeMetricFamily(name, doc, value=value)


class MetricsLayer(Layer):
    """Counts each call by its final status and times it (just inside the error layer)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def _children(self, method: str) -> tuple[Callable[[str], Any], Any]:
        name = method.rsplit("/", 1)[-1]
        counters: dict[str, Any] = {}

        def count(code: str) -> Any:
            c = counters.get(code)
            if c is None:
                c = counters[code] = self.metrics.calls.labels(name, code)
            return c
        return count, self.metrics.seconds.labels(name)

    def decorate(self, method: str, behavior: Behavior) -> Behavior:
        count, timer = self._children(method)

        def measured(request: Any, context: grpc.ServicerContext) -> Any:
            with _Measured(count, timer):
                return behavior(request, context)

        return measured

    def decorate_async(self, method: str, behavior: Behavior) -> Behavior:
        count, timer = self._children(method)

        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _Measured(count, timer):
                return await behavior(request, context)

        return measured


class _Measured:
    """One call: its latency, then its count under its status code."""

    __slots__ = ("count", "timer", "t0")

    def __init__(self, count: Callable[[str], Any], timer: Any):
        self.count, self.timer = count, timer

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self.timer.observe(time.perf_counter() - self.t0)
        if exc is None:
            code = "OK"
        elif isinstance(exc, asyncio.CancelledError):  # the client went away
            code = "CANCELLED"
        else:
            code = status_of(exc)[0].name
        self.count(code).inc()
