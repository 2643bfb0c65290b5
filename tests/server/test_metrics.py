"""Prometheus metrics of a real server, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lake import Lake
from lake.errors import Conflict, InvalidArgument, NotFound
from server.app import serve
from server.client import LakeClient

from .conftest import make_settings, run


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_calls_codes_latency_and_lag_are_scraped(lake_dir):
    with serve(make_settings(lake_dir, metrics_port=0), "127.0.0.1", 0) as srv, \
            LakeClient(srv.target) as client:
        assert f"metrics at http://127.0.0.1:{srv.metrics_port}/metrics" in srv.describe()
        lsn = client.ingest_arrow([run("t1"), run("t2")]).lsn
        with pytest.raises(NotFound):
            client.get_trajectory("nope", min_lsn=lsn)
        with pytest.raises(InvalidArgument):
            client.get_context(vector=[0.5] * 7)
        m = scrape(srv.metrics_port)
        calls = {k[1]: v for k, v in m.items() if k[0] == "lake_rpc_calls_total"}
        assert calls[(("code", "OK"), ("method", "IngestArrow"))] == 1
        assert calls[(("code", "NOT_FOUND"), ("method", "GetTrajectory"))] == 1
        assert calls[(("code", "INVALID_ARGUMENT"), ("method", "GetContext"))] == 1
        assert m[("lake_rpc_duration_seconds_count", (("method", "IngestArrow"),))] == 1
        assert m[("lake_log_applied_lsn", ())] >= lsn == m[("lake_log_submitted_lsn", ())]
        assert m[("lake_version", ())] == srv.lake.version().version
        assert {"lake_rpc_inflight", "lake_pending_steps", "lake_index_lag_trajectories",
                "lake_audit_pending", "lake_writer_up", "process_resident_memory_bytes",
                "process_open_fds"} <= {k[0] for k in m}
        assert m[("lake_writer_up", ())] == 1 and m[("process_resident_memory_bytes", ())] > 0
        port = srv.metrics_port
    with pytest.raises(OSError):  # stopped with the server
        scrape(port)


def test_metrics_are_off_by_default_and_a_taken_port_is_a_conflict(lake_dir, tmp_path):
    with serve(make_settings(lake_dir, metrics_port=0), "127.0.0.1", 0) as first:
        with serve(make_settings(tmp_path / "plain"), "127.0.0.1", 0) as plain:
            assert plain.metrics is None and "metrics at" not in plain.describe()
        other = tmp_path / "other"
        with pytest.raises(Conflict) as e:
            serve(make_settings(other, metrics_port=first.metrics_port), "127.0.0.1", 0)
        assert "--metrics-port" in str(e.value)
        Lake.open(str(other)).close()  # its lake was closed again
