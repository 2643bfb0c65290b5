"""What the Python client sends, checked before it goes.

A value protobuf cannot take becomes an ``InvalidArgument`` naming the field path the
caller wrote (``steps[3].duration_ms``) and the type wanted, not protobuf's bare
``TypeError``. Rows follow the record format (docs/format.md) as the file and Arrow doors
read it: step aliases (``latency_ms``...) name their field; a step's unknown fields are kept
in its ``attributes``, a trajectory's in its ``meta``; objects and lists in ``input`` /
``output`` / ``error`` / ``attributes`` / ``meta`` travel as JSON text. An unknown field
is kept, as the format means it to be; one whose name is close to a known field's
(``tool_name``, ``agnet``, ``outcome.succeeded``) is also named in an
``UnknownFieldWarning``: the lake accepts it silently, so this is where a caller learns of
the typo. Records for ``ingest_arrow`` whose value types disagree go in tables of their own
(``records_to_tables``), for the lake's rules to judge each.
"""

from __future__ import annotations

import base64
import difflib
import warnings
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
from google.protobuf.descriptor import FieldDescriptor

from lake.errors import InvalidArgument
from lake.records import (
    OUTCOME_FIELDS,
    STEP_ALIASES,
    STEP_FIELDS,
    TRAJECTORY_FIELDS,
    epoch_us,
    keep_field,
)
from proto.contextlake.v1 import lake_pb2 as pb

from . import convert

_JSON_TEXT = ("input", "output", "error")
_STEP_NAMES = STEP_FIELDS | set(STEP_ALIASES) | {"is_error"}


class UnknownFieldWarning(UserWarning):
    """A field the record format does not know: kept (in ``meta`` / ``attributes``), not
    read as any known field."""


def warn_unknown(keys: Iterable[str], known: Iterable[str], path: str, kept_in: str) -> None:
    """Warn of each of ``keys`` not in ``known`` whose name is close to a known one's (a
    likely typo; other extra fields are the format's way to carry more, kept quietly)."""
    known = set(known)
    for key in sorted(set(keys) - known):
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.75) or sorted(
            k for k in known if len(k) > 3 and (k in key or key in k))[:1]
        if near:
            warnings.warn(f"{path}{key} is not a field of the record format (docs/format.md)"
                          f": kept in {kept_in}, not read as a known field; did you mean "
                          f"{near[0]!r}?", UnknownFieldWarning, stacklevel=4)


_WANTS = {
    FieldDescriptor.CPPTYPE_DOUBLE: "a number", FieldDescriptor.CPPTYPE_FLOAT: "a number",
    FieldDescriptor.CPPTYPE_INT32: "a whole number", FieldDescriptor.CPPTYPE_INT64:
    "a whole number", FieldDescriptor.CPPTYPE_UINT32: "a whole number",
    FieldDescriptor.CPPTYPE_UINT64: "a whole number", FieldDescriptor.CPPTYPE_BOOL:
    "true or false", FieldDescriptor.CPPTYPE_STRING: "text", FieldDescriptor.CPPTYPE_ENUM:
    "one of the listed names", FieldDescriptor.CPPTYPE_MESSAGE: "an object",
}


def message(cls: Any, path: str = "", names: dict[str, str] | None = None,
            **fields: Any) -> Any:
    """``cls(**fields)``; a value of the wrong type raises ``InvalidArgument`` at
    ``path + name`` (``names``: the caller's name of a wire field, e.g. ``started_at``)."""
    for name, value in fields.items():  # protobuf takes text for a list, char by char
        if isinstance(value, str) and cls.DESCRIPTOR.fields_by_name[name].is_repeated:
            shown = (names or {}).get(name, name)
            raise InvalidArgument(f"must be a list of text, got the text {value!r:.80}: did "
                                  f"you mean [{value!r:.80}]?", field=f"{path}{shown}")
    try:
        return cls(**fields)
    except (TypeError, ValueError, OverflowError) as e:
        for name, value in fields.items():
            try:
                cls(**{name: value})
            except UnicodeEncodeError as u:  # text, but not text UTF-8 can carry
                raise InvalidArgument(_not_utf8(u), field=f"{path}{(names or {}).get(name, name)}"
                                      ) from e
            except (TypeError, ValueError, OverflowError):
                shown = (names or {}).get(name, name)
                raise InvalidArgument(f"must be {_wants(cls, name)}, got "
                                      f"{type(value).__name__} {value!r:.80}",
                                      field=f"{path}{shown}") from e
        raise


def _wants(cls: Any, name: str) -> str:
    f = cls.DESCRIPTOR.fields_by_name[name]
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        return "an object of names to numbers"
    want = _WANTS.get(f.cpp_type, "another type")
    return f"a list of {want.removeprefix('a ')}s" if f.is_repeated else want


def step(row: dict[str, Any], path: str) -> pb.Step:
    """A step row (``Run.tool`` / ``append`` / ``stream``) -> ``Step``. Plain rows, the
    common case, go straight through; the others are reshaped as the format reads them."""
    if row.keys() <= STEP_FIELDS and type(row.get("started_at")) in _WIRE_TIMES:
        try:
            return pb.Step(**convert.step_fields(row))
        except (TypeError, ValueError, OverflowError):
            pass  # named below
    row = {STEP_ALIASES.get(k, k) if STEP_ALIASES.get(k) not in row else k: v
           for k, v in row.items()}
    extra = {k: row.pop(k) for k in [k for k in row if k not in STEP_FIELDS]}
    warn_unknown(extra, _STEP_NAMES, f"{path}.", "its attributes")
    attributes = _object(row.get("attributes"), f"{path}.attributes")
    if extra or attributes is not None:
        row["attributes"] = _json(_kept(attributes, extra), f"{path}.attributes")
    for key in _JSON_TEXT:
        if row.get(key) is not None and not isinstance(row[key], str):
            row[key] = _text(row[key], f"{path}.{key}")
    return message(pb.Step, f"{path}.", {"started_at_us": "started_at"},
                   **_times(row, ("started_at",), path, convert.step_fields))


def trajectory(row: dict[str, Any], path: str = "") -> pb.Trajectory:
    """A trajectory row (``start``'s fields, ``steps`` too) -> ``Trajectory``."""
    row = dict(row)
    steps = row.pop("steps", None) or ()
    outcome = row.pop("outcome", None)
    if isinstance(outcome, dict):
        warn_unknown(outcome, OUTCOME_FIELDS, f"{path}outcome.", "meta")
        for k, v in outcome.items():
            row.setdefault(k if k in OUTCOME_FIELDS else f"outcome.{k}", v)
    extra = {k: row.pop(k) for k in [k for k in row if k not in TRAJECTORY_FIELDS]}
    warn_unknown([k for k in extra if not k.startswith("outcome.")], TRAJECTORY_FIELDS,
                 path, "meta")
    meta = _object(row.get("meta"), f"{path}meta")
    if extra or meta is not None:
        row["meta"] = _json(_kept(meta, extra), f"{path}meta")
    status = row.pop("status", None)
    fields = _times(row, tuple(_TIMES), path.rstrip("."), _trajectory_fields)
    if status is not None:
        fields["status"] = _status(status, f"{path}status")
    msg = message(pb.Trajectory, path, {v: k for k, v in _TIMES.items()}, **fields)
    msg.steps.extend(step(s, f"{path}steps[{i}]") for i, s in enumerate(steps))
    return msg


_TIMES = {"started_at": "started_at_us", "ended_at": "ended_at_us",
          "expires_at": "expires_at_us"}


def _trajectory_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {_TIMES[k] if k in _TIMES else k: convert.to_us(v) if k in _TIMES else v
            for k, v in row.items() if v is not None and k != "steps"}


_WIRE_TIMES = (type(None), datetime)  # what ``convert`` puts on the wire as it is


def _times(row: dict[str, Any], keys: tuple[str, ...], path: str,
           to_wire: Any) -> dict[str, Any]:
    for key in keys:
        if type(row.get(key)) not in _WIRE_TIMES:
            row[key] = epoch_us(row[key], f"{path}.{key}" if path else key)
    return to_wire(row)


def _status(name: Any, path: str) -> int:
    if name not in convert.STATUS_TO_PB:
        raise InvalidArgument(f"{name!r:.80} is not one of {', '.join(convert.STATUS_TO_PB)}",
                              field=path)
    return convert.STATUS_TO_PB[name]


def _kept(bag: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
    """Unknown fields added to ``meta`` / ``attributes`` as files add them: a name the bag
    already has goes under ``_fields`` (``records.keep_field``), losing neither value."""
    out = dict(bag or {})
    for key, value in extra.items():
        keep_field(out, key, value)
    return out


def _object(value: Any, path: str) -> dict[str, Any] | None:
    """A dict as it is; JSON object text parsed as the server parses it."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        return convert._json_object(value, path)
    raise InvalidArgument(f"must be an object (a dict, or JSON object text), got "
                          f"{type(value).__name__} {value!r:.80}", field=path)


def _text(value: Any, path: str) -> str:
    """An input, output or error as text: an exception as ``Type: message``; a structure or
    number as JSON (``_json``); a value whose JSON form is a string (UTF-8 bytes, a datetime,
    an object of the agent's own) as that string, without JSON's quotes."""
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    text = _json(value, path)
    return orjson.loads(text) if text.startswith('"') else text


def _json(value: Any, path: str) -> str:
    """A value as JSON text: numpy values as numbers and lists, datetimes as ISO 8601,
    sets as lists, bytes as their UTF-8 text (else ``{"base64": ...}``: never altered),
    anything else JSON has no form for as its ``str``."""
    try:
        return orjson.dumps(value, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY
                            | orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError as e:
        raise InvalidArgument(_not_utf8(None) if "surrogates" in str(e) else
                              f"cannot be stored as JSON: {e}", field=path) from None


def _not_utf8(e: UnicodeEncodeError | None) -> str:
    at = f" ({e.object[e.start:e.end]!r} at {e.start})" if e is not None else ""
    return (f"holds text UTF-8 cannot carry{at}: a lone surrogate, e.g. from decoding bytes "
            "with errors='surrogateescape'; encode it, or decode the bytes with "
            "errors='replace', or pass the bytes themselves (stored as base64 when not UTF-8)")


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    return str(value)


def warn_unknown_records(records: list[dict[str, Any]]) -> None:
    """``warn_unknown`` for the fields of interchange records (each unknown name once)."""
    dicts = [r for r in records if isinstance(r, dict)]
    warn_unknown({k for r in dicts for k in r}, TRAJECTORY_FIELDS, "", "meta")
    warn_unknown({k for r in dicts if isinstance(o := r.get("outcome"), dict) for k in o},
                 OUTCOME_FIELDS, "outcome.", "meta")
    warn_unknown({k for r in dicts if isinstance(st := r.get("steps"), list) for s in st
                  if isinstance(s, dict) for k in s}, _STEP_NAMES, "steps[].", "attributes")


def records_to_tables(records: list[dict[str, Any]]
                      ) -> tuple[list[tuple[pa.Table, list[int]]], list[dict[str, Any]]]:
    """Interchange records -> Arrow tables, each with the positions of its records, and
    rejects (index, field, reason) of the records no table can hold.

    One table when the records share their types (``records_to_arrow``). Else a record of
    another type in some field (``"reward": "high"`` among numbers) must not sink the
    others: the records are grouped so each group's types agree, and each group goes as
    its own table, where the lake's rules judge each record (the bad value is rejected
    there, with the rule's message). A record whose own values disagree (a field one type
    in one step, another in the next) is rejected here."""
    try:
        return [(convert.records_to_arrow(records), list(range(len(records))))], []
    except InvalidArgument:
        pass
    groups: list[tuple[list[pa.Schema], list[pa.Table], list[int]]] = []
    rejects: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        try:
            table = convert.records_to_arrow([record])
        except InvalidArgument as e:
            rejects.append({"index": i, "field": _mixed_field(record), "reason":
                            f"its values of one field differ in type ({e.__cause__}): give "
                            "the field one type in every step", "trajectory_id":
                            record.get("trajectory_id")})
            continue
        for schema, tables, at in groups:
            try:
                schema[0] = pa.unify_schemas([schema[0], table.schema],
                                             promote_options="permissive")
            except (pa.ArrowException, TypeError):
                continue
            tables.append(table)
            at.append(i)
            break
        else:
            groups.append(([table.schema], [table], [i]))
    return [(pa.concat_tables(tables, promote_options="permissive"), at)
            for _, tables, at in groups], rejects


def _mixed_field(record: dict[str, Any]) -> str | None:
    """The field path of a record's values that do not share one type: ``steps[j].key``,
    ``j`` the first step whose ``key`` is of another kind than the steps before."""
    steps = record.get("steps")
    if not isinstance(steps, list):
        return None
    first: dict[str, type] = {}
    for j, s in enumerate(steps):
        for key, value in (s.items() if isinstance(s, dict) else ()):
            if value is None:
                continue
            kind = float if type(value) is int else type(value)
            if first.setdefault(key, kind) is not kind:
                return f"steps[{j}].{key}"
    return None
