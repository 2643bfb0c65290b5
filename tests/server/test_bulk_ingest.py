"""`lake ingest PATH --server HOST:PORT`: files into a running server, as users run it (the
console script in a subprocess) against a real server on port 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from server.app import Server
from server.client import LakeClient

from .conftest import run, token

LAKE = [str(Path(sys.executable).with_name("lake"))]


def lake(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}
    e.update(env or {})
    return subprocess.run([*LAKE, *args], capture_output=True, text=True, env=e, timeout=120)


def negative_duration(tid: str) -> dict:
    bad = run(tid, 3)
    bad["steps"][1]["duration_ms"] = -5.0
    return bad


def jsonl(path: Path) -> Path:
    """Good runs on lines 1, 3, 5; line 2 is not JSON; line 4 a negative duration."""
    lines = [orjson.dumps(run("good-1")), b'{"trajectory_id": "cut-short", "task": ',
             orjson.dumps(run("good-2", 3)), orjson.dumps(negative_duration("bad-1")),
             orjson.dumps(run("good-3", 1))]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def landed(srv: Server) -> dict[str, int]:
    with LakeClient(srv.target) as c:
        return {t["trajectory_id"]: t["n_steps"] for t in c.iter_trajectories()}


def quarantined(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_a_jsonl_file_lands_its_good_lines_quarantines_the_bad_at_file_line_and_reruns_idempotently(
        server: Server, tmp_path: Path) -> None:
    f = jsonl(tmp_path / "runs.jsonl")
    q = tmp_path / "q.jsonl"
    p = lake("ingest", str(f), "--server", server.target, "--json", "--quarantine", str(q),
             "--progress", "none")
    assert p.returncode == 2, p.stderr
    summary = json.loads(p.stdout)
    assert (summary["files"], summary["records"], summary["trajectories"], summary["steps"],
            summary["rejected"], summary["changed"]) == (1, 3, 3, 6, 2, 3)
    assert landed(server) == {"good-1": 2, "good-2": 3, "good-3": 1}
    bad = quarantined(q)
    assert [(e["location"], e["line"], e["field"]) for e in bad] == [
        (f"{f}:2", 2, None), (f"{f}:4", 4, "steps[1].duration_ms")]
    assert "not valid JSON" in bad[0]["reason"] and "non-negative" in bad[1]["reason"]
    assert bad[0]["text"] == '{"trajectory_id": "cut-short", "task":'
    assert orjson.loads(bad[1]["text"]) == negative_duration("bad-1")  # its original text

    versions = len(server.lake.versions())
    q2 = tmp_path / "q2.jsonl"
    p = lake("ingest", str(f), "--server", server.target, "--json", "--quarantine", str(q2),
             "--progress", "none")
    assert p.returncode == 2, p.stderr
    assert json.loads(p.stdout) == {**summary, "changed": 0, "quarantine": str(q2)}
    assert [e["location"] for e in quarantined(q2)] == [f"{f}:2", f"{f}:4"]
    assert landed(server) == {"good-1": 2, "good-2": 3, "good-3": 1}
    assert len(server.lake.versions()) == versions  # nothing new: no new version


def test_records_go_in_batches_and_each_reject_maps_to_its_own_line(
        server: Server, tmp_path: Path) -> None:
    from ingest import Quarantine
    from server.bulk import ingest_remote

    lines = [orjson.dumps(negative_duration(f"r-{i}") if i % 7 == 3 else run(f"r-{i}"))
             for i in range(40)]
    f = tmp_path / "many.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    acks: list[dict] = []
    with LakeClient(server.target) as c:
        summary = ingest_remote(c, [str(f)], quarantine=Quarantine(tmp_path / "q.jsonl"),
                                on_ack=acks.append, batch_records=16)
    assert [a["trajectories"] for a in acks] == [14, 13, 7]  # 16 + 16 + 8 sent, 6 refused
    assert [a["through"] for a in acks] == [f"{f}:16", f"{f}:32", f"{f}:40"]
    assert (summary.records, summary.rejected) == (34, 6)
    lines_refused = [e["line"] for e in quarantined(tmp_path / "q.jsonl")]
    assert lines_refused == [i + 1 for i in range(40) if i % 7 == 3]
    assert set(landed(server)) == {f"r-{i}" for i in range(40) if i % 7 != 3}


def test_a_parquet_file_goes_to_the_server_with_rejects_at_file_row(
        server: Server, tmp_path: Path) -> None:
    f = tmp_path / "runs.parquet"
    pq.write_table(pa.Table.from_pylist([run("pq-1"), negative_duration("pq-bad"),
                                         run("pq-2", 4)]), f)
    q = tmp_path / "q.jsonl"
    p = lake("ingest", str(f), "--server", server.target, "--quarantine", str(q),
             "--progress", "none")
    assert p.returncode == 2, p.stderr
    assert "3 trajectories" not in p.stdout and "2 valid records" in p.stdout
    assert landed(server) == {"pq-1": 2, "pq-2": 4}
    [bad] = quarantined(q)
    assert (bad["location"], bad["line"], bad["field"]) == (
        f"{f}:row 2", 2, "steps[1].duration_ms")
    assert orjson.loads(bad["text"])["trajectory_id"] == "pq-bad"


def test_with_auth_a_read_only_token_is_denied_and_no_token_is_unauthenticated(
        secure: Server, tmp_path: Path) -> None:
    f = jsonl(tmp_path / "runs.jsonl")
    read_only = token(secure, scopes="read")
    p = lake("ingest", str(f), "--server", secure.target, "--token", read_only)
    assert p.returncode == 1
    assert "IngestArrow needs 'ingest'" in p.stderr and "--scopes ingest" in p.stderr
    p = lake("ingest", str(f), "--server", secure.target)
    assert p.returncode == 1 and "requires a bearer token" in p.stderr
    p = lake("ingest", str(f), "--server", secure.target, "--progress", "none",
             env={"LAKE_TOKEN": token(secure, scopes="ingest")})  # the client's env var
    assert p.returncode == 2, p.stderr
    assert "3 trajectories, 6 steps landed" in p.stdout and "not counted" in p.stdout


def test_no_server_at_the_address_is_the_clients_clear_error_and_exit_1(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "runs.jsonl")
    p = lake("ingest", str(f), "--server", "127.0.0.1:1")
    assert p.returncode == 1
    assert "no lake server answers at 127.0.0.1:1" in p.stderr and "lake serve" in p.stderr


def test_a_local_ingest_of_a_lake_a_server_holds_names_the_server_option(
        server: Server, lake_dir: Path, tmp_path: Path) -> None:
    f = jsonl(tmp_path / "runs.jsonl")
    p = lake("ingest", str(f), "--data", str(lake_dir))
    assert p.returncode == 1
    assert "in use by another process" in p.stderr
    assert f"lake ingest {f} --server HOST:PORT" in p.stderr


def test_server_refuses_local_only_options_as_usage_errors(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "runs.jsonl")
    for args, says in ((["--server", "127.0.0.1:1", "--tenant", "acme"], "tenant is the token"),
                       (["--server", "127.0.0.1:1", "--wal"], "--wal is for a local ingest"),
                       (["--token", "cl_x", "--data", str(tmp_path / "l")], "--token is for")):
        p = lake("ingest", str(f), *args)
        assert p.returncode == 64 and says in p.stderr, p.stderr


def test_a_record_too_big_for_the_servers_messages_is_quarantined_and_the_rest_land(
        lake_dir: Path, tmp_path: Path) -> None:
    from server.app import serve

    from .conftest import make_settings

    srv = serve(make_settings(lake_dir, max_message_bytes=1 << 20), "127.0.0.1", 0)
    try:
        huge = run("huge")
        huge["steps"][0]["output"] = "x" * (2 << 20)
        f = tmp_path / "runs.jsonl"
        f.write_bytes(b"\n".join(orjson.dumps(r) for r in (run("a"), huge, run("b"))) + b"\n")
        q = tmp_path / "q.jsonl"
        p = lake("ingest", str(f), "--server", srv.target, "--quarantine", str(q),
                 "--progress", "none")
        assert p.returncode == 2, p.stderr
        assert landed(srv) == {"a": 2, "b": 2}
        [bad] = quarantined(q)
        assert bad["location"] == f"{f}:2" and "max_message_bytes" in bad["reason"]
    finally:
        srv.stop(grace=1)
