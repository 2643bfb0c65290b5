"""A copy of a lake taken while it is written opens, as the lake was when the copy began;
a copy whose tables are older than its catalog is refused with what to do."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from lake import Lake
from lake.backup import backup
from lake.errors import AlreadyExists, LakeError


def _write(lake: Lake, stop: threading.Event, done: list[int]) -> None:
    i = 0
    while not stop.is_set():
        lake.ingest([{"trajectory_id": f"t{i}", "task": f"task {i}",
                      "steps": [{"kind": "tool", "name": "x"} for _ in range(3)]}])
        done.append(i)
        i += 1


def test_a_backup_taken_while_writing_opens_whole(lake: Lake, lake_dir: Path, tmp_path):
    stop, done = threading.Event(), []
    writer = threading.Thread(target=_write, args=(lake, stop, done))
    writer.start()
    try:
        while len(done) < 5:
            threading.Event().wait(0.05)
        copies = [tmp_path / f"copy{i}" for i in range(3)]
        for c in copies:  # each while commits land
            backup(lake_dir, c)
    finally:
        stop.set()
        writer.join()
    for c in copies:
        with Lake.open(str(c)) as copy:  # its first writer rolls back what came after
            n = copy.count("trajectories")
            assert 5 <= n <= len(done)
            assert copy.sql("select count(*) from steps").fetchall() == [(3 * n,)]
            assert copy.sql("select min(n_steps), max(n_steps) from trajectories"
                            ).fetchall() == [(3, 3)]
            copy.ingest([{"trajectory_id": "after", "task": "t"}])  # and takes writes
    with pytest.raises(AlreadyExists, match="not empty"):
        backup(lake_dir, copies[0])


def test_a_copy_with_tables_older_than_its_catalog_says_to_use_backup(lake_dir, tmp_path):
    with Lake.open(str(lake_dir)) as lake:
        lake.ingest([{"trajectory_id": "a", "task": "t"}])
    copy = tmp_path / "copy"
    shutil.copytree(lake_dir, copy, ignore=shutil.ignore_patterns("_wal", "*.lock"))
    with Lake.open(str(lake_dir)) as lake:
        lake.ingest([{"trajectory_id": "b", "task": "t"}])
    shutil.rmtree(copy / "_versions.lance")  # the catalog copied after the tables moved on
    shutil.copytree(lake_dir / "_versions.lance", copy / "_versions.lance")
    with pytest.raises(LakeError, match=r"older than the lake's catalog.*lake backup DEST"):
        Lake.open(str(copy))


def test_a_copy_missing_pinned_files_is_refused(lake: Lake, lake_dir: Path, tmp_path):
    """A vacuum during a backup may remove files the copied catalog pins (review M7): the
    copy is checked at the end, and refused naming the cause."""
    from lake.backup import _check_whole

    lake.ingest([{"trajectory_id": "a", "task": "t", "steps": [{"kind": "tool"}]}])
    copy = tmp_path / "copy"
    backup(lake_dir, copy)
    next((copy / "steps.lance" / "data").iterdir()).unlink()  # as a vacuum would have
    with pytest.raises(LakeError, match="lacks files of table steps.*a vacuum ran"):
        _check_whole(copy)


def test_an_interrupted_backup_is_never_taken_for_one(lake: Lake, lake_dir: Path, tmp_path,
                                                      monkeypatch):
    """The copy is made in DEST.partial and renamed once whole: a backup cut short leaves
    no DEST to open by mistake, and running it again starts over."""
    import lake.backup as bk

    lake.ingest([{"trajectory_id": "a", "task": "t"}])
    dest = tmp_path / "copy"
    monkeypatch.setattr(bk, "_check_whole", lambda work: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        backup(lake_dir, dest)
    assert not dest.exists() and (tmp_path / "copy.partial").exists()
    monkeypatch.undo()
    backup(lake_dir, dest)
    assert not (tmp_path / "copy.partial").exists()
    with Lake.open(str(dest), readonly=True) as copy:
        assert copy.count("trajectories") == 1
