"""The `lake` command as users run it: a real subprocess, real exit codes and output."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ingest.sample import PATH as SAMPLE
from ingest.sample import STEPS, TRAJECTORIES

# the console script users run (not `python -m`, whose sys.path[0] is the cwd)
LAKE = [str(Path(sys.executable).with_name("lake"))]


def lake(*args: str, data: Path, check: bool = True, env: dict | None = None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}
    e.update(env or {})
    p = subprocess.run([*LAKE, *args, "--data", str(data)] if data else [*LAKE, *args],
                       capture_output=True, text=True, env=e, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def test_the_sample_goes_only_into_a_lake_empty_in_every_tenant(tmp_path):
    """A team's data under another tenant is not mixed with demo runs."""
    from ingest.sample import load_if_empty
    from lake import Lake

    with Lake.open(str(tmp_path / "lake")) as lk:
        lk.ingest([{"trajectory_id": "ours", "task": "t"}], tenant="acme")
        said = load_if_empty(lk)
        assert "holds 0 trajectories in tenant 'default' (1 in all tenants)" in said
        assert "only into an empty lake" in said
        assert lk.store.dataset("trajectories").count_rows() == 1


def test_init_loads_sample_once_and_sql_prints_counts(tmp_path):
    d = tmp_path / "lake-data"
    assert "loaded the tau2-bench sample" in lake("init", data=d).stdout
    assert lake("sql", "select count(*) from trajectories", data=d).stdout.strip() == \
        str(TRAJECTORIES)
    assert lake("sql", "select count(*) from steps", data=d).stdout.strip() == str(STEPS)
    assert "holds 240" in lake("init", data=d).stdout  # idempotent
    out = lake("sql", "select count(*) as n from trajectories", "--format", "json", data=d).stdout
    assert json.loads(out) == [{"n": 240}]
    csv = lake("sql", "select agent, count(*) n from trajectories group by 1 order by 1",
               "--format", "csv", data=d).stdout.splitlines()
    assert csv[0] == "agent,n" and len(csv) >= 2


def test_ingest_json_summary_and_exit_codes(tmp_path):
    d = tmp_path / "lake"
    lines = gzip_lines(SAMPLE)[:50]
    bad = lines[:]
    for i in range(0, 50, 10):  # 10% corrupted lines
        bad[i] = b'{"trajectory_id": "broken", "task": ' if i % 20 else b'{"task": 42}'
    f = tmp_path / "runs.jsonl"
    f.write_bytes(b"\n".join(bad) + b"\n")
    p = lake("ingest", str(f), "--json", data=d, check=False)
    assert p.returncode == 2, p.stderr
    summary = json.loads(p.stdout)
    assert set(summary) >= {"files", "trajectories", "steps", "rejected", "quarantine"}
    assert (summary["files"], summary["trajectories"], summary["rejected"]) == (1, 45, 5)
    assert summary["changed"] == 45
    q = [orjson.loads(x) for x in Path(summary["quarantine"]).read_bytes().splitlines()]
    assert [e["line"] for e in q] == [1, 11, 21, 31, 41]
    assert all(e["reason"] and e["text"] and e["location"] == f"{f}:{e['line']}" for e in q)
    assert "must be a string" in q[0]["reason"] and q[0]["field"] == "task"
    assert "not valid JSON" in q[1]["reason"]
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join(lines[:5]))
    p = lake("ingest", str(good), data=d)  # four of these landed above; line 1 was broken
    assert p.returncode == 0 and "(1 trajectories new or changed" in p.stdout
    p = lake("ingest", str(good), data=d)
    assert p.returncode == 0 and "(0 trajectories new or changed" in p.stdout
    nothing = tmp_path / "x.parquet"
    nothing.write_bytes(b"garbage")
    p = lake("ingest", str(nothing), data=d, check=False)
    assert p.returncode == 1 and "cannot read parquet file" in p.stderr


def test_ingest_of_a_gzip_cut_short_lands_its_whole_lines_and_exits_2(tmp_path):
    """QA: a .jsonl.gz missing its last 20 bytes crashed (`internal error: ValueError`),
    named no file and dropped lines it had read; a re-run did the same."""
    d = tmp_path / "lake"
    lines = gzip_lines(SAMPLE)[:60]
    f = tmp_path / "cut.jsonl.gz"
    f.write_bytes(gzip.compress(b"\n".join(lines) + b"\n")[:-20])
    for _run in range(2):  # the re-run lands nothing more and reports the same
        p = lake("ingest", str(f), "--json", "--progress", "none", data=d, check=False)
        assert p.returncode == 2, p.stderr
        summary = json.loads(p.stdout)
        assert (summary["rejected"], summary["unreadable"]) == (1, [])
        [q] = [orjson.loads(x) for x in Path(summary["quarantine"]).read_bytes().splitlines()]
        assert q["location"] == f"{f}:60" and "re-copy the file" in q["reason"]
        assert lake("sql", "select count(*) from trajectories", data=d).stdout.strip() == "59"


def test_ingest_dot_with_the_lake_under_it_never_reads_the_lakes_files(tmp_path):
    """QA: `lake ingest .` (default lake ./lake-data) read its own quarantine files back:
    10, 20, 40 rejects on three runs."""
    lines = gzip_lines(SAMPLE)[:8] + [b'{"task": 42}', b"not json"]
    (tmp_path / "part1.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for _run in range(3):  # the tests run in tmp_path: ./lake-data is under "."
        p = lake("ingest", ".", "--json", "--progress", "none", data=None, check=False)
        assert p.returncode == 2, p.stderr
        summary = json.loads(p.stdout)
        assert (summary["files"], summary["records"], summary["rejected"]) == (1, 8, 2)
    assert len(list((tmp_path / "lake-data" / "quarantine").iterdir())) >= 1


def test_ingest_warns_of_skipped_files_and_repeated_ids_and_fails_when_nothing_is_found(
        tmp_path):
    d, runs = tmp_path / "lake", tmp_path / "runs"
    runs.mkdir()
    lines = gzip_lines(SAMPLE)[:3]
    (runs / "part-00000.json").write_bytes(b"\n".join(lines + lines[:1]) + b"\n")
    (runs / "README.md").write_text("notes")
    p = lake("ingest", str(runs), "--progress", "none", data=d)
    assert p.stdout.startswith("1 file(s), 4 valid records: 3 trajectories, ")
    tid = orjson.loads(lines[0])["trajectory_id"]
    assert p.stderr.splitlines() == [
        f"warning: 1 file(s) of another type in the directories given, not read: "
        f"{runs / 'README.md'} (`lake ingest` reads .jsonl, .jsonl.gz, .ndjson, .ndjson.gz, "
        ".json, .json.gz, .parquet, .arrow, .arrows, .feather); to read JSON Lines files, "
        "give them one of those suffixes",
        "warning: 1 id(s) appeared more than once in this load (0 with different content; "
        "the lake keeps one version of each: the one with the most steps, finished over "
        f"running, else the later), e.g. {tid}"]
    p = lake("ingest", str(runs), "--json", "--progress", "none", data=d)
    summary = json.loads(p.stdout)
    assert (summary["records"], summary["trajectories"], summary["changed"]) == (4, 3, 0)
    assert summary["skipped"] == {"count": 1, "examples": [str(runs / "README.md")]}
    assert summary["duplicates"] == {"ids": 1, "differing": 0, "examples": [tid],
                                     "complete": True}
    (runs / "part-00000.json").unlink()
    p = lake("ingest", str(runs), data=d, check=False)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith(f"error: {runs}: no input file found: the directories given "
                               f"hold 1 file(s) of another type ({runs / 'README.md'})")


def test_tag_restore_versions(tmp_path):
    d = tmp_path / "lake"
    f = tmp_path / "a.jsonl"
    lines = gzip_lines(SAMPLE)
    f.write_bytes(b"\n".join(lines[:10]))
    lake("ingest", str(f), data=d)
    lake("tag", "before", data=d)
    f.write_bytes(b"\n".join(lines[10:30]))
    lake("ingest", str(f), data=d)
    assert lake("sql", "select count(*) from trajectories", data=d).stdout.strip() == "30"
    assert "restored before" in lake("restore", "before", data=d).stdout
    assert lake("sql", "select count(*) from trajectories", data=d).stdout.strip() == "10"
    assert lake("sql", "select count(*) from trajectories", "--as-of", "3",
                data=d).stdout.strip() == "30"
    versions = json.loads(lake("versions", "--json", data=d).stdout)
    assert [v["operation"] for v in versions] == ["create", "ingest", "ingest", "restore"]
    assert versions[1]["tags"] == ["before"]
    assert isinstance(versions[1]["detail"], dict)  # a JSON object, not its text
    assert versions[-1]["detail"]["restored"] == versions[1]["version"]
    p = lake("restore", "before", "--tenant", "acme", data=d, check=False)
    assert p.returncode == 64 and "every tenant" in p.stderr and "lake retract" in p.stderr
    tid = lake("sql", "select min(trajectory_id) from trajectories", data=d).stdout.strip()
    lake("retract", tid, "--reason", "leaked a card", data=d)
    assert lake("restore", "nope", data=d, check=False).returncode == 1
    audit = json.loads(lake("sql", "select actor, action, resource, outcome, detail, "
                            "detail->>'reason' as why from audit order by time",
                            "--format", "json", data=d).stdout)
    assert isinstance(audit[0]["detail"], dict)  # a JSON column: its value, not its text
    assert [(a["action"], a["resource"], a["outcome"]) for a in audit] == [
        ("tag", "tag before", "ok"), ("restore", "version before", "ok"),
        ("retract", f"trajectories {tid}", "ok"), ("restore", "version nope", "not_found")]
    assert all(a["actor"].startswith("cli:") for a in audit)
    assert audit[2]["why"] == "leaked a card"


def test_errors_are_one_line_with_what_to_do(tmp_path):
    d = tmp_path / "lake"
    p = lake("sql", "select 1", data=d, check=False)
    assert p.returncode == 1 and p.stderr.startswith("error: no lake at")
    assert "Traceback" not in p.stderr
    p = lake("ingest", data=d, check=False)
    assert p.returncode == 64 and "usage error" in p.stderr
    lake("init", "--no-sample", data=d)
    p = lake("restore", "nope", data=d, check=False)
    assert p.returncode == 1 and "no tag 'nope'" in p.stderr
    p = lake("sql", "select * from nowhere", data=d, check=False)
    assert p.returncode == 1 and "SQL failed" in p.stderr


def test_env_and_flags_precedence(tmp_path):
    d_env, d_flag = tmp_path / "env", tmp_path / "flag"
    lake("init", "--no-sample", data=None, env={"LAKE_DATA": str(d_env)})
    assert (d_env / "_versions.lance").exists()
    lake("init", "--no-sample", data=d_flag, env={"LAKE_DATA": str(d_env)})
    assert (d_flag / "_versions.lance").exists()
    out = json.loads(lake("config", "--json", data=None, env={"LAKE_TENANT": "acme"}).stdout)
    assert {r["name"]: r["value"] for r in out}["tenant"] == "acme"


@pytest.mark.parametrize("cmd", ["ingest", "sql", "versions", "tag", "restore", "init", "config",
                                 "schema"])
def test_every_command_has_help_with_an_example(cmd):
    p = subprocess.run([*LAKE, cmd, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "Example" in p.stdout


def gzip_lines(path: Path) -> list[bytes]:
    return [x for x in gzip.decompress(path.read_bytes()).splitlines() if x.strip()]


def test_serve_and_ingest_never_make_a_lake_among_other_files(tmp_path):
    """A mistyped --data: a directory of someone's files is refused, a file too; a new
    directory becomes a new lake, and `lake serve` says so."""
    from lake import Lake
    from lake.errors import InvalidArgument

    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgument, match="holds no lake but other files .notes.txt."):
        Lake.open(str(tmp_path / "home"))
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["notes.txt"]
    with pytest.raises(InvalidArgument, match="is a file"):
        Lake.open(str(tmp_path / "home" / "notes.txt"))
    p = lake("ingest", str(tmp_path / "home" / "notes.txt"), data=tmp_path / "home",
             check=False)
    assert p.returncode == 1 and "holds no lake but other files" in p.stderr
    from ingest.sample import holds

    with Lake.open(str(tmp_path / "new")) as lk:
        assert lk.created and holds(lk).startswith("created a new, empty lake at ")
    with Lake.open(str(tmp_path / "new")) as lk:
        assert not lk.created and "holds 0 trajectories" in holds(lk)


def test_token_commands_on_a_mistyped_data_dir_make_nothing(tmp_path):
    p = lake("token", "create", "--agent", "bot", data=tmp_path / "typo", check=False)
    assert p.returncode == 1 and "no lake at" in p.stderr and "lake init" in p.stderr
    assert not (tmp_path / "typo").exists()


def test_a_mistyped_setting_variable_is_named_not_ignored_silently(tmp_path):
    p = lake("config", data=tmp_path / "lake", env={"LAKE_PROT": "5"})
    assert "LAKE_PROT is no setting of the lake and is ignored: did you mean LAKE_PORT?" \
        in p.stderr


def test_token_times_read_alike_and_a_second_revoke_says_so(tmp_path):
    data = tmp_path / "lake"
    lake("init", "--no-sample", data=data)
    made = json.loads(lake("token", "create", "--agent", "bot", "--json", data=data).stdout)
    listed = json.loads(lake("token", "list", "--json", data=data).stdout)
    assert made["created_at"] == listed[0]["created_at"] and isinstance(made["created_at"], str)
    first = lake("token", "revoke", made["token_id"], data=data).stdout
    again = lake("token", "revoke", made["token_id"], data=data).stdout
    assert first.startswith("revoked token") and "was already revoked, at" in again
