"""Replay tapes on real lakes: the dev trajectories answered back, divergence reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lake import InvalidArgument, NotFound
from lake.tape import CHANGED, NOT_CALLED, OUT_OF_ORDER, UNRECORDED, Tape, canonical

LAKE_CMD = str(Path(sys.executable).with_name("lake"))



def _tool_steps(record: dict) -> list[dict]:
    return [s for s in record["steps"] if s["kind"] == "tool" and s.get("name")]


def _recorded(step: dict) -> tuple[str | None, str | None]:
    """(result, error) as the dev record has them (`is_error`: the output is the error)."""
    return step.get("output"), (step.get("output") or "error") if step.get("is_error") else None


def test_a_dev_tape_answers_every_recorded_call_with_the_recorded_result(dev_lake, dev_records):
    assert sum(len(_tool_steps(r)) for r in dev_records) > 3000
    for record in dev_records:
        tape = Tape.from_lake(dev_lake, record["trajectory_id"])
        for step in _tool_steps(record):
            reply = tape.call(step["name"], step["input"])
            assert reply.matched and reply.divergence is None, reply
            assert (reply.result, reply.error) == _recorded(step)
            assert reply.step == step["index"]
        report = tape.report()
        assert report.clean and report.answered == report.recorded == len(_tool_steps(record))


def _record_with(*calls: tuple[str, str, str]) -> dict:
    steps = [{"kind": "llm", "output": "let me check"}]
    for name, args, out in calls:
        steps.append({"kind": "tool", "name": name, "input": args, "output": out})
    return {"trajectory_id": "t1", "task": "refund order #W1", "steps": steps,
            "outcome": {"success": True}}


@pytest.fixture
def small(lake):
    lake.ingest([_record_with(("get_order", '{"order_id": "#W1", "full": true}', "delivered"),
                              ("get_order", '{"order_id": "#W1", "full": true}', "refunded"),
                              ("refund", '{"order_id": "#W1", "amount": 10}', "ok"))])
    return lake


def test_a_changed_argument_is_reported_and_not_answered(small):
    tape = Tape.from_lake(small, "t1")
    reply = tape.call("get_order", {"order_id": "#W2", "full": True})
    assert not reply.matched and reply.result is None
    assert reply.divergence.kind == CHANGED and reply.divergence.step == 1
    assert "order_id: recorded \"#W1\", called with \"#W2\"" in reply.divergence.detail
    report = tape.report()
    assert not report.clean and report.answered == 0
    assert [d.kind for d in report.divergences] == [CHANGED, NOT_CALLED, NOT_CALLED, NOT_CALLED]


def test_an_extra_call_is_reported_and_recorded_calls_never_made_are_listed(small):
    tape = Tape.from_lake(small, "t1")
    assert tape.call("get_order", '{"order_id": "#W1", "full": true}').result == "delivered"
    extra = tape.call("cancel_order", {"order_id": "#W1"})
    assert not extra.matched and extra.divergence.kind == UNRECORDED
    assert "no call of 'cancel_order'" in extra.divergence.detail
    report = tape.report()
    assert report.calls == 2 and report.answered == 1
    assert [(d.kind, d.step) for d in report.divergences] == [
        (UNRECORDED, None), (NOT_CALLED, 2), (NOT_CALLED, 3)]


def test_repeated_calls_get_their_results_in_recorded_order_then_diverge(small):
    tape = Tape.from_lake(small, "t1")
    args = {"full": True, "order_id": "#W1"}
    assert [tape.call("get_order", args).result for _ in range(2)] == ["delivered", "refunded"]
    third = tape.call("get_order", args)
    assert third.divergence.kind == UNRECORDED and "no more call" in third.divergence.detail


def test_out_of_order_is_answered_and_reported(small):
    tape = Tape.from_lake(small, "t1")
    reply = tape.call("refund", {"order_id": "#W1", "amount": 10})
    assert reply.matched and reply.result == "ok" and reply.divergence.kind == OUT_OF_ORDER
    tape.call("get_order", {"order_id": "#W1", "full": True})
    tape.call("get_order", {"order_id": "#W1", "full": True})
    assert [d.kind for d in tape.report().divergences] == [OUT_OF_ORDER]
    tape.reset()
    assert tape.report().answered == 0 and len(tape.report().divergences) == 3


@pytest.mark.parametrize("a,b", [
    ('{"order_id": "#W1", "amount": 10}', {"amount": 10, "order_id": "#W1"}),  # dict, key order
    ('{"order_id":"#W1","amount":10}', ' {"amount" : 10.0, "order_id" : "#W1"}\n'),  # spaces, 10.0
    ("{}", None), ("", {}), (None, "  "),  # no arguments
    ("not json", "  not json "),  # text compared trimmed
])
def test_documented_argument_tolerance(a, b):
    assert canonical(a) == canonical(b)


@pytest.mark.parametrize("a,b", [
    ('{"order_id": "#W1"}', '{"order_id": "#w1"}'),  # case counts
    ('{"ids": [1, 2]}', '{"ids": [2, 1]}'),  # list order counts
    ('{"a": "1"}', '{"a": 1}'),  # a string is not a number
    ('{"a": true}', '{"a": 1}'),
])
def test_no_tolerance_beyond_it(a, b):
    assert canonical(a) != canonical(b)


def test_a_tape_file_replays_like_the_lake_and_bad_files_say_where(small, tmp_path):
    tape = Tape.from_lake(small, "t1", as_of=None)
    path = tmp_path / "t1.tape.json"
    tape.save(path)
    assert path.read_text() == Tape.from_lake(small, "t1").dumps()  # same tape, same bytes
    again = Tape.load(path)
    assert again.calls == tape.calls and again.source["lake_version"] == small.version().version
    assert again.call("get_order", {"order_id": "#W1", "full": True}).result == "delivered"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "context-lake.tape/1", "calls": [{"name": 3}]}))
    with pytest.raises(InvalidArgument) as e:
        Tape.load(bad)
    assert e.value.location == str(bad) and e.value.field == "calls[0].name"
    bad.write_text("{}")
    with pytest.raises(InvalidArgument, match="not a tape"):
        Tape.load(bad)
    with pytest.raises(NotFound):
        Tape.load(tmp_path / "missing.json")


def test_a_tape_reads_one_version_and_never_serves_a_retracted_run(small):
    small.tag("before")
    small.ingest([{**_record_with(("get_order", "{}", "new")), "trajectory_id": "t1",
                   "steps": _record_with(*[("get_order", "{}", "new")] * 4)["steps"]}])
    assert Tape.from_lake(small, "t1").calls[0].result == "new"
    assert Tape.from_lake(small, "t1", as_of="before").calls[0].result == "delivered"
    small.retract(["t1"], "leaked a card number")
    with pytest.raises(NotFound, match="retracted"):
        Tape.from_lake(small, "t1")
    with pytest.raises(NotFound, match="no trajectory"):
        Tape.from_lake(small, "nope")


def test_cli_writes_a_tape_file(dev_lake, dev_records, tmp_path):
    rec = next(r for r in dev_records if len(_tool_steps(r)) >= 3)
    out = tmp_path / "t.json"
    p = subprocess.run([LAKE_CMD, "tape", rec["trajectory_id"], "--out", str(out), "--json",
                        "--data", dev_lake.settings.data], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["calls"] == len(_tool_steps(rec))
    tape = Tape.load(out)
    assert [c.name for c in tape.calls] == [s["name"] for s in _tool_steps(rec)]
    p = subprocess.run([LAKE_CMD, "tape", "nope", "--data", dev_lake.settings.data],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.startswith("error: no trajectory 'nope'")
