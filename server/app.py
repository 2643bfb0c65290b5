"""Build, start and stop the gRPC server.

    server = serve(settings, "127.0.0.1", 0)     # port 0: any free port (tests)
    print(server.port); ...; server.stop()       # graceful: drains calls, flushes the lake

A thread-pool server (the lake's calls block on Lance and fsync; on loopback it served as
many unary calls per second as the asyncio server did). Interceptors, outermost first:
errors (the status table) -> auth (identity, scope, audit) -> limits (calls in flight).
The standard health service and server reflection are registered, open to all.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lake import Lake, Settings
from lake.audit import AuditLog
from lake.context import ContextService
from lake.errors import Conflict, InvalidArgument
from lake.tokens import Tokens

from .auth import Authenticator, AuthInterceptor
from .errors import ErrorInterceptor
from .limits import Limiter, LimitInterceptor
from .otlp import SERVICE_NAME as OTLP_SERVICE
from .otlp import add_servicer as add_otlp
from .service import SERVICE_NAMES, add_servicers

log = logging.getLogger(__name__)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SPARE_WORKERS = 4  # threads beyond max_inflight, so excess calls are refused, not queued


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


@dataclass
class Server:
    """A running server. ``stop()`` (or leaving ``with``) shuts it down gracefully."""

    grpc_server: grpc.Server
    lake: Lake
    host: str
    port: int
    auth: bool
    audit: AuditLog
    tokens: Tokens
    limiter: Limiter
    health: health.HealthServicer
    owns_lake: bool
    cache: ContextService
    otlp_port: int | None = None  # a second port for OTLP exporters (4317), if asked

    def warm(self, tenant: str | None = None) -> threading.Thread:
        """Load the embedding model and a tenant's index in the background, so the first
        GetContext does not pay for them."""
        def run() -> None:
            try:
                self.cache.index(tenant or self.lake.settings.tenant)
                self.cache.embedding.embed(["warm up"], persisted=False)
            except Exception:  # noqa: BLE001 - warming is best effort; queries still work
                log.exception("warming the semantic cache failed; it will load on first use")
        t = threading.Thread(target=run, name="lake-warm", daemon=True)
        t.start()
        return t

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        where = f"serving {self.lake.settings.data} on {self.target}"
        if self.otlp_port is not None:
            where += f" (OTLP traces also on port {self.otlp_port})"
        if self.auth:
            hint = "" if self.tokens.list() else (
                "; no tokens yet: create one with `lake token create --tenant T --agent A "
                "--scopes read,ingest`")
            return f"{where}; auth on: every call needs a bearer token{hint}"
        return (f"{where}; auth OFF (loopback): calls without a token act as tenant "
                f"{self.lake.settings.tenant!r} with every scope (use --auth on to require tokens)")

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new calls, let running ones finish (up to ``grace`` s), flush, close."""
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        try:
            self.audit.close()
            self.cache.close()
        finally:
            if self.owns_lake:
                self.lake.close()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(settings: Settings, host: str | None = None, port: int | None = None, *,
          lake: Lake | None = None) -> Server:
    """Start serving ``lake`` (opened from ``settings`` and owned by the server if None)."""
    host = (host or settings.host).strip("[]")
    port = settings.port if port is None else port
    required = auth_required(settings.auth, host)
    owns = lake is None
    lake = lake or Lake.open(settings=settings)
    audit = AuditLog(lake.store, compact_fragments=settings.compact_fragments).start()
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
    limiter = Limiter(settings.max_inflight)
    workers = settings.max_inflight + SPARE_WORKERS
    size = settings.max_message_bytes
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lake-rpc"),
        interceptors=[ErrorInterceptor(),
                      AuthInterceptor(Authenticator(tokens, required=required,
                                                    open_tenant=settings.tenant), audit),
                      LimitInterceptor(limiter)],
        options=[("grpc.max_receive_message_length", size),
                 ("grpc.max_send_message_length", size),
                 ("grpc.so_reuseport", 0)],  # a port in use is an error, not shared
        maximum_concurrent_rpcs=workers)
    cache = ContextService(lake)
    add_servicers(server, lake, "on" if required else "off", cache)
    add_otlp(server, lake)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, OTLP_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    bound = _listen(server, host, port, "--port")
    otlp = _listen(server, host, settings.otlp_port, "--otlp-port") \
        if settings.otlp_port >= 0 else None
    server.start()
    for name in ("", *SERVICE_NAMES, OTLP_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = Server(server, lake, host, bound, required, audit, tokens, limiter,
                     health_servicer, owns, cache, otlp)
    log.info(running.describe())  # `lake serve` prints it; a library user may log it
    return running


def _listen(server: grpc.Server, host: str, port: int, flag: str) -> int:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return server.add_insecure_port(address)
    except RuntimeError as e:
        raise Conflict(f"cannot listen on {address} ({e}): is another server using the port? "
                       f"pick another with {flag} (0: any free port)") from e
