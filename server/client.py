"""The Python client of a ``lake serve``.

    from server.client import LakeClient

    with LakeClient("127.0.0.1:50051", token="cl_...") as lake:
        reply = lake.ingest_arrow([{"trajectory_id": "run-1", "task": "refund #12",
                                    "steps": [{"kind": "tool", "name": "refund"}],
                                    "outcome": {"success": True}}])
        run = lake.get_trajectory("run-1")   # sees this client's writes (min_lsn: its lsn)
        page = lake.list_trajectories(agent="support-bot", status="failed")

Rows come back shaped like the lake's tables (``lake/schema.py``): times are UTC
``datetime``s, ``meta`` / ``attributes`` JSON text. Times sent are read as files' are: a
``datetime`` (naive means UTC), ISO 8601 text, or epoch seconds. A failed call raises the
lake's error class (``InvalidArgument`` with ``.field``, ``NotFound``, ``ResourceExhausted``
with ``.retry_after_s``, ...): ``server/errors.py``'s table, inverted. ``token`` defaults to
the ``LAKE_TOKEN`` environment variable.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pyarrow as pa

from lake.errors import (
    AlreadyExists,
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    LakeError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from lake.records import epoch_us
from proto.contextlake.v1 import lake_pb2 as pb
from proto.contextlake.v1 import lake_pb2_grpc as pb_grpc

from . import checked, convert
from .client_run import Run
from .client_stream import Stream, not_resent, raise_after, reworded, step_message
from .errors import from_rpc_error

__all__ = ["LakeClient", "Run", "IngestReply", "ReportReply", "Page", "LakeError",
           "InvalidArgument", "NotFound", "AlreadyExists", "Conflict", "PermissionDenied",
           "Unauthenticated", "ResourceExhausted", "Unavailable", "DeadlineExceeded",
           "StepsRefused"]

DEFAULT_PORT = 50051
Time = datetime | str | int | float  # a datetime, ISO 8601 text or epoch seconds, as in files
DEFAULT_MAX_MESSAGE = 64 << 20
_ENVELOPE = 64 << 10  # room for the rest of a request around its Arrow bytes


@dataclass
class IngestReply:
    accepted: int = 0
    steps: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)
    lsn: int = 0


class StepsRefused(InvalidArgument):
    """Some steps of an ``append`` or ``stream`` were refused by the lake's rules; the
    others landed (durable). ``reply``: what landed, and ``rejects``."""

    reply: IngestReply


def _strict(reply: IngestReply, strict: bool) -> IngestReply:
    if not strict or not reply.rejects:
        return reply
    listed = "; ".join(f"{r['field'] or 'steps'}: {r['reason']}" for r in reply.rejects[:3])
    more = f"; and {len(reply.rejects) - 3} more" if len(reply.rejects) > 3 else ""
    e = StepsRefused(f"{len(reply.rejects)} step(s) refused by the lake's rules, "
                     f"{reply.accepted} landed (durable): {listed}{more}. Fix them and send "
                     "them again at their indexes; strict=False returns refusals in "
                     "reply.rejects instead", field=reply.rejects[0]["field"] or None)
    e.reply = reply
    raise e


@dataclass
class ReportReply:
    """``stored``: False when the report repeated the context's latest one (a retry: nothing
    new); ``hit_threshold``: its cluster's threshold with this report counted."""
    stored: bool
    hit_threshold: float
    lsn: int = 0


@dataclass
class Page:
    trajectories: list[dict[str, Any]]
    next_page_token: str
    version: int


class LakeClient:
    """``target``: ``host:port`` (the port defaults to 50051; ``http://`` is dropped)."""

    def __init__(self, target: str, token: str | None = None, *, timeout: float = 60.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE, retry_s: float = 30.0):
        token = token if token is not None else os.environ.get("LAKE_TOKEN")
        if token is not None:
            token = token.strip()  # as read from a file or an env var: its newline
            if not token.isprintable():
                raise InvalidArgument("the token has control characters: pass the cl_... "
                                      "text `lake token create` printed", field="token")
        self.target = _target(target)
        self.timeout, self.max_message_bytes = timeout, max_message_bytes
        self.retry_s = retry_s  # how long idempotent calls ride out a restart or overload
        self._lsn, self._lsn_lock = 0, threading.Lock()
        self._answered = False  # a server answered once: a failure to connect is a restart
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_reconnect_backoff_ms", 1000)])  # a server back is found in a second
        self.ingest = pb_grpc.IngestServiceStub(self.channel)
        self.context = pb_grpc.ContextServiceStub(self.channel)
        self.admin = pb_grpc.AdminServiceStub(self.channel)
        self._stream_steps = self.channel.stream_unary(  # StreamSteps taking serialized requests
            f"/{pb.DESCRIPTOR.services_by_name['IngestService'].full_name}/StreamSteps",
            request_serializer=None, response_deserializer=pb.StreamStepsResponse.FromString)

    def call(self, method: Callable[..., Any], request: Any, *, deadline: bool = True) -> Any:
        """One RPC with the token and ``timeout`` (none without ``deadline``: a live stream
        lasts as long as its run); a failure raises the lake's error class."""
        try:
            reply = method(request, metadata=self._metadata,
                           timeout=self.timeout if deadline else None)
            self._answered = True
            return reply
        except grpc.RpcError as e:
            err = from_rpc_error(e)
            if isinstance(err, Unavailable) and "failed to connect" in err.message.lower():
                err = Unavailable(f"no lake server answers at {self.target} ({e.details()}): "
                                  "start one with `lake serve` (`make run` in a checkout), or "
                                  "check the address and port")
            elif "received message larger than max" in err.message.lower():  # the server's
                err = InvalidArgument(  # limit is below this client's: no retry makes it fit
                    f"the server refused the request as larger than its max_message_bytes "
                    f"({e.details()}): send less per call, or create this client with the "
                    "server's max_message_bytes (ingest_arrow splits tables to fit it)",
                    field="request")
            elif isinstance(err, DeadlineExceeded) and deadline:  # this client's own deadline
                err = DeadlineExceeded(
                    f"no answer within this client's timeout ({self.timeout:g} s; "
                    f"{e.details()}): the call may still complete. Retry with a longer one, "
                    "LakeClient(..., timeout=seconds) (calls carrying your ids are "
                    "idempotent)")
            elif "sent message larger than max" in err.message.lower():  # nothing was sent:
                err = InvalidArgument(  # no retry makes it fit
                    f"the request is larger than this client's max_message_bytes "
                    f"({self.max_message_bytes:,}) ({e.details()}): send less per call "
                    "(fewer steps; big inputs / outputs are better stored elsewhere and "
                    "referenced), or raise max_message_bytes here and the server's "
                    "--max-message-bytes", field="request")
            raise err from e

    @property
    def lsn(self) -> int:
        """The highest log position this client's writes returned: reads wait for it by
        default (``min_lsn``), so they see this client's own writes."""
        return self._lsn

    def _wrote(self, lsn: int) -> int:
        with self._lsn_lock:
            self._lsn = max(self._lsn, lsn)
        return lsn

    # -- ingest -------------------------------------------------------------------------------
    def ingest_arrow(self, data: pa.Table | pa.RecordBatch | list[dict[str, Any]]) -> IngestReply:
        """Send trajectories (interchange format, docs/format.md) as Arrow IPC.

        Durable when it returns. A table larger than a message goes in several calls (each
        durable; a retry is harmless). ``rejects`` index the rows of ``data``: a record the
        lake's rules refuse, or one whose value types no Arrow table of the others can hold
        (``"reward": "high"`` among numbers goes in a table of its own, to be judged)."""
        out = IngestReply()
        if isinstance(data, list):
            if not data:
                return out
            checked.warn_unknown_records(data)
            tables, out.rejects = checked.records_to_tables(data)
        elif isinstance(data, (pa.Table, pa.RecordBatch)):
            tables = [(pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch)
                       else data, None)]
        else:
            raise InvalidArgument(f"takes a list of records (dicts), a pyarrow.Table or a "
                                  f"RecordBatch, got {type(data).__name__}: wrap one record "
                                  "in a list", field="data")
        for table, at in tables:
            for offset, payload in self._chunks(table, 0):
                r = self._retry(self.ingest.IngestArrow,
                                pb.IngestArrowRequest(arrow_ipc=payload))
                out.accepted += r.accepted
                out.steps += r.steps
                out.rejects += [{"index": offset + x.index if at is None
                                 else at[offset + x.index], "field": x.field or None,
                                 "reason": x.reason, "trajectory_id": x.trajectory_id or None}
                                for x in r.rejects]
                out.lsn = max(out.lsn, self._wrote(r.lsn))
        out.rejects.sort(key=lambda x: x["index"])
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
                       full_payloads: bool = False, min_lsn: int | None = None
                       ) -> dict[str, Any]:
        """The trajectory row with ``steps``. ``min_lsn``: wait until writes through that log
        position are visible; by default this client's last write (``lsn``), 0: no wait."""
        r = self._read(self.context.GetTrajectory, pb.GetTrajectoryRequest(
            trajectory_id=trajectory_id, as_of=_ref(as_of), full_payloads=full_payloads),
            min_lsn)
        return convert.trajectory_from_pb(r.trajectory)

    def list_trajectories(self, *, agent: str = "", agent_version: str = "", model: str = "",
                          session_id: str = "", status: str | list[str] | None = None,
                          success: bool | None = None, since: Time | None = None,
                          until: Time | None = None,
                          min_reward: float | None = None, tags: list[str] | None = None,
                          page_size: int = 0,
                          page_token: str = "", as_of: int | str | None = None,
                          min_lsn: int | None = None, include_retracted: bool = False) -> Page:
        """One page of trajectory rows (without ``steps``), in trajectory_id order.
        ``min_lsn`` as in ``get_trajectory``: by default this client's last write."""
        flt = checked.message(pb.Filter, "filter.", agent=agent, agent_version=agent_version,
                              model=model, session_id=session_id, status=_statuses(status),
                              success=success, since_us=epoch_us(since, "since"),
                              until_us=epoch_us(until, "until"), min_reward=min_reward,
                              tags=tags or [])
        r = self._read(self.context.ListTrajectories, pb.ListTrajectoriesRequest(
            filter=flt, page_size=page_size, page_token=page_token, as_of=_ref(as_of),
            include_retracted=include_retracted), min_lsn)
        rows = [convert.trajectory_from_pb(t) for t in r.trajectories]
        for row in rows:
            del row["steps"]  # a listing carries none: not an empty list of them
        return Page(rows, r.next_page_token, r.version)

    def _read(self, method: Callable[..., Any], request: Any, min_lsn: int | None) -> Any:
        """A read that waits for ``min_lsn`` (None: this client's last write); an error of
        that wait says where the position came from."""
        request.min_lsn = self._lsn if min_lsn is None else min_lsn
        try:
            return self._retry(method, request)
        except LakeError as e:
            if min_lsn is None and request.min_lsn and (
                    e.field == "min_lsn" or "not committed" in e.message
                    or isinstance(e, DeadlineExceeded)):
                raise reworded(e, f"{e.message} (min_lsn {request.min_lsn} was this client's "
                                  "last write, its lsn, waited for by default to read it: pass "
                                  "min_lsn=0 to read what is committed now, without "
                                  "waiting)") from e
            raise

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
        """Open a live trajectory (status running); returns its id (yours, or a new uuid).
        ``started_at`` defaults to now; unknown fields are kept in ``meta``."""
        tid = trajectory_id or f"run-{uuid.uuid4().hex}"
        fields.setdefault("started_at", datetime.now(UTC))
        msg = checked.trajectory({"trajectory_id": tid, "task": task, **fields})
        self._wrote(self._retry(self.ingest.StartTrajectory,
                                pb.StartTrajectoryRequest(trajectory=msg)).lsn)
        return tid

    def append(self, trajectory_id: str, steps: list[dict[str, Any]], *,
               strict: bool = True) -> IngestReply:
        """Add steps (each with its ``index``); durable when it returns; safe to retry.
        A value of the wrong type raises ``InvalidArgument`` (``steps[i].<field>``) before
        anything is sent; the lake's rules refuse bad steps one by one, the others land:
        then it raises ``StepsRefused`` naming them (its ``reply`` says what landed), or,
        ``strict=False``, returns them in ``rejects``."""
        return _strict(self._append([step_message(s, f"steps[{i}]")
                                     for i, s in enumerate(steps)], trajectory_id), strict)

    def _append(self, steps: list[pb.Step], trajectory_id: str,
                retry: bool = True) -> IngestReply:
        """``retry``: False makes one attempt (a ``Run``'s batch, sent again later)."""
        request = pb.AppendStepsRequest(trajectory_id=trajectory_id, steps=steps)
        r = self._retry(self.ingest.AppendSteps, request) if retry else \
            self.call(self.ingest.AppendSteps, request)
        return IngestReply(r.accepted, r.accepted, [_reject(x) for x in r.rejects],
                           self._wrote(r.lsn))

    def stream(self, trajectory_id: str, steps: Iterable[dict[str, Any]],
               per_message: int = 1, *, strict: bool = True) -> IngestReply:
        """Send steps (each with its ``index``) over one client stream, ``per_message`` to a
        message, as ``steps`` yields them; all are acknowledged when it returns (durable).
        The lake's rules refuse bad ones one by one, the others land: then it raises
        ``StepsRefused`` naming them by their position in the stream (its ``reply`` says
        what landed), or, ``strict=False``, returns them in ``rejects``.

        A step of the wrong type raises ``InvalidArgument`` naming ``steps[i].<field>``, and
        an exception of ``steps`` itself propagates as it is; either ends the stream after
        the steps before it, which are acknowledged (durable) when it raises. Transient
        failures are retried (``retry_s``) by sending the stream again from its start:
        indexes make that harmless. To do so it keeps the messages sent, serialized, up to
        ``STREAM_RESEND_BYTES`` (64 MiB); a longer stream is not retried past that (the error
        says so). Any other error: nothing is known durable; stream the same steps again.
        No ``timeout``: the stream lasts as long as ``steps`` (the server ends one idle past
        its ``stream_idle_ms``, 60 s, and the retry sends it again)."""
        if isinstance(per_message, bool) or not isinstance(per_message, int) or per_message < 1:
            raise InvalidArgument(f"must be a whole number from 1, got {per_message!r:.40}",
                                  field="per_message")
        if not isinstance(steps, Iterable) or isinstance(steps, (str, bytes, dict)):
            raise InvalidArgument(f"takes an iterable of steps (dicts), got "
                                  f"{type(steps).__name__}: wrap one step in a list",
                                  field="steps")
        sent = Stream(trajectory_id, steps, per_message)
        try:
            r = self._retry(self._stream_steps, sent.attempt(), again=sent.attempt,
                            deadline=False)
        except LakeError as e:
            if sent.kept is None and isinstance(e, (Unavailable, ResourceExhausted)):
                raise not_resent(e, sent) from e
            if sent.error is not None:
                e.add_note(f"the steps had also raised, after {sent.steps}: {sent.error!r}")
            raise
        reply = IngestReply(r.accepted, r.accepted, [_reject(x) for x in r.rejects],
                            self._wrote(r.lsn))
        if sent.error is not None:
            raise_after(sent, reply)
        return _strict(reply, strict)

    def finish(self, trajectory_id: str, *, success: bool | None = None,
               reward: float | None = None, scores: dict[str, float] | None = None,
               status: str | None = None, ended_at: Time | None = None) -> int:
        """Close a live trajectory; returns the LSN (pass as min_lsn to read it).
        ``ended_at`` defaults to now."""
        r = self._retry(self.ingest.FinishTrajectory, checked.message(
            pb.FinishTrajectoryRequest, trajectory_id=trajectory_id,
            status=_statuses(status)[0] if status else 0, success=success, reward=reward,
            scores=scores or {},
            ended_at_us=epoch_us(datetime.now(UTC) if ended_at is None else ended_at, "ended_at")))
        return self._wrote(r.lsn)

    def trajectory(self, task: str, **fields: Any) -> Run:
        """``with client.trajectory(task, agent=...) as t: t.tool(...); t.finish(success=True)``"""
        return Run(self, task, fields)

    def _retry(self, method: Callable[..., Any], request: Any,
               again: Callable[[], Any] | None = None, deadline: bool = True) -> Any:
        """Idempotent calls (client ids, step indexes) are retried on transient failures for
        up to ``retry_s`` from the first (a server restarting, overload); a server this
        client never reached fails within ~2 s (a wrong address should not hang).
        ``again``: the request of the next attempt (a stream's, from its start); None: none."""
        budget = self.retry_s if self._answered else min(self.retry_s, 2.0)
        until, delay = 0.0, 0.1
        while True:
            try:
                return self.call(method, request, deadline=deadline)
            except (Unavailable, ResourceExhausted) as e:
                until = until or time.monotonic() + budget  # a stream may have run long
                wait = min(2.0, max(delay, getattr(e, "retry_after_s", 0.0)))
                if time.monotonic() + wait > until or (
                        again is not None and (request := again()) is None):
                    raise
                time.sleep(wait)
                delay *= 2

    # -- the semantic cache ---------------------------------------------------------------------
    def get_context(self, text: str | None = None, *, vector: Any = None, k: int = 5,
                    success_only: bool = False, agent: str = "", agent_version: str = "",
                    min_reward: float | None = None, tags: list[str] | None = None,
                    since_us: int | None = None, until_us: int | None = None,
                    min_lsn: int = 0) -> dict[str, Any]:
        """Closest past trajectories, a verdict and the fused plan (docs/context.md).
        ``min_lsn`` is 0 unless given (an answer at once, from what is indexed): pass
        ``client.lsn`` to wait until this client's writes are in it."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidArgument(f"k must be a whole number from 1 (the server's limit: "
                                  f"100), got {k!r:.40}", field="k")
        flt = checked.message(pb.Filter, "filter.", agent=agent, agent_version=agent_version,
                              tags=tags or [], success=True if success_only else None,
                              min_reward=min_reward, since_us=since_us, until_us=until_us)
        req = checked.message(pb.GetContextRequest, k=k, filter=flt, min_lsn=min_lsn,
                              text=text)
        if vector is not None:
            try:
                req.vector.values.extend(float(x) for x in vector)
            except (TypeError, ValueError) as e:
                raise InvalidArgument(f"must be a sequence of numbers ({e})",
                                      field="vector") from e
        return json.loads(self._retry(self.context.GetContext, req).answer_json)

    def report(self, context_id: str, *, used: bool | None = None, success: bool | None = None,
               reward: float | None = None, trajectory_id: str = "") -> ReportReply:
        """Say whether a context helped: it moves the cluster's threshold and plan stats.

        A context's latest report is the one that counts (report again to correct one; every
        report stays in SQL's ``feedback``); the same report again is a retry, stored once.
        ``trajectory_id`` is kept as given, not checked: a report may come before its run
        is started or committed (join ``feedback`` to ``trajectories`` to find strays)."""
        r = self._retry(self.context.ReportOutcome, checked.message(
            pb.ReportOutcomeRequest, context_id=context_id, used=used, success=success,
            reward=reward, trajectory_id=trajectory_id))
        return ReportReply(r.stored, r.hit_threshold, self._wrote(r.lsn))

    def recluster(self) -> dict[str, Any]:
        r = self.call(self.admin.Recluster, pb.ReclusterRequest())
        return {"clusters": r.clusters, "trajectories": r.trajectories, "version": r.version}

    def retract(self, trajectory_ids: list[str], reason: str, *, purge: bool = False) -> int:
        """Never serve these runs again; ``purge``: also remove their content now (older
        versions keep it until vacuumed). Returns how many were retracted (purged)."""
        r = self.call(self.admin.Retract, pb.RetractRequest(trajectory_ids=trajectory_ids,
                                                            reason=reason, purge=purge))
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

    def untag(self, name: str) -> dict[str, Any]:
        """Remove a tag (needs the operator scope); returns the version it named."""
        r = self.call(self.admin.Tag, pb.TagRequest(name=name, delete=True))
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


_GRPC_SCHEMES = ("dns", "unix", "unix-abstract", "ipv4", "ipv6", "vsock")  # gRPC's names


def _target(target: str) -> str:
    """``host:port`` for gRPC: ``http://`` (as OpenTelemetry endpoints are written) is
    dropped, a missing port is the server's default (gRPC's own would be 443); gRPC's own
    names (``dns:``, ``unix:``, ...) pass as they are. Anything else is refused here: no
    server answers a malformed address, and no retry would make it answer."""
    if not isinstance(target, str) or not target.strip():
        raise InvalidArgument(f"must be host:port, e.g. 127.0.0.1:{DEFAULT_PORT}, got "
                              f"{target!r:.80}", field="target")
    if target.startswith("https://"):
        raise InvalidArgument("this client speaks plaintext gRPC: give host:port (for TLS, "
                              "put the server behind a proxy and use gRPC's secure channel)",
                              field="target")
    target = target.strip().removeprefix("http://").rstrip("/")
    scheme = re.match(r"([a-z][a-z0-9+.-]*):", target)
    if scheme and scheme[1] in _GRPC_SCHEMES:
        return target
    if "://" in target or "/" in target:
        raise InvalidArgument(f"{target!r:.80} is not an address this client takes: give "
                              f"host:port (e.g. 127.0.0.1:{DEFAULT_PORT}), optionally after "
                              "http://, or a gRPC name (dns:, unix:, ipv4:, ipv6:)",
                              field="target")
    host, colon, port = target.rpartition(":") if ":" in target.rpartition("]")[2] \
        else (target, "", "")
    if not colon:
        return f"{target}:{DEFAULT_PORT}"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"{target!r:.80} is not host:port: the port must be a number "
                              f"from 1 to 65535 (the server's default is {DEFAULT_PORT})",
                              field="target")
    return target


def _ref(ref: int | str | None) -> str:
    return "" if ref is None else str(ref)


def _statuses(status: str | list[str] | None) -> list[int]:
    names = [status] if isinstance(status, str) else list(status or [])
    bad = [s for s in names if s not in convert.STATUS_TO_PB]
    if bad:
        raise InvalidArgument(f"status {bad[0]!r} is not one of "
                              f"{', '.join(convert.STATUS_TO_PB)}", field="status")
    return [convert.STATUS_TO_PB[s] for s in names]


def _reject(r: Any) -> dict[str, Any]:
    return {"index": r.index, "field": r.field, "reason": r.reason}
