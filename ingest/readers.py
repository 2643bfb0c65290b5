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
import pyarrow.parquet as pq

from lake.arrow_values import pylist as _pylist
from lake.errors import InvalidArgument
from lake.export import MANIFEST as EXPORT_MANIFEST

SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".parquet", ".arrow", ".arrows", ".feather")
ARROW_KINDS = ("parquet", "arrow")  # one record per row of Arrow record batches
BATCH_ROWS = 2048  # Parquet rows read (and validated) at a time
READ_ERRORS = (OSError, pa.ArrowException, EOFError, zlib.error)


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
        except READ_ERRORS as e:
            raise InvalidArgument(f"cannot read {self.kind} file: {e}; check the file is "
                                  "complete and of the type its name says",
                                  location=str(self.path)) from e

    def __iter__(self) -> Iterator[Item]:
        try:
            if self.kind in ("jsonl", "jsonl.gz"):
                yield from self._jsonl()
            elif self.kind == "lake-export":
                yield from self._export
            else:
                for first, batch in self.batches():
                    yield from self.items(batch, first)
        except READ_ERRORS as e:
            yield self.damaged(e)

    def batches(self) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Parquet / Arrow IPC: each record batch, with the number of rows before it.
        Raises what a damaged file raises (see ``damaged``)."""
        if self.kind == "parquet":  # decoded in a thread while we convert rows
            source, total = _prefetch(self._pq.iter_batches(batch_size=BATCH_ROWS)), \
                self._pq.metadata.num_rows
        else:
            source, total = self._arrow, None
        row = 0
        for batch in source:
            yield row, batch
            row += batch.num_rows
            if total:
                self.position = lambda done=row: int(self.size * done / total)

    def damaged(self, e: BaseException) -> Item:
        return Item(f"{self.path}", None, f"file is damaged from here on: {e}; the records "
                    "before this point were read")

    def items(self, batch: pa.RecordBatch, first: int,
              rows: list[int] | None = None) -> Iterator[Item]:
        """The batch's rows (all, or those of ``rows``) as records, one JSON object each;
        ``first``: the rows of the file before the batch."""
        if rows is not None:
            batch = batch.take(pa.array(rows, pa.int64()))
        converted = _pylist(batch)
        if converted is None:
            objs, plain = batch.to_pylist(maps_as_pydicts="lossy"), False
        else:
            objs, plain = converted
        for i, obj in enumerate(objs):
            loc = f"{self.path}:row {first + 1 + (i if rows is None else rows[i])}"
            try:
                raw = orjson.dumps(obj, option=orjson.OPT_NAIVE_UTC)
            except TypeError as e:
                yield Item(loc, None, f"a value cannot be read as JSON: {e}")
                continue
            yield Item(loc, raw, obj=obj if plain else None)

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


@dataclass(slots=True)
class LineBlock:
    """Consecutive lines of a JSONL file: ``items`` (one per non-blank line, stripped),
    ``data``, their text for a JSON reader (one line each, in order), and the length of the
    longest."""

    items: list[Item]
    data: bytes
    longest: int


def jsonl_blocks(reader: Reader, size: int) -> Iterator[LineBlock]:
    """The lines of a JSONL ``reader`` (as it reads them one by one) in blocks of about
    ``size`` bytes. Raises what a damaged file raises, after the block of the lines read
    before the damage."""
    items: list[Item] = []
    got = longest = 0

    def block() -> LineBlock:
        return LineBlock(items, b"\n".join(i.raw for i in items), longest)

    try:
        for item in reader._jsonl():
            items.append(item)
            got += len(item.raw)
            longest = max(longest, len(item.raw))
            if got >= size:
                yield block()
                items, got, longest = [], 0, 0
    except READ_ERRORS:
        if items:
            yield block()
        raise
    if items:
        yield block()


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
