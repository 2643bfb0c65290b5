"""Rows bound for one table, appended in bulk (the audit trail, the context log).

A Lance append is a commit (~13 ms for 1,000 rows), so callers buffer rows and append many
at once. ``add`` holds a lock for a few instructions (callers may run on an event loop);
``flush`` appends everything buffered as one commit, one flush at a time; the rows of a
failed append stay buffered, in order, for the next flush. ``start`` adds a thread that
flushes every ``interval_s`` (rows never wait longer to be readable), and the table is
compacted now and then so that small appends do not pile up fragments.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pyarrow as pa

log = logging.getLogger(__name__)
COMPACT_EVERY = 32  # flushes between fragment-count checks


class RowBuffer:
    def __init__(self, store: Any, table: str, schema: pa.Schema, *, ensure: bool = False,
                 compact_fragments: int = 32):
        """``ensure``: create the table first if needed; ``compact_fragments``: compact the
        table when it has more fragments than this (checked every ``COMPACT_EVERY`` flushes,
        inside the flush: no other append meanwhile)."""
        self.store, self.table, self.schema, self.ensure = store, table, schema, ensure
        self.compact_fragments = compact_fragments
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards the rows
        self._write_lock = threading.Lock()  # one flush at a time
        self._flushes = 0
        self._wake = threading.Event()  # flush now (``wake``), or stop
        self._stopping = False
        self._thread: threading.Thread | None = None

    def add(self, row: dict[str, Any]) -> int:
        """Buffer ``row``; returns how many rows are buffered now."""
        with self._lock:
            self._rows.append(row)
            return len(self._rows)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Append everything buffered (one commit); returns how many rows were written."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
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
