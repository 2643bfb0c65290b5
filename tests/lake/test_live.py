"""One trajectory_id is one run: a start from another run, or another step at an index the
run has, is refused at the call instead of being acknowledged and dropped (``lake/live.py``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from lake import Lake
from lake.errors import Conflict
from lake.live import StoredIds


def _steps(lake: Lake, tid: str) -> list[tuple[int, str, str]]:
    lake.flush()
    return lake.sql("select index, name, output from steps where trajectory_id = "
                    f"'{tid}' order by index").fetchall()


def _head(lake: Lake, tid: str) -> tuple[str, str | None]:
    lake.flush()
    return lake.sql(f"select task, agent from trajectories where trajectory_id = '{tid}'"
                    ).fetchall()[0]


def _step(i: int, name: str, output: str = "ok") -> dict[str, Any]:
    return {"index": i, "kind": "tool", "name": name, "output": output}


def test_a_start_from_another_run_is_a_conflict_and_the_first_is_kept(lake: Lake):
    """The QA's race: two agents start one id with their own tasks, then append."""
    lake.start_trajectory({"trajectory_id": "race", "task": "Task A: refund #W1",
                           "agent": "A"})
    with pytest.raises(Conflict, match="'race' is taken by another run .task 'Task A: "
                                       "refund #W1', agent 'A'.*own trajectory_id") as e:
        lake.start_trajectory({"trajectory_id": "race", "task": "Task B: cancel #W2",
                               "agent": "B"})
    assert e.value.field == "trajectory_id"
    with pytest.raises(Conflict, match="taken by another run"):  # the same task, another
        lake.start_trajectory({"trajectory_id": "race", "task": "Task A: refund #W1",
                               "agent": "B"})  # agent
    lake.start_trajectory({"trajectory_id": "race", "task": "Task A: refund #W1",
                           "agent": "A", "model": "m"})  # a retry: passes, fills the model
    lake.start_trajectory({"trajectory_id": "race", "task": "Task A: refund #W1"})  # no agent
    assert _head(lake, "race") == ("Task A: refund #W1", "A")


def test_the_starter_is_recalled_from_the_table(lake: Lake, lake_dir: Path):
    lake.start_trajectory({"trajectory_id": "r", "task": "first", "agent": "A"})
    lake.close()
    with Lake.open(str(lake_dir)) as again:
        with pytest.raises(Conflict, match="taken by another run .task 'first'"):
            again.start_trajectory({"trajectory_id": "r", "task": "second"})
        again.start_trajectory({"trajectory_id": "r", "task": "first", "agent": "A"})


def test_another_step_at_an_index_is_rejected_and_the_others_land(lake: Lake):
    lake.start_trajectory({"trajectory_id": "r", "task": "t"})
    lake.append_steps("r", [_step(0, "original", "v1"), _step(1, "second")])
    got = lake.append_steps("r", [_step(0, "DIFFERENT", "v2"), _step(1, "second"),
                                  _step(2, "third")])
    assert got.steps == 2  # the retry of 1 (a no-op) and the new 2
    [r] = got.rejected
    assert (r.location, r.field) == ("steps[0]", "steps[0].index")
    assert "already has a step at index 0 with other content" in r.reason
    assert "next free index (above 1)" in r.reason
    lake.finish_trajectory("r", status="succeeded")
    after = lake.append_steps("r", [_step(1, "CHANGED")])  # finished: still compared
    assert after.steps == 0 and after.rejected[0].location == "steps[0]"
    assert lake.append_steps("r", [_step(2, "third")]).rejected == []  # a retry
    assert _steps(lake, "r") == [(0, "original", "v1"), (1, "second", "ok"),
                                 (2, "third", "ok")]


def test_a_start_bringing_another_step_at_an_index_is_a_conflict(lake: Lake):
    lake.start_trajectory({"trajectory_id": "r", "task": "t", "steps": [_step(0, "a")]})
    with pytest.raises(Conflict, match="index 0 with other content") as e:
        lake.start_trajectory({"trajectory_id": "r", "task": "t",
                               "steps": [_step(1, "b"), _step(2, "c"), _step(0, "z")]})
    assert e.value.field == "steps[2].index"
    assert _steps(lake, "r") == [(0, "a", "ok")]  # nothing of the refused start landed


def test_racing_starts_of_one_id_leave_one_run(lake: Lake):
    """Checked and logged under one lock per run: of 8 threads starting the same id each
    with its own task, one wins and the others get Conflict."""
    won: list[str] = []
    lost: list[str] = []
    barrier = threading.Barrier(8)

    def start(n: int) -> None:
        barrier.wait()
        try:
            lake.start_trajectory({"trajectory_id": "race", "task": f"task {n}"})
            won.append(f"task {n}")
        except Conflict:
            lost.append(f"task {n}")

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    assert _head(lake, "race")[0] == won[0]


def test_digests_are_bounded(lake: Lake, monkeypatch):
    """Past STEPS_KEPT the oldest runs' digests go: their steps are no longer compared (the
    first write still wins at commit) and the lake's memory stays bounded."""
    import lake.live as live

    monkeypatch.setattr(live, "STEPS_KEPT", 3)
    for tid in ("old", "new"):
        lake.start_trajectory({"trajectory_id": tid, "task": "t"})
        lake.append_steps(tid, [_step(0, "a"), _step(1, "b")])
    assert lake.live._digests <= 3
    assert lake.append_steps("old", [_step(0, "X")]).rejected == []  # forgotten: not compared
    assert len(lake.append_steps("new", [_step(0, "X")]).rejected) == 1
    assert _steps(lake, "old")[0] == (0, "a", "ok")  # the first write won


class _SlowRead(StoredIds):
    """Its read of the table (the real one) waits until told: a commit or a reset lands
    meanwhile, as they would during the ~2 s read of 1M ids."""

    def __init__(self, store):
        super().__init__(store)
        self.reading, self.go, self.reads = threading.Event(), threading.Event(), 0

    def _load(self):
        arr = super()._load()
        self.reads += 1
        self.reading.set()
        assert self.go.wait(10)
        return arr


def test_a_commit_during_the_read_of_stored_ids_neither_waits_nor_is_missed(lake: Lake):
    lake.start_trajectory({"trajectory_id": "old", "task": "t"})
    lake.flush()
    ids = _SlowRead(lake.store)
    read = threading.Thread(target=ids.warm)
    read.start()
    assert ids.reading.wait(10)
    done = threading.Thread(target=ids.committed, args=({"default": [
        {"trajectory_id": "new"}]},))
    done.start()
    done.join(2)
    assert not done.is_alive(), "the writer's callback waited for the read"
    ids.go.set()
    read.join(10)
    assert ids.maybe(("default", "old")) and ids.maybe(("default", "new"))
    assert not ids.maybe(("default", "never")) and ids.reads == 1


def test_a_reset_during_the_read_of_stored_ids_reads_again(lake: Lake):
    """A restore overtook the read: what it read may predate the restored rows."""
    ids = _SlowRead(lake.store)
    read = threading.Thread(target=ids.warm)
    read.start()
    assert ids.reading.wait(10)
    lake.start_trajectory({"trajectory_id": "restored", "task": "t"})
    lake.flush()
    ids.reset()
    ids.go.set()
    read.join(10)
    assert ids.reads == 2 and ids.maybe(("default", "restored"))
