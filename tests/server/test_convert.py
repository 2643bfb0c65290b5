"""Round trips through server/convert.py: rows <-> messages <-> Arrow, records <-> messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake.errors import InvalidArgument
from lake.records import Context, normalize_line
from lake.schema import STATUSES, STEPS, TRAJECTORIES, public_columns
from proto.contextlake.v1 import lake_pb2 as pb
from server import convert

EXAMPLES = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), text,
                        st.floats(allow_nan=False, allow_infinity=False))
json_object = st.dictionaries(text, st.one_of(json_scalar, st.lists(json_scalar, max_size=3)),
                              max_size=3)
times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31),
                     timezones=st.just(UTC))


# -- rows (lake/schema.py shape) <-> messages <-> Arrow --------------------------------------

def _column(f: pa.Field) -> st.SearchStrategy:
    t = f.type
    if pa.types.is_timestamp(t):
        s: st.SearchStrategy = st.datetimes(timezones=st.just(UTC))
    elif pa.types.is_map(t):
        s = st.dictionaries(text, st.floats(allow_nan=False), min_size=1, max_size=3)
    elif pa.types.is_list(t):
        s = st.lists(text, min_size=1, max_size=3)
    elif f.name == "status":
        s = st.sampled_from(STATUSES)
    elif f.name in ("meta", "attributes"):
        s = json_object.map(lambda d: orjson.dumps(d).decode())
    elif pa.types.is_string(t):
        s = text
    elif pa.types.is_int32(t):
        s = st.integers(-(2**31), 2**31 - 1)
    elif pa.types.is_int64(t):
        s = st.integers(-(2**63), 2**63 - 1)
    elif pa.types.is_floating(t):
        s = st.floats(allow_nan=False)
    else:
        assert pa.types.is_boolean(t), f"no strategy for {f}: extend the test"
        s = st.booleans()
    return st.one_of(st.none(), s) if f.nullable else s


def _rows(schema: pa.Schema, skip: tuple[str, ...] = ()) -> st.SearchStrategy:
    return st.fixed_dictionaries({f.name: _column(f) for f in schema
                                  if not f.name.startswith("_") and f.name not in skip})


step_rows = _rows(STEPS, ("tenant", "trajectory_id"))
trajectory_rows = st.builds(lambda row, steps: {**row, "steps": steps},
                            _rows(TRAJECTORIES), st.lists(step_rows, max_size=3))


@EXAMPLES
@given(trajectory_rows)
def test_row_message_row(row):
    msg = convert.trajectory_to_pb(row)
    again = convert.trajectory_from_pb(pb.Trajectory.FromString(msg.SerializeToString()))
    assert again == row


@EXAMPLES
@given(st.lists(_rows(TRAJECTORIES), min_size=1, max_size=4))
def test_arrow_message_arrow(rows):
    schema = pa.schema([TRAJECTORIES.field(c) for c in public_columns(TRAJECTORIES)])
    table = pa.Table.from_pylist(rows, schema=schema)
    msgs = [convert.trajectory_to_pb(r) for r in table.to_pylist(maps_as_pydicts="lossy")]
    back = [{k: v for k, v in convert.trajectory_from_pb(m).items() if k != "steps"}
            for m in msgs]
    again = pa.Table.from_pylist(back, schema=schema)  # a map's order is not kept: compare dicts
    assert again.to_pylist(maps_as_pydicts="strict") == table.to_pylist(maps_as_pydicts="strict")


@EXAMPLES
@given(text, st.lists(step_rows, max_size=3))
def test_stream_request_bytes_are_the_serialized_message(tid, rows):
    want = pb.StreamStepsRequest(trajectory_id=tid, steps=[convert.step_to_pb(r) for r in rows])
    got = convert.stream_request(convert.stream_head(tid), rows)
    assert got == want.SerializeToString()
    assert pb.StreamStepsRequest.FromString(got) == want


@pytest.mark.parametrize("size", [0, 100, 127, 128, 16_383, 16_384, 3_000_000])
def test_stream_request_steps_of_any_length(size):
    row = {"index": 0, "kind": "tool", "input": "x" * size}
    got = convert.stream_request(convert.stream_head("t"), [row, row])
    msg = pb.StreamStepsRequest.FromString(got)
    assert msg.trajectory_id == "t" and [s.input for s in msg.steps] == ["x" * size] * 2
    assert got == pb.StreamStepsRequest(trajectory_id="t", steps=[convert.step_to_pb(row)] * 2
                                        ).SerializeToString()


def _step_record_reference(msg: pb.Step) -> dict[str, Any]:
    """A step record the slow way: every field read by the schema-driven ``_record_row``."""
    row = {k: v for k, v in convert._record_row(msg, STEPS, "p").items() if v is not None}
    if row.get("kind") == "":
        del row["kind"]  # unset: left out, the same rejection as any missing kind
    if "started_at" in row:
        row["started_at"] = datetime.fromisoformat(row["started_at"])
    if "attributes" in row:
        row["attributes"] = orjson.loads(row["attributes"])
    return row


@EXAMPLES
@given(st.lists(step_rows, max_size=4))
def test_step_records_read_what_the_message_has(rows):
    msgs = [pb.Step.FromString(convert.step_to_pb(r).SerializeToString()) for r in rows]
    got = convert.step_records_from_pb(msgs)
    assert got == [_step_record_reference(m) for m in msgs]
    assert all("input_ref" not in r and "output_ref" not in r for r in got)  # read-only


@pytest.mark.parametrize("step, field", [
    (pb.Step(kind="tool", started_at_us=2**63 - 1), "steps[7].started_at_us"),
    (pb.Step(kind="tool", attributes="[1]"), "steps[7].attributes"),
])
def test_bad_streamed_step_names_its_position(step, field):
    with pytest.raises(InvalidArgument) as e:
        convert.step_records_from_pb([pb.Step(kind="tool"), step], offset=6)
    assert e.value.field == field


# -- interchange records -> lake rows -> messages -> records -> the same lake rows -------------

def _iso(dt: datetime) -> str:
    return dt.isoformat()


steps_in = st.fixed_dictionaries(
    {"kind": st.sampled_from(["llm", "tool", "user", "observation", "error", "custom"])},
    optional={"name": text, "input": st.one_of(text, json_object), "output": text,
              "error": text, "actor": text, "step_id": text, "parent_step_id": text,
              "started_at": times.map(_iso), "duration_ms": st.floats(0, 1e9),
              "tokens_in": st.integers(0, 2**40), "tokens_out": st.integers(0, 2**40),
              "cost_usd": st.floats(0, 1e6), "attributes": json_object})
records_in = st.fixed_dictionaries(
    {"trajectory_id": text.filter(str.strip), "task": text.filter(str.strip),
     "steps": st.lists(steps_in, max_size=4)},
    optional={"agent": text, "agent_version": text, "model": text, "session_id": text,
              "on_behalf_of": text, "parent_id": text, "fork_step": st.integers(0, 2**31 - 1),
              "status": st.sampled_from(STATUSES), "started_at": times.map(_iso),
              "ended_at": times.map(_iso), "expires_at": times.map(_iso),
              "tags": st.lists(text, max_size=3), "meta": json_object,
              "outcome": st.fixed_dictionaries({}, optional={
                  "success": st.booleans(), "reward": st.floats(-1e6, 1e6),
                  "scores": st.dictionaries(text, st.floats(-1, 1), max_size=3)})}).filter(
    lambda r: "ended_at" not in r or "started_at" not in r  # a run ends after it starts
    or datetime.fromisoformat(r["ended_at"]) >= datetime.fromisoformat(r["started_at"]))
CTX = Context("acme", 1_700_000_000_000_000)


def _stored(record: dict[str, Any]) -> dict[str, Any]:
    """What the lake stores for a record (an empty scores map or tag list is no value)."""
    rec = normalize_line(orjson.dumps(record), CTX)
    traj = {k: v for k, v in rec.trajectory.items() if k != "_record_hash"}
    traj["scores"] = dict(traj["scores"]) if traj["scores"] else None  # a map has no order
    traj["tags"] = traj["tags"] or None
    return {**traj, "steps": rec.steps}


@EXAMPLES
@given(records_in)
def test_record_message_record_stores_the_same(record):
    stored = _stored(record)
    msg = convert.trajectory_to_pb(stored)
    again = convert.record_from_pb(pb.Trajectory.FromString(msg.SerializeToString()))
    assert _stored(again) == stored


@EXAMPLES
@given(st.lists(records_in, min_size=1, max_size=4))
def test_records_through_arrow_ipc_store_the_same(records):
    ipc = convert.arrow_to_ipc(convert.records_to_arrow(records))
    items = convert.ipc_records(ipc)
    assert [why for _, _, why in items] == [None] * len(records)
    assert [_stored(orjson.loads(raw)) for raw, _, _ in items] == [_stored(r) for r in records]


# -- refusals name the field -------------------------------------------------------------------

def test_unknown_status_number_names_the_field():
    with pytest.raises(InvalidArgument) as e:
        convert.status_name(17, "filter.status[0]")
    assert e.value.field == "filter.status[0]" and "17" in e.value.message
    msg = pb.Trajectory(trajectory_id="t", task="x")
    msg.status = 9  # open enum: the number survives the wire
    with pytest.raises(InvalidArgument) as e:
        convert.record_from_pb(pb.Trajectory.FromString(msg.SerializeToString()))
    assert e.value.field == "trajectory.status"


@pytest.mark.parametrize("change, field", [
    (lambda m: setattr(m, "meta", "[1]"), "trajectory.meta"),
    (lambda m: setattr(m, "meta", "{nope"), "trajectory.meta"),
    (lambda m: m.steps.add(kind="tool", attributes="3"), "trajectory.steps[0].attributes"),
    (lambda m: setattr(m, "started_at_us", 2**63 - 1), "trajectory.started_at_us"),
    (lambda m: m.steps.add(kind="tool", started_at_us=-(2**62)),
     "trajectory.steps[0].started_at_us"),
])
def test_bad_message_fields_name_their_path(change, field):
    msg = pb.Trajectory(trajectory_id="t", task="x")
    change(msg)
    with pytest.raises(InvalidArgument) as e:
        convert.record_from_pb(msg)
    assert e.value.field == field


def test_read_only_fields_are_not_taken_from_a_message():
    msg = pb.Trajectory(trajectory_id="t", task="x", tenant="other", n_steps=99,
                        ingested_at_us=2**62)
    msg.steps.add(kind="tool", input_ref="abc")
    record = convert.record_from_pb(msg)
    assert "tenant" not in record and "n_steps" not in record and "ingested_at" not in record
    assert record["steps"] == [{"kind": "tool"}]


@pytest.mark.parametrize("data", [b"", b"garbage", b"ARROW1" + b"\0" * 30])
def test_unreadable_arrow_is_refused_whole(data):
    with pytest.raises(InvalidArgument) as e:
        convert.ipc_records(data)
    assert e.value.field == "arrow_ipc"


def test_page_tokens_round_trip_and_garbage_is_refused():
    assert convert.parse_page_token(convert.page_token(7, "run/é")) == (7, "run/é")
    for bad in ("x", "eyJ2IjoxfQ==", "!!!"):
        with pytest.raises(InvalidArgument) as e:
            convert.parse_page_token(bad)
        assert e.value.field == "page_token"
