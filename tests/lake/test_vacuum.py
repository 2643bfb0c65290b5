"""Vacuum: old versions' files go (the disk follows the data), tagged and recent versions
stay readable, and reading a removed version says it was vacuumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from lake import Lake
from lake.errors import InvalidArgument, NotFound
from lake.vacuum import parse_age


def _bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _fill(lake: Lake, n: int) -> None:
    for i in range(n):  # one version each, rows big enough to weigh
        lake.ingest([{"trajectory_id": f"t{i}", "task": f"task {i}",
                      "steps": [{"kind": "tool", "name": "x", "output": "y" * 4000}]}])
        if i == 4:
            lake.tag("five")


def test_vacuum_frees_old_versions_and_keeps_tagged_and_latest(lake: Lake, lake_dir: Path):
    _fill(lake, 30)
    before, latest = _bytes(lake_dir), lake.versions()[-1].version
    dry = lake.vacuum(timedelta(0), dry_run=True)
    assert dry.unreadable and dry.horizon == latest and dry.bytes_removed == 0
    assert _bytes(lake_dir) >= before  # a dry run removes nothing
    assert lake.sql("select count(*) from trajectories", as_of=3).fetchall() == [(2,)]

    done = lake.vacuum(timedelta(0))
    assert done.unreadable == dry.unreadable and done.bytes_removed > 0
    assert _bytes(lake_dir) < before * 0.7
    assert lake.sql("select count(*) from trajectories").fetchall() == [(30,)]
    assert lake.sql("select count(*) from trajectories", as_of="five").fetchall() == [(5,)]
    with pytest.raises(NotFound, match=r"version 3 was vacuumed .*Versions from \d+ on, and "
                                       "tagged ones, can be read"):
        lake.sql("select count(*) from trajectories", as_of=3)
    with pytest.raises(NotFound, match="was vacuumed"):
        lake.restore(3)
    assert lake.versions()[-1].operation == "vacuum"
    lake.restore("five")  # a tagged version restores after a vacuum
    assert lake.count("trajectories") == 5


def test_versions_within_the_age_stay_and_a_vacuum_of_nothing_makes_no_version(lake: Lake):
    _fill(lake, 6)
    n = len(lake.versions())
    got = lake.vacuum(timedelta(days=1))
    assert not got.unreadable and not any(got.removed.values())
    assert len(lake.versions()) == n
    assert lake.sql("select count(*) from trajectories", as_of=2).fetchall() == [(1,)]


def test_a_vacuumed_lake_reopens_and_takes_writes(lake_dir: Path):
    with Lake.open(str(lake_dir)) as lake:
        _fill(lake, 8)
        lake.vacuum(timedelta(0))
    with Lake.open(str(lake_dir)) as lake:
        lake.ingest([{"trajectory_id": "after", "task": "t"}])
        assert lake.count("trajectories") == 9


def test_ages_are_parsed_or_named():
    assert parse_age("7d") == timedelta(days=7) and parse_age("36h") == timedelta(hours=36)
    assert parse_age("0") == timedelta(0) and parse_age("1.5") == timedelta(hours=36)
    for bad in ("bogus", "-1d", "7w", ""):
        with pytest.raises(InvalidArgument, match="is no age"):
            parse_age(bad)
    with pytest.raises(InvalidArgument, match="more than 100 years"):
        parse_age("99999999d")  # was an OverflowError in the hourly vacuum


def test_cli_vacuum_reports_and_is_audited(tmp_path: Path):
    data = tmp_path / "lake"
    with Lake.open(str(data)) as lake:
        _fill(lake, 6)
    env = {**os.environ, "LANCE_LOG": "error"}
    cmd = [str(Path(sys.executable).with_name("lake")), "vacuum", "--data", str(data)]
    p = subprocess.run([*cmd, "--older-than", "0", "--json"], capture_output=True, text=True,
                       env=env, cwd=Path(__file__).parents[2])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["unreadable"] > 0 and out["bytes_removed"] > 0 and out["tagged"] == [6]
    p = subprocess.run([*cmd, "--older-than", "soon"], capture_output=True, text=True, env=env,
                       cwd=Path(__file__).parents[2])
    assert p.returncode == 1 and "is no age" in p.stderr
    with Lake.open(str(data), readonly=True) as lake:
        assert lake.sql("select outcome, detail from audit where action = 'vacuum'",
                        all_tenants=True).fetchall()[0][0] == "ok"


def test_an_untagged_version_is_vacuumed_as_any_other(lake: Lake):
    _fill(lake, 8)  # tags version 6 "five"
    assert lake.untag("five").version == 6
    with pytest.raises(NotFound, match="no tag 'five'; known tags: none"):
        lake.untag("five")
    lake.vacuum(timedelta(0))
    with pytest.raises(NotFound, match="version 6 was vacuumed"):
        lake.sql("select 1", as_of=6)
