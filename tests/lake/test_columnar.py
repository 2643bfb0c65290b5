"""The columnar door (lake/columnar.py) agrees with the per-row validator, row for row.

The oracle is the row path itself: a row of an Arrow batch read as JSON (the file readers'
conversion for ``KEEP``, the IngestArrow conversion for ``DROP``) through
``records.normalize_line``. Every row ``normalize_batch`` accepts must be accepted there
too, with the same trajectory row (but the hash), step rows and payloads; every other row
is left for that validator, so its error is the usual one.
"""

from __future__ import annotations

import math
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from ingest import ingest_paths
from lake import Lake, columnar
from lake.arrow_values import pylist
from lake.columnar import DROP, KEEP, WHITESPACE, normalize_batch
from lake.errors import InvalidArgument
from lake.records import Context, Record, normalize, normalize_line
from lake.row_log import read_wal_entry, wal_entry
from server import convert

CTX = Context("acme", 1_754_065_000_000_000, payload_limit=64, preview_chars=8)
EXAMPLES = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the row path, for comparison ------------------------------------------------------------

def row_path(batch: pa.RecordBatch, nulls: str, ctx: Context = CTX) -> list[Any]:
    """What the per-row door makes of each row: a Record or the error."""
    with warnings.catch_warnings():  # to_pylist warns of a map's repeated key: it keeps one
        warnings.simplefilter("ignore", UserWarning)
        return _row_path(batch, nulls, ctx)


def _row_path(batch: pa.RecordBatch, nulls: str, ctx: Context) -> list[Any]:
    # KEEP: as ingest/readers.py and ingest/runner.py: the row's value when ``plain``
    raws: list[tuple[bytes | None, str | None, Any]] = []
    if nulls == KEEP:
        objs, plain = pylist(batch)
        for obj in objs:
            try:
                raws.append((orjson.dumps(obj, option=orjson.OPT_NAIVE_UTC), None,
                             obj if plain else None))
            except TypeError as e:
                raws.append((None, str(e), None))
    else:
        raws = [(raw, why, obj) for raw, obj, why in convert.ipc_rows(batch)]
    out: list[Any] = []
    for raw, why, obj in raws:
        if raw is None:
            out.append(why)
            continue
        try:
            out.append(normalize_line(raw, ctx) if obj is None else normalize(obj, raw, ctx))
        except InvalidArgument as e:
            out.append(e)
    return out


def stored_steps(rec: Record) -> list[dict]:
    table = rec.steps
    if isinstance(table, list):
        return table
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    return table.to_pylist()


def agree(batch: pa.RecordBatch, nulls: str, ctx: Context = CTX) -> Any:
    # not normalize_batch: its net (any error -> every row to the row path) would hide bugs
    res = columnar._normalize(batch, ctx, nulls)
    assert sorted(res.rows + res.rest) == list(range(batch.num_rows))
    want = row_path(batch, nulls, ctx)
    for row, rec in zip(res.rows, res.records, strict=True):
        w = want[row]
        assert isinstance(w, Record), f"row {row}: columnar accepted, row path says {w!r}"
        got = {k: v for k, v in rec.trajectory.items() if k != "_record_hash"}
        exp = {k: v for k, v in w.trajectory.items() if k != "_record_hash"}
        assert got == exp, {k: (got[k], exp[k]) for k in exp if got.get(k) != exp[k]}
        assert stored_steps(rec) == w.steps
        assert rec.payloads == w.payloads
    assert res.steps.num_rows == sum(r.trajectory["n_steps"] for r in res.records)
    return res


# -- random batches: a type per column, then values of it (many of them wrong) --------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
EDGY = st.sampled_from(["", " ", "\u3000", "a\x1fb", 'q"uote', "back\\slash", "é", "\n",
                        "x" * 80, "é" * 30, "llm", "tool"])
STR = st.one_of(TEXT, EDGY)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, 1.0, 2.0**31, 2.0**63, -1.0, 0.5, 1e300]))
INTS = st.one_of(st.integers(-5, 2**40), st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, -1]))
ISO = st.one_of(
    st.sampled_from(["2025-08-01T16:16:37Z", "2025-08-01 16:16:37.5", "2024-02-29T00:00:00",
                     "2023-02-29T00:00:00", "1969-12-31T23:59:59Z", "2025-13-01T00:00:00",
                     "2025-08-01T16:16:37+02:00", "2025-08-01", "9999-12-31T23:59:59.999999",
                     "2025-08-01T24:00:00", "0000-01-01T00:00:00", "nope", ""]),
    st.datetimes(datetime(1900, 1, 1), datetime(9999, 12, 31)).map(
        lambda d: d.isoformat(sep=" " if d.microsecond % 2 else "T")))
TIMES = st.datetimes(datetime(1960, 1, 1), datetime(9999, 12, 31))

# name -> (arrow type, value strategy)
KINDS: dict[str, tuple[pa.DataType, st.SearchStrategy]] = {
    "str": (pa.string(), STR),
    "large_str": (pa.large_string(), STR),
    "int64": (pa.int64(), INTS),
    "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float64": (pa.float64(), FLOATS),
    "float32": (pa.float32(), st.floats(width=32)),
    "bool": (pa.bool_(), st.booleans()),
    "null": (pa.null(), st.none()),
    "ts_us": (pa.timestamp("us", "UTC"), TIMES),
    "ts_ms_naive": (pa.timestamp("ms"), TIMES.map(lambda d: d.replace(microsecond=0))),
    "ts_s_berlin": (pa.timestamp("s", "Europe/Berlin"), TIMES.map(
        lambda d: d.replace(microsecond=0, tzinfo=UTC))),
    "iso": (pa.string(), ISO),
    "list_str": (pa.list_(pa.string()), st.lists(st.one_of(STR, st.none()), max_size=3)),
    "list_int": (pa.list_(pa.int64()), st.lists(INTS, max_size=3)),
    "struct": (pa.struct([("a", pa.string()), ("b", pa.float64())]),
               st.fixed_dictionaries({"a": st.one_of(STR, st.none()),
                                      "b": st.one_of(FLOATS, st.none())})),
    "map": (pa.map_(pa.string(), pa.float64()),
            st.lists(st.tuples(st.sampled_from(["j", "k", "_fields"]),
                               st.one_of(FLOATS, st.none())), max_size=3)),
    "json_obj": (pa.string(), st.dictionaries(st.sampled_from(["a", "tokens", "_fields"]),
                                              st.one_of(INTS, STR, st.none()), max_size=3)
                 .map(lambda d: orjson.dumps(d).decode())),
    "binary": (pa.binary(), st.binary(max_size=3)),
}
STEP_TYPES = {
    "index": ["int64", "int32", "float64", "str", "null", "uint64"],
    "kind": ["str", "large_str", "int64", "null"],
    "step_id": ["str", "int64", "null"], "parent_step_id": ["str", "null"],
    "name": ["str", "bool"], "actor": ["str"],
    "input": ["str", "int64", "float64", "struct", "list_str", "bool", "ts_us"],
    "output": ["str", "large_str", "float64", "map"],
    "error": ["str", "int64", "null"],
    "started_at": ["ts_us", "ts_ms_naive", "ts_s_berlin", "iso", "int64", "float64", "str",
                   "bool"],
    "duration_ms": ["float64", "int64", "float32", "str"],
    "latency_ms": ["float64", "int64", "str"],
    "tokens_in": ["int64", "float64", "uint64", "bool", "str"],
    "prompt_tokens": ["int64", "float64"], "input_tokens": ["int64", "str"],
    "tokens_out": ["int64", "int32"], "completion_tokens": ["int64", "float64"],
    "cost_usd": ["float64", "int64", "float32"],
    "attributes": ["struct", "map", "json_obj", "str", "null"],
    "is_error": ["bool", "int64"],
    "extra": ["str", "int64", "float64", "bool", "null", "ts_us", "list_int", "struct", "map",
              "binary"],
    "_fields": ["str", "int64"], "a": ["int64", "float64"],
}
TOP_TYPES = {
    "trajectory_id": ["str", "large_str", "int64"],
    "task": ["str", "large_str", "int64", "null"],
    "tenant": ["str", "null", "int64"],
    "agent": ["str", "null", "bool"], "model": ["str"], "session_id": ["str", "int64"],
    "status": ["str", "null"], "fork_step": ["int64", "float64", "str"],
    "started_at": ["ts_us", "iso", "int64", "float64", "ts_ms_naive"],
    "ended_at": ["ts_us", "iso"], "expires_at": ["ts_us", "ts_s_berlin", "float64"],
    "tokens_in": ["int64", "float64", "uint64"], "tokens_out": ["int64"],
    "cost_usd": ["float64", "int64", "str"], "tags": ["list_str", "str", "list_int"],
    "meta": ["struct", "json_obj", "str", "map", "null"],
    "success": ["bool", "int64"], "reward": ["float64", "int64", "str"],
    "scores": ["map", "struct", "str"],
    "source": ["str", "int64", "float64", "null", "struct", "binary"], "meta2": ["list_int"],
}
STATUS = st.sampled_from(["running", "succeeded", "failed", "abandoned"] * 3 + ["done", ""])
OUTCOME_FIELDS = {"success": ["bool", "int64", "null"], "reward": ["float64", "int64", "str"],
                  "scores": ["map", "struct", "str", "null"], "judge": ["float64", "str"]}


@st.composite
def batches(draw: Any, clean: bool = False) -> pa.RecordBatch:
    """A batch of records: each column a type, each value of it or null. ``clean``: the
    common, valid shapes only (text, numbers, UTC times; ids and tasks given)."""
    def pick(options: dict[str, list[str]], required: tuple[str, ...]) -> dict[str, str]:
        names = [k for k in options if k in required or draw(st.booleans())]
        return {k: options[k][0] if clean or draw(st.integers(0, 9)) else
                draw(st.sampled_from(options[k])) for k in names}  # mostly the usual type

    top = pick(TOP_TYPES, ("trajectory_id", "task") if clean or draw(st.integers(0, 9)) else ())
    if clean:
        top = {k: v for k, v in top.items() if k not in ("tenant", "status", "tags")}
    step_fields = pick(STEP_TYPES, ("kind",))
    if clean:
        step_fields = {k: v for k, v in step_fields.items()
                       if k not in ("index", "error", "attributes", "_fields", "a")}
    outcome = pick(OUTCOME_FIELDS, ()) if draw(st.booleans()) else None
    n = draw(st.integers(1, 5))

    def value(kind: str, name: str, nullable: bool = True) -> Any:
        t, strat = KINDS[kind]
        if name == "status" and kind == "str":
            strat = STATUS
        if name == "tenant" and kind == "str":
            strat = st.sampled_from(["acme", "acme", "acme", "other", ""])
        if name == "kind" and kind == "str" and clean:
            strat = st.sampled_from(["llm", "tool", "user"])
        if clean and name in ("trajectory_id", "task"):
            strat = st.text(min_size=1, max_size=8).filter(str.strip)
        if clean and kind in ("int64",) and name != "source":
            strat = st.integers(0, 2**40)
        if clean and kind == "float64":
            strat = st.floats(0, 1e9)
        if clean and kind == "ts_us":
            strat = st.datetimes(datetime(1971, 1, 1), datetime(9000, 1, 1))
        if clean and kind == "map":  # a repeated key is left to the row path
            strat = st.dictionaries(st.sampled_from(["j", "k"]), st.floats(0, 1)).map(
                lambda d: list(d.items()))
        if nullable and not pa.types.is_null(t) and draw(st.integers(0, 4)) == 0:
            return None
        if not clean and name in ("trajectory_id", "task") and draw(st.integers(0, 3)):
            strat = st.text(min_size=1, max_size=8).filter(str.strip) if kind == "str" else strat
        v = draw(strat)
        return v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None \
            and getattr(t, "tz", None) else v

    def column(kind: str, values: list) -> pa.Array:
        t = KINDS[kind][0]
        return pa.array(values, t)

    cols, names = [], []
    for name, kind in top.items():
        required = clean and name in ("trajectory_id", "task")
        cols.append(column(kind, [value(kind, name, not required) for _ in range(n)]))
        names.append(name)
    if outcome is not None:
        fields = {k: [value(kind, k) for _ in range(n)] for k, kind in outcome.items()}
        arrays = [column(outcome[k], v) for k, v in fields.items()]
        valid = [draw(st.integers(0, 5)) > 0 for _ in range(n)]
        cols.append(pa.StructArray.from_arrays(arrays, names=list(fields),
                                               mask=pa.array([not x for x in valid])))
        names.append("outcome")
    lengths = [draw(st.integers(0, 4)) for _ in range(n)]
    m = sum(lengths)
    step_cols = [column(kind, [value(kind, k, not (clean and k == "kind")) for _ in range(m)])
                 for k, kind in step_fields.items()]
    null_steps = [not clean and draw(st.integers(0, 30)) == 0 for _ in range(m)]
    structs = pa.StructArray.from_arrays(step_cols, names=list(step_fields),
                                         mask=pa.array(null_steps, pa.bool_()))
    offsets = [0]
    for x in lengths:
        offsets.append(offsets[-1] + x)
    null_lists = [not clean and draw(st.integers(0, 8)) == 0 for _ in range(n)]
    steps = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), structs,
                                     mask=pa.array(null_lists, pa.bool_()))
    cols.append(steps)
    names.append("steps")
    batch = pa.RecordBatch.from_arrays(cols, names=names)
    if draw(st.booleans()):  # a slice: offsets not at zero
        start = draw(st.integers(0, n - 1))
        batch = batch.slice(start, draw(st.integers(1, n - start)))
    note(str(batch.to_pylist()))
    return batch


@EXAMPLES
@given(batches(), st.sampled_from([KEEP, DROP]))
def test_columnar_and_row_validation_agree(batch, nulls):
    res = agree(batch, nulls)
    event(f"{nulls}: {'all' if not res.rest else 'some' if res.rows else 'none'} columnar")


@EXAMPLES
@given(batches(clean=True), st.sampled_from([KEEP, DROP]))
def test_the_common_shapes_are_all_validated_columnar(batch, nulls):
    res = agree(batch, nulls)
    want = row_path(batch, nulls)
    missed = [i for i in res.rest if isinstance(want[i], Record)]
    assert not missed, f"valid rows left to the row path: {[want[i] for i in missed]}"


def test_whitespace_is_what_str_strip_strips():
    assert WHITESPACE == "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


# -- the synthetic benchmark data and our own record shapes ---------------------------------

@pytest.mark.parametrize("nulls", [KEEP, DROP])
def test_dev_records_are_validated_columnar(dev_records, nulls):
    sample = dev_records[:60]
    # as the Python client sends them (meta as JSON text), or as a Parquet file holds them
    table = (convert.records_to_arrow(sample) if nulls == DROP
             else pa.Table.from_pylist(sample))
    res = agree(table.combine_chunks().to_batches()[0], nulls)
    assert not res.rest


def test_synthetic_parquet_is_validated_columnar(tmp_path):
    from benchmarks import synth

    path = tmp_path / "s.parquet"
    synth.write_parquet(path, 3000, 11)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=40):
        for nulls in (KEEP, DROP):
            assert not agree(batch, nulls, Context("default", 1)).rest


# -- the record hash and the log entry ---------------------------------------------------------

RECORD = {"trajectory_id": "t1", "task": "refund order 12", "agent": "a",
          "started_at": datetime(2025, 8, 1, tzinfo=UTC),
          "outcome": {"success": True, "reward": 0.5, "scores": [("judge", 0.9)]},
          "meta": {"team": "x"}, "source": "s",
          "steps": [{"kind": "llm", "output": "hi", "tokens_in": 5, "latency_ms": 1.5},
                    {"kind": "tool", "name": "get", "input": "{\"id\": 1}", "output": "x" * 100,
                     "is_error": True}]}
SCHEMA = pa.schema([
    ("trajectory_id", pa.string()), ("task", pa.string()), ("agent", pa.string()),
    ("started_at", pa.timestamp("us", "UTC")),
    ("outcome", pa.struct([("success", pa.bool_()), ("reward", pa.float64()),
                           ("scores", pa.map_(pa.string(), pa.float64()))])),
    ("meta", pa.struct([("team", pa.string())])), ("source", pa.string()),
    ("steps", pa.list_(pa.struct([("kind", pa.string()), ("name", pa.string()),
                                  ("input", pa.string()), ("output", pa.string()),
                                  ("tokens_in", pa.int64()), ("latency_ms", pa.float64()),
                                  ("is_error", pa.bool_())])))])


def one(record: dict, nulls: str = KEEP, ctx: Context = CTX) -> Record:
    batch = pa.Table.from_pylist([record], schema=SCHEMA).to_batches()[0]
    res = agree(batch, nulls, ctx)
    assert res.rows == [0]
    wal_entry(res.records, res.steps)  # sets the hash
    return res.records[0]


def test_hash_is_stable_and_follows_every_stored_value():
    a, b = one(RECORD), one(RECORD)
    assert a.trajectory["_record_hash"] == b.trajectory["_record_hash"]
    assert len(a.trajectory["_record_hash"]) == 24
    assert one(RECORD, DROP).trajectory["_record_hash"] != a.trajectory["_record_hash"]  # nulls
    later = Context(CTX.tenant, CTX.ingested_at_us + 1, 64, 8)
    assert one(RECORD, ctx=later).trajectory["_record_hash"] == a.trajectory["_record_hash"]
    for change in ({"task": "refund order 13"},
                   {"steps": [{**RECORD["steps"][0], "output": "hj"}, RECORD["steps"][1]]},
                   {"steps": [{**RECORD["steps"][0], "tokens_in": 6}, RECORD["steps"][1]]},
                   {"steps": [{**RECORD["steps"][0], "output": None}, RECORD["steps"][1]]},
                   {"steps": [{**RECORD["steps"][0], "output": ""}, RECORD["steps"][1]]},
                   {"steps": RECORD["steps"][:1]}, {"meta": {"team": "y"}}):
        assert one({**RECORD, **change}).trajectory["_record_hash"] != \
            a.trajectory["_record_hash"], change


def test_wal_entry_reads_back_the_same_records():
    batch = pa.Table.from_pylist([RECORD, {**RECORD, "trajectory_id": "t2"}],
                                 schema=SCHEMA).to_batches()[0]
    res = normalize_batch(batch, CTX, KEEP)
    entry = wal_entry(res.records, res.steps)
    back = read_wal_entry(bytes(entry))
    assert [r.trajectory for r in back] == [r.trajectory for r in res.records]
    assert [r.payloads for r in back] == [r.payloads for r in res.records]
    assert all(x.steps.equals(y.steps) for x, y in zip(back, res.records, strict=True))
    assert back[0].payloads and back[0].trajectory["scores"] == [("judge", 0.9)]
    # records with row steps (from the per-row validator) make the same entry
    as_json = {**RECORD, "started_at": "2025-08-01T00:00:00Z",
               "outcome": {"success": True, "scores": {"judge": 0.9}}}
    rows = [normalize_line(orjson.dumps(as_json), CTX)]
    mixed = read_wal_entry(bytes(wal_entry(rows)))
    assert stored_steps(mixed[0]) == rows[0].steps


def test_a_logged_batch_is_replayed_after_a_crash(tmp_path):
    big = {**RECORD, "steps": [RECORD["steps"][0], {**RECORD["steps"][1], "output": "y" * 2000}]}
    batch = pa.Table.from_pylist([big], schema=SCHEMA).to_batches()[0]
    lake = Lake.open(str(tmp_path / "lake"), payload_limit=1024)
    ctx = lake.context()
    res = normalize_batch(batch, ctx, KEEP)
    entry = wal_entry(res.records, res.steps)
    header = orjson.dumps({"op": "rows", "tenant": ctx.tenant, "at": ctx.ingested_at_us,
                           "limit": ctx.payload_limit, "preview": ctx.preview_chars})
    lake.writer.wal.append(header + b"\n" + entry)  # logged, never committed: a crash
    lake.close()
    lake = Lake.open(str(tmp_path / "lake"), payload_limit=1024)
    try:
        got = lake.sql("select trajectory_id, n_steps from trajectories").fetchall()
        assert got == [("t1", 2)]
        assert lake.count("steps") == 2 and lake.count("payloads") == 1
        stored = lake.store.dataset("trajectories").to_table(
            columns=["_record_hash"]).column(0).to_pylist()
        assert stored == [res.records[0].trajectory["_record_hash"]]
    finally:
        lake.close()


# -- through the doors ---------------------------------------------------------------------

def test_parquet_rejects_and_lands_like_the_row_path(tmp_path):
    good = [{**RECORD, "trajectory_id": f"t{i}"} for i in range(5)]
    bad = [{**RECORD, "trajectory_id": "b1", "task": " "},
           {**RECORD, "trajectory_id": "b2",
            "steps": [{"kind": "llm", "tokens_in": -3}]},
           {**RECORD, "trajectory_id": None}]  # no id: valid, its id is its JSON's hash
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist(good[:2] + bad + good[2:], schema=SCHEMA), path)
    lake = Lake.open(str(tmp_path / "lake"))
    try:
        s = ingest_paths(lake, [str(path)])
        assert (s.trajectories, s.rejected) == (6, 2)
        lines = [orjson.loads(x) for x in Path(s.quarantine).read_bytes().splitlines()]
        assert [(x["location"].rsplit(":", 1)[1], x["field"]) for x in lines] == \
            [("row 3", "task"), ("row 4", "steps[0].tokens_in")]
        assert lines[1]["reason"] == "must be between 0 and 9223372036854775807, got -3"
        ids = {r[0] for r in lake.sql("select trajectory_id from trajectories").fetchall()}
        assert {f"t{i}" for i in range(5)} <= ids and any(i.startswith("h-") for i in ids)
        v = len(lake.versions())
        s = ingest_paths(lake, [str(path)])  # again: a no-op
        assert len(lake.versions()) == v and lake.count("trajectories") == 6
    finally:
        lake.close()


NONFINITE = [  # (record, the field its NaN / infinity is rejected at, the reason)
    ({"steps": [{"kind": "llm", "latency_ms": math.nan, "tokens_in": 3}]},
     "steps[0].latency_ms", "must be a finite non-negative number, got nan"),
    ({"outcome": {"success": True, "reward": math.inf, "scores": None}},
     "outcome.reward", "must be a finite number, got inf"),
    ({"outcome": {"success": True, "reward": 0.5, "scores": [("acc", math.nan)]}},
     "outcome.scores.acc", "must be a finite number, got nan"),
]


@pytest.mark.parametrize("nulls", [KEEP, DROP])
def test_nan_and_infinity_where_a_number_is_wanted_are_rejected_by_name(nulls):
    """Not read as null (as their JSON text writes them): the row path rejects them with
    the field path, as every door does; the other rows land."""
    rows = [RECORD] + [{**RECORD, "trajectory_id": f"n{i}", **change}
                       for i, (change, _, _) in enumerate(NONFINITE)]
    batch = pa.Table.from_pylist(rows, schema=SCHEMA).to_batches()[0]
    res = agree(batch, nulls)
    assert res.rows == [0] and res.rest == [1, 2, 3]
    got = row_path(batch, nulls)
    assert [(e.field, e.message) for e in got[1:]] == [(f, m) for _, f, m in NONFINITE]


@pytest.mark.parametrize("nulls", [KEEP, DROP])
def test_nan_in_free_form_fields_is_null_as_in_json(nulls):
    """``meta``, unknown fields, ``attributes`` and text keep a NaN as the null JSON writes;
    a NaN the record does not read (a top-level ``reward`` under ``outcome.reward``) is
    ignored, as JSON's null is."""
    schema = pa.schema([("trajectory_id", pa.string()), ("task", pa.string()),
                        ("reward", pa.float64()), ("x", pa.float64()),
                        ("outcome", pa.struct([("reward", pa.float64())])),
                        ("meta", pa.struct([("m", pa.float64())])),
                        ("steps", pa.list_(pa.struct([("kind", pa.string()),
                                                      ("output", pa.float64()),
                                                      ("extra", pa.float64())])))])
    batch = pa.Table.from_pylist([
        {"trajectory_id": "t", "task": "x", "reward": math.nan, "x": math.inf,
         "outcome": {"reward": 1.0}, "meta": {"m": math.nan},
         "steps": [{"kind": "llm", "output": math.nan, "extra": -math.inf}]}],
        schema=schema).to_batches()[0]
    res = agree(batch, nulls)
    assert res.rows == [0]
    t = res.records[0].trajectory
    assert t["reward"] == 1.0 and orjson.loads(t["meta"]) == {"m": None, "x": None}
    assert stored_steps(res.records[0])[0]["output"] is None
    assert orjson.loads(stored_steps(res.records[0])[0]["attributes"]) == {"extra": None}



def test_a_sparse_outcome_field_is_absent_where_null_under_drop():
    """An outcome child is a column: under DROP (IngestArrow) its null is "no value here",
    as for a top-level field, so the row lands as if the key were not written."""
    batch = pa.Table.from_pylist([
        {"trajectory_id": "t0", "task": "do x", "scores": {"q": 1.0},
         "outcome": {"success": False, "why": None, "scores": None}},
        {"trajectory_id": "t1", "task": "do x", "scores": None,
         "outcome": {"success": True, "why": "done", "scores": {"q": 0.5}}},
    ]).to_batches()[0]
    res = agree(batch, DROP)
    assert res.rows == [0, 1]
    t0, t1 = (r.trajectory for r in res.records)
    assert t0["meta"] is None and t0["scores"] == [("q", 1.0)]  # the top-level scores
    assert orjson.loads(t1["meta"]) == {"outcome.why": "done"}
    assert agree(batch, KEEP).rows  # KEEP reads the null as set: `outcome.why: null`

# -- durability: a killed Parquet ingest keeps every acknowledged row --------------------------

_CHILD = """
import sys
from ingest import ingest_paths
from lake import Lake
lake = Lake.open(sys.argv[1], flush_rows=400, flush_interval_ms=5)
ingest_paths(lake, [sys.argv[2]], on_ack=lambda a: print(a["through"], flush=True))
lake.close()
print("done", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_sigkill_keeps_acknowledged_parquet_rows(tmp_path, delay):
    import os
    import signal
    import subprocess
    import sys
    import time

    from ingest import readers

    n = 3 * readers.BATCH_ROWS
    recs = [{**RECORD, "trajectory_id": f"k{i:05d}",
             "steps": RECORD["steps"] * (1 + i % 3)} for i in range(n)]
    for r in recs:  # indexes: positions (no duplicates)
        r["steps"] = [dict(s) for s in r["steps"]]
    path = tmp_path / "k.parquet"
    pq.write_table(pa.Table.from_pylist(recs, schema=SCHEMA), path, row_group_size=500)
    root = str(tmp_path / "lake")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, root, str(path)],
                             stdout=subprocess.PIPE, text=True, env=env)
    first = child.stdout.readline()  # the first chunk is durable
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    acked = [first.strip(), *(x.strip() for x in child.stdout.read().splitlines())]
    child.wait()
    child.stdout.close()
    through = max(int(a.rsplit("row ", 1)[1]) for a in acked if "row " in a)
    lake = Lake.open(root)
    try:
        got = dict(lake.sql("select trajectory_id, n_steps from trajectories").fetchall())
        want = {r["trajectory_id"]: len(r["steps"]) for r in recs[:through]}
        assert {k: got.get(k) for k in want} == want
        steps = lake.sql("select count(*), count(distinct (trajectory_id, index)) "
                         "from steps").fetchall()[0]
        assert steps[0] == steps[1] == sum(got.values())
    finally:
        lake.close()


def test_a_parquet_file_lands_the_same_rows_either_way(tmp_path, dev_records):
    recs = [{**r, "steps": r.get("steps") or []} for r in dev_records[:40]]
    path = tmp_path / "dev.parquet"
    pq.write_table(pa.Table.from_pylist(recs), path, row_group_size=16)
    tables = []
    for columnar_ in (True, False):
        lake = Lake.open(str(tmp_path / f"lake-{columnar_}"))
        try:
            s = ingest_paths(lake, [str(path)], columnar=columnar_)
            assert s.trajectories == 40 and not s.rejected
            tables.append({
                name: lake.store.dataset(name).to_table().drop_columns(
                    [c for c in ("_record_hash", "ingested_at") if c in
                     lake.store.dataset(name).schema.names]).sort_by(
                    [("trajectory_id", "ascending")] + ([("index", "ascending")]
                                                        if name == "steps" else []))
                for name in ("trajectories", "steps")})
        finally:
            lake.close()
    assert tables[0]["trajectories"].equals(tables[1]["trajectories"])
    assert tables[0]["steps"].equals(tables[1]["steps"])


def test_steps_of_columnar_records_are_slices_of_one_table() -> None:
    """A record's steps are read from its batch's table when asked for; the writer and the
    log take neighbouring records' steps as one slice of it, not one per record."""
    from lake.row_log import steps_of

    rows = [{"trajectory_id": f"t{i}", "task": f"task {i}",
             "steps": [{"kind": "tool", "name": "lookup", "output": str(j)} for j in range(i + 1)]}
            for i in range(4)]
    out = normalize_batch(pa.RecordBatch.from_pylist(rows), Context("default", 0))
    assert [r.steps.num_rows for r in out.records] == [1, 2, 3, 4]
    assert out.records[2].steps.column("output").to_pylist() == ["0", "1", "2"]
    joined = steps_of(out.records[1:])
    assert joined.num_rows == 9 and joined.column("trajectory_id")[0].as_py() == "t1"
    assert joined.column(0).num_chunks == 1


@pytest.mark.parametrize(("raw", "said"), [
    (b'{"trajectory_id": "l1", "task": "caf\xe9 order"}',
     "the line is not UTF-8 (byte 0xe9 at column 37): re-encode the file as UTF-8"),
    (b'\xef\xbb\xbf{"task": "t"}', "the line starts with a UTF-8 byte order mark"),
    (b'{"task": "t"} {"task": "u"}', "not valid JSON (unexpected content after document"),
])
def test_a_line_that_is_no_json_says_why(raw, said, tmp_path, caplog):
    """Latin-1 text and a BOM inside a file read as JSON mistakes that are not there: they
    are named, with what to do; and the batch's fall-back to row by row is no warning."""
    with pytest.raises(InvalidArgument, match=re.escape(said)):
        normalize_line(raw, Context("t", 0))
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"trajectory_id": "ok", "task": "fine"}\n' + raw + b"\n")  # mid-file
    with Lake.open(str(tmp_path / "lake")) as lake, caplog.at_level("WARNING"):
        summary = ingest_paths(lake, [str(path)])
    assert summary.rejected == 1 and not [r for r in caplog.records if "columnar" in r.msg]


def test_step_costs_that_add_up_to_infinity_refuse_the_row_without_a_warning():
    """Found by hypothesis in CI: numpy warned (an error under pytest) when a run's step
    costs summed past the largest float; the row is refused, as on the row path."""
    steps = [{"index": i, "kind": "tool", "cost_usd": c}
             for i, c in enumerate([1e300, 1.797693124862316e308])]
    batch = pa.RecordBatch.from_pylist([{"trajectory_id": "r", "task": "t", "steps": steps},
                                        {"trajectory_id": "ok", "task": "t", "steps": []}])
    res = agree(batch, KEEP)
    assert res.rest == [0] and res.rows == [1]
