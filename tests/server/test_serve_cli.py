"""`lake serve` and `lake token` as users run them: real subprocesses and signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from lake.errors import Unauthenticated
from server.client import LakeClient

from .conftest import audit_rows, run

LAKE = str(Path(sys.executable).with_name("lake"))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}


def lake(*args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([LAKE, *args], capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    return p


def test_serve_says_where_and_how_and_stops_gracefully_on_sigterm(tmp_path):
    data = tmp_path / "lake"
    proc = subprocess.Popen([LAKE, "serve", "--data", str(data), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_env(), "LAKE_FLUSH_INTERVAL_MS": "60000"})
    try:  # the lake as it is: no demo sample without --sample
        assert "created a new, empty lake at " in proc.stdout.readline()  # and says so
        line = proc.stdout.readline()
        m = re.search(r"on 127\.0\.0\.1:(\d+); auth OFF \(loopback\)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        with LakeClient(f"127.0.0.1:{m.group(1)}") as c:
            assert c.ingest_arrow([run("a", 3)]).accepted == 1  # durable, not yet committed
        seen = [proc.stdout.readline() for _ in range(2)]  # says when lookups are fast
        assert "stop with Ctrl-C" in seen[0] and seen[1].startswith("ready: embedding model")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "flushing the write path" in out and "stopped" in out
    assert lake("sql", "select count(*) from steps", "--data", str(data)).stdout.strip() == "3"


def _serving_with_one_write(data: Path) -> subprocess.Popen:
    proc = subprocess.Popen([LAKE, "serve", "--data", str(data), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_env(), "LAKE_FLUSH_INTERVAL_MS": "60000"})
    proc.stdout.readline()
    m = re.search(r"on 127\.0\.0\.1:(\d+)", proc.stdout.readline())
    with LakeClient(f"127.0.0.1:{m.group(1)}") as c:
        assert c.ingest_arrow([run("a", 3)]).accepted == 1  # durable, not yet committed
    return proc


def test_a_stop_while_the_model_loads_is_quick_and_flushes(tmp_path):
    """SIGTERM just after the port opens, the model still loading: the stop flushes the
    write path and exits without waiting for the load (an orchestrator's grace period is
    short: 10 s for docker stop)."""
    proc = _serving_with_one_write(tmp_path / "lake")
    try:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "every acknowledged write is in the lake" in out, err
    assert "ready:" not in out and took < 8, (took, out)  # the load was not waited for
    assert lake("sql", "select count(*) from steps", "--data",
                str(tmp_path / "lake")).stdout.strip() == "3"  # committed: no replay needed


def test_a_second_signal_exits_at_once_and_nothing_acknowledged_is_lost(tmp_path):
    """A second signal (an impatient operator) exits now, whatever the stop was doing; the
    log replays what was acknowledged."""
    proc = _serving_with_one_write(tmp_path / "lake")
    try:
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), (out, err)  # 0: the first was done already
    from lake import Lake

    with Lake.open(str(tmp_path / "lake")) as again:  # the next writer replays the log
        assert again.sql("select count(*) from steps").fetchall() == [(3,)]


def test_a_bad_log_level_is_named(tmp_path):
    p = subprocess.run([LAKE, "serve", "--data", str(tmp_path / "lake"), "--port", "0"],
                       capture_output=True, text=True, env={**_env(), "LAKE_LOG_LEVEL": "loud"},
                       timeout=60)
    assert p.returncode == 1 and "log_level='loud' is not one of debug, info" in p.stderr


def test_token_commands_create_list_and_revoke(tmp_path, server):
    data = server.lake.settings.data
    created = json.loads(lake("token", "create", "--data", data, "--tenant", "acme",
                              "--agent", "bot", "--scopes", "read", "--json").stdout)
    text = created["token"]
    with LakeClient(server.target, text) as c:
        assert c.stats()["tenant"] == "acme"  # a running server sees the new token at once
        listed = json.loads(lake("token", "list", "--data", data, "--json").stdout)
        assert [(t["token_id"], t["scopes"], t["revoked_at"]) for t in listed] == \
            [(created["token_id"], ["read"], None)]
        assert text not in json.dumps(listed)
        lake("token", "revoke", created["token_id"], "--data", data)
        with pytest.raises(Unauthenticated):
            for _ in range(50):  # refused within the server's refresh interval
                c.stats()
                time.sleep(0.1)
    actions = lake("sql", "select action from audit order by time", "--data", data,
                   "--tenant", "acme").stdout
    assert "token.create" in actions and "token.revoke" in actions


@pytest.mark.parametrize("cmd", [["serve"], ["token"], ["token", "create"], ["token", "revoke"],
                                 ["token", "list"]])
def test_new_commands_have_help_with_an_example(cmd):
    result = CliRunner().invoke(cli, [*cmd, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_admin_commands_go_through_a_running_server(server, client):
    """The server holds the lake: tag, context, retract, recluster and restore reach it
    with --server (its RPCs, audited there) instead of failing on the lake's lock."""
    lsn = client.ingest_arrow([run("a", 2), run("b", 2)]).lsn
    client.get_trajectory("b", min_lsn=lsn)
    via = ["--server", server.target]
    assert lake("tag", "before", *via).stdout.startswith("tagged version")
    answer = json.loads(lake("context", "Refund order #W1", "--k", "1", "--json", *via).stdout)
    assert answer["verdict"] in ("exact", "hit", "similar", "miss") and answer["context_id"]
    assert lake("retract", "a", "--reason", "test", *via).stdout.strip() == \
        "retracted 1 trajectories"
    assert "clusters over" in lake("recluster", *via).stdout
    assert "restored before as version" in lake("restore", "before", *via).stdout
    p = subprocess.run([LAKE, "tag", "x", "--token", "cl_x", "--data", server.lake.settings.data],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert p.returncode == 64 and "--token is for --server" in p.stderr
    actions = {r["action"] for r in audit_rows(server)}
    assert {"AdminService/Tag", "AdminService/Retract", "AdminService/Recluster",
            "AdminService/Restore"} <= actions
