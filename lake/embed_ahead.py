"""Embedding ahead: the tasks of tenants whose index is not loaded are embedded, and their
vectors stored, as they commit, on a thread of their own. A tenant's first lookup then
reads vectors instead of running the model over every task it holds (minutes for tens of
thousands), and this work never holds up the indexer, whose progress every tenant's
read-your-writes lookup waits on."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_QUEUED = 200_000  # tasks waiting; past it a commit's tasks wait for the index's load
CHUNK = 256  # tasks embedded (and stored) at a time


class EmbedAhead:
    def __init__(self, embed: Callable[[list[str], list[str]], Any]):
        """``embed(hashes, tasks)``: embed and store those not stored yet."""
        self._embed = embed
        self._queue: deque[tuple[str, str, str, str]] = deque()  # tenant, id, hash, task
        self._cv = threading.Condition()
        self._closed, self._said_full, self._busy = False, False, False
        self._thread = threading.Thread(target=self._run, name="lake-embed-ahead",
                                        daemon=True)
        self._thread.start()

    def add(self, tenant: str, rows: list[dict[str, Any]]) -> None:
        with self._cv:
            if len(self._queue) + len(rows) > MAX_QUEUED:
                if not self._said_full:
                    self._said_full = True
                    log.warning("more than %d tasks wait to be embedded ahead: the others "
                                "are embedded when their tenant's index loads", MAX_QUEUED)
                return
            self._queue.extend((tenant, r["trajectory_id"], r["task_hash"], r["task"])
                               for r in rows)
            self._cv.notify()

    def forget(self, tenant: str, ids: list[str]) -> None:
        """Retracted (or purged): not embedded ahead after all."""
        gone = set(ids)
        with self._cv:
            self._queue = deque(x for x in self._queue if x[0] != tenant or x[1] not in gone)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                batch = [self._queue.popleft() for _ in range(min(CHUNK, len(self._queue)))]
                self._busy = True
            try:
                self._embed([b[2] for b in batch], [b[3] for b in batch])
            except Exception:  # noqa: BLE001 - best effort: the index's load embeds them
                log.exception("embedding tasks ahead failed")
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until every queued task is embedded (tests, a clean shutdown)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=60)
