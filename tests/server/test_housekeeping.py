"""Beside its calls the server watches its writer (gRPC health says when the lake takes no
writes, and the metric ``lake_writer_up``) and vacuums hourly when ``keep_versions`` is set."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lake.errors import InvalidArgument, LakeError
from lake.tables import TableStore
from server.app import serve
from server.client import LakeClient

from .conftest import make_settings, run

INGEST = "contextlake.v1.IngestService"


def _health(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _until(check, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "not within the time"
        time.sleep(0.1)


def test_health_follows_the_writer_waiting_on_a_full_disk_and_back(lake_dir, monkeypatch):
    monkeypatch.setattr("lake.writer.RESUME_S", 0.5)
    srv = serve(make_settings(lake_dir).replace(metrics_port=0), "127.0.0.1", 0)
    real = TableStore.append

    def full(self, name, rows):
        if name == "steps":
            raise OSError("LanceError(IO): No space left on device (os error 28)")
        return real(self, name, rows)

    try:
        monkeypatch.setattr(TableStore, "append", full)
        with LakeClient(srv.target, retry_s=0) as c:
            c.ingest_arrow([run("r-1")])  # logged: acknowledged; its commit waits
        serving, down = health_pb2.HealthCheckResponse.SERVING, \
            health_pb2.HealthCheckResponse.NOT_SERVING
        _until(lambda: _health(srv.target, INGEST) == down)
        assert _health(srv.target, "") == serving  # reads go on
        url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
        assert "lake_writer_up 0" in urllib.request.urlopen(url).read().decode()
        monkeypatch.setattr(TableStore, "append", real)  # space freed
        _until(lambda: _health(srv.target, INGEST) == serving)
        assert "lake_writer_up 1" in urllib.request.urlopen(url).read().decode()
    finally:
        srv.stop(grace=1)


def test_a_stopped_writer_turns_the_whole_server_not_serving(lake_dir, monkeypatch):
    srv = serve(make_settings(lake_dir), "127.0.0.1", 0)
    real = TableStore.append

    def broken(self, name, rows):
        if name == "steps":
            raise RuntimeError("a bug in a commit")
        return real(self, name, rows)

    monkeypatch.setattr(TableStore, "append", broken)
    with LakeClient(srv.target, retry_s=0) as c:
        c.ingest_arrow([run("r-1")])
    down = health_pb2.HealthCheckResponse.NOT_SERVING
    _until(lambda: _health(srv.target, "") == down)  # only a restart brings it back
    assert _health(srv.target, INGEST) == down
    with pytest.raises(LakeError, match="writer stopped"):
        srv.stop(grace=1)


def test_keep_versions_vacuums_and_a_bad_age_stops_the_start(lake_dir):
    with pytest.raises(InvalidArgument, match="is no age"):
        serve(make_settings(lake_dir).replace(keep_versions="a week"), "127.0.0.1", 0)
    with serve(make_settings(lake_dir).replace(keep_versions="0s"), "127.0.0.1", 0) as srv:
        with LakeClient(srv.target) as c:
            for i in range(5):
                lsn = c.ingest_arrow([run(f"r-{i}")]).lsn
            c.get_trajectory("r-4", min_lsn=lsn)
        srv.housekeeper.vacuum()  # what the hourly turn does
        assert srv.lake.versions()[-1].operation == "vacuum"
        assert srv.lake.count("trajectories") == 5


def test_a_vacuum_failing_otherwise_leaves_housekeeping_running(lake_dir, monkeypatch, caplog):
    """Lance raises OSError or RuntimeError too: logged, and health goes on being watched."""
    from lake import Lake

    with serve(make_settings(lake_dir).replace(keep_versions="7d"), "127.0.0.1", 0) as srv:
        monkeypatch.setattr(Lake, "vacuum", lambda *a, **k: (_ for _ in ()).throw(
            RuntimeError("LanceError(IO): permission denied")))
        srv.housekeeper.vacuum()  # what the hourly turn does: it does not raise
        assert "the hourly vacuum failed: LanceError(IO): permission denied" in caplog.text
        assert srv.housekeeper._thread.is_alive()


def test_health_follows_a_full_disk_under_the_log_too(lake_dir, monkeypatch):
    """With the log on the lake's disk (the default) the log fills first and no commit
    fails: health must still say the lake takes no writes, and come back with the space
    (operator QA)."""
    import errno

    from lake.errors import ResourceExhausted

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with serve(make_settings(lake_dir), "127.0.0.1", 0) as srv:
        monkeypatch.setattr("lake.wal._write_all", full)
        monkeypatch.setattr("lake.wal.FREE_BYTES", 1 << 62)  # the disk reads as full
        with LakeClient(srv.target, retry_s=0) as c, pytest.raises(ResourceExhausted):
            c.ingest_arrow([run("r-1")])
        down, up = (health_pb2.HealthCheckResponse.NOT_SERVING,
                    health_pb2.HealthCheckResponse.SERVING)
        _until(lambda: _health(srv.target, INGEST) == down)
        monkeypatch.undo()  # space is back
        _until(lambda: _health(srv.target, INGEST) == up)
        with LakeClient(srv.target) as c:
            assert c.ingest_arrow([run("r-2")]).accepted == 1


def test_abandon_after_finishes_runs_left_running_and_a_bad_age_stops_the_start(lake_dir):
    with pytest.raises(InvalidArgument, match="is no age"):
        serve(make_settings(lake_dir).replace(abandon_after="a day"), "127.0.0.1", 0)
    with serve(make_settings(lake_dir).replace(abandon_after="1s"), "127.0.0.1", 0) as srv:
        with LakeClient(srv.target) as c:
            c.start("an agent that died", trajectory_id="gone")
            time.sleep(1.5)
            srv.housekeeper.abandon()  # what the hourly turn does
            got = c.get_trajectory("gone", min_lsn=srv.lake.writer.lag["submitted_lsn"])
        assert got["status"] == "abandoned"
