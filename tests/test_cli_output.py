"""How `lake sql` prints results: a cut cell is marked, and the table says how to see it whole."""

from __future__ import annotations

import duckdb

from cli.output import CELL, render


def test_a_cut_cell_is_marked_and_the_footer_says_how_to_see_it_whole():
    long_id = "tau2/telecom/" + "x" * 250
    rel = duckdb.sql(f"select '{long_id}' as trajectory_id, 1 as n union all select 'b', 2")
    lines = render(rel, "table").splitlines()
    assert lines[2].split()[0] == long_id[:CELL - 1] + "…"
    assert "cut at …: --format csv or json shows them whole" in lines[-1]
    assert long_id in render(rel, "csv") and long_id in render(rel, "json")
    short = render(duckdb.sql("select 'b' as id, 2 as n"), "table").splitlines()
    assert short[-1] == "(1 row)" and "…" not in "".join(short)


def test_booleans_and_decimals_are_written_as_sql_and_json_write_them():
    rel = duckdb.sql("select true as ok, false as bad, 0.3::decimal(4,1) as cost")
    assert render(rel, "csv").splitlines()[1] == "true,false,0.3"
    assert render(rel, "json") == '[{"ok": true, "bad": false, "cost": 0.3}]'
