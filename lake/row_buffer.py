"""Rows bound for one table, appended in bulk (the audit trail, the context log).

A Lance append is a commit (~13 ms for 1,000 rows), so callers buffer rows and append many
at once. ``add`` holds a lock for a few instructions (callers may run on an event loop);
``flush`` appends everything buffered as one commit, one flush at a time; the rows of a
failed append stay buffered, in order, for the next flush.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa


class RowBuffer:
    def __init__(self, store: Any, table: str, schema: pa.Schema, *, ensure: bool = False,
                 after: Callable[[], None] | None = None):
        """``ensure``: create the table first if needed; ``after``: run after each append,
        still inside the flush (no other append meanwhile: maintenance such as compaction)."""
        self.store, self.table, self.schema, self.ensure = store, table, schema, ensure
        self.after = after
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards the rows
        self._write_lock = threading.Lock()  # one flush at a time

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
            if self.after is not None:
                self.after()
            return len(rows)
