"""Write-ahead log: what is acknowledged is on disk before the lake commit.

Layout: a directory of segment files ``<first-lsn>.wal`` and a ``WRITER`` file holding
this log's id (lake commits record ``(writer, lsn)`` so a restart knows where to resume).
Each entry is ``MAGIC | lsn u64 | length u32 | crc32 u32 | payload`` and is fsynced before
``append`` returns. On open, a torn tail (a crash mid-append) is cut off at the last
complete entry: such an entry was never acknowledged. Damage with intact entries after it
(a bad sector, a flipped bit) is no torn tail: only the damaged entries are lost (named in
``damage``; the lake says whether it held them already), the segment is rewritten without
them and its damaged copy kept beside it.

The log must live on a local disk (``fsync``); the lake itself may be remote.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import Conflict, LakeError, ResourceExhausted, Unavailable, disk_error

MAGIC = b"CLW1"
WRITER_LOCK = "_writer.lock"  # in a local lake's root: one writer, whichever its log
FREE_BYTES = 16 << 20  # free space that ends a full disk's refusals, as health sees them
_HEADER = struct.Struct("<4sQII")  # magic, lsn, length, crc32


log = logging.getLogger(__name__)


class WriteAheadLog:
    def __init__(self, path: Path, segment_bytes: int = 64 << 20, *,
                 root: Path | None = None):
        """``root``: the lake's local root, locked too, so that two processes never write
        one lake, even with different logs (LAKE_WAL_DIR). (An object-store root has no
        lock: run one writer for it.)"""
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)  # new: its owner's only
        self.segment_bytes = segment_bytes
        self._locks: list[BinaryIO] = []
        try:
            self._lock(self.path / "LOCK", f"the lake's write-ahead log {self.path}")
            if root is not None:
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._lock(root / WRITER_LOCK, f"the lake at {root}")
        except BaseException:
            self._unlock()
            raise
        self.writer_id = self._writer_id()
        self._mutex = threading.Lock()
        self._segments = sorted(self.path.glob("*.wal"), key=lambda p: int(p.stem))
        self.damage: list[tuple[int, int, Path]] = []  # (first, last lsn, segment) lost
        self.last_lsn = self._recover_tail()
        self._out: BinaryIO | None = None  # unbuffered: a failed write leaves no bytes behind
        self._broken: str | None = None
        self._disk_full = False  # the last append failed on a full disk (``full``)

    def _lock(self, path: Path, what: str) -> None:
        f = open(path, "a+b")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise Conflict(
                f"{what} is in use by another process (a running `lake serve` or `lake "
                "ingest`?); a lake has one writer. While a server runs, go through it "
                "(`lake ingest PATH --server HOST:PORT` for files; server.client.LakeClient: "
                "ingest_arrow, get_context, tag...; `lake sql` and `lake token` work beside "
                "it), or stop it and retry") from None
        self._locks.append(f)

    def _unlock(self) -> None:
        for f in self._locks:
            if not f.closed:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
        self._locks = []

    # -- identity and recovery --------------------------------------------------------------
    def _writer_id(self) -> str:
        f = self.path / "WRITER"
        if not f.exists():
            tmp = f.with_suffix(".tmp")
            tmp.write_text(uuid.uuid4().hex)
            _fsync_file(tmp)
            os.replace(tmp, f)
            _fsync_dir(self.path)
        return f.read_text().strip()

    def _recover_tail(self) -> int:
        """Return the last complete LSN. A torn tail of the last segment (a crash mid-append:
        damage with nothing intact after it) is cut off; damage with intact entries after it
        is not a torn tail: those entries are kept (``_repair``) and the damaged ones named
        in ``damage``."""
        last = 0
        for i, seg in enumerate(self._segments):
            data = seg.read_bytes()
            end = 0
            for lsn, _payload, end in _scan_bytes(data):  # noqa: B007 - the last end is used
                last = lsn
            if end == len(data):
                continue
            resume = _resume_at(data, end)
            later = _entries_after(data, resume, last)
            if resume > end + 1:  # a whole header: its payload skipped. Unless its length
                alt = _entries_after(data, end + 1, last)  # is what was damaged: then the
                if _whole_chain(data, alt) and (not later or alt[0][0] < later[0][0]):
                    later = alt  # entries after it run on, whole, to the end of the file
            nxt = int(self._segments[i + 1].stem) if i + 1 < len(self._segments) else None
            if later or nxt is not None:
                first_lost, last = last + 1, later[-1][0] if later else last
                self._repair(seg, data, end, later)
                self.damage.append((first_lost, (later[0][0] if later else nxt) - 1, seg))
            else:  # a torn tail: never acknowledged
                with open(seg, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
        if self._segments:  # an empty last segment (rolled, or made just before a crash)
            last = max(last, int(self._segments[-1].stem) - 1)  # names the next lsn: never
        return last  # go below it (damage before it may have taken the entries up to it)

    def _repair(self, seg: Path, data: bytes, end: int,
                later: list[tuple[int, int, int]]) -> None:
        """Rewrite ``seg`` with its intact entries only; the damaged file is kept beside it
        (``<segment>.damaged``, not read again) for a look."""
        kept = data[:end] + b"".join(data[a:b] for _lsn, a, b in later)
        aside = seg.with_name(f"{seg.name}.damaged")
        n = 1
        while aside.exists():
            n += 1
            aside = seg.with_name(f"{seg.name}.damaged.{n}")
        tmp = seg.with_name(f"{seg.name}.repairing")
        with open(tmp, "wb") as f:
            f.write(kept)
            os.fsync(f.fileno())
        os.link(seg, aside)
        os.replace(tmp, seg)
        _fsync_dir(self.path)
        log.error("write-ahead log segment %s is damaged at byte %d: %d intact entries after "
                  "the damage are kept; the damaged bytes are kept in %s", seg, end,
                  len(later), aside)

    # -- writing ------------------------------------------------------------------------------
    def append(self, payload: bytes) -> int:
        """Append one entry, fsync it, and return its LSN. Thread-safe.

        A write that fails (a full disk) leaves nothing behind: the segment is cut back to
        where the entry began, so entries appended later are not lost behind a torn one
        (``_recover_tail`` stops at the first damage). If even that fails, the log refuses
        every append until it is reopened."""
        with self._mutex:
            if self._broken is not None:
                raise Unavailable(f"the write-ahead log {self.path} could not be repaired "
                                  f"after a failed write ({self._broken}); restart the "
                                  "server (or process): it recovers the log on open")
            lsn = self.last_lsn + 1
            out, start = None, None
            try:
                out = self._segment_for(len(payload))
                start = out.tell()
                _write_all(out, _HEADER.pack(MAGIC, lsn, len(payload), zlib.crc32(payload)))
                _write_all(out, payload)
                os.fsync(out.fileno())
            except OSError as e:
                if out is not None and start is not None:
                    self._cut_back(out, start, e)
                err = _write_error(self.path, e)
                self._disk_full = isinstance(err, ResourceExhausted)
                raise err from e
            self._disk_full = False
            self.last_lsn = lsn
            return lsn

    def full(self) -> bool:
        """The last append failed on a full disk, and the disk still has under
        ``FREE_BYTES`` free (writes are refused meanwhile: health says so)."""
        if self._disk_full:
            try:
                st = os.statvfs(self.path)
                self._disk_full = st.f_bavail * st.f_frsize < FREE_BYTES
            except OSError:
                pass
        return self._disk_full

    def _cut_back(self, out: BinaryIO, start: int, cause: OSError) -> None:
        try:
            os.ftruncate(out.fileno(), start)
            os.fsync(out.fileno())
        except OSError as e:
            self._broken = f"{cause}; then cutting it back: {e}"

    def _segment_for(self, size: int) -> BinaryIO:
        if self._out is not None and self._out.tell() + size <= self.segment_bytes:
            return self._out
        if self._out is None and self._segments:
            seg = self._segments[-1]
            had = seg.stat().st_size
            if had + size <= self.segment_bytes or had == 0:  # an empty one takes any size
                self._out = open(seg, "ab", buffering=0)
                return self._out
        if self._out is not None:
            self._out.close()
        self._out = open(self._new_segment(), "ab", buffering=0)
        return self._out

    def _new_segment(self) -> Path:
        """The segment the next entry (``last_lsn + 1``) starts, made and listed once (so
        truncate never takes the live segment for an old one)."""
        seg = self.path / f"{self.last_lsn + 1:020d}.wal"
        if not self._segments or self._segments[-1] != seg:
            seg.touch()
            _fsync_dir(self.path)
            self._segments.append(seg)
        return seg

    def roll(self) -> None:
        """Start a new segment now: the current one is deleted by the next ``truncate``
        past its entries (a purge: applied entries hold what was ingested)."""
        with self._mutex:
            if self._out is not None:
                self._out.close()
                self._out = None
            self._new_segment()

    # -- reading and truncation -----------------------------------------------------------------
    def replay(self, after_lsn: int) -> Iterator[tuple[int, bytes]]:
        """Entries with LSN > after_lsn, in order."""
        for i, seg in enumerate(list(self._segments)):
            nxt = self._segments[i + 1] if i + 1 < len(self._segments) else None
            if nxt is not None and int(nxt.stem) - 1 <= after_lsn:
                continue
            for lsn, payload, _end in _scan(seg):
                if lsn > after_lsn:
                    yield lsn, payload

    def truncate(self, upto_lsn: int) -> None:
        """Delete whole segments whose entries are all <= upto_lsn (applied to the lake)."""
        with self._mutex:
            keep = []
            for i, seg in enumerate(self._segments):
                nxt = self._segments[i + 1] if i + 1 < len(self._segments) else None
                if nxt is not None and int(nxt.stem) - 1 <= upto_lsn:
                    seg.unlink(missing_ok=True)
                else:
                    keep.append(seg)
            self._segments = keep

    def close(self) -> None:
        with self._mutex:
            if self._out is not None:
                self._out.close()
                self._out = None
        self._unlock()


def _scan(seg: Path) -> Iterator[tuple[int, bytes, int]]:
    """Yield (lsn, payload, end offset) for each complete, checksummed entry."""
    with open(seg, "rb") as f:
        return _scan_bytes(f.read())


def _resume_at(data: bytes, end: int) -> int:
    """Where to look for intact entries past the damaged one at ``end``: past its payload
    when its header is whole (never inside it: a payload is user data, and may hold bytes
    that look like an entry); a header that runs past the file is a torn tail (nothing
    after it); a damaged header, from the byte after it."""
    if end + _HEADER.size <= len(data):
        magic, _lsn, length, _crc = _HEADER.unpack_from(data, end)
        if magic == MAGIC:
            stop = end + _HEADER.size + length
            return len(data) if stop > len(data) else stop
    return end + 1


def _whole_chain(data: bytes, entries: list[tuple[int, int, int]]) -> bool:
    """Entries that follow one another with rising lsns, each starting where the one before
    ends, to the end of the file: a log's own entries (bytes in a torn entry's payload that
    look like entries do not also run, whole, to where a crash happened to cut the file)."""
    return bool(entries) and entries[-1][2] == len(data) and all(
        b[1] == a[2] and b[0] == a[0] + 1 for a, b in zip(entries, entries[1:], strict=False))


def _entries_after(data: bytes, pos: int, after_lsn: int) -> list[tuple[int, int, int]]:
    """Intact entries from ``pos`` on (found by their magic, checked by their checksum,
    LSNs rising past ``after_lsn``): ``(lsn, start, end)``."""
    out = []
    i = data.find(MAGIC, pos)
    while i != -1 and i + _HEADER.size <= len(data):
        _magic, lsn, length, crc = _HEADER.unpack_from(data, i)
        start = i + _HEADER.size
        if lsn > after_lsn and start + length <= len(data) and \
                zlib.crc32(data[start:start + length]) == crc:
            out.append((lsn, i, start + length))
            after_lsn = lsn
            i = data.find(MAGIC, start + length)
        else:
            i = data.find(MAGIC, i + 1)
    return out


def _scan_bytes(data: bytes) -> Iterator[tuple[int, bytes, int]]:
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, lsn, length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        payload = data[start:start + length]
        if magic != MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
            return
        pos = start + length
        yield lsn, payload, pos


def _write_all(out: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[out.write(view):]


def _write_error(path: Path, e: OSError) -> LakeError:
    """A failed log write as the error a caller can act on; nothing of it was logged."""
    return disk_error(e, f"the write-ahead log {path} (LAKE_WAL_DIR)",
                      "retry: nothing of this write was logged") or \
        Unavailable(f"the write-ahead log {path} could not be written ({e.strerror}): "
                    "nothing of this write was logged. Check its disk, then retry")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
