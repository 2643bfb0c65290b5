"""Rows bound for one table, appended in bulk (the audit trail, the context log).

A Lance append is a commit (~13 ms for 1,000 rows), so callers buffer rows and append many
at once. ``add`` holds a lock for a few instructions (callers may run on an event loop);
``flush`` appends everything buffered as one commit, one flush at a time; the rows of a
failed append stay buffered, in order, for the next flush. ``start`` adds a thread that
flushes every ``interval_s`` (rows never wait longer to be readable), and the table is
compacted now and then so that small appends do not pile up fragments.

A ``Journal`` (optional) writes each row to a local file as it is added (handed to the OS,
not fsynced: a killed process loses none, a crashed machine its last moments), rotated at
each flush and deleted once the flush's append succeeded; rows left by a killed process
are appended when the next one opens it (``Journal.left``).
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

log = logging.getLogger(__name__)
COMPACT_EVERY = 32  # flushes between fragment-count checks


class RowBuffer:
    def __init__(self, store: Any, table: str, schema: pa.Schema, *, ensure: bool = False,
                 compact_fragments: int = 32, journal: Journal | None = None):
        """``ensure``: create the table first if needed; ``compact_fragments``: compact the
        table when it has more fragments than this (checked every ``COMPACT_EVERY`` flushes,
        inside the flush: no other append meanwhile)."""
        self.store, self.table, self.schema, self.ensure = store, table, schema, ensure
        self.compact_fragments, self.journal = compact_fragments, journal
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards the rows
        self._write_lock = threading.Lock()  # one flush at a time
        self._flushes = 0
        self._wake = threading.Event()  # flush now (``wake``), or stop
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._journal_said = -60.0

    def add(self, row: dict[str, Any]) -> int:
        """Buffer ``row``; returns how many rows are buffered now."""
        with self._lock:
            if self.journal is not None:
                try:
                    self.journal.write(row)
                except (OSError, ValueError) as e:  # a full disk: the row is kept, in memory
                    self._journal_failed(e)
            self._rows.append(row)
            return len(self._rows)

    def _journal_failed(self, e: OSError) -> None:
        """Said once a minute: a refused call's audit row must not turn its clear refusal
        (the disk is full) into an internal error."""
        if time.monotonic() - self._journal_said >= 60:
            self._journal_said = time.monotonic()
            log.error("%s: could not journal a row (%s); rows are kept in memory until the "
                      "table append (a crash before it loses them). Free space on %s",
                      self.table, e, self.journal.dir if self.journal else "its disk")

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Append everything buffered (one commit); returns how many rows were written."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
                try:
                    files = self.journal.rotate() if self.journal is not None and rows else []
                except OSError as e:  # the rows go on, kept in the file still open
                    files = []
                    self._journal_failed(e)
            if not rows:
                return 0
            try:
                if self.ensure:
                    self.store.ensure(self.table)
                self.store.append(self.table, pa.Table.from_pylist(rows, schema=self.schema))
            except Exception:
                with self._lock:  # keep them for the next attempt
                    self._rows[:0] = rows
                raise
            if self.journal is not None:
                self.journal.done(files)
            self._flushes += 1
            if self._flushes % COMPACT_EVERY == 0 and \
                    self.store.fragments(self.table) > self.compact_fragments:
                self.store.compact(self.table)
            return len(rows)

    def start(self, interval_s: float) -> None:
        """Flush every ``interval_s`` on a thread of its own, until ``stop``."""
        self._wake.clear()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True,
                                        name=f"lake-{self.table}-log")
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def wake(self) -> None:
        """Flush now on the started thread (which keeps to one flush at a time)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (if started) and flush what is left."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        self.flush()
        if self.journal is not None:
            self.journal.close()

    def _run(self, interval_s: float) -> None:
        while True:
            self._wake.wait(interval_s)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the rows stay buffered; try again next tick
                log.exception("appending to the %s table failed; the rows stay buffered and "
                              "are retried", self.table)


class Journal:
    """A ``RowBuffer``'s rows in local files, ``<name>-<n>.jsonl`` in ``directory`` (the
    writer's log directory). One journal of a name writes there at a time (``<name>.lock``):
    ``BlockingIOError`` if another holds it, in this process or another."""

    def __init__(self, directory: Path, name: str):
        self.dir, self.name = Path(directory), name
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = open(self.dir / f"{name}.lock", "ab")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise
        old = sorted(self.dir.glob(f"{name}-*.jsonl"), key=lambda p: int(p.stem.rsplit("-")[-1]))
        self._pending: list[Path] = old  # rotated, not known appended
        self._n = int(old[-1].stem.rsplit("-")[-1]) + 1 if old else 0
        self._file = self._open()

    @classmethod
    def claim(cls, directory: Path | None, name: str) -> Journal | None:
        """The journal ``name`` in ``directory``; None without a directory, or when another
        holds it (in this process or another: that one journals, this buffer only appends)."""
        if directory is None:
            return None
        try:
            return cls(directory, name)
        except BlockingIOError:
            log.info("another %s journal is open in %s; this one appends only", name,
                     directory)
            return None

    def left(self) -> list[dict[str, Any]]:
        """The rows of files an earlier process left (maybe appended already: the caller
        keeps those not in the table); the files go once the next flush succeeds."""
        rows = []
        for path in self._pending:
            for line in path.read_bytes().splitlines():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError:  # the torn last line of a killed write
                    log.warning("%s: a torn line skipped", path)
        return rows

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(row, default=str) + b"\n")
        self._file.flush()

    def rotate(self) -> list[Path]:
        """Start a new file; returns the files whose rows the flush under way appends. If
        the new file cannot be made (a full disk), nothing changes and this raises."""
        new = self._open()
        self._file.close()
        self._pending.append(Path(self._file.name))
        self._file = new
        return list(self._pending)

    def done(self, files: list[Path]) -> None:
        for path in files:
            path.unlink(missing_ok=True)
            if path in self._pending:
                self._pending.remove(path)

    def close(self) -> None:
        self._file.close()
        if not Path(self._file.name).stat().st_size:
            Path(self._file.name).unlink(missing_ok=True)
        self._lock.close()  # and its lock

    def _open(self) -> Any:
        path = self.dir / f"{self.name}-{self._n}.jsonl"
        self._n += 1
        return open(path, "ab")  # noqa: SIM115 - held open until rotated
