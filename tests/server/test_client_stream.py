"""``LakeClient.stream``: a bad step or the caller's own exception ends the stream after the
steps before it, which land; a stream cut by a server restart is sent again."""

from __future__ import annotations

import socket
import traceback
from collections.abc import Iterator

import pytest

from lake import InvalidArgument, Unavailable
from server import client_stream
from server.app import serve
from server.client import LakeClient

from .conftest import make_settings


class AgentCrashed(Exception):
    pass


def _landed(client: LakeClient, tid: str) -> list[int]:
    got = client.get_trajectory(tid, min_lsn=client.stats()["submitted_lsn"])
    return [s["index"] for s in got["steps"]]


@pytest.mark.parametrize("per_message", [1, 2, 64])
def test_a_bad_step_names_its_field_and_the_steps_before_it_land(server, client, per_message):
    tid = client.start("streamed", trajectory_id=f"bad-{per_message}")
    taken = []

    def steps() -> Iterator[dict]:
        for i in range(10):
            taken.append(i)
            yield {"index": i, "kind": "tool", "tokens_in": "many" if i == 5 else 3}

    with pytest.raises(InvalidArgument) as e:
        client.stream(tid, steps(), per_message=per_message)
    assert e.value.field == "steps[5].tokens_in"
    assert "the 5 step(s) before it were acknowledged (5 stored" in e.value.message
    assert "stream the rest from steps[5]" in e.value.message
    assert taken == list(range(6))  # nothing past the bad step was taken
    assert _landed(client, tid) == [0, 1, 2, 3, 4]


def test_an_exception_of_the_callers_steps_propagates_as_itself(server, client):
    tid = client.start("streamed", trajectory_id="crash-1")

    def agent_steps() -> Iterator[dict]:
        yield from ({"index": i, "kind": "tool"} for i in range(3))
        raise AgentCrashed("the model returned nothing")

    with pytest.raises(AgentCrashed, match="the model returned nothing") as e:
        client.stream(tid, agent_steps(), per_message=2)
    assert "agent_steps" in [f.name for f in traceback.extract_tb(e.tb)]  # its traceback
    assert any("the 3 step(s) before it were acknowledged" in n for n in e.value.__notes__)
    assert _landed(client, tid) == [0, 1, 2]


def test_what_is_not_a_step_is_named(server, client):
    tid = client.start("streamed", trajectory_id="odd-1")
    with pytest.raises(InvalidArgument) as e:
        client.stream(tid, [{"index": 0, "kind": "tool"}, "a step"])
    assert (e.value.field, _landed(client, tid)) == ("steps[1]", [0])
    with pytest.raises(InvalidArgument) as e:
        client.stream(tid, {"index": 0, "kind": "tool"})  # one step, not in a list
    assert e.value.field == "steps"
    with pytest.raises(InvalidArgument) as e:
        client.stream(tid, [], per_message=0)
    assert e.value.field == "per_message"


def _restart_midway(lake_dir, port: int, at: int, n: int, started: list) -> Iterator[dict]:
    """Steps 0..n-1; at step ``at`` the server stops and a new one starts on the port."""
    for i in range(n):
        if i == at:
            started[0].stop(grace=0)
            started.append(serve(make_settings(lake_dir), "127.0.0.1", port))
        yield {"index": i, "kind": "tool", "name": "t"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stream_cut_by_a_restart_is_sent_again(lake_dir):
    port = _free_port()
    started = [serve(make_settings(lake_dir), "127.0.0.1", port)]
    try:
        with LakeClient(f"127.0.0.1:{port}") as c:
            tid = c.start("long run", trajectory_id="rs-1")
            reply = c.stream(tid, _restart_midway(lake_dir, port, 300, 600, started))
            assert len(started) == 2 and (reply.accepted, reply.rejects) == (600, [])
            got = c.get_trajectory(tid, min_lsn=reply.lsn)
            assert [s["index"] for s in got["steps"]] == list(range(600))
    finally:
        for s in started:
            s.stop(grace=1)


def test_a_stream_past_what_is_kept_is_not_sent_again(lake_dir, monkeypatch):
    monkeypatch.setattr(client_stream, "STREAM_RESEND_BYTES", 4096)
    port = _free_port()
    started = [serve(make_settings(lake_dir), "127.0.0.1", port)]
    try:
        with LakeClient(f"127.0.0.1:{port}") as c:
            tid = c.start("long run", trajectory_id="rs-2")
            with pytest.raises(Unavailable, match="not sent again: its .* steps took more "
                                                  "than 4,096 bytes") as e:
                c.stream(tid, _restart_midway(lake_dir, port, 300, 600, started))
            assert "stream them again" in e.value.message
    finally:
        for s in started:
            s.stop(grace=1)


def test_a_live_stream_outlasts_the_clients_timeout(server):
    """A live agent streams its steps as they happen: the stream has no deadline (the
    client's ``timeout`` bounds unary calls), only the server's idle limit."""
    import time

    def live() -> Iterator[dict]:
        for i in range(4):
            time.sleep(0.5)  # the agent works between steps
            yield {"index": i, "kind": "tool", "name": "step"}

    with LakeClient(server.target, timeout=1.0) as c:
        tid = c.start("a run longer than the timeout", trajectory_id="slow-1")
        assert c.stream(tid, live()).accepted == 4
        assert _landed(c, tid) == [0, 1, 2, 3]
