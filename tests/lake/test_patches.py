"""Live trajectories: start, append steps, finish; durable, idempotent, crash-safe."""

from __future__ import annotations

import pytest

from lake import InvalidArgument, Lake, NotFound


def _step(i: int, **kw) -> dict:
    return {"index": i, "kind": "tool", "name": f"t{i}", "tokens_in": 10, "cost_usd": 0.5, **kw}


def test_start_append_finish_builds_one_trajectory(lake: Lake):
    lake.start_trajectory({"trajectory_id": "live", "task": "refund #1", "agent": "bot"})
    lake.append_steps("live", [_step(0), _step(1)])
    lake.append_steps("live", [_step(1), _step(2)])  # a retry re-sends index 1
    lake.finish_trajectory("live", outcome={"success": True, "reward": 0.5})
    lake.flush()
    assert lake.sql("select task, agent, status, success, reward, n_steps, tokens_in, cost_usd "
                    "from trajectories").fetchall() == \
        [("refund #1", "bot", "succeeded", True, 0.5, 3, 30, 1.5)]
    assert lake.sql("select index from steps order by 1").fetchall() == [(0,), (1,), (2,)]


def test_each_call_is_durable_and_commits_separately_or_together(lake: Lake):
    lake.start_trajectory({"trajectory_id": "a", "task": "t", "steps": [_step(0)]})
    lake.flush()
    assert lake.sql("select status, n_steps from trajectories").fetchall() == [("running", 1)]
    lake.append_steps("a", [_step(1)])
    lake.append_steps("a", [_step(2)])
    lake.finish_trajectory("a", status="abandoned")
    lake.flush()
    assert lake.sql("select status, n_steps from trajectories").fetchall() == [("abandoned", 3)]


def test_replay_after_a_crash_applies_each_step_once(lake_dir):
    from lake.records import now_us
    from lake.wal import WriteAheadLog

    with Lake.open(str(lake_dir)) as lk:
        lk.start_trajectory({"trajectory_id": "x", "task": "t"})
        lk.append_steps("x", [_step(0), _step(1)])
        lk.flush()
        wal_path = lk.settings.wal_path
    import orjson

    wal = WriteAheadLog(wal_path)  # logged but never committed: a crash before the commit
    head = orjson.dumps({"op": "patch", "tenant": "default", "at": now_us(), "limit": 65536,
                         "preview": 1024})
    for body in ({"op": "steps", "trajectory_id": "x", "steps": [_step(1), _step(2)]},
                 {"op": "finish", "trajectory_id": "x", "status": "failed"}):
        wal.append(head + b"\n" + orjson.dumps(body))
    wal.close()
    for _ in range(2):  # replaying twice changes nothing more
        with Lake.open(str(lake_dir)) as lk:
            assert lk.sql("select status, n_steps from trajectories").fetchall() == \
                [("failed", 3)]
            assert lk.count("steps") == 3


def test_bad_live_calls_are_refused_with_the_field(lake: Lake):
    with pytest.raises(NotFound, match="not started"):
        lake.append_steps("ghost", [_step(0)])
    lake.start_trajectory({"trajectory_id": "s", "task": "t"})
    res = lake.append_steps("s", [{"kind": "tool"}, _step(1, tokens_in="many"), _step(2),
                                  _step(2)])
    assert [(r.location, r.field) for r in res.rejected] == [
        ("steps[0]", "steps[0].index"), ("steps[1]", "steps[1].tokens_in"),
        ("steps[3]", "steps[3].index")]
    assert res.steps == 1  # the good step landed
    with pytest.raises(InvalidArgument) as e:
        lake.finish_trajectory("s")
    assert e.value.field == "status"
    with pytest.raises(InvalidArgument) as e:
        lake.start_trajectory({"trajectory_id": "s2"})
    assert e.value.field == "task"
    lake.flush()
    assert lake.sql("select trajectory_id, n_steps from trajectories").fetchall() == [("s", 1)]


def test_a_whole_record_and_live_patches_agree(lake: Lake):
    lake.ingest([{"trajectory_id": "w", "task": "t", "steps": [_step(0)]}])
    lake.append_steps("w", [_step(1)])
    lake.finish_trajectory("w", outcome={"success": False})
    lake.flush()
    assert lake.sql("select n_steps, status from trajectories").fetchall() == [(2, "failed")]


# A commit that adds steps to a stored live trajectory writes the new steps' payloads,
# appends the new steps and upserts the trajectory row, then records the lake version; one
# that rebuilds a trajectory (here: first ingested as a whole record, whose row hash does
# not carry its steps' digest) deletes its stored steps and appends them all again. A crash
# after any of those writes must lose no acknowledged step: the next open rolls the tables
# back to what the last lake version pins and replays the log onto that.
_CRASHING_CHILD = r"""
import os, sys
from lake import Lake
from lake.tables import TableStore

data, first, method, table = sys.argv[1:5]
lake = Lake.open(data)
steps = [{"index": i, "kind": "tool", "name": "t"} for i in range(100)]
if first == "record":
    lake.ingest([{"trajectory_id": "live", "task": "long run", "status": "running",
                  "steps": steps}])
else:
    lake.start_trajectory({"trajectory_id": "live", "task": "long run"})
    lake.append_steps("live", steps)
lake.flush()
real = getattr(TableStore, method)
def crash(self, name, *a, **kw):
    real(self, name, *a, **kw)
    if name == table:
        os._exit(9)  # the write landed; the process dies before the commit's next step
setattr(TableStore, method, crash)
res = lake.append_steps("live", [{"index": i, "kind": "tool", "output": "x" * 70_000}
                                 for i in range(100, 150)])  # a payload: stored once
assert res.lsn and not res.rejected
print("acked", flush=True)  # durable in the log: acknowledged
lake.flush()
"""


@pytest.mark.parametrize("first,method,table", [
    ("live", "upsert", "payloads"), ("live", "append", "steps"),
    ("live", "upsert", "trajectories"), ("record", "delete", "steps"),
    ("record", "append", "steps"), ("record", "upsert", "trajectories")])
def test_a_crash_inside_a_live_commit_loses_no_acknowledged_step(tmp_path, first, method,
                                                                 table):
    import subprocess
    import sys

    data = str(tmp_path / "lake")
    proc = subprocess.run([sys.executable, "-c", _CRASHING_CHILD, data, first, method, table],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert "acked" in proc.stdout
    with Lake.open(data) as lake:  # replays the log onto the last version's tables
        assert lake.sql("select n_steps from trajectories").fetchall() == [(150,)]
        assert lake.sql("select count(*), count(distinct index), min(index), max(index), "
                        "count(output_ref) from steps").fetchall() == [(150, 150, 0, 149, 50)]
        assert lake.count("payloads") == 1


def _hash_and_rows(lake: Lake) -> tuple[str, list]:
    lake.flush()
    row = lake.store.dataset("trajectories").to_table(
        columns=["_record_hash", "n_steps", "tokens_in", "cost_usd", "status"]).to_pylist()
    assert len(row) == 1
    return row[0].pop("_record_hash"), row[0]


@pytest.mark.parametrize("groups", [
    [list(range(40))],  # one commit
    [list(range(i, min(i + 7, 40))) for i in range(0, 40, 7)],  # in order, commit by commit
    [list(range(20, 40)), list(range(0, 25)), [3, 39]],  # out of order, with retries
])
def test_the_row_hash_depends_on_the_content_not_on_the_commits(tmp_path, monkeypatch,
                                                                 groups):
    """An appending commit extends the stored row hash with the new steps: the same steps
    give the same hash however they were grouped, the one a rebuild from all stored steps
    gives, and a retry of stored steps is no change at all (no new version)."""
    from lake import patches
    from lake.schema import STEPS, TRAJECTORIES
    from lake.writer import _rows

    steps = [_step(i, cost_usd=0.1 * (i % 3), output=f"o{i}") for i in range(40)]
    lake = Lake.open(str(tmp_path / "a"))
    with Lake.open(str(tmp_path / "ref")) as ref:
        ref.start_trajectory({"trajectory_id": "h", "task": "t", "steps": steps})
        ref.finish_trajectory("h", status="failed")
        want = _hash_and_rows(ref)
    try:
        lake.start_trajectory({"trajectory_id": "h", "task": "t"})
        lake.flush()

        def no_delete(name: str, predicate: str) -> None:
            raise AssertionError(f"{name}: an appending commit deleted {predicate}")

        monkeypatch.setattr(lake.store, "delete", no_delete)  # stored steps stay as they are
        for g in groups:
            lake.append_steps("h", [steps[i] for i in g])
            lake.flush()
        lake.finish_trajectory("h", status="failed")
        got = _hash_and_rows(lake)
        assert got == want
        versions = len(lake.versions())
        lake.append_steps("h", steps[5:9])  # a retry
        lake.finish_trajectory("h", status="failed")
        assert _hash_and_rows(lake) == want and len(lake.versions()) == versions
        stored = _rows(lake.store.lookup("trajectories", "default", "trajectory_id", ["h"],
                                         TRAJECTORIES.names))[0]
        stored_steps = _rows(lake.store.lookup("steps", "default", "trajectory_id", ["h"],
                                               STEPS.names))
        rebuilt = patches.materialize({**stored, "_record_hash": None}, stored_steps, [])
        assert rebuilt is not None and rebuilt.trajectory["_record_hash"] == want[0]
    finally:
        lake.close()


def test_step_totals_past_int64_are_left_unknown(lake: Lake):
    lake.start_trajectory({"trajectory_id": "big", "task": "t"})
    lake.append_steps("big", [_step(0, tokens_in=(1 << 62) + 1)])
    lake.flush()
    lake.append_steps("big", [_step(1, tokens_in=(1 << 62))])  # the sum needs 64 bits
    lake.append_steps("big", [_step(2, tokens_in=1)])
    lake.flush()  # the writer did not stop
    assert lake.sql("select n_steps, tokens_in from trajectories").fetchall() == [(3, None)]


def test_a_columnar_record_and_live_patches_in_one_commit(tmp_path):
    """A Parquet record (validated as Arrow: its steps are a table) of a live trajectory,
    committed with that trajectory's patches, is applied like any whole record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ingest import ingest_paths

    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([{"trajectory_id": "live", "task": "refund",
                                          "steps": [{"index": i, "kind": "tool", "name": "t"}
                                                    for i in range(3)],
                                          "outcome": {"success": True}}]), path)
    with Lake.open(str(tmp_path / "lake"), flush_interval_ms=60_000) as lake:
        lake.start_trajectory({"trajectory_id": "live", "task": "refund"})
        lake.flush()
        lake.append_steps("live", [_step(0)])  # not committed yet: the writer waits
        assert not ingest_paths(lake, [str(path)]).rejected  # flushes: one commit for both
        assert lake.sql("select n_steps, status from trajectories").fetchall() == \
            [(3, "succeeded")]
        lake.append_steps("live", [_step(3)])  # the writer is still alive
        lake.flush()
        assert lake.count("steps") == 4


def _span(sid: str, start: str, end: str | None) -> dict:
    times = {"started_at": [1, start], **({"ended_at": [1, end]} if end else {})}
    return {"step_id": sid, "kind": "agent", "name": "a", "started_at": start,
            "lake.trajectory": {"status": [1, "succeeded"], **times}}


def test_span_times_that_end_before_they_start_are_refused_when_logged(lake: Lake):
    """Refused at once (the caller hears why), not acknowledged and then failed at commit."""
    good = _span("b", "2025-01-01T00:00:01Z", "2025-01-01T00:00:02Z")
    result = lake.ingest_spans([("t", _span("a", "2025-01-01T00:00:01Z",
                                            "2025-01-01T00:00:00Z")), ("t", good)])
    assert [(r.location, r.field, r.reason) for r in result.rejected] == [
        ("spans[0]", "spans[0].lake.trajectory.ended_at[1]",
         "ended_at '2025-01-01T00:00:00Z' is before started_at '2025-01-01T00:00:01Z': a "
         "span ends after it starts")]
    lake.flush()
    assert lake.sql("select n_steps, epoch(ended_at) - epoch(started_at) from trajectories"
                    ).fetchall() == [(1, 1.0)]


def test_a_span_field_the_commit_refuses_is_left_empty_and_said(lake: Lake, monkeypatch,
                                                                caplog):
    """Spans logged by a lake that did not check their times yet: the writer keeps going,
    stores the trajectory without the field, and says what, where and why."""
    monkeypatch.setattr("lake.patches._check_hints", lambda hints, path: None)
    lake.ingest_spans([("t", _span("a", "2025-01-01T00:00:01Z", "2025-01-01T00:00:00Z"))])
    lake.flush()
    assert lake.sql("select status, ended_at, n_steps from trajectories").fetchall() == [
        ("succeeded", None, 1)]
    assert [r.getMessage() for r in caplog.records if r.name == "lake.patches"] == [
        "trajectory 't' (tenant 'default'): its spans give ended_at = "
        "'2025-01-01T00:00:00Z', which the lake's rule for trajectories refuses at commit "
        "('2025-01-01T00:00:00Z' is before started_at '2025-01-01T00:00:01Z': a run ends "
        "after it starts (check the two fields and their time zones)): the trajectory and "
        "all its spans are stored, ended_at left empty (the value stays in the span's "
        "'lake.trajectory' attribute). Spans are checked when logged, so please report this "
        "with the trajectory id"]
