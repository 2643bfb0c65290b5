"""Build, start and stop the gRPC server.

    server = serve(settings, "127.0.0.1", 0)     # port 0: any free port (tests)
    print(server.port); ...; server.stop()       # graceful: drains calls, flushes the lake

A ``grpc.aio`` server on an event loop of its own thread. The calls that only read memory
run on the loop: GetContext with a vector against a loaded index whose search reads at most
``context.LOOP_SCAN_ROWS`` vectors (1.3x the calls per second of a thread pool at
concurrency 8 and 32: no hand-off between threads per call), and the
StreamSteps loop that reads messages (its groups of steps are logged on the pool). Every
call that blocks on Lance, fsync or the model runs on the server's thread pool: the other
RPCs (plain functions) and a GetContext that must embed text, wait for a log position or load
an index. Every method of the lake's services is wrapped once, at registration, in layers,
outermost first: errors (the status table) -> auth (identity, scope, audit) -> streams (a
client stream's idle timeout and token re-checks) -> limits (calls in flight, a tenant's
share). The standard health service and server reflection are registered, open to all; their
streams are capped apart (``streams.OpenStreams``). gRPC's own ``maximum_concurrent_rpcs`` is
only a backstop against floods, ``BACKSTOP`` times the thread pool above what the open
streams may hold: lake calls meet the limits layer (retry hint, audit row) first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from lake import Lake, Settings
from lake.audit import AuditLog
from lake.context import ContextService
from lake.errors import Conflict, InvalidArgument
from lake.tokens import Tokens
from lake.vacuum import parse_age

from .auth import Authenticator, AuthLayer
from .errors import ErrorLayer, Layer, layered
from .housekeeping import Housekeeper
from .limits import Limiter, LimitLayer
from .metrics import Metrics, MetricsLayer
from .otlp import SERVICE_NAME as OTLP_SERVICE
from .otlp import add_servicer as add_otlp
from .service import SERVICE_NAMES, add_servicers
from .streams import OpenStreams, StreamLayer

log = logging.getLogger(__name__)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SPARE_WORKERS = 4  # threads beyond max_inflight, so excess calls are refused, not left waiting
BACKSTOP = 4  # gRPC refuses calls past this many times the threads, plus the open streams


class LoopServer:
    """A ``grpc.aio`` server on an event loop in a thread of its own, driven from plain
    (blocking) code: ``LoopServer(...)`` starts the loop; ``run(coro)`` runs a coroutine on it
    and returns its result; ``close()`` ends the loop. Plain-function handlers run on
    ``pool``, which is also the loop's default executor (``asyncio.to_thread``)."""

    def __init__(self, *, workers: int, options: Sequence[tuple[str, Any]] = (),
                 max_rpcs: int | None = None):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lake-rpc")
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(self.pool)
        self._thread = threading.Thread(target=self.loop.run_forever, name="lake-rpc-loop",
                                        daemon=True)
        self._thread.start()

        async def make() -> grpc.aio.Server:
            return grpc.aio.server(migration_thread_pool=self.pool, options=list(options),
                                   maximum_concurrent_rpcs=max_rpcs or workers)
        self.server = self.run(make())

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def register(self, add: Callable[[Any, Any], None], servicer: Any,
                 layers: Sequence[Layer] = ()) -> None:
        """``add(servicer, server)`` (a generated ``add_XServicer_to_server``), each method
        wrapped in ``layers``."""
        self.register_wrapped(add, servicer, lambda method, h: layered(method, h, layers))

    def register_wrapped(self, add: Callable[[Any, Any], None], servicer: Any,
                         wrap: Callable[[str, Any], Any]) -> None:
        """The same, each method handler passed through ``wrap(method, handler)``."""
        add(servicer, _Layered(self.server, wrap))

    def close(self) -> None:
        """End the loop (after the server stopped), then the pool (its calls finish)."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
        self.loop.close()
        self.pool.shutdown(wait=True)


class _Layered:
    """What a generated ``add_XServicer_to_server`` registers its handlers with: forwards
    them to the server, each method wrapped once (e.g. in the layers: ``errors.layered``)."""

    def __init__(self, server: grpc.aio.Server, wrap: Callable[[str, Any], Any]):
        self.server, self.wrap = server, wrap

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(
            tuple(_LayeredGeneric(h, self.wrap) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.server.add_registered_method_handlers(service, {
            name: self.wrap(f"/{service}/{name}", h) for name, h in handlers.items()})


class _LayeredGeneric(grpc.GenericRpcHandler):
    """A generic handler's methods, each wrapped when first served."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable[[str, Any], Any]):
        self.inner, self.wrap = inner, wrap
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        handler = self.inner.service(details)
        if handler is None:
            return None
        method = details.method
        got = self._wrapped.get(method)
        if got is None or got[0] is not handler:  # (two threads may both wrap: either is fine)
            got = self._wrapped[method] = (handler, self.wrap(method, handler))
        return got[1]


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_required(mode: str, host: str) -> bool:
    """auto: tokens required unless the server binds a loopback address."""
    if mode == "off" and not is_loopback(host):
        raise InvalidArgument(f"auth=off is only allowed on a loopback host, not {host}: serve "
                              "there with auth on (create tokens with `lake token create`)",
                              field="auth")
    return mode == "on" or (mode == "auto" and not is_loopback(host))


WARM_TENANTS = 8  # indexes loaded at start: the tenants holding the most trajectories


@dataclass
class Server:
    """A running server. ``stop()`` (or leaving ``with``) shuts it down gracefully."""

    rpc: LoopServer
    lake: Lake
    host: str
    port: int
    auth: bool
    audit: AuditLog
    tokens: Tokens
    limiter: Limiter
    health: health.aio.HealthServicer
    owns_lake: bool
    cache: ContextService
    otlp_port: int | None = None  # a second port for OTLP exporters (4317), if asked
    metrics: Metrics | None = None  # Prometheus metrics over HTTP, if asked
    metrics_port: int | None = None
    housekeeper: Housekeeper | None = None  # writer health, the hourly vacuum
    _stopped: bool = False
    _warming: threading.Thread | None = None

    def warm(self, tenant: str | None = None,
             on_ready: Callable[[str], None] | None = None) -> threading.Thread:
        """Load the embedding model and a tenant's index in the background, so the first
        GetContext does not pay for them (nor the first StartTrajectory for reading the
        stored ids); ``on_ready`` gets a line saying they are loaded."""
        def run() -> None:
            t0 = time.monotonic()
            first = tenant or self.lake.settings.tenant
            try:
                self.lake.live.ids.warm()
                idx = self.cache.index(first)
                self.cache.embedding.embed(["warm up"], persisted=False)
            except Exception:  # noqa: BLE001 - warming is best effort; queries still work
                log.exception("warming the semantic cache failed; it will load on first use")
                return
            if on_ready is not None:
                on_ready(f"ready: embedding model and index ({len(idx.rows)} runs) loaded "
                         f"in {time.monotonic() - t0:.1f} s; text lookups now take "
                         "milliseconds")
            for other in self._biggest_tenants(WARM_TENANTS):  # then the others' indexes
                if other != first and not self._stopped:
                    try:
                        self.cache.index(other)
                    except Exception:  # noqa: BLE001 - best effort, as above
                        log.exception("warming tenant %r's index failed", other)
        t = self._warming = threading.Thread(target=run, name="lake-warm", daemon=True)
        t.start()
        return t

    def _biggest_tenants(self, n: int) -> list[str]:
        """The ``n`` tenants holding the most trajectories."""
        if not self.lake.store.exists("trajectories"):
            return []
        return [t for t, in self.lake.sql(
            "select tenant from trajectories group by 1 order by count(*) desc, 1 limit "
            f"{int(n)}", all_tenants=True).fetchall()]

    @property
    def warming(self) -> bool:
        """The background load of the model and indexes is still under way."""
        return self._warming is not None and self._warming.is_alive()

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        where = f"serving {self.lake.settings.data} on {self.target}"
        if self.otlp_port is not None:
            where += f" (OTLP traces also on port {self.otlp_port})"
        if self.metrics_port is not None:
            where += f"; metrics at http://{self.target.rsplit(':', 1)[0]}:{self.metrics_port}" \
                     "/metrics"
        if self.auth:
            hint = "" if self.tokens.list() else (
                "; no tokens yet: create one with `lake token create --tenant T --agent A "
                "--scopes read,ingest`")
            return f"{where}; auth on: every call needs a bearer token{hint}"
        return (f"{where}; auth OFF (loopback): calls without a token act as tenant "
                f"{self.lake.settings.tenant!r} with every scope (use --auth on to require tokens)")

    def stop(self, grace: float = 10.0, *, wait_warm: bool = True) -> None:
        """Refuse new calls, let running ones finish (up to ``grace`` s), flush, close.
        ``wait_warm=False``: not for the model's load under way either (the caller then
        ends the process with ``os._exit``: ``warming``)."""
        if self._stopped:
            return
        self._stopped = True
        if self.housekeeper is not None:  # before the shutdown's NOT_SERVING: it stays
            self.housekeeper.stop()

        async def shut() -> None:
            await self.health.enter_graceful_shutdown()
            await self.rpc.server.stop(grace)
        try:
            self.rpc.run(shut())
        finally:
            self.rpc.close()  # waits for calls still running on the pool
            if self._warming is not None and wait_warm:  # a thread killed at exit inside
                self._warming.join(timeout=120)  # torch's import aborts the process
            try:
                if self.metrics is not None:
                    self.metrics.close()
                self.audit.close()
                self.cache.close()
            finally:
                if self.owns_lake:
                    self.lake.close()

    def wait(self) -> None:
        self.rpc.run(self.rpc.server.wait_for_termination())

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(settings: Settings, host: str | None = None, port: int | None = None, *,
          lake: Lake | None = None) -> Server:
    """Start serving ``lake`` (opened from ``settings`` and owned by the server if None)."""
    host = (host or settings.host).strip("[]")
    port = settings.port if port is None else port
    for age in (settings.keep_versions, settings.abandon_after):
        if age:
            parse_age(age)  # a bad age stops it before anything starts
    required = auth_required(settings.auth, host)
    owns = lake is None
    lake = lake or Lake.open(settings=settings)
    audit = AuditLog(lake.store, compact_fragments=settings.compact_fragments,
                     journal_dir=settings.wal_path if lake.writer is not None else None).start()
    try:
        return _start(settings, lake, host, port, required, audit, owns)
    except BaseException:
        audit.close()
        if owns:
            lake.close()
        raise


def _start(settings: Settings, lake: Lake, host: str, port: int, required: bool,
           audit: AuditLog, owns: bool) -> Server:
    tokens = Tokens(lake.store)
    limiter = Limiter(settings.max_inflight, reserve=settings.inflight_reserve)
    rpc = loop_server(settings)
    metrics = Metrics() if settings.metrics_port >= 0 else None
    cache = None
    try:
        layers = server_layers(settings, tokens, audit, limiter, required, metrics)
        cache = ContextService(lake)

        def register(add: Callable[[Any, Any], None], servicer: Any) -> None:
            rpc.register(add, servicer, layers)
        add_servicers(register, lake, "on" if required else "off", cache)
        add_otlp(register, lake)
        health_servicer = health.aio.HealthServicer()
        open_streams = OpenStreams(settings.max_open_streams)
        rpc.register_wrapped(health_pb2_grpc.add_HealthServicer_to_server, health_servicer,
                             open_streams.wrap)
        listed = (*SERVICE_NAMES, OTLP_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
        rpc.register_wrapped(reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
                             reflection.aio.ReflectionServicer(listed), open_streams.wrap)
        bound = _listen(rpc.server, host, port, "--port")
        otlp = _listen(rpc.server, host, settings.otlp_port, "--otlp-port") \
            if settings.otlp_port >= 0 else None

        async def start() -> None:
            await rpc.server.start()
            for name in ("", *SERVICE_NAMES, OTLP_SERVICE):
                await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        metrics_port = None
        if metrics is not None:  # before the gRPC server starts: a taken port stops nothing
            metrics.watch(lambda: _gauges(lake, cache, limiter, audit))
            metrics_port = _serve_metrics(metrics, host, settings.metrics_port)
        rpc.run(start())
    except BaseException:
        if metrics is not None:
            metrics.close()
        rpc.close()
        if cache is not None:  # its threads (indexer, context log) end with it
            cache.close()
        raise
    running = Server(rpc, lake, host, bound, required, audit, tokens, limiter,
                     health_servicer, owns, cache, otlp, metrics, metrics_port)
    running.housekeeper = Housekeeper(
        lake, lambda name, status: rpc.run(health_servicer.set(name, status)),
        (*[n for n in SERVICE_NAMES if n.endswith(".IngestService")], OTLP_SERVICE),
        settings.keep_versions, settings.abandon_after).start()
    log.info(running.describe())  # `lake serve` prints it; a library user may log it
    return running


def loop_server(settings: Settings) -> LoopServer:
    """The server's ``LoopServer``: its thread pool, message size limits and gRPC's own
    limit of calls at once (a backstop the open streams cannot reach)."""
    size = settings.max_message_bytes
    workers = settings.max_inflight + SPARE_WORKERS
    return LoopServer(workers=workers, max_rpcs=BACKSTOP * workers + settings.max_open_streams,
                      options=[("grpc.max_receive_message_length", size),
                               ("grpc.max_send_message_length", size),
                               ("grpc.so_reuseport", 0)])  # a port in use is an error


def server_layers(settings: Settings, tokens: Tokens, audit: AuditLog, limiter: Limiter,
                  required: bool, metrics: Metrics | None = None) -> list[Layer]:
    """The layers every method of the lake's services is wrapped in, outermost first."""
    auth = Authenticator(tokens, required=required, open_tenant=settings.tenant)
    return [ErrorLayer(), *([MetricsLayer(metrics)] if metrics is not None else []),
            AuthLayer(auth, audit), StreamLayer(auth, settings.stream_idle_ms / 1000),
            LimitLayer(limiter)]


def _gauges(lake: Lake, cache: ContextService, limiter: Limiter,
            audit: AuditLog) -> dict[str, tuple[str, float]]:
    lag = lake.writer.lag if lake.writer is not None else {}
    index = cache.lag
    return {
        "lake_rpc_inflight": ("RPCs being served now", limiter.inflight),
        "lake_log_submitted_lsn": ("last write-ahead log position acknowledged",
                                   lag.get("submitted_lsn", 0)),
        "lake_log_applied_lsn": ("last log position committed to the tables (the gap to "
                                 "submitted is the commit lag)", lag.get("applied_lsn", 0)),
        "lake_pending_steps": ("steps (and trajectory rows) logged, not yet committed",
                               lag.get("pending_steps", 0)),
        "lake_index_lag_trajectories": ("committed trajectories not yet embedded and indexed",
                                        index["trajectories"]),
        "lake_version": ("the lake's latest version", lake.catalog.current().version),
        "lake_audit_pending": ("audit events buffered, not yet written", audit.pending),
        "lake_writer_up": ("1: the lake takes writes; 0: its writer waits on a full or "
                           "read-only disk, or stopped (see the log)",
                           float(lake.writer is not None and lake.writer.state == "ok")),
    }


def _serve_metrics(metrics: Metrics, host: str, port: int) -> int:
    try:
        return metrics.serve(host, port)
    except OSError as e:
        raise Conflict(f"cannot serve metrics on {host}:{port} ({e}): is another server using "
                       "the port? pick another with --metrics-port (0: any free port; -1: "
                       "off)") from e


def _listen(server: grpc.aio.Server, host: str, port: int, flag: str) -> int:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return server.add_insecure_port(address)
    except RuntimeError as e:
        raise Conflict(f"cannot listen on {address} ({e}): is another server using the port? "
                       f"pick another with {flag} (0: any free port)") from e
