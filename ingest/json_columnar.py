"""JSONL lines as one Arrow batch, for the columnar door, when that reads them as the per-line
validator would.

Arrow's JSON reader parses a block of lines in C++ threads; ``lake/columnar.py`` then
validates the batch column by column (``DROP``: a null field is an absent one). That is
several times cheaper than ``orjson`` + ``records.normalize`` line by line, but Arrow's
reading loses what a JSON text says in ways that matter to the fields kept as JSON
(``meta``, ``attributes``, unknown fields, ``scores``): an object's missing key becomes a
null, an explicit ``null`` looks the same, ``1`` becomes ``1.0`` in a column that also
holds ``1.5``, and ISO-looking text becomes a timestamp. ``read_block`` therefore returns
None (validate these lines one by one, as before) unless none of that can have happened:

* Arrow reads one row per line;
* no timestamp was inferred anywhere;
* no NaN or infinity anywhere: Arrow reads ``NaN`` and ``Infinity``, which are not JSON (the
  per-line validator rejects such a line, and a NaN where a number is wanted must not pass
  as null, nor one in ``meta`` be stored as null);
* ``meta`` and ``attributes`` are objects (text would be parsed by ``DROP``; JSON keeps it);
* in the JSON-kept subtrees, no object lacks a key another object has, no key named there
  is followed by ``null`` anywhere in the block (names other than printable ASCII, and
  keys written with an escape, give up), and no float column holds a whole number (it may
  have been written ``1``);
* the known whole-number fields (``index``, ``fork_step``, token counts) are integers.

Objects in the JSON-kept fields are written with their keys in the block's field order
(first seen first), which may differ from a line's own order: the same JSON object.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.types as pt

from lake import arrow_values as av
from lake.records import OUTCOME_FIELDS, STEP_ALIASES, STEP_FIELDS, TRAJECTORY_FIELDS

BLOCK_BYTES = 16 << 20  # JSONL bytes read into one Arrow batch at a time
# typed as floats: a whole number there reads the same however it was written
FLOAT_FIELDS = frozenset(("reward", "cost_usd", "duration_ms", "latency_ms"))
WHOLE_FIELDS = frozenset(("index", "fork_step", "tokens_in", "tokens_out", "n_steps",
                          *(a for a, c in STEP_ALIASES.items() if c != "duration_ms")))
_PLAIN_KEY = re.compile(r'^[\x20-\x7e]*$')  # printable ASCII
# a key written with a backslash escape (``"n\\u0061me":``, which Arrow reads as ``name``):
# the text scans below look for the plain spelling. RE2 (Arrow's regex engine) is linear and
# frees the GIL: ~13 ms per 16 MB block (Python's re: ~45 ms, and the GIL held). A string
# value's escaped JSON (``"{\\"k\\": null}"``) never matches: its quotes are escaped.
_ESCAPED_KEY = r'\\.[^"\\]*"\s*:'


def read_block(data: bytes, n_lines: int, longest: int) -> pa.RecordBatch | None:
    """``data``: ``n_lines`` non-blank JSONL lines (the longest of ``longest`` bytes), as
    one batch, row i from line i; None when Arrow's reading of them could differ from
    ``orjson``'s (see the module docstring)."""
    size = max(1 << 20, longest + 2)  # whole lines in each of Arrow's blocks
    try:
        table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=size))
    except (pa.ArrowException, ValueError):
        return None  # a line Arrow cannot read as the others: each is read on its own
    try:
        if table.num_rows != n_lines or not _faithful(table, data):
            return None
        table = table.combine_chunks()
        return pa.RecordBatch.from_arrays([c.chunk(0) if c.num_chunks else pa.array([], c.type)
                                           for c in table.columns], schema=table.schema)
    except (pa.ArrowException, ValueError, IndexError):  # e.g. pyarrow 26 on a list of nulls
        return None


def _faithful(table: pa.Table, data: bytes) -> bool:
    kept: list[tuple[str, pa.Array, np.ndarray | None]] = []  # JSON-kept: (name, values, where)
    for name in table.schema.names:
        col = table.column(name).combine_chunks()
        if _has_timestamp(col.type) or _has_nonfinite(col):
            return False
        if name == "meta" or name not in TRAJECTORY_FIELDS:
            if name == "meta" and not (pt.is_struct(col.type) or pt.is_null(col.type)):
                return False
            kept.append((name, col, None))
        elif name == "outcome" and pt.is_struct(col.type):
            for i, f in enumerate(col.type):  # scores, and unknown fields (to meta)
                if f.name == "scores" or f.name not in OUTCOME_FIELDS:
                    kept.append((f.name, pc.struct_field(col, [i]), None))
        elif name == "steps" and (pt.is_list(col.type) or pt.is_large_list(col.type)):
            steps = pc.list_flatten(col)
            if pt.is_struct(steps.type) and not _steps_faithful(steps, kept):
                return False
        elif name in WHOLE_FIELDS and pt.is_floating(col.type):
            return False
    whole: set[str] = set()  # float fields holding a whole number somewhere
    if not all(_kept_faithful(n, a, where, whole, n == "scores") for n, a, where in kept):
        return False
    nulls = _with_nulls(kept)
    if (whole or nulls) and _escaped_key(data):
        return False  # a key the scans below cannot see may hold a null or a whole number
    return not _explicit_null(nulls, data) and not _written_whole(whole, data)


def _with_nulls(kept: list) -> set[str]:
    """The JSON-kept fields with a null somewhere: missing in some lines (which ``DROP``
    reads right), or written ``null`` (which it would drop): ``_explicit_null`` tells."""
    return {name for name, arr, where in kept
            if (~av.valid(arr) if where is None else where & ~av.valid(arr)).any()}


def _steps_faithful(steps: pa.Array, kept: list) -> bool:
    children = [pc.struct_field(steps, [i]) for i in range(steps.type.num_fields)]
    present = {f.name: av.valid(child) for f, child in zip(steps.type, children, strict=True)}
    for f, child in zip(steps.type, children, strict=True):
        if f.name == "attributes":
            if not (pt.is_struct(f.type) or pt.is_null(f.type)):
                return False
            kept.append((f.name, child, None))
        elif f.name in STEP_ALIASES:  # kept as an attribute where its field is also set
            canon = present.get(STEP_ALIASES[f.name])
            if canon is not None and canon.any():
                kept.append((f.name, child, canon))
            elif f.name in WHOLE_FIELDS and pt.is_floating(f.type):
                return False
        elif f.name not in STEP_FIELDS:
            kept.append((f.name, child, None))
        elif f.name in WHOLE_FIELDS and pt.is_floating(f.type):
            return False
    return True


def _kept_faithful(name: str, arr: pa.Array, where: np.ndarray | None, whole: set[str],
                   floats_ok: bool = False) -> bool:
    """A JSON-kept value: every object has every key; the names of float fields holding a
    whole number go to ``whole`` (``_written_whole`` checks how the text wrote them)."""
    if where is not None:
        arr = arr.filter(pa.array(where))
    t = arr.type
    if pt.is_struct(t):
        here = av.valid(arr)
        for i in range(t.num_fields):
            child = pc.struct_field(arr, [i])
            if (here & ~av.valid(child)).any():  # a missing key (or a null: refused below)
                return False
            if not _kept_faithful(t.field(i).name, child.filter(pa.array(here)), None, whole,
                                  floats_ok):
                return False
        return True
    if pt.is_list(t) or pt.is_large_list(t):
        return _kept_faithful(name, pc.list_flatten(arr), None, whole, floats_ok)
    if pt.is_floating(t) and not floats_ok and name not in FLOAT_FIELDS:
        x = av.num(arr, 0.5)
        if (np.isfinite(x) & (x == np.trunc(x)) & av.valid(arr)).any():
            whole.add(name)
    return not (pt.is_dictionary(t) or pt.is_map(t))


def _escaped_key(data: bytes) -> bool:
    """Whether some key in ``data`` is written with an escape (``_ESCAPED_KEY``)."""
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    text = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    return bool(pc.match_substring_regex(text, _ESCAPED_KEY)[0].as_py())


def _written_whole(names: set[str], data: bytes) -> bool:
    """True when one of ``names`` may be written as a whole number (``"n": 3``) in ``data``:
    Arrow read it as ``3.0``, and JSON would keep ``3``. (An item of a list of numbers is
    not matched: such a field is refused. Keys written with an escape: ``_faithful``.)"""
    for name in names:
        key = re.escape(name.encode())
        if re.search(rb'"' + key + rb'"\s*:\s*(?:\[|-?\d+\s*[,}\]])', data):
            return True
    return False


def _explicit_null(names: set[str], data: bytes) -> bool:
    """True when one of ``names`` (the JSON-kept fields with a null: ``_with_nulls``) may be
    written ``null`` in ``data``. Nested ones never are (``_kept_faithful`` refused any
    nested null); a top-level one only where it holds a null. (A name other than printable
    ASCII, which the text may escape, counts as one; keys written with an escape:
    ``_faithful``.)"""
    for name in names:
        if not _PLAIN_KEY.match(name) or '"' in name or "\\" in name:
            return True
        if re.search(rb'"' + re.escape(name.encode()) + rb'"\s*:\s*null', data):
            return True
    return False


def _has_nonfinite(arr: pa.Array) -> bool:
    """Whether a float anywhere in ``arr`` is a NaN or an infinity."""
    t = arr.type
    if pt.is_floating(t):
        return not pc.all(pc.is_finite(arr), min_count=0).as_py()
    if pt.is_struct(t):
        return any(_has_nonfinite(child) for child in arr.flatten())
    if pt.is_list(t) or pt.is_large_list(t):
        return _has_nonfinite(pc.list_flatten(arr))
    return False


def _has_timestamp(t: pa.DataType) -> bool:
    if pt.is_timestamp(t) or pt.is_date(t) or pt.is_time(t):
        return True
    if pt.is_struct(t):
        return any(_has_timestamp(f.type) for f in t)
    if pt.is_list(t) or pt.is_large_list(t):
        return _has_timestamp(t.value_type)
    return False
