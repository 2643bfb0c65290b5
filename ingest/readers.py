"""Read trajectory files: JSONL (optionally gzipped), Parquet, Arrow IPC (file or stream).

Each reader yields ``Item``s: one per record, with its location (``file:line`` or
``file:row N``) and either the raw JSON bytes of the record or the reason it could not be
read. A file that cannot be opened raises ``InvalidArgument`` before yielding anything.
"""

from __future__ import annotations

import gzip
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyarrow.types as pt

from lake.errors import InvalidArgument
from lake.export import MANIFEST as EXPORT_MANIFEST

SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".parquet", ".arrow", ".arrows", ".feather")


@dataclass(slots=True)
class Item:
    location: str
    raw: bytes | None  # the record as one JSON object
    error: str | None = None
    obj: dict | None = None  # when set: equal to orjson.loads(raw), spares parsing it


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, kind in ((".jsonl.gz", "jsonl.gz"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                         (".parquet", "parquet"), (".arrows", "arrow"), (".arrow", "arrow"),
                         (".feather", "arrow")):
        if name.endswith(suffix):
            return kind
    return None


def size_of(path: Path) -> int:
    """Bytes to read: a file's size; for a `lake export` directory, its table files'."""
    if path.is_dir():
        from .lake_export import size_of as export_size

        return export_size(path)
    return path.stat().st_size


def expand(paths: list[str]) -> list[Path]:
    """Files to read: the given files, and supported files under given directories."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():  # a `lake export` directory in it is one source, read by lake_export
            exports = sorted(m.parent for m in p.rglob(EXPORT_MANIFEST))
            out.extend(exports)
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and kind_of(f)
                              and not any(e in f.parents for e in exports)))
        elif p.exists():
            if kind_of(p) is None:
                raise InvalidArgument(f"unsupported file type; use one of {', '.join(SUFFIXES)}",
                                      location=str(p))
            out.append(p)
        else:
            raise InvalidArgument("no such file or directory", location=str(p))
    return out


class Reader:
    """Iterate the records of one file; ``position()`` is bytes consumed (for progress)."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = "lake-export" if path.is_dir() else kind_of(path)
        self.size = size_of(path)
        self.position: Callable[[], int] = lambda: 0
        self._open()

    def _open(self) -> None:
        try:
            if self.kind == "parquet":
                self._pq = pq.ParquetFile(self.path)
            elif self.kind == "arrow":
                self._arrow = _open_ipc(self.path)
            elif self.kind == "lake-export":
                from .lake_export import LakeExport

                self._export = LakeExport(self.path)
                self.position = self._export.position
            elif self.kind == "jsonl.gz":
                with gzip.open(self.path, "rb") as f:
                    f.read(1)
        except (OSError, pa.ArrowException, EOFError, zlib.error) as e:
            raise InvalidArgument(f"cannot read {self.kind} file: {e}; check the file is "
                                  "complete and of the type its name says", location=str(self.path)) from e

    def __iter__(self) -> Iterator[Item]:
        try:
            if self.kind in ("jsonl", "jsonl.gz"):
                yield from self._jsonl()
            elif self.kind == "parquet":  # decoded in a thread while we convert rows
                yield from self._batches(_prefetch(self._pq.iter_batches(batch_size=1024)),
                                         self._pq.metadata.num_rows)
            elif self.kind == "lake-export":
                yield from self._export
            else:
                yield from self._batches(self._arrow, None)
        except (OSError, pa.ArrowException, EOFError, zlib.error) as e:
            yield Item(f"{self.path}", None, f"file is damaged from here on: {e}; the records "
                       "before this point were read")

    def _jsonl(self) -> Iterator[Item]:
        opener = gzip.open if self.kind == "jsonl.gz" else open
        with opener(self.path, "rb") as f:
            raw_f = getattr(f, "fileobj", None) or f
            self.position = raw_f.tell
            for n, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    yield Item(f"{self.path}:{n}", line)
        self.position = lambda: self.size

    def _batches(self, batches, total_rows: int | None) -> Iterator[Item]:
        row = 0
        for batch in batches:
            converted = _pylist(batch)
            if converted is None:
                objs, plain = batch.to_pylist(maps_as_pydicts="lossy"), False
            else:
                objs, plain = converted
            for obj in objs:
                row += 1
                loc = f"{self.path}:row {row}"
                try:
                    raw = orjson.dumps(obj, option=orjson.OPT_NAIVE_UTC)
                except TypeError as e:
                    yield Item(loc, None, f"a value cannot be read as JSON: {e}")
                    continue
                yield Item(loc, raw, obj=obj if plain else None)
            if total_rows:
                done = row
                self.position = lambda done=done: int(self.size * done / total_rows)


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Yield ``items``, read ahead by up to ``depth`` in a thread (Parquet decoding releases
    the GIL). An exception raised by ``items`` is raised here, after the items before it."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def pump() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            result = (end, None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            result = (end, e)
        while not stop.is_set():
            try:
                q.put(result, timeout=0.1)
                return
            except queue.Full:
                pass

    thread = threading.Thread(target=pump, name="reader-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _open_ipc(path: Path):
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"ARROW1":
        reader = pa.ipc.open_file(path)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    return pa.ipc.open_stream(path)


# -- Arrow rows as Python objects, column by column -------------------------------------------
# ``batch.to_pylist(maps_as_pydicts="lossy")`` converts value by value through Arrow scalars
# (slow for nested columns: about 90% of a Parquet ingest went there) and makes a timezone-
# aware ``datetime`` per timestamp (slower still). ``_pylist`` converts whole child arrays at
# once and renders timestamps as the exact text ``orjson.dumps(..., OPT_NAIVE_UTC)`` writes
# for the ``datetime``, so the JSON bytes of each row are the same as before. Types it does
# not know (and duplicate map keys, out-of-range times) fall back to ``to_pylist``.

_UTC_ZONES = (None, "UTC", "Etc/UTC", "+00:00")
_MIN_TS_US, _MAX_TS_US = -62135596800 * 10**6, 253402300799 * 10**6 + 999999  # Python datetime
_TS_US = {tz: pa.timestamp("us", tz=tz) for tz in _UTC_ZONES}
_TS_NAIVE_US = pa.timestamp("us")


class _Fallback(Exception):
    pass


class _State:
    __slots__ = ("plain",)

    def __init__(self) -> None:
        self.plain = True  # only JSON values: no NaN/infinity (JSON null) anywhere


def _pylist(batch: pa.RecordBatch) -> tuple[list[dict], bool] | None:
    """``(rows, plain)``: the rows as ``to_pylist`` gives them (timestamps as orjson's text);
    ``plain`` when every value survives a JSON round trip unchanged. None: use to_pylist."""
    names = batch.schema.names
    if not names or len(set(names)) != len(names):
        return None
    state = _State()
    try:
        cols = [_values(col, state) for col in batch.columns]
    except _Fallback:
        return None
    return [dict(zip(names, vals, strict=False)) for vals in zip(*cols, strict=False)], state.plain


def _values(arr: pa.Array, state: _State) -> list:
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
            raise _Fallback
        kids = [_values(c, state) for c in arr.flatten()]
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
                raise _Fallback  # not a JSON object key
            keys = _values(arr.keys.slice(start, n), state)
            items = _values(arr.items.slice(start, n), state)
            lists = [dict(zip(keys[a:b], items[a:b], strict=False)) for a, b in spans]
            if any(len(d) != b - a for d, (a, b) in zip(lists, spans, strict=False)):
                raise _Fallback  # duplicate keys: to_pylist warns and keeps the last
        else:
            vals = _values(arr.values.slice(start, n), state)
            lists = [vals[a:b] for a, b in spans]
        if arr.null_count:
            valid = arr.is_valid().to_pylist()
            lists = [v if ok else None for v, ok in zip(lists, valid, strict=True)]
        return lists
    raise _Fallback  # dictionary, binary, decimal, date, time, duration, extension...


def _timestamps(arr: pa.Array) -> list:
    t = arr.type
    if t.unit not in ("s", "ms", "us") or t.tz not in _UTC_ZONES:
        raise _Fallback
    try:
        us = arr.cast(_TS_US[t.tz])
    except pa.ArrowInvalid:  # overflow
        raise _Fallback from None
    if arr.null_count < len(arr):
        lo, hi = pc.min_max(us.cast(pa.int64())).values()
        if lo.as_py() < _MIN_TS_US or hi.as_py() > _MAX_TS_US:
            raise _Fallback  # to_pylist cannot make a datetime of it
    # "YYYY-MM-DD HH:MM:SS.ffffff" -> orjson's "YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00"
    text = pc.replace_substring(us.cast(_TS_NAIVE_US).cast(pa.string()), " ", "T",
                                max_replacements=1)
    text = pc.if_else(pc.ends_with(text, ".000000"), pc.utf8_slice_codeunits(text, 0, -7), text)
    return pc.binary_join_element_wise(text, "+00:00", "").to_pylist()
