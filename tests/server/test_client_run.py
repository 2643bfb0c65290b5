"""The client against a real server: reading a run right after finishing it."""

from __future__ import annotations

import pytest

from lake.errors import InvalidArgument, NotFound
from server.app import serve
from server.client import LakeClient

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
