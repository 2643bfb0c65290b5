"""The Python client checks what it sends and keeps a live run consistent: a value of the
wrong type names its field, a batch of mixed types does not sink its good records, a run
never stays open because of a bad step, and a finished run takes no more steps."""

from __future__ import annotations

import json

import pytest

from lake.errors import Conflict, InvalidArgument
from server.checked import UnknownFieldWarning
from server.client import LakeClient, _target

from .conftest import run


def test_a_wrong_type_in_a_step_names_it_and_the_run_still_finishes(server, client):
    with pytest.raises(InvalidArgument) as e:
        with client.trajectory("Refund order #1", trajectory_id="ck-1") as t:
            t.tool("get_order", {"id": 1}, "delivered", duration_ms=3)
            t.tool("refund", {"id": 1}, "ok", duration_ms="fast")
    assert e.value.field == "steps[1].duration_ms" and "number" in e.value.message
    got = client.get_trajectory("ck-1", min_lsn=client.stats()["submitted_lsn"])
    assert (got["status"], got["n_steps"]) == ("failed", 2)  # not left running
    assert (got["steps"][1]["kind"], got["steps"][1]["name"]) == ("error", "InvalidArgument")


def test_steps_after_finish_and_a_second_finish_are_refused(server, client):
    with client.trajectory("Cancel order #2", trajectory_id="ck-2") as t:
        t.tool("cancel", {"id": 2}, "ok")
        lsn = t.finish(success=True, reward=1.0)
        with pytest.raises(Conflict, match="is finished"):
            t.tool("late", {}, "x")
        with pytest.raises(Conflict, match="finish it again"):
            t.finish(success=False)
    got = client.get_trajectory("ck-2", min_lsn=lsn)
    assert (got["status"], got["reward"], got["n_steps"]) == ("succeeded", 1.0, 1)


def test_live_runs_get_times_and_keep_unknown_fields(server, client):
    with pytest.warns(UnknownFieldWarning) as seen:
        with client.trajectory("Track parcel #3", trajectory_id="ck-3", agent="bot",
                               team="support", agnet="typo") as t:
            t.tool("track", {"id": 3}, "in transit", duration_ms=12.5, cache="hit")
            t.step("llm", output="done", latency_ms=40, attributes={"temperature": 0})
            t.tool("track", tool_name="again")
            lsn = t.finish(success=True)
    assert sorted(str(w.message).split(" is not")[0] for w in seen) == \
        ["agnet", "steps[2].tool_name"]  # near a field's name; latency_ms is an alias
    got = client.get_trajectory("ck-3", min_lsn=lsn)
    assert got["started_at"] is not None and got["ended_at"] >= got["started_at"]
    assert '"team":"support"' in got["meta"].replace(" ", "")
    tool, llm, _ = got["steps"]
    assert tool["started_at"] is not None and '"cache":"hit"' in tool["attributes"]
    assert llm["duration_ms"] == 40 and '"temperature":0' in llm["attributes"]


def test_tool_values_json_has_no_form_for_are_stored_not_fatal(server, client):
    """An agent's tool returns what it returns: datetimes, numpy values, Decimals, sets,
    bytes, its own classes, exceptions. The run goes on; a structure is stored as JSON
    text, a value JSON has as a string as that string, an exception as ``Type: message``."""
    from datetime import UTC, datetime
    from decimal import Decimal

    import numpy as np

    class Parcel:
        def __str__(self) -> str:
            return "Parcel(#3)"

    with client.trajectory("Track parcel #3", trajectory_id="ck-json") as t:
        t.tool("track", {"at": datetime(2025, 8, 1, tzinfo=UTC), "kg": np.float32(1.5),
                         "n": np.int64(2), "price": Decimal("9.90"), "tags": {"b", "a"},
                         "raw": b"ok", "city": "Zürich"}, Parcel())
        t.llm(np.array([1, 2]))
        t.tool("charge", {"card": "4242"}, None, error=ValueError("card declined"))
        t.tool("label", b"\x89PNG", datetime(2025, 8, 1, tzinfo=UTC))
        lsn = t.finish(success=True)
    got = client.get_trajectory("ck-json", min_lsn=lsn)
    assert (got["status"], got["n_steps"]) == ("succeeded", 4)
    tool, llm, charge, label = got["steps"]
    assert json.loads(tool["input"]) == {"at": "2025-08-01T00:00:00+00:00", "kg": 1.5, "n": 2,
                                         "price": "9.90", "tags": ["a", "b"], "raw": "ok",
                                         "city": "Zürich"}
    assert "Zürich" in tool["input"] and tool["output"] == "Parcel(#3)"
    assert json.loads(llm["output"]) == [1, 2]
    assert charge["error"] == "ValueError: card declined"
    assert json.loads(label["input"]) == {"base64": "iVBORw=="}  # never altered: not UTF-8
    assert label["output"] == "2025-08-01T00:00:00+00:00"


def test_text_utf8_cannot_carry_is_refused_at_the_call_naming_the_field(server, client):
    """A lone surrogate (bytes decoded with errors='surrogateescape') is no UTF-8: refused
    where it is logged, naming the field, instead of a bare TypeError from the encoder."""
    with client.trajectory("Track parcel #4", trajectory_id="ck-utf8") as t:
        with pytest.raises(InvalidArgument, match="lone surrogate") as e:
            t.tool("read", {"path": "caf\udce9.txt"}, "ok")
        assert e.value.field == "steps[0].input"
        with pytest.raises(InvalidArgument, match="lone surrogate") as e:
            t.tool("read", "x", "\udce9")
        assert e.value.field == "steps[0].output"
        t.tool("read", "x", "ok")
        lsn = t.finish(success=True)
    assert client.get_trajectory("ck-utf8", min_lsn=lsn)["n_steps"] == 1


def test_names_that_clash_keep_both_values_and_text_is_no_list(server, client):
    """An unknown field named like a key of ``meta`` / ``attributes`` keeps both values, as
    files keep them (``_fields``); a text where a list is wanted is refused, not split."""
    with client.trajectory("Track parcel #5", trajectory_id="ck-clash", meta={"source": "a"},
                           source="b") as t:
        t.step("tool", attributes={"cache": "warm"}, cache="cold")
        lsn = t.finish(success=True)
    got = client.get_trajectory("ck-clash", min_lsn=lsn)
    assert json.loads(got["meta"]) == {"source": "a", "_fields": {"source": "b"}}
    assert json.loads(got["steps"][0]["attributes"]) == {"cache": "warm",
                                                         "_fields": {"cache": "cold"}}
    for call in (lambda: client.start("t", tags="qa"),
                 lambda: client.list_trajectories(tags="qa"),
                 lambda: client.get_context("t", tags="qa")):
        with pytest.raises(InvalidArgument, match=r"did you mean \['qa'\]") as e:
            call()
        assert e.value.field.endswith("tags")


def test_what_ended_a_run_is_its_last_step_and_oversize_or_bad_tokens_are_named(server,
                                                                                client):
    with pytest.raises(ValueError):
        with client.trajectory("Refund order #6", trajectory_id="ck-exc") as t:
            t.tool("get_order", {"id": 6}, "delivered")
            raise ValueError("card expired")
    got = client.get_trajectory("ck-exc", min_lsn=client.stats()["submitted_lsn"])
    assert got["status"] == "failed"
    assert [(s["kind"], s["name"], s["error"]) for s in got["steps"]][-1] == \
        ("error", "ValueError", "card expired")
    with LakeClient(server.target, max_message_bytes=64 << 10) as small, \
            pytest.raises(InvalidArgument, match="larger than this client's max_message_bytes"):
        small.append(small.start("t", trajectory_id="ck-big"),
                     [{"index": 0, "kind": "tool", "output": "x" * (100 << 10)}])
    with LakeClient(server.target, token="cl_abc\n") as c:
        assert c._metadata == (("authorization", "Bearer cl_abc"),)
    with pytest.raises(InvalidArgument) as e:
        LakeClient(server.target, token="cl_a\tb")
    assert e.value.field == "token"


def test_times_are_read_as_files_read_them(server, client, tmp_path):
    """A time the client sends means what it means in a JSONL file: a datetime (naive is
    UTC), ISO 8601 text, or epoch seconds; an integer is never taken for microseconds."""
    from datetime import UTC, datetime

    from ingest import ingest_paths

    at = datetime(2025, 8, 1, 16, 16, 37, 500_000, tzinfo=UTC)
    forms = [at, at.replace(tzinfo=None), "2025-08-01T16:16:37.5Z", at.timestamp()]
    for i, form in enumerate(forms):
        tid = client.start("Track parcel #4", trajectory_id=f"tm-{i}", started_at=form)
        client.append(tid, [{"index": 0, "kind": "tool", "started_at": form}])
        lsn = client.finish(tid, success=True, ended_at=form)
        got = client.get_trajectory(tid, min_lsn=lsn)
        assert (got["started_at"], got["steps"][0]["started_at"], got["ended_at"]) == \
            (at, at, at), form
    whole = int(at.timestamp())
    client.finish(client.start("t", trajectory_id="tm-int", started_at=whole), ended_at=whole,
                  success=True)
    f = tmp_path / "runs.jsonl"
    f.write_text(json.dumps({"trajectory_id": "tm-file", "task": "t", "started_at": whole}))
    ingest_paths(server.lake, [str(f)])
    rows = server.lake.sql("select trajectory_id, started_at from trajectories where "
                           "trajectory_id in ('tm-int', 'tm-file')").fetchall()
    assert {r[1] for r in rows} == {at.replace(microsecond=0)} and len(rows) == 2
    assert [r["trajectory_id"] for r in client.list_trajectories(
        since=whole, until="2025-08-01T16:16:38Z").trajectories] == \
        ["tm-0", "tm-1", "tm-2", "tm-3", "tm-file", "tm-int"]
    with pytest.raises(InvalidArgument, match="ISO 8601") as e:
        client.start("t", started_at="yesterday")
    assert e.value.field == "started_at"
    with pytest.raises(InvalidArgument) as e:
        client.finish("tm-0", ended_at=True)
    assert e.value.field == "ended_at"


def test_outcome_and_report_values_of_the_wrong_type_name_the_field(server, client):
    tid = client.start("a task", trajectory_id="ck-4")
    with pytest.raises(InvalidArgument) as e:
        client.finish(tid, reward="high")
    assert e.value.field == "reward"
    with pytest.raises(InvalidArgument) as e:
        client.report("ctx_x", reward="high")
    assert e.value.field == "reward"
    for k in (0, -1, 2.5):
        with pytest.raises(InvalidArgument) as e:
            client.get_context("a task", k=k)
        assert e.value.field == "k"


def test_one_record_of_another_type_does_not_sink_the_batch(server, client):
    rows = [run("m1"), run("m2", outcome={"success": True, "reward": "high"}), run("m3"),
            run("m4", steps=[{"kind": "tool", "duration_ms": 1},
                             {"kind": "tool", "duration_ms": "fast"}])]
    reply = client.ingest_arrow(rows)
    assert reply.accepted == 2
    assert [(r["index"], r["field"]) for r in reply.rejects] == \
        [(1, "outcome.reward"), (3, "steps[1].duration_ms")]
    page = client.list_trajectories(min_lsn=reply.lsn)
    assert [t["trajectory_id"] for t in page.trajectories] == ["m1", "m3"]
    assert all("steps" not in t for t in page.trajectories)  # a listing has none
    with pytest.raises(InvalidArgument, match="wrap one record in a list"):
        client.ingest_arrow(run("m5"))
    with pytest.warns(UnknownFieldWarning, match="tool_name is not a field.*did you mean 'name'"):
        client.ingest_arrow([run("m6", steps=[{"kind": "tool", "tool_name": "refund"}])])


def test_targets_as_people_write_them():
    assert _target("127.0.0.1") == "127.0.0.1:50051"
    assert _target("http://localhost:50052/") == "localhost:50052"
    assert _target("[::1]") == "[::1]:50051" and _target("[::1]:7") == "[::1]:7"
    assert _target("unix:/tmp/s.sock") == "unix:/tmp/s.sock"
    with pytest.raises(InvalidArgument):
        LakeClient("https://example.com")


def test_a_request_over_the_servers_limit_is_named_not_retried(lake_dir):
    """The server's max_message_bytes below the client's: its RESOURCE_EXHAUSTED can never
    succeed on a retry, so the client says what to change at once."""
    import time

    from server.app import serve

    from .conftest import make_settings

    srv = serve(make_settings(lake_dir).replace(max_message_bytes=1 << 20), "127.0.0.1", 0)
    try:
        with LakeClient(srv.target, retry_s=10) as c:
            t0 = time.monotonic()
            with pytest.raises(InvalidArgument, match="larger than its max_message_bytes") as e:
                c.ingest_arrow([{"trajectory_id": "big", "task": "t",
                                 "steps": [{"kind": "tool", "output": "x" * (2 << 20)}]}])
            assert e.value.field == "request" and time.monotonic() - t0 < 5
    finally:
        srv.stop(0)


def test_retried_calls_keep_the_clients_timeout_and_a_stream_has_none(server):
    """6a94ec1 named the retry's own end time like the call's ``deadline`` flag: every
    retried call's first attempt went without a timeout (a hung server hung the agent)."""
    seen = []

    def method(request, *, metadata, timeout):  # a stub's signature, recording the timeout
        seen.append(timeout)
        return "ok"

    with LakeClient(server.target, timeout=7.0) as c:
        assert c._retry(method, None) == "ok"
        assert c._retry(method, None, deadline=False) == "ok"
    assert seen == [7.0, None]
