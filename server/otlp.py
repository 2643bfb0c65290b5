"""The OTLP/gRPC trace receiver: ``opentelemetry.proto.collector.trace.v1.TraceService``.

An OpenTelemetry exporter pointed at the lake's port (or the standard 4317, ``otlp_port``)
sends its spans here; they become trajectories (``ingest.otlp``, docs/otlp.md). The call is
authorized like the others (the exporter's ``authorization: Bearer ...`` header, scope
``ingest``). Spans that cannot be stored are counted in ``partial_success`` with the reason
of the first few, and logged (exporters do not show the reply); the others are logged
durably before the call returns. A trace with no
GenAI span is no trajectory: its spans are held a while in memory (``Traces``) in case its
GenAI spans come in a later export, and are otherwise not stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from ingest.otlp import Mapped, spans_of
from lake import Lake
from lake.lake import Reject

from .auth import identity

log = logging.getLogger(__name__)
SERVICE_NAME = otlp.DESCRIPTOR.services_by_name["TraceService"].full_name
EXPORT = f"/{SERVICE_NAME}/Export"
REASONS_SHOWN = 5  # partial_success.error_message: the first few reasons, then a count
HOLD_SECONDS = 120.0  # how long spans of a trace with no GenAI span yet wait for one
HOLD_BYTES = 32 << 20  # the most they take in memory (as JSON), all tenants together;
# past it, the tenant holding the most loses its oldest first
KNOWN_KEPT = 100_000  # traces remembered as trajectories (then the lake is asked)
LOG_EVERY_S = 10.0  # a log line about exports' spans at most this often (of each kind)

Span = tuple[str, str, dict]  # (location, trajectory_id, step): ``Mapped.spans``


class TraceServicer(otlp_grpc.TraceServiceServicer):
    def __init__(self, lake: Lake):
        self.lake = lake
        self.traces = Traces(lake)
        # exporters do not show the reply's partial_success: the log is where it shows
        self.log_rejected, self.log_unused, self.log_held = (
            Throttled(logging.WARNING), Throttled(logging.WARNING),
            Throttled(logging.INFO, first=logging.WARNING))

    def Export(self, request: otlp.ExportTraceServiceRequest,
               context: Any) -> otlp.ExportTraceServiceResponse:
        who = identity()
        mapped = spans_of(request, agent=who.agent)  # as StartTrajectory: unless spans name one
        spans, held = self.traces.admit(who.tenant, mapped)
        result = self.lake.ingest_spans([(tid, step) for _, tid, step in spans],
                                        tenant=who.tenant, where=[loc for loc, _, _ in spans])
        bad = mapped.bad + [(r.location, _reason(r)) for r in result.rejected]
        total = mapped.total
        notes = []
        if bad:
            self.log_rejected("OTLP export (tenant %r): %d of %d spans rejected, the others "
                              "stored; the first: %s: %s", who.tenant, len(bad), total, *bad[0])
            notes.append(f"{len(bad)} of {total} spans rejected, the others stored: "
                         f"{_listed(bad)}")
        if mapped.notes:
            self.log_unused("OTLP export (tenant %r): %d span attribute values not used, the "
                            "spans stored; the first: %s: %s", who.tenant, len(mapped.notes),
                            *mapped.notes[0])
            notes.append(f"{len(mapped.notes)} span attribute values not used, the spans "
                         f"stored: {_listed(mapped.notes)}")
        if held[0]:
            self.log_held("OTLP export (tenant %r): %d spans of %d traces with no GenAI span "
                          "not stored (held %g s in memory for one)", who.tenant, *held,
                          HOLD_SECONDS)
            notes.append(f"{held[0]} spans of {held[1]} traces with no GenAI span (gen_ai.* "
                         "attributes, an OpenInference span kind) not stored: a trace becomes "
                         f"a trajectory with its first GenAI span; these wait {HOLD_SECONDS:g}"
                         " s in memory for one")
        if not notes:
            return otlp.ExportTraceServiceResponse()
        return otlp.ExportTraceServiceResponse(partial_success=otlp.ExportTracePartialSuccess(
            rejected_spans=len(bad), error_message="; ".join(notes)))


def _reason(r: Reject) -> str:
    """A lake's reject of a span: its field path after the span's location, then why."""
    path = (r.field or "").removeprefix(r.location).lstrip(".")
    return f"{path}: {r.reason}" if path else r.reason


def _listed(items: list[tuple[str, str]]) -> str:
    """``location: reason`` of the first ``REASONS_SHOWN``, then how many more."""
    shown = "; ".join(f"{loc}: {why}" for loc, why in items[:REASONS_SHOWN])
    more = len(items) - REASONS_SHOWN
    return f"{shown} (and {more} more)" if more > 0 else shown


class Throttled:
    """A log line at most every ``LOG_EVERY_S`` seconds; the next one says how many were
    left out meanwhile (a busy exporter sends many exports a second). ``first``: the first
    line's level, if louder (what is normal once known still shows once)."""

    def __init__(self, level: int, first: int | None = None):
        self.level, self.first, self._lock = level, first or level, threading.Lock()
        self._last, self._skipped = float("-inf"), 0

    def __call__(self, message: str, *args: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < LOG_EVERY_S:
                self._skipped += 1
                return
            level = self.first if self._last == float("-inf") else self.level
            skipped, self._skipped, self._last = self._skipped, 0, now
        if skipped:
            message += f" (and {skipped} more such exports since the last line)"
        elif level != self.level:
            message += f" (further such lines at {logging.getLevelName(self.level)})"
        log.log(level, message, *args)


class Traces:
    """Which traces are trajectories: those with a GenAI span (``ingest.otlp.is_genai``).

    A trace is one once an export brought one of its GenAI spans (remembered for the last
    ``KNOWN_KEPT`` traces) or the lake has it (asked once per export, for the others). The
    spans of a trace that is none (yet) are held in memory, for ``HOLD_SECONDS`` and
    ``HOLD_BYTES`` at most, and stored with its first GenAI span if that comes meanwhile.
    The bytes are shared fairly: past ``HOLD_BYTES``, the tenant holding the most loses its
    oldest trace first, so one tenant's flood of such spans evicts its own."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._lock = threading.Lock()
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._held: dict[str, OrderedDict[str, tuple[float, int, list[Span]]]] = {}
        # tenant -> trace -> (held since, bytes, spans), oldest first; and each tenant's bytes
        self._held_bytes: dict[str, int] = {}
        self._total = 0

    def admit(self, tenant: str, mapped: Mapped) -> tuple[list[Span], tuple[int, int]]:
        """The spans to store now (held ones joining their trace's GenAI spans), and
        ``(spans, traces)`` held instead."""
        traces: dict[str, list[Span]] = {}
        for span in mapped.spans:
            traces.setdefault(span[1], []).append(span)
        store: list[Span] = []
        with self._lock:
            self._expire(time.monotonic())
            unsure = [t for t in traces if t not in mapped.genai
                      and (tenant, t) not in self._known]
            for tid in traces.keys() - set(unsure):
                store += self._admit((tenant, tid), traces[tid])
        stored = self._stored(tenant, unsure)
        held = [0, 0]
        with self._lock:
            for tid in unsure:
                if tid in stored or (tenant, tid) in self._known:
                    store += self._admit((tenant, tid), traces[tid])
                else:
                    self._hold(tenant, tid, traces[tid])
                    held[0] += len(traces[tid])
                    held[1] += 1
        return store, (held[0], held[1])

    def _admit(self, key: tuple[str, str], spans: list[Span]) -> list[Span]:
        self._known[key] = None
        self._known.move_to_end(key)
        if len(self._known) > KNOWN_KEPT:
            self._known.popitem(last=False)
        return [(f"{loc} (held from an earlier export)", tid, step)
                for loc, tid, step in self._release(*key)] + spans

    def _stored(self, tenant: str, tids: list[str]) -> set[str]:
        """Which of ``tids`` the lake has as trajectories (not asked for traces held: none
        was when they were)."""
        with self._lock:
            ask = [t for t in tids if t not in self._held.get(tenant, ())]
        if not ask:
            return set()
        rows = self.lake.store.lookup("trajectories", tenant, "trajectory_id", ask,
                                      ["trajectory_id"])
        return set(rows["trajectory_id"].to_pylist())

    def _hold(self, tenant: str, trace: str, spans: list[Span]) -> None:
        size = sum(len(orjson.dumps(step)) for _, _, step in spans)
        held = self._held.setdefault(tenant, OrderedDict())
        since, was, before = held.get(trace, (time.monotonic(), 0, []))
        held[trace] = (since, was + size, before + spans)  # in its place: by ``since``
        self._held_bytes[tenant] = self._held_bytes.get(tenant, 0) + size
        self._total += size
        while self._total > HOLD_BYTES:
            self._release(max(self._held_bytes, key=self._held_bytes.__getitem__))

    def _release(self, tenant: str, trace: str | None = None) -> list[Span]:
        """Take a held trace's spans out (``trace`` None: the tenant's oldest)."""
        held = self._held.get(tenant)
        if not held or (trace is not None and trace not in held):
            return []
        _, size, spans = held.pop(trace) if trace is not None else held.popitem(last=False)[1]
        self._held_bytes[tenant] -= size
        self._total -= size
        if not held:
            del self._held[tenant], self._held_bytes[tenant]
        return spans

    def _expire(self, now: float) -> None:
        for tenant, held in list(self._held.items()):
            while held and now - next(iter(held.values()))[0] > HOLD_SECONDS:
                self._release(tenant)


def add_servicer(register: Callable[[Callable, Any], None], lake: Lake) -> None:
    register(otlp_grpc.add_TraceServiceServicer_to_server, TraceServicer(lake))
