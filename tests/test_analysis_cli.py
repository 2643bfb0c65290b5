"""`lake sql`, `lake compare` and `lake cost` as users run them: a real subprocess on the
bundled sample (or a small lake of two tenants)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAKE = [str(Path(sys.executable).with_name("lake"))]


def lake(*args: str, data: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}
    p = subprocess.run([*LAKE, *args, "--data", str(data)], capture_output=True, text=True,
                       env=env, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "lake"
    lake("init", data=d)
    return d


def test_compare_json_matches_lake_sql_per_domain(sample):
    out = json.loads(lake("compare", "--by", "agent", "--group-by", "meta->>'domain'",
                          "--json", data=sample).stdout)
    assert out["by"] == "agent" and out["group_by"] == "meta->>'domain'"
    assert [r["group"] for r in out["rows"]] == ["(all)"] * 2 + ["retail"] * 2 + ["telecom"] * 2
    direct = json.loads(lake("sql", "select meta->>'domain' as d, agent, count(*) as n, "
                             "avg(success::int) as rate from trajectories group by all",
                             "--format", "json", data=sample).stdout)
    rows = {(r["group"], r["arm"]): r for r in out["rows"]}
    for d in direct:
        r = rows[(d["d"], d["agent"])]
        assert r["runs"] == d["n"] and r["success_rate"] == round(d["rate"], 4)
        assert r["ci_low"] < r["success_rate"] < r["ci_high"]
    assert [(f["group"], f["arm"]) for f in out["flagged"]] == \
        [("(all)", "gpt-4.1"), ("telecom", "gpt-4.1")]
    again = lake("compare", "--by", "agent", "--group-by", "meta->>'domain'", "--json",
                 data=sample).stdout
    assert json.loads(again) == out  # deterministic


def test_compare_table_and_errors(sample):
    text = lake("compare", data=sample).stdout
    assert "success % [95%]" in text and "telecom" in text and "worse" in text
    assert "B worse than A beyond the 95% interval in: (all) (gpt-4.1), telecom (gpt-4.1)" \
        in " ".join(text.split())
    text = " ".join(lake("compare", "--adjust", "bonferroni", data=sample).stdout.split())
    assert "success % [98.33%]" in text  # 1 - 0.05 / 3: (all), retail, telecom
    assert "interval (95% for all 3 tests together: Bonferroni)" in text
    p = lake("compare", "--a", "nope", data=sample, check=False)
    assert p.returncode == 1
    assert "--a: no runs with agent = 'nope'; the values present are" in p.stderr
    assert "'gpt-4.1' (120 runs)" in p.stderr
    p = lake("compare", "--by", "agent_version", data=sample, check=False)
    assert p.returncode == 1 and "nothing to compare" in p.stderr
    p = lake("compare", "--group-by", "nope(", data=sample, check=False)
    assert p.returncode == 1 and "run_facts" in p.stderr
    p = lake("compare", data=sample.parent / "missing", check=False)
    assert p.returncode == 1 and "lake ingest" in p.stderr


def test_cost_summary_views_and_sql_macro(sample):
    out = json.loads(lake("cost", "--json", data=sample).stdout)
    assert out["total"]["runs"] == 240 and out["view"] == "cost_by_agent"
    assert sum(r["runs"] for r in out["rows"]) == 240
    text = lake("cost", "--by", "tool", data=sample).stdout
    assert "get_details_by_id" in text and "786" in text
    assert "240 runs" in " ".join(lake("cost", "--by", "day", data=sample).stdout.split())
    n = lake("sql", "select sum(calls) from cost_by_tool", data=sample).stdout.strip()
    assert n == lake("sql", "select count(*) from steps where kind = 'tool'",
                     data=sample).stdout.strip()
    flags = json.loads(lake("sql", "select \"group\", flag from compare_runs('agent', "
                            "'ft:gpt-4.1-2025-04-14:sierra:tau2-full-sft:BzrYdMNm') "
                            "where flag is not null", "--format", "json", data=sample).stdout)
    assert flags == [{"group": "(all)", "flag": "worse"}, {"group": "telecom", "flag": "worse"}]


@pytest.fixture(scope="module")
def two_tenants(tmp_path_factory) -> Path:
    """The same trajectory ids in tenants default and acme."""
    d = tmp_path_factory.mktemp("sql") / "lake"
    runs = tmp_path_factory.mktemp("runs") / "runs.jsonl"
    runs.write_text("".join(json.dumps(
        {"trajectory_id": f"t{i}", "task": f"task {i}", "agent": "a",
         "steps": [{"kind": "tool", "name": "get"}], "outcome": {"success": True}}) + "\n"
        for i in range(3)))
    lake("ingest", str(runs), data=d)
    lake("ingest", str(runs), "--tenant", "acme", data=d)
    return d


@pytest.mark.parametrize(("query", "said"), [
    ("select cast('x' as int)", "Could not convert string 'x' to INT32"),
    ("select * from run_facts where day > '2025'", "invalid date field format"),
    ("", "the query is empty"),
    ("select * from trajectories; select 1", "the query holds 2 statements"),
])
def test_a_mistake_in_the_query_is_an_error_not_a_crash(two_tenants, query, said):
    p = lake("sql", query, data=two_tenants, check=False)
    assert p.returncode == 1 and p.stderr.startswith("error: query: ") and said in p.stderr
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr


def test_sql_help_lists_every_table_view_and_macro():
    from lake.sql import names

    text = subprocess.run([*LAKE, "sql", "--help"], capture_output=True, text=True).stdout
    assert all(name in text for kind in names().values() for name in kind)


def test_sql_refuses_all_tenants_with_a_tenant(two_tenants):
    p = lake("sql", "select 1", "--all-tenants", "--tenant", "acme", data=two_tenants,
             check=False)
    assert p.returncode == 64 and "--all-tenants shows every tenant and --tenant acme" in p.stderr
    assert lake("sql", "select count(*) from trajectories", "--all-tenants",
                data=two_tenants).stdout.strip() == "6"


def test_output_keeps_null_apart_from_empty_and_lists_are_json():
    import duckdb

    from cli.output import render

    rel = duckdb.connect().sql("select '' as e, null as n, ['a', 'b,c'] as l, "
                               "{'k': 1} as s, 'q\"t' as q")
    assert render(rel, "csv").splitlines() == [
        "e,n,l,s,q", '"",,"[""a"", ""b,c""]","{""k"": 1}","q""t"']
    assert render(rel, "table").splitlines()[2].split() == ["NULL", '["a",', '"b,c"]',
                                                            '{"k":', "1}", 'q"t']
    assert json.loads(render(rel, "json")) == [{"e": "", "n": None, "l": ["a", "b,c"],
                                                "s": {"k": 1}, "q": 'q"t'}]
    assert render(duckdb.connect().sql("select null"), "table") == "NULL"


def test_a_tenant_without_runs_names_the_tenants_that_have_some(two_tenants):
    p = lake("cost", "--tenant", "acmee", data=two_tenants, check=False)
    assert p.returncode == 1
    assert "tenant 'acmee' has no trajectories; this lake's tenants: " in p.stderr
    assert "'acme' (3)" in p.stderr and "'default' (3)" in p.stderr and "pass --tenant" in p.stderr
