"""SQL over the lake with DuckDB.

Each data table is a view pinned at one lake version (snapshot reads) and scoped to one
tenant; no DuckDB extension binary is needed. ``meta`` and ``attributes`` are typed JSON, so
``meta->>'domain'`` works.

A data table's view reads its Lance dataset through two process-wide caches of Arrow data,
keyed by the fragment's data and deletion files. Lance never rewrites a file, so an entry is
right for every version holding that fragment: pinned views need no invalidation, and a new
version reads only its new fragments. (Why: Lance decodes strings too slowly for views that
rescan them on every query to come within 2x of DuckDB over Parquet; benchmarks/RESULTS.md,
"SQL".)

- Narrow columns (ids, names, numbers, times, JSON objects) come from the lake's
  ``Caches.columns``: each column whole, read the first time a query asks for it. Strings
  are dictionary-encoded with ``string_view`` values, which DuckDB reads without copying;
  and since pyarrow has no kernels for ``string_view``, DuckDB keeps every filter and
  evaluates it natively. JSON text is typed as Arrow's JSON, which DuckDB reads as JSON
  without parsing it.
- Wide columns (``WIDE_COLUMNS``: long text, vectors) are not scanned: the view computes
  them with ``_fetch_<table>_<column>(_row)``, a vectorized UDF, for the rows DuckDB kept
  after filtering (a scanned column would be read and converted for every row, even for a
  lookup by id). A scan's dense runs of rows come from ``Caches.blocks``, blocks of rows read
  whole and cached; a lookup's few rows are a Lance ``take`` (or from cached blocks).

Log tables (contexts, feedback, audit) are small and not pinned: scanned from Lance.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import duckdb
import lance
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

from .analysis import MACROS, VIEWS, install
from .errors import LakeError
from .schema import DATA_TABLES, JSON_COLUMNS, LOG_TABLES, public_columns
from .tables import TableStore, quote
from .versions import Catalog, Version

# Long text and vectors: fetched by row for lookups, cached by blocks for scans. JSON objects
# are narrow (cached whole, typed JSON), as analysts aggregate over their fields; so is
# ``error``, text but null on almost every step.
WIDE_COLUMNS = frozenset(("task", "input", "output", "data", "centroid"))
TAKE_ONLY = frozenset(("data",))  # full payloads, of any size: never read by whole blocks
ROW = "_row"  # the row's position in the pinned dataset, which fetches its wide columns


def connect(store: TableStore, catalog: Catalog, version: Version | None,
            tenant: str | None, *, caches: Caches | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per table; ``tenant=None`` shows every tenant.

    Versioned tables are read as ``version`` pins them, through ``caches`` (the lake's; None:
    straight from Lance on every query, holding no memory); log tables (contexts, feedback,
    audit) as they are now (``refresh`` re-points them). A view reads its source through a
    name only the view holds (DuckDB's ``python_arrow_scan()``): no query can name a source
    to read past the tenant filter, and ``show tables`` lists the views alone. (The wide
    columns' ``_fetch_*`` functions still read any row by position: the scope is for
    reading, not access control.)"""
    con = duckdb.connect()
    where = f"tenant = {quote(tenant)}" if tenant is not None else ""
    for name, schema in DATA_TABLES.items():
        pinned = version.tables.get(name) if version else None
        if pinned and caches is not None:
            source: Any = Cached(store.dataset(name, pinned), caches.columns, caches.blocks)
            have = set(source.columns)
            fetch = _wide_udfs(con, name, schema, source)
        elif pinned:
            source, fetch = _scanned(store.dataset(name, pinned)), {}
            have = set(source.schema.names)
        else:
            source, have, fetch = schema.empty_table(), set(schema.names), {}
        _view(con, name, source, schema, have, fetch, where, typed=isinstance(source, Cached))
    logs = _LOGS[con] = {name: Latest(schema) for name, schema in LOG_TABLES.items()}
    refresh(con, store)
    for name, schema in LOG_TABLES.items():
        _view(con, name, logs[name], schema, set(schema.names), {}, where, typed=False)
    _create(con, "versions", _versions_table(catalog),
            "version, created_at, operation, tags, CAST(detail AS JSON) AS detail")
    install(con, all_tenants=tenant is None)  # views and macros of `lake compare` / `cost`
    return con


def names() -> dict[str, tuple[str, ...]]:
    """What a connection shows, by kind: the lake's tables, the analysis views, the macros."""
    return {"tables": (*DATA_TABLES, "versions", *LOG_TABLES), "views": VIEWS,
            "macros": MACROS}


def refresh(con: duckdb.DuckDBPyConnection, store: TableStore) -> None:
    """Point the log tables' views at their latest rows (they are not pinned by versions)."""
    for name, latest in _LOGS[con].items():
        latest.source = _scanned(store.dataset(name)) if store.exists(name) else \
            pds.dataset(latest.empty)


class Latest(pds.Dataset):
    """A log table's source: the dataset ``refresh`` last pointed it at, scanned as it is."""

    def __init__(self, schema: pa.Schema):  # noqa: D107
        self.empty = schema.empty_table()
        self.source: pds.Dataset = pds.dataset(self.empty)

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return self.source.schema

    def scanner(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.source.scanner(*args, **kwargs)


# each connection's log-table sources, for ``refresh``
_LOGS: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, dict[str, Latest]] = \
    weakref.WeakKeyDictionary()


def _create(con: duckdb.DuckDBPyConnection, name: str, source: Any, cols: str,
            where: str = "") -> None:
    """The view ``name``: ``cols`` (a select list) of ``source``'s rows matching ``where``.
    Only the view can name ``source``."""
    rel = con.from_arrow(source)
    (rel.filter(where) if where else rel).project(cols).create_view(name)


def _view(con: duckdb.DuckDBPyConnection, name: str, source: Any, schema: pa.Schema,
          have: set[str], fetch: dict[str, str], where: str, *, typed: bool) -> None:
    types = _types(con, schema) if not have.issuperset(schema.names) else {}
    cols = ", ".join(_column(c, fetch, typed) if c in have else
                     f'CAST(NULL AS {types[c]}) AS "{c}"'  # a column added since: NULL
                     for c in public_columns(schema))
    _create(con, name, source, cols, where)


def _types(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> dict[str, str]:
    """Each column's DuckDB type."""
    rel = con.from_arrow(schema.empty_table())
    return dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))


def _column(col: str, fetch: dict[str, str], typed: bool) -> str:
    """A view column: fetched by row if wide; JSON text cast to JSON unless ``typed``
    already (the cache holds it as JSON)."""
    value = f'{fetch[col]}("{ROW}")' if col in fetch else f'"{col}"'
    if col in JSON_COLUMNS and (col in fetch or not typed):
        value = f"CAST({value} AS JSON)"
    return f'{value} AS "{col}"'


def _wide_udfs(con: duckdb.DuckDBPyConnection, table: str, schema: pa.Schema,
               source: Cached) -> dict[str, str]:
    """Register, per wide column, the function that fetches it at given row positions."""
    types = _types(con, schema) if source.wide else {}
    names = {}
    for col in source.wide:
        names[col] = f"_fetch_{table}_{col}"
        con.create_function(names[col], _fetcher(source, col), ["BIGINT"], types[col],
                            type="arrow", null_handling="special")
    return names


def _fetcher(source: Cached, col: str) -> Callable[[pa.Array], pa.Array]:
    def fetch(rows: pa.Array) -> pa.Array:
        return source.fetch(col, rows)
    return fetch


# -- the column cache -------------------------------------------------------------------------
# Rows per cached chunk of a narrow column: its string dictionary (<= 32768 values) fits int16
# indices. Rows per block of a wide column (inline texts reach 64 KiB): DuckDB's vectors of
# 2048 rows from a chunk fall within one block.
CHUNK_ROWS = 32768
BLOCK_ROWS = 8192
SCAN_ROWS = 256  # a fetch of this many rows or more, dense in its range, reads whole blocks


class ColumnCache:
    """Arrow chunks of fragments' columns, least recently used first out past ``budget``
    bytes. Keys name immutable Lance files, so entries never go stale."""

    def __init__(self, budget: int):
        self.budget, self.nbytes = budget, 0
        self._entries: OrderedDict[tuple, list[pa.Array]] = OrderedDict()
        self._lock = threading.Lock()
        self.loading = threading.Lock()  # one load at a time: no duplicate reads

    def get(self, key: tuple) -> list[pa.Array] | None:
        with self._lock:
            chunks = self._entries.get(key)
            if chunks is not None:
                self._entries.move_to_end(key)
            return chunks

    def put(self, key: tuple, chunks: list[pa.Array]) -> None:
        size = sum(c.nbytes for c in chunks)
        with self._lock:
            if key in self._entries or size > self.budget:
                return
            self._entries[key] = chunks
            self.nbytes += size
            while self.nbytes > self.budget:
                _, old = self._entries.popitem(last=False)
                self.nbytes -= sum(c.nbytes for c in old)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0


@dataclass
class Caches:
    """A lake's SQL caches: narrow columns per fragment, wide ones per block of BLOCK_ROWS
    rows, apart, so that scanning a wide column never evicts the narrow ones. 1M steps and
    their 27k trajectories take ~120 MB with every narrow column cached, ~190 MB more with
    every wide one (setting ``sql_cache_mb``: both together)."""

    columns: ColumnCache
    blocks: ColumnCache

    @classmethod
    def sized(cls, total_bytes: int) -> Caches | None:
        """Half the budget each; None (no caching) for a budget of 0."""
        return cls(ColumnCache(total_bytes // 2), ColumnCache(total_bytes // 2)) \
            if total_bytes > 0 else None

    @property
    def nbytes(self) -> dict[str, int]:
        return {"narrow columns": self.columns.nbytes, "wide blocks": self.blocks.nbytes}

    def clear(self) -> None:
        self.columns.clear()
        self.blocks.clear()


def cached_type(field: pa.Field) -> pa.DataType:
    """How a narrow column is cached: JSON text as Arrow's JSON type (DuckDB reads it as JSON
    without parsing it), other strings as a dictionary of ``string_view``."""
    if field.name in JSON_COLUMNS:
        return pa.json_(field.type)
    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        return pa.dictionary(pa.int16(), pa.string_view())
    return field.type


def _encode(values: pa.Array, kind: pa.DataType) -> list[pa.Array]:
    """A fragment's narrow column (or a piece of it) as cached chunks of type ``kind``."""
    chunks = [values.slice(i, CHUNK_ROWS) for i in range(0, len(values), CHUNK_ROWS)]
    if isinstance(kind, pa.BaseExtensionType):
        return [pa.ExtensionArray.from_storage(kind, c) for c in chunks]
    if not pa.types.is_dictionary(kind):
        return chunks
    out = []
    for chunk in chunks:
        d = pc.dictionary_encode(chunk)
        out.append(pa.DictionaryArray.from_arrays(d.indices.cast(pa.int16()),
                                                  d.dictionary.cast(pa.string_view())))
    return out


class Part(NamedTuple):
    fragment: Any  # lance.LanceFragment
    ident: tuple  # the dataset, fragment id, data files and deletion file
    rows: int  # live rows
    start: int  # position of its first row in the pinned dataset


class Cached(pds.Dataset):
    """A pinned Lance dataset as DuckDB scans it: its narrow columns, from the ``columns``
    cache (each read whole the first time a query asks for it), and ``ROW``, the row's
    position, by which ``fetch`` reads wide columns (through the ``blocks`` cache).

    Declared ``string_view`` columns keep DuckDB from offering the filters to pyarrow (it
    has no kernels for them): DuckDB evaluates them itself, far faster than pyarrow."""

    def __init__(self, ds: lance.LanceDataset, columns: ColumnCache,  # noqa: D107
                 blocks: ColumnCache):
        self._ds, self._cache, self._blocks = ds, columns, blocks
        self.columns = ds.schema.names
        self.wide = [c for c in self.columns if c in WIDE_COLUMNS]
        self._fields = [pa.field(f.name, cached_type(f), f.nullable) for f in ds.schema
                        if f.name not in WIDE_COLUMNS]
        self._wide_fields = {c: ds.schema.field(c) for c in self.wide}
        self._declared = pa.schema([*self._fields, pa.field(ROW, pa.int64(), False)])
        self._parts: list[Part] | None = None
        self._start: np.ndarray | None = None

    @property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return self._declared

    def scanner(self, columns: list[str] | None = None, filter: Any = None,  # noqa: A002
                **_: Any) -> TableScan:
        names = self._declared.names if columns is None else list(columns)
        if filter is None:
            return TableScan(self.table(names))
        narrow = [f.name for f in self._fields]  # the only columns a filter can name
        return _filtered(self.table([*narrow, *(n for n in names if n not in narrow)]),
                         filter, names)

    def table(self, names: list[str]) -> pa.Table:
        """The pinned rows' ``names`` columns, loading the ones not cached yet."""
        parts = self.parts()
        wanted = [f for f in self._fields if f.name in names]
        got = self._chunks(wanted)
        arrays = {f.name: pa.chunked_array([c for g in got for c in g[f.name]], f.type)
                  for f in wanted}
        if ROW in names or not arrays:  # count(*) asks for no column, but for the rows
            arrays[ROW] = _positions(parts)
        return pa.table({n: arrays[n] for n in names}) if names else \
            pa.table(arrays).select([])

    def parts(self) -> list[Part]:
        """The fragments in scan order; an identity names the immutable files they read."""
        if self._parts is None:
            parts, start = [], 0
            for frag in self._ds.get_fragments():
                meta = frag.metadata
                ident = (self._ds.uri, meta.id, tuple(f.path for f in meta.files),
                         frag.deletion_file() or "")
                rows = frag.count_rows() if meta.deletion_file else meta.physical_rows
                parts.append(Part(frag, ident, rows, start))
                start += rows
            self._parts = parts
        return self._parts

    def fetch(self, col: str, rows: pa.Array | pa.ChunkedArray) -> pa.Array:
        """``col`` (a wide column) of the rows at positions ``rows``. A scan's rows come from
        cached blocks of ``BLOCK_ROWS`` rows, read whole when missing; a lookup's few rows
        not cached come from a Lance take."""
        pos = np.asarray(rows.to_numpy(), dtype=np.int64)
        field = self._wide_fields[col]
        if len(pos) == 0:
            return pa.array([], field.type)
        dense = (len(pos) >= SCAN_ROWS and pos.max() - pos.min() < 8 * len(pos)
                 and col not in TAKE_ONLY)
        sliced = self._run(pos, field, dense)
        if sliced is not None:
            return sliced
        order = None if pos[0] <= pos[-1] and _ascending(pos) else np.argsort(pos, kind="stable")
        sorted_pos = pos if order is None else pos[order]
        pieces = []
        for part, block, offsets in self._runs(sorted_pos):
            values = self._block(part, block, field, read=dense)
            if values is None:  # a lookup: take the rows from Lance
                return self._ds.take(pa.array(pos), columns=[col]).column(0).combine_chunks()
            pieces.append(values.take(pa.array(offsets)))
        out = pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)
        return out if order is None else out.take(pa.array(np.argsort(order)))

    def _run(self, pos: np.ndarray, field: pa.Field, read: bool) -> pa.Array | None:
        """A contiguous run of rows within one block (a scan's usual vector): a slice of the
        cached block (read first if ``read``)."""
        first, n = int(pos[0]), len(pos)
        if int(pos[-1]) - first + 1 != n or not (np.diff(pos) == 1).all():
            return None
        starts = self._starts()
        part = int(np.searchsorted(starts, first, side="right")) - 1
        local = first - int(starts[part])
        block, offset = divmod(local, BLOCK_ROWS)
        if offset + n > BLOCK_ROWS or first + n > starts[part + 1]:
            return None
        values = self._block(part, block, field, read)
        return None if values is None else values.slice(offset, n)

    def _runs(self, pos: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """Ascending positions as (part, block, offsets in the block) per block they hit."""
        starts = self._starts()
        part = np.searchsorted(starts, pos, side="right") - 1
        local = pos - starts[part]
        block = local // BLOCK_ROWS
        cuts = np.flatnonzero((np.diff(part) != 0) | (np.diff(block) != 0)) + 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(pos)], strict=True):
            yield int(part[a]), int(block[a]), local[a:b] - block[a] * BLOCK_ROWS

    def _block(self, part: int, block: int, field: pa.Field, read: bool) -> pa.Array | None:
        """A cached block of a wide column; read (and cached) if missing and ``read``."""
        p = self.parts()[part]
        key = (*_key(p.ident, field), block)
        got = self._blocks.get(key)
        if got is None and read:
            got = [p.fragment.to_table(columns=[field.name], offset=block * BLOCK_ROWS,
                                       limit=BLOCK_ROWS).column(0).combine_chunks()]
            self._blocks.put(key, got)
        return None if got is None else got[0]

    def _starts(self) -> np.ndarray:
        """Each part's first position, and the total rows last."""
        if self._start is None:
            parts = self.parts()
            self._start = np.array([p.start for p in parts] +
                                   [parts[-1].start + parts[-1].rows if parts else 0], np.int64)
        return self._start

    def _chunks(self, wanted: list[pa.Field]) -> list[dict[str, list[pa.Array]]]:
        """Per part, the cached chunks of each wanted column (read if missing)."""
        parts = self.parts()
        got: list[dict[str, Any]] = [{f.name: self._cache.get(_key(p.ident, f)) for f in wanted}
                                     for p in parts]
        if all(c is not None for g in got for c in g.values()):
            return got
        with self._cache.loading:
            missing: dict[tuple[str, ...], list[int]] = {}
            for i, (g, p) in enumerate(zip(got, parts, strict=True)):
                for f in wanted:  # another thread may have read it meanwhile
                    if g[f.name] is None:
                        g[f.name] = self._cache.get(_key(p.ident, f))
                names = tuple(f.name for f in wanted if g[f.name] is None)
                if names:
                    missing.setdefault(names, []).append(i)
            for names, idx in missing.items():
                self._load(idx, [f for f in wanted if f.name in names], got)
        return got

    def _load(self, idx: list[int], fields: list[pa.Field], got: list[dict[str, Any]]) -> None:
        """Read ``fields`` of the parts ``idx`` in one scan and cache them, encoding each
        batch while Lance decodes the next ones."""
        parts = self.parts()
        names = [f.name for f in fields]
        scan = self._ds.scanner(columns=names, fragments=[parts[i].fragment for i in idx],
                                scan_in_order=True, batch_size=CHUNK_ROWS)
        chunks: dict[str, list[pa.Array]] = {n: [] for n in names}
        for j, piece in _by_fragment(scan.to_batches(), [parts[i].rows for i in idx]):
            if piece is not None:
                for n in names:
                    chunks[n] += _encode(piece.column(n), self._declared.field(n).type)
                continue
            for f in fields:  # part idx[j] is complete
                got[idx[j]][f.name] = chunks[f.name]
                self._cache.put(_key(parts[idx[j]].ident, f), chunks[f.name])
            chunks = {n: [] for n in names}


def _by_fragment(batches: Iterator[pa.RecordBatch],
                 rows: list[int]) -> Iterator[tuple[int, pa.RecordBatch | None]]:
    """Split a scan of fragments holding ``rows`` rows each into (j, piece) for the j-th
    fragment's pieces and (j, None) at its end."""
    at, left = 0, rows[0] if rows else 0
    for batch in batches:
        while batch.num_rows:
            while at < len(rows) and left == 0:
                yield at, None
                at += 1
                left = rows[at] if at < len(rows) else 0
            if at == len(rows):
                raise LakeError("a Lance scan returned more rows than its fragments hold; "
                                "reopen the lake")
            n = min(left, batch.num_rows)
            yield at, batch.slice(0, n)
            batch, left = batch.slice(n), left - n
    while at < len(rows) and left == 0:
        yield at, None
        at += 1
        left = rows[at] if at < len(rows) else 0
    if at < len(rows):
        raise LakeError("a Lance scan returned fewer rows than its fragments hold; "
                        "reopen the lake")


def _ascending(pos: np.ndarray) -> bool:
    return bool(np.all(pos[1:] >= pos[:-1]))


def _key(ident: tuple, field: pa.Field) -> tuple:
    return (*ident, field.name, str(field.type))


def _positions(parts: list[Part]) -> pa.ChunkedArray:
    """Each row's position in the pinned dataset, chunked as the cached columns are."""
    chunks = [pa.array(np.arange(p.start + i, p.start + min(p.rows, i + CHUNK_ROWS),
                                 dtype=np.int64))
              for p in parts for i in range(0, p.rows, CHUNK_ROWS)]
    return pa.chunked_array(chunks, pa.int64())


class TableScan:
    """What ``Cached.scanner`` returns: a table's batches as they are. (A pyarrow Scanner
    over the same table runs them through its scan machinery: 10-25% slower queries.)"""

    def __init__(self, table: pa.Table):  # noqa: D107
        self.table = table
        self.projected_schema = table.schema

    def to_reader(self) -> pa.RecordBatchReader:
        return self.table.to_reader()

    def to_table(self) -> pa.Table:
        return self.table


def _filtered(table: pa.Table, filter: Any, names: list[str]) -> TableScan:  # noqa: A002
    """Apply a filter DuckDB pushed down after all (its current version does not): pyarrow
    evaluates it over plain strings, then the rows go back to the declared types."""
    plain = pa.schema([pa.field(f.name, pa.dictionary(pa.int16(), pa.string()), f.nullable)
                       if pa.types.is_dictionary(f.type) else f for f in table.schema])
    kept = pds.dataset(table.cast(plain)).to_table(columns=names, filter=filter)
    return TableScan(kept.cast(pa.schema([table.schema.field(n) for n in names])))


# -- straight Lance scans: log tables, and data tables without the caches ----------------------
LATE_COLUMNS = frozenset(("task", "meta", "input", "output", "error", "attributes", "data",
                          "detail"))  # wide text: read only for the rows the filter keeps


class _Scanned(lance.LanceDataset):
    """A Lance dataset whose scans (DuckDB's, with its pushed-down filter and projection)
    materialize only ``LATE_COLUMNS`` late. (Lance's default reads every column outside the
    filter late, a take per batch: 1.5x slower on whole-table aggregates.)"""

    def scanner(self, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("late_materialization",
                          [c for c in self.schema.names if c in LATE_COLUMNS])
        return super().scanner(*args, **kwargs)


def _scanned(ds: lance.LanceDataset) -> lance.LanceDataset:
    ds.__class__ = _Scanned  # same object and state (version, storage options), tuned scans
    return ds


def _versions_table(catalog: Catalog) -> pa.Table:
    """The versions view's rows; ``detail`` as JSON text, as the catalog stores it."""
    tags: dict[int, list[str]] = {}
    for name, v in catalog.tags().items():
        tags.setdefault(v, []).append(name)
    rows = [{"version": v.version, "created_at": v.created_at, "operation": v.operation,
             "tags": sorted(tags.get(v.version, [])),
             "detail": orjson.dumps(v.detail).decode()}
            for v in catalog.list()]
    return pa.Table.from_pylist(rows, schema=pa.schema(
        [("version", pa.int64()), ("created_at", pa.timestamp("us", tz="UTC")),
         ("operation", pa.string()), ("tags", pa.list_(pa.string())), ("detail", pa.string())]))
