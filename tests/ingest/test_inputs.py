"""Which files `lake ingest` reads: JSON Lines under every name other tools give it (and a
.json array), a BOM at a file's start, files of other types reported, nothing found an
error, and never the lake's own files (QA M2, M3, M4)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from ingest import EXIT_OK, EXIT_SOME_REJECTED, Quarantine, ingest_paths
from lake import InvalidArgument, Lake, Settings

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


# -- M3: JSON Lines by any name, and a .json array ------------------------------------------

def test_json_lines_are_read_under_every_name_spark_and_bigquery_give_them(lake, sample,
                                                                          tmp_path):
    """`part-00000.json` / `.json.gz` / `.ndjson.gz` exports were skipped silently (a
    directory) or refused (named), and the run went green having read nothing."""
    d = tmp_path / "export"
    d.mkdir()
    names = ["part-00000.json", "part-00001.json.gz", "part-00002.ndjson.gz",
             "part-00003.ndjson", "part-00004.jsonl", "part-00005.JSONL.GZ"]
    for i, name in enumerate(names):
        data = _lines(sample[2 * i: 2 * i + 2])
        (d / name).write_bytes(gzip.compress(data) if name.lower().endswith(".gz") else data)
    s = ingest_paths(lake, [str(d)])
    assert (s.files, s.trajectories, s.skipped, s.exit_code) == (6, 12, [], EXIT_OK)
    assert _ids(lake) == sorted(r["trajectory_id"] for r in sample)
    assert ingest_paths(lake, [str(d / "part-00001.json.gz")]).trajectories == 2  # named: read too


@pytest.mark.parametrize("name", ["runs.json", "runs.json.gz"])
def test_a_json_file_holding_one_array_is_read_record_by_record(name, lake, sample, tmp_path):
    """What `json.dump(records)` writes (indented, with a BOM even): each element a record,
    a bad one quarantined as `file:record N`."""
    records = [*sample[:3], {"trajectory_id": "bad", "task": ""}, 7]
    data = BOM + b"\n  " + orjson.dumps(records, option=orjson.OPT_INDENT_2)
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    s = ingest_paths(lake, [str(path)])
    assert (s.trajectories, s.rejected, s.exit_code) == (3, 2, EXIT_SOME_REJECTED)
    assert _ids(lake) == sorted(r["trajectory_id"] for r in sample[:3])
    bad, seven = _quarantined(s)
    assert (bad["location"], bad["line"], bad["field"]) == (f"{path}:record 4", 4, "task")
    assert seven["location"] == f"{path}:record 5" and "must be a JSON object" in seven["reason"]
    assert ingest_paths(lake, [str(path)]).changed == 0  # the same records: a no-op


def test_a_json_array_that_cannot_be_read_whole_says_what_to_do(lake, sample, tmp_path,
                                                               monkeypatch):
    import ingest.readers as readers

    cut = tmp_path / "cut.json"
    cut.write_bytes(orjson.dumps(sample[:3])[:-40])
    s = ingest_paths(lake, [str(cut)])
    assert s.exit_code == 1 and f"{cut}: starts with '[' but is not one JSON array" in \
        s.unreadable[0] and "write it as JSON Lines" in s.unreadable[0]
    monkeypatch.setattr(readers, "JSON_ARRAY_MAX_BYTES", 1 << 10)  # read whole: bounded
    big = tmp_path / "big.json"
    big.write_bytes(orjson.dumps(sample[:3]))
    s = ingest_paths(lake, [str(big)])
    assert s.exit_code == 1 and f"{big}: holds a JSON array of more than 1,024 bytes" in \
        s.unreadable[0]
    assert "jq -c '.[]' big.json" in s.unreadable[0] and lake.count("trajectories") == 0


def test_files_of_other_types_in_a_directory_are_reported_not_skipped_silently(lake, sample,
                                                                               tmp_path):
    d = tmp_path / "runs"
    (d / "sub").mkdir(parents=True)
    (d / "a.jsonl").write_bytes(_lines(sample[:2]))
    for name in ("README.md", "sub/b.csv", "sub/c.txt"):
        (d / name).write_text("x")
    s = ingest_paths(lake, [str(d)])
    assert (s.trajectories, s.exit_code) == (2, EXIT_OK)
    assert s.skipped == [str(d / "README.md"), str(d / "sub/b.csv"), str(d / "sub/c.txt")]
    assert s.as_dict()["skipped"] == {"count": 3, "examples": s.skipped}
    [warning] = s.warnings()
    assert warning.startswith(f"3 file(s) of another type in the directories given, not "
                              f"read: {d / 'README.md'}, {d / 'sub/b.csv'}, {d / 'sub/c.txt'}")
    assert ".json.gz" in warning


def test_a_directory_with_no_input_file_is_an_error_saying_what_it_holds(lake, tmp_path):
    d = tmp_path / "runs"
    (d / ".git").mkdir(parents=True)
    (d / ".git" / "x.jsonl").write_text("{}")
    (d / "notes.csv").write_text("a,b")
    (d / "_SUCCESS").write_text("")
    with pytest.raises(InvalidArgument) as e:
        ingest_paths(lake, [str(d)])
    msg = str(e.value)
    assert msg.startswith(f"{d}: no input file found: the directories given hold 1 file(s) "
                          f"of another type ({d / 'notes.csv'}); 2 hidden")
    assert str(d / "_SUCCESS") in msg and "Name the files to read" in msg
    assert len(lake.versions()) == 1  # nothing written


def test_hidden_entries_are_not_read(lake, sample, tmp_path):
    """Names starting with . or _ are not data, as Spark and Hadoop have it: a `.git` or
    `.venv` (full of .json now read), `_SUCCESS`, an unfinished `_temporary/` part."""
    d = tmp_path / "out"
    (d / "_temporary" / "0").mkdir(parents=True)
    (d / ".venv").mkdir()
    (d / "part-00000.json").write_bytes(_lines(sample[:2]))
    (d / "_temporary" / "0" / "part-00001.json").write_bytes(_lines(sample[2:4])[:-30])
    (d / ".venv" / "package.json").write_text('{"name": "x"}')
    (d / ".part-00000.json.crc").write_bytes(b"crc")
    (d / "_SUCCESS").write_text("")
    s = ingest_paths(lake, [str(d)])
    assert (s.files, s.trajectories, s.rejected, s.skipped, s.exit_code) == (1, 2, 0, [], EXIT_OK)
    hidden = tmp_path / ".hidden"  # named: read
    hidden.mkdir()
    (hidden / "_x.jsonl").write_bytes(_lines(sample[4:5]))
    assert ingest_paths(lake, [str(hidden / "_x.jsonl")]).trajectories == 1


# -- M4: never the lake's own files ----------------------------------------------------------

def test_ingest_of_a_directory_holding_the_lake_never_reads_its_own_files(sample, tmp_path):
    """`lake ingest .` with the lake in ./lake-data read its quarantine files back in: the
    rejects doubled on every run. Nor are a quarantine or log directory placed elsewhere
    under the input read, or this run's quarantine file."""
    runs = tmp_path / "runs"
    runs.mkdir()
    lines = [orjson.dumps(r) for r in sample[:5]] + [b'{"task": 1}', b"not json"]
    (runs / "part1.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    settings = Settings.load(data=str(runs / "lake"), quarantine_dir=str(runs / "rejects"),
                             wal_dir=str(runs / "log"))
    with Lake.open(settings=settings) as lake:
        for _ in range(3):
            s = ingest_paths(lake, [str(runs)])
            assert (s.files, s.trajectories, s.rejected, s.skipped) == (1, 5, 2, [])
        assert sum(len(f.read_bytes().splitlines()) for f in (runs / "rejects").iterdir()) == 6
        mine = runs / "mine.jsonl"  # this run's quarantine file, under the input too
        for _ in range(2):
            s = ingest_paths(lake, [str(runs)], quarantine=Quarantine(path=mine))
            assert (s.files, s.rejected) == (1, 2)
        assert len(mine.read_bytes().splitlines()) == 4
        assert any((runs / "log").iterdir()) and any((runs / "lake").iterdir())
        with pytest.raises(InvalidArgument, match="the lake's own data, quarantine or log"):
            ingest_paths(lake, [str(runs / "lake")])


def test_two_loads_in_one_second_of_one_process_get_two_quarantine_files(tmp_path):
    """The default quarantine file is named by second and process: a second load in the same
    second appended to the first's, and its summary pointed at both runs' rejects."""
    from ingest.quarantine import Quarantine

    a, b = Quarantine(directory=tmp_path), Quarantine(directory=tmp_path)
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path


def test_quarantined_records_are_their_owners_only(tmp_path):
    """Rejected records are data, as the lake's rows are: 0700 directory, 0600 file (the
    operator QA found a caller's ./lake-data/quarantine world-readable)."""
    from ingest.quarantine import Quarantine

    q = Quarantine(directory=tmp_path / "quarantine")
    q.add("runs.jsonl:1", "task is missing", "task", '{"card": "4111"}')
    q.close()
    assert (q.path.parent.stat().st_mode & 0o777, q.path.stat().st_mode & 0o777) == \
        (0o700, 0o600)
