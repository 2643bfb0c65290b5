"""The contexts the semantic cache served: kept in memory for ``report``, appended to the
``contexts`` table in bulk.

A Lance append costs ~13 ms for 1,000 rows and ~23 ms for 5,000, so served contexts are
buffered and appended ``CONTEXT_LOG_ROWS`` at a time, or after ``CONTEXT_LOG_SECONDS``
(SQL sees a served context by then, however quiet the server), and at close, by a thread of
their own: ``remember`` may run on the server's event loop and never waits for storage. Recent
contexts (``RECENT``) stay in memory so a report finds its context without a read. With a
journal directory (the writer's log directory), each served context is also written to a
local file as it is served (``row_buffer.Journal``), so a killed server loses none: the
next one appends those not in the table yet, and a report on them still finds them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from .row_buffer import Journal, RowBuffer
from .schema import CONTEXTS
from .tables import quote

log = logging.getLogger(__name__)
CONTEXT_LOG_ROWS = 5_000  # ~5 us a served context
CONTEXT_LOG_SECONDS = 5.0  # the longest a served context waits to be readable by SQL
RECENT = 100_000


class ContextLog:
    def __init__(self, store: Any, journal_dir: Path | None = None):
        self.store = store
        self._recent: dict[str, dict[str, Any]] = {}  # context_id -> what was served
        journal = Journal.claim(journal_dir, "contexts")
        self._rows = RowBuffer(store, "contexts", CONTEXTS, journal=journal)
        self._lock = threading.Lock()  # recent (held for a few instructions)
        if journal is not None:
            self._recover(journal.left())
        self._rows.start(CONTEXT_LOG_SECONDS)

    def _recover(self, rows: list[dict[str, Any]]) -> None:
        """Contexts a killed server served and had not appended yet: appended now."""
        by_tenant: dict[str, list[str]] = {}
        for r in rows:
            by_tenant.setdefault(r["tenant"], []).append(r["context_id"])
        stored: set[str] = set()
        if self.store.exists("contexts"):
            for tenant, ids in by_tenant.items():
                stored.update(self.store.lookup("contexts", tenant, "context_id", ids,
                                                ["context_id"])["context_id"].to_pylist())
        lost = {r["context_id"]: r for r in rows if r["context_id"] not in stored}
        for row in lost.values():
            self.remember(row)
        if lost:
            log.warning("%d served context(s) of a server that stopped before appending "
                        "them: appended now", len(lost))

    def remember(self, row: dict[str, Any]) -> None:
        buffered = self._rows.add(row)
        with self._lock:
            self._recent[row["context_id"]] = row
            if len(self._recent) > RECENT:
                self._recent.pop(next(iter(self._recent)))
        if buffered >= CONTEXT_LOG_ROWS:
            self._rows.wake()

    def get(self, context_id: str) -> dict[str, Any] | None:
        """A served context: from memory, else from the table."""
        row = self._recent.get(context_id)
        if row is None:
            self.flush()
            found = self.store.dataset("contexts").to_table(
                filter=f"context_id = {quote(context_id)}").to_pylist()
            row = found[0] if found else None
        return row

    def served_here(self, context_id: str) -> bool:
        """Served by this process and still in memory (else by another process, or by
        this lake's server before a restart)."""
        return context_id in self._recent

    def flush(self) -> None:
        self._rows.flush()

    def close(self) -> None:
        self._rows.stop()
