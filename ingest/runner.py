"""Batch ingest: files in, durable trajectories out, bad records quarantined.

Records are validated a batch at a time (``lake/columnar.py``): Parquet and Arrow IPC
batches, and JSONL in blocks of lines read by Arrow's JSON reader when it reads them as
JSON does (``json_columnar.py``); other lines one by one (a large JSONL file of other
shapes: in worker processes, one per core). Good records go to the lake in chunks, which
it commits in the background. A file is its own copy until its records are committed, so
by default a chunk is not written to the write-ahead log (only a marker) and is
acknowledged once committed: a bulk load (``wal=False``). ``wal=True`` logs every chunk
(WAL + fsync) first and acknowledges it then, before the commit: sooner, at the cost of
writing everything twice. Either way a crash loses nothing acknowledged, and a re-run
skips what landed. Three things overlap: validating, handing over the previous chunks (a
thread: hashing, and logging with ``wal``), and committing earlier chunks to Lance (the
lake's writer thread).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from lake import Lake
from lake.columnar import DROP, KEEP, Batch, normalize_batch
from lake.errors import InvalidArgument
from lake.records import Context, Record, normalize, normalize_line
from lake.row_log import hash_records, rows_table, wal_entry
from lake.schema import STEPS

from .inputs import find_inputs, lake_paths
from .json_columnar import BLOCK_BYTES as JSON_BLOCK_BYTES
from .json_columnar import read_block
from .quarantine import Quarantine
from .readers import (
    ARROW_KINDS,
    READ_ERRORS,
    Item,
    Reader,
    _prefetch,
    jsonl_blocks,
    kind_of,
    size_of,
)
from .summary import Summary

CHUNK_RECORDS = 1000  # records handed to the lake at a time (smaller: a shorter pipeline tail)
LOG_DEPTH = 2  # chunks being handed over (hashed, logged) while the next is validated
UNACKED = 8  # bulk load: chunks handed over and not yet committed before reading waits

def ingest_paths(lake: Lake, paths: list[str], *, tenant: str | None = None,
                 quarantine: Quarantine | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_ack: Callable[[dict[str, Any]], None] | None = None,
                 workers: int | None = None, columnar: bool = True,
                 wal: bool = False) -> Summary:
    """Ingest files/directories. ``on_progress(done_bytes, total_bytes)``; ``on_ack`` gets
    ``{"file", "through", "trajectories", "lsn"}`` each time a chunk is durable: committed
    to the lake, or with ``wal`` logged in the write-ahead log (see the module docstring).

    ``workers``: processes that validate JSONL lines one by one, for a file whose first
    block Arrow does not read faithfully (None: one per core when the JSONL input is at
    least ``WORKERS_MIN_BYTES``, else none; 0: validate in this process). What lands is
    the same either way. Batches are validated here, column by column (``columnar=False``:
    every record one by one, as JSON, which lands the same rows, with other record hashes
    and the keys of ``meta`` / ``attributes`` objects in each line's order)."""
    quarantine = quarantine or Quarantine(directory=lake.settings.quarantine_path)
    found = find_inputs(paths, own=lake_paths(lake.settings, quarantine.path))
    files = found.files
    summary = Summary(files=len(files), skipped=[str(p) for p in found.skipped])
    start = getattr(lake.catalog.current(), "version", 0)
    total = sum(size_of(f) for f in files)
    if workers is None:
        cores = os.cpu_count() or 1
        jsonl = sum(f.stat().st_size for f in files if kind_of(f) in JSONL_KINDS)
        workers = cores if cores > 1 and jsonl >= WORKERS_MIN_BYTES else 0
    pools: list[_Workers] = []  # started when a JSONL file first needs it

    def pool() -> _Workers:
        if not pools:
            pools.append(_Workers(workers))
        return pools[0]

    acks = _Acks(lake, summary, on_ack, wal)
    done = 0
    try:
        for path in files:
            try:
                reader = Reader(path)
            except InvalidArgument as e:
                summary.unreadable.append(str(e))
                quarantine.add(str(path), e.message, None, None)
                continue
            _ingest_file(lake, reader, tenant, quarantine, acks,
                         lambda: on_progress(done + reader.position(), total)  # noqa: B023
                         if on_progress else None, pool if workers > 0 else None, workers,
                         columnar)
            done += reader.size
    finally:
        for p in pools:
            p.close()
        quarantine.close()  # what was rejected stays on record even if the run fails
    lake.flush()
    acks.release(0)
    if on_progress:
        on_progress(done, total)
    summary.rejected = quarantine.count - len(summary.unreadable)
    summary.changed = sum(v.detail.get("inserted", 0) + v.detail.get("updated", 0)
                          for v in lake.versions() if v.version > start)  # its commits
    summary.quarantine = str(quarantine.path) if quarantine.used else None
    return summary


class _Acks:
    """Chunks handed to the lake, reported (summary, ``on_ack``, progress) in order once
    durable: at once when logged (``wal``), else once the lake committed them."""

    def __init__(self, lake: Lake, summary: Summary, on_ack: Callable | None, wal: bool):
        self.lake, self.summary, self.on_ack, self.wal = lake, summary, on_ack, wal
        self.waiting: deque[tuple[int, int, int, int, dict[str, Any],
                                  Callable[[], None]]] = deque()

    def add(self, lsn: int, records: list[Record], file: str, through: str,
            tick: Callable[[], None]) -> None:
        ack = {"file": file, "through": through, "trajectories": len(records), "lsn": lsn}
        new, steps = self.summary.duplicates.add(records)
        self.waiting.append((lsn, len(records), new, steps, ack, tick))
        self.release(UNACKED)

    def release(self, keep: int) -> None:
        """Report the chunks that are durable; wait while more than ``keep`` are not."""
        writer = self.lake.writer
        while self.waiting:
            lsn, n, new, steps, ack, tick = self.waiting[0]
            if not self.wal and writer is not None and writer.lag["applied_lsn"] < lsn:
                if len(self.waiting) <= keep:
                    return
                writer.wait_applied(lsn)
            self.waiting.popleft()
            self.summary.records += n
            self.summary.trajectories += new
            self.summary.steps += steps
            if self.on_ack:
                self.on_ack(ack)
            tick()


def _ingest_file(lake: Lake, reader: Reader, tenant: str | None, quarantine: Quarantine,
                 acks: _Acks, tick: Callable[[], None],
                 pool: Callable[[], _Workers] | None = None, workers: int = 0,
                 columnar: bool = True) -> None:
    # Records are validated here or, with a pool, in worker processes (chunks of
    # WORKER_CHUNK items, results taken in order). Handing a chunk over (hashing; with
    # ``wal`` the log write + fsync; in a thread) overlaps validating the next ones; up to
    # LOG_DEPTH chunks are in flight (handed over in order), then ``acks`` reports them in
    # order once durable.
    ctx = lake.context(tenant)
    records: list[Record] = []
    lines: list[bytes] = []
    rows = False  # validated a batch at a time: logged as rows (``row_log``), not lines
    last = ""
    inflight: deque[tuple[Future[int], list[Record], str]] = deque()

    def finish(depth: int = 0) -> None:
        while len(inflight) > depth:
            finish_one()

    def finish_one() -> None:
        future, done, through = inflight.popleft()
        acks.add(future.result(), done, str(reader.path), through, tick)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-log") as log:

        def submit() -> None:
            nonlocal records, lines, rows
            finish(LOG_DEPTH - 1)
            if rows:
                inflight.append((log.submit(_log_rows, lake, records, ctx, acks.wal),
                                 records, last))
            else:
                inflight.append((log.submit(lake.submit, records, lines if acks.wal else None,
                                            ctx), records, last))
            records, lines, rows = [], [], False

        def accept(location: str, raw: bytes | None = None, rec: Record | None = None) -> None:
            nonlocal last
            last = location  # the last item read (good or not): an ack's "through"
            if rec is not None:
                records.append(rec)
                lines.append(raw)
                if len(records) >= CHUNK_RECORDS:
                    submit()

        def accept_rows(location: str, recs: list[Record]) -> None:
            nonlocal last, rows
            last = location
            if recs:
                records.extend(recs)
                rows = True
                if len(records) >= CHUNK_RECORDS:
                    submit()

        try:
            if columnar and reader.kind in ARROW_KINDS:
                _validate_batches(reader, ctx, quarantine, accept, accept_rows)
            elif columnar and reader.kind in JSONL_KINDS:
                done = _validate_json_blocks(reader, ctx, quarantine, accept, accept_rows,
                                             hand_off=pool is not None)
                if done is not None:  # lines Arrow does not read faithfully: the rest in
                    rest = itertools.islice(iter(reader), done, None)  # worker processes
                    _validate_in_workers(pool(), 2 * workers + 1, rest, ctx, quarantine,
                                         accept)
            elif pool is None or reader.kind not in JSONL_KINDS:
                for item in reader:
                    accept(item.location)
                    rec = _validate(item, ctx, quarantine)
                    if rec is not None:
                        accept(item.location, item.raw, rec)
            else:
                _validate_in_workers(pool(), 2 * workers + 1, reader, ctx, quarantine, accept)
            if records:
                submit()
            finish()
        except BaseException:
            with contextlib.suppress(Exception):
                finish()  # report what did become durable
            raise


def _validate(item: Item, ctx: Context, quarantine: Quarantine) -> Record | None:
    """One record through ``normalize``; a bad one goes to the quarantine."""
    if item.raw is None:
        quarantine.add(item.location, item.error or "unreadable", None, None)
        return None
    try:
        return (normalize_line(item.raw, ctx) if item.obj is None
                else normalize(item.obj, item.raw, ctx))  # obj: raw, parsed
    except InvalidArgument as e:
        quarantine.add(item.location, e.message, e.field, item.raw)
        return None


# -- Arrow input: whole batches at once --------------------------------------------------------
# Parquet and Arrow IPC rows are validated a batch at a time (``lake/columnar.py``); the rows
# it leaves (bad ones, or values it does not read) go through ``normalize`` one by one, so
# their errors are the usual ones. Chunks are logged as rows (``row_log.wal_entry``): no
# JSON text is made for the records that pass.

def _validate_batches(reader: Reader, ctx: Context, quarantine: Quarantine,
                      accept: Callable[..., None],
                      accept_rows: Callable[[str, list[Record]], None]) -> None:
    try:
        for first, batch in reader.batches():
            res = normalize_batch(batch, ctx, KEEP)
            _land(res, reader.items(batch, first, res.rest), ctx, quarantine, accept_rows,
                  f"{reader.path}:row {first + batch.num_rows}")
    except READ_ERRORS as e:
        item = reader.damaged(e)
        accept(item.location)
        quarantine.add(item.location, item.error or "unreadable", None, None)


def _land(res: Batch, rest: Iterable[Item], ctx: Context, quarantine: Quarantine,
          accept_rows: Callable[[str, list[Record]], None], location: str) -> None:
    """A validated batch's records, with those of the rows it left (``rest``: their items,
    in ``res.rest`` order) validated one by one, handed on in the file's order."""
    if not res.rest:  # (``rest`` is not even started: it converts the batch's rows)
        accept_rows(location, res.records)
        return
    got = list(zip(res.rows, res.records, strict=True))
    for row, item in zip(res.rest, rest, strict=True):
        rec = _validate(item, ctx, quarantine)
        if rec is not None:
            got.append((row, rec))
    got.sort(key=lambda x: x[0])  # the file's order: a later duplicate wins
    accept_rows(location, [r for _, r in got])


def _validate_json_blocks(reader: Reader, ctx: Context, quarantine: Quarantine,
                          accept: Callable[..., None],
                          accept_rows: Callable[[str, list[Record]], None],
                          hand_off: bool = False) -> int | None:
    """JSONL read a block of lines at a time: as one Arrow batch through the columnar door
    when Arrow reads those lines as JSON does (``json_columnar.read_block``, in a thread
    ahead of validation), else line by line; either way a bad line gets the per-line
    validator's error. ``hand_off``: when the first block is not read faithfully (a file
    of another shape), stop after it and return how many lines (non-blank) it held, for
    the caller to validate the rest line by line in worker processes."""
    def parsed() -> Iterator[tuple[list[Item], pa.RecordBatch | None]]:
        for b in jsonl_blocks(reader, JSON_BLOCK_BYTES):
            yield b.items, read_block(b.data, len(b.items), b.longest)

    try:
        first = True
        for items, batch in _prefetch(parsed(), depth=1):
            if batch is None:
                got = [rec for item in items
                       if (rec := _validate(item, ctx, quarantine)) is not None]
                accept_rows(items[-1].location, got)
                if first and hand_off:
                    return len(items)
                first = False
                continue
            first = False
            res = normalize_batch(batch, ctx, DROP)
            _land(res, [items[row] for row in res.rest], ctx, quarantine, accept_rows,
                  items[-1].location)
    except READ_ERRORS as e:  # damaged from here (a gzip cut short): what came before lands
        item = reader.damaged(e)
        accept(item.location)
        quarantine.add(item.location, item.error or "unreadable", None, None)
    return None


def _log_rows(lake: Lake, records: list[Record], ctx: Context, wal: bool) -> int:
    """Hand over a chunk validated a batch at a time, logged with ``wal`` (in the log
    thread: hashing and building the entry mostly release the GIL)."""
    if not wal:
        hash_records(records)
        return lake.submit(records, None, ctx)
    return lake.submit(records, wal_entry(records), ctx)


# -- validation in worker processes ----------------------------------------------------------
# Validation is pure Python and holds the GIL; on a multi-core machine, worker processes
# validate chunks of records in parallel and return the steps already as an Arrow table
# (cheaper to send than row dicts), while this process logs and commits. Each record's steps
# travel as a slice of its chunk's table; the writer stores them as they are.

WORKERS_MIN_BYTES = 64 << 20
JSONL_KINDS = ("jsonl", "jsonl.gz")
WORKER_CHUNK = 500  # items per task


def _validate_in_workers(pool: _Workers, depth: int, reader: Iterable[Item], ctx: Context,
                         quarantine: Quarantine, accept: Callable[..., None]) -> None:
    tasks: deque[list[tuple[str, bytes | None, str | None]]] = deque()

    def take() -> None:
        items = tasks.popleft()
        valid, rejected, steps = pool.result()
        rejected = {i: (message, field) for i, message, field in rejected}
        valid = iter(valid)
        offset = 0
        for i, (location, raw, error) in enumerate(items):
            accept(location)
            if raw is None:
                quarantine.add(location, error or "unreadable", None, None)
            elif i in rejected:
                message, field = rejected[i]
                quarantine.add(location, message, field, raw)
            else:
                trajectory, payloads = next(valid)
                n = trajectory["n_steps"]
                accept(location, raw, Record(trajectory, steps.slice(offset, n), payloads,
                                             (steps, offset)))
                offset += n

    chunk: list[tuple[str, bytes | None, str | None]] = []
    for item in reader:
        chunk.append((item.location, item.raw, item.error))
        if len(chunk) >= WORKER_CHUNK:
            pool.submit(([c[1] for c in chunk], ctx))
            tasks.append(chunk)
            chunk = []
            while len(tasks) >= depth:
                take()
    if chunk:
        pool.submit(([c[1] for c in chunk], ctx))
        tasks.append(chunk)
    while tasks:
        take()


def _validate_chunk(raws: list[bytes | None], ctx: Context) -> tuple[list, list, pa.Table]:
    """In a worker: ``normalize_line`` each record. Returns the valid ones' (trajectory row,
    payload rows), the rejected ones' (position, message, field), and all valid steps as one
    table, in order."""
    valid, rejected, steps = [], [], []
    for i, raw in enumerate(raws):
        if raw is None:
            continue
        try:
            rec = normalize_line(raw, ctx)
        except InvalidArgument as e:
            rejected.append((i, e.message, e.field))
            continue
        valid.append((rec.trajectory, rec.payloads))
        steps.extend(rec.steps)
    return valid, rejected, rows_table(steps, STEPS)


class _Workers:
    """Worker processes fed round-robin; results come back in the order of ``submit``.

    Fresh interpreters running ``_worker_main``: unlike multiprocessing's spawn, nothing of
    the caller's ``__main__`` is re-run. Tasks and results are pickles framed by their
    length on stdin / stdout."""

    def __init__(self, n: int):
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)  # where `ingest` and `lake` live
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-c", "from ingest.runner import _worker_main; _worker_main()"]
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       env=env) for _ in range(n)]
        # One feeder thread per process writes its tasks, so the caller never blocks on a
        # full pipe while that process is blocked writing a result nobody reads yet.
        self.feeds: list[queue.Queue[bytes | None]] = [queue.Queue() for _ in self.procs]
        self.feeders = [threading.Thread(target=self._feed, args=(p.stdin, q), daemon=True,
                                         name="ingest-feed") for p, q in zip(self.procs,
                                                                             self.feeds,
                                                                             strict=True)]
        for t in self.feeders:
            t.start()
        self.next = 0
        self.pending: deque[int] = deque()

    @staticmethod
    def _feed(out: BinaryIO, tasks: queue.Queue[bytes | None]) -> None:
        try:
            while (task := tasks.get()) is not None:
                _write_frame(out, task)
        except OSError:
            pass  # the process died: its result read fails and says so
        finally:
            with contextlib.suppress(OSError):
                out.close()

    def submit(self, task: object) -> None:
        i = self.next
        self.next = (i + 1) % len(self.procs)
        self.feeds[i].put(pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL))
        self.pending.append(i)

    def result(self) -> Any:
        i = self.pending.popleft()
        frame = _read_frame(self.procs[i].stdout)
        if frame is None:
            raise RuntimeError(f"ingest worker process {self.procs[i].pid} exited "
                               f"(code {self.procs[i].poll()}); see its stderr above")
        ok, value = pickle.loads(frame)
        if not ok:
            raise RuntimeError(f"ingest worker process failed:\n{value}")
        return value

    def close(self) -> None:
        for q in self.feeds:
            q.put(None)  # end of tasks: the process exits
        for p in self.procs:
            if self.pending:  # given up on (an error): results nobody will read
                p.kill()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        for t in self.feeders:
            t.join(timeout=10)


def _write_frame(out: BinaryIO, data: bytes) -> None:
    out.write(struct.pack("<Q", len(data)))
    out.write(data)
    out.flush()


def _read_frame(src: BinaryIO) -> bytes | None:
    head = src.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    data = src.read(n)
    return data if len(data) == n else None


def _worker_main() -> None:
    """In a worker process: validate the chunks read on stdin, results to stdout."""
    import traceback

    src = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, not into the result stream
    while (frame := _read_frame(src)) is not None:
        try:
            result = (True, _validate_chunk(*pickle.loads(frame)))
        except Exception:  # noqa: BLE001 - reported to the caller
            result = (False, traceback.format_exc())
        _write_frame(out, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))

