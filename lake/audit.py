"""The audit trail: who did what to which resource, and how it ended.

Events go to an in-memory buffer that a background thread appends to the ``audit`` table
every ``interval_s`` (one Lance commit per flush, not per event, so a storm of refused
calls costs a commit every half second); ``record(..., flush=True)`` (admin actions)
writes at once, and ``close()`` writes what is left. ``audit`` is a system table: not
pinned by lake versions, so time travel and restore leave the trail as it is.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson

from .records import now_us
from .row_buffer import RowBuffer
from .schema import AUDIT
from .tables import TableStore

log = logging.getLogger(__name__)
COMPACT_EVERY = 32  # flushes between fragment-count checks


class AuditLog:
    def __init__(self, store: TableStore, *, interval_s: float = 0.5,
                 max_buffer: int = 10_000, compact_fragments: int = 32):
        self.store = store
        self.interval_s, self.max_buffer = interval_s, max_buffer
        self.compact_fragments = compact_fragments
        self._rows = RowBuffer(store, "audit", AUDIT, ensure=True, after=self._appended)
        self._wake = threading.Event()
        self._stop = False
        self._flushes = 0
        self._thread: threading.Thread | None = None

    def start(self) -> AuditLog:
        self._thread = threading.Thread(target=self._run, name="lake-audit", daemon=True)
        self._thread.start()
        return self

    def record(self, *, tenant: str, actor: str, action: str, outcome: str,
               resource: str | None = None, token_id: str | None = None,
               detail: dict[str, Any] | None = None, flush: bool = False) -> None:
        row = {"tenant": tenant, "time": now_us(), "actor": actor, "token_id": token_id,
               "action": action, "resource": resource, "outcome": outcome,
               "detail": orjson.dumps(detail, default=str).decode() if detail else None}
        full = self._rows.add(row) >= self.max_buffer
        if flush or full or self._thread is None:
            self.flush()

    def flush(self) -> None:
        """Append everything buffered so far (one commit)."""
        self._rows.flush()

    def _appended(self) -> None:
        self._flushes += 1
        if self._flushes % COMPACT_EVERY == 0 and \
                self.store.fragments("audit") > self.compact_fragments:
            self.store.compact("audit")

    @property
    def pending(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval_s)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the events stay buffered; try again next tick
                log.exception("audit flush failed; the events stay buffered and are retried")
