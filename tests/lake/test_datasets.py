"""Training datasets from real lakes: sft, preference and rft, manifests, determinism."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from lake import InvalidArgument
from lake.datasets import chat, export_dataset
from lake.records import task_hash

LAKE_CMD = str(Path(sys.executable).with_name("lake"))



def _lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_sft_holds_exactly_the_successful_trajectories_as_chats(dev_lake, dev_records, tmp_path):
    res = export_dataset(dev_lake, "sft", tmp_path, as_of="dev")
    rows = _lines(tmp_path / "sft.jsonl")
    want = sorted(r["trajectory_id"] for r in dev_records if r["outcome"]["success"] is True)
    assert [r["trajectory_id"] for r in rows] == want and len(want) == 170
    by_id = {r["trajectory_id"]: r for r in dev_records}
    for row in rows:
        msgs, src = row["messages"], by_id[row["trajectory_id"]]
        tools = [s for s in src["steps"] if s["kind"] == "tool"]
        calls = [c for m in msgs for c in m.get("tool_calls", ())]
        assert [c["function"]["name"] for c in calls] == [s["name"] for s in tools]
        assert [c["function"]["arguments"] for c in calls] == [s["input"] for s in tools]
        results = [m["content"] for m in msgs if m["role"] == "tool"]
        assert results == [s["output"] or "" for s in tools]
        users = [s["input"] for s in src["steps"] if s["kind"] == "user"]
        assert [m["content"] for m in msgs if m["role"] == "user"] == (users or [src["task"]])
        pending: set[str] = set()  # every tool turn answers a call of an assistant turn before
        for m in msgs:
            if m["role"] == "assistant":
                pending |= {c["id"] for c in m.get("tool_calls", ())}
            elif m["role"] == "tool":
                pending.remove(m["tool_call_id"])
        assert not pending
    assert res.manifest["counts"]["trajectories"] == 170
    assert res.manifest["counts"]["tool_calls"] == sum(
        len([s for s in by_id[i]["steps"] if s["kind"] == "tool"]) for i in want)


def test_chat_without_user_steps_starts_with_the_task():
    msgs, left_out = chat("refund #W1", [
        {"index": 0, "kind": "tool", "name": "get", "input": None, "output": "x", "error": None},
        {"index": 1, "kind": "observation", "name": None, "input": "", "output": "y",
         "error": None},
        {"index": 2, "kind": "llm", "name": None, "input": "", "output": "done", "error": None}])
    assert msgs == [
        {"role": "user", "content": "refund #W1"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "name": "get", "content": "x"},
        {"role": "assistant", "content": "done"}]
    assert left_out == 1


def test_preference_pairs_a_success_with_a_failure_of_the_same_task(dev_lake, dev_records,
                                                                   tmp_path):
    res = export_dataset(dev_lake, "preference", tmp_path)
    rows = _lines(tmp_path / "preference.jsonl")
    outcome = {r["trajectory_id"]: r["outcome"]["success"] for r in dev_records}
    task = {r["trajectory_id"]: task_hash(r["task"]) for r in dev_records}
    assert rows and len(rows) == res.manifest["counts"]["pairs"]
    for row in rows:
        a, b = row["chosen"]["trajectory_id"], row["rejected"]["trajectory_id"]
        assert outcome[a] is True and outcome[b] is False  # never two of a kind
        assert row["match"] == "task_hash" and task[a] == task[b] == row["task_hash"]
        assert row["chosen"]["messages"] and row["rejected"]["messages"]
    groups: dict[str, Counter] = {}
    for r in dev_records:
        groups.setdefault(task[r["trajectory_id"]], Counter())[r["outcome"]["success"]] += 1
    assert len(rows) == sum(max(c[True], c[False]) for c in groups.values()
                            if c[True] and c[False])
    used = {row[side]["trajectory_id"] for row in rows for side in ("chosen", "rejected")}
    mixed = {h for h, c in groups.items() if c[True] and c[False]}
    assert used == {i for i, h in task.items() if h in mixed}  # every run of those tasks
    assert "no clusters" in res.manifest["rules"]["cluster_note"]


def test_preference_falls_back_to_a_cluster_hit_never_to_a_hard_negative(lake, minilm, tmp_path):
    from lake.context import ContextService

    def run(i: int, task: str, ok: bool) -> dict:
        return {"trajectory_id": f"r{i}", "task": task, "outcome": {"success": ok},
                "steps": [{"kind": "tool", "name": "book", "input": "{}", "output": "ok"}]}

    lake.ingest([run(0, "Book a flight from NYC to SF on May 3", True),
                 run(1, "book a flight from NYC to SF on May 3, please", False),
                 run(2, "Book a flight from SF to NYC on May 3", False),  # swapped: no hit
                 run(3, "Cancel order #W7 and refund it to the card", True),
                 run(4, "Cancel order #W8 and refund it to the card", False)])  # other order
    cs = ContextService(lake, embedder=minilm)
    try:
        cs.recluster("default")
    finally:
        cs.close()
    res = export_dataset(lake, "preference", tmp_path)
    rows = _lines(tmp_path / "preference.jsonl")
    assert [(r["chosen"]["trajectory_id"], r["rejected"]["trajectory_id"], r["match"])
            for r in rows] == [("r0", "r1", "cluster")]
    assert 0.8 <= rows[0]["similarity"] <= 1.0
    assert res.manifest["counts"]["pairs_cluster"] == 1


def test_rft_gives_each_task_its_rewards_and_the_best_runs_tool_plan(dev_lake, dev_records,
                                                                    tmp_path):
    export_dataset(dev_lake, "rft", tmp_path)
    rows = _lines(tmp_path / "rft.jsonl")
    by_hash: dict[str, list[dict]] = {}
    for r in dev_records:
        by_hash.setdefault(task_hash(r["task"]), []).append(r)
    assert [r["task_hash"] for r in rows] == sorted(by_hash)
    for row in rows:
        runs = by_hash[row["task_hash"]]
        assert row["runs"] == len(runs)
        assert row["successes"] == sum(r["outcome"]["success"] is True for r in runs)
        assert row["max_reward"] == max(r["outcome"]["reward"] for r in runs)
        ref = row["reference"]
        if row["successes"] == 0:
            assert ref is None
            continue
        src = next(r for r in runs if r["trajectory_id"] == ref["trajectory_id"])
        assert src["outcome"]["success"] is True
        assert ref["reward"] == max(r["outcome"]["reward"] for r in runs
                                    if r["outcome"]["success"])
        assert [(p["name"], p["arguments"]) for p in ref["plan"]] == [
            (s["name"], s["input"]) for s in src["steps"]
            if s["kind"] == "tool" and not s.get("is_error")]


def test_exports_at_the_same_tag_are_byte_identical(dev_lake, dev_records, tmp_path):
    for kind in ("sft", "preference", "rft"):
        a = export_dataset(dev_lake, kind, tmp_path / "a", as_of="dev", where="reward >= 0")
        b = export_dataset(dev_lake, kind, tmp_path / "b", as_of="dev", where="reward >= 0")
        for name in (f"{kind}.jsonl", f"{kind}.manifest.json"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        data = (tmp_path / "a" / f"{kind}.jsonl").read_bytes()
        f = a.manifest["files"][0]
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
        assert a.manifest == b.manifest


def test_manifest_pins_the_version_and_names_the_filter(lake, dev_records, tmp_path):
    lake.ingest(dev_records[:40])
    lake.tag("first")
    before = export_dataset(lake, "sft", tmp_path / "a", as_of="first",
                            where="meta->>'domain' = 'retail'")
    lake.ingest(dev_records[40:])
    lake.retract([before_id := _lines(tmp_path / "a" / "sft.jsonl")[0]["trajectory_id"]],
                 "test")
    again = export_dataset(lake, "sft", tmp_path / "b", as_of="first",
                           where="meta->>'domain' = 'retail'")
    a, b = (_lines(tmp_path / d / "sft.jsonl") for d in "ab")
    assert b == a[1:]  # later ingests change nothing; a later retraction holds
    assert (before.manifest["counts"]["retracted_since"],
            again.manifest["counts"]["retracted_since"]) == (0, 1)
    m = json.loads((tmp_path / "a" / "sft.manifest.json").read_text())
    assert m["lake"]["version"] == lake.version("first").version and m["lake"]["as_of"] == "first"
    assert m["where"] == "meta->>'domain' = 'retail'" and m["tenant"] == "default"
    assert m["counts"]["trajectories"] == sum(
        1 for r in dev_records[:40] if r["outcome"]["success"] and r["meta"]["domain"] == "retail")
    assert again.manifest["counts"]["trajectories"] == m["counts"]["trajectories"] - 1
    assert {k: v for k, v in again.manifest.items() if k not in ("counts", "files")} == \
        {k: v for k, v in before.manifest.items() if k not in ("counts", "files")}
    export_dataset(lake, "sft", tmp_path / "c")  # the latest version
    ids = [r["trajectory_id"] for r in _lines(tmp_path / "c" / "sft.jsonl")]
    assert before_id not in ids and len(ids) == 169  # retracted runs are never exported


@pytest.mark.parametrize("where,needle", [
    ("agnt = 'x'", "agnt"), ("reward >=", "syntax"), ("true; drop table x", "syntax"),
])
def test_a_bad_where_is_a_clear_invalid_argument(dev_lake, tmp_path, where, needle):
    with pytest.raises(InvalidArgument) as e:
        export_dataset(dev_lake, "sft", tmp_path, where=where)
    assert e.value.field == "where" and repr(where) in e.value.message
    assert needle in e.value.message.lower() or needle in e.value.message
    assert not (tmp_path / "sft.jsonl").exists()


@pytest.mark.parametrize("kind", ["sft", "preference", "rft"])
def test_a_where_that_fails_on_the_data_is_an_invalid_argument_too(dev_lake, tmp_path, kind):
    with pytest.raises(InvalidArgument, match="check --where") as e:
        export_dataset(dev_lake, kind, tmp_path, where="cast(task AS integer) > 0")
    assert e.value.field == "where" and "Conversion" in e.value.message
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_unknown_kind(dev_lake, tmp_path):
    with pytest.raises(InvalidArgument, match="not one of sft, preference, rft"):
        export_dataset(dev_lake, "dpo", tmp_path)


def test_cli_export_dataset(dev_lake, tmp_path):
    out = tmp_path / "out"
    args = [LAKE_CMD, "export-dataset", "--kind", "sft", "--out", str(out), "--as-of", "dev",
            "--where", "agent = 'gpt-4.1'", "--json", "--data", dev_lake.settings.data]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["counts"]["trajectories"] == len(_lines(out / "sft.jsonl")) > 0
    assert summary["files"][0]["sha256"] == hashlib.sha256((out / "sft.jsonl").read_bytes()
                                                           ).hexdigest()
    p = subprocess.run(args[:-3] + ["--where", "nope(", "--data", dev_lake.settings.data],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "--where 'nope('" in p.stderr and "Traceback" not in p.stderr
