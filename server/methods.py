"""The RPCs this server implements, each with the token scope it needs: the one table
(auth checks the scope; the other layers wrap every method of their packages; health
and reflection are not in it and stay open)."""

from __future__ import annotations

V1 = "/contextlake.v1."
SCOPES: dict[str, str] = {
    V1 + "IngestService/StartTrajectory": "ingest",
    V1 + "IngestService/AppendSteps": "ingest",
    V1 + "IngestService/StreamSteps": "ingest",
    V1 + "IngestService/FinishTrajectory": "ingest",
    V1 + "IngestService/IngestArrow": "ingest",
    V1 + "ContextService/GetContext": "read",
    V1 + "ContextService/ReportOutcome": "ingest",
    V1 + "ContextService/GetTrajectory": "read",
    V1 + "ContextService/ListTrajectories": "read",
    V1 + "AdminService/Stats": "read",
    V1 + "AdminService/Versions": "admin",
    V1 + "AdminService/Tag": "admin",
    V1 + "AdminService/Restore": "admin",
    V1 + "AdminService/Recluster": "admin",
    V1 + "AdminService/Retract": "admin",
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export": "ingest",  # OTLP exporters
}
# "/contextlake.", "/opentelemetry.": what the layers wrap (auth: the methods above)
PACKAGES = tuple(sorted({m[: m.index(".") + 1] for m in SCOPES}))
