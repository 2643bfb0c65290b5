"""SQL views over the column caches: the same rows and types as the Lance datasets they pin,
whatever the caches hold; filters evaluated by DuckDB; a new version reads only its new
fragments."""

from __future__ import annotations

import duckdb
import pyarrow.compute as pc
import pytest

from lake import Lake
from lake import sql as sqlmod
from lake.schema import DATA_TABLES, JSON_COLUMNS, public_columns


def _traj(tid: str, n: int, **kw) -> dict:
    steps = [{"kind": "tool" if i % 2 else "llm", "name": f"t{i % 3}", "input": f"in {tid} {i}",
              "output": f"out {i}", "error": "boom" if i == 1 else None,
              "attributes": {"k": i}} for i in range(n)]
    return {"trajectory_id": tid, "task": f"task {tid}", "agent": f"a{n % 2}", "steps": steps,
            "meta": {"domain": "retail"}, **kw}


@pytest.fixture
def busy(lake: Lake) -> Lake:
    """Several fragments, two tenants, an updated trajectory (deletion files), a payload,
    a retraction."""
    lake.ingest([_traj(f"r{i}", 3 + i % 4) for i in range(6)])
    lake.ingest([_traj("g1", 2), _traj("g2", 5)], tenant="globex")
    lake.tag("early")
    lake.ingest([_traj("r1", 9, outcome={"success": True})])  # longer: replaces r1
    lake.ingest([{"trajectory_id": "big", "task": "t",
                  "steps": [{"kind": "tool", "output": "x" * 70_000}]}])
    lake.retract(["r2"], "bad run")
    return lake


def _text(col: str) -> str:
    value = f'CAST("{col}" AS JSON)' if col in JSON_COLUMNS else f'"{col}"'
    return f'CAST({value} AS VARCHAR) AS "{col}"'


def _sorted(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=lambda r: tuple((v is None, v or "") for v in r))


def _expected(lake: Lake, table: str, tenant: str | None, ref: str | None = None) -> list:
    """The table's public columns read straight from Lance at the version, as text."""
    pinned = lake.version(ref).tables[table]
    con = duckdb.connect()
    con.register("t", lake.store.dataset(table, pinned).to_table())
    where = "" if tenant is None else f" WHERE tenant = '{tenant}'"
    cols = ", ".join(_text(c) for c in public_columns(DATA_TABLES[table]))
    return _sorted(con.sql(f"SELECT {cols} FROM t{where}").fetchall())


def _got(lake: Lake, table: str, tenant: str | None, ref: str | None = None) -> list:
    con = lake.connect(as_of=ref, tenant=tenant, all_tenants=tenant is None)
    cols = ", ".join(_text(c) for c in public_columns(DATA_TABLES[table]))
    return _sorted(con.sql(f'SELECT {cols} FROM "{table}"').fetchall())


@pytest.fixture(params=["default", "tiny chunks"])
def chunking(request, monkeypatch, busy: Lake) -> None:
    """As configured, or chunks of 4 rows with every wide fetch reading whole chunks (so
    the tests' small tables cross chunk and fragment boundaries). Empty caches either way."""
    monkeypatch.setattr(busy, "sql_caches", sqlmod.Caches.sized(2 << 30))
    busy._connections.clear()
    if request.param == "tiny chunks":
        monkeypatch.setattr(sqlmod, "CHUNK_ROWS", 4)
        monkeypatch.setattr(sqlmod, "BLOCK_ROWS", 3)
        monkeypatch.setattr(sqlmod, "SCAN_ROWS", 1)


@pytest.mark.parametrize("table", ["trajectories", "steps", "payloads"])
def test_views_show_the_pinned_rows_of_every_column(chunking, busy: Lake, table: str):
    for ref in (None, "early"):
        for tenant in ("default", "globex", None):
            want = _expected(busy, table, tenant, ref)
            assert _got(busy, table, tenant, ref) == want, (table, ref, tenant)
            assert _got(busy, table, tenant, ref) == want  # again, from the cache
    assert busy.sql("select count(*) from steps").fetchall() == [(3 + 9 + 5 + 6 + 3 + 4 + 1,)]


def test_wide_columns_follow_their_rows_through_joins_and_sorts(chunking, busy: Lake):
    con = busy.connect()
    rows = con.sql("SELECT s.trajectory_id, s.\"index\", s.input, s.attributes->>'k', t.task "
                   "FROM steps s JOIN trajectories t USING (trajectory_id) "
                   "ORDER BY hash(s.input) LIMIT 1000").fetchall()
    assert len(rows) == busy.count("steps")
    for tid, index, text, k, task in rows:
        if tid != "big":
            assert (text, k, task) == (f"in {tid} {index}", str(index), f"task {tid}")
    one = con.sql("SELECT output FROM steps WHERE trajectory_id = 'r3' AND \"index\" = 5"
                  ).fetchall()
    assert one == [("out 5",)]


def test_duckdb_filters_the_cached_columns_itself(busy: Lake, monkeypatch):
    """DuckDB offers pyarrow no filter over string_view columns, so it evaluates them
    natively (fast); if it ever pushes one, the scan still applies it."""
    seen = []
    real = sqlmod.Cached.scanner

    def spy(self, columns=None, filter=None, **kw):  # noqa: A002
        seen.append(filter)
        return real(self, columns, filter, **kw)

    monkeypatch.setattr(sqlmod.Cached, "scanner", spy)
    got = busy.sql("select name, count(*) from steps where kind = 'tool' and \"index\" > 0 "
                   "group by 1 order by 1").fetchall()
    assert got and seen and all(f is None for f in seen)

    ds = busy.store.dataset("steps", busy.version().tables["steps"])
    cached = sqlmod.Cached(ds, sqlmod.ColumnCache(1 << 20), sqlmod.ColumnCache(1 << 20))
    kept = cached.scanner(["trajectory_id", "kind"], filter=(pc.field("kind") == "tool")
                          & (pc.field("tenant") == "globex")).to_table()
    want = ds.to_table(columns=["trajectory_id"],
                       filter="kind = 'tool' AND tenant = 'globex'")["trajectory_id"]
    assert kept.schema.field("kind").type == cached.schema.field("kind").type
    assert sorted(kept["trajectory_id"].to_pylist()) == sorted(want.to_pylist())
    assert set(kept["kind"].to_pylist()) == {"tool"}


def test_a_new_version_loads_only_its_new_fragments(lake: Lake, monkeypatch):
    lake.ingest([_traj(f"a{i}", 3) for i in range(5)])
    lake.ingest([_traj(f"b{i}", 3) for i in range(5)])
    query = "select agent, count(*) from trajectories group by 1 order by 1"
    lake.sql(query).fetchall()
    loaded = []
    real = sqlmod.Cached._load

    def spy(self, idx, fields, got):
        loaded.append((self._ds.uri.rsplit("/", 1)[-1], len(idx), [f.name for f in fields]))
        return real(self, idx, fields, got)

    monkeypatch.setattr(sqlmod.Cached, "_load", spy)
    assert lake.sql(query).fetchall() == [("a1", 10)]
    assert loaded == []  # all cached
    lake.ingest([_traj("c0", 4)])
    assert lake.sql(query).fetchall() == [("a0", 1), ("a1", 10)]
    assert loaded == [("trajectories.lance", 1, ["tenant", "agent"])]


def test_a_small_budget_evicts_but_answers_stay_right(busy: Lake, monkeypatch):
    small, blocks = sqlmod.ColumnCache(4096), sqlmod.ColumnCache(2048)
    monkeypatch.setattr(busy, "sql_caches", sqlmod.Caches(small, blocks))
    monkeypatch.setattr(sqlmod, "SCAN_ROWS", 1)  # every wide fetch reads (and caches) blocks
    busy._connections.clear()
    want = _expected(busy, "steps", "default")
    assert _got(busy, "steps", "default") == want
    assert _got(busy, "steps", "default") == want
    assert 0 < small.nbytes <= small.budget and 0 < blocks.nbytes <= blocks.budget


def test_without_the_caches_the_views_read_lance_and_agree(busy: Lake):
    version = busy.version()
    plain = sqlmod.connect(busy.store, busy.catalog, version, "default")
    cached = busy.connect()
    for table in DATA_TABLES:
        describe = f'SELECT column_name, column_type FROM (DESCRIBE "{table}")'
        assert plain.sql(describe).fetchall() == cached.sql(describe).fetchall()
        cols = ", ".join(_text(c) for c in public_columns(DATA_TABLES[table]))
        query = f'SELECT {cols} FROM "{table}"'
        assert _sorted(plain.sql(query).fetchall()) == _sorted(cached.sql(query).fetchall())


def test_payloads_are_taken_by_row_never_read_by_blocks(busy: Lake, monkeypatch):
    blocks = sqlmod.ColumnCache(1 << 30)
    monkeypatch.setattr(busy, "sql_caches", sqlmod.Caches(sqlmod.ColumnCache(1 << 30), blocks))
    monkeypatch.setattr(sqlmod, "SCAN_ROWS", 1)  # every other wide fetch reads blocks
    busy._connections.clear()
    assert busy.sql("select length(data) from payloads").fetchall() == [(70_000,)]
    assert blocks.nbytes == 0
    assert busy.sql("select count(*) from steps where output like 'out%'").fetchall() == [(30,)]
    assert blocks.nbytes > 0


def test_sql_cache_budget_is_a_setting(tmp_path, dev_records):
    """``sql_cache_mb`` bounds what the views keep; 0 reads Lance on every query, with the
    same answers."""
    from lake import Lake

    answers = {}
    for mb in (0, 1, 1024):
        with Lake.open(str(tmp_path / "lake"), sql_cache_mb=mb) as lake:
            if mb == 0:
                lake.ingest(dev_records[:40])
            q = ("select kind, count(*), sum(length(output)) from steps "
                 "group by kind order by kind")
            answers[mb] = lake.sql(q).fetchall()
            if mb == 0:
                assert lake.sql_caches is None
            else:
                used = sum(lake.sql_caches.nbytes.values())
                assert 0 < used <= (mb << 20)
    assert answers[0] == answers[1] == answers[1024]


def test_versions_detail_is_json_like_the_other_json_columns(busy: Lake):
    rows = busy.sql("select operation, detail->>'inserted', detail->>'reason', "
                    "json_type(detail) from versions order by version").fetchall()
    assert rows[0] == ("create", None, None, "OBJECT")
    assert ("ingest", "6", None, "OBJECT") in rows and ("retract", None, "bad run", "OBJECT") \
        in rows
    assert busy.sql("select distinct typeof(detail) from versions").fetchall() == [("JSON",)]
