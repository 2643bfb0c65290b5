"""The OTLP/gRPC trace receiver: ``opentelemetry.proto.collector.trace.v1.TraceService``.

An OpenTelemetry exporter pointed at the lake's port (or the standard 4317, ``otlp_port``)
sends its spans here; they become trajectories (``ingest.otlp``, docs/otlp.md). The call is
authorized like the others (the exporter's ``authorization: Bearer ...`` header, scope
``ingest``). Spans that cannot be stored are counted in ``partial_success`` with the reason
of the first few; the others are logged durably before the call returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from ingest.otlp import spans_of
from lake import Lake

from .auth import identity

SERVICE_NAME = otlp.DESCRIPTOR.services_by_name["TraceService"].full_name
EXPORT = f"/{SERVICE_NAME}/Export"
REASONS_SHOWN = 5  # partial_success.error_message: the first few reasons, then a count


class TraceServicer(otlp_grpc.TraceServiceServicer):
    def __init__(self, lake: Lake):
        self.lake = lake

    def Export(self, request: otlp.ExportTraceServiceRequest,
               context: Any) -> otlp.ExportTraceServiceResponse:
        spans, bad = spans_of(request)
        total = len(spans) + len(bad)
        result = self.lake.ingest_spans([(tid, step) for _, tid, step in spans],
                                        tenant=identity().tenant,
                                        where=[loc for loc, _, _ in spans])
        bad += [(r.location, f"{r.field}: {r.reason}") for r in result.rejected]
        if not bad:
            return otlp.ExportTraceServiceResponse()
        shown = "; ".join(f"{loc}: {why}" for loc, why in bad[:REASONS_SHOWN])
        more = f" (and {len(bad) - REASONS_SHOWN} more)" if len(bad) > REASONS_SHOWN else ""
        return otlp.ExportTraceServiceResponse(partial_success=otlp.ExportTracePartialSuccess(
            rejected_spans=len(bad),
            error_message=f"{len(bad)} of {total} spans rejected, the others stored: "
                          f"{shown}{more}"))


def add_servicer(register: Callable[[Callable, Any], None], lake: Lake) -> None:
    register(otlp_grpc.add_TraceServiceServicer_to_server, TraceServicer(lake))
