"""`Lake.sql` (and `lake sql`): one statement, run at the call; every mistake in the query,
found binding or running, an InvalidArgument naming the query with DuckDB's message and a
hint; a failure of the lake itself stays apart."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from lake import Lake
from lake.errors import InvalidArgument
from lake.sql import names


@pytest.fixture
def runs(lake: Lake) -> Lake:
    lake.ingest([{"trajectory_id": f"t{i}", "task": f"task {i}", "agent": "a",
                  "steps": [{"kind": "tool", "name": "get", "input": f"in {i}"}],
                  "outcome": {"success": i % 2 == 0}} for i in range(4)])
    return lake


@pytest.mark.parametrize(("query", "said", "hint"), [
    ("select cast('x' as int)", "Could not convert string 'x'", "TRY_CAST"),  # while running
    ("select * from run_facts where day > '2025'", "invalid date field format", "DATE '"),
    ("select 2::tinyint * 200::tinyint", "out of range", "TRY_CAST"),
    ("select strptime('x', '%Y')", "Could not parse string", "DuckDB's message"),
    ("from compare_runs('agnt', 'a')", "dim must be agent", "DuckDB's message"),
    ("select nosuch from trajectories", 'column "nosuch"', "describe TABLE"),  # binding
    ("select * from nowhere", "nowhere does not exist", "the tables are"),
    ("selec 1", "syntax error", "where the message points"),  # parsing
    ("select * from read_parquet('no-such-file.parquet')", "no-such-file", "check its path"),
])
def test_a_mistake_in_the_query_is_invalid_argument_with_duckdbs_words(runs, query, said, hint):
    with pytest.raises(InvalidArgument) as got:
        runs.sql(query)
    err = got.value
    assert err.field == "query" and said in err.message
    assert str(err).startswith("query: SQL failed: ") and hint in str(err).split("\nhint: ")[1]
    assert isinstance(err.__cause__, duckdb.Error)


@pytest.mark.parametrize("query", ["", "   ", " ; ", "-- just a comment"])
def test_an_empty_query_says_so(runs, query):
    with pytest.raises(InvalidArgument, match="the query is empty: give one SQL statement"):
        runs.sql(query)


def test_the_relation_holds_the_rows_it_ran_once(runs):
    rel = runs.sql("select trajectory_id, success from trajectories order by 1")
    assert rel.fetchall() == rel.fetchall() == [("t0", True), ("t1", False), ("t2", True),
                                                 ("t3", False)]
    assert rel.to_arrow_table().column("trajectory_id").to_pylist() == ["t0", "t1", "t2", "t3"]


def test_a_lake_that_cannot_be_read_is_not_the_querys_fault(lake_dir, runs):
    runs.close()
    for f in (lake_dir / "steps.lance" / "data").iterdir():
        f.unlink() if f.is_file() else shutil.rmtree(f)
    with Lake.open(str(lake_dir), readonly=True) as lk, \
            pytest.raises(duckdb.Error) as got:
        lk.sql("select count(input) from steps")
    assert not isinstance(got.value, InvalidArgument)


def test_the_listing_of_names_is_what_a_connection_has(runs):
    """lake.sql.names() feeds `lake sql --help` and the hint for an unknown name."""
    con = runs.connect()
    views = {v for (v,) in con.sql("select view_name from duckdb_views() where not internal"
                                   ).fetchall()}
    macros = {m for (m,) in con.sql("select function_name from duckdb_functions() where not "
                                    "internal and function_type like '%macro'").fetchall()}
    n = names()
    assert views == {*n["tables"], *n["views"]} and macros == set(n["macros"])
    with pytest.raises(InvalidArgument) as err:
        runs.sql("select * from cost_by_agnt")
    hint = str(err.value).split("\nhint: ")[1]
    assert all(name in hint for name in views | macros)


@pytest.mark.parametrize("query", ["select 1; select 2", "create temp table x as select 1; "
                                   "select * from x", "select 1;;select 2;"])
def test_several_statements_are_refused_not_run_for_the_last_ones_rows(runs, query):
    with pytest.raises(InvalidArgument, match="the query holds 2 statements; one is run"):
        runs.sql(query)
    assert runs.sql("select 1;").fetchall() == [(1,)]  # one statement, with its semicolon


def test_a_tenant_and_all_tenants_together_are_refused(runs):
    with pytest.raises(InvalidArgument, match="tenant: all_tenants shows every tenant and "
                                              "tenant='acme' only one"):
        runs.sql("select 1", tenant="acme", all_tenants=True)


def test_a_tenants_connection_names_no_source_of_other_tenants_rows(lake):
    """The views read their sources through names no query can write: `show tables` lists
    the views alone, and every one of them holds the tenant's rows only."""
    lake.ingest([{"trajectory_id": "t", "task": "x", "steps": [{"kind": "tool"}]}])
    lake.ingest([{"trajectory_id": "t", "task": "y", "steps": [{"kind": "tool"}]}],
                tenant="acme")
    con = lake.connect()
    shown = {t for (t,) in con.sql("show tables").fetchall()}
    n = names()
    assert shown == {*n["tables"], *n["views"]}
    for name in sorted(shown):
        if "tenant" in con.sql(f'from "{name}" limit 0').columns:
            assert con.sql(f"select count(*) from \"{name}\" where tenant <> 'default'"
                           ).fetchall() == [(0,)], name
    for source in ("_lance_trajectories", "_empty_steps", "_versions_arrow"):
        with pytest.raises(InvalidArgument, match="does not exist"):
            lake.sql(f"select * from {source}")
    assert lake.sql("select count(*) from trajectories", all_tenants=True).fetchall() == [(2,)]


@pytest.mark.parametrize("query", ["drop view trajectories", "create view trajectories as "
                                   "select 1 as x", "insert into trajectories (task) values "
                                   "('x')", "attach ':memory:' as other", "install httpfs"])
def test_sql_reads_the_lake_and_changes_nothing_later_queries_see(runs, query):
    """The connection (and its tenant's views) is kept for later queries: a statement that
    would change it is refused, naming its kind and what to do instead."""
    before = runs.sql("select count(*) from trajectories").fetchall()
    kind = query.split()[0].upper().replace("INSTALL", "LOAD")
    with pytest.raises(InvalidArgument, match=f"SQL here reads the lake: {kind} is not run"):
        runs.sql(query)
    assert runs.sql("select count(*) from trajectories").fetchall() == before
