"""Runs left running (an agent died mid-run) are finished as abandoned once nothing came for
``abandon_after``; live ones, finished ones and recent ones are left as they are."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from lake import Lake
from lake.stale import abandon, stale_runs


def test_runs_with_nothing_for_the_age_are_abandoned_and_only_those(lake: Lake):
    for tid in ("dead", "slow", "done"):
        lake.start_trajectory({"trajectory_id": tid, "task": "t"})
        lake.append_steps(tid, [{"index": 0, "kind": "tool"}])
    lake.start_trajectory({"trajectory_id": "other", "task": "t"}, tenant="acme")
    lake.finish_trajectory("done", status="succeeded")
    time.sleep(1.2)
    lake.append_steps("slow", [{"index": 1, "kind": "tool",  # still at work
                                "started_at": datetime.now(UTC).isoformat()}])
    lake.flush()
    age = timedelta(seconds=1)
    assert stale_runs(lake, age) == [("acme", "other"), ("default", "dead")]
    assert abandon(lake, age) == [("acme", "other"), ("default", "dead")]
    lake.flush()
    assert lake.sql("select trajectory_id, status from trajectories order by 1",
                    all_tenants=True).fetchall() == [("dead", "abandoned"), ("done", "succeeded"),
                                                     ("other", "abandoned"), ("slow", "running")]
    assert abandon(lake, age) == []  # a second pass: nothing left


def test_a_run_loaded_now_with_old_times_is_not_abandoned_at_once(lake: Lake):
    """A backfill of runs still running, their times days old: the age counts from the
    load too, not only from the agent's times."""
    lake.ingest([{"trajectory_id": "old", "task": "t", "status": "running",
                  "started_at": "2025-01-01T00:00:00Z",
                  "steps": [{"kind": "tool", "started_at": "2025-01-01T00:00:01Z"}]}])
    assert stale_runs(lake, timedelta(hours=1)) == []
