"""Every input format lands the same records; unreadable files change nothing."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import EXIT_NOTHING_READ, EXIT_OK, EXIT_SOME_REJECTED, Quarantine, ingest_paths
from lake import InvalidArgument, Lake


def _arrow(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records)


@pytest.fixture
def sample(dev_records) -> list[dict]:
    return dev_records[:25]


def _counts(lake: Lake) -> tuple[int, int]:
    return lake.count("trajectories"), lake.count("steps")


def _expected(records: list[dict]) -> tuple[int, int]:
    return len(records), sum(len(r["steps"]) for r in records)


def _write(kind: str, records: list[dict], path: Path) -> Path:
    if kind == "jsonl":
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    elif kind == "jsonl.gz":
        path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(r) for r in records)))
    elif kind == "parquet":
        pq.write_table(_arrow(records), path)
    elif kind == "arrow":
        with pa.ipc.new_file(path, _arrow(records).schema) as w:
            w.write_table(_arrow(records))
    elif kind == "arrows":
        with pa.ipc.new_stream(path, _arrow(records).schema) as w:
            w.write_table(_arrow(records), max_chunksize=7)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "parquet", "arrow", "arrows"])
def test_each_format_lands_the_same_records(kind, lake, sample, tmp_path):
    path = _write(kind, sample, tmp_path / f"runs.{kind}")
    s = ingest_paths(lake, [str(path)])
    assert (s.trajectories, s.rejected, s.exit_code) == (25, 0, EXIT_OK)
    assert _counts(lake) == _expected(sample)
    # the same trajectories through a second format change nothing
    other = _write("jsonl", sample, tmp_path / "again.jsonl")
    ingest_paths(lake, [str(other)])
    assert _counts(lake) == _expected(sample)


def test_parquet_keeps_outcome_scores_and_meta(lake, tmp_path):
    recs = [{"trajectory_id": "s1", "task": "t", "outcome": {"success": True, "reward": 0.5,
             "scores": {"judge": 0.9}}, "meta": {"team": "a"}, "steps": []}]
    table = pa.table({"trajectory_id": ["s1"], "task": ["t"],
                      "outcome": pa.array([recs[0]["outcome"]], pa.struct([
                          ("success", pa.bool_()), ("reward", pa.float64()),
                          ("scores", pa.map_(pa.string(), pa.float64()))])),
                      "meta": pa.array([{"team": "a"}])})
    pq.write_table(table, tmp_path / "x.parquet")
    ingest_paths(lake, [str(tmp_path / "x.parquet")])
    got = lake.sql("select success, reward, scores['judge'], meta->>'team' "
                   "from trajectories").fetchall()
    assert got == [(True, 0.5, 0.9, "a")]


def test_a_parquet_file_without_tasks_is_one_clear_error_not_a_reject_per_row(lake, tmp_path):
    path = tmp_path / "no-task.parquet"
    pq.write_table(pa.table({"trajectory_id": [f"r{i}" for i in range(1000)],
                             "prompt": ["t"] * 1000}), path)
    s = ingest_paths(lake, [str(path)])
    assert (s.exit_code, s.rejected) == (EXIT_NOTHING_READ, 0)
    assert "has no task column (it has trajectory_id, prompt)" in s.unreadable[0]


def test_a_file_with_a_column_twice_is_refused_not_read_as_one_of_them(lake, tmp_path):
    path = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["r1"]), pa.array(["a"]), pa.array(["b"])],
                                        names=["trajectory_id", "task", "task"]), path)
    s = ingest_paths(lake, [str(path)])
    assert s.exit_code == EXIT_NOTHING_READ and "column 'task' appears more than once" in \
        s.unreadable[0]


def test_directory_is_walked_for_supported_files(lake, sample, tmp_path):
    d = tmp_path / "runs"
    (d / "sub").mkdir(parents=True)
    _write("jsonl", sample[:10], d / "a.jsonl")
    _write("parquet", sample[10:], d / "sub" / "b.parquet")
    (d / "notes.txt").write_text("ignored")
    s = ingest_paths(lake, [str(d)])
    assert s.files == 2 and _counts(lake) == _expected(sample)


def test_missing_and_unsupported_paths_are_named(lake, tmp_path):
    with pytest.raises(InvalidArgument, match="no such file"):
        ingest_paths(lake, [str(tmp_path / "nope.jsonl")])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InvalidArgument, match="unsupported file type"):
        ingest_paths(lake, [str(tmp_path / "x.csv")])


def test_unreadable_file_leaves_nothing_written(lake, sample, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    v0 = len(lake.versions())
    s = ingest_paths(lake, [str(bad)])
    assert s.exit_code == EXIT_NOTHING_READ and s.unreadable and str(bad) in s.unreadable[0]
    assert _counts(lake) == (0, 0) and len(lake.versions()) == v0
    good = _write("jsonl", sample[:3], tmp_path / "good.jsonl")
    s = ingest_paths(lake, [str(bad), str(good)])
    assert s.exit_code == EXIT_SOME_REJECTED and _counts(lake) == _expected(sample[:3])


def _gzip(records: list[dict]) -> bytes:
    return gzip.compress(b"\n".join(orjson.dumps(r) for r in records) + b"\n", mtime=0)


def _flip(data: bytes, at: int, n: int, to: int | None = None) -> bytes:
    """``data`` with ``n`` bytes from ``at`` on corrupted (set ``to``, else flipped)."""
    out = bytearray(data)
    for i in range(at, at + n):
        out[i] = out[i] ^ 0x5A if to is None else to
    return bytes(out)


def _damaged(how: str, records: list[dict], tmp_path: Path) -> Path:
    """A file of ``records`` damaged as a copy can be: cut short, or with bytes corrupted."""
    if how.startswith("gzip"):
        full = _gzip(records)
        data = {"gzip tail cut": full[:-20], "gzip cut": full[: len(full) * 2 // 3],
                "gzip corrupt": _flip(full, len(full) // 2, 8, 0xFF),  # a zlib error there
                "gzip checksum": _flip(full, len(full) // 2, 1)}[how]  # wrong bytes decoded
        path = tmp_path / "runs.jsonl.gz"
    elif how.startswith("arrow"):
        kind = "arrow" if how == "arrow file cut" else "arrows"
        with pa.ipc.new_file(tmp_path / "whole", _arrow(records).schema) if kind == "arrow" \
                else pa.ipc.new_stream(tmp_path / "whole", _arrow(records).schema) as w:
            w.write_table(_arrow(records), max_chunksize=7)
        full = (tmp_path / "whole").read_bytes()
        data, path = full[: len(full) * 2 // 3], tmp_path / f"runs.{kind}"
    else:  # "parquet page corrupt": one row group per batch read; the second one's corrupt
        pq.write_table(_arrow(records), tmp_path / "whole", row_group_size=10)
        group = pq.ParquetFile(tmp_path / "whole").metadata.row_group(1)
        col = max((group.column(i) for i in range(group.num_columns)),
                  key=lambda c: c.total_compressed_size)
        data = _flip((tmp_path / "whole").read_bytes(),
                     col.data_page_offset + col.total_compressed_size // 2, 32)
        path = tmp_path / "runs.parquet"
    path.write_bytes(data)
    return path


def _quarantined(s) -> list[dict]:
    return [orjson.loads(x) for x in Path(s.quarantine).read_bytes().splitlines()]


@pytest.mark.parametrize("columnar", [True, False])
@pytest.mark.parametrize("how", ["gzip tail cut", "gzip cut", "gzip corrupt", "gzip checksum",
                                 "arrow file cut", "arrow stream cut", "parquet page corrupt"])
def test_a_damaged_file_lands_what_precedes_the_damage_and_names_where(
        how, columnar, lake, sample, tmp_path, monkeypatch):
    """Every whole record before the damage lands; the damage is one rejected item at the
    ``file:line`` (``file:row N``) where it starts, saying what to do; a re-run lands
    nothing more. (A gzip cut short once crashed asking the closed file for progress, and
    dropped the chunks not yet committed.)"""
    import ingest.readers as readers

    monkeypatch.setattr(readers, "BATCH_ROWS", 10)  # Parquet: a batch per row group
    path = _damaged(how, sample, tmp_path)
    unit = "" if how.startswith("gzip") else "row "
    for run in range(2):
        ticks: list[tuple[int, int]] = []
        s = ingest_paths(lake, [str(path)], columnar=columnar,
                         quarantine=Quarantine(path=tmp_path / f"rejected-{run}.jsonl"),
                         on_progress=lambda done, total, ticks=ticks: ticks.append((done, total)))
        *garbled, damage = _quarantined(s)  # lines decoded wrong before the damage showed
        whole = damage["line"] - 1  # the lines / rows read before the damage
        assert (s.exit_code, s.rejected, s.unreadable) == \
            (EXIT_SOME_REJECTED, len(garbled) + 1, [])
        assert damage["location"] == f"{path}:{unit}{whole + 1}" and damage["text"] is None
        assert f"after {unit or 'line '}{whole}: " in damage["reason"]
        assert "re-copy the file and ingest it again" in damage["reason"]
        assert all(g["line"] <= whole and ("not valid JSON" in g["reason"] or "not UTF-8" in
                                          g["reason"]) for g in garbled)
        bad = {g["line"] for g in garbled}
        landed = [r for i, r in enumerate(sample[:whole], 1) if i not in bad]
        assert _counts(lake) == _expected(landed) and landed
        got = lake.sql("select trajectory_id from trajectories order by 1").fetchall()
        assert [x for (x,) in got] == sorted(r["trajectory_id"] for r in landed)
        assert ticks[-1] == (path.stat().st_size,) * 2
    if how == "gzip checksum":  # found at the end: every line was read, one of them wrong
        assert whole == len(sample) and "may hold wrong bytes" in damage["reason"]
    else:
        assert whole < len(sample) and not garbled
    if how == "gzip tail cut":
        assert whole == len(sample) - 1 and "ends early (truncated" in damage["reason"]


def test_a_file_cut_before_anything_readable_is_named_unreadable(lake, sample, tmp_path):
    """A Parquet file keeps its footer at the end: cut short, nothing of it can be read."""
    path = _write("parquet", sample, tmp_path / "cut.parquet")
    path.write_bytes(path.read_bytes()[:-100])
    s = ingest_paths(lake, [str(path)], on_progress=lambda done, total: None)
    assert s.exit_code == EXIT_NOTHING_READ and _counts(lake) == (0, 0)
    assert str(path) in s.unreadable[0] and "check the file is complete" in s.unreadable[0]


def _rows(lake: Lake) -> dict[str, list[tuple]]:
    """Every stored row but its ingest time, sorted."""
    out = {}
    for name, key in (("trajectories", "trajectory_id"), ("steps", 'trajectory_id, "index"'),
                      ("payloads", "sha256")):
        rel = lake.sql(f"select * exclude (ingested_at) from {name} order by {key}") \
            if name == "trajectories" else lake.sql(f"select * from {name} order by {key}")
        out[name] = rel.fetchall()
    return out


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_bulk_load_lands_what_a_logged_one_does_and_acks_at_commit(kind, sample, tmp_path,
                                                                       monkeypatch):
    """Default (bulk): each chunk is acknowledged once committed, and the log holds no
    records; ``wal=True`` logs them first. Both land the same rows and reject the same."""
    import ingest.runner as runner

    records = [*sample, {"trajectory_id": "bad", "task": "", "steps": []}]
    path = _write(kind, records * 2, tmp_path / f"runs.{kind}")  # every record twice
    got = {}
    for wal in (False, True):
        with Lake.open(str(tmp_path / f"lake-{wal}")) as lake:
            acks = []

            def on_ack(ev, lake=lake, acks=acks, wal=wal):
                acks.append(ev)
                if not wal:  # acknowledged means committed: already visible
                    assert lake.writer.lag["applied_lsn"] >= ev["lsn"]

            monkeypatch.setattr(runner, "CHUNK_RECORDS", 7)
            monkeypatch.setattr(runner, "JSON_BLOCK_BYTES", 1 << 15)  # a few lines each
            s = ingest_paths(lake, [str(path)], on_ack=on_ack, wal=wal)
            assert (s.records, s.trajectories, s.rejected, s.exit_code) == \
                (50, 25, 2, EXIT_SOME_REJECTED)
            assert (s.duplicates.repeated, s.duplicates.differing) == (25, 0)
            assert len(acks) >= (4 if kind == "jsonl" else 1)  # Parquet: one batch, one chunk
            assert sum(a["trajectories"] for a in acks) == 50
            logged = sum(f.stat().st_size for f in (tmp_path / f"lake-{wal}" / "_wal").glob("*"))
            got[wal] = _rows(lake), logged
    assert got[False][0] == got[True][0]
    assert len(got[False][0]["trajectories"]) == 25
    assert got[False][1] * 10 < got[True][1]  # the bulk load logged markers, not records
