"""Validated records in the write-ahead log as rows, and their record hash.

``wal_entry`` makes one log entry (op ``rows``) of validated records: their trajectory rows
and payloads as one JSON line, their steps as an Arrow IPC stream; replay
(``read_wal_entry``) reads the same records back, without validating or converting them
again. No JSON text is made per record: the door for Arrow input (``lake/columnar.py``)
logs what it validated this way.

It also sets the ``_record_hash`` of records that have none (those ``columnar`` made): an
XXH3-128 hash of their stored rows, everything but the tenant and the ingest time, not of
a JSON text. Re-sending the same rows is a no-op; the same record read from Parquet or
Arrow IPC collides when its rows are the same. A record that came as a JSON line keeps the
hash of its text (``records.normalize``), so the same record sent once as JSON and once as
Arrow replaces the stored one once, with the same rows. (sha256 until 2026-11, 0.6 s of a
1M-step load: a row hashed so is rewritten once when sent again, never duplicated. The
hash tells a record sent again from a changed one; it guards nothing against an adversary,
who could only collide with the tenant's own trajectory of the same id.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.types as pt
import xxhash

from . import arrow_values as av
from .records import Record
from .schema import STEPS


def wal_entry(records: list[Record], steps: pa.Table | None = None) -> memoryview:
    """Validated records as one log entry: their trajectory rows and payloads as a JSON
    line, then their steps as an Arrow IPC stream (``steps``: all of them, in order, when
    the caller has them as one table). Sets the ``_record_hash`` of records made by
    ``normalize_batch`` (hashing their rows here, in the logging thread, overlaps the
    validation of the next batch)."""
    if steps is None:
        steps = steps_of(records)
    hash_records(records, steps)
    head = orjson.dumps({"trajectories": [r.trajectory for r in records],
                         "payloads": [r.payloads for r in records]}) + b"\n"
    steps = steps.drop_columns(["tenant", "trajectory_id"])  # the trajectory rows have them
    size = pa.MockOutputStream()  # sized first: a growing buffer is copied as it grows
    with pa.ipc.new_stream(size, steps.schema) as w:
        w.write_table(steps)
    buf = pa.allocate_buffer(len(head) + size.size())
    out = pa.FixedSizeBufferWriter(buf)
    out.write(head)
    with pa.ipc.new_stream(out, steps.schema) as w:
        w.write_table(steps)
    return memoryview(buf)


def read_wal_entry(body: bytes) -> list[Record]:
    """The records of a ``wal_entry``, as they were logged."""
    head, _, ipc = body.partition(b"\n")
    h = orjson.loads(head)
    trajs = h["trajectories"]
    steps = pa.ipc.open_stream(pa.py_buffer(ipc)).read_all().combine_chunks()
    counts = [t["n_steps"] for t in trajs]
    ids = pa.array([t["trajectory_id"] for t in trajs], pa.string())
    steps = steps.add_column(0, "trajectory_id", ids.take(np.repeat(np.arange(len(trajs)),
                                                                     counts)))
    tenant = trajs[0]["tenant"] if trajs else ""
    steps = steps.add_column(0, "tenant", pa.array([tenant], pa.string()).take(
        np.zeros(steps.num_rows, np.int64))).cast(STEPS)
    out, off = [], 0
    for traj, payloads, n in zip(trajs, h["payloads"], counts, strict=True):
        if traj["scores"] is not None:
            traj["scores"] = [tuple(s) for s in traj["scores"]]  # JSON has no tuples
        out.append(Record(traj, steps.slice(off, n), payloads, (steps, off)))
        off += n
    return out


CHUNKS_KEPT = 16  # a steps table of at most this many pieces is not combined into one


def steps_of(records: list[Record]) -> pa.Table:
    """The records' steps as one ``steps`` table, in order. A record's steps are row dicts
    or a table: a slice of its ``source`` (validated as Arrow, here or in an ingest worker);
    neighbouring records' slices of one source are taken as one slice, not copied. A few
    big pieces are left as chunks; many small ones would cost Lance far more than one copy
    (2,000 slices: ~20x), so they are combined."""
    parts: list[pa.Table] = []
    rows: list[dict[str, Any]] = []
    run: list[Any] = [None, 0, 0]  # a slice of one source table: [table, start, end]

    def end_run() -> None:
        if run[0] is not None:
            parts.append(run[0].slice(run[1], run[2] - run[1]))
            run[0] = None

    for r in records:
        src = r.source  # (read before r.steps: a record of lake/columnar slices on reading)
        if src is None and isinstance(r.steps, list):
            end_run()
            rows.extend(r.steps)
            continue
        if rows:
            parts.append(rows_table(rows, STEPS))
            rows = []
        if src is not None and src[0] is run[0] and src[1] == run[2]:
            run[2] += r.trajectory["n_steps"]  # the next records' steps follow: no copy
        elif src is not None:
            end_run()
            run[:] = [src[0], src[1], src[1] + r.trajectory["n_steps"]]
        else:
            end_run()
            parts.append(r.steps)
    end_run()
    if rows or not parts:
        parts.append(rows_table(rows, STEPS))
    if len(parts) == 1:
        return parts[0]
    table = pa.concat_tables(parts)
    return table.combine_chunks() if len(parts) > CHUNKS_KEPT else table


def rows_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Row dicts (each holding every column of ``schema``) -> a table.

    One pass of Arrow's converter over the dicts as a struct array: faster than a list per
    column. A row without one of the columns is a bug upstream: KeyError, as a column-wise
    build would raise, rather than a silent null.
    """
    names = frozenset(schema.names)
    for r in rows:
        if not r.keys() >= names:
            raise KeyError(next(n for n in schema.names if n not in r))
    arr = pa.array(rows, pa.struct(list(schema)))
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]  # > 2 GB: chunked
    return pa.Table.from_batches(
        [pa.RecordBatch.from_arrays(c.flatten(), schema=schema) for c in chunks], schema=schema)


_HASHED = ("trajectory_id", "task", "agent", "agent_version", "model", "session_id",
           "on_behalf_of", "parent_id", "fork_step", "status", "started_at", "ended_at",
           "success", "reward", "scores", "n_steps", "tokens_in", "tokens_out", "cost_usd",
           "tags", "meta", "expires_at")
_NAN_BITS = np.float64(np.nan).view(np.int64)
_HASHED_STEPS = [f.name for f in STEPS if f.name not in ("tenant", "trajectory_id")]


def hash_records(records: list[Record], steps: pa.Table | None = None) -> None:
    """Set the record hash of records without one: XXH3-128 of the trajectory row and the
    step rows (``steps``: every record's steps, in order; None: made from the records)."""
    if all(r.trajectory["_record_hash"] is not None for r in records):
        return
    if steps is None:
        steps = steps_of(records)
    numbers, texts = _step_bytes(steps)
    # each record's byte range in every buffer, as Python ints (numpy scalars cost more);
    # an empty range is skipped (it would not change the digest)
    first = np.concatenate(([0], np.cumsum([r.trajectory["n_steps"] for r in records])))
    row = numbers.shape[1] * 8
    ranges = [(memoryview(numbers.reshape(-1).view(np.uint8)), (first * row).tolist())]
    ranges += [(data, offsets[first].tolist()) for data, offsets in texts
               if offsets[-1] > offsets[0]]  # (a column of no text adds nothing)
    for i, r in enumerate(records):
        t = r.trajectory
        if t["_record_hash"] is None:
            h = xxhash.xxh3_128(b"rows/2\n" + orjson.dumps([t[k] for k in _HASHED]) + b"\n")
            for data, at in ranges:
                a, b = at[i], at[i + 1]
                if b > a:
                    h.update(data[a:b])
            t["_record_hash"] = h.hexdigest()[:24]


def _step_bytes(table: pa.Table) -> tuple[np.ndarray, list[tuple[memoryview, np.ndarray]]]:
    """The step rows as bytes: their fixed-width values and text lengths row by row (null:
    -1, or NaN), and each text column's characters with its offsets."""
    nums = np.empty((table.num_rows, len(_HASHED_STEPS)), np.int64)
    texts = []
    for j, name in enumerate(_HASHED_STEPS):
        col = table.column(name).combine_chunks()
        ok = av.valid(col)
        null = -1
        if pt.is_string(col.type):
            offsets = np.frombuffer(col.buffers()[1], np.int32)[col.offset:][:len(col) + 1]
            np.subtract(offsets[1:], offsets[:-1], out=nums[:, j])
            data = col.buffers()[2]
            texts.append((memoryview(data if data is not None else b""), offsets))
        elif pt.is_floating(col.type):
            nums[:, j] = av.num(col, 0.0).astype(np.float64).view(np.int64)
            null = _NAN_BITS
        else:
            nums[:, j] = av.num(col.cast(pa.int64()), 0)
        nums[~ok, j] = null
    return nums, texts
