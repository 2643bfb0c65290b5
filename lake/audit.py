"""The audit trail: who did what to which resource, and how it ended.

Events go to an in-memory buffer that a background thread appends to the ``audit`` table
every ``interval_s`` (one Lance commit per flush, not per event, so a storm of refused
calls costs a commit every half second); ``record(..., flush=True)`` (admin actions)
writes at once, and ``close()`` writes what is left; a server's events are journaled too,
so a kill loses none. ``audit`` is a system table: not pinned by lake versions, so time
travel and restore leave the trail as it is.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .records import now_us
from .row_buffer import Journal, RowBuffer
from .schema import AUDIT
from .tables import TableStore

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, store: TableStore, *, interval_s: float = 0.5,
                 max_buffer: int = 10_000, compact_fragments: int = 32,
                 journal_dir: Path | None = None):
        """``journal_dir`` (a server's: the writer's log directory): each event is also
        written to a local journal as it is recorded, so a killed server loses none of the
        events buffered for the next append (``row_buffer.Journal``)."""
        self.store = store
        self.interval_s, self.max_buffer = interval_s, max_buffer
        self._said = -60.0  # when a failed append was last logged
        journal = Journal.claim(journal_dir, "audit")
        self._rows = RowBuffer(store, "audit", AUDIT, ensure=True,
                               compact_fragments=compact_fragments, journal=journal)
        if journal is not None:
            self._recover(journal.left())

    def _recover(self, rows: list[dict[str, Any]]) -> None:
        """Events a killed server recorded and had not appended: appended now (those the
        table has already, appended before the kill, are known by time, actor and action)."""
        if not rows:
            return
        have: set[tuple] = set()
        if self.store.exists("audit"):
            since = pa.scalar(min(r["time"] for r in rows), pa.timestamp("us", tz="UTC"))
            got = self.store.dataset("audit").to_table(
                columns=["time", "actor", "action"], filter=pc.field("time") >= since)
            times = got["time"].cast(pa.int64()).to_pylist()
            have = set(zip(times, got["actor"].to_pylist(), got["action"].to_pylist(),
                           strict=True))
        for r in rows:
            if (r["time"], r["actor"], r["action"]) not in have:
                self._rows.add(r)
        self.flush()

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
            try:
                self.flush()
            except Exception as e:  # noqa: BLE001 - a server's rows wait for its next flush
                if not self._rows.started:
                    raise  # a one-shot log (the CLI's): nothing will append them later
                self._flush_failed(e)

    def _flush_failed(self, e: Exception) -> None:
        """A running server's audit append failed (a full disk): the call it records is
        answered as it was, its rows stay buffered (and journaled) for the next flush."""
        if time.monotonic() - self._said >= 60:
            self._said = time.monotonic()
            log.error("audit rows could not be appended (%s): kept for the next attempt", e)

    def flush(self) -> None:
        """Append everything buffered so far (one commit)."""
        self._rows.flush()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        self._rows.stop()
