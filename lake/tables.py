"""Lance tables of the lake: create from ``schema``, migrate, open at a version.

The root may be a local directory or an object-store URI; everything here goes through
LanceDB / Lance, which speak both.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("LANCE_LOG", "error")

import lance  # noqa: E402
import lancedb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from .schema import ALL_TABLES  # noqa: E402

IN_LIST_MAX = 1000  # above this many keys, scan the key columns instead of an IN filter


class TableStore:
    def __init__(self, root: str):
        self.root = root.rstrip("/")
        if "://" not in self.root:
            os.makedirs(self.root, exist_ok=True)
        self.db = lancedb.connect(self.root)
        self._tables: dict[str, Any] = {}

    def uri(self, name: str) -> str:
        return f"{self.root}/{name}.lance"

    def exists(self, name: str) -> bool:
        return name in self.db.list_tables().tables

    def table(self, name: str) -> Any:
        """The LanceDB table, created from its schema (or migrated to it) on first use."""
        tbl = self._tables.get(name)
        if tbl is None:
            schema = ALL_TABLES[name]
            if self.exists(name):
                tbl = self.db.open_table(name)
                self._migrate(tbl, schema)
            else:
                tbl = self.db.create_table(name, schema=schema, exist_ok=True)
            self._tables[name] = tbl
        return tbl

    @staticmethod
    def _migrate(tbl: Any, schema: pa.Schema) -> None:
        """Add columns the schema gained since the table was written (as nulls)."""
        have = set(tbl.schema.names)
        missing = [f for f in schema if f.name not in have]
        if missing:
            tbl.add_columns(missing)

    def version(self, name: str) -> int:
        tbl = self.table(name)
        tbl.checkout_latest()
        return int(tbl.version)

    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset:
        if version is None:
            return lance.dataset(self.uri(name))
        return lance.dataset(self.uri(name), version=version)

    def lookup(self, name: str, tenant: str, column: str, keys: list[str],
               columns: list[str]) -> pa.Table:
        """Rows of ``tenant`` whose ``column`` is in ``keys`` (latest version)."""
        ds = self.dataset(name)
        base = f"tenant = {quote(tenant)}"
        if len(keys) <= IN_LIST_MAX:
            flt = f"{base} AND {column} IN ({', '.join(quote(k) for k in keys)})"
            return ds.to_table(columns=columns, filter=flt)
        got = ds.to_table(columns=columns, filter=base)
        return got.filter(pc.is_in(got[column], value_set=pa.array(keys, pa.string())))

    def fragments(self, name: str) -> int:
        return len(self.dataset(name).get_fragments())

    def compact(self, name: str) -> None:
        self.dataset(name).optimize.compact_files()
        self.table(name).checkout_latest()


def quote(value: str) -> str:
    """A SQL string literal (Lance filters and DuckDB)."""
    return "'" + value.replace("'", "''") + "'"


def in_filter(tenant: str, column: str, keys: list[str]) -> str:
    return f"tenant = {quote(tenant)} AND {column} IN ({', '.join(quote(k) for k in keys)})"
