"""The servicers: thin. Each RPC validates, calls the lake, converts the answer.

They raise the lake's errors and never set status codes (``server/errors.py`` does); the
caller's identity, and so the tenant, comes from ``auth.identity()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from lake import IngestResult, Lake, reads
from lake.answer_text import describe
from lake.columnar import DROP, normalize_batch
from lake.context import ContextService, Query
from lake.errors import InvalidArgument, PermissionDenied
from lake.index import Filters
from lake.records import Record, normalize, normalize_line
from lake.row_log import wal_entry
from lake.tokens import OPERATOR
from lake.versions import Version
from proto.contextlake.v1 import lake_pb2 as pb
from proto.contextlake.v1 import lake_pb2_grpc as pb_grpc

from . import convert
from .auth import identity

log = logging.getLogger(__name__)
SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())



class IngestServicer(pb_grpc.IngestServiceServicer):
    def __init__(self, lake: Lake):
        self.lake = lake

    def StartTrajectory(self, request: pb.StartTrajectoryRequest,
                        context: Any) -> pb.StartTrajectoryResponse:
        who = identity()
        record = convert.record_from_pb(request.trajectory)
        record.setdefault("agent", who.agent)  # the token's agent, unless the run names one
        lsn = self.lake.start_trajectory(record, tenant=who.tenant)
        return pb.StartTrajectoryResponse(trajectory_id=record.get("trajectory_id", ""), lsn=lsn)

    def AppendSteps(self, request: pb.AppendStepsRequest, context: Any) -> pb.AppendStepsResponse:
        res, rejects = self._append(request.trajectory_id, request.steps, 0)
        return pb.AppendStepsResponse(accepted=res.steps, rejects=rejects, lsn=res.lsn)

    async def StreamSteps(self, request_iterator: Any, context: Any) -> pb.StreamStepsResponse:
        """Steps are logged in groups as they come; the one response acknowledges them all,
        so a stream cut short is retried whole (its step indexes make that a no-op).

        Messages are read on the event loop; each full group is logged on the thread pool
        while the next is read, one group at a time, in the stream's order. What a stream
        holds is bounded: past ``STREAM_HELD_STEPS`` steps (of many trajectories) or
        ``STREAM_HELD_BYTES`` (big steps), every group held is logged as it is."""
        buffered: dict[str, list[Any]] = {}
        totals = _StreamTotals()
        in_flight: asyncio.Future | None = None
        messages = offset = held = held_bytes = 0  # held: steps in buffered, and their bytes

        async def drain(tid: str) -> None:
            nonlocal in_flight, offset, held, held_bytes
            steps = buffered.pop(tid)
            held -= len(steps)
            if not buffered:  # bytes are not counted by trajectory: all, until none is held
                held_bytes = 0
            if in_flight is not None:
                await in_flight  # its error, if any, ends the stream here
            in_flight = asyncio.ensure_future(asyncio.to_thread(
                self._log_group, tid, steps, offset, totals))
            offset += len(steps)

        try:
            async for msg in request_iterator:  # per message: as little Python as can be
                messages += 1
                tid = msg.trajectory_id
                group = buffered.get(tid)
                if group is None:
                    group = buffered[tid] = []
                group += msg.steps
                held += len(msg.steps)
                held_bytes += msg.ByteSize()
                if len(group) >= STREAM_GROUP:
                    await drain(tid)
                elif held >= STREAM_HELD_STEPS or held_bytes >= STREAM_HELD_BYTES:
                    for t in list(buffered):
                        await drain(t)
            for tid in list(buffered):
                await drain(tid)
            if in_flight is not None:
                await in_flight
        except BaseException:  # cut short (the client cancelled): the group being logged
            if in_flight is not None and not in_flight.done():  # finishes; its error is
                in_flight.add_done_callback(_logged_failure)  # logged, not left unread
            raise
        return pb.StreamStepsResponse(accepted=totals.accepted, rejects=totals.rejects,
                                      lsn=totals.lsn, messages=messages)

    def _log_group(self, tid: str, steps: list[Any], offset: int, totals: _StreamTotals) -> None:
        res, rejects = self._append(tid, steps, offset)
        totals.accepted += res.steps
        totals.rejects.extend(rejects)
        totals.lsn = max(totals.lsn, res.lsn)

    def _append(self, tid: str, steps: Any, offset: int) -> tuple[IngestResult, list[pb.Reject]]:
        """Log ``steps`` (positions ``offset``...); each bad one is a reject, the others land:
        those the message conversion refuses (a time out of range, ``attributes`` that are
        not a JSON object) and those the lake's rules refuse."""
        if not tid:
            raise InvalidArgument("trajectory_id is empty", field="trajectory_id")
        if not steps:
            raise InvalidArgument("steps is empty: send at least one step", field="steps")
        bad: dict[int, InvalidArgument] = {}
        records = convert.step_records_from_pb(steps, offset, bad=bad)
        if bad and not records:
            res = IngestResult()
        else:
            res = self.lake.append_steps(tid, records, tenant=identity().tenant)
        kept = [i for i in range(len(records) + len(bad)) if i not in bad]
        rejects = _rejects(res, offset, kept) + [
            pb.Reject(index=offset + i, field=e.field or "", reason=e.message)
            for i, e in bad.items()]
        return res, sorted(rejects, key=lambda r: r.index) if bad else rejects

    def FinishTrajectory(self, request: pb.FinishTrajectoryRequest,
                         context: Any) -> pb.FinishTrajectoryResponse:
        outcome = {"success": request.success if request.HasField("success") else None,
                   "reward": request.reward if request.HasField("reward") else None,
                   "scores": dict(request.scores) or None}
        ended = (convert.from_us(request.ended_at_us, "ended_at_us").isoformat()
                 if request.HasField("ended_at_us") else None)
        lsn = self.lake.finish_trajectory(
            request.trajectory_id, tenant=identity().tenant,
            status=convert.status_name(request.status, "status"), ended_at=ended,
            outcome={k: v for k, v in outcome.items() if v is not None} or None)
        return pb.FinishTrajectoryResponse(lsn=lsn)

    def IngestArrow(self, request: pb.IngestArrowRequest, context: Any) -> pb.IngestArrowResponse:
        """Validate every row like a file ingest; log the good ones durably (WAL + fsync).

        Rows are validated a batch at a time (``lake/columnar.py``); the rows it leaves go
        through ``normalize_line`` one by one, so a bad row's reject is the usual one. A
        message is taken ``ARROW_SLICE_ROWS`` rows at a time, each slice logged before the
        next is read: the Python objects a row costs (~3 KB) are held for one slice, not the
        whole message (1M tiny rows, 15 MB of IPC, held 3 GB). An error part way leaves the
        slices before it logged, unacknowledged: the retry of the call lands each row once."""
        ctx = self.lake.context(identity().tenant)
        table = convert.ipc_table(request.arrow_ipc)  # a damaged message: refused whole
        reply = pb.IngestArrowResponse()
        rejects: list[pb.Reject] = []
        offset = 0
        for batch in table.combine_chunks().to_batches(max_chunksize=ARROW_SLICE_ROWS):
            records = self._arrow_slice(batch, offset, ctx, rejects)
            if records:
                reply.lsn = self.lake.submit(records, wal_entry(records), ctx)
                reply.accepted += len(records)
                reply.steps += sum(r.trajectory["n_steps"] for r in records)
            offset += batch.num_rows
        if not reply.lsn:
            reply.lsn = self.lake.submit([], [], ctx)
        rejects.sort(key=lambda r: r.index)
        reply.rejects.extend(rejects)
        return reply

    @staticmethod
    def _arrow_slice(batch: Any, offset: int, ctx: Any, rejects: list[pb.Reject]
                     ) -> list[Record]:
        """The good rows of one slice as records, in the message's order (a later duplicate
        wins); a reject for each bad one."""
        got: list[tuple[int, Record]] = []
        res = normalize_batch(batch, ctx, DROP)
        got.extend((offset + row, rec) for row, rec in zip(res.rows, res.records, strict=True))
        for row, (raw, obj, why) in zip(res.rest, convert.ipc_rows(batch, res.rest),
                                        strict=True):
            if raw is None:
                rejects.append(pb.Reject(index=offset + row, field=why.field or "",
                                         reason=why.message))
                continue
            try:
                got.append((offset + row, normalize_line(raw, ctx) if obj is None
                            else normalize(obj, raw, ctx)))
            except InvalidArgument as e:
                rejects.append(pb.Reject(index=offset + row, field=e.field or "",
                                         reason=e.message, trajectory_id=_trajectory_id(raw)))
        got.sort(key=lambda x: x[0])
        return [rec for _, rec in got]


def _logged_failure(done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("a stream cut short: logging its last group failed: %s", done.exception())


def _trajectory_id(raw: bytes) -> str:
    tid = orjson.loads(raw).get("trajectory_id")
    return tid if isinstance(tid, str) else ""


@dataclass
class _StreamTotals:
    accepted: int = 0
    rejects: list[pb.Reject] = field(default_factory=list)
    lsn: int = 0


class ContextServicer(pb_grpc.ContextServiceServicer):
    def __init__(self, lake: Lake, cache: ContextService):
        self.lake, self.cache = lake, cache

    async def GetContext(self, request: pb.GetContextRequest,
                         context: Any) -> pb.GetContextResponse:
        """A vector query against a loaded index whose search is small is answered on the
        event loop, from memory (``context_now``); the others (a text to embed, a log
        position to wait for, an index to load or being re-fitted, a big search) on the
        thread pool."""
        now = self.context_now(request)
        return now if now is not None else await asyncio.to_thread(self._get_context, request)

    def context_now(self, request: pb.GetContextRequest) -> pb.GetContextResponse | None:
        """The response if it can be made from memory without waiting, else None."""
        if request.min_lsn > 0 or request.WhichOneof("query") != "vector":
            return None  # before parsing: the pool parses these once
        who = identity()
        answer = self.cache.answer_now(who.tenant, _query(request, who.agent))
        return None if answer is None else _context_response(answer)

    def _get_context(self, request: pb.GetContextRequest) -> pb.GetContextResponse:
        who = identity()
        query = _query(request, who.agent)
        self.cache.wait_indexed(request.min_lsn)  # refuses an lsn never logged
        return _context_response(self.cache.get_context(who.tenant, query))

    def ReportOutcome(self, request: pb.ReportOutcomeRequest,
                      context: Any) -> pb.ReportOutcomeResponse:
        if not request.context_id:
            raise InvalidArgument("context_id is empty: pass the one GetContext returned",
                                  field="context_id")
        has = request.HasField  # trajectory_id is not checked: a report may come before its
        got = self.cache.report(identity().tenant, request.context_id,  # run is committed
                                used=request.used if has("used") else None,
                                success=request.success if has("success") else None,
                                reward=request.reward if has("reward") else None,
                                trajectory_id=request.trajectory_id or None)
        return pb.ReportOutcomeResponse(lsn=self.lake.writer.lag["applied_lsn"]
                                        if self.lake.writer else 0, stored=got["stored"],
                                        hit_threshold=got["hit_threshold"])

    def GetTrajectory(self, request: pb.GetTrajectoryRequest,
                      context: Any) -> pb.GetTrajectoryResponse:
        reads.wait_visible(self.lake, request.min_lsn)
        version, row = reads.trajectory(self.lake, identity().tenant, request.trajectory_id,
                                        as_of=convert.ref(request.as_of),
                                        full_payloads=request.full_payloads)
        return pb.GetTrajectoryResponse(trajectory=convert.trajectory_to_pb(row),
                                        version=version.version)

    def ListTrajectories(self, request: pb.ListTrajectoriesRequest,
                         context: Any) -> pb.ListTrajectoriesResponse:
        if request.include_retracted:
            _needs("admin", "include_retracted", "retracted runs are never served to agents",
                   field="include_retracted")
        reads.wait_visible(self.lake, request.min_lsn)
        as_of, after = convert.ref(request.as_of), None
        if request.page_token:
            as_of, after = convert.parse_page_token(request.page_token)
        version, rows, more = reads.trajectories(
            self.lake, identity().tenant, _filter(request.filter, request.include_retracted),
            as_of=as_of, page_size=request.page_size, after=after)
        token = convert.page_token(version.version, rows[-1]["trajectory_id"]) if more else ""
        return pb.ListTrajectoriesResponse(
            trajectories=[convert.trajectory_to_pb(r) for r in rows], next_page_token=token,
            version=version.version)


ARROW_SLICE_ROWS = 8192  # trajectories of an IngestArrow message validated and logged at once
STREAM_GROUP = 512  # steps of one trajectory logged together within a stream
STREAM_HELD_STEPS = 4 * STREAM_GROUP  # the most steps a stream holds unlogged, and their
STREAM_HELD_BYTES = 32 << 20  # bytes (as sent): a stream of many trajectories, or big steps


def _query(request: pb.GetContextRequest, agent: str) -> Query:
    query = Query(k=request.k or 5, agent=request.agent or agent,
                  filters=_context_filters(request.filter) if request.HasField("filter")
                  else Filters())
    which = request.WhichOneof("query")
    if which == "text":
        query.text = request.text
    elif which == "vector":
        query.vector = np.array(request.vector.values, dtype=np.float32)  # 3 us, not 30
    else:
        raise InvalidArgument("set text (the task) or vector", field="query")
    return query


def _context_response(a: dict[str, Any]) -> pb.GetContextResponse:
    return pb.GetContextResponse(  # sub-messages as dicts: half the cost of message objects
        verdict={"label": a["verdict"], "reason": a["reason"],
                 "confidence": a["neighbors"][0]["similarity"] if a["neighbors"] else 0.0,
                 "cluster_id": (a["cluster"] or {}).get("id")},
        neighbours=[{"similarity": n["similarity"], "trajectory": {
            "trajectory_id": n["trajectory_id"], "task": n["task"], "success": n["success"],
            "reward": n["reward"], "agent": n["agent"], "agent_version": n["agent_version"]}}
            for n in a["neighbors"]],
        context=describe(a), context_id=a["context_id"],
        version=a["provenance"]["lake_version"], answer_json=answer_json(a))

# orjson (~15x faster than json on an answer), told to write what json.dumps(default=str)
# wrote: times and dataclasses as str(), float subclasses (numpy.float64) as numbers, other
# unknown types (numpy.float32, int64...) as str(), non-string keys as strings.
_ANSWER_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS)


def _json_default(value: Any) -> Any:
    return float(value) if isinstance(value, float) else str(value)


def answer_json(answer: dict[str, Any]) -> str:
    """GetContext's answer as JSON text (parses to what ``json.dumps(default=str)`` wrote;
    compact, UTF-8 instead of \\u escapes)."""
    return orjson.dumps(answer, default=_json_default, option=_ANSWER_OPTIONS).decode()


def _rejects(res: Any, offset: int, kept: list[int]) -> list[pb.Reject]:
    """The lake's rejects of a batch of steps that starts at ``offset`` (a stream's group):
    ``steps[i]`` of what the lake was given is step ``kept[i]`` of the batch, so ``index``
    and field path ``steps[offset + kept[i]]``."""
    out = []
    for r in res.rejected:
        if not r.location.startswith("steps["):
            out.append(pb.Reject(index=offset, field=r.field or "", reason=r.reason))
            continue
        index = offset + kept[int(r.location.removeprefix("steps[").removesuffix("]"))]
        out.append(pb.Reject(index=index, reason=r.reason, field=(r.field or "").replace(
            r.location, f"steps[{index}]", 1)))
    return out


def _context_filters(f: pb.Filter) -> Filters:
    """GetContext's filters; fields it cannot honour are refused, not ignored."""
    for name in ("model", "session_id"):
        if getattr(f, name):
            raise InvalidArgument(f"GetContext cannot filter on {name}; use agent, "
                                  "agent_version, success, min_reward, tags, since/until",
                                  field=f"filter.{name}")
    if f.status:
        raise InvalidArgument("GetContext cannot filter on status; use success=true",
                              field="filter.status")
    if f.HasField("success") and not f.success:
        raise InvalidArgument("GetContext serves successful or all runs: set success=true or "
                              "leave it unset", field="filter.success")
    return Filters(success_only=f.HasField("success") and f.success,
                   agent=f.agent or None, agent_version=f.agent_version or None,
                   min_reward=f.min_reward if f.HasField("min_reward") else None,
                   tags=tuple(f.tags),
                   since_us=f.since_us if f.HasField("since_us") else None,
                   until_us=f.until_us if f.HasField("until_us") else None)


def _filter(f: pb.Filter, include_retracted: bool) -> reads.TrajectoryFilter:
    statuses = [convert.status_name(s, f"filter.status[{i}]") for i, s in enumerate(f.status)]
    return reads.TrajectoryFilter(
        agent=f.agent, agent_version=f.agent_version, model=f.model, session_id=f.session_id,
        statuses=[s for s in statuses if s], success=f.success if f.HasField("success") else None,
        since_us=f.since_us if f.HasField("since_us") else None,
        until_us=f.until_us if f.HasField("until_us") else None,
        min_reward=f.min_reward if f.HasField("min_reward") else None, tags=list(f.tags),
        include_retracted=include_retracted)


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, lake: Lake, auth_mode: str, cache: ContextService):
        self.cache = cache
        self.lake, self.auth_mode = lake, auth_mode

    def Stats(self, request: pb.StatsRequest, context: Any) -> pb.StatsResponse:
        return pb.StatsResponse(**reads.stats(self.lake, identity().tenant), auth=self.auth_mode)

    def Versions(self, request: pb.VersionsRequest, context: Any) -> pb.VersionsResponse:
        tags, who = self._tags(), identity()
        everyone = OPERATOR in who.scopes
        return pb.VersionsResponse(versions=[
            convert.version_to_pb(v if everyone else _own_detail(v, who.tenant),
                                  tags.get(v.version, [])) for v in self.lake.versions()])

    def Tag(self, request: pb.TagRequest, context: Any) -> pb.TagResponse:
        if request.delete:
            _needs(OPERATOR, "removing a tag (delete)", "a tag keeps a version of every "
                   "tenant's data from a vacuum", field="delete")
            return pb.TagResponse(version=self._version(self.lake.untag(request.name)))
        if request.force:
            _needs(OPERATOR, "moving a tag (force)", "a tag names a version of every tenant's "
                   "data")
        version = self.lake.tag(request.name, convert.ref(request.ref), force=request.force)
        return pb.TagResponse(version=self._version(version))

    def Restore(self, request: pb.RestoreRequest, context: Any) -> pb.RestoreResponse:
        if not request.ref:
            raise InvalidArgument("ref is empty: name the version number or tag to restore "
                                  "(see Versions)", field="ref")
        _needs(OPERATOR, "Restore", "it rolls back every tenant's data")
        version = self.lake.restore(convert.ref(request.ref))
        return pb.RestoreResponse(version=self._version(version),
                                  restored=version.detail.get("restored", 0))

    def Recluster(self, request: pb.ReclusterRequest, context: Any) -> pb.ReclusterResponse:
        res = self.cache.recluster(identity().tenant)
        return pb.ReclusterResponse(clusters=res["clusters"], trajectories=res["rows"],
                                    version=res["version"] or
                                    self.lake.catalog.current().version)

    def Retract(self, request: pb.RetractRequest, context: Any) -> pb.RetractResponse:
        if not request.trajectory_ids:
            raise InvalidArgument("trajectory_ids is empty: name what to retract",
                                  field="trajectory_ids")
        res = self.cache.retract(identity().tenant, list(request.trajectory_ids),
                                 request.reason, purge=request.purge)
        return pb.RetractResponse(retracted=res["retracted"],
                                  version=self.lake.catalog.current().version)

    def _tags(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for name, v in self.lake.catalog.tags().items():
            out.setdefault(v, []).append(name)
        return out

    def _version(self, version: Any) -> pb.Version:
        return convert.version_to_pb(version, self._tags().get(version.version, []))


def _needs(scope: str, what: str, why: str, field: str | None = None) -> None:
    """A scope a request needs beyond its method's (``methods.SCOPES``, checked by
    ``AuthLayer``): what it asks decides, e.g. lake-wide changes need ``operator`` (``admin``
    manages one tenant's data)."""
    who = identity()
    if scope not in who.scopes:
        raise PermissionDenied(f"{what} needs the {scope!r} scope ({why}); token "
                               f"{who.token_id} of tenant {who.tenant!r} has "
                               f"{', '.join(sorted(who.scopes))}: ask the lake's operator, or "
                               f"use a token created with `lake token create --scopes "
                               f"{scope}`", field=field)


_TENANT_DETAIL = ("ingest", "replay", "retract")  # operations whose detail is tenants' data


def _own_detail(v: Version, tenant: str) -> Version:
    """A version as a tenant's admin sees it: its own counts of a commit (which may carry
    several tenants' writes), not the others' nor their sum; another tenant's detail (a
    retraction's reason) is left out; a lake-wide operation's (compact, restore) is shown."""
    if "tenants" in v.detail:
        own = v.detail["tenants"].get(tenant)
        return dataclasses.replace(v, detail={"tenant": tenant, **own} if own else {})
    owner = v.detail.get("tenant", None if v.operation in _TENANT_DETAIL else tenant)
    return v if owner == tenant else dataclasses.replace(v, detail={})


def add_servicers(register: Callable[[Callable, Any], None], lake: Lake, auth_mode: str,
                  cache: ContextService) -> None:
    """Register the lake's three services: ``register(add_XServicer_to_server, servicer)``."""
    _one_blas_thread()
    register(pb_grpc.add_IngestServiceServicer_to_server, IngestServicer(lake))
    register(pb_grpc.add_ContextServiceServicer_to_server, ContextServicer(lake, cache))
    register(pb_grpc.add_AdminServiceServicer_to_server, AdminServicer(lake, auth_mode, cache))


def _one_blas_thread() -> None:
    """Process-wide: numpy's BLAS runs on the calling thread only. A lookup is one
    matrix-vector product per call on a server whose own threads already share the cores;
    BLAS threads would only add hand-offs, ruinous on a busy machine (2,000 x 384 floats on a
    loaded 2-core host: ~4 ms with 2 OpenBLAS threads, ~0.14 ms with one)."""
    from threadpoolctl import threadpool_limits  # ships with scikit-learn

    threadpool_limits(1, user_api="blas")
