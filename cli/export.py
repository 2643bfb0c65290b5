"""`lake tape`, `lake export-dataset`, `lake export`: the lake's data out, as files."""

from __future__ import annotations

import click

from lake import Lake, Settings

from .main import _common, _echo_json, cli
from .progress import rows_bar


@cli.command()
@_common
@click.argument("trajectory_id")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the tape here [default: print it].")
@click.option("--as-of", default=None, metavar="VERSION|TAG", help="Read the lake as of then.")
@click.option("--json", "as_json", is_flag=True, help="With --out: print the summary as JSON.")
def tape(settings: Settings, trajectory_id: str, out: str | None, as_of: str | None,
         as_json: bool) -> None:
    """Write a trajectory's tool calls with their recorded results (a replay tape).

    Replay it from Python: `Tape.load(FILE).call(name, arguments)` answers each call from
    the record and reports divergence (docs/analysis.md, "Tapes").

    \b
    Example:
      lake tape "tau2/retail/gpt-4.1/default/task13/trial0" --out task13.tape.json
    """
    from lake.tape import Tape

    lake = Lake.open(settings=settings, readonly=True)
    t = Tape.from_lake(lake, trajectory_id, as_of=as_of)
    if out is None:
        click.echo(t.dumps(), nl=False)
        return
    t.save(out)
    summary = {"trajectory_id": trajectory_id, "calls": len(t.calls), "out": out,
               "lake_version": t.source.get("lake_version")}
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"wrote {len(t.calls)} tool calls of {trajectory_id} (lake version "
                   f"{summary['lake_version']}) to {out}")


@cli.command("export-dataset")
@_common
@click.option("--kind", type=click.Choice(["sft", "preference", "rft"]), required=True,
              help="sft: successful runs as chats; preference: success/failure pairs of a "
                   "task; rft: tasks with rewards and a reference tool plan.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for KIND.jsonl and KIND.manifest.json.")
@click.option("--where", default=None, metavar="SQL",
              help="Only trajectories matching this predicate (SQL over `trajectories`).")
@click.option("--as-of", default=None, metavar="VERSION|TAG",
              help="Read the lake as of then [default: the latest version].")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--progress/--no-progress", default=True, help="A progress bar on a terminal.")
def export_dataset_cmd(settings: Settings, kind: str, out_dir: str, where: str | None,
                       as_of: str | None, as_json: bool, progress: bool) -> None:
    """Write a training dataset (JSONL) and its manifest: lake version, filter, counts,
    sha256. The same version, kind and filter give byte-identical files.

    \b
    Examples:
      lake export-dataset --kind sft --out data/ --as-of release-1
      lake export-dataset --kind preference --where "meta->>'domain' = 'retail'" --out data/
    """
    from lake.datasets import export_dataset

    lake = Lake.open(settings=settings, readonly=True)
    with rows_bar(progress) as tick:
        res = export_dataset(lake, kind, out_dir, where=where, as_of=as_of,
                             on_progress=lambda done, total: tick(kind, done, total))
    if as_json:
        _echo_json(res.as_dict())
        return
    m = res.manifest
    f = m["files"][0]
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in m["counts"].items())
    click.echo(f"{kind}: {counts}; lake version {m['lake']['version']}; wrote {out_dir}/"
               f"{f['path']} ({f['records']} lines, sha256 {f['sha256'][:12]}) and "
               f"{kind}.manifest.json")


@cli.command("export")
@_common
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["parquet"]), default="parquet",
              show_default=True)
@click.option("--as-of", default=None, metavar="VERSION|TAG",
              help="Read the versioned tables as of then [default: the latest version].")
@click.option("--all-tenants", is_flag=True, help="Every tenant's rows (admin).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", default=True, help="A progress bar on a terminal.")
def export_cmd(settings: Settings, out_dir: str, fmt: str, as_of: str | None,
               all_tenants: bool, as_json: bool, progress: bool) -> None:
    """Write every table as Parquet, partitioned by tenant and day (hive style), with the
    schema (SCHEMA.md, _lake_export.json). DuckDB, Spark and pandas read it as is, and
    `lake ingest DIR` loads it into another lake.

    \b
    Examples:
      lake export dump/ --format parquet --as-of before-cleanup
      duckdb -c "select count(*) from read_parquet('dump/steps/**/*.parquet')"
    """
    from lake.export import export_lake

    lake = Lake.open(settings=settings, readonly=True)
    with rows_bar(progress) as tick:
        res = export_lake(lake, out_dir, fmt=fmt, as_of=as_of, all_tenants=all_tenants,
                          on_progress=tick)
    if as_json:
        _echo_json(res.as_dict())
        return
    rows = ", ".join(f"{n} {t}" for t, n in res.as_dict()["rows"].items() if n)
    click.echo(f"exported lake version {res.version} to {out_dir}: {rows or 'no rows'} "
               f"({res.as_dict()['files']} Parquet files; schema in {out_dir}/SCHEMA.md)")
