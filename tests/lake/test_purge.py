"""Purge: a retraction that removes the content, from the current version at once and from
the disk once the versions before it are vacuumed; a retried load never brings it back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from lake import Lake
from lake.errors import Conflict

SECRET = "4111-1111-1111-1111"


def _on_disk(root: Path, text: str) -> list[str]:
    needle = text.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and needle in p.read_bytes())


def _records() -> list[dict]:
    big = "x" * 70_000  # a payload, stored once, shared by both runs
    return [{"trajectory_id": "leak", "task": f"Charge card {SECRET} for order #W1",
             "on_behalf_of": "jane@example.com", "meta": {"card": SECRET},
             "steps": [{"kind": "tool", "name": "charge", "input": {"card": SECRET},
                        "output": f"charged {SECRET} " + "y" * 70_000},
                       {"kind": "tool", "name": "log", "output": big}]},
            {"trajectory_id": "fine", "task": "Refund order #W2",
             "steps": [{"kind": "tool", "name": "log", "output": big}]}]


def test_a_purge_removes_the_content_and_a_vacuum_the_last_copies(lake: Lake, lake_dir: Path):
    lake.ingest(_records())
    before = lake.version().version
    assert _on_disk(lake_dir, SECRET)  # the scan can see it: plain bytes in the files
    assert lake.retract(["leak"], "leaked a card number", purge=True) == 1
    row = lake.sql("select task, meta, on_behalf_of, retract_reason, n_steps from "
                   "trajectories where trajectory_id = 'leak'").fetchall()
    assert row == [("[purged]", None, None, "purged: leaked a card number", 2)]
    assert lake.sql("select count(*) from steps where trajectory_id = 'leak'").fetchall() \
        == [(0,)]
    assert lake.sql("select count(*) from payloads").fetchall() == [(1,)]  # the shared one
    assert lake.sql("select count(*) from steps where trajectory_id = 'fine'").fetchall() \
        == [(1,)]
    assert SECRET in str(lake.sql("select * from steps", as_of=before).fetchall())  # history
    lake.vacuum(timedelta(0))
    assert _on_disk(lake_dir, SECRET) == []  # tables, log, embeddings: gone from the disk
    assert lake.retract(["leak"], "again", purge=True) == 0  # a retry changes nothing


def test_a_purged_id_never_comes_back(lake: Lake):
    lake.ingest(_records())
    lake.retract(["leak"], "leaked", purge=True)
    lake.ingest(_records())  # the batch job retried
    assert lake.sql("select task from trajectories where trajectory_id = 'leak'").fetchall() \
        == [("[purged]",)]
    assert lake.sql("select count(*) from steps where trajectory_id = 'leak'").fetchall() \
        == [(0,)]
    with pytest.raises(Conflict, match="was purged"):
        lake.append_steps("leak", [{"index": 5, "kind": "tool"}])


def test_a_live_run_purged_takes_no_more_steps(lake: Lake):
    lake.start_trajectory({"trajectory_id": "live", "task": f"card {SECRET}"})
    lake.append_steps("live", [{"index": 0, "kind": "tool", "output": SECRET}])
    lake.flush()
    lake.retract(["live"], "leaked", purge=True)
    with pytest.raises(Conflict, match="was purged.*new trajectory_id"):
        lake.append_steps("live", [{"index": 1, "kind": "tool"}])
    with pytest.raises(Conflict, match="was purged"):
        lake.finish_trajectory("live", status="succeeded")


def test_a_purge_over_grpc_and_the_shell(lake_dir: Path, tmp_path: Path):
    """Retract(purge=true) needs admin like a retraction; `lake retract --purge` too."""
    import subprocess
    import sys

    from server.app import serve
    from server.client import LakeClient
    from tests.server.conftest import make_settings

    srv = serve(make_settings(lake_dir), "127.0.0.1", 0)
    try:
        with LakeClient(srv.target) as c:
            lsn = c.ingest_arrow(_records()).lsn
            c.get_trajectory("leak", min_lsn=lsn)
            assert c.retract(["leak"], "leaked a card number", purge=True) == 1
            assert c.get_trajectory("fine")["n_steps"] == 1
    finally:
        srv.stop(grace=1)
    with Lake.open(str(lake_dir), readonly=True) as lake:
        assert lake.sql("select task from trajectories where trajectory_id = 'leak'"
                        ).fetchall() == [("[purged]",)]
    lake_cli = str(Path(sys.executable).with_name("lake"))  # the console script
    p = subprocess.run([lake_cli, "retract", "fine", "--reason", "r", "--purge", "--data",
                        str(lake_dir)], capture_output=True, text=True)
    assert p.returncode == 0 and "purged 1 trajectories" in p.stdout, p.stderr


def test_a_run_purged_before_the_indexer_reached_it_is_never_served(cache):
    """The indexer works through commits after the writer: a purge (or any retraction) in
    between must not let it add the row as it was committed, with the secret."""
    import threading

    lake = cache.lake
    lake.ingest([{"trajectory_id": "a", "task": "Refund order W2 for the customer",
                  "outcome": {"success": True}}])
    cache.get_context("default", {"text": "refund an order"})  # the tenant's index loads
    go, real = threading.Event(), cache.on_commit

    def behind(*args):  # an indexer behind the writer (a bulk load)
        go.wait(10)
        real(*args)

    cache.on_commit = behind
    lake.ingest([{"trajectory_id": "leak", "task": f"Charge card {SECRET} for order W1",
                  "outcome": {"success": True}}])
    assert cache.retract("default", ["leak"], "leaked a card", purge=True)["retracted"] == 1
    go.set()
    cache.wait_indexed(lake.writer.lag["applied_lsn"])
    got = cache.get_context("default", {"text": f"Charge card {SECRET} for order W1"})
    assert "leak" not in {n["trajectory_id"] for n in got["neighbors"]}
    assert SECRET not in str(got)


def test_a_restore_to_before_a_purge_purges_again(lake: Lake):
    """Restoring a version from before the purge must not make the content current again
    (review H2): the restore keeps retractions, and a purge is purged again."""
    lake.ingest(_records())
    before = lake.version().version
    lake.retract(["leak"], "leaked a card number", purge=True)
    lake.restore(before)
    assert lake.sql("select task, retract_reason from trajectories where trajectory_id = "
                    "'leak'").fetchall() == [("[purged]", "purged: leaked a card number")]
    assert lake.sql("select count(*) from steps where trajectory_id = 'leak'").fetchall() \
        == [(0,)]
    assert SECRET not in str(lake.sql("select * from steps").fetchall())
    assert lake.sql("select count(*) from steps where trajectory_id = 'fine'").fetchall() \
        == [(1,)]
