"""The audit trail: who did what to which resource, and how it ended.

Events go to an in-memory buffer that a background thread appends to the ``audit`` table
every ``interval_s`` (one Lance commit per flush, not per event, so a storm of refused
calls costs a commit every half second); ``record(..., flush=True)`` (admin actions)
writes at once, and ``close()`` writes what is left. ``audit`` is a system table: not
pinned by lake versions, so time travel and restore leave the trail as it is.
"""

from __future__ import annotations

from typing import Any

import orjson

from .records import now_us
from .row_buffer import RowBuffer
from .schema import AUDIT
from .tables import TableStore


class AuditLog:
    def __init__(self, store: TableStore, *, interval_s: float = 0.5,
                 max_buffer: int = 10_000, compact_fragments: int = 32):
        self.store = store
        self.interval_s, self.max_buffer = interval_s, max_buffer
        self._rows = RowBuffer(store, "audit", AUDIT, ensure=True,
                               compact_fragments=compact_fragments)

    def start(self) -> AuditLog:
        self._rows.start(self.interval_s)
        return self

    def record(self, *, tenant: str, actor: str, action: str, outcome: str,
               resource: str | None = None, token_id: str | None = None,
               detail: dict[str, Any] | None = None, flush: bool = False) -> None:
        row = {"tenant": tenant, "time": now_us(), "actor": actor, "token_id": token_id,
               "action": action, "resource": resource, "outcome": outcome,
               "detail": orjson.dumps(detail, default=str).decode() if detail else None}
        full = self._rows.add(row) >= self.max_buffer
        if flush or full or not self._rows.started:
            self.flush()

    def flush(self) -> None:
        """Append everything buffered so far (one commit)."""
        self._rows.flush()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        self._rows.stop()
