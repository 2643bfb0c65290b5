"""An id that comes more than once in one load is counted once and reported, and the
summary's counts are what the lake holds of the load (QA M5)."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import EXIT_OK, ingest_paths
from ingest.duplicates import Ids
from lake import Lake
from lake.records import Context, normalize

STEP = {"kind": "llm"}
# the QA tester's file: d1 twice with another outcome (the later is kept), d2 twice with
# fewer steps the second time (the first is kept), d3 twice the same
DUPS = [
    {"trajectory_id": "d1", "task": "t", "agent": "first", "steps": [STEP],
     "outcome": {"success": True}},
    {"trajectory_id": "d1", "task": "t", "agent": "second", "steps": [STEP],
     "outcome": {"success": False}},
    {"trajectory_id": "d2", "task": "t", "agent": "first", "steps": [STEP, STEP],
     "outcome": {"success": True}},
    {"trajectory_id": "d2", "task": "t", "agent": "second", "steps": [STEP],
     "outcome": {"success": True}},
    {"trajectory_id": "d3", "task": "t", "agent": "same", "steps": [],
     "outcome": {"success": True}},
    {"trajectory_id": "d3", "task": "t", "agent": "same", "steps": [],
     "outcome": {"success": True}},
]


def _stored(lake: Lake) -> list[tuple]:
    return lake.sql("select trajectory_id, agent, n_steps from trajectories order by 1") \
        .fetchall()


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_repeated_ids_are_counted_once_and_named(kind, lake, tmp_path):
    path = tmp_path / f"dups.{kind}"
    if kind == "jsonl":
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in DUPS) + b"\n")
    else:
        pq.write_table(pa.Table.from_pylist(DUPS), path)
    s = ingest_paths(lake, [str(path)])
    assert _stored(lake) == [("d1", "second", 1), ("d2", "first", 2), ("d3", "same", 0)]
    assert (s.records, s.trajectories, s.steps, s.changed, s.exit_code) == \
        (6, 3, 3, 3, EXIT_OK)  # the lake holds 3 trajectories and 3 steps
    assert lake.count("steps") == s.steps
    assert s.as_dict()["duplicates"] == {"ids": 3, "differing": 2,
                                         "examples": ["d1", "d2", "d3"], "complete": True}
    [warning] = s.warnings()
    assert warning.startswith("3 id(s) appeared more than once in this load (2 with different "
                              "content; the lake keeps one version of each")
    assert warning.endswith("e.g. d1, d2, d3")


def test_an_id_in_two_files_with_other_content_is_reported(lake, tmp_path):
    """Across files too: part 2 changing a run's agent (and growing it) replaced it
    without a word; the steps counted are those of the version kept."""
    a, b = tmp_path / "part1.jsonl", tmp_path / "part2.jsonl"
    a.write_bytes(orjson.dumps(DUPS[0]) + b"\n" + orjson.dumps(DUPS[2]) + b"\n")
    b.write_bytes(orjson.dumps({**DUPS[0], "agent": "other-agent", "steps": [STEP] * 3})
                  + b"\n")
    s = ingest_paths(lake, [str(a), str(b)])
    assert (s.records, s.trajectories, s.steps) == (3, 2, 3 + 2) == \
        (3, lake.count("trajectories"), lake.count("steps"))
    assert (s.duplicates.repeated, s.duplicates.differing, s.duplicates.examples) == \
        (1, 1, ["d1"])
    assert _stored(lake)[0] == ("d1", "other-agent", 3)
    again = ingest_paths(lake, [str(b)])  # one copy: nothing repeated within this load
    assert (again.records, again.trajectories, again.warnings()) == (1, 1, [])


def test_ids_past_the_limit_are_counted_unchecked_and_the_warning_says_so():
    ctx = Context(tenant="default", ingested_at_us=0)
    recs = [normalize(r, orjson.dumps(r), ctx) for r in
            [{"trajectory_id": t, "task": "t", "steps": [STEP] * n}
             for t, n in (("a", 1), ("b", 2), ("c", 3), ("a", 4), ("c", 5))]]
    ids = Ids(max_ids=2)
    assert ids.add(recs) == (4, 1 + 2 + 3 + (4 - 1) + 5)  # c past the limit: counted twice
    assert (ids.repeated, ids.differing, ids.complete) == (1, 1, False)
    assert "ids past the first 2 were not checked" in ids.message()
