"""What a running server watches beside its calls: the writer's health (gRPC health says
when the lake takes no writes) and, hourly, if set, the runs left running past
``abandon_after`` and the vacuum of versions past ``keep_versions``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from grpc_health.v1 import health_pb2

from lake import Lake, stale
from lake.errors import LakeError
from lake.vacuum import parse_age

log = logging.getLogger(__name__)

WATCH_S = 1.0  # how often the writer's state is looked at
VACUUM_EVERY_S = 3600.0
SERVING, NOT_SERVING = (health_pb2.HealthCheckResponse.SERVING,
                        health_pb2.HealthCheckResponse.NOT_SERVING)


class Housekeeper:
    def __init__(self, lake: Lake, set_health: Callable[[str, int], None],
                 write_services: tuple[str, ...], keep_versions: str,
                 abandon_after: str = ""):
        """``set_health(service, status)``; ``write_services``: those that take writes."""
        self.lake, self.set_health, self.write_services = lake, set_health, write_services
        self.keep = parse_age(keep_versions) if keep_versions else None
        self.abandon_after = parse_age(abandon_after) if abandon_after else None
        self.state = "ok"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lake-housekeeping",
                                        daemon=True)

    def start(self) -> Housekeeper:
        if self.lake.writer is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # a vacuum under way holds the writer: the lake
            self._thread.join()  # closes after it

    def _run(self) -> None:
        next_vacuum = time.monotonic() + VACUUM_EVERY_S
        while not self._stop.wait(WATCH_S):
            try:  # whatever fails, health goes on being watched
                self.watch()
                if time.monotonic() >= next_vacuum:
                    next_vacuum = time.monotonic() + VACUUM_EVERY_S
                    if self.abandon_after is not None:
                        self.abandon()
                    if self.keep is not None:
                        self.vacuum()
            except Exception:  # noqa: BLE001 - logged; the next turn tries again
                log.exception("housekeeping failed (it runs again)")

    def watch(self) -> None:
        """Health follows the writer: its write services NOT_SERVING while it waits on a
        disk, and the whole server's too once it stopped (only a restart brings it back:
        an orchestrator's health probe should restart it)."""
        state = self.lake.writer.state if self.lake.writer is not None else "ok"
        if state == self.state:
            return
        self.state = state
        for name in self.write_services:
            self.set_health(name, SERVING if state == "ok" else NOT_SERVING)
        self.set_health("", NOT_SERVING if state == "stopped" else SERVING)
        (log.warning if state == "ok" else log.error)(
            "the lake's writer is %s: health of %s now %s", state,
            ", ".join(self.write_services), "SERVING" if state == "ok" else "NOT_SERVING")

    def abandon(self) -> None:
        """Finish as abandoned the runs left running past ``abandon_after`` (``lake/stale``)."""
        done = stale.abandon(self.lake, self.abandon_after)
        if done:
            log.warning("finished %d run(s) left running for over %s as abandoned (e.g. %s "
                        "of tenant %r)", len(done), self.abandon_after, done[0][1], done[0][0])

    def vacuum(self) -> None:
        try:
            r = self.lake.vacuum(self.keep)
        except Exception as e:  # noqa: BLE001 - Lance raises OSError, RuntimeError too
            log.error("the hourly vacuum failed: %s (it runs again in an hour)", e,
                      exc_info=not isinstance(e, LakeError))
            return
        if r.unreadable:
            log.info("vacuum: the files of %d versions older than %d removed (%d bytes)",
                     len(r.unreadable), r.horizon, r.bytes_removed)
