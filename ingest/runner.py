"""Batch ingest: files in, durable trajectories out, bad records quarantined.

Records are validated one by one; good ones are logged durably in chunks (each chunk is
acknowledged once it is fsynced in the write-ahead log) while the lake commits earlier
chunks in the background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lake import Lake
from lake.errors import InvalidArgument
from lake.records import normalize_line

from .quarantine import Quarantine
from .readers import Reader, expand

CHUNK_RECORDS = 2000

# Exit codes of `lake ingest` (documented in the README).
EXIT_OK, EXIT_NOTHING_READ, EXIT_SOME_REJECTED = 0, 1, 2


@dataclass
class Summary:
    files: int = 0
    trajectories: int = 0
    steps: int = 0
    rejected: int = 0
    quarantine: str | None = None
    unreadable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "trajectories": self.trajectories, "steps": self.steps,
                "rejected": self.rejected, "quarantine": self.quarantine,
                "unreadable": self.unreadable}

    @property
    def exit_code(self) -> int:
        if self.files and len(self.unreadable) == self.files:
            return EXIT_NOTHING_READ
        if self.rejected or self.unreadable:
            return EXIT_SOME_REJECTED
        return EXIT_OK


def ingest_paths(lake: Lake, paths: list[str], *, tenant: str | None = None,
                 quarantine: Quarantine | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_ack: Callable[[dict[str, Any]], None] | None = None) -> Summary:
    """Ingest files/directories. ``on_progress(done_bytes, total_bytes)``; ``on_ack`` gets
    ``{"file", "through", "trajectories", "lsn"}`` each time a chunk is durable."""
    files = expand(paths)
    quarantine = quarantine or Quarantine(directory=lake.settings.quarantine_path)
    summary = Summary(files=len(files))
    total = sum(f.stat().st_size for f in files)
    done = 0
    for path in files:
        try:
            reader = Reader(path)
        except InvalidArgument as e:
            summary.unreadable.append(str(e))
            quarantine.add(str(path), e.message, None, None)
            continue
        _ingest_file(lake, reader, tenant, quarantine, summary, on_ack,
                     lambda: on_progress(done + reader.position(), total) if on_progress else None)
        done += reader.size
        if on_progress:
            on_progress(done, total)
    lake.flush()
    quarantine.close()
    summary.rejected = quarantine.count - len(summary.unreadable)
    summary.quarantine = str(quarantine.path) if quarantine.used else None
    return summary


def _ingest_file(lake: Lake, reader: Reader, tenant: str | None, quarantine: Quarantine,
                 summary: Summary, on_ack: Callable | None, tick: Callable[[], None]) -> None:
    ctx = lake.context(tenant)
    records, lines = [], []
    last = ""

    def submit() -> None:
        lsn = lake.submit(records, lines, ctx)
        summary.trajectories += len(records)
        summary.steps += sum(r.trajectory["n_steps"] for r in records)
        if on_ack:
            on_ack({"file": str(reader.path), "through": last, "trajectories": len(records),
                    "lsn": lsn})
        records.clear()
        lines.clear()
        tick()

    for item in reader:
        last = item.location
        if item.raw is None:
            quarantine.add(item.location, item.error or "unreadable", None, None)
            continue
        try:
            rec = normalize_line(item.raw, ctx)
        except InvalidArgument as e:
            quarantine.add(item.location, e.message, e.field, item.raw)
            continue
        records.append(rec)
        lines.append(item.raw)
        if len(records) >= CHUNK_RECORDS:
            submit()
    if records:
        submit()
