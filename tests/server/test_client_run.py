"""The client against a real server: reading a run right after finishing it, and the
errors it raises."""

from __future__ import annotations

import socket
import time

import pytest

from lake.errors import ALL_ERRORS
from server.app import serve
from server.client import DeadlineExceeded, InvalidArgument, LakeClient, NotFound

from .conftest import make_settings


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
