"""Write-ahead log: fsynced entries survive, a torn tail is cut, replay fills the lake."""

from __future__ import annotations

import time

import orjson
import pytest

from lake import Lake
from lake.records import Context, now_us
from lake.wal import WriteAheadLog


def _entry(records: list[dict], tenant: str = "default") -> bytes:
    header = orjson.dumps({"op": "traj", "tenant": tenant, "at": now_us(), "limit": 65536,
                           "preview": 1024})
    return header + b"\n" + b"\n".join(orjson.dumps(r) for r in records)


def _traj(tid: str, n: int = 2) -> dict:
    return {"trajectory_id": tid, "task": f"task {tid}",
            "steps": [{"kind": "tool", "name": "x"} for _ in range(n)]}


def test_append_replay_and_lsns(tmp_path):
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=200)
    lsns = [wal.append(f"entry {i}".encode() * 10) for i in range(5)]
    assert lsns == [1, 2, 3, 4, 5]
    assert len(list((tmp_path / "wal").glob("*.wal"))) > 1  # rolled over segments
    assert [lsn for lsn, _ in wal.replay(2)] == [3, 4, 5]
    wal.close()
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=200)
    assert wal.last_lsn == 5 and wal.append(b"next") == 6
    wal.truncate(4)
    assert [lsn for lsn, _ in wal.replay(0)][0] <= 5  # entry 5 must survive truncation
    assert 5 in [lsn for lsn, _ in wal.replay(0)]
    wal.close()


def test_torn_tail_is_cut_and_never_replayed(tmp_path):
    wal = WriteAheadLog(tmp_path / "wal")
    wal.append(b"complete")
    wal.close()
    seg = next((tmp_path / "wal").glob("*.wal"))
    size = seg.stat().st_size
    with open(seg, "ab") as f:  # a crash in the middle of the next append
        f.write(b"CLW1\x02\x00\x00\x00\x00\x00\x00\x00\xff\x00\x00\x00partial")
    wal = WriteAheadLog(tmp_path / "wal")
    assert seg.stat().st_size == size and wal.last_lsn == 1
    assert [p for _, p in wal.replay(0)] == [b"complete"]
    assert wal.append(b"after") == 2
    wal.close()


def test_logged_but_uncommitted_records_are_replayed_on_open(lake_dir):
    with Lake.open(str(lake_dir)) as lake:
        lake.ingest([_traj("a")])
        wal_path = lake.settings.wal_path
    # simulate a crash after the fsync but before the lake commit
    wal = WriteAheadLog(wal_path)
    wal.append(_entry([_traj("b", 3), _traj("c", 1)]))
    wal.close()
    with Lake.open(str(lake_dir)) as lake:
        assert lake.count("trajectories") == 3 and lake.count("steps") == 6
        assert lake.versions()[-1].operation == "replay"
    with Lake.open(str(lake_dir)) as lake:  # replaying twice changes nothing
        assert lake.count("trajectories") == 3 and lake.count("steps") == 6


def test_partial_commit_then_replay_has_no_duplicate_steps(lake_dir):
    """Steps written, trajectory row not (a crash mid-commit): replay must not double them."""
    from lake.records import normalize_line
    from lake.row_log import rows_table
    from lake.schema import STEPS

    with Lake.open(str(lake_dir)) as lake:
        lake.ingest([_traj("a")])
        ctx = Context("default", now_us())
        rec = normalize_line(orjson.dumps(_traj("b", 4)), ctx)
        lake.store.append("steps", rows_table(rec.steps, STEPS))  # the orphan steps
        wal_path = lake.settings.wal_path
    wal = WriteAheadLog(wal_path)
    wal.append(_entry([_traj("b", 4)]))
    wal.close()
    with Lake.open(str(lake_dir)) as lake:
        assert lake.count("trajectories") == 2
        assert lake.sql("select count(*) from steps where trajectory_id='b'").fetchall() == [(4,)]


def test_wiped_log_directory_does_not_reuse_lsns(lake_dir):
    import shutil

    with Lake.open(str(lake_dir)) as lake:
        lake.ingest([_traj("a")])
        lake.ingest([_traj("b")])
        wal_path = lake.settings.wal_path
    shutil.rmtree(wal_path)
    with Lake.open(str(lake_dir)) as lake:
        lake.ingest([_traj("c")], wait=False)
    with Lake.open(str(lake_dir)) as lake:
        assert lake.count("trajectories") == 3


def test_compaction_keeps_rows_and_history(tmp_path):
    with Lake.open(str(tmp_path / "lake"), compact_fragments=2) as lake:
        for i in range(20):
            lake.ingest([_traj(f"t{i}", 2)])
        assert lake.store.fragments("steps") <= 8
        assert "compact" in [v.operation for v in lake.versions()]
        assert lake.count("trajectories") == 20 and lake.count("steps") == 40
        assert lake.sql("select count(*) from trajectories", as_of=3).fetchall() == [(2,)]


@pytest.mark.parametrize("value", ["not-a-number", "-1"])
def test_bad_settings_are_named(tmp_path, value, monkeypatch):
    from lake import InvalidArgument, Settings

    monkeypatch.setenv("LAKE_FLUSH_ROWS", value)
    with pytest.raises(InvalidArgument, match="flush_rows"):
        Settings.load()


def test_a_failed_append_loses_none_acknowledged_after_it(tmp_path, monkeypatch):
    """A full disk mid-append (half the entry written): the append is refused with what to
    do, the segment is cut back, and the entries acknowledged once space is back survive a
    reopen (they used to sit behind the torn entry, cut off as a torn tail)."""
    import errno

    from lake import wal as walmod
    from lake.errors import ResourceExhausted, Unavailable

    log = WriteAheadLog(tmp_path / "wal")
    acked = [log.append(b"first" * 100)]
    real = walmod._write_all

    def half_then_full(out, data):
        if len(data) > 10_000:
            real(out, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(out, data)

    monkeypatch.setattr(walmod, "_write_all", half_then_full)
    with pytest.raises(ResourceExhausted, match="is full .*free space") as e:
        log.append(b"x" * 50_000)
    assert e.value.retry_after_s > 0
    acked += [log.append(f"after {i}".encode()) for i in range(3)]
    assert acked == [1, 2, 3, 4]  # the refused entry took no LSN
    log.close()
    again = WriteAheadLog(tmp_path / "wal")
    assert [lsn for lsn, _ in again.replay(0)] == acked
    assert again.last_lsn == 4

    def no_truncate(fd, size):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(walmod.os, "ftruncate", no_truncate)
    with pytest.raises(ResourceExhausted):
        again.append(b"y" * 50_000)
    monkeypatch.setattr(walmod, "_write_all", real)
    with pytest.raises(Unavailable, match="could not be repaired.*restart"):
        again.append(b"small")  # the torn entry is still there: nothing more goes after it
    again.close()


def test_one_writer_per_lake_even_with_another_write_ahead_log(tmp_path):
    """Two logs (LAKE_WAL_DIR) on one lake would both commit versions and lose each other's
    acknowledged writes: the second writer is refused at the lake's root."""
    from lake.errors import Conflict

    root = tmp_path / "lake"
    with Lake.open(str(root), wal_dir=str(tmp_path / "wal-a")) as first:
        first.ingest([{"trajectory_id": "a", "task": "t"}])
        for other in (str(tmp_path / "wal-b"), ""):  # another log, or the default one
            with pytest.raises(Conflict, match=f"the lake at {root} is in use"):
                Lake.open(str(root), wal_dir=other)
        with Lake.open(str(root), readonly=True) as reader:  # readers need no lock
            assert reader.count("trajectories") == 1
    with Lake.open(str(root), wal_dir=str(tmp_path / "wal-b")) as second:  # released
        assert second.count("trajectories") == 1


def test_a_full_disk_stops_the_writer_with_what_to_do_and_loses_nothing(tmp_path, monkeypatch):
    """Lance fails a commit with its own text for ENOSPC (no errno on the exception): every
    write then gets ResourceExhausted naming the lake's disk and what to do, not an internal
    error; the acknowledged write replays when the lake reopens, once."""
    from lake import Lake
    from lake.errors import ResourceExhausted
    from lake.tables import TableStore

    path = str(tmp_path / "lake")
    lake = Lake.open(path)
    lake.ingest([{"trajectory_id": "before", "task": "t", "steps": [{"kind": "llm"}]}])
    real = TableStore.append

    def full(self, name, rows):
        if name == "steps":
            raise OSError("LanceError(IO): No space left on device (os error 28), "
                          "rust/lance-file/src/writer/structural.rs:190:9")
        return real(self, name, rows)

    monkeypatch.setattr(TableStore, "append", full)
    acked = lake.ingest([{"trajectory_id": "acked", "task": "t", "steps": [{"kind": "llm"}]}],
                        wait=False).lsn
    assert acked > 0  # logged: acknowledged
    for attempt in (lambda: lake.flush(), lambda: lake.ingest([{"task": "u"}])):
        with pytest.raises(ResourceExhausted, match=f"writer is waiting: the disk holding the "
                           f"lake {path} is full .*free space there, then retry this call"):
            attempt()
    with pytest.raises(ResourceExhausted):
        lake.close()
    monkeypatch.setattr(TableStore, "append", real)
    with Lake.open(path) as again:
        assert again.sql("select trajectory_id, n_steps from trajectories order by 1"
                         ).fetchall() == [("acked", 1), ("before", 1)]
        assert again.sql("select count(*) from steps").fetchall() == [(2,)]


def test_the_writer_resumes_once_space_is_freed(tmp_path, monkeypatch):
    """A commit failing on a full disk is retried in place (its partial writes rolled back
    first): once space is freed, writes resume without reopening the lake, each row once."""
    from lake import Lake
    from lake import writer as writer_mod
    from lake.errors import ResourceExhausted
    from lake.tables import TableStore

    monkeypatch.setattr(writer_mod, "RESUME_S", 0.1)
    lake = Lake.open(str(tmp_path / "lake"))
    real, calls = TableStore.append, []

    def full(self, name, rows):
        if name == "trajectories" and len(calls) < 3:  # the steps were written: rolled back
            calls.append(name)
            raise OSError("LanceError(IO): No space left on device (os error 28)")
        return real(self, name, rows)

    monkeypatch.setattr(TableStore, "append", full)
    acked = lake.ingest([{"trajectory_id": "a", "task": "t", "steps": [{"kind": "llm"}]}],
                        wait=False).lsn
    with pytest.raises(ResourceExhausted, match="writer is waiting") as e:
        lake.flush()
    assert e.value.retry_after_s == 5.0
    deadline = time.monotonic() + 10
    while len(calls) < 3 or lake.writer._error is not None:  # space freed on the 3rd retry
        assert time.monotonic() < deadline, "the writer did not resume"
        time.sleep(0.05)
    lake.writer.wait_applied(acked, 10)
    lake.ingest([{"trajectory_id": "b", "task": "t", "steps": [{"kind": "tool"}]}])
    assert lake.sql("select trajectory_id, n_steps from trajectories order by 1").fetchall() \
        == [("a", 1), ("b", 1)]
    assert lake.sql("select count(*) from steps").fetchall() == [(2,)]
    lake.close()


def test_a_read_only_lake_is_named_with_what_to_do(tmp_path, monkeypatch):
    import errno

    from lake import Lake
    from lake import lake as lakemod
    from lake.errors import Unavailable

    path = str(tmp_path / "lake")
    Lake.open(path).close()

    def read_only(path, *a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(lakemod, "WriteAheadLog", read_only)
    with pytest.raises(Unavailable, match=f"the lake {path} cannot be written \\(Read-only "
                       "file system\\): make it writable .*`lake sql`"):
        Lake.open(path)
    with Lake.open(path, readonly=True) as lake:  # reading needs no writing
        assert lake.sql("select count(*) from trajectories").fetchall() == [(0,)]



def _flip(wal_path, lsn: int) -> None:
    """Flip one byte in the middle of entry ``lsn``'s payload (a bad sector, a cosmic ray)."""
    from lake.wal import _HEADER, _scan_bytes

    seg = next(iter(sorted(wal_path.glob("*.wal"))))
    data = bytearray(seg.read_bytes())
    start = 0
    for got, payload, end in _scan_bytes(bytes(data)):
        if got == lsn:
            data[start + _HEADER.size + len(payload) // 2] ^= 0x40
            seg.write_bytes(bytes(data))
            return
        start = end
    raise AssertionError(f"no entry {lsn}")


def _crash_after_logging(lake_dir, tids: list[str]):
    """Two trajectories committed (lsns 1, 2), then ``tids`` logged, not committed."""
    with Lake.open(str(lake_dir)) as lake:
        lake.ingest([_traj("a")])
        lake.ingest([_traj("b")])
        wal_path = lake.settings.wal_path
    wal = WriteAheadLog(wal_path)
    assert [wal.append(_entry([_traj(t)])) for t in tids] == [3, 4]
    wal.close()
    return wal_path


def test_damage_before_intact_entries_loses_only_the_damaged_entry(lake_dir, caplog):
    """A damaged entry is not a torn tail: the acknowledged entries after it are replayed,
    not cut off with it. Here the damaged one was in the lake already: nothing is lost."""
    wal_path = _crash_after_logging(lake_dir, ["c", "d"])
    _flip(wal_path, 2)
    with Lake.open(str(lake_dir)) as lake:
        assert sorted(lake.sql("select trajectory_id from trajectories").fetchall()) == \
            [("a",), ("b",), ("c",), ("d",)]
    assert "entries 2-2" in caplog.text and "nothing is lost" in caplog.text
    assert [p.name for p in wal_path.glob("*.damaged")]  # the evidence is kept
    with Lake.open(str(lake_dir)) as lake:  # the repaired log opens cleanly
        assert lake.count("trajectories") == 4


def test_a_damaged_entry_the_lake_lacks_is_named_and_the_rest_replayed(lake_dir, caplog):
    wal_path = _crash_after_logging(lake_dir, ["c", "d"])
    _flip(wal_path, 3)
    with Lake.open(str(lake_dir)) as lake:
        assert sorted(lake.sql("select trajectory_id from trajectories").fetchall()) == \
            [("a",), ("b",), ("d",)]
        assert lake.ingest([_traj("e")]).lsn == 5  # no lsn used twice
    assert "entries 3-3" in caplog.text and "is lost" in caplog.text


def test_a_torn_entry_is_never_searched_for_entries_inside_it(tmp_path):
    """A payload is user data: bytes in it that look like a whole entry (lsn 99, another
    tenant's write) must not be replayed when the entry holding them is torn (review H3)."""
    import zlib

    from lake.wal import _HEADER, MAGIC

    wal = WriteAheadLog(tmp_path)
    wal.append(b"one")
    wal.append(b"two")
    wal.close()
    body = b'{"op": "traj", "tenant": "another"}'
    forged = _HEADER.pack(MAGIC, 99, len(body), zlib.crc32(body)) + body
    payload = b"A" * 100 + forged + b"B" * 1000  # a step's output, say
    entry = _HEADER.pack(MAGIC, 3, len(payload), zlib.crc32(payload)) + payload
    with open(next(tmp_path.glob("*.wal")), "ab") as f:
        f.write(entry[:-500])  # killed mid-append
    wal = WriteAheadLog(tmp_path)
    assert (wal.last_lsn, wal.damage) == (2, [])
    assert [p for _, p in wal.replay(0)] == [b"one", b"two"]
    wal.close()


def test_lsns_never_go_back_behind_an_empty_segment(tmp_path):
    """Damage at the end of a segment followed by an empty one (rolled by a purge): the
    next append takes the lsn the empty segment names, not one used before (review M1)."""
    wal = WriteAheadLog(tmp_path)
    for p in (b"one", b"two", b"three"):
        wal.append(p)
    wal.roll()
    wal.close()
    seg = tmp_path / f"{1:020d}.wal"
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # a bad sector in entry 3
    seg.write_bytes(bytes(data))
    wal = WriteAheadLog(tmp_path)
    assert wal.last_lsn == 3 and wal.append(b"four") == 4
    assert [n for n, _ in wal.replay(3)] == [4]
    wal.close()


def test_an_entry_bigger_than_a_segment_after_a_roll_keeps_the_live_segment(tmp_path):
    """The rolled (empty) segment takes an entry of any size, and is listed once: the
    writer's truncate must not take the live segment for an old one (review M2)."""
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    wal.append(b"one")
    wal.roll()
    big = wal.append(b"x" * 200)
    wal.truncate(1)
    after = wal.append(b"after")
    wal.close()
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    assert [n for n, _ in wal.replay(1)] == [big, after] == [2, 3]
    wal.close()


def test_a_damaged_length_field_loses_only_its_own_entry(tmp_path):
    """A bit flipped in an entry's length, not its payload: the entries after it, whole,
    are found where they are, not cut off as a torn tail (operator QA's second pass)."""
    from lake.wal import _HEADER

    wal = WriteAheadLog(tmp_path)
    for p in (b"one", b"two", b"three", b"four"):
        wal.append(p * 10)
    wal.close()
    seg = next(tmp_path.glob("*.wal"))
    data = bytearray(seg.read_bytes())
    second = _HEADER.size + 30  # entry 1 is a header and 30 bytes
    data[second + 13] ^= 0x01  # the length of entry 2 (magic 4, lsn 8, length 4): +256
    seg.write_bytes(bytes(data))
    wal = WriteAheadLog(tmp_path)
    assert [n for n, _ in wal.replay(0)] == [1, 3, 4] and wal.last_lsn == 4
    assert [(a, b) for a, b, _ in wal.damage] == [(2, 2)]
    wal.close()
