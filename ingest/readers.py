"""Read trajectory files: JSONL (optionally gzipped), Parquet, Arrow IPC (file or stream).

Each reader yields ``Item``s: one per record, with its location (``file:line``,
``file:row N``, or ``file:record N`` in a JSON array) and either the raw JSON bytes of the
record or the reason it could not be read. A UTF-8 byte order mark (BOM) at the start of
a JSON file is skipped: Windows tools write one. A file that cannot be opened raises
``InvalidArgument`` before yielding anything; one damaged part way (a gzip stream or an
Arrow file cut short, a corrupt Parquet page) yields its records up to the damage, then one
item naming where the damage starts and what to do.
"""

from __future__ import annotations

import codecs
import gzip
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from lake.arrow_values import pylist as _pylist
from lake.arrow_values import refuse_repeated_column
from lake.errors import InvalidArgument

# name ending -> kind. JSON Lines under every name the tools writing it use (Spark and
# BigQuery name theirs part-00000.json / .json.gz); a .json file may also hold one JSON
# array of records (``_json_array``). No ending is the end of another.
KINDS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl.gz", ".ndjson": "jsonl",
         ".ndjson.gz": "jsonl.gz", ".json": "jsonl", ".json.gz": "jsonl.gz",
         ".parquet": "parquet", ".arrow": "arrow", ".arrows": "arrow", ".feather": "arrow"}
SUFFIXES = tuple(KINDS)
ARROW_KINDS = ("parquet", "arrow")  # one record per row of Arrow record batches
BATCH_ROWS = 2048  # Parquet rows read (and validated) at a time
READ_ERRORS = (OSError, pa.ArrowException, EOFError, zlib.error)
ARROW_FILE_MAGIC = b"ARROW1"  # an Arrow IPC file: this (padded to 8), a stream, a footer
BOM = codecs.BOM_UTF8  # skipped at the start of a JSON file
JSON_ARRAY_MAX_BYTES = 256 << 20  # a .json array is parsed whole: larger ones are refused


@dataclass(slots=True)
class Item:
    location: str
    raw: bytes | None  # the record as one JSON object
    error: str | None = None
    obj: dict | None = None  # when set: equal to orjson.loads(raw), spares parsing it


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, kind in KINDS.items():
        if name.endswith(suffix):
            return kind
    return None


def size_of(path: Path) -> int:
    """Bytes to read: a file's size; for a `lake export` directory, its table files'."""
    if path.is_dir():
        from .lake_export import size_of as export_size

        return export_size(path)
    return path.stat().st_size


class Reader:
    """Iterate the records of one file; ``position()`` is bytes consumed (for progress)."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = "lake-export" if path.is_dir() else kind_of(path)
        self.size = size_of(path)
        self.position: Callable[[], int] = lambda: 0
        self.consumed = 0  # lines (JSONL) or rows (Parquet, Arrow) read: damage starts after
        self._array: list | None = None  # the records of a .json file holding one array
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
            if self.kind in ("jsonl", "jsonl.gz") and self.path.name.lower().endswith(
                    (".json", ".json.gz")):
                self._array = _json_array(self.path, self.kind)
                if self._array is not None:
                    self.kind = "json-array"
        except READ_ERRORS as e:
            raise InvalidArgument(f"cannot read {self.kind} file: {e}; check the file is "
                                  "complete and of the type its name says",
                                  location=str(self.path)) from e
        schema = self._pq.schema_arrow if self.kind == "parquet" else getattr(
            self._arrow, "schema", None) if self.kind == "arrow" else None
        if schema is not None:
            refuse_repeated_column(schema.names, location=str(self.path))
        if schema is not None and "task" not in schema.names:  # not a row per rejection
            raise InvalidArgument(
                f"has no task column (it has {', '.join(schema.names[:12]) or 'none'}): "
                "every record needs its task (docs/format.md); name the column that holds "
                "it task", location=str(self.path))

    def __iter__(self) -> Iterator[Item]:
        try:
            if self.kind in ("jsonl", "jsonl.gz"):
                yield from self._jsonl()
            elif self.kind == "lake-export":
                yield from self._export
            elif self.kind == "json-array":
                yield from self._array_items()
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
        row = self.consumed = 0
        for batch in source:
            yield row, batch
            row += batch.num_rows
            self.consumed = row
            if total:
                self.position = lambda done=row: int(self.size * done / total)

    def damaged(self, e: BaseException) -> Item:
        """The item for damage found after the first ``consumed`` lines / rows: located
        where it starts (the records before it were read), saying what to do."""
        if self.kind == "lake-export":
            return Item(str(self.path), None, f"the export is damaged ({e}): export it again "
                        "or re-copy it; the records read before the damage were kept")
        n = self.consumed
        if self.kind in ("jsonl", "jsonl.gz"):
            return Item(f"{self.path}:{n + 1}", None, _damage(self.kind, e, "line", n))
        return Item(f"{self.path}:row {n + 1}", None, _damage(self.kind or "", e, "row", n))

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
        self.consumed = 0
        with opener(self.path, "rb") as f:
            self.position = _tell(getattr(f, "fileobj", None) or f, self.size)
            for n, line in enumerate(f, 1):
                self.consumed = n
                line = (line.removeprefix(BOM) if n == 1 else line).strip()
                if line:
                    yield Item(f"{self.path}:{n}", line)
        self.position = lambda: self.size

    def _array_items(self) -> Iterator[Item]:
        self.position = lambda: self.size  # read whole when opened
        records, self._array = self._array or [], None
        for n, obj in enumerate(records, 1):
            yield Item(f"{self.path}:record {n}", orjson.dumps(obj), obj=obj)


def _json_array(path: Path, kind: str) -> list | None:
    """The records of a .json file that holds one JSON array of them (its first character
    after any BOM and white space is ``[``); None for any other file (read as JSON Lines).
    Raises ``InvalidArgument`` when that array cannot be read whole."""
    with (gzip.open if kind == "jsonl.gz" else open)(path, "rb") as f:
        head = f.read(4096)
        if not head.removeprefix(BOM).lstrip().startswith(b"["):
            return None
        data = head + f.read(max(0, JSON_ARRAY_MAX_BYTES + 1 - len(head)))
    if len(data) > JSON_ARRAY_MAX_BYTES:
        raise InvalidArgument(
            f"holds a JSON array of more than {JSON_ARRAY_MAX_BYTES:,} bytes, which would be "
            "read whole into memory: write it as JSON Lines, one record per line (e.g. "
            f"`jq -c '.[]' {path.name} > records.jsonl`), and ingest that", location=str(path))
    try:
        records = orjson.loads(data.removeprefix(BOM))
    except orjson.JSONDecodeError as e:
        raise InvalidArgument(
            f"starts with '[' but is not one JSON array ({e}); a .json file is read as one "
            "JSON array of records or as JSON Lines (one record per line): fix the array, or "
            "write it as JSON Lines", location=str(path)) from e
    return records


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


def _damage(kind: str, e: BaseException, unit: str, n: int) -> str:
    """Why a file's records stop after ``unit n``, and what to do about it."""
    what = {"jsonl.gz": "the gzip stream", "parquet": "the Parquet file",
            "arrow": "the Arrow data"}.get(kind, "the file")
    again = "re-copy the file and ingest it again"
    if isinstance(e, gzip.BadGzipFile) and str(e).startswith(("CRC check", "Incorrect length")):
        # checked only at the stream's end: where the bytes went wrong is unknown
        return (f"{what} fails its check ({e}) at its end, after {unit} {n}: {unit}s read "
                f"from it may hold wrong bytes; {again} (a re-run skips what landed)")
    if isinstance(e, EOFError):
        how = "ends early (truncated or corrupt)"
    else:
        how = f"is {'corrupt' if kind == 'jsonl.gz' else 'damaged'} ({e})"
    return (f"{what} {how} after {unit} {n}: {again}; the {unit}s before it were read "
            "(a re-run skips what landed)")


def _tell(f, size: int) -> Callable[[], int]:
    """``f.tell``, for progress, that still answers once ``f`` is closed (read to its end or
    given up on, damaged): progress is asked for after that, when chunks land."""
    def position() -> int:
        try:
            return f.tell()
        except ValueError:  # closed
            return size

    return position


def _open_ipc(path: Path) -> Iterable[pa.RecordBatch]:
    with open(path, "rb") as f:
        magic = f.read(len(ARROW_FILE_MAGIC))
    if magic == ARROW_FILE_MAGIC:
        try:
            reader = pa.ipc.open_file(path)
        except pa.ArrowInvalid as e:  # no footer: a file cut short is still a stream up to there
            return _footerless(_stream_after_magic(path), e)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    return pa.ipc.open_stream(path)


def _stream_after_magic(path: Path) -> pa.RecordBatchStreamReader:
    """The stream an Arrow IPC file holds after its magic; raises if not even its schema
    can be read (then the file is unreadable, as when its footer is)."""
    source = pa.memory_map(str(path))
    source.seek(8)  # the magic, padded
    return pa.ipc.open_stream(source)


def _footerless(stream: pa.RecordBatchStreamReader,
                error: Exception) -> Iterator[pa.RecordBatch]:
    """The batches of an Arrow file without its footer, then ``EOFError``: the file was cut
    short (or its end is corrupt), so what follows its last whole batch is lost."""
    yield from stream
    raise EOFError(f"the file has no footer ({error})")
