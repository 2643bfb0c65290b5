"""A finished run takes no more steps, and a start changes nothing of it: a start that
brings steps the run does not have is a ``Conflict`` (here, after the lake forgot the run,
after a restart, and for a run written whole); a retried start, the same as the first, is
a no-op, and so is a start that would only fill fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lake import Lake
from lake.errors import Conflict

STEP = {"kind": "tool", "name": "x"}


def _start(tid: str, n_steps: int = 0, **fields: Any) -> dict[str, Any]:
    return {"trajectory_id": tid, "task": "t", "started_at": "2026-01-02T00:00:00Z",
            "steps": [{**STEP, "index": i} for i in range(n_steps)], **fields}


def _finished(lake: Lake, tid: str) -> dict[str, Any]:
    lake.start_trajectory(_start(tid, 1))
    lake.finish_trajectory(tid, status="succeeded", outcome={"reward": 1.0})
    return _row(lake, tid)


def _row(lake: Lake, tid: str) -> dict[str, Any]:
    lake.flush()
    rel = lake.sql("select task, model, status, reward, n_steps, started_at from "
                   f"trajectories where trajectory_id = '{tid}'")
    return dict(zip(rel.columns, rel.fetchall()[0], strict=True))


def test_a_start_with_new_steps_on_a_finished_run_is_a_conflict(lake: Lake):
    """The QA's case: StartTrajectory on a run that succeeded with one step, with two."""
    before = _finished(lake, "r")
    with pytest.raises(Conflict) as e:
        lake.start_trajectory(_start("r", 2))
    assert e.value.field == "trajectory_id"
    assert "'r' is already finished (status succeeded" in e.value.message
    assert "index 1" in e.value.message and "new trajectory (parent_id" in e.value.message
    with pytest.raises(Conflict, match="'r' is taken by another run .task 't', finished: "
                                       "status succeeded"):  # another task: another run
        lake.start_trajectory(_start("r", 2, task="restart hijack"))
    assert _row(lake, "r") == before


def test_a_retried_start_of_a_finished_run_is_a_no_op(lake: Lake):
    before = _finished(lake, "r")
    lake.start_trajectory(_start("r", 1))  # the same start, steps and all
    lake.start_trajectory(_start("r"))  # the start without its steps
    assert _row(lake, "r") == before


def test_a_start_that_would_fill_fields_of_a_finished_run_changes_nothing(lake: Lake):
    """A second start fills only empty fields of a running trajectory; of a finished one,
    none (``model`` was empty)."""
    before = _finished(lake, "r")
    assert before["model"] is None
    lake.start_trajectory(_start("r", model="m",
                                 started_at="2026-01-03T00:00:00Z"))
    assert _row(lake, "r") == before
    # the start time remembered is still the first: a retried finish ending before the
    # second start's time passes
    lake.finish_trajectory("r", status="succeeded", ended_at="2026-01-02T00:00:01Z")


def test_a_running_run_still_takes_a_start_s_steps_and_fields(lake: Lake):
    lake.start_trajectory(_start("r", 1))
    lake.start_trajectory(_start("r", 3, model="m"))
    assert {k: v for k, v in _row(lake, "r").items() if k in ("model", "n_steps", "status")
            } == {"model": "m", "n_steps": 3, "status": "running"}


@pytest.mark.parametrize("how", ["restart", "forgotten", "written whole"])
def test_the_state_comes_from_the_table_when_the_lake_does_not_remember(
        lake: Lake, lake_dir: Path, monkeypatch, how: str):
    import lake.live as lakemod

    if how == "written whole":
        lake.ingest([{"trajectory_id": "r", "task": "t", "steps": [STEP],
                      "outcome": {"success": True}}])
        before = _row(lake, "r")
    else:
        before = _finished(lake, "r")
    if how == "forgotten":
        monkeypatch.setattr(lakemod, "LIVE_KEPT", 2)
        for i in (1, 2):
            lake.start_trajectory(_start(f"other{i}"))
        assert ("default", "r") not in lake.live
    if how == "restart":
        lake.close()
        lake = Lake.open(str(lake_dir))
    try:
        with pytest.raises(Conflict, match="already finished .*index 1, 2"):
            lake.start_trajectory(_start("r", 3))
        lake.start_trajectory(_start("r", 1))  # a retry
        lake.start_trajectory(_start("r", model="m"))  # fields only: nothing changes
        assert _row(lake, "r") == before
    finally:
        if how == "restart":
            lake.close()


def test_a_start_with_steps_of_a_new_run_is_not_refused(lake: Lake):
    lake.start_trajectory(_start("new", 2))
    assert _row(lake, "new")["n_steps"] == 2
