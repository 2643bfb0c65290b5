"""The durable write path.

``submit`` appends the records to the write-ahead log and fsyncs it: from then on they
are acknowledged. An entry holds the records' raw JSON lines (``traj``), live-trajectory
patches (``patch``), or, for Arrow input validated a batch at a time, the validated rows
with their steps as Arrow IPC (``rows``, ``lake/row_log.py``), replayed without validating
again. A bulk load (``lines=None``: files, whose copy stays at hand) logs only a marker
(``bulk``: an LSN, no records): its records are durable once committed, so its caller
acknowledges them after ``wait_applied``, never before; a crash before the commit loses
only what was never acknowledged, and the replay skips the marker. A background thread
groups submitted entries (up to ``flush_rows`` steps or ``flush_interval_ms``) into one
lake commit:

1. within the group, keep the most progressed version of each trajectory;
2. look up which (tenant, trajectory_id) the lake already has; skip identical or less
   progressed versions (a retry or a replay changes nothing);
3. write payloads, then steps (replacing the steps of updated trajectories; a live
   trajectory that only gained steps gets just those appended), then trajectories;
4. record a lake version pinning all tables and the last applied LSN; drop WAL segments.

A crash anywhere before step 4 leaves the previous version as the lake's state: on restart
the tables are rolled back to what that version pins (``roll_back``: a live trajectory's
commit is computed from its stored steps and row, so it must never start from a
half-written one), and the entries after the version's LSN are replayed through the same
steps. Every few commits, tables with too many fragments are compacted (in this thread,
between commits).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from . import patches
from .errors import LakeError, disk_error
from .patches import Patch
from .purge import is_purged
from .records import Context, Record, normalize_line, progress
from .row_log import read_wal_entry, rows_table, steps_of
from .schema import DATA_TABLES, PAYLOADS, STEPS, TRAJECTORIES
from .settings import Settings
from .tables import KEY_INDEXES, TableStore, in_filter
from .versions import Catalog, Version
from .wal import WriteAheadLog

log = logging.getLogger(__name__)
COMPACT_EVERY = 8  # commits between fragment-count checks
RESUME_S = 5.0  # seconds between retries of a commit that failed on a full or read-only disk


@dataclass
class Pending:
    lsn: int
    records: list[Record]
    n_steps: int


@dataclass
class ApplyStats:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    steps: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, other: ApplyStats) -> None:
        for name, n in other.__dict__.items():
            setattr(self, name, getattr(self, name) + n)


@dataclass
class Resolved:
    """A commit's records of one tenant (``Writer._resolve``)."""

    group: dict[str, Record]  # one per key
    appended: set[str] = field(default_factory=set)  # keys whose record has only new steps
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # rows read on the way
    looked_up: set[str] = field(default_factory=set)  # the keys ``stored`` answers for


class Writer:
    def __init__(self, store: TableStore, catalog: Catalog, wal: WriteAheadLog, settings: Settings,
                 on_commit: Callable[[Version, dict[str, list[dict]]], None] | None = None):
        self.store, self.catalog, self.wal, self.settings = store, catalog, wal, settings
        self.on_commit = on_commit
        self._queue: deque[Pending] = deque()
        self._cv = threading.Condition()
        self._submit_lock = threading.Lock()
        self._apply_lock = threading.Lock()  # held while the lake changes (commits, restore)
        self._pending_steps = 0
        self._flushing = 0  # threads in ``flush``
        self._submitted_lsn = self._applied_lsn = self.catalog.last_lsn(wal.writer_id)
        # A log directory emptied by hand must not reuse LSNs the lake already recorded.
        wal.last_lsn = max(wal.last_lsn, self._applied_lsn)
        self._error: BaseException | None = None
        self._stop = False
        self._commits = 0
        self._thread: threading.Thread | None = None

    # -- public -------------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._run, name="lake-writer", daemon=True)
        self._thread.start()

    def submit(self, records: list[Record] | list[Patch],
               lines: list[bytes] | memoryview | None, ctx: Context) -> int:
        """Make ``records`` (or live-trajectory patches) durable (WAL + fsync) and queue them
        for the lake. Returns the LSN. ``lines``: their JSON lines, or the records' rows as
        one ``row_log.wal_entry``; None (records only, a bulk load): not logged, durable
        once committed (``wait_applied(lsn)``), and not before."""
        if not records:
            return self._submitted_lsn
        if lines is None and isinstance(records[0], Patch):
            raise ValueError("live-trajectory patches are always logged: pass their lines")
        rows = lines is not None and not isinstance(lines, list)
        op = ("bulk" if lines is None else "patch" if isinstance(records[0], Patch)
              else "rows" if rows else "traj")
        header = orjson.dumps({"op": op, "tenant": ctx.tenant, "at": ctx.ingested_at_us,
                               "limit": ctx.payload_limit, "preview": ctx.preview_chars,
                               **({"records": len(records)} if lines is None else {})})
        payload = header + b"\n" + (b"" if lines is None else lines if rows
                                     else b"\n".join(lines))
        n_steps = sum(_size(r) for r in records)
        with self._submit_lock:
            with self._cv:
                while (self._pending_steps > 4 * self.settings.flush_rows and not self._error
                       and not self._stop):
                    self._cv.wait(0.5)  # backpressure: the lake is behind the log
                self._raise_if_failed()
            lsn = self.wal.append(payload)
            with self._cv:
                # a copy: the caller may reuse its list
                self._queue.append(Pending(lsn, list(records), n_steps))
                self._pending_steps += n_steps
                self._submitted_lsn = lsn
                self._cv.notify_all()
        return lsn

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything submitted so far is committed to the lake."""
        self.wait_applied(self._submitted_lsn, timeout, hurry=True)

    def wait_applied(self, target: int, timeout: float | None = None, *,
                     hurry: bool = False) -> None:
        """Block until the entries through LSN ``target`` are committed to the lake (a
        bulk load's acknowledgement). ``hurry``: the writer commits what it has now instead
        of waiting ``flush_interval_ms`` for more."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            if self._applied_lsn >= target:
                self._raise_if_failed()
                return
            self._flushing += hurry  # the writer commits what it has without waiting for more
            self._cv.notify_all()
            try:
                while self._applied_lsn < target:
                    self._raise_if_failed()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"lake commit of LSN {target} not done in "
                                           f"{timeout}s")
                    self._cv.wait(0.2 if left is None else min(left, 0.2))
            finally:
                self._flushing -= hurry
            self._raise_if_failed()

    @property
    def state(self) -> str:
        """``ok``; ``waiting`` (a commit failed on a full or read-only disk: retried every
        ``RESUME_S``, writes refused meanwhile; or the log's disk is full); ``stopped``
        (until the lake is reopened)."""
        e = self._error
        if e is None:
            return "waiting" if self.wal.full() else "ok"  # the log's disk: the same refusal
        return "waiting" if disk_error(e, "", "") is not None else "stopped"

    @property
    def lag(self) -> dict[str, int]:
        return {"submitted_lsn": self._submitted_lsn, "applied_lsn": self._applied_lsn,
                "pending_steps": self._pending_steps}

    def close(self) -> None:
        if self._thread is not None:
            try:
                self.flush()
            finally:
                with self._cv:
                    self._stop = True
                    self._cv.notify_all()
                self._thread.join()
                self._thread = None

    def exclusive(self) -> threading.Lock:
        """Hold this to change the lake outside the write path (restore)."""
        return self._apply_lock

    # -- recovery -----------------------------------------------------------------------------
    def recover(self) -> int:
        """Apply WAL entries logged but not committed before a crash. Returns how many."""
        after = self._applied_lsn
        batch: list[Record] = []
        last = after
        n = 0
        for lsn, payload in self.wal.replay(after):
            batch.extend(_decode(payload, lsn))
            last, n = lsn, n + 1
            if sum(_size(r) for r in batch) >= self.settings.flush_rows:
                self.apply(batch, last, operation="replay")
                batch = []
        if batch or last > after:
            self.apply(batch, last, operation="replay")
        self._submitted_lsn = self._applied_lsn = last
        return n

    # -- the commit ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait()
                if not self._queue and self._stop:
                    return
                # a group: up to flush_rows steps or flush_interval_ms (a submit wakes this
                # wait: without the deadline a stream would commit at every call)
                deadline = time.monotonic() + self.settings.flush_interval_ms / 1000
                while (self._pending_steps < self.settings.flush_rows and not self._stop
                       and not self._flushing and (left := deadline - time.monotonic()) > 0):
                    self._cv.wait(left)
                group: list[Pending] = []
                steps = 0
                while self._queue and (not group or steps < self.settings.flush_rows):
                    p = self._queue.popleft()
                    group.append(p)
                    steps += p.n_steps
            records = [r for p in group for r in p.records]
            try:
                self.apply(records, group[-1].lsn)
            except BaseException as e:  # noqa: BLE001 - surfaced to every waiter
                if not self._resume(records, group[-1].lsn, e):
                    return
            with self._cv:
                self._pending_steps -= steps
                self._applied_lsn = group[-1].lsn
                self._cv.notify_all()

    def _resume(self, records: list[Record | Patch], lsn: int, e: BaseException) -> bool:
        """After a failed commit: True once it succeeded again. A disk the user fixes (full,
        read-only) is retried in place every ``RESUME_S``, its partial writes rolled back
        first, writes refused meanwhile with the cause; any other failure stops the writer
        until the lake is reopened (False)."""
        while True:
            disk = disk_error(e, f"the lake {self.settings.data}", "retry")
            with self._cv:
                self._error = e
                self._cv.notify_all()
            if disk is None:
                log.exception("lake commit failed, the writer stopped; nothing acknowledged "
                              "is lost", exc_info=e)
                return False
            log.error("lake commit failed: %s (the writer retries every %g s)", disk.message,
                      RESUME_S)
            with self._cv:
                self._cv.wait_for(lambda: self._stop, RESUME_S)
                if self._stop:
                    return False
            try:
                with self._apply_lock:
                    roll_back(self.store, self.catalog)
                self.apply(records, lsn)
            except BaseException as again:  # noqa: BLE001 - the same handling
                e = again
                continue
            log.warning("lake commit succeeded again: the writer takes writes")
            with self._cv:
                self._error = None
            return True

    def apply(self, records: list[Record | Patch], lsn: int,
              operation: str = "ingest") -> Version | None:
        with self._apply_lock:
            stats = ApplyStats()
            by_tenant: dict[str, list[Record | Patch]] = {}
            for r in records:
                tenant = r.tenant if isinstance(r, Patch) else r.trajectory["tenant"]
                by_tenant.setdefault(tenant, []).append(r)
            written: dict[str, list[dict]] = {}
            tenants: dict[str, dict[str, int]] = {}  # each tenant's counts: an admin sees its own
            for tenant, items in by_tenant.items():
                own = ApplyStats()
                rows = self._apply_tenant(tenant, self._resolve(tenant, items), own)
                stats.add(own)
                tenants[tenant] = own.as_dict()
                if rows:
                    written[tenant] = rows
            if stats.inserted or stats.updated or (operation == "replay" and _moved(
                    self.store, self.catalog.current())):
                version = self.catalog.commit(operation, self.wal.writer_id, lsn,
                                              {**stats.as_dict(), "tenants": tenants})
            else:  # nothing changed: no new version; the entries' effect is already stored
                version = self.catalog._latest or self.catalog.latest()
            self.wal.truncate(lsn)
            self._commits += 1
            if self._commits % COMPACT_EVERY == 0:
                self._compact()
        if self.on_commit is not None and written:
            self.on_commit(version, written)  # e.g. the semantic cache queues them to embed
        return version

    def _resolve(self, tenant: str, items: list[Record | Patch]) -> Resolved:
        """One record per key: the most progressed whole record (later wins ties), or for
        live trajectories the stored one with their patches applied in log order (only its
        new steps when it can be appended to: ``patches.extend``)."""
        live = {i.key for i in items if isinstance(i, Patch)}
        group: dict[str, Record] = {}
        for r in items:
            if isinstance(r, Record) and r.key not in live:
                old = group.get(r.key)
                if old is None or r.progress >= old.progress:
                    group[r.key] = r
        if not live:
            return Resolved(group)
        keys = sorted(live)
        stored = {r["trajectory_id"]: r for r in _rows(self.store.lookup(
            "trajectories", tenant, "trajectory_id", keys, list(TRAJECTORIES.names)))}
        of_key: dict[str, list[Record | Patch]] = {}
        for i in items:
            if i.key in live:
                if isinstance(i, Record) and not isinstance(i.steps, list):
                    # a whole record validated as Arrow (columnar door, ingest worker),
                    # applied among patches: the patch code reads steps as row dicts
                    i = Record(i.trajectory, _rows(i.steps), i.payloads)
                of_key.setdefault(i.key, []).append(i)  # in log order
        append = [k for k in keys if patches.appendable(stored.get(k), of_key[k])]
        for key, known in _by_key(self.store.lookup(
                "steps", tenant, "trajectory_id", append, patches.STORED_STEP_COLUMNS)
                if append else None, append):
            group[key] = patches.extend(stored[key], known,
                                        [i for i in of_key[key] if isinstance(i, Patch)])
        rebuild = [k for k in keys if k not in group]
        steps: dict[str, list[dict]] = {}
        if rebuild:
            for s in _rows(self.store.lookup("steps", tenant, "trajectory_id", rebuild,
                                             list(STEPS.names))):
                steps.setdefault(s["trajectory_id"], []).append(s)
        for key in rebuild:
            rec = patches.materialize(stored.get(key), steps.get(key, []), of_key[key])
            if rec is None:
                log.error("steps or finish for trajectory %r of tenant %r, never started: "
                          "dropped", key, tenant)
            else:
                group[key] = rec
        return Resolved(group, set(append), stored, set(keys))

    def _apply_tenant(self, tenant: str, res: Resolved, stats: ApplyStats) -> list[dict]:
        """Write the group's new and progressed trajectories; return their rows. The steps
        of an appended record are added to the stored ones; those of any other replace
        them."""
        group, appended = res.group, res.appended
        keys = [k for k in group if k not in res.looked_up]
        have = self.store.lookup("trajectories", tenant, "trajectory_id", keys,
                                 ["trajectory_id", "n_steps", "status", "_record_hash",
                                  "retracted_at", "retract_reason"]).to_pylist() if keys else []
        stored = {**res.stored, **{h["trajectory_id"]: h for h in have}}
        new, upd = [], []
        for key, rec in group.items():
            old = stored.get(key)
            if old is None:
                new.append(rec)
            elif is_purged(old):  # its content was purged: a retried load never brings it back
                stats.unchanged += 1
            elif (old["_record_hash"] == rec.trajectory["_record_hash"]
                  or rec.progress < progress(old["n_steps"], old["status"])):
                stats.unchanged += 1
            else:
                # a retraction outlives new versions of the trajectory
                rec.trajectory["retracted_at"] = old["retracted_at"]
                rec.trajectory["retract_reason"] = old["retract_reason"]
                upd.append(rec)
        write = new + upd
        if not write:
            return []
        stats.inserted += len(new)
        stats.updated += len(upd)
        # A new trajectory has no stored steps: the steps of an interrupted commit (the only
        # way to get steps without their row) were rolled back when the lake was opened.
        clear = sorted(r.key for r in upd if r.key not in appended)
        # content-addressed: one row per (tenant, sha256), however often it occurs
        payloads = list({p["sha256"]: p for r in write for p in r.payloads}.values())
        if payloads:
            self.store.upsert("payloads", ["tenant", "sha256"], rows_table(payloads, PAYLOADS),
                              update=False)
        if clear:
            self.store.delete("steps", in_filter(tenant, "trajectory_id", clear))
        steps = steps_of(write)
        stats.steps += steps.num_rows
        if steps.num_rows:
            self.store.append("steps", steps)
        rows = rows_table([r.trajectory for r in write], TRAJECTORIES)
        if upd:
            self.store.upsert("trajectories", ["tenant", "trajectory_id"], rows)
        else:
            self.store.append("trajectories", rows)
        return [r.trajectory for r in write]

    def _compact(self) -> None:
        compacted = []
        for name in ("steps", "trajectories", "payloads", "_versions"):
            if self.store.fragments(name) > self.settings.compact_fragments:
                self.store.compact(name)
                compacted.append(name)
        for name, column in KEY_INDEXES.items():
            if self.store.index_keys(name, column):
                compacted.append(f"{name}.{column} index")
        if compacted:
            self.catalog.commit("compact", self.wal.writer_id, self._last_lsn(),
                                {"tables": compacted})

    def _last_lsn(self) -> int:
        latest = self.catalog._latest
        return latest.wal_lsn if latest and latest.writer == self.wal.writer_id else 0

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._stopped(self._error) from self._error

    def _stopped(self, e: BaseException) -> LakeError:
        """The error every write gets while a commit fails: of a disk the user fixes, until
        the writer's retry succeeds (``_resume``); of anything else, until the lake is
        reopened (then a roll-back undoes the failed commit's partial writes)."""
        err = disk_error(e, f"the lake {self.settings.data}",
                         f"retry this call (the writer retries its commit every {RESUME_S:g} "
                         "s and takes writes again once it succeeds; nothing acknowledged "
                         "is lost)", lead="the lake's writer is waiting: ")
        if err is not None:
            return err
        return LakeError(f"the lake's writer stopped: {e}. Fix the cause, then reopen the lake "
                         "(restart the server, or rerun the command). Nothing acknowledged is "
                         "lost: logged writes replay when the lake reopens, and a bulk load "
                         "run again skips what landed")


def roll_back(store: TableStore, catalog: Catalog) -> list[str]:
    """Put every data table back at the version the lake's latest version pins.

    A table ahead of it holds the writes of a commit (or compaction, migration, restore)
    that was interrupted before its lake version was recorded: unacknowledged as a whole,
    and possibly half-done (a live trajectory's steps deleted, the new ones not yet
    written). Only the lake's single writer calls this, before it replays its log. Returns
    the tables it moved."""
    latest = catalog.latest() if store.exists("_versions") else None
    moved = _moved(store, latest)
    for name in moved:
        pinned = latest.tables.get(name) if latest else None
        if pinned is not None and pinned > store.version(name):
            raise LakeError(
                f"lake version {latest.version} pins table {name} at its version {pinned}, "
                f"but the table holds versions up to {store.version(name)} only: the table is "
                "older than the lake's catalog, as in a copy taken while the lake was written "
                "(tables copied before the catalog). Copy a live lake with `lake backup DEST`")
        store.restore(name, latest.tables.get(name) if latest else None)
        log.warning("table %s was ahead of lake version %s (an interrupted commit): rolled "
                    "back; the log replays what was acknowledged", name,
                    latest.version if latest else "-")
    return moved


def _moved(store: TableStore, version: Version | None) -> list[str]:
    """Data tables whose current Lance version is not the one ``version`` pins (a table it
    does not pin, new in this schema, has moved once it holds rows)."""
    moved = []
    for name in DATA_TABLES:
        if not store.exists(name):
            continue
        pinned = version.tables.get(name) if version else None
        if (store.version(name) != pinned if pinned is not None
                else store.dataset(name).count_rows() > 0):
            moved.append(name)
    return moved


def _size(item: Record | Patch) -> int:
    """What an item weighs in the queue's bounds: its steps and its trajectory's row (runs
    without steps must meet the backpressure too: each holds a few KB until committed)."""
    return 1 + (len(item.record.steps) if isinstance(item, Patch) else item.trajectory["n_steps"])


def _by_key(table: pa.Table | None, keys: list[str]) -> Iterable[tuple[str, pa.Table]]:
    """(key, its rows) for each of ``keys``, from rows with a ``trajectory_id`` column."""
    if table is None:
        return
    table = table.sort_by("trajectory_id")
    at, offset = {}, 0
    for vc in pc.value_counts(table["trajectory_id"]).to_pylist():  # sorted: key order
        at[vc["values"]] = (offset, vc["counts"])
        offset += vc["counts"]
    for key in keys:
        lo, n = at.get(key, (0, 0))
        yield key, table.slice(lo, n)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """Stored rows as the writer builds them (times as epoch microseconds)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    return table.to_pylist()


def _decode(payload: bytes, lsn: int) -> Iterable[Record | Patch]:
    header, _, body = payload.partition(b"\n")
    h = orjson.loads(header)
    if h["op"] == "bulk":  # a bulk load's marker: its records were never acknowledged
        return
    if h["op"] == "rows":  # validated rows: nothing to check again
        yield from read_wal_entry(body)
        return
    ctx = Context(h["tenant"], h["at"], h["limit"], h["preview"])
    for i, line in enumerate(body.split(b"\n")):
        try:
            yield (patches.parse(orjson.loads(line), line, ctx) if h["op"] == "patch"
                   else normalize_line(line, ctx))
        except LakeError as e:  # validated before logging; only a changed validator gets here
            log.error("WAL entry %d line %d no longer validates, skipped: %s", lsn, i, e)
