"""``Run`` (``client.trajectory``) at its edges, against a real server: steps bigger than a
message, batches over one, refusals, threads sharing a run, a server away longer than
``retry_s``, and reading a run right after finishing it."""

from __future__ import annotations

import socket
import sys
import threading
import time
from contextlib import ExitStack

import pytest

from lake.errors import ALL_ERRORS
from server.app import serve
from server.client import (
    DeadlineExceeded,
    InvalidArgument,
    LakeClient,
    NotFound,
    Unavailable,
)

from .conftest import make_settings

LIMIT = 256 << 10  # a small client max_message_bytes: big steps without big memory


def _steps(c: LakeClient, tid: str) -> list[tuple[int, str]]:
    got = c.get_trajectory(tid, min_lsn=c.stats()["submitted_lsn"])
    return [(s["index"], s["name"]) for s in got["steps"]]


def test_a_batch_over_a_message_goes_in_several_and_nothing_is_refused(server):
    """QA F-BIG (a): four 100 KiB outputs in one batch (over the client's 256 KiB) raised
    at finish, and wrote a last step reading "0 refusal(s)", although every step landed."""
    with LakeClient(server.target, max_message_bytes=LIMIT) as c:
        with c.trajectory("Export the orders table", trajectory_id="big-a") as t:
            t.tool("count_rows", {"t": "orders"}, "12")
            for i in range(4):
                t.tool(f"dump_{i}", {"part": i}, "Y" * (100 << 10))
            t.tool("notify", {"to": "ops"}, "sent")
            t.finish(success=True)
        assert _steps(c, "big-a") == [(0, "count_rows"), (1, "dump_0"), (2, "dump_1"),
                                      (3, "dump_2"), (4, "dump_3"), (5, "notify")]


def test_logging_a_step_never_raises_for_other_steps_sending(server):
    """QA F-BIG (b): with two big outputs buffered, every run.tool() from the 32nd step on
    raised the batch's transport error, though those steps stayed buffered and landed."""
    with LakeClient(server.target, max_message_bytes=LIMIT) as c:
        with c.trajectory("Export two tables", trajectory_id="big-b") as t:
            t.tool("dump_orders", {}, "Y" * (150 << 10))
            t.tool("dump_users", {}, "Z" * (150 << 10))
            for i in range(40):
                t.tool("small", {"i": i}, i)  # none raises
            t.finish(success=True)
        steps = _steps(c, "big-b")
    assert [i for i, _ in steps] == list(range(42)) and steps[-1] == (41, "small")


def test_a_step_no_message_can_carry_is_refused_at_its_call(server):
    """QA F-BIG (c): a step over the message limit was lost and its run stored succeeded.
    Now its call raises, naming the field, its size, the limit and what to do; the step is
    not kept and takes no index, so the run goes on and stores what it logged."""
    with LakeClient(server.target, max_message_bytes=LIMIT) as c:
        with c.trajectory("Export the orders table", trajectory_id="big-c") as t:
            t.tool("count_rows", {"t": "orders"}, "12")
            with pytest.raises(InvalidArgument) as e:
                t.tool("dump_table", {"t": "orders"}, "Y" * (300 << 10))
            assert e.value.field == "steps[1].output"
            assert "307,200 bytes" in e.value.message and f"{LIMIT:,}" in e.value.message
            assert "log a reference" in e.value.message
            assert "--max-message-bytes" in e.value.message
            with pytest.raises(InvalidArgument) as e:
                t.tool("upload", "X" * (300 << 10), "ok")
            assert e.value.field == "steps[1].input"
            t.tool("dump_table", {"t": "orders"}, "s3://exports/orders.csv")  # a reference
            t.finish(success=True)
        assert _steps(c, "big-c") == [(0, "count_rows"), (1, "dump_table")]


def test_a_server_limit_below_the_clients_splits_batches_and_names_the_step(lake_dir):
    """The server's max_message_bytes (1 MiB) below the client's (64 MiB): the client cannot
    refuse at the call what it cannot know; a batch the server refuses goes again a step at
    a time, and a step no message of the server's takes is a refusal, named."""
    srv = serve(make_settings(lake_dir).replace(max_message_bytes=1 << 20), "127.0.0.1", 0)
    try:
        with LakeClient(srv.target) as c:
            with pytest.raises(InvalidArgument) as e:
                with c.trajectory("Export the orders table", trajectory_id="srv-1") as t:
                    for i in range(4):
                        t.tool(f"dump_{i}", {"part": i}, "Y" * (400 << 10))
                    t.tool("dump_all", {}, "Z" * (2 << 20))
                    t.tool("notify", {"to": "ops"}, "sent")
                    t.finish(success=True)
            assert e.value.field == "steps[4]"
            assert "larger than its max_message_bytes" in e.value.message
            assert _steps(c, "srv-1") == [(0, "dump_0"), (1, "dump_1"), (2, "dump_2"),
                                          (3, "dump_3"), (5, "notify"), (6, "steps_refused")]
    finally:
        srv.stop(0)


def test_every_refused_step_is_named_once_in_the_error_and_the_last_step(server, client):
    """Refusals by the lake's rules: no logging call raises for them (the QA saw an earlier
    step's refusal raised by a later call); finish raises after finishing the run, naming
    all of them, as does the run's last step (bounded text), not only the first."""
    with pytest.raises(InvalidArgument) as e:
        with client.trajectory("Notify the team", trajectory_id="ref-1") as t:
            for i in range(40):  # one bad step in the first batch, one after it
                bad = {"duration_ms": -3.0} if i == 3 else {"cost_usd": -1.0} if i == 35 \
                    else {}
                t.tool("notify", {"i": i}, "sent", **bad)
            t.finish(success=True, reward=1.0)
    assert e.value.field == "steps[3].duration_ms"
    assert "2 step(s) refused" in e.value.message and "steps[35].cost_usd" in e.value.message
    got = client.get_trajectory("ref-1")
    assert (got["status"], got["success"], got["n_steps"]) == ("succeeded", True, 39)
    last = got["steps"][-1]
    assert (last["index"], last["kind"], last["name"]) == (40, "error", "steps_refused")
    assert last["error"].startswith("2 step(s) refused")
    assert "steps[3].duration_ms: " in last["error"] and "steps[35].cost_usd: " in last["error"]
    with client.trajectory("Notify everyone", trajectory_id="ref-2") as t:
        for i in range(200):
            t.tool("notify", {"i": i}, "sent", duration_ms=-1.0)
        with pytest.raises(InvalidArgument, match="200 step"):
            t.finish(success=False)
    text = client.get_trajectory("ref-2")["steps"][-1]["error"]
    assert len(text) <= 4000 and text.endswith("more") and "steps[0].duration_ms" in text


def test_one_run_shared_by_threads_keeps_every_step_once(server, client):
    """QA F-THREAD: parallel tool calls logging to one Run lost ~2% of their steps (the
    numbering and the buffer's swap raced); a switch every microsecond shows it each time."""
    threads, each = 8, 150
    raised: list[BaseException] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with client.trajectory("Check every warehouse", trajectory_id="thr-1") as t:
            def log(n: int) -> None:
                try:
                    for j in range(each):
                        t.tool("probe", {"n": n, "j": j}, j)
                except BaseException as e:  # noqa: BLE001 - asserted below
                    raised.append(e)

            pool = [threading.Thread(target=log, args=(n,)) for n in range(threads)]
            for p in pool:
                p.start()
            for p in pool:
                p.join()
            t.finish(success=True)
    finally:
        sys.setswitchinterval(interval)
    assert raised == []
    got = client.get_trajectory("thr-1")
    assert [s["index"] for s in got["steps"]] == list(range(threads * each))
    assert sorted(s["input"] for s in got["steps"]) == \
        sorted(f'{{"n":{n},"j":{j}}}' for n in range(threads) for j in range(each))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_away_past_retry_s_costs_one_wait_and_drops_nothing(lake_dir):
    """QA F-OUTAGE: the block waited ~3x retry_s (finish, then __exit__'s send and finish)
    and then dropped the buffered steps, leaving the run running. Now it gives up after one
    ``retry_s``, says what is kept and how to send it, and a later finish lands it all."""
    port, retry_s = _free_port(), 2.0
    srv = serve(make_settings(lake_dir), "127.0.0.1", port)
    with LakeClient(f"127.0.0.1:{port}", retry_s=retry_s) as c, ExitStack() as later:
        b = later.enter_context(c.trajectory("Refund order #6", trajectory_id="out-2"))
        with pytest.raises(Unavailable) as e:
            with c.trajectory("Refund order #5", trajectory_id="out-1") as a:
                a.tool("get_order", {"id": 5}, "delivered")
                a.flush()
                srv.stop(grace=1)
                for i in range(9):
                    a.tool("refund", {"id": 5, "try": i}, "ok")
                t0 = time.monotonic()
                a.finish(success=True)
        took = time.monotonic() - t0
        assert took < 1.6 * retry_s, took
        assert "'out-1' is not finished: 9 step(s) not sent (steps[1] to steps[9])" in \
            e.value.message and "call run.finish(...) again" in e.value.message
        t0 = time.monotonic()  # an exception of the agent's own ends the other run's block
        with pytest.raises(RuntimeError, match="agent bug") as boom:
            with later:
                b.tool("get_order", {"id": 6}, "delivered")
                raise RuntimeError("agent bug")
        assert time.monotonic() - t0 < 1.6 * retry_s
        assert any("'out-2' is not finished: 2 step(s) not sent" in n
                   for n in boom.value.__notes__)
        srv = serve(make_settings(lake_dir), "127.0.0.1", port)  # back, on the same data
        try:
            a.finish(success=True)
            b.finish(status="failed")
            got = c.get_trajectory("out-1")
            assert (got["status"], got["n_steps"]) == ("succeeded", 10)
            got = c.get_trajectory("out-2")
            assert (got["status"], [(s["kind"], s["name"]) for s in got["steps"]]) == \
                ("failed", [("tool", "get_order"), ("error", "RuntimeError")])
        finally:
            srv.stop(grace=1)


def test_a_client_reads_its_own_writes_by_default(lake_dir):
    """QA F-RYW: get_trajectory right after finish was NotFound unless given min_lsn.
    Reads now wait for the client's last write; min_lsn=0 still reads without waiting."""
    srv = serve(make_settings(lake_dir, flush_interval_ms=5000), "127.0.0.1", 0)
    try:
        with LakeClient(srv.target) as c:
            with c.trajectory("Refund order #7", trajectory_id="ryw-1") as t:
                t.tool("refund", {"id": 7}, "ok")
                t.finish(success=True)
            with pytest.raises(NotFound):
                c.get_trajectory("ryw-1", min_lsn=0)  # committed within 5 s: not yet
            assert c.get_trajectory("ryw-1")["status"] == "succeeded"
            assert c.lsn == t.lsn > 0
            c.start("Refund order #8", trajectory_id="ryw-2")
            assert [r["trajectory_id"] for r in c.list_trajectories().trajectories] == \
                ["ryw-1", "ryw-2"]
            c._wrote(10**9)  # a position this server never logged (another server's)
            with pytest.raises(InvalidArgument) as e:
                c.get_trajectory("ryw-1")
            assert e.value.field == "min_lsn"
            assert "this client's last write" in e.value.message
    finally:
        srv.stop(grace=1)


def test_every_error_the_client_raises_comes_from_it_and_says_what_to_do(server):
    """QA F-ERR: NotFound & co. were not importable from server.client; the client's own
    deadline read as the server's fault; a malformed address was retried as unreachable."""
    import server.client as client_module

    assert all(getattr(client_module, cls.__name__) is cls for cls in ALL_ERRORS)
    with socket.socket() as hung:  # a peer that takes the connection and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        with LakeClient(f"127.0.0.1:{hung.getsockname()[1]}", timeout=0.3) as c, \
                pytest.raises(DeadlineExceeded, match=r"this client's timeout \(0.3 s") as e:
            c.get_trajectory("nope")
    assert "timeout=" in e.value.message
    for target in ("grpc://127.0.0.1:50731", "127.0.0.1:notaport", "127.0.0.1:70000",
                   "localhost:50051/path", ""):
        t0 = time.monotonic()
        with pytest.raises(InvalidArgument) as e:
            LakeClient(target)
        assert e.value.field == "target" and time.monotonic() - t0 < 0.5
    assert LakeClient("dns:///localhost:50051").target == "dns:///localhost:50051"
