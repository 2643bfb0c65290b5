"""Running a user's SQL (``Lake.sql``, ``lake sql``): one statement (several are refused,
not run with only the last one's rows shown) that reads (``READS``: the connection and its
views are shared by later queries), run at once, and every complaint DuckDB has about it an
``InvalidArgument`` on the field ``query``.

DuckDB finds some mistakes while binding (an unknown column) and others only while running
(``cast('x' as int)``, ``day > '2025'``); running at the call raises both here, and the
relation returned holds the rows, so reading it (``.fetchall()``, ``.arrow()``) never runs
the query again. A failure of the lake itself during the query (a Lance file that cannot be
read, raised by the lake's Python sources and functions) is not the query's fault: it is
re-raised as it came.
"""

from __future__ import annotations

import duckdb

from .errors import InvalidArgument

# What a query can get wrong: its text, names, types, values, the files it names.
QUERY_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.ProgrammingError,  # parser, syntax, binder, catalog, invalid input (error(), ...)
    duckdb.DataError,  # conversion, out of range, type mismatch
    duckdb.NotSupportedError,
    duckdb.IntegrityError,
    duckdb.IOException,  # read_parquet('missing.parquet'): the lake's own files are read by
)                        # Python code, whose failures DuckDB words as below
# What a query may be: reading statements, and COPY ... TO a file, SET and PRAGMA. Creating,
# changing or dropping anything (the connection's views are the tenant's scope), attaching
# databases and loading extensions are refused.
READS = frozenset({"SELECT", "EXPLAIN", "PRAGMA", "SET", "CALL", "COPY"})
# DuckDB's words for a Python exception raised in the lake's code during a query.
LAKE_FAILED = ("Python exception occurred", "exporting a stream from the ")

_HINTS: tuple[tuple[type[duckdb.Error], str], ...] = (
    (duckdb.CatalogException, "{names}"),
    (duckdb.BinderException, "`describe TABLE` lists a table's columns (docs/schema.md)"),
    (duckdb.ParserException, "fix the SQL where the message points (DuckDB's dialect)"),
    (duckdb.SyntaxException, "fix the SQL where the message points (DuckDB's dialect)"),
    (duckdb.DataError, "a value does not convert to the type asked for: compare like with "
                       "like (day > DATE '2025-01-01'), or TRY_CAST(x AS type) gives NULL "
                       "instead of an error"),
    (duckdb.IOException, "a file the query reads could not be read: check its path"),
    (duckdb.NotSupportedError, "DuckDB cannot do this: write the query another way"),
)


def run(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation:
    """Run ``query``, one SQL statement, on ``con`` (made by ``lake.sql.connect``) now: a
    relation over the rows it returned (``set ...`` returns a relation without rows)."""
    try:
        statements = con.extract_statements(query)
        if len(statements) > 1:
            raise InvalidArgument(
                f"the query holds {len(statements)} statements; one is run at a time (its "
                "rows are the answer): run each on its own, or fold them into one (a WITH "
                "clause holds what an earlier statement would set up)", field="query")
        if statements and statements[0].type.name not in READS:
            raise InvalidArgument(
                f"SQL here reads the lake: {statements[0].type.name} is not run "
                "(the connection is shared by later queries). Write with `lake ingest` or the "
                "client; COPY (SELECT ...) TO 'file.parquet' saves a result; `lake export` "
                "writes every table", field="query")
        rel = con.sql(query) if statements else None
        if rel is None:
            raise InvalidArgument("the query is empty: give one SQL statement, e.g. "
                                  "\"select count(*) from trajectories\"", field="query")
        return rel.materialize()
    except duckdb.Error as e:
        err = query_error(e)
        if err is None:
            raise
        raise err from e


def listing() -> str:
    """The tables, views and macros every connection has, as a sentence."""
    from .sql import names

    n = names()
    return (f"the tables are {', '.join(n['tables'])} (docs/schema.md); the analysis views "
            f"{', '.join(n['views'])}; the macros {', '.join(m + '(...)' for m in n['macros'])} "
            "(docs/analysis.md)")


def query_error(e: duckdb.Error) -> InvalidArgument | None:
    """``e`` as the query's error (DuckDB's message and what to do), or None when the lake
    failed rather than the query."""
    text = str(e)
    if not isinstance(e, QUERY_ERRORS) or any(m in text for m in LAKE_FAILED):
        return None
    hint = next((h for kind, h in _HINTS if isinstance(e, kind)),
                "fix the query as DuckDB's message says")
    if hint == "{names}":
        hint = listing()
    return InvalidArgument(f"SQL failed: {text}\nhint: {hint}", field="query")
