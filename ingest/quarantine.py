"""The quarantine: rejected records with their location, reason and original text."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import IO

import orjson

_LOADS = itertools.count(1)  # loads of this process (two in one second: two files)


class Quarantine:
    """Appends one JSON line per rejected record; the file is created on first reject."""

    def __init__(self, path: Path | None = None, directory: Path | None = None):
        if path is None:  # one file per load: the second, the process, and a count within it
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            path = Path(directory or "quarantine") / \
                f"ingest-{stamp}-{os.getpid()}-{next(_LOADS)}.jsonl"
        self.path = Path(path)
        self.count = 0
        self._f: IO[bytes] | None = None

    def add(self, location: str, reason: str, field: str | None, text: str | bytes | None) -> None:
        if self._f is None:  # rejected records are data: their owner's only, as the lake's
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._f = open(fd, "ab")  # noqa: SIM115 - closed by close()
        file, _, line = location.rpartition(":")
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        entry = {"location": location, "file": file or location, "line": _line(line),
                 "reason": reason, "field": field, "text": text}
        self._f.write(orjson.dumps(entry) + b"\n")
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None

    @property
    def used(self) -> bool:
        return self.count > 0


def _line(text: str) -> int | None:
    text = text.removeprefix("row ").removeprefix("record ").strip()
    return int(text) if text.isdigit() else None
