"""`lake export`: every table as hive-partitioned Parquet, read back by DuckDB, pyarrow (what
pandas uses) and `lake ingest`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.dataset as pads
import pytest

from ingest.runner import ingest_paths
from lake import AlreadyExists, InvalidArgument, Lake
from lake.export import DAY_RULES, EXPORT_TABLES, MANIFEST, export_lake
from lake.reads import trajectory
from lake.schema import public_columns

LAKE_CMD = str(Path(sys.executable).with_name("lake"))
PER_RUN = ("select trajectory_id, task, task_hash, agent, status, success, reward, scores, "
           "n_steps, tokens_in, tokens_out, cost_usd, tags, meta::varchar, started_at, ended_at "
           "from trajectories order by trajectory_id")
PER_STEP = ("select trajectory_id, index, step_id, kind, name, input, output, error, actor, "
            "started_at, duration_ms, tokens_in, tokens_out, cost_usd, attributes::varchar, "
            "input_ref, output_ref from steps order by trajectory_id, index")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, dev_records):
    root = tmp_path_factory.mktemp("export")
    lk = Lake.open(str(root / "lake"))
    lk.ingest(dev_records)
    lk.tag("dev")
    res = export_lake(lk, root / "dump", as_of="dev")
    yield lk, root / "dump", res
    lk.close()


def test_round_trip_into_an_empty_lake_gives_the_same_lake(exported, tmp_path):
    src, dump, res = exported
    assert res.tables["trajectories"]["rows"] == 240 and res.tables["steps"]["rows"] == 9065
    with Lake.open(str(tmp_path / "copy")) as dst:
        summary = ingest_paths(dst, [str(dump)])
        assert (summary.files, summary.trajectories, summary.steps, summary.rejected) == \
            (1, 240, 9065, 0)
        for table in ("trajectories", "steps", "payloads"):
            assert dst.count(table) == src.count(table)
        assert dst.sql(PER_RUN).fetchall() == src.sql(PER_RUN, as_of="dev").fetchall()
        assert dst.sql(PER_STEP).fetchall() == src.sql(PER_STEP, as_of="dev").fetchall()
        try:
            from lake.analysis import compare
        except ImportError:  # `lake compare` is not in this tree
            return
        for group_by in (None, "meta->>'domain'"):
            assert compare(dst.connect(), "agent", group_by=group_by).as_dict() == \
                compare(src.connect(as_of="dev"), "agent", group_by=group_by).as_dict()


def test_duckdb_and_pyarrow_read_it_as_is(exported):
    _, dump, res = exported
    for name, schema in EXPORT_TABLES.items():
        files = f"{dump}/{name}/**/*.parquet"
        rel = duckdb.sql(f"select * from read_parquet('{files}', hive_partitioning = true)")
        cols = public_columns(schema) + (["day"] if DAY_RULES[name] else [])
        assert sorted(rel.columns) == sorted(cols), name
        assert len(rel.fetchall()) == res.tables[name]["rows"]
        table = pads.dataset(dump / name, format="parquet", partitioning="hive").to_table()
        assert sorted(table.column_names) == sorted(cols) and table.num_rows == \
            res.tables[name]["rows"]
    days = duckdb.sql(f"select distinct tenant, day from read_parquet('{dump}/steps/**/*.parquet',"
                      " hive_partitioning = true)").fetchall()
    assert days and all(t == "default" and hasattr(d, "year") for t, d in days)  # a DATE
    t = pads.dataset(dump / "trajectories", format="parquet").schema
    assert str(t.field("started_at").type) == "timestamp[us, tz=UTC]"
    assert t.field("n_steps").metadata[b"doc"] == b"number of steps"  # documented in the file


def test_manifest_and_schema_doc_name_every_table_and_column(exported):
    _, dump, _ = exported
    manifest = json.loads((dump / MANIFEST).read_text())
    assert manifest["lake_version"] == 2 and manifest["as_of"] == "dev"
    assert set(manifest["tables"]) == set(EXPORT_TABLES)
    steps = manifest["tables"]["steps"]
    assert steps["partitioned_by"] == ["tenant", "day"] and "trajectory's day" in steps["day"]
    assert [c["name"] for c in steps["columns"]] == public_columns(EXPORT_TABLES["steps"])
    doc = (dump / "SCHEMA.md").read_text()
    for name, schema in EXPORT_TABLES.items():
        assert f"## `{name}`" in doc
        assert all(f"| `{c}` |" in doc for c in public_columns(schema))


def test_large_payloads_tenants_and_retractions_survive_the_round_trip(tmp_path):
    big = "x" * 70_000 + "end"
    runs = [{"trajectory_id": f"r{i}", "task": f"task {i}", "started_at": f"2025-08-0{i + 1}",
             "steps": [{"kind": "tool", "name": "fetch", "input": "{}", "output": big}],
             "outcome": {"success": True}} for i in range(3)]
    with Lake.open(str(tmp_path / "src")) as src:
        src.ingest(runs, tenant="acme")
        src.retract(["r2"], "leaked a card number", tenant="acme")
        export_lake(src, tmp_path / "dump", all_tenants=True)
    days = sorted(p.name for p in (tmp_path / "dump/steps/tenant=acme").iterdir())
    assert days == ["day=2025-08-01", "day=2025-08-02", "day=2025-08-03"]
    with Lake.open(str(tmp_path / "dst"), tenant="acme") as dst:
        wrong = ingest_paths(dst, [str(tmp_path / "dump")], tenant="default")
        assert wrong.trajectories == 0 and wrong.rejected == 3  # another tenant's records
        summary = ingest_paths(dst, [str(tmp_path / "dump")], tenant="acme")
        assert (summary.trajectories, summary.rejected) == (2, 1)  # r2 was retracted
        reasons = [json.loads(x)["reason"]
                   for x in Path(summary.quarantine).read_text().splitlines()]
        assert any("retracted" in r for r in reasons)
        _, row = trajectory(dst, "acme", "r0", full_payloads=True)
        assert row["steps"][0]["output"] == big
        assert dst.count("payloads", tenant="acme") == 1


def test_pinned_version_refusals_and_empty_tables(exported, dev_records, tmp_path):
    src, dump, _ = exported
    src.ingest([{**dev_records[0], "trajectory_id": "new-run"}])
    res = export_lake(src, tmp_path / "old", as_of="dev")
    assert res.tables["trajectories"]["rows"] == 240  # the tag, not the latest
    assert export_lake(src, tmp_path / "new").tables["trajectories"]["rows"] == 241
    with pytest.raises(AlreadyExists, match="not an empty directory"):
        export_lake(src, dump)
    with pytest.raises(InvalidArgument, match="not supported"):
        export_lake(src, tmp_path / "x", fmt="csv")
    empty = duckdb.sql(f"select * from read_parquet('{dump}/clusters/**/*.parquet')")
    assert len(empty.fetchall()) == 0 and "centroid" in empty.columns


def test_cli_export_then_ingest(exported, tmp_path):
    src, _, _ = exported
    out = tmp_path / "dump"
    p = subprocess.run([LAKE_CMD, "export", str(out), "--format", "parquet", "--as-of", "dev",
                        "--json", "--data", src.settings.data], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rows"]["steps"] == 9065
    p = subprocess.run([LAKE_CMD, "ingest", str(tmp_path), "--json", "--data",
                        str(tmp_path / "copy")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["trajectories"] == 240  # the export dir is found and read once
    p = subprocess.run([LAKE_CMD, "export", str(out), "--data", src.settings.data],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "not an empty directory" in p.stderr


@pytest.mark.parametrize("cmd", ["tape", "export-dataset", "export"])
def test_every_export_command_has_help_with_an_example(cmd):
    p = subprocess.run([LAKE_CMD, cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "Example" in p.stdout
