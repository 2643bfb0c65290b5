"""SQL over the lake with DuckDB.

Each data table is a view over its Lance dataset, pinned at one lake version (snapshot
reads) and scoped to one tenant. DuckDB scans the datasets through Arrow with filter and
projection pushdown; no DuckDB extension binary is needed. ``meta`` and ``attributes``
are typed JSON, so ``meta->>'domain'`` works.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from .schema import DATA_TABLES, JSON, public_columns
from .tables import TableStore, quote
from .versions import Catalog, Version

JSON_COLUMNS = {(t, f.name) for t, s in DATA_TABLES.items() for f in s
                if f.type == JSON and f.name in ("meta", "attributes")}


def connect(store: TableStore, catalog: Catalog, version: Version | None,
            tenant: str | None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per table; ``tenant=None`` shows every tenant."""
    con = duckdb.connect()
    for name, schema in DATA_TABLES.items():
        pinned = version.tables.get(name) if version else None
        source = store.dataset(name, pinned) if pinned else schema.empty_table()
        con.register(f"_lance_{name}", source)
        con.register(f"_empty_{name}", schema.empty_table())
        have = set(source.schema.names)
        cols = ", ".join(_column(name, c) if c in have else _null(con, name, c)
                         for c in public_columns(schema))
        where = f" WHERE tenant = {quote(tenant)}" if tenant is not None else ""
        con.execute(f'CREATE VIEW "{name}" AS SELECT {cols} FROM _lance_{name}{where}')
    con.register("_versions_arrow", _versions_table(catalog))
    con.execute("CREATE VIEW versions AS SELECT * FROM _versions_arrow")
    return con


def _null(con: duckdb.DuckDBPyConnection, table: str, col: str) -> str:
    """A column the schema gained after this version was written reads as typed NULL."""
    types = dict(con.execute(f"select column_name, column_type from "
                             f"(describe _empty_{table})").fetchall())
    return f'CAST(NULL AS {types[col]}) AS "{col}"'


def _column(table: str, col: str) -> str:
    if (table, col) in JSON_COLUMNS:
        return f'CAST("{col}" AS JSON) AS "{col}"'
    return f'"{col}"'


def _versions_table(catalog: Catalog) -> pa.Table:
    tags: dict[int, list[str]] = {}
    for name, v in catalog.tags().items():
        tags.setdefault(v, []).append(name)
    rows = [{"version": v.version, "created_at": v.created_at, "operation": v.operation,
             "tags": sorted(tags.get(v.version, [])), "detail": str(v.detail)}
            for v in catalog.list()]
    return pa.Table.from_pylist(rows, schema=pa.schema(
        [("version", pa.int64()), ("created_at", pa.timestamp("us", tz="UTC")),
         ("operation", pa.string()), ("tags", pa.list_(pa.string())), ("detail", pa.string())]))
