"""Acceptance (properties): any JSON value in any field is either rejected naming the field,
or accepted exactly as docs/format.md says. Never another exception, never half a record.

The oracle below restates the documented per-field rules independently of
``lake/records.py``; for a record it computes the set of field paths that break a rule
and, when there are none, every column of the rows the record must become. The
implementation must reject exactly the records with a broken rule (naming one of the
broken paths) and turn the others into exactly those rows.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from ingest import Quarantine, ingest_paths
from lake import InvalidArgument, Lake, Settings
from lake.records import Context, normalize, normalize_line, task_hash

REPO = Path(__file__).resolve().parents[2]
CTX = Context("acme", 1_754_065_000_000_000)
MAX_US = 253402300799 * 1_000_000  # 9999-12-31T23:59:59Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATUSES = ("running", "succeeded", "failed", "abandoned")
DELETE = object()  # a mutation that removes the field

TOP_FIELDS = ("trajectory_id task agent agent_version model session_id on_behalf_of parent_id "
              "fork_step status started_at ended_at outcome tokens_in tokens_out cost_usd tags "
              "meta expires_at steps tenant success reward scores").split()
OUTCOME_FIELDS = ("success", "reward", "scores")
STEP_FIELDS = ("index step_id parent_step_id kind name input output error actor started_at "
               "duration_ms tokens_in tokens_out cost_usd attributes").split()
ALIASES = {"latency_ms": "duration_ms", "tokens_prompt": "tokens_in", "prompt_tokens": "tokens_in",
           "input_tokens": "tokens_in", "tokens_completion": "tokens_out",
           "completion_tokens": "tokens_out", "output_tokens": "tokens_out"}


# -- the oracle: docs/format.md, restated ---------------------------------------------------

@dataclass
class Expect:
    bad: set[str] = field(default_factory=set)
    trajectory: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)


class _Check:
    """Reads fields by the documented rules, collecting every broken path."""

    def __init__(self) -> None:
        self.bad: set[str] = set()

    def fail(self, path: str) -> None:
        self.bad.add(path)

    def string(self, v: Any, path: str) -> str | None:
        if v is None or isinstance(v, str):
            return v
        return self.fail(path)

    def text(self, v: Any) -> str | None:  # any JSON: strings as they are, else JSON text
        return v if v is None or isinstance(v, str) else orjson.dumps(v).decode()

    def whole(self, v: Any, path: str, bits: int = 63) -> int | None:
        if v is None:
            return None
        if isinstance(v, float) and v == int(v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2 ** bits:
            return self.fail(path)
        return v

    def number(self, v: Any, path: str, nonneg: bool = False) -> float | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return self.fail(path)
        v = float(v)
        if not math.isfinite(v) or (nonneg and v < 0):
            return self.fail(path)
        return v

    def flag(self, v: Any, path: str) -> bool | None:
        return v if v is None or isinstance(v, bool) else self.fail(path)

    def time(self, v: Any, path: str) -> int | None:
        """ISO 8601 (no zone = UTC) or epoch seconds -> epoch microseconds, 1970..9999."""
        if v is None:
            return None
        if isinstance(v, str):
            try:
                dt = datetime.fromisoformat(v)
            except ValueError:
                return self.fail(path)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            us = (dt - EPOCH) // timedelta(microseconds=1)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            x = v * 1_000_000
            if isinstance(x, float) and not math.isfinite(x):
                return self.fail(path)
            us = int(x)
        else:
            return self.fail(path)
        return us if 0 <= us <= MAX_US else self.fail(path)


def _keep(bag: dict, key: str, val: Any) -> None:
    """Unknown fields are kept under their name; a name the bag has goes under _fields (a
    _fields that is no object moves under _fields._fields first; later names win)."""
    if key not in bag:
        bag[key] = val
        return
    held = bag.get("_fields", {})
    bag["_fields"] = {**(held if isinstance(held, dict) else {"_fields": held}), key: val}


def oracle(obj: Any, raw: bytes, ctx: Context = CTX) -> Expect:
    if not isinstance(obj, dict):
        return Expect(bad={"$"})
    c = _Check()
    tenant = obj.get("tenant")
    if tenant is not None and tenant != ctx.tenant:
        c.fail("tenant")
    task = obj.get("task")
    if not isinstance(task, str) or not task.strip():
        c.fail("task")
    tid = obj.get("trajectory_id")
    if tid is None:
        tid = "h-" + hashlib.blake2b(raw, digest_size=12).hexdigest()
    elif not isinstance(tid, str) or not tid.strip():
        c.fail("trajectory_id")
    outcome = obj.get("outcome")
    if outcome is None:
        outcome = {}
    elif not isinstance(outcome, dict):
        c.fail("outcome")
        outcome = {}
    # outcome.X wins; the top-level X is read only when outcome.X is null or absent
    success = c.flag(outcome.get("success"), "outcome.success")
    if outcome.get("success") is None:
        success = c.flag(obj.get("success"), "success")
    reward = c.number(outcome.get("reward"), "outcome.reward")
    if outcome.get("reward") is None:
        reward = c.number(obj.get("reward"), "reward")
    where = "outcome.scores" if "scores" in outcome else "scores"
    raw_scores = outcome["scores"] if "scores" in outcome else obj.get("scores")
    scores = None
    if isinstance(raw_scores, dict):
        scores = [(k, c.number(v, f"{where}.{k}")) for k, v in raw_scores.items() if v is not None]
    elif raw_scores is not None:
        c.fail(where)
    status = obj.get("status")
    if status is None:
        status = "running" if success is None else ("succeeded" if success else "failed")
    elif status not in STATUSES:  # also catches non-strings
        c.fail("status")
    steps = _oracle_steps(c, obj.get("steps"), tid if isinstance(tid, str) else "", ctx)
    meta = obj.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        c.fail("meta")
        meta = {}
    meta = dict(meta)
    for key, val in obj.items():
        if key not in TOP_FIELDS:
            _keep(meta, key, val)
    for key, val in outcome.items():
        if key not in OUTCOME_FIELDS:
            _keep(meta, f"outcome.{key}", val)
    tags = obj.get("tags")
    if tags is not None and (not isinstance(tags, list) or
                             not all(isinstance(t, str) for t in tags)):
        c.fail("tags")

    def total(key: str, read: Any) -> Any:
        given_ = read(obj.get(key), key)
        if given_ is not None:
            return given_
        vals = [s[key] for s in steps if s[key] is not None]
        t = sum(vals) if vals else None
        if (isinstance(t, int) and t > (1 << 63) - 1) or (isinstance(t, float)
                                                         and not math.isfinite(t)):
            c.fail(key)  # every step fits, the total must too
        return t

    traj = {
        "tenant": ctx.tenant, "trajectory_id": tid, "task": task,
        "task_hash": task_hash(task) if isinstance(task, str) else None,
        **{k: c.string(obj.get(k), k) for k in
           ("agent", "agent_version", "model", "session_id", "on_behalf_of", "parent_id")},
        "fork_step": c.whole(obj.get("fork_step"), "fork_step", bits=31),
        "status": status,
        "started_at": c.time(obj.get("started_at"), "started_at"),
        "ended_at": c.time(obj.get("ended_at"), "ended_at"),
        "success": success, "reward": reward, "scores": scores, "n_steps": len(steps),
        "tokens_in": total("tokens_in", c.whole), "tokens_out": total("tokens_out", c.whole),
        "cost_usd": total("cost_usd", c.number),  # top level: any finite number
        "tags": tags, "meta": meta or None,
        "ingested_at": ctx.ingested_at_us,
        "expires_at": c.time(obj.get("expires_at"), "expires_at"),
        "_record_hash": hashlib.blake2b(raw, digest_size=12).hexdigest(),
    }
    if None not in (traj["started_at"], traj["ended_at"]) \
            and traj["ended_at"] < traj["started_at"]:
        c.fail("ended_at")  # a run ends after it starts
    if c.bad:
        return Expect(bad=c.bad)
    return Expect(trajectory=traj, steps=steps)


def _oracle_steps(c: _Check, value: Any, tid: str, ctx: Context) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        c.fail("steps")
        return []
    rows, seen = [], set()
    for pos, step in enumerate(value):
        path = f"steps[{pos}]"
        if not isinstance(step, dict):
            c.fail(path)
            continue
        index = c.whole(step.get("index"), f"{path}.index", bits=31)
        if step.get("index") is None:
            index = pos
        if index is not None:
            if index in seen:
                c.fail(f"{path}.index")
            seen.add(index)
        rows.append(_oracle_step(c, step, path, index, tid, ctx))
    return rows


def _oracle_step(c: _Check, step: dict, path: str, index: int | None, tid: str,
                 ctx: Context) -> dict:
    kind = step.get("kind")
    if not isinstance(kind, str) or not kind:
        c.fail(f"{path}.kind")
    attrs = step.get("attributes")
    if attrs is None:
        attrs = {}
    elif not isinstance(attrs, dict):
        c.fail(f"{path}.attributes")
        attrs = {}
    attrs = dict(attrs)
    origin = {f: f for f in STEP_FIELDS}  # where each canonical value came from
    vals = dict(step)
    for key, val in step.items():
        if key in STEP_FIELDS:
            continue
        canon = ALIASES.get(key)
        if canon is not None and step.get(canon) is None and origin[canon] == canon:
            vals[canon], origin[canon] = val, key  # the first alias present wins
        else:
            _keep(attrs, key, val)

    def at(name: str) -> str:
        return f"{path}.{origin[name]}"

    output, error = c.text(vals.get("output")), c.text(vals.get("error"))
    if error is None and step.get("is_error") is True:
        error = output if output else "error"
    return {
        "tenant": ctx.tenant, "trajectory_id": tid, "index": index,
        "step_id": c.string(vals.get("step_id"), at("step_id")) or str(index),
        "parent_step_id": c.string(vals.get("parent_step_id"), at("parent_step_id")),
        "kind": kind, "name": c.string(vals.get("name"), at("name")),
        "input": c.text(vals.get("input")), "output": output, "error": error,
        "actor": c.string(vals.get("actor"), at("actor")),
        "started_at": c.time(vals.get("started_at"), at("started_at")),
        "duration_ms": c.number(vals.get("duration_ms"), at("duration_ms"), nonneg=True),
        "tokens_in": c.whole(vals.get("tokens_in"), at("tokens_in")),
        "tokens_out": c.whole(vals.get("tokens_out"), at("tokens_out")),
        "cost_usd": c.number(vals.get("cost_usd"), at("cost_usd"), nonneg=True),
        "attributes": attrs or None, "input_ref": None, "output_ref": None,
    }


def _same_row(got: dict, want: dict) -> None:
    """Every column the oracle knows is as documented (JSON text compared as values: key
    order is no part of the contract); a column it does not know is one no record sets
    (e.g. ``retracted_at``, set only by retracting), so it must be null."""
    for col in ("meta", "attributes"):
        if col in want:
            assert (None if got[col] is None else orjson.loads(got[col])) == want[col], col
    assert {k: got[k] for k in want if k not in ("meta", "attributes")} == \
        {k: v for k, v in want.items() if k not in ("meta", "attributes")}
    assert {k: v for k, v in got.items() if k not in want and v is not None} == {}


# -- strategies --------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "x", "_fields", "kind", "index", "success", "domain",
                        "outcome.judge", "latency_ms"]) | st.text(max_size=6)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
INT = st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)  # what JSON parsers keep exact
FLOAT = st.floats(allow_nan=False, allow_infinity=False)
ISO = st.builds(
    lambda dt, off, naive, sep: (dt if naive else dt.replace(
        tzinfo=timezone(timedelta(minutes=off)))).isoformat(sep=sep),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(-23 * 60, 23 * 60), st.booleans(), st.sampled_from(["T", " "]))
SPECIAL = st.sampled_from([
    None, True, False, 0, 1, -1, 2 ** 31 - 1, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1,
    -(2 ** 63), 1.0, 2.5, -0.0, -0.5, 1e300, -1e300, 5e-324, 253402300799, 253402300799.9999999,
    253402300800, 1754065000.123456, "", " ", "\t", "running", "succeeded", "failed",
    "abandoned", "Running", "llm", "tool", "acme", "default", "2025-08-01T16:16:37Z",
    "2025-08-01", "2025-08-01 16:16", "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+14:00", "yesterday", "1754065000",
    [], {}, ["a", "b"], ["a", 1], [None], {"a": 1}, {"_fields": 1}, {"judge": 0.5},
    {"judge": "high"}, {"success": True}, {"kind": "llm"}, [{"kind": "llm"}], [{}],
    {"_fields": 3, "x": 1, "unknown": 0}, {"_fields": {"x": 0}, "x": 1, "an_unknown_field": 2},
    {"tokens": 1, "_fields": None}])
JSON = st.recursive(
    st.none() | st.booleans() | INT | FLOAT | TEXT | SPECIAL,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12)
VALUE = st.one_of(SPECIAL, JSON, ISO, FLOAT.map(abs))


def base_record() -> dict:
    """A valid record using most fields (aliases and unknown fields included)."""
    return {
        "trajectory_id": "t-1", "task": "Refund order #W5442520", "agent": "bot",
        "agent_version": "1.4", "model": "gpt-4.1", "session_id": "s", "on_behalf_of": "u",
        "parent_id": "t-0", "fork_step": 2, "started_at": "2025-08-01T16:16:37Z",
        "ended_at": 1754065010.5, "tags": ["retail"], "meta": {"domain": "retail"},
        "source": "tau2", "outcome": {"success": True, "reward": 1.0,
                                      "scores": {"judge": 0.5}, "judge": "gpt"},
        "steps": [
            {"index": 0, "kind": "user", "input": "refund please", "actor": "user"},
            {"index": 1, "kind": "llm", "output": "looking", "tokens_prompt": 30,
             "completion_tokens": 4, "latency_ms": 924.5, "cost_usd": 0.001, "tokens": 34},
            {"index": 2, "kind": "tool", "name": "refund", "input": {"order": "#W1"},
             "output": "card expired", "is_error": True, "step_id": "s2",
             "parent_step_id": "1", "started_at": "2025-08-01T16:16:40",
             "duration_ms": 12.0, "tokens_in": 5, "tokens_out": 1, "attributes": {"x": 1}},
        ],
    }


N_STEPS = len(base_record()["steps"])
PATHS = (
    [(k,) for k in TOP_FIELDS] + [("an_unknown_field",), ("_fields",)]
    + [("outcome", k) for k in (*OUTCOME_FIELDS, "judge", "other")]
    + [("steps", i, k) for i in range(N_STEPS)
       for k in (*STEP_FIELDS, *ALIASES, "is_error", "tokens", "unknown", "_fields", "x")]
    + [("steps", i) for i in range(N_STEPS)] + [("steps", 3)]
)


def _set(obj: Any, path: tuple, value: Any) -> Any:
    """Return obj with the value at path replaced (or removed); () is the whole record."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict) and isinstance(head, str):
        obj = dict(obj)
        if rest:
            obj[head] = _set(obj.get(head), rest, value)
        elif value is DELETE:
            obj.pop(head, None)
        else:
            obj[head] = value
    elif isinstance(obj, list) and isinstance(head, int):
        obj = list(obj)
        if head >= len(obj):
            if value is not DELETE and not rest:
                obj.append(value)
        elif rest:
            obj[head] = _set(obj[head], rest, value)
        elif value is DELETE:
            del obj[head]
        else:
            obj[head] = value
    return obj


# a step / record made of documented fields with any values (a kind mostly valid)
ANY_STEP = st.fixed_dictionaries(
    {"kind": st.sampled_from(["llm", "tool"]) | VALUE},
    optional={k: VALUE for k in (*STEP_FIELDS, *ALIASES) if k != "kind"})
ANY_RECORD = st.fixed_dictionaries(
    {"task": st.just("t") | VALUE}, optional={k: VALUE for k in TOP_FIELDS if k != "task"})


@st.composite
def records(draw: st.DrawFn, max_mutations: int = 3) -> tuple[dict | Any, list]:
    """The base record with 0..max_mutations fields replaced by any JSON value (or removed);
    sometimes the whole steps list, a whole step or the whole record."""
    rec: Any = base_record()
    done = []
    for _ in range(draw(st.integers(0, max_mutations))):
        kind = draw(st.sampled_from(["field"] * 8 + ["steps", "record"]))
        if kind == "field":
            path = draw(st.sampled_from(PATHS))
            value = draw(st.just(DELETE) | VALUE)
        elif kind == "steps":
            path = ("steps",)
            value = draw(st.lists(ANY_STEP | VALUE, max_size=4) | VALUE)
        else:
            path = ()
            value = draw(VALUE | ANY_RECORD)
        rec = _set(rec, path, value)
        done.append((path, "<deleted>" if value is DELETE else value))
    return rec, done


# -- 1. the validation gate ------------------------------------------------------------------

def test_colliding_unknown_fields_are_kept_and_the_input_is_not_changed():
    """Regression: a '_fields' that is no object crashed (TypeError) instead of keeping the
    field, and a '_fields' object of the caller's was changed in place."""
    mine = {"_fields": {"a": 1}, "x": 1}
    rec = {"task": "t", "meta": mine, "x": 2, "steps": [
        {"kind": "llm", "attributes": {"_fields": [1], "foo": 1}, "foo": 2}]}
    got = normalize_line(orjson.dumps(rec), CTX)
    assert orjson.loads(got.trajectory["meta"]) == {"_fields": {"a": 1, "x": 2}, "x": 1}
    assert orjson.loads(got.steps[0]["attributes"]) == {"_fields": {"_fields": [1], "foo": 2},
                                                        "foo": 1}
    normalize(rec, orjson.dumps(rec), CTX)
    assert mine == {"_fields": {"a": 1}, "x": 1}, "the caller's meta was changed"
    got = normalize_line(b'{"task": "t", "meta": {"_fields": 3, "x": 1}, "x": 2}', CTX)
    assert orjson.loads(got.trajectory["meta"]) == {"_fields": {"_fields": 3, "x": 2}, "x": 1}


@pytest.mark.parametrize(("rec", "field"), [
    ({"task": "t", "started_at": 1e303}, "started_at"),  # was OverflowError
    ({"task": "t", "steps": [{"kind": "llm", "started_at": -1e303}]}, "steps[0].started_at"),
    ({"task": "t", "scores": "high"}, "scores"),  # was named outcome.scores
    ({"task": "t", "scores": {"judge": "high"}}, "scores.judge"),
    ({"task": "t", "steps": [{"kind": "llm", "latency_ms": -1}]}, "steps[0].latency_ms"),
    ({"task": "t", "steps": [{"kind": "llm", "prompt_tokens": "many"}]},
     "steps[0].prompt_tokens"),  # aliases: was named by the canonical field
    ({"task": "t", "steps": [{"kind": "llm", "output_tokens": True}]}, "steps[0].output_tokens"),
])
def test_errors_name_the_field_as_sent(rec: dict, field: str):
    with pytest.raises(InvalidArgument) as e:
        normalize_line(orjson.dumps(rec), CTX)
    assert e.value.field == field and e.value.message.strip()


def _check_one(obj: Any, say: Any = note) -> None:
    raw = orjson.dumps(obj)
    want = oracle(obj, raw)
    say(f"record: {raw.decode()}\nexpected bad: {sorted(want.bad)}")
    if say is note:
        event("rejected" if want.bad else "accepted")
    for attempt in ("line", "object"):
        try:
            got = normalize_line(raw, CTX) if attempt == "line" else normalize(obj, raw, CTX)
        except InvalidArgument as e:
            assert want.bad, f"a valid record was rejected: {e}"
            assert e.field in want.bad, f"rejected naming {e.field!r}, broken: {want.bad} ({e})"
            assert e.message.strip() and e.field in str(e)
            continue
        assert not want.bad, f"accepted although {sorted(want.bad)} break the rules"
        _same_row(got.trajectory, want.trajectory)
        assert len(got.steps) == len(want.steps)
        for have, expect in zip(got.steps, want.steps, strict=True):
            _same_row(have, expect)
        assert got.payloads == []


def test_base_record_is_valid_and_as_documented():
    rec = base_record()
    want = oracle(rec, orjson.dumps(rec))
    assert not want.bad
    got = normalize_line(orjson.dumps(rec), CTX)
    assert orjson.loads(got.trajectory["meta"]) == {
        "domain": "retail", "source": "tau2", "outcome.judge": "gpt"}
    assert got.steps[1]["tokens_in"] == 30 and got.steps[1]["duration_ms"] == 924.5
    assert orjson.loads(got.steps[1]["attributes"]) == {"tokens": 34}
    assert got.steps[2]["input"] == '{"order":"#W1"}' and got.steps[2]["error"] == "card expired"
    assert got.trajectory["started_at"] == 1754064997 * 10 ** 6  # 2025-08-01T16:16:37Z
    assert got.trajectory["ended_at"] == 1754065010_500000  # epoch seconds
    _check_one(rec, say=print)


@settings(max_examples=1500, deadline=None)
@given(records())
def test_any_json_in_any_field_is_rejected_by_name_or_accepted_as_documented(case):
    obj, mutations = case
    note(f"mutations: {mutations}")
    _check_one(obj)


@settings(max_examples=300, deadline=None)
@given(VALUE)
def test_any_json_value_as_the_whole_record(value):
    _check_one(value)


# -- 2. end to end: a real lake ------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_lake(tmp_path_factory: pytest.TempPathFactory):
    """One lake for every example (opening one per example would dominate the run time);
    settings passed explicitly, so no LAKE_* variable or lake.toml is read."""
    root = tmp_path_factory.mktemp("props")
    lake = Lake.open(settings=Settings(data=str(root / "lake"), tenant="acme",
                                       flush_interval_ms=5))
    yield lake
    lake.close()


def _lake_is_whole(lake: Lake) -> None:
    """Over the whole lake: one row per trajectory, exactly n_steps steps under each."""
    assert lake.sql("select trajectory_id from trajectories group by 1 "
                    "having count(*) > 1").fetchall() == []
    assert lake.sql('select trajectory_id, "index" from steps group by all '
                    "having count(*) > 1").fetchall() == []
    bad = lake.sql('select t.trajectory_id, t.n_steps, count(s."index") from trajectories t '
                   "left join steps s using (trajectory_id) group by all "
                   'having count(s."index") <> t.n_steps').fetchall()
    assert bad == [], f"half-written trajectories: {bad[:5]}"
    assert lake.sql("select count(*) from steps where trajectory_id not in "
                    "(select trajectory_id from trajectories)").fetchall() == [(0,)]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(records(max_mutations=2), min_size=1, max_size=6))
def test_batch_lands_valid_records_whole_and_rejects_the_rest(shared_lake: Lake, batch):
    run = uuid.uuid4().hex[:12]  # fresh ids per example: the lake is shared
    objs, wants = [], []
    for i, (obj, _mut) in enumerate(batch):
        if isinstance(obj, dict):  # ids are the test's: a mutated id would leave the run
            obj = {**obj, "trajectory_id": f"{run}-{i}"}
            obj.pop("tenant", None)
        objs.append(obj)
        wants.append(oracle(obj, orjson.dumps(obj)))
    n_bad = sum(bool(w.bad) for w in wants)
    event("all valid" if not n_bad else "all rejected" if n_bad == len(wants) else "mixed")
    result = shared_lake.ingest(objs)
    rejected = {r.location: r for r in result.rejected}
    assert set(rejected) == {f"item {i}" for i, w in enumerate(wants) if w.bad}
    for i, w in enumerate(wants):
        if w.bad:
            r = rejected[f"item {i}"]
            assert r.reason.strip() and r.field in w.bad, (r, w.bad)
    good = {f"{run}-{i}": w for i, w in enumerate(wants) if not w.bad}
    assert (result.trajectories, result.steps) == (
        len(good), sum(w.trajectory["n_steps"] for w in good.values()))
    rows = shared_lake.sql(
        'select t.trajectory_id, t.n_steps, count(s."index") from trajectories t '
        f"left join steps s using (trajectory_id) where t.trajectory_id like '{run}-%' "
        "group by all").fetchall()
    assert {tid: (n, k) for tid, n, k in rows} == {
        tid: (w.trajectory["n_steps"],) * 2 for tid, w in good.items()}
    assert shared_lake.sql(f"select count(*) from steps where trajectory_id like '{run}-%'"
                           ).fetchall() == [(sum(w.trajectory["n_steps"]
                                                 for w in good.values()),)]
    _lake_is_whole(shared_lake)


# -- 3. files: a JSONL with ~10% bad lines, through the CLI ----------------------------------

def _corrupt(i: int, line: bytes) -> tuple[bytes, str | None]:
    """Corruption number i of a good line: (bad line, the field its reject must name)."""
    rec = orjson.loads(line)
    kinds = [
        (line[: len(line) // 2], None),  # truncated: not JSON
        (b"[1, 2, 3]", "$"),
        (orjson.dumps({k: v for k, v in rec.items() if k != "task"}), "task"),
        (orjson.dumps(_set(rec, ("steps", 1, "kind"), None)), "steps[1].kind"),
        (orjson.dumps(_set(rec, ("steps", 0, "tokens_in"), "many")), "steps[0].tokens_in"),
        (orjson.dumps({**rec, "started_at": "yesterday"}), "started_at"),
        (orjson.dumps(_set(rec, ("steps", 2, "index"), 0)), "steps[2].index"),
        (orjson.dumps({**rec, "outcome": {"success": "yes"}}), "outcome.success"),
        (orjson.dumps({**rec, "steps": {"0": rec["steps"][0]}}), "steps"),
        (orjson.dumps({**rec, "status": "done"}), "status"),
        (line + b"}", None),  # trailing garbage
        (orjson.dumps({**rec, "tags": "retail"}), "tags"),
    ]
    return kinds[i % len(kinds)]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}
    env.update(LANCE_LOG="error", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, cwd=cwd,
                          env=env, timeout=300)


def test_jsonl_with_bad_lines_lands_the_good_and_quarantines_the_bad(tmp_path: Path,
                                                                    dev_records):
    lines = [orjson.dumps(r) for r in dev_records]
    out, bad_at = [], {}
    for n, line in enumerate(lines):
        if n % 10 == 3:  # 24 of 240 lines
            bad, fld = _corrupt(len(bad_at), line)
            out.append(bad)
            bad_at[len(out)] = (fld, bad)
        else:
            out.append(line)
        if n == 100:
            out.append(b"   ")  # a blank line is no record, but it counts for line numbers
    src = tmp_path / "runs.jsonl"
    src.write_bytes(b"\n".join(out) + b"\n")
    q = tmp_path / "rejects.jsonl"
    data = tmp_path / "lake"
    res = _cli("ingest", str(src), "--data", str(data), "--json", "--quarantine", str(q),
               "--progress", "none", cwd=tmp_path)
    assert res.returncode == 2, res.stderr.decode()
    summary = orjson.loads(res.stdout.splitlines()[-1])
    good = [orjson.loads(x) for n, x in enumerate(out, 1) if n not in bad_at and x.strip()]
    assert (summary["trajectories"], summary["rejected"]) == (len(good), len(bad_at)) == (216, 24)
    rejects = [orjson.loads(x) for x in q.read_bytes().splitlines()]
    assert [r["line"] for r in rejects] == sorted(bad_at)
    for r in rejects:
        fld, text = bad_at[r["line"]]
        assert r["location"] == f"{src}:{r['line']}" and r["file"] == str(src)
        assert r["field"] == fld and r["reason"].strip()
        assert r["text"] == text.decode()
    with Lake.open(str(data), readonly=True) as lake:
        assert sorted(x[0] for x in lake.sql("select trajectory_id from trajectories")
                      .fetchall()) == sorted(g["trajectory_id"] for g in good)
        assert lake.count("steps") == sum(len(g["steps"]) for g in good)
        _lake_is_whole(lake)

    # the quarantined lines, fixed, land; everything already there is a no-op: exit 0
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_bytes(b"\n".join(lines) + b"\n")
    res = _cli("ingest", str(fixed), "--data", str(data), "--json", "--progress", "none",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    with Lake.open(str(data), readonly=True) as lake:
        assert lake.count("trajectories") == len(lines)
        assert lake.count("steps") == sum(len(r["steps"]) for r in dev_records)

    # nothing readable: exit 1
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    for path in (broken, tmp_path / "missing.jsonl"):
        res = _cli("ingest", str(path), "--data", str(data), "--json", "--progress", "none",
                   cwd=tmp_path)
        assert res.returncode == 1, (path, res.stdout, res.stderr)
        assert str(path.name) in res.stdout.decode() + res.stderr.decode()


def test_ingest_paths_quarantines_with_line_numbers(tmp_path: Path, lake: Lake, dev_records):
    """The library door behind the CLI, on the same kind of file."""
    lines = [orjson.dumps(r) for r in dev_records[:40]]
    bad_at = {}
    for n in range(2, 40, 10):
        lines[n], fld = _corrupt(n, lines[n])
        bad_at[n + 1] = fld
    src = tmp_path / "x.jsonl"
    src.write_bytes(b"\n".join(lines))
    q = Quarantine(tmp_path / "q.jsonl")
    acks = []
    summary = ingest_paths(lake, [str(src)], quarantine=q, on_ack=acks.append)
    assert (summary.trajectories, summary.rejected, summary.exit_code) == (36, 4, 2)
    assert sum(a["trajectories"] for a in acks) == 36
    rejects = [orjson.loads(x) for x in (tmp_path / "q.jsonl").read_bytes().splitlines()]
    assert {r["line"]: r["field"] for r in rejects} == bad_at
    assert lake.count("trajectories") == 36
    _lake_is_whole(lake)
