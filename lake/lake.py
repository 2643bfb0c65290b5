"""The ``Lake``: open a lake, write trajectories durably, read versions, query with SQL.

    with Lake.open("./lake-data") as lake:
        result = lake.ingest([{"trajectory_id": "t1", "task": "refund order #12", "steps": []}])
        lake.flush()
        print(lake.sql("select count(*) from trajectories").fetchall())
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from . import sql as sqlmod
from . import vacuum
from .arrow_values import with_numbers
from .errors import InvalidArgument, LakeError, NotFound, disk_error
from .live import LiveRuns
from .patches import Patch, parse, steps_patch
from .purge import PURGED, is_purged, purge_rows
from .query import run
from .records import Context, Record, normalize, normalize_line, now_us
from .schema import ALL_TABLES, DATA_TABLES, FORMAT, TRAJECTORIES
from .settings import QUARANTINE_DIR, WAL_DIR, Settings
from .tables import TableStore, quote
from .vacuum import VacuumResult
from .versions import Catalog, Version
from .wal import WRITER_LOCK, WriteAheadLog
from .writer import Writer, roll_back

log = logging.getLogger(__name__)

CONNECTIONS_KEPT = 8  # DuckDB connections (one per snapshot and scope) kept for reuse


@dataclass
class Reject:
    location: str
    reason: str
    field: str | None
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"location": self.location, "reason": self.reason, "field": self.field,
                "text": self.text}


def _item_reject(e: Exception, location: str, item: Any) -> Reject:
    """One step or span of a batch refused: validated alone, as ``steps[0]`` of a one-item
    patch, its field path is rewritten to where it stood (``location``)."""
    fld = (getattr(e, "field", None) or "steps[0]").replace("steps[0]", location)
    return Reject(location, getattr(e, "message", str(e)), fld, repr(item)[:1000])


@dataclass
class IngestResult:
    trajectories: int = 0
    steps: int = 0
    rejected: list[Reject] = field(default_factory=list)
    lsn: int = 0


class Lake:
    def __init__(self, settings: Settings, store: TableStore, catalog: Catalog,
                 writer: Writer | None):
        self.settings, self.store, self.catalog, self.writer = settings, store, catalog, writer
        self._connections: dict[tuple[int, str | None], duckdb.DuckDBPyConnection] = {}
        self._connections_lock = threading.Lock()
        self._listeners: list[Callable[[Version, dict[str, list[dict]] | None], None]] = []
        self._retract_listeners: list[Callable[[str, list[str]], None]] = []
        self.created = False  # this open made the lake (``open`` sets it)
        self.live = LiveRuns(store, self.flush)  # what live runs' patches are checked against
        self._listeners.append(lambda _, written: self.live.ids.committed(written))
        # SQL's column caches: keys name immutable Lance files, so entries never go stale
        self.sql_caches = sqlmod.Caches.sized(settings.sql_cache_mb << 20)
        if writer is not None:
            writer.on_commit = self._committed

    @classmethod
    def open(cls, data: str | None = None, *, settings: Settings | None = None,
             readonly: bool = False, **overrides: Any) -> Lake:
        """Open (creating if needed) the lake. A writer replays its log first."""
        settings = settings or Settings.load(data=data, **overrides)
        if data is not None and settings.data != data:
            settings = settings.replace(data=data)
        if settings.is_local:
            _check_root(settings.local_root, readonly)
        store = TableStore(settings.data)
        if readonly and not store.exists("_versions"):
            raise NotFound(f"no lake at {settings.data}: create one with `lake ingest FILE` "
                           "(or `make run` for the sample), or point --data / LAKE_DATA at it")
        catalog = Catalog(store)
        _check_format(catalog, settings.data)
        writer, created = None, False
        if not readonly:  # a reader never writes: it reads what the versions pin
            try:
                wal = WriteAheadLog(settings.wal_path, settings.wal_segment_bytes,
                                    root=settings.local_root if settings.is_local else None)
            except OSError as e:
                raise _unwritable(e, settings) from e
            try:
                roll_back(store, catalog)  # first: an interrupted commit's writes go
                if wal.damage:
                    _damage_lost(wal, catalog.last_lsn(wal.writer_id)
                                 if store.exists("_versions") else 0)
                changed = [name for name in ALL_TABLES if store.ensure(name)]
                writer = Writer(store, catalog, wal, settings)
                writer.start()
                if catalog.latest() is None:  # new, or killed before its first version
                    catalog.commit("create", wal.writer_id, writer.lag["applied_lsn"],
                                   {"format": FORMAT})
                    created = True
                elif changed:  # tables created or columns added by a newer schema
                    catalog.commit("migrate", wal.writer_id, writer.lag["applied_lsn"],
                                   {"tables": changed, "format": FORMAT})
            except BaseException as e:
                wal.close()
                if isinstance(e, OSError):
                    raise _unwritable(e, settings) from e
                raise
        lake = cls(settings, store, catalog, writer)
        lake.created = created
        return lake

    # -- writing ------------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[Version, dict[str, list[dict]] | None], None]
                  ) -> None:
        """Call ``listener(version, {tenant: trajectory rows})`` after each commit that wrote
        trajectories. It runs on the writer's thread: hand work off, do not block. After a
        restore, ``listener(version, None)`` (on the restoring thread, before ``restore``
        returns): any row may have changed."""
        self._listeners.append(listener)

    def on_retract(self, listener: Callable[[str, list[str]], None]) -> None:
        """Call ``listener(tenant, trajectory_ids)`` once they are retracted (on the
        retracting thread, before ``retract`` returns: stop serving them now)."""
        self._retract_listeners.append(listener)

    def _committed(self, version: Version, written: dict[str, list[dict]] | None) -> None:
        for listener in self._listeners:
            try:
                listener(version, written)
            except Exception:  # noqa: BLE001 - a listener must not stop the write path
                log.exception("commit listener failed")

    def context(self, tenant: str | None = None) -> Context:
        return Context(tenant or self.settings.tenant, now_us(), self.settings.payload_limit,
                       self.settings.preview_chars)

    def _writer(self) -> Writer:
        if self.writer is None:
            raise LakeError("this lake was opened read-only; open it with readonly=False to write")
        return self.writer

    def submit(self, records: list[Record], lines: list[bytes] | memoryview | None,
               ctx: Context) -> int:
        """Durably log validated records (see ``ingest`` for the convenient form). ``lines``
        None: a bulk load, durable only once committed (``writer.wait_applied``)."""
        return self._writer().submit(records, lines, ctx)

    def ingest(self, trajectories: Iterable[dict[str, Any]], *, tenant: str | None = None,
               wait: bool = True) -> IngestResult:
        """Validate and durably write trajectories (interchange-format dicts).

        Bad records are returned in ``result.rejected`` with the reason; the rest land.
        With ``wait`` the call returns once they are committed and visible to SQL.
        """
        ctx = self.context(tenant)
        result = IngestResult()
        records, lines = [], []
        for i, obj in enumerate(trajectories):
            try:
                line = orjson.dumps(obj)
            except TypeError as e:
                result.rejected.append(Reject(f"item {i}", f"not JSON-serializable: {e}", None,
                                              repr(obj)[:1000]))
                continue
            try:  # a NaN where a number is wanted is rejected, not read as its JSON null
                kept = with_numbers(obj, line)
                rec = normalize_line(line, ctx) if kept is None else normalize(kept, line, ctx)
            except InvalidArgument as e:
                result.rejected.append(Reject(f"item {i}", e.message, e.field, line.decode()))
                continue
            records.append(rec)
            lines.append(line)
        result.trajectories = len(records)
        result.steps = sum(r.trajectory["n_steps"] for r in records)
        result.lsn = self.submit(records, lines, ctx)
        if wait:
            self.flush()
        return result

    # -- live trajectories (see lake/patches.py) --------------------------------------------
    def start_trajectory(self, record: dict[str, Any], *, tenant: str | None = None) -> int:
        """Open a live trajectory (status running; steps may come with it). Returns the LSN."""
        return self._patch({**record, "op": "start"}, tenant)

    def append_steps(self, trajectory_id: str, steps: list[dict[str, Any]], *,
                     tenant: str | None = None) -> IngestResult:
        """Add steps (each with its ``index``) to a started trajectory; a retry is a no-op.

        Good steps land; each bad one comes back in ``rejected`` (location ``steps[i]``), as
        does one at an index the run has with other content (``live``)."""
        ctx = self.context(tenant)
        result = IngestResult()
        try:  # all good, the common case: validated once, as one patch
            rec = parse({"op": "steps", "trajectory_id": trajectory_id, "steps": steps}, b"",
                        ctx).record
            at, rows, payloads = list(range(len(steps))), rec.steps, rec.payloads
        except (InvalidArgument, TypeError):  # find each bad step, keep the good ones
            at, rows, payloads = self._good_steps(trajectory_id, steps, ctx, result)
        key = (ctx.tenant, trajectory_id)
        with self.live.lock(key):
            patch = steps_patch(trajectory_id, rows, payloads, ctx)
            self.live.check(patch, ctx.tenant)  # not started: NotFound; finished: Conflict
            clashes = self.live.clashes(key, rows)
            if clashes:
                for i, e in clashes:
                    result.rejected.append(_item_reject(e, f"steps[{at[i]}]", steps[at[i]]))
                drop = {i for i, _ in clashes}
                at = [j for i, j in enumerate(at) if i not in drop]
                rows = [r for i, r in enumerate(rows) if i not in drop]
                refs = {r[c] for r in rows for c in ("input_ref", "output_ref") if r[c]}
                patch = steps_patch(trajectory_id, rows, [p for p in payloads
                                                          if p["sha256"] in refs], ctx)
            if at:
                try:
                    line = orjson.dumps({"op": "steps", "trajectory_id": trajectory_id,
                                         "steps": [steps[j] for j in at]})
                except TypeError as e:  # validated: only a non-JSON value it tolerated
                    raise InvalidArgument(f"not JSON-serializable: {e}") from e
                result.lsn = self._writer().submit([patch], [line], ctx)
                self.live.logged(patch, ctx.tenant)
        result.steps = len(at)
        return result

    @staticmethod
    def _good_steps(trajectory_id: str, steps: list[dict[str, Any]], ctx: Context,
                    result: IngestResult) -> tuple[list[int], list[dict], list[dict]]:
        """The steps that pass validation alone (positions, rows, payloads); a reject in
        ``result`` for each other."""
        at: list[int] = []
        rows: list[dict[str, Any]] = []
        payloads: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for i, step in enumerate(steps):
            one = {"op": "steps", "trajectory_id": trajectory_id, "steps": [step]}
            try:
                rec = parse(one, b"", ctx).record
                if step["index"] in seen:
                    raise InvalidArgument(f"index {step['index']} appears twice in this "
                                          "batch", field="steps[0].index")
            except (InvalidArgument, TypeError) as e:
                result.rejected.append(_item_reject(e, f"steps[{i}]", step))
                continue
            seen.add(step["index"])
            at.append(i)
            rows += rec.steps
            payloads += rec.payloads
        return at, rows, payloads

    def finish_trajectory(self, trajectory_id: str, *, tenant: str | None = None,
                          **fields: Any) -> int:
        """Close it: ``status`` and/or ``outcome`` ({success, reward, scores}), ``ended_at``.
        Final: finishing again with another outcome, or adding steps, raises ``Conflict``."""
        return self._patch({"op": "finish", "trajectory_id": trajectory_id,
                            **{k: v for k, v in fields.items() if v is not None}}, tenant)

    def ingest_spans(self, spans: list[tuple[str, dict[str, Any]]], *,
                     tenant: str | None = None, where: list[str] | None = None
                     ) -> IngestResult:
        """Add trace spans as steps: ``(trajectory_id, step)`` pairs, each step with its
        ``step_id``, in any order and across calls (see ``patches``: ``spans``).

        A trajectory is created by its first span; a span already stored changes nothing.
        Good spans land (one log entry for the call); each bad one comes back in
        ``rejected`` (location ``where[i]``, default ``spans[i]``: its position)."""
        ctx = self.context(tenant)
        groups: dict[str, list[int]] = {}
        for i, (tid, _) in enumerate(spans):
            groups.setdefault(tid, []).append(i)
        result, items, lines = IngestResult(), [], []

        def patch(tid: str, at: list[int]) -> None:
            body = {"op": "spans", "trajectory_id": tid, "steps": [spans[i][1] for i in at]}
            line = orjson.dumps(body)
            items.append(parse(body, line, ctx))
            lines.append(line)

        for tid, at in groups.items():
            try:
                patch(tid, at)  # the whole trace at once; one span at a time if one is bad
            except (InvalidArgument, TypeError):
                good = []
                for i in at:
                    try:
                        parse({"op": "spans", "trajectory_id": tid, "steps": [spans[i][1]]},
                              b"", ctx)
                        good.append(i)
                    except (InvalidArgument, TypeError) as e:
                        result.rejected.append(_item_reject(
                            e, where[i] if where else f"spans[{i}]", spans[i][1]))
                if good:
                    patch(tid, good)
        result.trajectories = len(items)
        result.steps = sum(len(p.record.steps) for p in items)
        result.lsn = self._writer().submit(items, lines, ctx) if items else 0
        return result

    def _patch(self, obj: dict[str, Any], tenant: str | None) -> int:
        ctx = self.context(tenant)
        try:
            line = orjson.dumps(obj)
        except TypeError as e:
            raise InvalidArgument(f"not JSON-serializable: {e}") from e
        return self._submit_patch(parse(obj, line, ctx), line, ctx)

    def _submit_patch(self, patch: Patch, line: bytes, ctx: Context) -> int:
        """Log a validated patch (``line``: its JSON, what a replay parses again), unless
        it would change what the lake must keep (``live``: raises first)."""
        key = (ctx.tenant, patch.trajectory_id)
        with self.live.lock(key):
            self.live.check(patch, ctx.tenant)
            lsn = self._writer().submit([patch], [line], ctx)
            self.live.logged(patch, ctx.tenant)
        return lsn

    def flush(self, timeout: float | None = None) -> None:
        if self.writer is not None:
            self.writer.flush(timeout)

    # -- versions -----------------------------------------------------------------------------
    def versions(self) -> list[Version]:
        return self.catalog.list()

    def version(self, ref: int | str | None = None) -> Version:
        return self.catalog.resolve(ref)

    def tag(self, name: str, ref: int | str | None = None, *, force: bool = False) -> Version:
        self.flush()
        target = self.catalog.resolve(ref)
        self.catalog.tag(name, target.version, force=force)
        return target

    def untag(self, name: str) -> Version:
        """Remove a tag; returns the version it named."""
        number = self.catalog.untag(name)
        return next(v for v in self.catalog.list() if v.version == number)

    def restore(self, ref: int | str) -> Version:
        """Make the lake's contents those of ``ref`` again, as a new version."""
        writer = self._writer()
        writer.flush()
        target = self.catalog.resolve(ref)
        with writer.exclusive():
            retracted = self.retractions()
            for name in DATA_TABLES:
                self.store.restore(name, target.tables.get(name))
            kept = self._retract_again(retracted)
            self._purge_again(retracted)
            self.live.clear()  # live runs' state is the restored rows' now: recalled from
            # them (a run started since is NotFound, not lost)
            version = self.catalog.commit(
                "restore", writer.wal.writer_id, writer.lag["applied_lsn"],
                {"restored": target.version, "tags": [t for t, v in self.catalog.tags().items()
                                                      if v == target.version],
                 "retractions_kept": kept})
        self._committed(version, None)
        return version

    def vacuum(self, older_than: timedelta, *, dry_run: bool = False) -> VacuumResult:
        """Remove the files of versions older than ``older_than`` that are not tagged; they
        can no longer be read or restored (``lake/vacuum.py``). A vacuum is a version."""
        writer = self._writer()
        writer.flush()
        with writer.exclusive():
            versions = self.catalog.list()
            result = vacuum.plan(versions, self.catalog.tags(), older_than)
            result.dry_run = dry_run
            vacuum.run(self.store, versions, result, older_than)
            if not dry_run and any(result.removed.values()):
                self.catalog.commit(  # no row changed: no listener is told
                    "vacuum", writer.wal.writer_id, writer.lag["applied_lsn"],
                    {**result.as_dict(), "older_than_s": older_than.total_seconds()})
        return result

    def retractions(self, tenant: str | None = None) -> dict[tuple[str, str], tuple[int, str]]:
        """Every retraction in force, (tenant, trajectory_id) -> (retracted_at, reason):
        from the latest version whichever version is read, since a retracted trajectory is
        never served again (not by time travel, not after a restore)."""
        if not self.store.exists("trajectories"):
            return {}
        cond = "retracted_at IS NOT NULL"
        t = self.store.dataset("trajectories").to_table(
            columns=["tenant", "trajectory_id", "retracted_at", "retract_reason"],
            filter=cond if tenant is None else f"tenant = {quote(tenant)} AND {cond}")
        ts = t["retracted_at"].cast(pa.int64()).to_pylist()
        return {(a, b): (at, why) for a, b, at, why in zip(
            t["tenant"].to_pylist(), t["trajectory_id"].to_pylist(), ts,
            t["retract_reason"].to_pylist(), strict=True)}

    def _retract_again(self, retracted: dict[tuple[str, str], tuple[int, str]]) -> int:
        """Retract again, as they were, the rows a restore brought back unretracted."""
        rows: list[dict[str, Any]] = []
        for tenant in sorted({k[0] for k in retracted}):
            ids = sorted(tid for t, tid in retracted if t == tenant)
            for r in self.store.lookup("trajectories", tenant, "trajectory_id", ids,
                                       list(TRAJECTORIES.names)).to_pylist():
                if r["retracted_at"] is None:
                    at, why = retracted[(tenant, r["trajectory_id"])]
                    rows.append({**r, "retracted_at": at, "retract_reason": why})
        if rows:
            self.store.upsert("trajectories", ["tenant", "trajectory_id"],
                              pa.Table.from_pylist(rows, schema=TRAJECTORIES))
        return len(rows)

    def _purge_again(self, retracted: dict[tuple[str, str], tuple[int, str]]) -> None:
        """Purge again the runs a restore brought back from before their purge."""
        purged: dict[str, list[str]] = {}
        for (tenant, tid), (_, why) in sorted(retracted.items()):
            if (why or "").startswith(PURGED):
                purged.setdefault(tenant, []).append(tid)
        for tenant, ids in purged.items():
            rows = self.store.lookup("trajectories", tenant, "trajectory_id", ids,
                                     list(TRAJECTORIES.names)).to_pylist()
            purge_rows(self.store, tenant, rows)

    def replace_tenant_rows(self, tenant: str, tables: dict[str, pa.Table], *, operation: str,
                            detail: dict[str, Any]) -> int:
        """Replace all of ``tenant``'s rows of derived tables (clusters...), as one version."""
        writer = self._writer()
        with writer.exclusive():
            for name, rows in tables.items():
                self.store.delete(name, f"tenant = {quote(tenant)}")
                if rows.num_rows:
                    self.store.append(name, rows)
            return self.catalog.commit(operation, writer.wal.writer_id, writer.lag["applied_lsn"],
                                       {"tenant": tenant, **detail}).version

    def retract(self, ids: list[str], reason: str, *, tenant: str | None = None,
                purge: bool = False) -> int:
        """Mark trajectories retracted: never served again, kept (and visible to SQL) for audit.
        Returns how many were newly retracted (``purge``: purged): one retracted already keeps
        its first time and reason, and a call that changes nothing makes no version (a retry
        is a no-op). ``purge`` also removes their content (``lake/purge.py``)."""
        tenant = tenant or self.settings.tenant
        if not reason or not reason.strip():
            raise InvalidArgument("a retraction needs a reason: say why (`lake retract "
                                  "--reason`, reason in Retract)", field="reason")
        writer = self._writer()
        writer.flush()
        with writer.exclusive():
            rows = self.store.lookup("trajectories", tenant, "trajectory_id", list(ids),
                                     list(TRAJECTORIES.names)).to_pylist()
            missing = sorted(set(ids) - {r["trajectory_id"] for r in rows})
            if missing:
                raise NotFound(f"no trajectory {', '.join(missing[:5])} in tenant {tenant!r}; "
                               "nothing was retracted (check the ids with `lake sql`)")
            rows = [r for r in rows if r["retracted_at"] is None or purge and not is_purged(r)]
            if not rows:
                return 0
            at = now_us()
            for r in rows:
                if r["retracted_at"] is None:
                    r["retracted_at"], r["retract_reason"] = at, reason
            if purge:
                purge_rows(self.store, tenant, rows)
            else:
                self.store.upsert("trajectories", ["tenant", "trajectory_id"],
                                  pa.Table.from_pylist(rows, schema=TRAJECTORIES))
            self.catalog.commit("retract", writer.wal.writer_id, writer.lag["applied_lsn"],
                                {"tenant": tenant, "trajectories": len(rows), "reason": reason,
                                 **({"purged": len(rows)} if purge else {})})
        if purge:  # a live run purged takes nothing more (``LiveRuns._recall``)
            self.live.forget([(tenant, r["trajectory_id"]) for r in rows])
            writer.wal.roll()  # the applied segments, which hold what was ingested, go
            writer.wal.truncate(writer.lag["applied_lsn"])
        for listener in self._retract_listeners:
            listener(tenant, [r["trajectory_id"] for r in rows])
        return len(rows)

    # -- reading ------------------------------------------------------------------------------
    def connect(self, *, as_of: int | str | None = None, tenant: str | None = "",
                all_tenants: bool = False) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with a view per table (``trajectories``, ``steps``, ...)."""
        version = self.catalog.resolve(as_of)
        scope = None if all_tenants else (tenant or self.settings.tenant)
        key = (version.version, scope)
        with self._connections_lock:
            con = self._connections.pop(key, None)
            if con is not None:
                self._connections[key] = con  # most recently used last
        if con is None:  # one per snapshot, reused; a relation keeps its own alive
            con = sqlmod.connect(self.store, self.catalog, version, scope,
                                 caches=self.sql_caches)
            with self._connections_lock:
                self._connections[key] = con
                while len(self._connections) > CONNECTIONS_KEPT:  # a server ingesting all
                    del self._connections[next(iter(self._connections))]  # day: bounded
        else:
            sqlmod.refresh(con, self.store)  # the audit trail is not pinned: always the latest
        return con

    def sql(self, query: str, *, as_of: int | str | None = None, tenant: str | None = None,
            all_tenants: bool = False) -> duckdb.DuckDBPyRelation:
        """Run ``query``, one SQL statement, now: a DuckDB relation holding its rows
        (``.fetchall()``, ``.arrow()``, ...). A mistake in it, found binding or running, is
        an InvalidArgument (``lake.query``)."""
        if all_tenants and tenant is not None:
            raise InvalidArgument(f"all_tenants shows every tenant and tenant={tenant!r} only "
                                  "one: give one of the two", field="tenant")
        return run(self.connect(as_of=as_of, tenant=tenant, all_tenants=all_tenants), query)

    def count(self, table: str, *, tenant: str | None = None) -> int:
        return int(self.sql(f'select count(*) from "{table}"', tenant=tenant).fetchall()[0][0])

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            finally:
                self.writer.wal.close()
                self.writer = None

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unwritable(e: OSError, settings: Settings) -> BaseException:
    """Opening a lake to write failed on its disk: say which and what to do."""
    return disk_error(e, f"the lake {settings.data}",
                      "open it again; reading needs no writing: `lake sql`, `lake versions`, "
                      "`lake export` work on a read-only lake") or e


def _damage_lost(wal: WriteAheadLog, applied: int) -> None:
    """Say, for each damaged stretch of the log, whether the lake held its entries already."""
    for first, last, seg in wal.damage:
        if last <= applied:
            log.warning("write-ahead log entries %d-%d in %s were damaged, but the lake "
                        "holds them already (applied up to %d): nothing is lost", first,
                        last, seg, applied)
        else:
            log.error("write-ahead log entries %d-%d in %s were damaged before the lake "
                      "held them (applied up to %d): what they carried is lost; entries "
                      "after them are replayed. Re-send those writes if you can tell which",
                      max(first, applied + 1), last, seg, applied)


def _check_root(root: Path, readonly: bool) -> None:
    """A lake's local root is a directory, and a writer makes a new lake only in a new or
    empty one (or one holding only a lake's entries): never among someone's files, as a
    mistyped --data would."""
    if root.exists() and not root.is_dir():
        raise InvalidArgument(f"{root} is a file: --data / LAKE_DATA names the lake's directory",
                              field="data")
    if readonly or not root.is_dir() or (root / "_versions.lance").is_dir():
        return
    foreign = sorted(p.name for p in root.iterdir() if not p.name.startswith(".")
                     and not p.name.endswith(".lance") and p.name not in _LAKE_ENTRIES)
    if foreign:
        raise InvalidArgument(
            f"{root} holds no lake but other files ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}): point --data / LAKE_DATA at a lake, or "
            "at a new or empty directory to create one there", field="data")


_LAKE_ENTRIES = {WAL_DIR, QUARANTINE_DIR, WRITER_LOCK}  # beside the tables, in its root


def _check_format(catalog: Catalog, where: str) -> None:
    """Refuse a lake a newer package wrote in a format this one does not know."""
    if not catalog.store.exists("_versions"):
        return
    newest = max((v.detail.get("format", 1) for v in catalog.list()
                  if v.operation in ("create", "migrate")), default=1)
    if newest > FORMAT:
        raise LakeError(f"the lake at {where} has format {newest}, written by a newer Context "
                        f"Lake; this one knows formats up to {FORMAT}: upgrade the package "
                        "(a migration is one-way: `lake backup` before upgrading keeps a copy "
                        "the older package opens)")
