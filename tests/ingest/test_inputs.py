"""Which files `lake ingest` reads and how: a BOM at a file's start (QA M2)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from ingest import EXIT_SOME_REJECTED, ingest_paths
from lake import Lake

BOM = b"\xef\xbb\xbf"


@pytest.fixture
def sample(dev_records) -> list[dict]:
    return dev_records[:12]


def _lines(records: list[dict]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + b"\n"


def _ids(lake: Lake) -> list[str]:
    return [x for (x,) in lake.sql("select trajectory_id from trajectories order by 1")
            .fetchall()]


def _quarantined(s) -> list[dict]:
    return [orjson.loads(x) for x in Path(s.quarantine).read_bytes().splitlines()]


# -- M2: a byte order mark ---------------------------------------------------------------------

@pytest.mark.parametrize("columnar", [True, False])
@pytest.mark.parametrize("name", ["runs.jsonl", "runs.jsonl.gz", "crlf.jsonl"])
def test_a_bom_at_the_start_of_a_file_is_skipped_and_lines_keep_their_numbers(
        name, columnar, lake, sample, tmp_path):
    """Windows tools start a UTF-8 file with a BOM: line 1 is a record, not a reject."""
    lines = [orjson.dumps(r) for r in sample[:4]]
    lines[2] = b'{"trajectory_id": "bad", "task": 42}'  # line 3 stays line 3
    data = BOM + (b"\r\n" if name == "crlf.jsonl" else b"\n").join(lines) + b"\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    s = ingest_paths(lake, [str(path)], columnar=columnar)
    assert (s.trajectories, s.rejected, s.exit_code) == (3, 1, EXIT_SOME_REJECTED)
    [bad] = _quarantined(s)
    assert (bad["location"], bad["field"]) == (f"{path}:3", "task")
    assert _ids(lake) == sorted(r["trajectory_id"] for i, r in enumerate(sample[:4]) if i != 2)
