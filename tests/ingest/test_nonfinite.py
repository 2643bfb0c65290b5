"""A NaN or an infinity where the format wants a number is rejected by name at every Arrow
door (Parquet, Arrow IPC, IngestArrow, JSONL read as Arrow), as the JSON doors reject it:
never stored as null. The other rows of the batch land."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import EXIT_SOME_REJECTED, ingest_paths
from ingest.json_columnar import read_block
from lake import Lake, schema
from lake.arrow_values import unwritten
from lake.columnar import DROP, normalize_batch
from lake.errors import InvalidArgument
from lake.records import STEP_ALIASES, Context, normalize
from server import convert
from server.app import serve
from server.client import LakeClient


def run(tid: str, **fields) -> dict:
    steps = [{"kind": "llm", "output": "hi", "duration_ms": 1.5, "cost_usd": 0.01,
              "tokens_in": 3}, {"kind": "tool", "name": "get", "duration_ms": 2.0}]
    return {"trajectory_id": tid, "task": f"task {tid}", "cost_usd": 0.5, "tokens_in": 9,
            "reward": 1.0, "steps": steps, "outcome": {"success": True, "scores": {"acc": 0.5}},
            "meta": {"team": "x"}, **fields}


def step(**fields) -> list[dict]:
    return [run("")["steps"][0], {**run("")["steps"][1], **fields}]


BAD = [  # (fields, the field path, the reason): each rejected where JSON would hold null
    ({"reward": math.nan}, "reward", "must be a finite number, got nan"),
    ({"steps": step(duration_ms=math.inf)}, "steps[1].duration_ms",
     "must be a finite non-negative number, got inf"),
    ({"outcome": {"success": True, "scores": {"acc": math.nan}}}, "outcome.scores.acc",
     "must be a finite number, got nan"),
    ({"cost_usd": -math.inf}, "cost_usd", "must be a finite number, got -inf"),
    ({"steps": step(cost_usd=math.nan)}, "steps[1].cost_usd",
     "must be a finite non-negative number, got nan"),
]


def table(records: list[dict]) -> pa.Table:
    return pa.Table.from_struct_array(pa.array(records))  # types from every record


def mixed() -> list[dict]:
    """Good runs with a bad one after each."""
    out = []
    for i, (fields, _, _) in enumerate(BAD):
        out += [run(f"good{i}"), run(f"bad{i}", **fields)]
    return out


def quarantined(s) -> list[tuple[str, str | None, str]]:
    lines = [orjson.loads(x) for x in Path(s.quarantine).read_bytes().splitlines()]
    return [(x["location"].rsplit(":", 1)[1], x["field"], x["reason"]) for x in lines]


def stored(lake: Lake) -> dict[str, tuple]:
    rel = lake.sql("select trajectory_id, reward, cost_usd, scores from trajectories")
    return {r[0]: r[1:] for r in rel.fetchall()}


@pytest.mark.parametrize("kind", ["parquet", "arrow"])
def test_a_file_with_nan_numbers_quarantines_those_rows_by_name(kind, lake, tmp_path):
    path = tmp_path / f"nan.{kind}"
    if kind == "parquet":
        pq.write_table(table(mixed()), path)
    else:
        with pa.ipc.new_file(path, table(mixed()).schema) as w:
            w.write_table(table(mixed()))
    s = ingest_paths(lake, [str(path)])
    assert (s.trajectories, s.rejected, s.exit_code) == (5, 5, EXIT_SOME_REJECTED)
    assert quarantined(s) == [(f"row {2 * i + 2}", field, reason)
                              for i, (_, field, reason) in enumerate(BAD)]
    assert set(stored(lake)) == {f"good{i}" for i in range(5)}
    assert stored(lake)["good0"] == (1.0, 0.5, {"acc": 0.5})
    versions = len(lake.versions())  # the good rows hash as before: again is a no-op
    assert ingest_paths(lake, [str(path)]).trajectories == 5
    assert len(lake.versions()) == versions and lake.count("trajectories") == 5


def test_a_row_the_columnar_door_cannot_read_is_rejected_too(lake, tmp_path):
    """A date column: its rows are converted row by row, and a NaN there is kept as well."""
    records = [{**r, "day": date(2025, 8, 1)} for r in mixed()]
    path = tmp_path / "dates.parquet"
    pq.write_table(table(records), path)
    s = ingest_paths(lake, [str(path)])
    assert [(f, r) for _, f, r in quarantined(s)] == [(f, r) for _, f, r in BAD]
    assert s.trajectories == 5


def test_the_ingest_arrow_batch_path_rejects_nan_by_name(lake):
    """What IngestArrow does with a batch: columnar, then the rows it leaves one by one."""
    batch = table(mixed()).combine_chunks().to_batches()[0]
    ctx = lake.context()
    res = normalize_batch(batch, ctx, DROP)
    assert res.rows == [0, 2, 4, 6, 8] and res.rest == [1, 3, 5, 7, 9]
    got = []
    for raw, obj, why in convert.ipc_rows(batch, res.rest):
        assert why is None and orjson.loads(raw)  # still the record's JSON text, with null
        with pytest.raises(InvalidArgument) as e:
            normalize(obj, raw, ctx)
        got.append((e.value.field, e.value.message))
    assert got == [(f, r) for _, f, r in BAD]


def test_ingest_arrow_over_grpc_rejects_nan_and_lands_the_rest(lake_dir):
    from lake import Settings

    srv = serve(Settings.load(data=str(lake_dir), flush_interval_ms=0), "127.0.0.1", 0)
    try:
        with LakeClient(srv.target) as c:
            reply = c.ingest_arrow(table(mixed()))
            assert reply.accepted == 5
            assert [(x["index"], x["field"], x["reason"], x["trajectory_id"])
                    for x in reply.rejects] == [(2 * i + 1, f, r, f"bad{i}")
                                                for i, (_, f, r) in enumerate(BAD)]
            c.get_trajectory("good0", min_lsn=reply.lsn)
            versions = len(c.versions())
            again = c.ingest_arrow(table(mixed()))  # the good rows hash as before: a no-op
            c.get_trajectory("good0", min_lsn=again.lsn)
            assert len(c.versions()) == versions
        rows = srv.lake.sql("select trajectory_id, reward from trajectories").fetchall()
        assert sorted(rows) == [(f"good{i}", 1.0) for i in range(5)]
    finally:
        srv.stop(grace=1)


def test_nan_in_free_form_fields_is_stored_as_null(lake, tmp_path):
    """``meta``, unknown fields, ``attributes``: null, as their JSON text writes it."""
    rec = run("t", meta={"m": math.nan}, extra=math.inf,
              steps=[{"kind": "llm", "note": math.nan}])
    path = tmp_path / "free.parquet"
    pq.write_table(table([rec]), path)
    assert ingest_paths(lake, [str(path)]).trajectories == 1
    (meta,), = lake.sql("select meta from trajectories").fetchall()
    assert orjson.loads(meta) == {"m": None, "extra": None}
    (attrs,), = lake.sql("select attributes from steps where attributes is not null").fetchall()
    assert orjson.loads(attrs) == {"note": None}


def test_jsonl_nan_literals_are_refused_whichever_way_lines_are_read(lake, tmp_path):
    """Arrow's JSON reader reads ``NaN``, JSON has none: a block holding one is read line by
    line, where the line is not valid JSON (even in ``meta``, never stored as null)."""
    lines = [orjson.dumps(run(f"t{i}", meta={"q": 0.5})) for i in range(4)]
    lines[1] = lines[1].replace(b'"reward":1.0', b'"reward":NaN')
    lines[2] = lines[2].replace(b'"q":0.5', b'"q":Infinity')
    data = b"\n".join(lines)
    for block in (lines[:2], lines[2:], lines):
        assert read_block(b"\n".join(block), len(block), max(map(len, block))) is None
    assert read_block(lines[0] + b"\n" + lines[3], 2, len(lines[0])) is not None
    path = tmp_path / "runs.jsonl"
    path.write_bytes(data + b"\n")
    s = ingest_paths(lake, [str(path)])
    assert (s.trajectories, s.rejected) == (2, 2)
    assert [(loc, reason.startswith("not valid JSON")) for loc, _, reason in quarantined(s)] \
        == [("2", True), ("3", True)]


def test_the_embedded_ingest_rejects_nan_by_name_too(lake):
    r = lake.ingest([{"trajectory_id": "a", "task": "t", "outcome": {"reward": float("nan")}},
                     {"trajectory_id": "b", "task": "t",
                      "steps": [{"kind": "tool", "duration_ms": float("inf")}]},
                     {"trajectory_id": "c", "task": "t", "meta": {"x": float("nan")}}])
    assert r.trajectories == 1  # c: free-form, null as in JSON
    assert [(x.field, x.reason) for x in r.rejected] == [
        ("outcome.reward", "must be a finite number, got nan"),
        ("steps[0].duration_ms", "must be a finite non-negative number, got inf")]


def _number_columns(table: pa.Schema) -> list[str]:
    return [f.name for f in table if pa.types.is_floating(f.type)
            or pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type)]


def test_the_arrow_doors_know_every_number_the_format_reads():
    """``arrow_values.unwritten`` lists the fields where a NaN must be kept to be rejected:
    every numeric or time column of the schema that the record reader refuses NaN in (else
    an Arrow door would store it as null where the reader refuses it)."""
    keys = [(k, {k: math.nan}) for k in _number_columns(schema.TRAJECTORIES)]
    keys += [(f"steps[0].{k}", {"steps": [{"kind": "tool", k: math.nan}]})
             for k in [*_number_columns(schema.STEPS), *STEP_ALIASES]]
    refused = []
    for path, fields in keys:
        rec = {"trajectory_id": "t", "task": "t", **fields}
        try:
            normalize(rec, b"{}", Context("t", 0))
        except InvalidArgument as e:
            refused.append(path)
            assert e.field == path
            assert [".".join(map(str, p)).replace("steps.0.", "steps[0].")
                    for p in unwritten(rec)] == [path]
    assert {"reward", "fork_step", "steps[0].index", "steps[0].latency_ms",
            "expires_at"} <= set(refused)
