"""Live trajectories over gRPC: start, append, stream, finish; the client's context manager;
and a server killed with SIGKILL in the middle of a stream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lake import Conflict, InvalidArgument, Lake, NotFound
from server.client import LakeClient, StepsRefused


def test_trajectory_context_manager(server, client):
    with client.trajectory("Refund order #9", agent="bot", trajectory_id="ctx-1") as t:
        t.llm("I will look it up", tokens_in=12, tokens_out=5)
        for i in range(40):  # more than a batch: appends go in several calls
            t.tool("get_order", {"id": i}, "delivered", duration_ms=1.5)
        lsn = t.finish(success=True, reward=1.0)
    got = client.get_trajectory("ctx-1", min_lsn=lsn)
    assert (got["status"], got["success"], got["n_steps"], got["agent"]) == \
        ("succeeded", True, 41, "bot")
    assert [s["index"] for s in got["steps"]] == list(range(41))
    assert got["steps"][1]["input"] == '{"id":0}'  # as files store it
    with pytest.raises(RuntimeError):
        with client.trajectory("crashes", trajectory_id="ctx-2") as t:
            t.tool("x")
            raise RuntimeError("agent bug")
    got = client.get_trajectory("ctx-2", min_lsn=client.finish("ctx-2", status="failed"))
    assert got["status"] == "failed" and got["n_steps"] == 2  # and the error: a step


def test_append_lands_good_steps_and_rejects_bad_ones(server, client):
    tid = client.start("a task", trajectory_id="p-1")
    with pytest.raises(StepsRefused, match=r"2 step\(s\) refused by the lake's rules, 2 "
                                           r"landed \(durable\): steps\[1\].kind") as e:
        client.append(tid, [{"index": 0, "kind": "tool"}, {"index": 1, "kind": ""},
                            {"index": 2, "kind": "tool", "duration_ms": -4.0},
                            {"index": 3, "kind": "llm"}])
    reply = e.value.reply  # the safe default raises; what landed is in its reply
    assert e.value.field == "steps[1].kind" and reply.accepted == 2
    assert [r["index"] for r in reply.rejects] == [1, 2]
    assert reply.rejects[1]["field"] == "steps[2].duration_ms"
    got = client.get_trajectory(tid, min_lsn=reply.lsn)
    assert [s["index"] for s in got["steps"]] == [0, 3]
    with pytest.raises(NotFound, match="not started"):
        client.append("never-started", [{"index": 0, "kind": "tool"}])
    with pytest.raises(InvalidArgument) as e:
        client.finish(tid)
    assert e.value.field == "status"


def test_a_finished_trajectory_is_final_but_retries_pass(server, client):
    tid = client.start("a task", trajectory_id="f-1")
    client.append(tid, [{"index": 0, "kind": "tool"}, {"index": 1, "kind": "llm"}])
    lsn = client.finish(tid, success=True, reward=1.0)
    assert client.finish(tid, success=True, reward=1.0) >= lsn  # a retry: fine
    with pytest.raises(Conflict, match="already finished .*changes reward") as e:
        client.finish(tid, success=True, reward=0.0)
    assert e.value.field == "reward"
    assert client.append(tid, [{"index": 1, "kind": "llm"}]).accepted == 1  # a retried append
    with pytest.raises(Conflict, match="steps cannot be added after FinishTrajectory"):
        client.append(tid, [{"index": 2, "kind": "tool"}])
    got = client.get_trajectory(tid, min_lsn=client.stats()["submitted_lsn"])
    assert (got["status"], got["reward"], got["n_steps"]) == ("succeeded", 1.0, 2)
    done = client.ingest_arrow([{"trajectory_id": "f-2", "task": "t", "status": "failed",
                                 "steps": [{"kind": "tool"}]}])  # loaded whole: finished
    client.get_trajectory("f-2", min_lsn=done.lsn)
    with pytest.raises(Conflict, match=r"is finished \(status failed"):
        client.append("f-2", [{"index": 1, "kind": "tool"}])
    with pytest.raises(Conflict):
        client.finish("f-2", status="succeeded")


def test_one_trajectory_id_is_one_run(server, client):
    """The QA's race: two agents start one id with their own tasks. The second start is
    refused at the call; a step re-sent at an index with other content is rejected, not
    acknowledged and dropped; an identical re-send is a retry."""
    client.start("Task A: refund #W1", trajectory_id="race", agent="A")
    with pytest.raises(Conflict, match="'race' is taken by another run") as e:
        client.start("Task B: cancel #W2", trajectory_id="race", agent="B")
    assert e.value.field == "trajectory_id"
    client.start("Task A: refund #W1", trajectory_id="race", agent="A")  # a retry
    client.append("race", [{"index": 0, "kind": "tool", "name": "A0"}])
    reply = client.append("race", [{"index": 0, "kind": "tool", "name": "B0"},
                                   {"index": 1, "kind": "tool", "name": "A1"}], strict=False)
    assert reply.accepted == 1 and len(reply.rejects) == 1
    assert reply.rejects[0]["index"] == 0 and reply.rejects[0]["field"] == "steps[0].index"
    assert "already has a step at index 0 with other content" in reply.rejects[0]["reason"]
    lsn = client.finish("race", success=True)
    got = client.get_trajectory("race", min_lsn=lsn)
    assert (got["task"], got["agent"], [s["name"] for s in got["steps"]]) == \
        ("Task A: refund #W1", "A", ["A0", "A1"])


def test_stream_of_one_step_per_message(server, client):
    tid = client.start("streamed", trajectory_id="s-1")
    steps = [{"index": i, "kind": "tool", "name": f"t{i % 7}"} for i in range(2000)]
    reply = client.stream(tid, steps)
    assert reply.accepted == 2000
    again = client.stream(tid, steps[:500])  # a retried stream changes nothing
    assert again.accepted == 500
    lsn = client.finish(tid, success=True)
    assert client.get_trajectory(tid, min_lsn=lsn)["n_steps"] == 2000


def test_stream_rejects_name_the_position_in_the_whole_stream(server, client):
    tid = client.start("streamed with bad steps", trajectory_id="s-2")
    steps = [{"index": i, "kind": "tool"} for i in range(1200)]
    steps[3]["duration_ms"] = steps[900]["duration_ms"] = -4.0  # 900: the second group
    steps[600]["attributes"] = "["  # not JSON: refused by the message's conversion
    steps[1100]["cost_usd"] = -1.0  # refused by the lake's rules, in the third group
    with pytest.raises(StepsRefused, match="4 step.s. refused .* 1196 landed"):
        client.stream(tid, steps)
    reply = client.stream(tid, steps, strict=False)  # a retry: the same refusals
    assert reply.accepted == 1196
    assert [(r["index"], r["field"]) for r in reply.rejects] == \
        [(3, "steps[3].duration_ms"), (600, "steps[600].attributes"),
         (900, "steps[900].duration_ms"), (1100, "steps[1100].cost_usd")]
    got = client.get_trajectory(tid, min_lsn=client.finish(tid, success=True))
    assert got["n_steps"] == 1196


def test_one_unreadable_step_does_not_sink_its_batch(server, client):
    tid = client.start("a task", trajectory_id="p-2")
    reply = client.append(tid, [{"index": 0, "kind": "tool"},
                                {"index": 1, "kind": "tool", "attributes": "oops"},
                                {"index": 2, "kind": "tool", "cost_usd": -1.0},
                                {"index": 3, "kind": "tool", "duration_ms": -1.0},
                                {"index": 4, "kind": "llm"}], strict=False)
    assert reply.accepted == 2
    assert [(r["index"], r["field"]) for r in reply.rejects] == \
        [(1, "steps[1].attributes"), (2, "steps[2].cost_usd"), (3, "steps[3].duration_ms")]
    assert all(r["reason"] for r in reply.rejects)
    got = client.get_trajectory(tid, min_lsn=reply.lsn)
    assert [s["index"] for s in got["steps"]] == [0, 4]
    reply = client.append(tid, [{"index": 5, "kind": "tool", "attributes": "[]"}],
                          strict=False)
    assert (reply.accepted, [r["index"] for r in reply.rejects]) == (0, [0])  # its position


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(data: Path, port: int) -> subprocess.Popen:
    lake = Path(sys.executable).with_name("lake")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}
    proc = subprocess.Popen([str(lake), "serve", "--data", str(data), "--port", str(port),
                             "--no-sample"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    with LakeClient(f"127.0.0.1:{port}", timeout=2) as c:
        while time.monotonic() < deadline:
            try:
                c.stats()
                return proc
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")


def test_a_run_rides_out_a_server_restart(lake_dir):
    """A server restarting (seconds) under a live run: the client's calls wait for it
    (``retry_s``) instead of failing the run and dropping its buffered steps."""
    from server.app import serve

    from .conftest import make_settings

    port, started = _free_port(), []
    srv = serve(make_settings(lake_dir), "127.0.0.1", port)
    restart = threading.Timer(2.5, lambda: started.append(
        serve(make_settings(lake_dir), "127.0.0.1", port)))
    try:
        with LakeClient(f"127.0.0.1:{port}") as c:
            with c.trajectory("Refund order #5", trajectory_id="rs-1") as t:
                t.tool("get_order", {"id": 5}, "delivered")
                t.flush()
                srv.stop(grace=1)
                restart.start()
                t.tool("refund", {"id": 5}, "ok")
                lsn = t.finish(success=True)  # waits for the new server
            got = c.get_trajectory("rs-1", min_lsn=lsn)
            assert (got["status"], got["n_steps"]) == ("succeeded", 2)
    finally:
        restart.join()
        for s in started:
            s.stop(grace=1)


@pytest.mark.slow
def test_sigkill_during_stream_loses_no_acknowledged_step(tmp_path):
    data, port = tmp_path / "lake", _free_port()
    proc = _start_server(data, port)
    target = f"127.0.0.1:{port}"
    steps = [{"index": i, "kind": "tool", "name": "t", "output": "x" * 200}
             for i in range(60_000)]
    with LakeClient(target, timeout=120) as c:
        tid = c.start("long run", trajectory_id="k-1")
        acked = c.stream(tid, steps[:1000]).accepted  # acknowledged before the crash
        assert acked == 1000
        errors: list[BaseException] = []
        replies = []

        def stream_rest() -> None:
            try:
                replies.append(c.stream(tid, steps[1000:]))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=stream_rest)
        t.start()
        time.sleep(1.0)  # the stream is under way (and partly logged, unacknowledged)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = _start_server(data, port)  # restart: the log replays; the same stream() call
        try:  # sends its steps again once the server answers
            t.join(90)
            assert not errors and len(replies) == 1, errors
            assert (replies[0].accepted, replies[0].rejects) == (59_000, [])
            lsn = c.finish(tid, success=True)
            got = c.get_trajectory(tid, min_lsn=max(lsn, replies[0].lsn))
            assert (got["n_steps"], got["status"]) == (60_000, "succeeded"), \
                c.versions()[-6:]
            assert [s["index"] for s in got["steps"]] == list(range(60_000))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    with Lake.open(str(data), readonly=True) as lake:
        assert lake.sql("select count(*), count(distinct index) from steps").fetchall() == \
            [(60_000, 60_000)]
