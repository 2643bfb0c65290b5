"""Lance tables of the lake: create from ``schema``, migrate, write, open at a version.

The root may be a local directory or an object-store URI; everything goes through Lance
(pylance), which speaks both. Each table is a Lance dataset at ``ROOT/<name>.lance``,
the layout LanceDB uses, so ``lancedb.connect(ROOT).open_table(name)`` opens it too.
(We call pylance directly: importing lancedb costs ~3 s, too much for every CLI call.)
"""

from __future__ import annotations

import os

os.environ.setdefault("LANCE_LOG", "error")

import lance  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from .schema import ALL_TABLES  # noqa: E402

IN_LIST_MAX = 1000  # above this many keys, scan the key columns instead of an IN filter
# The writer looks up the trajectory ids of every commit in these columns (dedupe, appends,
# deletes). Unindexed, a lookup of 1,000 ids scans the column: 12 ms at 100k rows, 52 ms at
# 1M, 188 ms at 4M; with a BTREE index 4-5 ms at any of these sizes.
KEY_INDEXES = {"trajectories": "trajectory_id", "steps": "trajectory_id"}
INDEX_MIN_ROWS = 100_000  # a key column is indexed from this many rows (below, a scan is cheap)
INDEX_LAG_ROWS = 100_000  # rows not yet in the index (scanned meanwhile) before it is updated
# An update indexes the new rows as a delta of the index (0.04 s per 100k rows at 4M rows;
# merging them in rewrote the whole BTREE, 0.84 s); past this many deltas they are merged.
INDEX_MAX_DELTAS = 16


class TableStore:
    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self._local = "://" not in self.root or self.root.startswith("file://")
        if self._local:
            # new: readable by its owner only (trajectories, hashed tokens, the audit log)
            os.makedirs(self.root.removeprefix("file://"), mode=0o700, exist_ok=True)
        self._ready: set[str] = set()

    def uri(self, name: str) -> str:
        return f"{self.root}/{name}.lance"

    def exists(self, name: str) -> bool:
        """The table has a committed version. A process killed while Lance created it leaves
        a directory without one (``_versions`` holding a temporary ``*.manifest#N``): that
        table does not exist, and ``ensure`` creates it."""
        if self._local:
            versions = os.path.join(self.uri(name).removeprefix("file://"), "_versions")
            try:
                with os.scandir(versions) as entries:  # stops at the first manifest
                    return any(e.name.endswith(".manifest") for e in entries)
            except (FileNotFoundError, NotADirectoryError):
                return False
        try:
            lance.dataset(self.uri(name))
            return True
        except (ValueError, OSError):
            return False

    def ensure(self, name: str) -> bool:
        """Create the table from its schema, or add the columns the schema has gained.

        Returns True when it changed anything (the caller records a lake version)."""
        if name in self._ready:
            return False
        schema = ALL_TABLES[name]
        changed = True
        if not self.exists(name):
            lance.write_dataset(schema.empty_table(), self.uri(name), mode="create")
        else:
            ds = self.dataset(name)
            missing = [f for f in schema if f.name not in set(ds.schema.names)]
            if missing:
                ds.add_columns(missing)
            changed = bool(missing)
        self._ready.add(name)
        return changed

    # -- reading ------------------------------------------------------------------------------
    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset:
        if version is None:
            return lance.dataset(self.uri(name))
        return lance.dataset(self.uri(name), version=version)

    def version(self, name: str) -> int:
        return int(self.dataset(name).version)

    def lookup(self, name: str, tenant: str, column: str, keys: list[str],
               columns: list[str]) -> pa.Table:
        """Rows of ``tenant`` whose ``column`` is in ``keys`` (latest version)."""
        ds = self.dataset(name)
        if len(keys) <= IN_LIST_MAX:
            return ds.to_table(columns=columns, filter=in_filter(tenant, column, keys))
        got = ds.to_table(columns=columns, filter=f"tenant = {quote(tenant)}")
        return got.filter(pc.is_in(got[column], value_set=pa.array(keys, pa.string())))

    def fragments(self, name: str) -> int:
        return len(self.dataset(name).get_fragments())

    # -- writing (each call is one Lance commit) ---------------------------------------------
    def append(self, name: str, rows: pa.Table) -> None:
        lance.write_dataset(rows, self.uri(name), mode="append")

    def upsert(self, name: str, keys: list[str], rows: pa.Table, *, update: bool = True) -> None:
        """Insert rows whose key is new; replace (``update``) or keep the existing ones."""
        merge = self.dataset(name).merge_insert(keys)
        if update:
            merge = merge.when_matched_update_all()
        merge.when_not_matched_insert_all().execute(rows)

    def delete(self, name: str, predicate: str) -> None:
        self.dataset(name).delete(predicate)

    def delete_keys(self, name: str, column: str, keys: list[str],
                    tenant: str | None = None) -> None:
        """Delete the rows (of ``tenant``, if given) whose ``column`` is in ``keys``, as
        ``lookup`` finds them: ``IN_LIST_MAX`` keys to a filter (one commit each)."""
        for at in range(0, len(keys), IN_LIST_MAX):
            part = keys[at:at + IN_LIST_MAX]
            self.delete(name, in_filter(tenant, column, part) if tenant is not None else
                        f"{column} IN ({', '.join(quote(k) for k in part)})")

    def restore(self, name: str, version: int | None) -> None:
        """Make ``version``'s rows current again as a new version (None: empty the table)."""
        if version is None:
            self.delete(name, "true")
        elif version != self.version(name):
            self.dataset(name, version).restore()

    def compact(self, name: str, *, every_deletion: bool = False) -> None:
        """``every_deletion``: rewrite every fragment with a deleted row, however few (a
        purge: deleted rows stay in their data files until then)."""
        if every_deletion:
            self.dataset(name).optimize.compact_files(materialize_deletions=True,
                                                      materialize_deletions_threshold=0.0)
        else:
            self.dataset(name).optimize.compact_files()

    def index_keys(self, name: str, column: str) -> bool:
        """Keep a BTREE index on ``column``: created once the table holds ``INDEX_MIN_ROWS``
        rows, brought up to date once ``INDEX_LAG_ROWS`` rows are not in it (a lookup scans
        those meanwhile; compaction keeps the index), its deltas merged past
        ``INDEX_MAX_DELTAS``. True when it wrote a table version."""
        ds = self.dataset(name)
        have = [i.name for i in ds.describe_indices() if i.field_names == [column]]
        if not have:
            if ds.count_rows() < INDEX_MIN_ROWS:
                return False
            ds.create_scalar_index(column, index_type="BTREE")
            return True
        stats = ds.stats.index_stats(have[0])
        if stats["num_unindexed_rows"] < INDEX_LAG_ROWS:
            return False
        deltas = int(stats["num_indices"])
        ds.optimize.optimize_indices(index_names=have, num_indices_to_merge=(
            0 if deltas < INDEX_MAX_DELTAS else deltas))  # 0: a new delta, else merge all
        return True


def quote(value: str) -> str:
    """A SQL string literal (Lance filters and DuckDB)."""
    return "'" + value.replace("'", "''") + "'"


def in_filter(tenant: str, column: str, keys: list[str]) -> str:
    return f"tenant = {quote(tenant)} AND {column} IN ({', '.join(quote(k) for k in keys)})"
