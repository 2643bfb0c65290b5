"""`lake ingest PATH... --server HOST:PORT`: files loaded into a running `lake serve`.

While a server runs it is the lake's one writer, so a backfill goes through it: the same
inputs, readers, quarantine, summary and exit codes as a local `lake ingest`
(``ingest/runner.py``), with the records sent by ``LakeClient.ingest_arrow``
``BATCH_RECORDS`` at a time (it splits a call to fit the server's message size). Each call
is durable when it returns and idempotent on trajectory ids: a re-run after a failure
part way lands each record once.

Records are not validated here: the server validates every record (its rules are the ones
that count) and returns a reject (index, field, reason) per bad one, which is written to
the quarantine at its file:line (or file:row N) with its original text, as a local reject
is. What cannot be sent at all is quarantined here, with the local message: a line that
is not JSON or not a JSON object, damage in a file.

Summary: ``records`` and the rejects come from the server's replies; ``trajectories``,
``steps`` and repeated ids from the accepted records' ids and step lists
(``ingest/duplicates.py``; a record without a status ranks as running there). ``changed``
is summed over the versions committed during the load, which needs a token with the
``admin`` scope (else it is None: not counted); on a busy server it counts other writers'
changes of that time too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ingest import Quarantine, Summary, find_inputs
from ingest.readers import Item, Reader, size_of
from lake.errors import InvalidArgument, PermissionDenied
from lake.records import normalize, normalize_line

from .checked import UnknownFieldWarning
from .client import IngestReply, LakeClient

BATCH_RECORDS = 2000  # records per ingest_arrow call (see the module docstring)
BATCH_BYTES = 16 << 20  # or fewer, when their JSON text is this large


def ingest_remote(client: LakeClient, paths: list[str], *, quarantine: Quarantine,
                  own: Iterable[Path] = (),
                  on_progress: Callable[[int, int], None] | None = None,
                  on_ack: Callable[[dict[str, Any]], None] | None = None,
                  batch_records: int = BATCH_RECORDS) -> Summary:
    """Send the records of ``paths`` (files, directories: ``find_inputs``; ``own``: paths
    never read) to the server of ``client``. ``on_progress(done_bytes, total_bytes)``;
    ``on_ack`` gets ``{"file", "through", "trajectories", "lsn"}`` after each call."""
    found = find_inputs(paths, own=own)
    summary = Summary(files=len(found.files), skipped=[str(p) for p in found.skipped])
    start = _latest_version(client)
    total = sum(size_of(f) for f in found.files)
    sender = _Sender(client, quarantine, summary, on_ack, batch_records)
    done = 0
    try:
        for path in found.files:
            try:
                reader = Reader(path)
            except InvalidArgument as e:
                sender.send()  # what came before is quarantined first
                sender.wait()
                summary.unreadable.append(str(e))
                quarantine.add(str(path), e.message, None, None)
                continue
            sender.tick = (lambda: on_progress(done + reader.position(), total)  # noqa: B023
                           ) if on_progress else _nothing
            for item in reader:
                sender.add(str(path), item)
            sender.send()
            done += reader.size
        sender.wait()
    finally:
        sender.pool.shutdown(wait=True, cancel_futures=True)
        quarantine.close()  # what was rejected stays on record even if the run fails
    if on_progress:
        on_progress(done, total)
    summary.rejected = quarantine.count - len(summary.unreadable)
    summary.changed = _changes(client, start, sender.lsn)
    summary.quarantine = str(quarantine.path) if quarantine.used else None
    return summary


def _nothing() -> None:
    pass


@dataclass(slots=True)
class _Seen:
    """What ``Ids`` reads of an accepted record (a ``lake.records.Record``'s trajectory)."""

    trajectory: dict[str, Any]


class _Sender:
    """Items gathered into batches; each batch's records sent (in a thread, so the next
    batch is read meanwhile), then its rejects and the items that could not be sent
    quarantined, in the files' order."""

    def __init__(self, client: LakeClient, quarantine: Quarantine, summary: Summary,
                 on_ack: Callable[[dict[str, Any]], None] | None, batch_records: int):
        self.client, self.quarantine, self.summary = client, quarantine, summary
        self.on_ack, self.batch_records = on_ack, batch_records
        self.tick: Callable[[], None] = _nothing
        self.batch = _Batch()
        self.bytes, self.lsn = 0, 0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-send")
        self.pending: tuple[Future[IngestReply], _Batch] | None = None

    def add(self, file: str, item: Item) -> None:
        b = self.batch
        b.file, b.through = file, item.location  # the last item read: an ack's "through"
        got = _record(item)
        b.items.append((item, got))
        if isinstance(got, dict):
            b.records.append(got)
            self.bytes += len(item.raw or b"")
            if len(b.records) >= self.batch_records or self.bytes >= BATCH_BYTES:
                self.send()

    def send(self) -> None:
        """Send the batch gathered, once the call before it has answered."""
        if not self.batch.items:
            return
        batch, self.batch, self.bytes = self.batch, _Batch(), 0
        batch.tick = self.tick
        self.wait()
        self.pending = self.pool.submit(self._call, batch.records), batch

    def wait(self) -> None:
        """Take the reply of the call in flight, if any."""
        if self.pending is None:
            return
        (future, b), self.pending = self.pending, None
        reply = future.result()
        rejected = {r["index"]: r for r in reply.rejects}
        seen, sent = [], 0
        for item, got in b.items:
            if isinstance(got, InvalidArgument):
                self.quarantine.add(item.location, got.message, got.field, item.raw)
                continue
            if (r := rejected.get(sent)) is not None:
                self.quarantine.add(item.location, r["reason"], r["field"], item.raw)
            else:
                seen.append(_seen(got, item.raw or b""))
            sent += 1
        new, steps = self.summary.duplicates.add(seen)  # type: ignore[arg-type]
        self.summary.records += reply.accepted
        self.summary.trajectories += new
        self.summary.steps += steps
        self.lsn = max(self.lsn, reply.lsn)
        if self.on_ack:
            self.on_ack({"file": b.file, "through": b.through, "trajectories": len(seen),
                         "lsn": reply.lsn})
        b.tick()

    def _call(self, records: list[dict[str, Any]]) -> IngestReply:
        if not records:
            return IngestReply()
        with warnings.catch_warnings():  # a local load does not warn of unknown fields
            warnings.simplefilter("ignore", UnknownFieldWarning)
            try:
                return self.client.ingest_arrow(records)
            except InvalidArgument as e:
                if e.field != "request":
                    raise
            return self._one_by_one(records)  # one is too big for a message

    def _one_by_one(self, records: list[dict[str, Any]]) -> IngestReply:
        """Each record in a call of its own (those of the batch that landed land again: a
        no-op); one too big for a message is a reject, not the end of the load."""
        out = IngestReply()
        for i, record in enumerate(records):
            try:
                r = self.client.ingest_arrow([record])
            except InvalidArgument as e:
                if e.field != "request":
                    raise
                out.rejects.append({"index": i, "field": None, "reason": e.message})
                continue
            out.accepted, out.steps = out.accepted + r.accepted, out.steps + r.steps
            out.rejects += [{**x, "index": i} for x in r.rejects]
            out.lsn = max(out.lsn, r.lsn)
        return out


@dataclass
class _Batch:
    items: list[tuple[Item, dict[str, Any] | InvalidArgument]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # those to send
    file: str = ""
    through: str = ""
    tick: Callable[[], None] = _nothing


def _record(item: Item) -> dict[str, Any] | InvalidArgument:
    """The record of ``item`` to send, or why it cannot be sent, as a local load says it
    (``normalize_line`` / ``normalize`` fail on it before they read anything else)."""
    if item.raw is None:
        return InvalidArgument(item.error or "unreadable")
    try:
        obj = item.obj if item.obj is not None else orjson.loads(item.raw)
        if not isinstance(obj, dict):
            normalize(obj, item.raw, None)  # type: ignore[arg-type]  # raises: not an object
    except orjson.JSONDecodeError:
        try:
            normalize_line(item.raw, None)  # type: ignore[arg-type]  # raises: not JSON
        except InvalidArgument as e:
            return e
        raise
    except InvalidArgument as e:
        return e
    return obj


def _seen(obj: dict[str, Any], raw: bytes) -> _Seen:
    tid = obj.get("trajectory_id")
    steps = obj.get("steps")
    outcome = obj.get("outcome") if isinstance(obj.get("outcome"), dict) else {}
    status = obj.get("status")
    if status is None:  # as the lake reads it (``records.head_fields``)
        success = outcome.get("success")  # type: ignore[union-attr]
        success = obj.get("success") if success is None else success
        status = "running" if success is None else ("succeeded" if success else "failed")
    return _Seen({"trajectory_id": tid if isinstance(tid, str) and tid else raw,
                  "n_steps": len(steps) if isinstance(steps, list) else 0,
                  "status": status, "_record_hash": raw})


def _latest_version(client: LakeClient) -> int | None:
    """The server's latest version; None when the token may not list versions (admin)."""
    try:
        return max((v["version"] for v in client.versions()), default=0)
    except PermissionDenied:
        return None


def _changes(client: LakeClient, start: int | None, lsn: int) -> int | None:
    """Trajectories inserted or updated by the versions committed since ``start``, once
    the load's last write (``lsn``) is committed; None when they cannot be listed."""
    if start is None:
        return None
    try:
        if lsn:
            client.list_trajectories(page_size=1, min_lsn=lsn)  # waits for the commit
        return sum(v["detail"].get("inserted", 0) + v["detail"].get("updated", 0)
                   for v in client.versions() if v["version"] > start)
    except PermissionDenied:
        return None
