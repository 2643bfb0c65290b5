"""The Python client of a ``lake serve``.

    from server.client import LakeClient

    with LakeClient("127.0.0.1:50051", token="cl_...") as lake:
        reply = lake.ingest_arrow([{"trajectory_id": "run-1", "task": "refund #12",
                                    "steps": [{"kind": "tool", "name": "refund"}],
                                    "outcome": {"success": True}}])
        run = lake.get_trajectory("run-1", min_lsn=reply.lsn)   # read your own write
        page = lake.list_trajectories(agent="support-bot", status="failed")

Rows come back shaped like the lake's tables (``lake/schema.py``): times are UTC
``datetime``s, ``meta`` / ``attributes`` JSON text. A failed call raises the lake's error
class (``InvalidArgument`` with ``.field``, ``NotFound``, ``ResourceExhausted`` with
``.retry_after_s``, ...): ``server/errors.py``'s table, inverted. ``token`` defaults to
the ``LAKE_TOKEN`` environment variable.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
import pyarrow as pa

from lake.errors import InvalidArgument, ResourceExhausted, Unavailable
from proto.contextlake.v1 import lake_pb2 as pb
from proto.contextlake.v1 import lake_pb2_grpc as pb_grpc

from . import convert
from .errors import from_rpc_error

DEFAULT_MAX_MESSAGE = 64 << 20
_ENVELOPE = 64 << 10  # room for the rest of a request around its Arrow bytes


@dataclass
class IngestReply:
    accepted: int = 0
    steps: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)
    lsn: int = 0


@dataclass
class Page:
    trajectories: list[dict[str, Any]]
    next_page_token: str
    version: int


class LakeClient:
    def __init__(self, target: str, token: str | None = None, *, timeout: float = 60.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE):
        token = token if token is not None else os.environ.get("LAKE_TOKEN")
        self.timeout, self.max_message_bytes = timeout, max_message_bytes
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self.ingest = pb_grpc.IngestServiceStub(self.channel)
        self.context = pb_grpc.ContextServiceStub(self.channel)
        self.admin = pb_grpc.AdminServiceStub(self.channel)
        self._stream_steps = self.channel.stream_unary(  # StreamSteps taking serialized requests
            f"/{pb.DESCRIPTOR.services_by_name['IngestService'].full_name}/StreamSteps",
            request_serializer=None, response_deserializer=pb.StreamStepsResponse.FromString)

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        """One RPC with the token and timeout; a failure raises the lake's error class."""
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e

    # -- ingest -------------------------------------------------------------------------------
    def ingest_arrow(self, data: pa.Table | pa.RecordBatch | list[dict[str, Any]]) -> IngestReply:
        """Send trajectories (interchange format, docs/format.md) as Arrow IPC.

        Durable when it returns. A table larger than a message goes in several calls (each
        durable; a retry is harmless). ``rejects`` index the rows of ``data``."""
        out = IngestReply()
        if isinstance(data, list):
            if not data:
                return out
            data = convert.records_to_arrow(data)
        elif isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        for offset, payload in self._chunks(data, 0):
            r = self.call(self.ingest.IngestArrow, pb.IngestArrowRequest(arrow_ipc=payload))
            out.accepted += r.accepted
            out.steps += r.steps
            out.rejects += [{"index": offset + x.index, "field": x.field or None,
                             "reason": x.reason, "trajectory_id": x.trajectory_id or None}
                            for x in r.rejects]
            out.lsn = max(out.lsn, r.lsn)
        return out

    def _chunks(self, table: pa.Table, offset: int) -> Iterator[tuple[int, bytes]]:
        payload = convert.arrow_to_ipc(table)
        if len(payload) <= self.max_message_bytes - _ENVELOPE or table.num_rows <= 1:
            yield offset, payload
            return
        half = table.num_rows // 2
        yield from self._chunks(table.slice(0, half), offset)
        yield from self._chunks(table.slice(half), offset + half)

    # -- reading ------------------------------------------------------------------------------
    def get_trajectory(self, trajectory_id: str, *, as_of: int | str | None = None,
                       full_payloads: bool = False, min_lsn: int = 0) -> dict[str, Any]:
        """The trajectory row with ``steps``; ``min_lsn``: wait until that write is visible."""
        r = self.call(self.context.GetTrajectory, pb.GetTrajectoryRequest(
            trajectory_id=trajectory_id, as_of=_ref(as_of), full_payloads=full_payloads,
            min_lsn=min_lsn))
        return convert.trajectory_from_pb(r.trajectory)

    def list_trajectories(self, *, agent: str = "", agent_version: str = "", model: str = "",
                          session_id: str = "", status: str | list[str] | None = None,
                          success: bool | None = None, since: datetime | int | None = None,
                          until: datetime | int | None = None, page_size: int = 0,
                          page_token: str = "", as_of: int | str | None = None,
                          min_lsn: int = 0, include_retracted: bool = False) -> Page:
        """One page of trajectory rows (no steps), in trajectory_id order."""
        flt = pb.Filter(agent=agent, agent_version=agent_version, model=model,
                        session_id=session_id, status=_statuses(status), success=success,
                        since_us=None if since is None else convert.to_us(since),
                        until_us=None if until is None else convert.to_us(until))
        r = self.call(self.context.ListTrajectories, pb.ListTrajectoriesRequest(
            filter=flt, page_size=page_size, page_token=page_token, as_of=_ref(as_of),
            min_lsn=min_lsn, include_retracted=include_retracted))
        return Page([convert.trajectory_from_pb(t) for t in r.trajectories], r.next_page_token,
                    r.version)

    def iter_trajectories(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every trajectory matching the filters (all pages, one consistent version)."""
        token = ""
        while True:
            page = self.list_trajectories(**filters, page_token=token)
            yield from page.trajectories
            if not (token := page.next_page_token):
                return

    # -- live trajectories ----------------------------------------------------------------------
    def start(self, task: str, *, trajectory_id: str | None = None, **fields: Any) -> str:
        """Open a live trajectory (status running); returns its id (yours, or a new uuid)."""
        tid = trajectory_id or f"run-{uuid.uuid4().hex}"
        msg = convert.trajectory_to_pb({"trajectory_id": tid, "task": task, **fields})
        self._retry(self.ingest.StartTrajectory, pb.StartTrajectoryRequest(trajectory=msg))
        return tid

    def append(self, trajectory_id: str, steps: list[dict[str, Any]]) -> IngestReply:
        """Add steps (each with its ``index``); durable when it returns; safe to retry."""
        r = self._retry(self.ingest.AppendSteps, pb.AppendStepsRequest(
            trajectory_id=trajectory_id, steps=[convert.step_to_pb(s) for s in steps]))
        return IngestReply(r.accepted, r.accepted, [_reject(x) for x in r.rejects], r.lsn)

    def stream(self, trajectory_id: str, steps: Iterable[dict[str, Any]],
               per_message: int = 1) -> IngestReply:
        """Send steps over one client stream; acknowledged (all of them) when it returns."""
        head = convert.stream_head(trajectory_id)

        def messages() -> Iterator[bytes]:  # serialized here: gRPC sends bytes as they are
            batch: list[dict[str, Any]] = []
            for s in steps:
                batch.append(s)
                if len(batch) >= per_message:
                    yield convert.stream_request(head, batch)
                    batch = []
            if batch:
                yield convert.stream_request(head, batch)
        r = self.call(self._stream_steps, messages())
        return IngestReply(r.accepted, r.accepted, [_reject(x) for x in r.rejects], r.lsn)

    def finish(self, trajectory_id: str, *, success: bool | None = None,
               reward: float | None = None, scores: dict[str, float] | None = None,
               status: str | None = None) -> int:
        """Close a live trajectory; returns the LSN (pass as min_lsn to read it)."""
        r = self._retry(self.ingest.FinishTrajectory, pb.FinishTrajectoryRequest(
            trajectory_id=trajectory_id, status=_statuses(status)[0] if status else 0,
            success=success, reward=reward, scores=scores or {}))
        return r.lsn

    def trajectory(self, task: str, **fields: Any) -> Run:
        """``with client.trajectory(task, agent=...) as t: t.tool(...); t.finish(success=True)``"""
        return Run(self, task, fields)

    def _retry(self, method: Callable[..., Any], request: Any, attempts: int = 5) -> Any:
        """Idempotent calls (client ids, step indexes) are retried on transient failures."""
        for attempt in range(attempts):
            try:
                return self.call(method, request)
            except (Unavailable, ResourceExhausted) as e:
                if attempt == attempts - 1:
                    raise
                time.sleep(min(2.0, getattr(e, "retry_after_s", 0.1) * (2 ** attempt)))
        raise AssertionError("unreachable")

    # -- the semantic cache ---------------------------------------------------------------------
    def get_context(self, text: str | None = None, *, vector: Any = None, k: int = 5,
                    success_only: bool = False, agent: str = "", agent_version: str = "",
                    min_reward: float | None = None, tags: list[str] | None = None,
                    since_us: int | None = None, until_us: int | None = None,
                    min_lsn: int = 0) -> dict[str, Any]:
        """Closest past trajectories, a verdict and the fused plan (docs/context.md)."""
        flt = pb.Filter(agent=agent, agent_version=agent_version, tags=tags or [],
                        success=True if success_only else None, min_reward=min_reward,
                        since_us=since_us, until_us=until_us)
        req = pb.GetContextRequest(k=k, filter=flt, min_lsn=min_lsn)
        if vector is not None:
            req.vector.values.extend(float(x) for x in vector)
        if text is not None:
            req.text = text
        return json.loads(self.call(self.context.GetContext, req).answer_json)

    def report(self, context_id: str, *, used: bool | None = None, success: bool | None = None,
               reward: float | None = None, trajectory_id: str = "") -> None:
        """Say whether a context helped: it moves the cluster's threshold and plan stats."""
        self.call(self.context.ReportOutcome, pb.ReportOutcomeRequest(
            context_id=context_id, used=used, success=success, reward=reward,
            trajectory_id=trajectory_id))

    def recluster(self) -> dict[str, Any]:
        r = self.call(self.admin.Recluster, pb.ReclusterRequest())
        return {"clusters": r.clusters, "trajectories": r.trajectories, "version": r.version}

    def retract(self, trajectory_ids: list[str], reason: str) -> int:
        r = self.call(self.admin.Retract, pb.RetractRequest(trajectory_ids=trajectory_ids,
                                                            reason=reason))
        return r.retracted

    # -- admin --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        r = self.call(self.admin.Stats, pb.StatsRequest())
        return {f.name: getattr(r, f.name) for f in r.DESCRIPTOR.fields}

    def versions(self) -> list[dict[str, Any]]:
        r = self.call(self.admin.Versions, pb.VersionsRequest())
        return [convert.version_from_pb(v) for v in r.versions]

    def tag(self, name: str, ref: int | str | None = None, *, force: bool = False
            ) -> dict[str, Any]:
        """Name a version (default: the latest); returns it."""
        r = self.call(self.admin.Tag, pb.TagRequest(name=name, ref=_ref(ref), force=force))
        return convert.version_from_pb(r.version)

    def restore(self, ref: int | str) -> dict[str, Any]:
        """Make ``ref``'s contents current again, as a new version; returns the new one."""
        r = self.call(self.admin.Restore, pb.RestoreRequest(ref=_ref(ref)))
        return convert.version_from_pb(r.version)

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> LakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ref(ref: int | str | None) -> str:
    return "" if ref is None else str(ref)


def _statuses(status: str | list[str] | None) -> list[int]:
    names = [status] if isinstance(status, str) else list(status or [])
    bad = [s for s in names if s not in convert.STATUS_TO_PB]
    if bad:
        raise InvalidArgument(f"status {bad[0]!r} is not one of "
                              f"{', '.join(convert.STATUS_TO_PB)}", field="status")
    return [convert.STATUS_TO_PB[s] for s in names]


class Run:
    """A live trajectory: steps are numbered and sent in batches; durable at ``finish``.

    Leaving the block without ``finish`` marks it failed if an exception escaped, else
    abandoned."""

    BATCH = 32

    def __init__(self, client: LakeClient, task: str, fields: dict[str, Any]):
        self.client, self.task, self.fields = client, task, fields
        self.trajectory_id = fields.pop("trajectory_id", None) or f"run-{uuid.uuid4().hex}"
        self._buffer: list[dict[str, Any]] = []
        self._next = 0
        self.finished = False
        self.lsn = 0

    def __enter__(self) -> Run:
        self.client.start(self.task, trajectory_id=self.trajectory_id, **self.fields)
        return self

    def step(self, kind: str, **fields: Any) -> None:
        self._buffer.append({"index": self._next, "kind": kind, **fields})
        self._next += 1
        if len(self._buffer) >= self.BATCH:
            self.flush()

    def tool(self, name: str, input: Any = None, output: Any = None, **fields: Any) -> None:
        self.step("tool", name=name, input=_text(input), output=_text(output), **fields)

    def llm(self, output: Any = None, input: Any = None, **fields: Any) -> None:
        self.step("llm", input=_text(input), output=_text(output), **fields)

    def flush(self) -> None:
        if self._buffer:
            reply = self.client.append(self.trajectory_id, self._buffer)
            if reply.rejects:
                raise InvalidArgument(f"{len(reply.rejects)} step(s) rejected: "
                                      f"{reply.rejects[0]}", field="steps")
            self._buffer = []

    def finish(self, success: bool | None = None, **fields: Any) -> int:
        self.flush()
        self.lsn = self.client.finish(self.trajectory_id, success=success, **fields)
        self.finished = True
        return self.lsn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.finished:
            try:
                self.flush()
            finally:
                self.finish(status="failed" if exc_type else "abandoned",
                            success=False if exc_type else None)


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _reject(r: Any) -> dict[str, Any]:
    return {"index": r.index, "field": r.field, "reason": r.reason}
