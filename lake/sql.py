"""SQL over the lake with DuckDB.

Each data table is a view over its Lance dataset, pinned at one lake version (snapshot
reads) and scoped to one tenant. DuckDB scans the datasets through Arrow with filter and
projection pushdown; no DuckDB extension binary is needed. ``meta`` and ``attributes``
are typed JSON, so ``meta->>'domain'`` works.
"""

from __future__ import annotations

import duckdb
import lance
import pyarrow as pa

from .schema import DATA_TABLES, JSON_COLUMNS, LOG_TABLES, public_columns
from .tables import TableStore, quote
from .versions import Catalog, Version


def connect(store: TableStore, catalog: Catalog, version: Version | None,
            tenant: str | None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per table; ``tenant=None`` shows every tenant.

    Versioned tables are read as ``version`` pins them; log tables (contexts, feedback,
    audit) as they are now (``refresh`` re-points them)."""
    con = duckdb.connect()
    where = f" WHERE tenant = {quote(tenant)}" if tenant is not None else ""
    for name, schema in DATA_TABLES.items():
        pinned = version.tables.get(name) if version else None
        source = _scanned(store.dataset(name, pinned)) if pinned else schema.empty_table()
        con.register(f"_lance_{name}", source)
        _view(con, name, schema, set(source.schema.names), where)
    refresh(con, store)
    for name, schema in LOG_TABLES.items():
        _view(con, name, schema, set(schema.names), where)
    con.register("_versions_arrow", _versions_table(catalog))
    con.execute("CREATE VIEW versions AS SELECT * FROM _versions_arrow")
    from .analysis import install  # views and macros of `lake compare` / `lake cost`
    install(con)
    return con


# Wide text columns are read late: only for the rows the query's filter keeps. The others
# are read with the scan. (Lance's default reads every column outside the filter late, a
# take per batch: 1.5x slower on a whole-table aggregate such as success rate by tool over
# 1M steps, see benchmarks/RESULTS.md; a lookup by id stays as fast either way.)
LATE_COLUMNS = frozenset(("task", "meta", "input", "output", "error", "attributes", "data",
                          "detail"))


class _Scanned(lance.LanceDataset):
    """A Lance dataset whose scans (DuckDB's, with its pushed-down filter and projection)
    materialize only ``LATE_COLUMNS`` late."""

    def scanner(self, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("late_materialization",
                          [c for c in self.schema.names if c in LATE_COLUMNS])
        return super().scanner(*args, **kwargs)


def _scanned(ds: lance.LanceDataset) -> lance.LanceDataset:
    ds.__class__ = _Scanned  # same object and state (version, storage options), tuned scans
    return ds


def refresh(con: duckdb.DuckDBPyConnection, store: TableStore) -> None:
    """Point the log tables' views at their latest rows (they are not pinned by versions)."""
    for name, schema in LOG_TABLES.items():
        con.register(f"_lance_{name}", _scanned(store.dataset(name)) if store.exists(name)
                     else schema.empty_table())


def _view(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, have: set[str],
          where: str) -> None:
    con.register(f"_empty_{name}", schema.empty_table())
    cols = ", ".join(_column(c) if c in have else _null(con, name, c)
                     for c in public_columns(schema))
    con.execute(f'CREATE VIEW "{name}" AS SELECT {cols} FROM _lance_{name}{where}')


def _null(con: duckdb.DuckDBPyConnection, table: str, col: str) -> str:
    """A column the schema gained after this version was written reads as typed NULL."""
    types = dict(con.execute(f"select column_name, column_type from "
                             f"(describe _empty_{table})").fetchall())
    return f'CAST(NULL AS {types[col]}) AS "{col}"'


def _column(col: str) -> str:
    return f'CAST("{col}" AS JSON) AS "{col}"' if col in JSON_COLUMNS else f'"{col}"'


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
