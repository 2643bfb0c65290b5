"""Proto messages <-> the lake's rows, interchange records and Arrow: the one converter.

Three shapes meet here:

- **rows**: dicts shaped like ``lake/schema.py``'s tables, as Lance / DuckDB return them
  (times are ``datetime`` in UTC, ``meta`` / ``attributes`` JSON text, ``scores`` a dict);
- **messages**: ``Trajectory`` / ``Step`` mirror the rows field for field, driven by the
  schema: a timestamp column ``x_at`` is ``x_at_us`` (int64 microseconds, UTC), a nullable
  column is an ``optional`` field, JSON text stays JSON text (empty = null), ``status``
  is the ``Status`` enum;
- **records**: the interchange format of ``docs/format.md`` that every ingest door feeds
  to ``lake/records.py``: Arrow IPC rows (``ipc_records``) and messages (``record_from_pb``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from lake.arrow_values import refuse_repeated_column, with_numbers
from lake.errors import InvalidArgument
from lake.schema import STATUSES, STEPS, TRAJECTORIES
from lake.versions import Version
from proto.contextlake.v1 import lake_pb2 as pb

from . import ipc_bounds

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
STATUS_TO_PB: dict[str, int] = {s: pb.Status.Value(f"STATUS_{s.upper()}") for s in STATUSES}
PB_TO_STATUS: dict[int, str] = {v: k for k, v in STATUS_TO_PB.items()}
_READ_ONLY = frozenset(("tenant", "task_hash", "n_steps", "ingested_at", "retracted_at",
                        "retract_reason", "input_ref", "output_ref"))


# -- times and enums ---------------------------------------------------------------------------

def to_us(value: datetime | int) -> int:
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US


def from_us(us: int, path: str = "") -> datetime:
    try:
        return _EPOCH + us * _US
    except OverflowError as e:
        raise InvalidArgument(f"{us} microseconds since 1970 is not a representable time",
                              field=path or None) from e


def status_name(value: int, path: str = "status") -> str | None:
    """An enum number -> the lake's status; UNSPECIFIED -> None; unknown -> InvalidArgument."""
    if value == pb.STATUS_UNSPECIFIED:
        return None
    if value not in PB_TO_STATUS:
        known = ", ".join(f"{n} ({pb.Status.Name(n)})" for n in sorted(PB_TO_STATUS))
        raise InvalidArgument(f"status {value} is not a known Status; use one of {known}",
                              field=path)
    return PB_TO_STATUS[value]


# -- rows <-> messages (schema-driven) ---------------------------------------------------------

def wire_name(f: pa.Field) -> str:
    """The message field of a column: ``started_at`` -> ``started_at_us``."""
    return f"{f.name}_us" if pa.types.is_timestamp(f.type) else f.name


def _columns(msg: Any, schema: pa.Schema, skip: frozenset[str] = frozenset()) -> list[pa.Field]:
    """Public columns the message carries (a Step has no tenant / trajectory_id: its parent's)."""
    fields = msg.DESCRIPTOR.fields_by_name
    return [f for f in schema if not f.name.startswith("_") and f.name not in skip
            and wire_name(f) in fields]


# How each column converts, decided once per (message type, schema, skipped columns): the
# per-field type tests cost more than the conversion itself, and the live-trajectory RPCs
# convert every step.
_TIME, _MAP, _LIST, _STATUS, _OPTIONAL, _PLAIN = range(6)
_Plan = list[tuple[str, str, int, bool, bool]]  # (column, wire field, kind, presence, nullable)
_PLANS: dict[tuple[str, int, frozenset[str]], tuple[pa.Schema, _Plan]] = {}


def _plan(msg: Any, schema: pa.Schema, skip: frozenset[str] = frozenset()) -> _Plan:
    key = (msg.DESCRIPTOR.full_name, id(schema), skip)
    got = _PLANS.get(key)
    if got is not None and got[0] is schema:
        return got[1]
    fields = msg.DESCRIPTOR.fields_by_name
    plan: _Plan = []
    for f in _columns(msg, schema, skip):
        wire = wire_name(f)
        if pa.types.is_timestamp(f.type):
            kind = _TIME
        elif pa.types.is_map(f.type):
            kind = _MAP
        elif pa.types.is_list(f.type):
            kind = _LIST
        elif f.name == "status":
            kind = _STATUS
        elif fields[wire].has_presence:
            kind = _OPTIONAL
        else:
            kind = _PLAIN
        plan.append((f.name, wire, kind, fields[wire].has_presence, f.nullable))
    _PLANS[key] = (schema, plan)
    return plan


def _fill(msg: Any, row: dict[str, Any], schema: pa.Schema) -> Any:
    for name, wire, kind, _, _ in _plan(msg, schema):
        value = row.get(name)
        if value is None:
            continue
        if kind == _TIME:
            setattr(msg, wire, to_us(value))
        elif kind == _MAP:
            getattr(msg, name).update(dict(value))
        elif kind == _LIST:
            getattr(msg, name).extend(value)
        elif kind == _STATUS:
            msg.status = STATUS_TO_PB[value]
        else:
            setattr(msg, name, value)
    return msg


def _row(msg: Any, schema: pa.Schema, skip: frozenset[str] = frozenset(),
         path: str | None = None) -> dict[str, Any]:
    """A message -> a row; ``path``: times become ISO text and one out of range is named
    ``path.<field>`` (the interchange records of the ingest RPCs), else ``datetime``."""
    row: dict[str, Any] = {}
    for name, wire, kind, presence, nullable in _plan(msg, schema, skip):
        if kind == _TIME:
            if presence and not msg.HasField(wire):
                row[name] = None
            elif path is None:
                row[name] = from_us(getattr(msg, wire), wire)
            else:  # exact to the microsecond, and what the format reads
                row[name] = from_us(getattr(msg, wire), f"{path}.{wire}").isoformat()
        elif kind == _MAP:
            row[name] = dict(getattr(msg, name)) or None
        elif kind == _LIST:
            row[name] = list(getattr(msg, name)) or None
        elif kind == _STATUS:
            row[name] = status_name(msg.status)
        elif kind == _OPTIONAL:
            row[name] = getattr(msg, name) if msg.HasField(name) else None
        else:
            value = getattr(msg, name)
            row[name] = None if nullable and value == "" else value
    return row


def step_to_pb(row: dict[str, Any]) -> pb.Step:
    return pb.Step(**step_fields(row))


def step_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A step row -> ``Step``'s constructor keywords: what ``_fill`` would set, in one call
    (half the cost of setting the fields one by one; the client streams every step)."""
    wire = _STEP_WIRE or _step_wire()
    out: dict[str, Any] = {}
    for name, value in row.items():
        if value is not None and (field := wire.get(name)) is not None:
            out[field] = to_us(value) if field == "started_at_us" else value
    return out


_STEP_WIRE: dict[str, str] = {}  # step column -> Step field


def _step_wire() -> dict[str, str]:
    plan = _plan(pb.Step(), STEPS)
    assert [(n, w) for n, w, k, _, _ in plan if k not in (_OPTIONAL, _PLAIN)] \
        == [("started_at", "started_at_us")], plan
    _STEP_WIRE.update({name: wire for name, wire, _, _, _ in plan})
    return _STEP_WIRE


def stream_head(trajectory_id: str) -> bytes:
    """The serialized start of every ``StreamStepsRequest`` of one trajectory."""
    return pb.StreamStepsRequest(trajectory_id=trajectory_id).SerializeToString()


def stream_request(head: bytes, rows: Iterable[dict[str, Any]],
                   to_step: Callable[[dict[str, Any]], Any] | None = None) -> bytes:
    """``StreamStepsRequest(trajectory_id, steps=rows)`` serialized, from its parts: a message
    on the wire is its fields one after the other, so the head (``stream_head``) and then
    each step as field 2 (tag, length, bytes) are the bytes ``SerializeToString`` writes,
    without building the request and copying each step into it."""
    parts = [head]
    for row in rows:
        step = (pb.Step(**step_fields(row)) if to_step is None else to_step(row)
                ).SerializeToString()
        parts += (_STEPS_TAG, _varint(len(step)), step)
    return b"".join(parts)


_STEPS_TAG = bytes((2 << 3 | 2,))  # field 2, length-delimited


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def trajectory_to_pb(row: dict[str, Any]) -> pb.Trajectory:
    """A trajectory row (with ``steps`` rows, if any) -> message."""
    msg = _fill(pb.Trajectory(), row, TRAJECTORIES)
    msg.steps.extend(step_to_pb(s) for s in row.get("steps") or ())
    return msg


def step_from_pb(msg: pb.Step) -> dict[str, Any]:
    return _row(msg, STEPS)


def trajectory_from_pb(msg: pb.Trajectory) -> dict[str, Any]:
    """Message -> a trajectory row with ``steps`` (what the Python client returns)."""
    return {**_row(msg, TRAJECTORIES), "steps": [step_from_pb(s) for s in msg.steps]}


# -- messages -> interchange records (the ingest RPCs) ------------------------------------------

def record_from_pb(msg: pb.Trajectory, path: str = "trajectory") -> dict[str, Any]:
    """A message -> an interchange record for ``lake/records.py`` (read-only fields dropped)."""
    row = _record_row(msg, TRAJECTORIES, path)
    row["status"] = status_name(msg.status, f"{path}.status")
    outcome = {k: row.pop(k) for k in ("success", "reward", "scores")}
    row["outcome"] = {k: v for k, v in outcome.items() if v is not None}
    row["meta"] = _json_object(row.get("meta"), f"{path}.meta")
    row["steps"] = step_records_from_pb(msg.steps, path=lambda i: f"{path}.steps[{i}]")
    return {k: v for k, v in row.items() if v is not None}


def step_records_from_pb(steps: Iterable[pb.Step], offset: int = 0,
                         path: Callable[[int], str] | None = None,
                         bad: dict[int, InvalidArgument] | None = None) -> list[dict[str, Any]]:
    """Step messages -> step records: ``_record_row`` of each without its nulls, from the
    fields the message has set (a test per field: the live-trajectory RPCs convert every
    step). An unset ``kind`` is left out rather than empty: the same rejection. The time
    is a ``datetime`` (exact, and read as such; ISO text would be written and parsed again
    for each step) which the log writes as ISO text. A bad value is named
    ``steps[offset + i].<field>`` (or ``path(i).<field>``), the path made only then.

    A step whose time or ``attributes`` cannot be read raises, or, given ``bad``, is left
    out and its error kept in ``bad[i]`` (``i``: its position in ``steps``), so a batch
    rejects that step and lands the others."""
    fields = _STEP_FIELDS or _step_fields()
    where = path or (lambda i: f"steps[{offset + i}]")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(steps):
        row: dict[str, Any] = {}
        has = msg.HasField
        for wire, column, presence in fields:
            if presence:
                if has(wire):
                    row[column] = getattr(msg, wire)
            elif value := getattr(msg, wire):  # proto3 plain fields: set = not the default
                row[column] = value
        try:
            if has("started_at_us"):
                us = msg.started_at_us
                try:
                    row["started_at"] = _EPOCH + us * _US
                except OverflowError:
                    from_us(us, f"{where(i)}.started_at_us")  # raises, naming the field
            if attributes := msg.attributes:
                row["attributes"] = _json_object(attributes, f"{where(i)}.attributes")
        except InvalidArgument as e:
            if bad is None:
                raise
            bad[i] = e
            continue
        out.append(row)
    return out


# What a step record reads of a message, but ``started_at`` (a time) and ``attributes`` (JSON
# text): (field, record field, has presence); read-only fields are not read.
_STEP_FIELDS: list[tuple[str, str, bool]] = []


def _step_fields() -> list[tuple[str, str, bool]]:
    plan = _plan(pb.Step(), STEPS, _RECORD_SKIP)
    assert {k for _, _, k, _, _ in plan} <= {_TIME, _OPTIONAL, _PLAIN}, plan
    assert [n for n, _, k, _, _ in plan if k == _TIME] == ["started_at"], plan
    assert "attributes" in {n for n, _, _, _, _ in plan}, plan
    fields = [(wire, name, presence) for name, wire, _, presence, _ in plan
              if name not in ("started_at", "attributes")]
    _STEP_FIELDS[:] = fields  # at once: another thread may be reading it
    return _STEP_FIELDS


_RECORD_SKIP = _READ_ONLY | {"status"}  # the caller names the status' path


def _record_row(msg: Any, schema: pa.Schema, path: str) -> dict[str, Any]:
    return _row(msg, schema, _RECORD_SKIP, path)


def _json_object(text: str | None, path: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise InvalidArgument(f"must be JSON object text ({e})", field=path) from e
    if not isinstance(value, dict):
        raise InvalidArgument("must be a JSON object ({...})", field=path)
    return value


# -- Arrow IPC ---------------------------------------------------------------------------------

def records_to_arrow(records: list[dict[str, Any]]) -> pa.Table:
    """Interchange records -> one Arrow table (a column per key any record has).

    ``meta`` / ``attributes`` objects and non-text ``input`` / ``output`` / ``error`` values
    travel as JSON text, so records of any shape share a schema; the lake stores them as
    that same text."""
    rows = [_flat_json(r) for r in records]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    try:
        return pa.table({k: pa.array([r.get(k) for r in rows]) for k in keys})
    except (pa.ArrowException, TypeError) as e:
        raise InvalidArgument(f"the records do not fit one Arrow table ({e}); give each field "
                              "one type, or pass a pyarrow.Table", field="records") from e


def arrow_to_ipc(data: pa.Table | pa.RecordBatch) -> bytes:
    """A table or batch -> Arrow IPC stream bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write(data)
    return sink.getvalue().to_pybytes()


def _json_text(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else orjson.dumps(value).decode()


def _flat_json(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    if isinstance(out.get("meta"), dict):
        out["meta"] = _json_text(out["meta"])
    if isinstance(out.get("steps"), list):
        out["steps"] = [_flat_step(s) if isinstance(s, dict) else s for s in out["steps"]]
    return out


def _flat_step(step: dict[str, Any]) -> dict[str, Any]:
    out = dict(step)
    for key in ("attributes", "input", "output", "error"):
        if key in out and not (key == "attributes" and not isinstance(out[key], dict)):
            out[key] = _json_text(out[key])
    return out


def ipc_records(data: bytes) -> list[tuple[bytes | None, Any, InvalidArgument | None]]:
    """Arrow IPC bytes -> per row what ``ipc_rows`` gives: (JSON, the record if its JSON
    alone would hide a NaN, None) or (None, None, why it is unreadable).

    The whole message is decoded and validated first, so a damaged one is refused before
    anything is written."""
    return [item for batch in ipc_table(data).to_batches() for item in ipc_rows(batch)]


def ipc_table(data: bytes) -> pa.Table:
    """Arrow IPC bytes (a stream or a file) -> the table, checked in full: a damaged
    message, or one that decodes to more than its size bounds (``ipc_bounds``), is refused
    whole."""
    if not data:
        raise InvalidArgument("arrow_ipc is empty; send an Arrow IPC stream of trajectories",
                              field="arrow_ipc")
    ipc_bounds.refuse_compression(data)
    table = None
    try:
        buf = pa.py_buffer(data)
        if data[:6] == b"ARROW1":
            table = pa.ipc.open_file(buf).read_all()
        else:
            table = pa.ipc.open_stream(buf).read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        if "UTF8" in str(e) and table is not None:
            column = table.schema.names[int(m[1])] if (m := re.search(r"Column (\d+)", str(
                e))) and int(m[1]) < table.num_columns else "a text column"
            raise InvalidArgument(f"{column} holds bytes that are not UTF-8 text ({e}): decode "
                                  "or replace them before building the table (the whole "
                                  "message was refused)", field="arrow_ipc") from e
        raise InvalidArgument(f"not a readable Arrow IPC stream or file ({e}); write it with "
                              "pyarrow.ipc.new_stream", field="arrow_ipc") from e
    refuse_repeated_column(table.schema.names, field="arrow_ipc")
    ipc_bounds.refuse_expansion(table, len(data))
    return table


def ipc_rows(batch: pa.RecordBatch, rows: list[int] | None = None
             ) -> list[tuple[bytes | None, Any, InvalidArgument | None]]:
    """Rows of a batch (all, or those of ``rows``): (the record as JSON, None, None) or
    (None, None, why it is unreadable); or (JSON, the record, None) when the record holds a
    NaN or an infinity where the format wants a number, which its JSON writes as null: then
    ``records.normalize(record, json)`` rejects it by name, as the JSON alone would not."""
    if rows is not None:
        batch = batch.take(pa.array(rows, pa.int64()))
    out: list[tuple[bytes | None, Any, InvalidArgument | None]] = []
    for obj in _pylist(batch):
        obj = _from_arrow(obj)
        try:
            raw = orjson.dumps(obj, option=orjson.OPT_NAIVE_UTC)
        except TypeError as e:
            out.append((None, None, _unreadable(obj, e)))
            continue
        out.append((raw, with_numbers(obj, raw), None))
    return out


def _pylist(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """``batch.to_pylist(maps_as_pydicts="lossy")``, faster: pyarrow converts a column with
    ``maps_as_pydicts`` value by value through scalars (a struct field by field: ~1 us a
    field), so only columns holding a map take that path; the others convert directly, with
    UTC times as naive datetimes (the same instants and, under ``OPT_NAIVE_UTC``, the same
    JSON: ``+00:00``; building tz-aware datetimes costs three times as much)."""
    names = batch.schema.names
    if not names:
        return [{} for _ in range(batch.num_rows)]
    columns = []
    for col in batch.columns:
        if _has_map(col.type):
            columns.append(col.to_pylist(maps_as_pydicts="lossy"))
            continue
        naive = _naive_utc(col.type)
        if naive is not None:
            try:
                col = col.cast(naive)
            except (pa.ArrowException, NotImplementedError):
                pass  # keep the tz-aware values: slower, same JSON
        columns.append(col.to_pylist())
    # as RecordBatch.to_pylist: a repeated column name holds the last such column's value
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _nested(t: pa.DataType) -> list[pa.DataType] | None:
    """Child types of a struct or list type; None for any other type."""
    if pa.types.is_struct(t):
        return [t.field(i).type for i in range(t.num_fields)]
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [t.value_type]
    return None


def _has_map(t: pa.DataType) -> bool:
    """Whether a map may be inside (any type other than a struct or a list counts, unless
    plainly a leaf: those take the scalar path, as before)."""
    if pa.types.is_map(t):
        return True
    children = _nested(t)
    if children is not None:
        return any(_has_map(c) for c in children)
    return pa.types.is_union(t) or pa.types.is_dictionary(t) or isinstance(t, pa.ExtensionType) \
        or getattr(pa.types, "is_list_view", lambda _: False)(t) \
        or getattr(pa.types, "is_large_list_view", lambda _: False)(t)


_UTC = ("UTC", "+00:00")


def _naive_utc(t: pa.DataType) -> pa.DataType | None:
    """``t`` with its UTC timestamps made naive; None when it has none."""
    if pa.types.is_timestamp(t):
        return pa.timestamp(t.unit) if t.tz in _UTC and t.unit != "ns" else None
    if pa.types.is_struct(t):
        fields = [t.field(i) for i in range(t.num_fields)]
        new = [_naive_utc(f.type) for f in fields]
        if all(n is None for n in new):
            return None
        return pa.struct([f if n is None else f.with_type(n)
                          for f, n in zip(fields, new, strict=True)])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        v = t.value_field
        nv = _naive_utc(v.type)
        if nv is None:
            return None
        return (pa.list_ if pa.types.is_list(t) else pa.large_list)(v.with_type(nv))
    return None


def _from_arrow(obj: dict[str, Any]) -> dict[str, Any]:
    """An Arrow row -> the record it stands for.

    A column exists for every row of a batch, so a null says "no value here": such fields
    are dropped (else every sparse column would land in ``meta`` / ``attributes`` as null).
    A string ``meta`` / ``attributes`` column holds JSON object text: read as the object
    (anything else stays as it is, for the lake's validation to name)."""
    obj = {k: v for k, v in obj.items() if v is not None}
    outcome = obj.get("outcome")
    if isinstance(outcome, dict):  # its fields are columns too (a struct's children)
        obj["outcome"] = {k: v for k, v in outcome.items() if v is not None}
    _parse_in(obj, "meta")
    steps = obj.get("steps")
    if isinstance(steps, list):
        obj["steps"] = [_step_from_arrow(s) if isinstance(s, dict) else s for s in steps]
    return obj


def _step_from_arrow(step: dict[str, Any]) -> dict[str, Any]:
    step = {k: v for k, v in step.items() if v is not None}
    _parse_in(step, "attributes")
    return step


def _parse_in(obj: dict[str, Any], key: str) -> None:
    text = obj.get(key)
    if isinstance(text, str) and text.lstrip().startswith("{"):
        try:
            obj[key] = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass


# -- versions, rejects, page tokens --------------------------------------------------------------

def _unreadable(obj: dict[str, Any], e: TypeError) -> InvalidArgument:
    """Why a row has no JSON form, naming the column whose values cannot have one."""
    for key, value in obj.items():
        try:
            orjson.dumps(value, option=orjson.OPT_NAIVE_UTC)
        except TypeError:
            return InvalidArgument(f"holds a {type(value).__name__} value, which the record "
                                   f"format cannot read ({e}): send text, numbers, booleans, "
                                   "lists or objects (cast the column)", field=key)
    return InvalidArgument(f"a value cannot be read as JSON: {e}")


def version_to_pb(v: Version, tags: list[str]) -> pb.Version:
    return pb.Version(version=v.version, created_at_us=to_us(v.created_at),
                      operation=v.operation, tags=sorted(tags), tables=v.tables,
                      detail=orjson.dumps(v.detail, default=str).decode())


def version_from_pb(msg: pb.Version) -> dict[str, Any]:
    return {"version": msg.version, "created_at": from_us(msg.created_at_us),
            "operation": msg.operation, "tags": list(msg.tags), "tables": dict(msg.tables),
            "detail": orjson.loads(msg.detail or "{}")}


def page_token(version: int, after: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"v": version, "a": after})).decode()


def parse_page_token(token: str) -> tuple[int, str]:
    """(version, last trajectory_id) of a ``next_page_token``."""
    try:
        obj = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return int(obj["v"]), str(obj["a"])
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InvalidArgument("page_token is not one this server returned; pass "
                              "next_page_token unchanged, or empty for the first page",
                              field="page_token") from e


def ref(text: str) -> int | str | None:
    """A version reference on the wire: '' (latest), '7', or a tag name."""
    return text or None
