"""`lake versions`, `tag`, `restore`, `backup`, `vacuum`: the lake's history from the shell."""

from __future__ import annotations

import click

from lake import Lake, Settings

from .audited import audited
from .main import _common, _echo_json, _via_server, cli, remote


@cli.command()
@_common
@click.option("--json", "as_json", is_flag=True,
              help="A JSON list, one object per version; its detail is an object too.")
def versions(settings: Settings, as_json: bool) -> None:
    """List the lake's versions (every commit): tags, and what each did (detail).

    \b
    Example:
      lake versions --json
    """
    from .output import render

    lake = Lake.open(settings=settings, readonly=True)
    rel = lake.sql("select version, created_at, operation, tags, detail from versions "
                   "order by version")
    click.echo(render(rel, "json" if as_json else "table", json_values=True))


@cli.command()
@_common
@click.argument("name")
@click.option("--version", "ref", default=None, metavar="VERSION|TAG",
              help="Version to tag [default: the latest].")
@click.option("--force", is_flag=True, help="Move an existing tag.")
@click.option("--delete", is_flag=True, help="Remove the tag (its version is then vacuumed "
              "as any other).")
@_via_server
def tag(settings: Settings, name: str, ref: str | None, force: bool, delete: bool,
        server: str | None, token: str | None) -> None:
    """Name a version, to read (--as-of) or restore it later.

    \b
    Example:
      lake tag before-cleanup
      lake tag before-cleanup --server 127.0.0.1:50051   # while it serves the lake
      lake tag before-cleanup --delete
    """
    if delete and (ref is not None or force):
        raise click.UsageError("--delete removes the tag NAME: drop --version and --force")
    client = remote(server, token)
    if client is not None:
        with client:
            got = client.untag(name) if delete else client.tag(name, ref, force=force)
        click.echo(f"removed tag {name!r} (version {got['version']})" if delete else
                   f"tagged version {got['version']} as {name!r}")
        return
    if delete:
        with Lake.open(settings=settings) as lake, audited(
                lake.store, settings.tenant, "untag", f"tag {name}") as d:
            v = lake.untag(name)
            d["version"] = v.version
        click.echo(f"removed tag {name!r} (version {v.version})")
        return
    with Lake.open(settings=settings) as lake, audited(
            lake.store, settings.tenant, "tag", f"tag {name}", version=ref, force=force) as d:
        v = lake.tag(name, ref, force=force)
        d["version"] = v.version
    click.echo(f"tagged version {v.version} as {name!r}")


@cli.command()
@_common
@click.argument("ref", metavar="VERSION|TAG")
@_via_server
def restore(settings: Settings, ref: str, server: str | None, token: str | None) -> None:
    """Make the lake's contents those of an earlier version, as a new version.

    Versions are lake-wide: a restore acts on every tenant. Nothing is destroyed: the
    versions in between stay readable with --as-of. Retractions are kept.

    \b
    Example:
      lake restore before-cleanup
    """
    if click.get_current_context().get_parameter_source("tenant") is \
            click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("restore acts on every tenant (versions are lake-wide), so it "
                               "takes no --tenant; to undo one tenant's data, retract its "
                               "trajectories (`lake retract`) instead")
    client = remote(server, token)
    if client is not None:
        with client:
            got = client.restore(ref)
        click.echo(f"restored {ref} as version {got['version']} (every tenant)")
        return
    with Lake.open(settings=settings) as lake, audited(
            lake.store, settings.tenant, "restore", f"version {ref}") as d:
        v = lake.restore(ref)
        d.update(version=v.version, retractions_kept=v.detail.get("retractions_kept"))
    click.echo(f"restored {ref} as version {v.version} (every tenant)")


@cli.command()
@_common
@click.argument("dest", type=click.Path())
def backup(settings: Settings, dest: str) -> None:
    """Copy the lake to DEST, a new directory, consistently, even while a server writes it
    (a plain copy may not open). The copy is the lake as of the command's start; open it
    with --data DEST.

    \b
    Example:
      lake backup /backups/lake-2026-11-22
    """
    from pathlib import Path

    from lake.backup import backup as copy_lake

    if not settings.is_local:
        raise click.UsageError(f"{settings.data} is not a local directory: copy its "
                               "_versions.lance and _tags.lance first, then the rest (e.g. "
                               "`aws s3 sync`), for a consistent copy")
    copied = copy_lake(settings.local_root, Path(dest))
    click.echo(f"copied {len(copied)} tables and files of {settings.data} to {dest}; open it "
               f"with --data {dest}")


@cli.command()
@_common
@click.option("--older-than", default="7d", show_default=True, metavar="AGE",
              help="Keep every version made within this (7d, 36h, 90m).")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@click.option("--json", "as_json", is_flag=True)
def vacuum(settings: Settings, older_than: str, dry_run: bool, as_json: bool) -> None:
    """Free the disk of old versions: their files go, and they can no longer be read
    (--as-of) or restored. Kept: the latest version, every one made within --older-than,
    and every tagged one (tag what you may want back). Lake-wide, like restore.

    \b
    Example:
      lake vacuum --older-than 7d --dry-run
    """
    from lake.vacuum import parse_age

    age = parse_age(older_than)
    with Lake.open(settings=settings) as lake, audited(
            lake.store, settings.tenant, "vacuum", f"older than {older_than}",
            dry_run=dry_run) as d:
        r = lake.vacuum(age, dry_run=dry_run)
        d.update(horizon=r.horizon, unreadable=len(r.unreadable),
                 bytes_removed=r.bytes_removed)
    if as_json:
        _echo_json(r.as_dict())
        return
    freed = "would remove" if dry_run else f"removed {r.bytes_removed:,} bytes:"
    tagged = f", and tagged {', '.join(map(str, r.tagged))}" if r.tagged else ""
    click.echo(f"{freed} the files of {len(r.unreadable)} version(s) older than {r.horizon}; "
               f"readable: versions {r.horizon} on{tagged}")
