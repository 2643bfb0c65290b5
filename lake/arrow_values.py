"""Arrow values as the Python objects of their JSON: what a record's fields hold.

``batch.to_pylist(maps_as_pydicts="lossy")`` converts value by value through Arrow scalars
(slow for nested columns) and makes a timezone-aware ``datetime`` per timestamp (slower
still). ``values`` converts whole child arrays at once and renders timestamps as the exact
text ``orjson.dumps(..., OPT_NAIVE_UTC)`` writes for the ``datetime``, so a row's JSON is
the same bytes either way. Types it does not know (and duplicate map keys, out-of-range
times) raise ``Fallback``: the caller converts those with ``to_pylist`` (``pylist`` does).

Used by the file readers (``ingest/readers.py``) and the columnar validator
(``lake/columnar.py``), which must agree value for value. The second half of the module
checks whole arrays by the rules of ``lake/records.py`` (for ``lake/columnar.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pt

from .errors import InvalidArgument
from .records import STEP_ALIASES

_UTC_ZONES = (None, "UTC", "Etc/UTC", "+00:00")
_MIN_TS_US, _MAX_TS_US = -62135596800 * 10**6, 253402300799 * 10**6 + 999999  # Python datetime
_TS_US = {tz: pa.timestamp("us", tz=tz) for tz in _UTC_ZONES}
_TS_NAIVE_US = pa.timestamp("us")


class Fallback(Exception):
    """A type (or value) ``values`` does not convert: use ``to_pylist``."""


class State:
    __slots__ = ("plain",)

    def __init__(self) -> None:
        self.plain = True  # only JSON values: no NaN/infinity (JSON null) anywhere


def refuse_repeated_column(names: list[str], **where: str) -> None:
    """``InvalidArgument`` (at ``where``: ``field=`` or ``location=``) when a column name
    appears twice: a row (a dict) would keep one of its values, so the table is refused."""
    seen: set[str] = set()
    twice = next((n for n in names if n in seen or seen.add(n)), None)
    if twice is not None:
        raise InvalidArgument(f"column {twice!r} appears more than once: a row would keep only "
                              "one of its values; give each column its own name", **where)


def pylist(batch: pa.RecordBatch) -> tuple[list[dict], bool]:
    """``(rows, plain)``: the rows as ``to_pylist`` gives them (timestamps as orjson's text
    where ``values`` converts them). ``plain``: each row is what its JSON text reads as,
    but for a NaN or an infinity where the format wants a number, which JSON writes as null:
    it is kept, for the validator to reject by name (``unwritten``)."""
    names = batch.schema.names
    state = State()
    try:
        if not names or len(set(names)) != len(names):
            raise Fallback  # to_pylist: a repeated column holds the last one's value
        cols = [values(col, state) for col in batch.columns]
        rows = [dict(zip(names, vals, strict=False)) for vals in zip(*cols, strict=False)]
    except Fallback:
        rows, state.plain = batch.to_pylist(maps_as_pydicts="lossy"), False
    if state.plain:
        return rows, True
    found = [unwritten(row) for row in rows]
    if not any(found):
        return rows, False
    return [_as_read(row, paths) for row, paths in zip(rows, found, strict=True)], True


def _as_read(row: dict, paths: list) -> dict:
    """The row as its JSON text reads, with its values at ``paths`` kept (``put_back``); the
    row itself when it has no JSON text (the reader reports that)."""
    try:
        text = orjson.dumps(row, option=orjson.OPT_NAIVE_UTC)
    except TypeError:
        return row
    return put_back(orjson.loads(text), row, paths)


# -- numbers JSON cannot write --------------------------------------------------------------
# A record of Arrow values may hold a NaN or an infinity. Its JSON text writes them as null:
# where the format wants a number (``lake/records.py``'s ``_float``, ``_int``, ``_ts``,
# ``_scores``) that would be a silent change, so the record is read with the value kept
# there and rejected by name (``outcome.reward: must be a finite number, got nan``).
# Anywhere else (``meta``, ``attributes``, unknown fields, text) it is null, as in JSON.

_NUMBERS = frozenset(("reward", "cost_usd", "tokens_in", "tokens_out", "fork_step",
                      "started_at", "ended_at", "expires_at"))
_STEP_NUMBERS = frozenset(("index", "started_at", "duration_ms", "tokens_in", "tokens_out",
                           "cost_usd", *STEP_ALIASES))


def unwritten(obj: Any) -> list[tuple[Any, ...]]:
    """Where a record of Python values holds a NaN or an infinity as a number the format
    reads: the key paths, e.g. ``("steps", 2, "duration_ms")``, ``("scores", "acc")``."""
    if not isinstance(obj, dict):
        return []
    found = [(k,) for k in _NUMBERS if _nonfinite(obj.get(k))]
    outcome = obj.get("outcome")
    if isinstance(outcome, dict):
        found += [("outcome", "reward")] if _nonfinite(outcome.get("reward")) else []
        found += _nonfinite_scores(outcome.get("scores"), ("outcome", "scores"))
    found += _nonfinite_scores(obj.get("scores"), ("scores",))
    steps = obj.get("steps")
    if isinstance(steps, list):
        for pos, step in enumerate(steps):
            if isinstance(step, dict):
                found += [("steps", pos, k) for k in _STEP_NUMBERS if _nonfinite(step.get(k))]
    return found


def put_back(parsed: Any, obj: Any, paths: list[tuple[Any, ...]]) -> Any:
    """``parsed`` (``obj``'s JSON text, parsed) with the values at ``paths`` as ``obj``
    holds them (``unwritten``: where the text says null)."""
    for path in paths:
        src, dst = obj, parsed
        for key in path[:-1]:
            src, dst = src[key], dst[key]
        dst[path[-1]] = src[path[-1]]
    return parsed


def with_numbers(obj: Any, raw: bytes) -> Any | None:
    """What ``raw``, the JSON text of ``obj``, reads as, with the NaNs and infinities of
    ``obj`` where the format wants a number put back (``unwritten``); None when it has
    none (``raw`` reads as ``obj``)."""
    paths = unwritten(obj)
    return put_back(orjson.loads(raw), obj, paths) if paths else None


def _nonfinite(v: Any) -> bool:
    return type(v) is float and not math.isfinite(v)


def _nonfinite_scores(v: Any, path: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return [(*path, k) for k, x in v.items() if _nonfinite(x)] if isinstance(v, dict) else []


def values(arr: pa.Array, state: State | None = None) -> list:
    """The array's values as Python objects (see the module docstring); raises Fallback."""
    state = state or State()
    t = arr.type
    if (pt.is_string(t) or pt.is_large_string(t) or pt.is_integer(t) or pt.is_boolean(t)
            or pt.is_null(t)):
        return arr.to_pylist()
    if pt.is_float32(t) or pt.is_float64(t):
        if state.plain and not pc.all(pc.is_finite(arr), min_count=0).as_py():
            state.plain = False  # NaN and infinities become null in JSON
        return arr.to_pylist()
    if pt.is_timestamp(t):
        return _timestamps(arr)
    if pt.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        if not names or len(set(names)) != len(names):
            raise Fallback
        kids = [values(c, state) for c in arr.flatten()]
        rows = [dict(zip(names, vals, strict=False)) for vals in zip(*kids, strict=False)]
        if arr.null_count:
            valid = arr.is_valid().to_pylist()
            rows = [r if ok else None for r, ok in zip(rows, valid, strict=True)]
        return rows
    if pt.is_list(t) or pt.is_large_list(t) or pt.is_map(t):
        offsets = arr.offsets.to_pylist()  # of this (maybe sliced) array: len(arr) + 1
        start, n = offsets[0], offsets[-1] - offsets[0]
        spans = [(a - start, b - start) for a, b in zip(offsets, offsets[1:], strict=False)]
        if pt.is_map(t):
            if not (pt.is_string(t.key_type) or pt.is_large_string(t.key_type)):
                raise Fallback  # not a JSON object key
            keys = values(arr.keys.slice(start, n), state)
            items = values(arr.items.slice(start, n), state)
            lists = [dict(zip(keys[a:b], items[a:b], strict=False)) for a, b in spans]
            if any(len(d) != b - a for d, (a, b) in zip(lists, spans, strict=False)):
                raise Fallback  # duplicate keys: to_pylist warns and keeps the last
        else:
            vals = values(arr.values.slice(start, n), state)
            lists = [vals[a:b] for a, b in spans]
        if arr.null_count:
            valid = arr.is_valid().to_pylist()
            lists = [v if ok else None for v, ok in zip(lists, valid, strict=True)]
        return lists
    raise Fallback  # dictionary, binary, decimal, date, time, duration, extension...


def _timestamps(arr: pa.Array) -> list:
    t = arr.type
    if t.unit not in ("s", "ms", "us") or t.tz not in _UTC_ZONES:
        raise Fallback
    try:
        us = arr.cast(_TS_US[t.tz])
    except pa.ArrowInvalid:  # overflow
        raise Fallback from None
    if arr.null_count < len(arr):
        lo, hi = pc.min_max(us.cast(pa.int64())).values()
        if lo.as_py() < _MIN_TS_US or hi.as_py() > _MAX_TS_US:
            raise Fallback  # to_pylist cannot make a datetime of it
    # "YYYY-MM-DD HH:MM:SS.ffffff" -> orjson's "YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00"
    text = pc.replace_substring(us.cast(_TS_NAIVE_US).cast(pa.string()), " ", "T",
                                max_replacements=1)
    text = pc.if_else(pc.ends_with(text, ".000000"), pc.utf8_slice_codeunits(text, 0, -7), text)
    return pc.binary_join_element_wise(text, "+00:00", "").to_pylist()


# -- whole arrays checked by the record rules (lake/records.py) --------------------------------
# Each reader takes an array (or None: the field is absent) of ``m`` values and returns the
# values as the lake stores them (null where none, or where wrong) and a numpy mask of the
# values that break the rule. A NaN or an infinity is not a number here: it breaks the rule
# (``records`` rejects it by name); in free text it reads as null, as JSON writes it.

_UTC = _UTC_ZONES
_MAX_US = 253402300799 * 1_000_000  # 9999-12-31T23:59:59Z, as lake/records.py
_ESCAPE = r'[\x00-\x1f"\\]'  # what orjson escapes in a string
_NULL_TEXT = pa.scalar(None, pa.string())
_ISO = (r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[T ](?P<h>\d{2}):(?P<mi>\d{2}):"
        r"(?P<s>\d{2})(?:[.](?P<f>\d{1,6}))?(?:Z|\+00:00)?$")
_DAYS_IN = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def strings(arr: pa.Array | None, m: int) -> tuple[pa.Array, np.ndarray]:
    if arr is None or pt.is_null(arr.type):
        return pa.nulls(m, pa.string()), np.zeros(m, bool)
    if is_str(arr.type):
        return arr.cast(pa.string()), np.zeros(m, bool)
    return pa.nulls(m, pa.string()), valid(arr)  # must be a string


def texts(arr: pa.Array | None, m: int) -> tuple[pa.Array, np.ndarray]:
    """Free text: strings as they are, any other JSON value as its JSON text."""
    if arr is None or pt.is_null(arr.type) or is_str(arr.type):
        return strings(arr, m)
    if pt.is_floating(arr.type):
        arr = finite(arr)
    try:
        vals = values(arr)
    except Fallback:
        return pa.nulls(m, pa.string()), valid(arr)
    return pa.array([v if v is None or isinstance(v, str) else orjson.dumps(v).decode()
                     for v in vals], pa.string()), np.zeros(m, bool)


def booleans(arr: pa.Array | None, m: int) -> tuple[pa.Array, np.ndarray]:
    if arr is None or pt.is_null(arr.type):
        return pa.nulls(m, pa.bool_()), np.zeros(m, bool)
    if pt.is_boolean(arr.type):
        return arr, np.zeros(m, bool)
    return pa.nulls(m, pa.bool_()), valid(arr)


def whole(arr: pa.Array | None, m: int, bits: int = 63) -> tuple[pa.Array, np.ndarray]:
    """Whole numbers 0 .. 2**bits - 1 (an integral float counts) as int64."""
    if arr is None or pt.is_null(arr.type):
        return pa.nulls(m, pa.int64()), np.zeros(m, bool)
    t = arr.type
    if pt.is_integer(t):
        ok = valid(arr)
        x = num(arr, 0)
        ok &= x >= 0
        if np.iinfo(x.dtype).max >= 1 << bits:
            ok &= x < (1 << bits)
    elif pt.is_floating(t):
        ok = valid(arr)
        x = num(arr.cast(pa.float64()), 0.0)
        ok &= (np.floor(x) == x) & (x >= 0) & (x < float(1 << bits))  # NaN, inf: False
    else:
        return pa.nulls(m, pa.int64()), valid(arr)  # booleans, text...
    good = pa.array(np.where(ok, x, 0).astype(np.int64), pa.int64(), mask=~ok)
    return good, valid(arr) & ~ok


def numbers(arr: pa.Array | None, m: int, nonneg: bool = False) -> tuple[pa.Array, np.ndarray]:
    """Finite numbers as float64 (``nonneg``: and not negative)."""
    if arr is None or pt.is_null(arr.type):
        return pa.nulls(m, pa.float64()), np.zeros(m, bool)
    t = arr.type
    if pt.is_integer(t):
        out, wrong = arr.cast(pa.float64(), safe=False), np.zeros(m, bool)
    elif pt.is_floating(t):
        out = arr.cast(pa.float64())
        wrong = valid(out) & ~mask(pc.is_finite(out))  # NaN, infinities
    else:
        return pa.nulls(m, pa.float64()), valid(arr)
    if nonneg:
        wrong |= mask(pc.less(out, 0.0))
    return (pc.if_else(pa.array(wrong), pa.scalar(None, pa.float64()), out) if wrong.any()
            else out), wrong


def times(arr: pa.Array | None, m: int) -> tuple[pa.Array, np.ndarray]:
    """Epoch microseconds of UTC timestamps, ISO 8601 text or epoch seconds. Text of
    another form than ``YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|+00:00]`` is marked wrong: the
    caller leaves it to the per-record validator."""
    if arr is None or pt.is_null(arr.type):
        return pa.nulls(m, pa.int64()), np.zeros(m, bool)
    t, ok = arr.type, valid(arr)
    if pt.is_timestamp(t) and t.unit in ("s", "ms", "us") and t.tz in _UTC:
        try:
            x = num(arr.cast(pa.timestamp("us", t.tz)).cast(pa.int64()), -1)
        except pa.ArrowInvalid:
            return pa.nulls(m, pa.int64()), ok
    elif is_str(t):
        x = _iso(arr.cast(pa.string()))
    elif pt.is_integer(t):
        s = num(arr, 0)
        inside = (s >= 0) & (s <= _MAX_US // 1_000_000)
        x = np.where(inside, s, 0).astype(np.int64) * 1_000_000
        x[~inside] = -1
    elif pt.is_floating(t):  # NaN, infinities: out of range below
        with np.errstate(over="ignore", invalid="ignore"):
            f = np.trunc(num(arr.cast(pa.float64()), 0.0) * 1e6)
        x = np.where(np.isfinite(f) & (f >= 0) & (f <= _MAX_US), f, -1).astype(np.int64)
    else:
        return pa.nulls(m, pa.int64()), ok
    good = ok & (x >= 0) & (x <= _MAX_US)
    return pa.array(np.where(good, x, 0), pa.int64(), mask=~good), ok & ~good


def json_texts(arr: pa.Array, m: int) -> tuple[pa.Array, np.ndarray]:
    """Each value's JSON text as orjson writes it (null where the value is null)."""
    t = arr.type
    if pt.is_null(t):
        return pa.nulls(m, pa.string()), np.zeros(m, bool)
    if pt.is_boolean(t):
        return pc.if_else(arr, "true", "false"), np.zeros(m, bool)
    if pt.is_integer(t):
        return arr.cast(pa.string()), np.zeros(m, bool)
    if is_str(t):
        arr = arr.cast(pa.string())
        quoted = pc.binary_join_element_wise('"', arr, '"', "")
        esc = mask(pc.match_substring_regex(arr, _ESCAPE))
        if not esc.any():
            return quoted, np.zeros(m, bool)
        redo = [orjson.dumps(v).decode() for v in arr.filter(pa.array(esc)).to_pylist()]
        return (pc.replace_with_mask(quoted, pa.array(esc), pa.array(redo, pa.string())),
                np.zeros(m, bool))
    if pt.is_struct(t) and t.num_fields and len({f.name for f in t}) == t.num_fields:
        parts, wrong = [], np.zeros(m, bool)
        for f, child in zip(t, arr.flatten(), strict=True):
            text, bad = json_texts(child, m)
            wrong |= bad
            parts += [orjson.dumps(f.name).decode() + ":", pc.fill_null(text, "null"), ","]
        body = pc.binary_join_element_wise(*parts[:-1], "")
        return pc.if_else(valid(arr), pc.binary_join_element_wise("{", body, "}", ""),
                          pa.scalar(None, pa.string())), wrong & valid(arr)
    if pt.is_list(t) or pt.is_large_list(t):
        items = pc.list_flatten(arr)
        text, bad = json_texts(items, len(items))
        lengths = num(pc.list_value_length(arr), 0).astype(np.int64)
        offsets = pa.array(np.concatenate(([0], np.cumsum(lengths))), pa.int64())
        lists = pa.LargeListArray.from_arrays(offsets, pc.fill_null(text, "null"))
        body = pc.binary_join(lists, ",")
        wrong = np.bincount(np.repeat(np.arange(m), lengths)[bad], minlength=m) > 0
        return pc.if_else(valid(arr), pc.binary_join_element_wise("[", body, "]", ""),
                          pa.scalar(None, pa.string())), wrong & valid(arr)
    try:
        vals = values(arr)
    except Fallback:
        return pa.nulls(m, pa.string()), valid(arr)
    return (pa.array([None if v is None else orjson.dumps(v).decode() for v in vals],
                     pa.string()), np.zeros(m, bool))


def json_objects(members: list[tuple[str, pa.Array, np.ndarray]], m: int) -> pa.Array:
    """Per row, the JSON object text of the ``members`` (name, the value's JSON text,
    where the row has it), in that order; null for a row that has none. A text is null only
    in rows the caller rejects."""
    if not members:
        return pa.nulls(m, pa.string())
    if all(here.all() for _, _, here in members):  # every row has every member: one pass
        parts: list[Any] = []
        for name, text, _ in members:
            parts += ["," if parts else "{", orjson.dumps(name).decode() + ":", text]
        return pc.binary_join_element_wise(*parts, "}", "")
    entries = [pc.if_else(here, pc.binary_join_element_wise(
        orjson.dumps(name).decode() + ":", text, ",", ""), _NULL_TEXT)  # '"name":value,'
        for name, text, here in members]
    # (not null_handling="skip": pyarrow 26 drops the rows where every entry is null)
    joined = pc.binary_join_element_wise(*entries, "", null_handling="replace",
                                         null_replacement="")
    return pc.if_else(pc.equal(joined, ""), _NULL_TEXT, pc.binary_join_element_wise(
        "{", pc.utf8_slice_codeunits(joined, 0, -1), "}", ""))


def _iso(text: pa.Array) -> np.ndarray:
    """ISO 8601 text of the common form -> epoch microseconds; -1 for any other text."""
    parts = pc.extract_regex(text, _ISO)
    ok = valid(parts)
    if not ok.any():
        return np.full(len(text), -1, np.int64)
    groups = dict(zip([g.name for g in parts.type], parts.flatten(), strict=True))  # nulls too
    f = {k: num(pc.cast(pc.fill_null(groups[k], "0"), pa.int64()), 0)
         for k in ("y", "mo", "d", "h", "mi", "s")}
    us = num(pc.cast(pc.utf8_rpad(pc.fill_null(groups["f"], ""), 6, "0"), pa.int64()), 0)
    y, mo, d = f["y"], f["mo"], f["d"]
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    ok &= (y >= 1) & (mo >= 1) & (mo <= 12) & (d >= 1)
    ok &= d <= _DAYS_IN[np.clip(mo, 0, 12)] + ((mo == 2) & leap)
    ok &= (f["h"] < 24) & (f["mi"] < 60) & (f["s"] < 60)
    secs = ((_days_from_civil(y, mo, d) * 24 + f["h"]) * 60 + f["mi"]) * 60 + f["s"]
    return np.where(ok, secs * 1_000_000 + us, -1)


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


# -- small helpers -------------------------------------------------------------------------------

def is_str(t: pa.DataType) -> bool:
    return pt.is_string(t) or pt.is_large_string(t)


def valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), bool)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def mask(arr: pa.Array) -> np.ndarray:
    """A boolean array as numpy; null is False."""
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)


def num(arr: pa.Array, fill: Any) -> np.ndarray:
    return pc.fill_null(arr, pa.scalar(fill, arr.type)).to_numpy(zero_copy_only=False)


def finite(arr: pa.Array) -> pa.Array:
    """NaN and infinities as null (orjson writes them as null): for free text only."""
    return pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, arr.type))


def at(m: int, where: Any) -> np.ndarray:
    """A mask of ``m`` values, set at the positions ``where``."""
    out = np.zeros(m, bool)
    out[np.asarray(where, np.int64)] = True
    return out
