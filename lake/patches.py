"""Live trajectories: start, append steps, finish, as durable patches.

An agent streams its run: ``start`` (the task and metadata, status running), any number of
``steps`` batches (each step numbered by the client with ``index``), then ``finish``
(status and outcome). Each call is validated, logged in the write-ahead log and
acknowledged like any ingest. At commit, the patches of a trajectory are applied in log
order onto the stored trajectory and the result is written through the normal update
path.

Spans (``spans``, what the OTLP receiver sends) are the other live shape: steps that
arrive in any order, across calls, each with its ``step_id`` (the span id), stored in
start-time order and numbered at commit. A step may carry ``"lake.trajectory": {field:
[priority, value]}`` (kept in its attributes): the trajectory takes each field from the
step with the lowest priority that gives it (then the earliest, then the lowest step id),
so the result depends on the set of spans, never on their arrival order. A trajectory
without a ``status`` from its steps is ``running``; without a ``task``,
``SPANS_PLACEHOLDER_TASK`` stands in until a span gives one. The times are one pair: the
``ended_at`` of the step that gives ``started_at`` (a step's own pair is checked when logged),
never another step's end, which may be earlier; without a start, the steps' first start
stands in, without an end their last end if not before the start. A span's attribute value
over ``payload_limit`` goes to ``payloads`` like a large input, a preview left in its place.

Idempotent by construction: a step whose index is already stored is skipped (a retry
re-sends the same indexes), a second start only fills fields still empty, a finish sets the
same values again; the row hash is computed from the resulting content, so replaying a
patch that is already applied changes nothing. What would be dropped that way is refused
before logging (``live.LiveRuns``): a start of another run on the id, another step at a
used index, and on a finished trajectory (final) a finish that changes its outcome and
steps it does not have yet; retries pass, and a start fills none of a finished run's fields.

A commit that only adds steps to a stored live trajectory appends just the new steps
(``extend``), without reading the stored ones: only their indexes and token and cost
columns. So the row hash must be extendable: ``p-<fields>.<steps>`` where ``<steps>`` is
the sum (mod 2**128) of a hash of each step row, which does not depend on the order the
steps came in or how they were grouped into commits, and ``<fields>`` hashes the other
columns with that sum. A stored hash of another form (a whole record's, or an older
lake's) is extended by rebuilding the trajectory from all its steps once (``materialize``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from .errors import InvalidArgument
from .records import _MAX_I63 as MAX_INT64
from .records import Context, Record, _bool, _float, _scores, _str, _ts, normalize, progress
from .records import _steps as normalize_steps
from .schema import STATUSES

log = logging.getLogger(__name__)
KINDS = ("start", "steps", "finish", "spans")
HINTS = "lake.trajectory"  # the step attribute with a span's trajectory fields
HINT_FIELDS = ("task", "agent", "agent_version", "model", "session_id", "on_behalf_of",
               "status", "started_at", "ended_at", "success", "reward", "scores", "meta")
SPANS_PLACEHOLDER_TASK = "(no task yet: waiting for the trace's root or agent span)"
_PLACEHOLDER_TASK = "-"  # steps and finish patches are validated inside a stand-in record
FINISH_FIELDS = ("status", "success", "reward", "scores", "ended_at", "tokens_in",
                 "tokens_out", "cost_usd")
TOTALS = (("tokens_in", int), ("tokens_out", int), ("cost_usd", float))  # sums over steps
STORED_STEP_COLUMNS = ["trajectory_id", "index", *(c for c, _ in TOTALS)]  # what ``extend``
# reads of the stored steps


@dataclass(slots=True)
class Patch:
    kind: str  # start | steps | finish
    tenant: str
    trajectory_id: str
    record: Record  # the validated content (finish: around a stand-in task; steps: the
    # steps, with a trajectory row of only tenant, trajectory_id, task, status and n_steps)
    fields: frozenset[str]  # what the patch sets (finish: the fields given)
    hints: dict[str, dict] | None = None  # spans: step_id -> its trajectory hints (parsed)

    @property
    def key(self) -> str:
        return self.trajectory_id


def parse(obj: dict[str, Any], raw: bytes, ctx: Context) -> Patch:
    """Validate one patch ``{"op": start|steps|finish, "trajectory_id", ...}``."""
    op = obj.get("op")
    if op not in KINDS:
        raise InvalidArgument(f"op {op!r} is not one of {', '.join(KINDS)}", field="op")
    tid = obj.get("trajectory_id")
    if not isinstance(tid, str) or not tid.strip():
        raise InvalidArgument("trajectory_id is missing: live trajectories need the client's "
                              "id (it makes retries safe)", field="trajectory_id")
    body = {k: v for k, v in obj.items() if k != "op"}
    if op == "start":
        body.setdefault("status", "running")
        if body.get("steps"):
            _check_indexes(body["steps"])
        return Patch(op, ctx.tenant, tid, normalize(body, raw, ctx), frozenset(body))
    if op == "steps":
        steps = body.get("steps")
        if not isinstance(steps, list) or not steps:
            raise InvalidArgument("steps is empty: send at least one step", field="steps")
        _check_indexes(steps)
        # Only the steps (and their payloads) of a steps patch are used (``materialize``),
        # so they are validated alone: the same checks and errors as inside a stand-in
        # record, without building its trajectory row (the cost of a one-step append).
        return steps_patch(tid, *normalize_steps(steps, tid, ctx), ctx)
    if op == "spans":
        return _parse_spans(body, tid, raw, ctx)
    outcome = body.get("outcome") if isinstance(body.get("outcome"), dict) else {}
    if body.get("status") is None and outcome.get("success") is None \
            and body.get("success") is None:
        raise InvalidArgument("finish needs status (succeeded, failed, abandoned) or "
                              "outcome.success", field="status")
    unknown = set(body) - set(FINISH_FIELDS) - {"trajectory_id", "outcome"}
    if unknown:
        raise InvalidArgument(f"finish takes {', '.join(FINISH_FIELDS)} and outcome, not "
                              f"{sorted(unknown)}", field=sorted(unknown)[0])
    rec = normalize({"task": _PLACEHOLDER_TASK, **body}, raw, ctx)
    given = {k for k in body if k != "trajectory_id"}
    if "outcome" in body and isinstance(body["outcome"], dict):
        given |= set(body["outcome"])
    return Patch(op, ctx.tenant, tid, rec, frozenset(given | {"status"}))


def steps_patch(tid: str, rows: list[dict[str, Any]], payloads: list[dict[str, Any]],
                ctx: Context) -> Patch:
    """A steps patch of validated step rows (``records._steps``)."""
    rec = Record({"tenant": ctx.tenant, "trajectory_id": tid, "task": _PLACEHOLDER_TASK,
                  "status": "running", "n_steps": len(rows)}, rows, payloads)
    return Patch("steps", ctx.tenant, tid, rec, frozenset(("steps",)))


def _parse_spans(body: dict[str, Any], tid: str, raw: bytes, ctx: Context) -> Patch:
    steps = body.get("steps")
    if not isinstance(steps, list) or not steps:
        raise InvalidArgument("steps is empty: send at least one span", field="steps")
    given: dict[str, dict] = {}
    for i, s in enumerate(steps):
        if not isinstance(s, dict) or not isinstance(s.get("step_id"), str) \
                or not s["step_id"]:
            raise InvalidArgument("a span step needs its step_id (the span id: it makes a "
                                  "re-export a no-op)", field=f"steps[{i}].step_id")
        if s.get("index") is not None:
            raise InvalidArgument("span steps are numbered by start time at commit: leave "
                                  "index out", field=f"steps[{i}].index")
        if isinstance(s.get("attributes"), dict) and HINTS in s["attributes"]:
            raise InvalidArgument(f"attribute {HINTS!r} is reserved for the lake's trajectory "
                                  "hints: rename it", field=f"steps[{i}].attributes.{HINTS}")
        hints = s.get(HINTS)
        if hints is not None:
            _check_hints(hints, f"steps[{i}].{HINTS}")
            given[s["step_id"]] = hints
    rows, payloads = normalize_steps(steps, tid, ctx)
    for row in rows:
        if row["attributes"] is not None and len(row["attributes"]) * 4 > ctx.payload_limit:
            row["attributes"] = _offload(row["attributes"], payloads, ctx)
    rec = Record({"tenant": ctx.tenant, "trajectory_id": tid, "task": _PLACEHOLDER_TASK,
                  "status": "running", "n_steps": len(rows),
                  "ingested_at": ctx.ingested_at_us}, rows, payloads)
    return Patch("spans", ctx.tenant, tid, rec, frozenset(("steps",)), given)


def _offload(attributes: str, payloads: list[dict], ctx: Context) -> str:
    """A span's attributes (JSON text) with each value over ``payload_limit`` bytes (its
    text, or JSON text) stored once in ``payloads`` and replaced by a preview and a marker
    naming the payload, as an input or output is (the hints stay: the commit reads them)."""
    attrs = orjson.loads(attributes)
    cut = False
    for key, value in attrs.items():
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if key == HINTS or len(text) * 4 <= ctx.payload_limit:
            continue
        data = text.encode()
        if len(data) > ctx.payload_limit:
            sha = hashlib.sha256(data).hexdigest()
            payloads.append({"tenant": ctx.tenant, "sha256": sha, "size": len(data),
                             "data": text})
            attrs[key] = (f"{text[:ctx.preview_chars]}…[{len(data)} bytes in all: the whole "
                          f"value is payloads.sha256 = {sha}]")
            cut = True
    return orjson.dumps(attrs).decode() if cut else attributes


def _check_hints(hints: Any, path: str) -> None:
    """Each hint is ``[priority, value]``, its value valid as that trajectory field (read by
    the same readers as a record's fields, so the trajectory built from them at commit
    never fails)."""
    if not isinstance(hints, dict):
        raise InvalidArgument(f"must be an object field -> [priority, value], got "
                              f"{type(hints).__name__}", field=path)
    for k, v in hints.items():
        check = _HINT_CHECKS.get(k)
        if check is None:
            raise InvalidArgument(f"{k!r} is not a trajectory field a span can set; use one "
                                  f"of {', '.join(HINT_FIELDS)}", field=f"{path}.{k}")
        if not (isinstance(v, list) and len(v) == 2 and type(v[0]) is int):
            raise InvalidArgument("must be [priority (a whole number), value]",
                                  field=f"{path}.{k}")
        check({k: v[1]}, k, f"{path}.{k}[1]")
    start, end = (_ts({k: hints[k][1]}, k, path) if k in hints else None
                  for k in ("started_at", "ended_at"))  # each valid: checked above
    if start is not None and end is not None and end < start:
        raise InvalidArgument(f"ended_at {hints['ended_at'][1]!r:.40} is before started_at "
                              f"{hints['started_at'][1]!r:.40}: a span ends after it starts",
                              field=f"{path}.ended_at[1]")


def _status(obj: dict, key: str, path: str) -> None:
    if obj[key] is not None and obj[key] not in STATUSES:
        raise InvalidArgument(f"status {obj[key]!r} is not one of {', '.join(STATUSES)}",
                              field=path)


def _meta_hint(obj: dict, key: str, path: str) -> None:
    if obj[key] is not None and not isinstance(obj[key], dict):
        raise InvalidArgument("must be an object", field=path)


_HINT_CHECKS = {**dict.fromkeys(("task", "agent", "agent_version", "model", "session_id",
                                 "on_behalf_of"), _str),
                "status": _status, "started_at": _ts, "ended_at": _ts, "success": _bool,
                "reward": _float, "scores": lambda o, k, p: _scores(o[k], p),
                "meta": _meta_hint}
assert set(_HINT_CHECKS) == set(HINT_FIELDS)


def _trajectory(tid: str, fields: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A trajectory row (no steps) from span-given fields (checked when logged)."""
    obj = {**fields, "trajectory_id": tid}
    if not (fields.get("task") or "").strip():
        obj["task"] = SPANS_PLACEHOLDER_TASK
    if fields.get("status") is None and fields.get("success") is None:
        obj["status"] = "running"
    while True:
        try:
            return normalize(obj, b"", ctx).trajectory
        except InvalidArgument as e:  # each hint was checked when logged, and the times
            # are one span's pair: only spans logged by an older lake, or a rule changed
            # since, get here. The writer must not stop on acknowledged spans: the field
            # is dropped (it stays in its span's attributes), the rest is stored.
            if e.field not in obj or e.field in ("task", "trajectory_id"):
                raise
            log.error("trajectory %r (tenant %r): its spans give %s = %.80r, which the "
                      "lake's rule for trajectories refuses at commit (%s): the trajectory "
                      "and all its spans are stored, %s left empty (the value stays in the "
                      "span's %r attribute). Spans are checked when logged, so please "
                      "report this with the trajectory id", tid, ctx.tenant, e.field,
                      obj[e.field], e.message, e.field, HINTS)
            del obj[e.field]


def _check_indexes(steps: Any) -> None:
    if isinstance(steps, list):
        for i, s in enumerate(steps):
            if isinstance(s, dict) and s.get("index") is None:
                raise InvalidArgument("a live step needs its index (the client numbers steps "
                                      "0, 1, 2, ... so that a retry is recognised)",
                                      field=f"steps[{i}].index")


def materialize(stored: dict[str, Any] | None, stored_steps: list[dict[str, Any]],
                items: list[Record | Patch]) -> Record | None:
    """The trajectory after ``items`` (records and patches, in log order) on the stored one,
    with all its steps (the writer replaces the stored ones).

    Returns None when no start or whole record ever gave the trajectory its task (steps for
    a trajectory never started are kept waiting: see ``Writer``)."""
    if any(isinstance(i, Patch) and i.kind == "spans" for i in items):
        return _materialize_spans(stored_steps, [i for i in items if isinstance(i, Patch)
                                                 and i.kind == "spans"])
    traj = dict(stored) if stored else None
    steps = {s["index"]: dict(s) for s in stored_steps}
    payloads: list[dict] = []
    for item in items:
        if isinstance(item, Record):
            if traj is None or item.progress >= progress(traj["n_steps"], traj["status"]):
                traj, steps = dict(item.trajectory), {s["index"]: s for s in item.steps}
                payloads += item.payloads
            continue
        traj = _apply(traj, item)
        if traj is None:
            return None
        for s in item.record.steps:
            steps.setdefault(s["index"], s)
        payloads += item.record.payloads
    if traj is None:
        return None
    ordered = [steps[i] for i in sorted(steps)]
    traj["n_steps"] = len(ordered)
    for col, cast in TOTALS:
        vals = [s[col] for s in ordered if s[col] is not None]
        if vals:
            traj[col] = _total(traj, col, cast(sum(vals)))
    traj["_record_hash"] = _row_hash(traj, _steps_digest(ordered))
    return Record(traj, ordered, payloads)


def appendable(stored: dict[str, Any] | None, items: list[Record | Patch]) -> bool:
    """Whether ``extend`` can apply ``items`` to the stored trajectory: only start, steps
    and finish patches, onto a row whose hash carries its steps' digest."""
    return (stored is not None and _stored_digest(stored["_record_hash"]) is not None
            and all(isinstance(i, Patch) and i.kind != "spans" for i in items))


def extend(stored: dict[str, Any], stored_steps: pa.Table, items: list[Patch]) -> Record:
    """``materialize`` for an ``appendable`` commit, without the stored steps' content:
    ``stored_steps`` holds their ``STORED_STEP_COLUMNS`` (the indexes and what the totals
    sum). The record's steps are only the new ones, for the writer to append; its row is
    what ``materialize`` would make of the same content, hash included."""
    digest = _stored_digest(stored["_record_hash"])
    assert digest is not None, "extend needs an appendable trajectory"
    stored_steps = stored_steps.sort_by("index")
    indexes = stored_steps["index"].to_pylist()
    known = set(indexes)
    traj: dict[str, Any] = dict(stored)
    new: dict[int, dict[str, Any]] = {}
    payloads: list[dict] = []
    for item in items:
        traj = _apply(traj, item) or traj  # never None: the trajectory is stored
        for s in item.record.steps:
            if s["index"] not in known and s["index"] not in new:
                new[s["index"]] = s
        payloads += item.record.payloads
    ordered = [new[i] for i in sorted(new)]
    traj["n_steps"] = len(known) + len(ordered)
    after = not ordered or not indexes or ordered[0]["index"] > indexes[-1]
    for col, cast in TOTALS:  # as materialize: in index order, so the same float sum
        vals = stored_steps[col].to_pylist()
        if after:  # the common case: the new steps come after the stored ones
            vals += [s[col] for s in ordered]
        else:
            pairs = sorted([*zip(indexes, vals, strict=True),
                            *((s["index"], s[col]) for s in ordered)])
            vals = [v for _, v in pairs]
        vals = [v for v in vals if v is not None]
        if vals:
            traj[col] = _total(traj, col, cast(sum(vals)))
    traj["_record_hash"] = _row_hash(traj, (digest + _steps_digest(ordered)) % _MOD)
    return Record(traj, ordered, payloads)


def _apply(traj: dict[str, Any] | None, item: Patch) -> dict[str, Any] | None:
    """The trajectory row after a start or finish patch (a steps patch leaves it as it is);
    None while no start gave it."""
    rec = item.record
    if item.kind == "start":
        if traj is None:
            return dict(rec.trajectory)
        if traj.get("status") != "running":  # finished: final (its steps were checked when
            return traj  # logged, ``live.LiveRuns``)
        for k, v in rec.trajectory.items():  # a retried or late start fills only what is
            if traj.get(k) is None and v is not None:  # still empty
                traj[k] = v
    elif traj is not None and item.kind == "finish":
        for k in FINISH_FIELDS:
            if k in item.fields:  # outcome.* names are in fields too
                traj[k] = rec.trajectory[k]
    return traj


def _total(traj: dict[str, Any], col: str, total: Any) -> Any:
    """A steps' total; one past int64 (each step fits, their sum may not) is left unknown
    rather than stop the writer."""
    if isinstance(total, int) and total > MAX_INT64:
        log.error("trajectory %r: the steps' %s add up to %d, more than int64 holds: stored "
                  "as null", traj["trajectory_id"], col, total)
        return None
    return total


def _materialize_spans(stored_steps: list[dict[str, Any]], items: list[Patch]) -> Record:
    """Stored span steps plus the new ones (a span already stored is kept as it is), in
    start-time order, renumbered; the trajectory from the steps' field hints."""
    steps = {s["step_id"]: s for s in stored_steps}
    given: dict[str, dict] = {}  # the new steps' hints, parsed when they were logged
    payloads: list[dict] = []
    for item in items:
        for s in item.record.steps:
            sid = s["step_id"]
            if sid not in steps:
                steps[sid] = s
                if item.hints and sid in item.hints:
                    given[sid] = item.hints[sid]
        payloads += item.record.payloads
    ordered = sorted(steps.values(), key=lambda s: (s["started_at"] is None,
                                                    s["started_at"] or 0, s["step_id"]))
    ordered = [s if s["index"] == i else {**s, "index": i} for i, s in enumerate(ordered)]
    best: dict[str, tuple] = {}
    end = None  # the times are one span's pair: the end of the span giving started_at (an
    for s in ordered:  # end from another span may be before that start)
        hints = given.get(s["step_id"])
        if hints is None:  # a span stored by an earlier commit: its hints are in its JSON
            if s["attributes"] is None or HINTS not in s["attributes"]:
                continue  # (a cheap test on the text before parsing it)
            hints = orjson.loads(s["attributes"]).get(HINTS)
            if not isinstance(hints, dict):
                continue  # validated when logged; a stored step from elsewhere is no hint
        for k, (prio, value) in hints.items():
            rank = (prio, s["index"])
            if value is not None and k != "ended_at" and (k not in best or rank < best[k][0]):
                best[k] = (rank, value)
                if k == "started_at":
                    end = hints.get("ended_at", (None, None))[1]
    if end is not None:
        best["ended_at"] = (best["started_at"][0], end)
    last = items[-1].record.trajectory
    ctx = Context(last["tenant"], last["ingested_at"])
    traj = _trajectory(last["trajectory_id"], {k: v for k, (_, v) in best.items()}, ctx)
    _span_times(traj, ordered)
    traj["n_steps"] = len(ordered)
    for col, cast in TOTALS:
        vals = [s[col] for s in ordered if s[col] is not None]
        traj[col] = _total(traj, col, cast(sum(vals))) if vals else None
    traj["_record_hash"] = _row_hash(traj, _steps_digest(ordered))
    return Record(traj, ordered, payloads)


def _span_times(traj: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    """Times no span hinted, from the steps: without an anchor span (the trace's root is
    elsewhere) the first start; without an end (the anchor's was 0, unknown: not ended when
    exported) the last end of the steps, if not before the start (else none)."""
    if traj["started_at"] is None and steps and steps[0]["started_at"] is not None:
        traj["started_at"] = steps[0]["started_at"]  # in start-time order
    if traj["ended_at"] is None:
        ends = [s["started_at"] + round(s["duration_ms"] * 1000) for s in steps
                if s["started_at"] is not None and s["duration_ms"] is not None]
        if ends and (traj["started_at"] is None or max(ends) >= traj["started_at"]):
            traj["ended_at"] = max(ends)


_MOD = 1 << 128
_UNHASHED = frozenset(("_record_hash", "ingested_at", "retracted_at", "retract_reason"))
_HASH_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _steps_digest(steps: list[dict[str, Any]]) -> int:
    """The sum of the steps' hashes: the same for the same steps, in any order or grouping
    (each hashed once, when it is new: ``extend`` adds the new steps' sum to the stored)."""
    total = 0
    for s in steps:
        h = hashlib.blake2b(orjson.dumps(s, option=_HASH_OPTIONS, default=str),
                            digest_size=16).digest()
        total += int.from_bytes(h, "big")
    return total % _MOD


def _row_hash(traj: dict[str, Any], digest: int) -> str:
    """``p-<fields>.<steps>``: the trajectory's columns (but the hash, ``ingested_at`` and
    a retraction, which an update carries over) hashed with its steps' digest, then the
    digest itself (``_stored_digest``)."""
    body = {k: v for k, v in traj.items() if k not in _UNHASHED}
    doc = orjson.dumps([body, digest.to_bytes(16, "big").hex()], option=_HASH_OPTIONS,
                       default=str)
    return f"p-{hashlib.blake2b(doc, digest_size=12).hexdigest()}.{digest:032x}"


def _stored_digest(row_hash: str | None) -> int | None:
    """The steps' digest a ``_row_hash`` carries; None for a hash of another form."""
    if not row_hash or not row_hash.startswith("p-") or len(row_hash) != 59 \
            or row_hash[26] != ".":
        return None
    try:
        return int(row_hash[27:], 16)
    except ValueError:
        return None
