"""`lake`: the command line. It holds no logic of its own: it calls the library.

Exit codes: 0 success; 1 error (nothing could be done / read); 2 `lake ingest` quarantined
some records; 64 usage error (unknown option, missing argument).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from lake import Lake, LakeError, Settings
from lake.errors import disk_error

from .audited import actor

EXIT_ERROR, EXIT_USAGE = 1, 64


def _common(fn: Callable) -> Callable:
    """--data, --tenant, --config on every command (flags beat LAKE_* and the config file)."""

    @click.option("--data", envvar=None, default=None, metavar="DIR",
                  help="Lake root: directory or s3:// URI [env LAKE_DATA; default ./lake-data].")
    @click.option("--tenant", default=None, help="Tenant [env LAKE_TENANT; default 'default'].")
    @click.option("--config", "config_file", default=None, metavar="FILE",
                  help="TOML settings file [env LAKE_CONFIG].")
    @functools.wraps(fn)
    def wrapper(data: str | None, tenant: str | None, config_file: str | None, **kw: Any) -> Any:
        settings = Settings.load(config=config_file, data=data, tenant=tenant)
        return fn(settings, **kw)

    return wrapper


def _via_server(fn: Callable) -> Callable:
    """--server HOST:PORT and --token: an admin command goes through a running server (its
    RPC, audited there) instead of opening the lake, which the server holds."""
    fn = click.option("--token", default=None,
                      help="With --server: bearer token [env LAKE_TOKEN].")(fn)
    return click.option("--server", default=None, metavar="HOST:PORT",
                        help="Go through this running `lake serve` (the tenant is the "
                             "token's) instead of opening the lake.")(fn)


def remote(server: str | None, token: str | None) -> Any:
    """A client of ``server`` for a --server command, or None for a local one."""
    given = click.get_current_context().get_parameter_source
    if server is None:
        if token is not None:
            raise click.UsageError("--token is for --server HOST:PORT: without it the "
                                   "command opens the lake itself")
        return None
    if given("tenant") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("with --server the tenant is the token's (or, without auth, "
                               "the server's): drop --tenant, or use a token of that tenant")
    from server.client import LakeClient

    return LakeClient(server, token)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="context-lake")
def cli() -> None:
    """Context Lake: a durable, versioned, queryable store of agent trajectories.

    \b
    Example:
      lake ingest runs/ && lake sql "select agent, avg(success::int) from trajectories group by 1"
    """


@cli.command()
@_common
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quarantine", type=click.Path(), default=None,
              help="Write rejected records here [default DATA/quarantine/ingest-*.jsonl].")
@click.option("--progress", type=click.Choice(["bar", "json", "none"]), default="bar",
              help="bar: a progress bar; json: one line per durable chunk on stdout.")
@click.option("--wal", is_flag=True,
              help="Log each chunk to the write-ahead log and acknowledge it then (before its "
                   "commit). Default: chunks are acknowledged once committed; the files stay "
                   "the copy until then, so nothing is written twice.")
@click.option("--server", default=None, metavar="HOST:PORT",
              help="Send the records to this running `lake serve` (its tenant is the "
                   "token's) instead of opening the lake.")
@click.option("--token", default=None, help="With --server: bearer token [env LAKE_TOKEN].")
def ingest(settings: Settings, paths: tuple[str, ...], as_json: bool, quarantine: str | None,
           progress: str, wal: bool, server: str | None, token: str | None) -> None:
    """Load trajectory files or directories of them.

    JSON Lines (.jsonl .ndjson .json, each also .gz; a .json file may hold one JSON array
    of records), Parquet (.parquet), Arrow IPC (.arrow .arrows .feather), `lake export`
    directories. In directories, files of other types are skipped with a warning; hidden
    ones (named .* or _*) and the lake's own data, quarantine and log are not read.

    Good records land; bad ones go to the quarantine file with file:line and the reason.
    The summary counts valid records read and the trajectories they hold (one per id: an
    id that came twice is named in a warning). Exit code 0: all landed; 2: some were
    quarantined; 1: nothing could be read, or no input file was found.

    While `lake serve` runs, it is the lake's one writer: give --server, and the records
    go to it (a few thousand per call; it validates them, and its rejects are quarantined
    at their file:line here). Each call is durable; a re-run skips what landed.

    \b
    Example:
      lake ingest runs/2025-08-01.jsonl.gz exports/ --json
      LAKE_TOKEN=cl_... lake ingest runs/ --server lake.internal:50051
    """
    from ingest import Quarantine

    from .progress import bar

    q = Quarantine(path=quarantine) if quarantine else None
    if wal and server is not None:
        raise click.UsageError("--wal is for a local ingest: a server logs every call to its "
                               "write-ahead log before it answers")
    client = remote(server, token)
    landed: dict[str, Any] = {"trajectories": 0}

    def on_ack(ev: dict[str, Any]) -> None:
        landed.update(trajectories=landed["trajectories"] + ev["trajectories"],
                      through=ev["through"])
        if progress == "json":
            click.echo(json.dumps({"event": "acked", **ev}))

    try:
        with bar(progress == "bar", "ingest") as tick:
            summary = (_ingest_remote(settings, client, paths, q, tick, on_ack)
                       if client is not None else
                       _ingest_local(settings, paths, q, tick, on_ack, wal))
    except LakeError:
        if landed["trajectories"]:  # what the failure did not undo, for the rerun
            click.echo(f"{landed['trajectories']} trajectories had landed, through "
                       f"{landed['through']}; the same command run again skips them", err=True)
        raise
    for warning in summary.warnings():
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _echo_json(summary.as_dict())
    else:
        line = (f"{summary.files} file(s), {summary.records} valid records: "
                f"{summary.trajectories} trajectories, {summary.steps} steps landed "
                f"({_changed(summary.changed)}; the others were in the lake "
                f"already, as given or further along: a version with fewer steps never "
                f"replaces a stored one); {summary.rejected} rejected")
        if summary.quarantine:
            line += f" (see {summary.quarantine})"
        for err in summary.unreadable:
            click.echo(f"unreadable: {err}", err=True)
        click.echo(line)
    sys.exit(summary.exit_code)


def _ingest_local(settings: Settings, paths: tuple[str, ...], q: Any, tick: Any, on_ack: Any,
                  wal: bool) -> Any:
    from ingest import ingest_paths
    from lake.errors import Conflict

    try:
        lake = Lake.open(settings=settings)
    except Conflict as e:
        if "in use by another process" not in e.message:  # the write-ahead log's lock
            raise
        raise Conflict(f"{e.message}. To load files into a running server: `lake ingest "
                       f"{' '.join(paths)} --server HOST:PORT`", field=e.field,
                       location=e.location) from None
    with lake:
        return ingest_paths(lake, list(paths), quarantine=q, on_progress=tick, on_ack=on_ack,
                            wal=wal)


def _ingest_remote(settings: Settings, client: Any, paths: tuple[str, ...], q: Any,
                   tick: Any, on_ack: Any) -> Any:
    from ingest import Quarantine
    from ingest.inputs import lake_paths
    from server.bulk import ingest_remote

    q = q or Quarantine(directory=settings.quarantine_path)
    with client:
        return ingest_remote(client, list(paths), quarantine=q,
                             own=lake_paths(settings, q.path), on_progress=tick, on_ack=on_ack)


def _changed(n: int | None) -> str:
    if n is None:
        return ("trajectories new or changed not counted: that needs a token with the admin "
                "scope")
    return f"{n} trajectories new or changed"


def _sql_help() -> str:
    from lake.sql import names

    n = {kind: ", ".join(v) for kind, v in names().items()}
    return f"""Run one DuckDB statement over the lake (several are refused: run each alone).

    Tables: {n["tables"]} (docs/schema.md). Analysis views: {n["views"]}. Macros:
    {n["macros"]} (docs/analysis.md).

    \b
    Example:
      lake sql "select name, avg(t.success::int) as rate from steps s
                join trajectories t using (tenant, trajectory_id)
                where kind = 'tool' group by name order by rate"
    """


@cli.command(help=_sql_help())
@_common
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              help="NULL is NULL in a table, an empty field in CSV (an empty string: \"\"), "
                   "null in JSON; lists and maps are JSON, and in JSON a column of type JSON "
                   "(meta, attributes, detail) is its value, not its text.")
@click.option("--as-of", default=None, metavar="VERSION|TAG", help="Read the lake as of then.")
@click.option("--all-tenants", is_flag=True, help="Show every tenant's rows (admin).")
def sql(settings: Settings, query: str, fmt: str, as_of: str | None, all_tenants: bool) -> None:
    from .output import render

    tenant = click.get_current_context().params.get("tenant")
    if all_tenants and tenant is not None:
        raise click.UsageError(f"--all-tenants shows every tenant and --tenant {tenant} only "
                               "one: give one of the two")

    lake = Lake.open(settings=settings, readonly=True)
    rel = lake.sql(query, as_of=as_of, all_tenants=all_tenants)
    click.echo(render(rel, fmt, json_values=True))


@cli.command()
@_common
@click.option("--sample/--no-sample", default=True,
              help="Load the bundled tau2-bench sample into an empty lake.")
def init(settings: Settings, sample: bool) -> None:
    """Create the lake (and load the sample on first start). Safe to run again.

    \b
    Example:
      lake init --data ./lake-data
    """
    from ingest.sample import load_if_empty

    with Lake.open(settings=settings) as lake:
        click.echo(load_if_empty(lake) if sample else
                   f"lake {settings.data} is ready (version {lake.version().version})")


@cli.command()
def schema() -> None:
    """Print the lake's tables and columns (Markdown; the same as docs/schema.md).

    \b
    Example:
      lake schema > schema.md
    """
    from lake.schema import markdown

    click.echo(markdown())


@cli.command("config")
@_common
@click.option("--json", "as_json", is_flag=True)
def config_cmd(settings: Settings, as_json: bool) -> None:
    """Show every setting: its value, environment variable and meaning.

    \b
    Example:
      LAKE_DATA=/srv/lake lake config
    """
    rows = [{"name": n, "env": e, "value": getattr(settings, n), "default": d, "help": h}
            for n, e, d, h in Settings.describe()]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']:<18} {str(r['value']):<24} {r['env']:<22} {r['help']}")


@cli.command()
@_common
@click.option("--host", default=None, help="Address to bind [env LAKE_HOST; default 127.0.0.1].")
@click.option("--port", type=int, default=None,
              help="Port [env LAKE_PORT; default 50051; 0: any free port].")
@click.option("--otlp-port", type=int, default=None,
              help="Also take OTLP trace exports here, e.g. 4317 [env LAKE_OTLP_PORT; default: "
                   "only on --port, which takes them too].")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 9464 "
                   "[env LAKE_METRICS_PORT; default -1: off].")
@click.option("--auth", type=click.Choice(["auto", "on", "off"]), default=None,
              help="Bearer tokens [env LAKE_AUTH; default auto: on unless the host is loopback].")
@click.option("--max-message-bytes", type=int, default=None,
              help="Largest message [env LAKE_MAX_MESSAGE_BYTES; default 64 MiB].")
@click.option("--sample/--no-sample", default=False,
              help="Load the bundled tau2-bench demo sample first if the lake is empty (no "
                   "trajectories in any tenant); `make run` does. Default: serve the lake as "
                   "it is.")
def serve(settings: Settings, host: str | None, port: int | None, otlp_port: int | None,
          metrics_port: int | None, auth: str | None, max_message_bytes: int | None,
          sample: bool) -> None:
    """Serve the lake over gRPC until SIGINT / SIGTERM, then stop gracefully.

    Stopping finishes the calls in flight and flushes the write path. On a loopback host
    the server may run without tokens (it says so); elsewhere every call needs one.

    \b
    Example:
      lake serve --host 0.0.0.0 --port 50051 --data /srv/lake
    """
    import logging
    import signal
    import threading

    from ingest.sample import holds, load_if_empty
    from server.app import serve as start

    # the banner and progress go to stdout (below); problems to stderr, with the time
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    flags = {"host": host, "port": port, "otlp_port": otlp_port, "metrics_port": metrics_port,
             "auth": auth, "max_message_bytes": max_message_bytes}
    settings = settings.replace(**{k: v for k, v in flags.items() if v is not None})
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        if stop.is_set():  # a second one: now, without the graceful part
            click.echo("second signal: exiting now; acknowledged writes replay from the log "
                       "on the next start", err=True)
            os._exit(130)
        stop.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    with Lake.open(settings=settings) as lake:
        click.echo(load_if_empty(lake) if sample else holds(lake))
        if stop.is_set():  # asked to stop while starting: never open the port
            click.echo("stopped before serving; every acknowledged write is in the lake")
            return
        server = start(settings, lake=lake)
        server.warm(on_ready=click.echo)  # model + index load in the background; the port
        # is already open
        click.echo(server.describe())
        click.echo("stop with Ctrl-C or SIGTERM")
        try:
            while not stop.wait(0.5):
                pass
        finally:
            click.echo("stopping: finishing calls in flight, flushing the write path")
            server.stop(wait_warm=False)  # a model still loading is not waited for
    click.echo("stopped; every acknowledged write is in the lake")
    if server.warming:  # its thread, killed at exit inside torch's import, would abort
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@cli.group()
def token() -> None:
    """Create, list and revoke bearer tokens for `lake serve` (works while it runs).

    \b
    Example:
      lake token create --tenant acme --agent support-bot --scopes read,ingest
    """


def _tokens(settings: Settings):  # type: ignore[no-untyped-def]
    from lake.tokens import Tokens

    return Tokens.at(settings, actor=actor())


@token.command("create")
@_common
@click.option("--agent", required=True, help="Agent identity the token stands for.")
@click.option("--scopes", default="read,ingest", show_default=True,
              help="Comma-separated: ingest, read, admin (the tenant's data), operator "
                   "(Restore and moving tags: every tenant's data).")
@click.option("--json", "as_json", is_flag=True)
def token_create(settings: Settings, agent: str, scopes: str, as_json: bool) -> None:
    """Create a token for --tenant (default 'default'); it is printed once: keep it.

    \b
    Example:
      lake token create --tenant acme --agent support-bot --scopes read,ingest
    """
    text, info = _tokens(settings).create(settings.tenant, agent, scopes)
    if as_json:
        _echo_json({**info.as_dict(), "token": text})
        return
    click.echo(text)
    click.echo(f"token {info.token_id}: tenant {info.tenant!r}, agent {info.agent!r}, scopes "
               f"{','.join(info.scopes)}. Shown once: store it now (e.g. LAKE_TOKEN).", err=True)


@token.command("revoke")
@_common
@click.argument("token_id")
def token_revoke(settings: Settings, token_id: str) -> None:
    """Revoke a token by its id (see `lake token list`); a server refuses it within ~1 s.

    \b
    Example:
      lake token revoke 3f9a0c1b2d4e
    """
    from datetime import UTC, datetime

    started = datetime.now(UTC)
    info = _tokens(settings).revoke(token_id)
    who = f"(tenant {info.tenant!r}, agent {info.agent!r})"
    if info.revoked_at is not None and info.revoked_at < started:
        click.echo(f"token {info.token_id} {who} was already revoked, at "
                   f"{info.revoked_at:%Y-%m-%d %H:%M:%S} UTC: nothing to do")
        return
    click.echo(f"revoked token {info.token_id} {who}")


@token.command("list")
@_common
@click.option("--json", "as_json", is_flag=True)
def token_list(settings: Settings, as_json: bool) -> None:
    """List every token (all tenants): id, tenant, agent, scopes, created, revoked.

    \b
    Example:
      lake token list --json
    """
    rows = [t.as_dict() for t in _tokens(settings).list()]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        state = f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "valid"
        click.echo(f"{r['token_id']}  {r['tenant']:<16} {r['agent']:<20} "
                   f"{','.join(r['scopes']):<18} {state}")
    click.echo(f"({len(rows)} token{'s' if len(rows) != 1 else ''})")

# registers: compare, cost; context, recluster, retract; tape, export-dataset, export;
# versions, tag, restore, backup, vacuum
from . import analysis, cache, export, history  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="lake", standalone_mode=False)
    except click.UsageError as e:
        click.echo(f"usage error: {e.format_message()}\n"
                   "run `lake --help` (or `lake COMMAND --help`)", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(EXIT_ERROR)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_ERROR)
    except LakeError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_ERROR)
    except Exception as e:  # a bug, not bad input: say so, keep the traceback for LAKE_DEBUG
        if os.environ.get("LAKE_DEBUG"):
            raise
        disk = disk_error(e, getattr(e, "filename", None) or "a file of the lake", "rerun")
        click.echo(f"error: {disk}" if disk else
                   f"internal error: {type(e).__name__}: {e}\nrerun with LAKE_DEBUG=1 for the "
                   "traceback and report it; nothing acknowledged is lost", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
