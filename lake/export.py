"""The lake as plain Parquet: every table, partitioned by tenant and day, schema included.

    result = export_lake(lake, "dump/", as_of="before-cleanup")

Layout (hive style, readable as is by DuckDB, Spark, pandas / pyarrow)::

    dump/_lake_export.json                     manifest: version, tables, rows, columns
    dump/SCHEMA.md                             the tables and columns, partitioning, day rule
    dump/trajectories/tenant=acme/day=2025-08-01/part-0.parquet
    dump/steps/tenant=acme/day=2025-08-01/part-0.parquet
    dump/payloads/tenant=acme/part-0.parquet
    ...

``tenant`` and ``day`` are partition columns: they are in the directory names, not in the
files (as Spark and pyarrow expect); readers add them back (``day`` as a date). An empty
table is one empty file, ``<table>/part-0.parquet``, holding every column. Columns are
those of ``lake/schema.py`` less the internal ``_`` ones, with their types (times are
``timestamp[us, UTC]``, ``meta`` / ``attributes`` / ``stats`` / ``detail`` JSON text).
Which time makes a row's day is in ``DAY_RULES``; steps go with their trajectory's day, so
a trajectory and its steps share a partition.

Versioned tables are read as one lake version pins them (``as_of``, default the latest);
the append-only logs (contexts, feedback, audit) as they are now. ``lake ingest DIR`` reads
such a directory back (trajectories with their steps and payloads).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lance
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .errors import AlreadyExists, InvalidArgument
from .schema import DATA_TABLES, KEYS, LOG_TABLES, public_columns
from .tables import quote

if TYPE_CHECKING:
    from .lake import Lake

FORMAT = "context-lake.export/1"
MANIFEST = "_lake_export.json"
SCHEMA_DOC = "SCHEMA.md"
FORMATS = ("parquet",)
EXPORT_TABLES: dict[str, pa.Schema] = {**DATA_TABLES, **LOG_TABLES}
# table -> (time column(s) whose UTC date is the row's day, as documented); None: tenant only
DAY_RULES: dict[str, tuple[tuple[str, ...], str] | None] = {
    "trajectories": (("started_at", "ended_at", "ingested_at"),
                     "started_at, else ended_at, else ingested_at"),
    "steps": ((), "its trajectory's day (a trajectory and its steps share a partition)"),
    "payloads": None,
    "clusters": (("fitted_at",), "fitted_at"),
    "cluster_members": None,
    "contexts": (("created_at",), "created_at"),
    "feedback": (("reported_at",), "reported_at"),
    "audit": (("time",), "time"),
}
BATCH_ROWS = 65_536
Progress = Callable[[str, int, int], None]  # (table, rows done, rows in the table)


@dataclass
class ExportResult:
    directory: str
    version: int
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "version": self.version,
                "rows": {t: d["rows"] for t, d in self.tables.items()},
                "files": sum(d["files"] for d in self.tables.values())}


def export_lake(lake: Lake, out_dir: str | Path, *, fmt: str = "parquet",
                as_of: int | str | None = None, tenant: str | None = None,
                all_tenants: bool = False, on_progress: Progress | None = None) -> ExportResult:
    """Write every table of ``tenant`` (or of every tenant) under ``out_dir`` (new or empty)."""
    if fmt not in FORMATS:
        raise InvalidArgument(f"export format {fmt!r} is not supported; use one of "
                              f"{', '.join(FORMATS)}", field="format")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlreadyExists(f"{out} exists and is not an empty directory; export into a new "
                            "directory (or remove this one first)")
    version = lake.version(as_of)
    scope = None if all_tenants else (tenant or lake.settings.tenant)
    out.mkdir(parents=True, exist_ok=True)
    tick = on_progress or (lambda table, done, total: None)
    result = ExportResult(str(out), version.version)
    days: pa.Table | None = None  # (tenant, trajectory_id, day) for the steps
    try:
        for name, schema in EXPORT_TABLES.items():
            pinned = version.tables.get(name) if name in DATA_TABLES else None
            if name in DATA_TABLES and not pinned or not lake.store.exists(name):
                ds = None
            else:
                ds = lake.store.dataset(name, pinned)
            result.tables[name] = _table(ds, name, schema, out / name, scope, days, tick)
            if name == "trajectories":
                days = _days_of(out / name)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    _write_manifest(out, result, version, as_of, scope)
    return result


def _table(ds: lance.LanceDataset | None, name: str, schema: pa.Schema, where: Path,
           scope: str | None, days: pa.Table | None, tick: Progress) -> dict[str, Any]:
    cols = public_columns(schema)
    rule = DAY_RULES[name]
    part_cols = ["tenant", "day"] if rule else ["tenant"]
    out_schema = pa.schema([schema.field(c) for c in cols]
                           + ([pa.field("day", pa.string())] if rule else []))
    flt = None if scope is None else f"tenant = {quote(scope)}"
    total = ds.count_rows(filter=flt) if ds is not None else 0
    done = [0]

    def batches() -> Iterator[pa.RecordBatch]:
        if ds is None:
            return
        have = set(ds.schema.names)
        for batch in ds.to_batches(columns=[c for c in cols if c in have], filter=flt,
                                   batch_size=BATCH_ROWS):
            arrays = [batch.column(c) if c in have
                      else pa.nulls(batch.num_rows, schema.field(c).type) for c in cols]
            tbl = pa.Table.from_arrays(arrays, schema=pa.schema([schema.field(c) for c in cols]))
            if rule:
                tbl = tbl.append_column("day", _day(tbl, name, days))
            done[0] += tbl.num_rows
            tick(name, done[0], total)
            yield from tbl.cast(out_schema).to_batches()

    files: list[str] = []
    pads.write_dataset(
        pa.RecordBatchReader.from_batches(out_schema, batches()), where, format="parquet",
        partitioning=pads.partitioning(pa.schema([out_schema.field(c) for c in part_cols]),
                                       flavor="hive"),
        basename_template="part-{i}.parquet", existing_data_behavior="error",
        file_options=pads.ParquetFileFormat().make_write_options(compression="zstd"),
        preserve_order=True, max_rows_per_group=BATCH_ROWS,
        file_visitor=lambda f: files.append(f.path))
    if not files:  # an empty table: one empty file with every column, so readers find it
        where.mkdir(parents=True, exist_ok=True)
        pq.write_table(out_schema.empty_table(), where / "part-0.parquet", compression="zstd")
        files.append(str(where / "part-0.parquet"))
    tick(name, done[0], total)
    return {"rows": done[0], "files": len(files), "partitioned_by": part_cols,
            "day": rule[1] if rule else None}


def _day(tbl: pa.Table, name: str, days: pa.Table | None) -> pa.Array:
    rule = DAY_RULES[name]
    assert rule is not None
    if name == "steps":
        if days is None or days.num_rows == 0:
            return pa.nulls(tbl.num_rows, pa.string())
        keys = pc.binary_join_element_wise(tbl["tenant"], tbl["trajectory_id"], "\x1f")
        pos = pc.index_in(keys, value_set=days["key"])
        return pc.take(days["day"], pos).combine_chunks()
    cols = [tbl[c] for c in rule[0]]
    ts = pc.coalesce(*cols) if len(cols) > 1 else cols[0]
    return pc.strftime(ts, format="%Y-%m-%d").combine_chunks()


def _days_of(trajectories: Path) -> pa.Table:
    """(tenant, trajectory_id) -> day, read back from the trajectories just written."""
    if not trajectories.exists():
        return pa.table({"key": pa.array([], pa.string()), "day": pa.array([], pa.string())})
    t = pads.dataset(trajectories, format="parquet", partitioning=pads.partitioning(
        pa.schema([("tenant", pa.string()), ("day", pa.string())]), flavor="hive")
    ).to_table(columns=["tenant", "trajectory_id", "day"])
    return pa.table({"key": pc.binary_join_element_wise(t["tenant"], t["trajectory_id"], "\x1f"),
                     "day": t["day"]})


# -- manifest and schema doc ----------------------------------------------------------------------

def _write_manifest(out: Path, result: ExportResult, version: Any, as_of: int | str | None,
                    scope: str | None) -> None:
    tables = {}
    for name, info in result.tables.items():
        schema = EXPORT_TABLES[name]
        tables[name] = {
            "path": f"{name}/", **info, "key": list(KEYS.get(name, ())),
            "pinned": name in DATA_TABLES,
            "columns": [{"name": c, "type": str(schema.field(c).type),
                         "nullable": schema.field(c).nullable, "doc": _doc(schema.field(c))}
                        for c in public_columns(schema)],
        }
    manifest = {"format": FORMAT, "lake_version": version.version,
                "as_of": None if as_of is None else str(as_of),
                "tenant": scope, "all_tenants": scope is None, "tables": tables}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (out / SCHEMA_DOC).write_text(schema_markdown(manifest))


def _doc(f: pa.Field) -> str:
    return (f.metadata or {}).get(b"doc", b"").decode()


def schema_markdown(manifest: dict[str, Any]) -> str:
    scope = ("every tenant" if manifest["all_tenants"] else f"tenant `{manifest['tenant']}`")
    out = [f"# Context Lake export (lake version {manifest['lake_version']}, {scope})", "",
           "Hive-style Parquet: `<table>/tenant=<tenant>/day=<YYYY-MM-DD>/part-<n>.parquet`. "
           "`tenant` and `day` are partition columns (in the path, not in the files); "
           "`day` is a UTC date. Times are `timestamp[us, UTC]`; `meta`, `attributes`, "
           "`stats` and `detail` are JSON text.", "",
           "```sql", "-- DuckDB", "SELECT * FROM read_parquet('trajectories/**/*.parquet', "
           "hive_partitioning = true);", "```", "",
           "```python", "pandas.read_parquet('trajectories')          # or pyarrow.dataset",
           "spark.read.parquet('trajectories')", "```", "",
           "`lake ingest <this directory>` loads the trajectories (with their steps and "
           "payloads) into a lake.", ""]
    for name, t in manifest["tables"].items():
        part = ", ".join(f"`{c}`" for c in t["partitioned_by"])
        day = f"; day: {t['day']}" if t["day"] else ""
        key = f"key `({', '.join(t['key'])})`; " if t["key"] else ""
        pinned = "read at the lake version" if t["pinned"] else "append-only log, read as is"
        out += [f"## `{name}`", "", f"{t['rows']} rows in {t['files']} file(s); {key}"
                f"partitioned by {part}{day}; {pinned}.", "",
                "| column | type | null | meaning |", "| --- | --- | --- | --- |",
                "| `tenant` | partition (`tenant=`) | no | tenant that owns the row |"]
        if t["day"]:
            out.append(f"| `day` | partition (`day=`), a date | no | UTC date of {t['day']} |")
        out += [f"| `{c['name']}` | `{c['type']}` | {'yes' if c['nullable'] else 'no'} | "
                f"{c['doc'].replace('|', chr(92) + '|')} |" for c in t["columns"]
                if c["name"] != "tenant"]
        out.append("")
    return "\n".join(out)
