"""Read trajectory files: JSONL (optionally gzipped), Parquet, Arrow IPC (file or stream).

Each reader yields ``Item``s: one per record, with its location (``file:line`` or
``file:row N``) and either the raw JSON bytes of the record or the reason it could not be
read. A file that cannot be opened raises ``InvalidArgument`` before yielding anything.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from lake.errors import InvalidArgument

SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".parquet", ".arrow", ".arrows", ".feather")


@dataclass(slots=True)
class Item:
    location: str
    raw: bytes | None  # the record as one JSON object
    error: str | None = None


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, kind in ((".jsonl.gz", "jsonl.gz"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                         (".parquet", "parquet"), (".arrows", "arrow"), (".arrow", "arrow"),
                         (".feather", "arrow")):
        if name.endswith(suffix):
            return kind
    return None


def expand(paths: list[str]) -> list[Path]:
    """Files to read: the given files, and supported files under given directories."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and kind_of(f)))
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
        self.kind = kind_of(path)
        self.size = path.stat().st_size
        self.position: Callable[[], int] = lambda: 0
        self._open()

    def _open(self) -> None:
        try:
            if self.kind == "parquet":
                self._pq = pq.ParquetFile(self.path)
            elif self.kind == "arrow":
                self._arrow = _open_ipc(self.path)
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
            elif self.kind == "parquet":
                yield from self._batches(self._pq.iter_batches(batch_size=1024),
                                         self._pq.metadata.num_rows)
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
            for obj in batch.to_pylist(maps_as_pydicts="lossy"):
                row += 1
                loc = f"{self.path}:row {row}"
                try:
                    yield Item(loc, orjson.dumps(obj, option=orjson.OPT_NAIVE_UTC))
                except TypeError as e:
                    yield Item(loc, None, f"a value cannot be read as JSON: {e}")
            if total_rows:
                done = row
                self.position = lambda done=done: int(self.size * done / total_rows)


def _open_ipc(path: Path):
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"ARROW1":
        reader = pa.ipc.open_file(path)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    return pa.ipc.open_stream(path)
