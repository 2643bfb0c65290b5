"""Validate one trajectory in the interchange format and turn it into lake rows.

The interchange format (documented in ``docs/format.md``) is one JSON object per
trajectory with its steps inline. ``normalize`` is the single gate every record passes,
whatever door it came through (JSONL, Parquet, Arrow, gRPC, OTLP). It either returns a
``Record`` with rows for ``trajectories``, ``steps`` and ``payloads``, or raises
``InvalidArgument`` naming the field path and the fix. It is deterministic given the raw
bytes and the context, so a write-ahead-log replay rebuilds exactly the same rows.

Unknown fields are never dropped: at trajectory level they go into ``meta``, at step level
into ``attributes`` (under their dotted name, e.g. ``outcome.judge``).
"""

from __future__ import annotations

import hashlib
import math
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .errors import InvalidArgument
from .schema import STATUSES

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_US = 253402300799 * 1_000_000  # 9999-12-31T23:59:59Z
_MAX_I31, _MAX_I63 = (1 << 31) - 1, (1 << 63) - 1
_MAX_FLOAT = sys.float_info.max  # 0.0 <= x <= _MAX_FLOAT: finite and non-negative
_STATUS_RANK = {"running": 0, "abandoned": 1, "failed": 1, "succeeded": 1}

TRAJECTORY_FIELDS = frozenset(
    "trajectory_id task agent agent_version model session_id on_behalf_of parent_id "
    "fork_step status started_at ended_at outcome tokens_in tokens_out cost_usd tags meta "
    "expires_at steps tenant success reward scores".split()
)
OUTCOME_FIELDS = frozenset(("success", "reward", "scores"))
STEP_FIELDS = frozenset(
    "index step_id parent_step_id kind name input output error actor started_at "
    "duration_ms tokens_in tokens_out cost_usd attributes".split()
)
# Accepted alternative names: alias -> canonical step field (documented in docs/format.md).
STEP_ALIASES = {
    "latency_ms": "duration_ms",
    "tokens_prompt": "tokens_in",
    "prompt_tokens": "tokens_in",
    "input_tokens": "tokens_in",
    "tokens_completion": "tokens_out",
    "completion_tokens": "tokens_out",
    "output_tokens": "tokens_out",
}


@dataclass(frozen=True, slots=True)
class Context:
    """What the door knows that the record does not: who, when, limits."""

    tenant: str
    ingested_at_us: int
    payload_limit: int = 65536
    preview_chars: int = 1024


@dataclass(slots=True)
class Record:
    trajectory: dict[str, Any]
    steps: list[dict[str, Any]]  # row dicts, or an Arrow table (a slice of ``source``)
    payloads: list[dict[str, Any]]
    # steps validated as Arrow: (the table they are a slice of, the slice's offset), so the
    # writer stores neighbouring records' steps as one slice instead of copying them
    source: tuple[Any, int] | None = None

    @property
    def key(self) -> str:
        return self.trajectory["trajectory_id"]

    @property
    def progress(self) -> tuple[int, int]:
        """Ordering used to decide whether a new version replaces a stored one."""
        return progress(self.trajectory["n_steps"], self.trajectory["status"])


def progress(n_steps: int, status: str) -> tuple[int, int]:
    return (n_steps, _STATUS_RANK.get(status, 0))


def normalize_task(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def task_hash(text: str) -> str:
    return hashlib.sha256(normalize_task(text).encode()).hexdigest()[:16]


def now_us() -> int:
    return (datetime.now(UTC) - _EPOCH) // _US


_US = datetime.resolution  # timedelta(microseconds=1)


def normalize_line(raw: bytes, ctx: Context) -> Record:
    """Parse one JSON line and normalize it (the WAL replay path uses this too)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidArgument(_not_json(raw, e)) from e
    return normalize(obj, raw, ctx)


def _not_json(raw: bytes, e: Exception) -> str:
    """Why a line is no JSON, and what to do: a byte that is not UTF-8 and a byte order
    mark are named as such (they read as JSON mistakes that are not there)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return ("the line starts with a UTF-8 byte order mark (BOM; files joined with cat?): "
                "remove it (only a file's first line may carry one)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as u:
        return (f"the line is not UTF-8 (byte 0x{raw[u.start]:02x} at column {u.start + 1}): "
                "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > NEW")
    return f"not valid JSON ({e}); each line must hold one JSON object"


def normalize(obj: Any, raw: bytes, ctx: Context) -> Record:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"a trajectory must be a JSON object, got {_kind(obj)}", field="$")
    rhash = hashlib.blake2b(raw, digest_size=12).hexdigest()
    head = head_fields(obj, ctx, rhash)
    steps, payloads = _steps(obj.get("steps"), head.trajectory_id, ctx)

    def step_values(key: str) -> list:
        return [s[key] for s in steps if s[key] is not None]

    return Record(trajectory_row(obj, head, ctx, len(steps), step_values, rhash), steps, payloads)


@dataclass(slots=True)
class Head:
    """A record's fields checked before its steps (in this order: the first error wins)."""

    trajectory_id: str
    task: str
    outcome: dict
    success: bool | None
    reward: float | None
    scores: list[tuple[str, float]] | None
    status: str


def head_fields(obj: dict, ctx: Context, rhash: str) -> Head:
    """Check the tenant, task, id, outcome and status of a record (``rhash``: the record
    hash, whose ``h-`` form is the id of a record without one)."""
    tenant = obj.get("tenant")
    if tenant is not None and tenant != ctx.tenant:
        raise InvalidArgument(
            f"tenant {tenant!r} in the record differs from the ingest tenant {ctx.tenant!r}; "
            "drop the field or ingest with that tenant", field="tenant")
    task = _str(obj, "task", "task")
    if task is None or not task.strip():
        raise InvalidArgument("task is missing or empty; every trajectory needs its task text",
                              field="task")
    tid = _str(obj, "trajectory_id", "trajectory_id")
    if tid is None:
        tid = "h-" + rhash  # content-derived: re-ingesting the same line is idempotent
    elif not tid.strip():
        raise InvalidArgument("trajectory_id is empty; give a stable id or omit the field",
                              field="trajectory_id")
    outcome = obj.get("outcome")
    if outcome is None:
        outcome = {}
    elif not isinstance(outcome, dict):
        raise InvalidArgument(f"outcome must be an object, got {_kind(outcome)}", field="outcome")
    success = _bool(outcome, "success", "outcome.success")
    if success is None:
        success = _bool(obj, "success", "success")
    reward = _float(outcome, "reward", "outcome.reward")
    if reward is None:
        reward = _float(obj, "reward", "reward")
    scores = (_scores(outcome["scores"], "outcome.scores") if "scores" in outcome
              else _scores(obj.get("scores"), "scores"))
    status = _str(obj, "status", "status")
    if status is None:
        status = "running" if success is None else ("succeeded" if success else "failed")
    elif status not in STATUSES:
        raise InvalidArgument(f"status {status!r} is not one of {', '.join(STATUSES)}",
                              field="status")
    return Head(tid, task, outcome, success, reward, scores, status)


def trajectory_row(obj: dict, head: Head, ctx: Context, n_steps: int,
                   step_values: Callable[[str], list], rhash: str) -> dict[str, Any]:
    """The ``trajectories`` row of a record whose head and steps are checked; the fields
    checked after the steps. ``step_values(key)``: the steps' non-null values of ``key``."""
    meta = _meta(obj, head.outcome)
    started, ended = _ts(obj, "started_at", "started_at"), _ts(obj, "ended_at", "ended_at")
    if started is not None and ended is not None and ended < started:
        raise InvalidArgument(f"{obj['ended_at']!r:.40} is before started_at "
                              f"{obj['started_at']!r:.40}: a run ends after it starts (check "
                              "the two fields and their time zones)", field="ended_at")
    return {
        "tenant": ctx.tenant,
        "trajectory_id": head.trajectory_id,
        "task": head.task,
        "task_hash": task_hash(head.task),
        "agent": _str(obj, "agent", "agent"),
        "agent_version": _str(obj, "agent_version", "agent_version"),
        "model": _str(obj, "model", "model"),
        "session_id": _str(obj, "session_id", "session_id"),
        "on_behalf_of": _str(obj, "on_behalf_of", "on_behalf_of"),
        "parent_id": _str(obj, "parent_id", "parent_id"),
        "fork_step": _int(obj, "fork_step", "fork_step", bits=31),
        "status": head.status,
        "started_at": started,
        "ended_at": ended,
        "success": head.success,
        "reward": head.reward,
        "scores": head.scores,
        "n_steps": n_steps,
        "tokens_in": _total(obj, "tokens_in", step_values, _int),
        "tokens_out": _total(obj, "tokens_out", step_values, _int),
        "cost_usd": _total(obj, "cost_usd", step_values, _float),
        "tags": _tags(obj.get("tags")),
        "meta": orjson.dumps(meta).decode() if meta else None,
        "ingested_at": ctx.ingested_at_us,
        "expires_at": _ts(obj, "expires_at", "expires_at"),
        "retracted_at": None,  # set only by `retract`; an update keeps the stored value
        "retract_reason": None,
        "_record_hash": rhash,
    }


# -- steps --------------------------------------------------------------------------------

def _steps(value: Any, tid: str, ctx: Context) -> tuple[list[dict], list[dict]]:
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise InvalidArgument(f"steps must be a list of objects, got {_kind(value)}", field="steps")
    seen: dict[int, int] = {}
    rows: list[dict] = []
    payloads: list[dict] = []
    for pos, step in enumerate(value):
        if not isinstance(step, dict):
            raise InvalidArgument(f"a step must be an object, got {_kind(step)}",
                                  field=f"steps[{pos}]")
        index = step.get("index")
        if type(index) is not int or not 0 <= index <= _MAX_I31:  # else: the checked reader
            index = _int(step, "index", f"steps[{pos}].index", bits=31)
            if index is None:
                index = pos
        if index in seen:
            raise InvalidArgument(
                f"index {index} is already used by steps[{seen[index]}]; step indexes must be "
                "unique within a trajectory", field=f"steps[{pos}].index")
        seen[index] = pos
        rows.append(_step(step, pos, index, tid, ctx, payloads))
    return rows, payloads


def _step(step: dict, pos: int, index: int, tid: str, ctx: Context, payloads: list) -> dict:
    # The hot path of every ingest. Values of the common type are taken as they are; any
    # other value goes through its checked reader (``_str``, ``_int``...), which converts it
    # or raises the error naming ``steps[pos].<field>``. Fields are read in a fixed order,
    # so the first bad field is the one reported.
    get = step.get
    kind = get("kind")
    if type(kind) is not str:
        kind = _str(step, "kind", f"steps[{pos}].kind")
    if not kind:
        raise InvalidArgument("kind is missing; use llm, tool, user, observation or error",
                              field=f"steps[{pos}].kind")
    attrs = get("attributes")
    if attrs is None:
        attrs = {}
    elif not isinstance(attrs, dict):
        raise InvalidArgument(f"attributes must be an object, got {_kind(attrs)}",
                              field=f"steps[{pos}].attributes")
    else:
        attrs = dict(attrs)
    vals: dict[str, Any] | None = None
    src: dict[str, str] = {}  # canonical field -> the alias its value came from (for errors)
    for key, val in step.items():
        if key in STEP_FIELDS:
            continue
        canon = STEP_ALIASES.get(key)
        if canon is not None and get(canon) is None and (vals is None or canon not in vals):
            if vals is None:
                vals = {}
            vals[canon] = val
            src[canon] = key
        elif key in attrs:
            keep_field(attrs, key, val)
        else:
            attrs[key] = val
    output = get("output")
    if output is not None and type(output) is not str:
        output = _text(step, "output", f"steps[{pos}].output")
    error = get("error")
    if error is not None and type(error) is not str:
        error = _text(step, "error", f"steps[{pos}].error")
    if error is None and get("is_error") is True:
        error = output if output else "error"
    step_id = get("step_id")
    if step_id is not None and type(step_id) is not str:
        step_id = _str(step, "step_id", f"steps[{pos}].step_id")
    parent_step_id = get("parent_step_id")
    if parent_step_id is not None and type(parent_step_id) is not str:
        parent_step_id = _str(step, "parent_step_id", f"steps[{pos}].parent_step_id")
    name = get("name")
    if name is not None and type(name) is not str:
        name = _str(step, "name", f"steps[{pos}].name")
    input_ = get("input")
    if input_ is not None and type(input_) is not str:
        input_ = _text(step, "input", f"steps[{pos}].input")
    actor = get("actor")
    if actor is not None and type(actor) is not str:
        actor = _str(step, "actor", f"steps[{pos}].actor")
    started_at = get("started_at")
    if started_at is not None:
        started_at = _ts_text(started_at)
        if started_at is None:
            started_at = _ts(step, "started_at", f"steps[{pos}].started_at")
    # An alias stands in for its field when the field is absent or null (``vals``).
    duration_ms = get("duration_ms") if vals is None else vals.get("duration_ms",
                                                                   get("duration_ms"))
    if duration_ms is not None and (type(duration_ms) is not float
                                    or not 0.0 <= duration_ms <= _MAX_FLOAT):
        duration_ms = _float({"duration_ms": duration_ms}, "duration_ms",
                             f"steps[{pos}].{src.get('duration_ms', 'duration_ms')}", nonneg=True)
    tokens_in = get("tokens_in") if vals is None else vals.get("tokens_in", get("tokens_in"))
    if tokens_in is not None and (type(tokens_in) is not int or not 0 <= tokens_in <= _MAX_I63):
        tokens_in = _int({"tokens_in": tokens_in}, "tokens_in",
                         f"steps[{pos}].{src.get('tokens_in', 'tokens_in')}")
    tokens_out = get("tokens_out") if vals is None else vals.get("tokens_out", get("tokens_out"))
    if tokens_out is not None and (type(tokens_out) is not int
                                   or not 0 <= tokens_out <= _MAX_I63):
        tokens_out = _int({"tokens_out": tokens_out}, "tokens_out",
                          f"steps[{pos}].{src.get('tokens_out', 'tokens_out')}")
    cost_usd = get("cost_usd")
    if cost_usd is not None and (type(cost_usd) is not float or not 0.0 <= cost_usd <= _MAX_FLOAT):
        cost_usd = _float(step, "cost_usd", f"steps[{pos}].cost_usd", nonneg=True)
    row = {
        "tenant": ctx.tenant,
        "trajectory_id": tid,
        "index": index,
        "step_id": step_id or str(index),
        "parent_step_id": parent_step_id,
        "kind": kind,
        "name": name,
        "input": input_,
        "output": output,
        "error": error,
        "actor": actor,
        "started_at": started_at,
        "duration_ms": duration_ms,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": cost_usd,
        "attributes": orjson.dumps(attrs).decode() if attrs else None,
        "input_ref": None,
        "output_ref": None,
    }
    limit = ctx.payload_limit
    if (input_ is None or len(input_) * 4 <= limit) and (output is None
                                                          or len(output) * 4 <= limit):
        return row  # nothing can be over the payload limit (UTF-8: at most 4 bytes a char)
    for col in ("input", "output"):
        text = row[col]
        if text is not None and len(text) * 4 > ctx.payload_limit:
            data = text.encode()
            if len(data) > ctx.payload_limit:
                sha = hashlib.sha256(data).hexdigest()
                payloads.append({"tenant": ctx.tenant, "sha256": sha, "size": len(data),
                                 "data": text})
                row[col] = text[: ctx.preview_chars]
                row[f"{col}_ref"] = sha
    return row


# -- field readers: each names the field path and the fix on error ------------------------

def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"number {v!r}"
    if isinstance(v, str):
        return f"string {v[:40]!r}"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _str(obj: dict, key: str, path: str) -> str | None:
    v = obj.get(key)
    if v is None or isinstance(v, str):
        return v
    raise InvalidArgument(f"must be a string, got {_kind(v)}", field=path)


def _text(obj: dict, key: str, path: str) -> str | None:
    """Free text: strings as they are; any other JSON value is stored as its JSON text."""
    v = obj.get(key)
    if v is None or isinstance(v, str):
        return v
    try:
        return orjson.dumps(v).decode()
    except TypeError as e:
        raise InvalidArgument(f"cannot be stored as text: {e}", field=path) from e


def _int(obj: dict, key: str, path: str, bits: int = 63) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(f"must be a whole number, got {_kind(v)}", field=path)
    if not 0 <= v < (1 << bits):
        raise InvalidArgument(f"must be between 0 and {(1 << bits) - 1}, got {v}", field=path)
    return v


def _float(obj: dict, key: str, path: str, nonneg: bool = False) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidArgument(f"must be a number, got {_kind(v)}", field=path)
    v = float(v)
    if not math.isfinite(v) or (nonneg and v < 0):
        raise InvalidArgument(f"must be a finite{' non-negative' if nonneg else ''} number, "
                              f"got {v!r}", field=path)
    return v


def _bool(obj: dict, key: str, path: str) -> bool | None:
    v = obj.get(key)
    if v is None or isinstance(v, bool):
        return v
    raise InvalidArgument(f"must be true, false or null, got {_kind(v)}", field=path)


def _ts(obj: dict, key: str, path: str) -> int | None:
    return epoch_us(obj.get(key), path)


def epoch_us(v: Any, path: str) -> int | None:
    """ISO 8601 text (naive means UTC), epoch seconds, or a datetime -> epoch microseconds;
    what else a time field of the record format holds is an error naming ``path``."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError as e:
            raise InvalidArgument(f"{v[:40]!r} is not an ISO 8601 time "
                                  "(e.g. 2025-08-01T16:16:37Z)", field=path) from e
    elif isinstance(v, datetime):
        dt = v
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        x = v * 1_000_000  # inf for a huge float: out of range, not an OverflowError
        us = int(x) if math.isfinite(x) else -1
        if not 0 <= us <= _MAX_US:
            raise InvalidArgument(f"epoch seconds {v!r} are out of range", field=path)
        return us
    else:
        raise InvalidArgument(f"must be an ISO 8601 time or epoch seconds, got {_kind(v)}",
                              field=path)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    us = (dt - _EPOCH) // _US
    if not 0 <= us <= _MAX_US:
        raise InvalidArgument(f"{v!r} is before 1970 or after 9999", field=path)
    return us


def _ts_text(v: Any) -> int | None:
    """``_ts`` for the common case, an in-range ISO 8601 string; None for anything else."""
    if type(v) is not str:
        return None
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    us = (dt - _EPOCH) // _US
    return us if 0 <= us <= _MAX_US else None


def _scores(v: Any, path: str) -> list[tuple[str, float]] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InvalidArgument(f"must be an object of name -> number, got {_kind(v)}",
                              field=path)
    out = []
    for k, x in v.items():
        if x is None:
            continue
        if type(x) is not float or not math.isfinite(x):  # else: the checked reader
            x = _float(v, k, f"{path}.{k}")
        out.append((str(k), x))
    return out


def _tags(v: Any) -> list[str] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
        raise InvalidArgument(f"must be a list of strings, got {_kind(v)}", field="tags")
    return v


def _total(obj: dict, key: str, step_values: Callable[[str], list], read: Any) -> Any:
    given = read(obj, key, key)
    if given is not None:
        return given
    vals = step_values(key)
    if not vals:
        return None
    total = sum(vals)
    if isinstance(total, int) and total > _MAX_I63:  # each step fits; the sum must too
        raise InvalidArgument(f"the steps' {key} add up to {total}, more than a 64-bit "
                              f"total holds; check the steps' counts", field=key)
    if isinstance(total, float) and not math.isfinite(total):
        raise InvalidArgument(f"the steps' {key} add up to {total}; check the steps' values",
                              field=key)
    return total


def keep_field(bag: dict, key: str, val: Any) -> None:
    """Keep an unmodelled field; a key the bag already has is kept under '_fields' (a
    '_fields' that is not an object is first moved under '_fields._fields')."""
    if key not in bag:
        bag[key] = val
        return
    held = bag.get("_fields", {})  # copied, never changed in place: it is the caller's
    held = dict(held) if isinstance(held, dict) else {"_fields": held}
    held[key] = val
    bag["_fields"] = held


def _meta(obj: dict, outcome: dict) -> dict:
    meta = obj.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise InvalidArgument(f"meta must be an object, got {_kind(meta)}", field="meta")
    else:
        meta = dict(meta)
    for key, val in obj.items():
        if key not in TRAJECTORY_FIELDS:
            keep_field(meta, key, val)
    for key, val in outcome.items():
        if key not in OUTCOME_FIELDS:
            keep_field(meta, f"outcome.{key}", val)
    return meta
