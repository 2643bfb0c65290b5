"""`lake context`, `lake recluster`, `lake retract`: the semantic cache from the shell."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import click
import orjson

from lake import LakeError, Settings
from lake.answer_text import describe

from .audited import audited
from .main import _common, _echo_json, _via_server, cli, remote
from .progress import rows_bar


@contextlib.contextmanager
def _service(settings: Settings) -> Iterator[Any]:
    from lake import Lake
    from lake.context import ContextService

    with Lake.open(settings=settings) as lake:
        cs = ContextService(lake)
        try:
            yield cs
        finally:
            cs.close()


def _filters(success_only: bool, min_reward: float | None, agent: str | None,
             agent_version: str | None, tags: tuple[str, ...]) -> dict[str, Any]:
    return {"success_only": success_only, "min_reward": min_reward, "agent": agent,
            "agent_version": agent_version, "tags": list(tags) or None}


@cli.command()
@_common
@click.argument("text", required=False)
@click.option("--queries", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSONL of {text|vector, k, filters...}: one JSON answer per line, in order.")
@click.option("--k", default=5, show_default=True, help="Neighbours to return.")
@click.option("--success-only", is_flag=True, help="Only trajectories that succeeded.")
@click.option("--min-reward", type=float, default=None)
@click.option("--agent", default=None)
@click.option("--agent-version", default=None)
@click.option("--tag", "tags", multiple=True, help="Only trajectories with this tag (repeat).")
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON answer.")
@_via_server
def context(settings: Settings, text: str | None, queries: str | None, k: int,
            success_only: bool, min_reward: float | None, agent: str | None,
            agent_version: str | None, tags: tuple[str, ...], as_json: bool,
            server: str | None, token: str | None) -> None:
    """Closest past trajectories for a task, a verdict and the fused plan.

    Verdicts: exact (same task text), hit (near-duplicate: reuse it), similar (adapt it,
    do not replay it), miss. The answer's fields are documented in docs/context.md.

    \b
    Examples:
      lake context "Refund order #W5442520 to the original card" --k 3
      lake context --queries evals.jsonl --json > answers.jsonl
    """
    if (text is None) == (queries is None):
        raise click.UsageError("give a TEXT or --queries FILE (one of them)")
    filters = _filters(success_only, min_reward, agent, agent_version, tags)
    client = remote(server, token)
    if client is not None:
        if queries is not None:
            raise click.UsageError("--queries reads the lake itself: drop --server, or ask "
                                   "one TEXT at a time")
        with client:
            answer = client.get_context(text, k=k, success_only=success_only,
                                        agent=agent or "", agent_version=agent_version or "",
                                        min_reward=min_reward, tags=list(tags) or None)
        _echo_json(answer) if as_json else click.echo(describe(answer))
        return
    with _service(settings) as cs:
        if queries is not None:
            _batch(cs, settings.tenant, queries, k, filters)
            return
        answer = cs.get_context(settings.tenant, {"text": text, "k": k, "filters": filters})
    if as_json:
        _echo_json(answer)
    else:
        click.echo(describe(answer))


def _batch(cs: Any, tenant: str, path: str, k: int, filters: dict[str, Any]) -> None:
    lines = open(path, "rb").read().splitlines()
    parsed: list[Any] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            q = orjson.loads(line)
            if not isinstance(q, dict):
                raise ValueError("each line must be a JSON object")
            parsed.append((n, {"k": k, "filters": filters, **q}))
        except (orjson.JSONDecodeError, ValueError) as e:
            parsed.append((n, f"{path}:{n}: {e}"))
    texts = [q["text"] for _, q in parsed if isinstance(q, dict) and isinstance(q.get("text"), str)]
    cs.embed_queries(tenant, texts)  # one batched pass; the lookups then skip the model
    for n, q in parsed:
        if isinstance(q, str):
            out: dict[str, Any] = {"error": q, "line": n}
        else:
            try:
                out = cs.get_context(tenant, q)
            except LakeError as e:
                out = {"error": f"{path}:{n}: {e}", "line": n}
        sys.stdout.write(json.dumps(out, default=str) + "\n")


@cli.command()
@_common
@click.option("--json", "as_json", is_flag=True)
@_via_server
def recluster(settings: Settings, as_json: bool, server: str | None, token: str | None) -> None:
    """Re-fit the tenant's clusters (kinds of task) now, as a new version.

    \b
    Example:
      lake recluster --tenant acme
    """
    client = remote(server, token)
    if client is not None:
        with client:
            got = client.recluster()
        _echo_json(got) if as_json else click.echo(
            f"{got['clusters']} clusters over {got['trajectories']} trajectories (version "
            f"{got['version']})")
        return
    with _service(settings) as cs, audited(cs.lake.store, settings.tenant, "recluster",
                                           f"tenant {settings.tenant}") as d, \
            rows_bar(True) as tick:
        res = cs.recluster(settings.tenant,  # a first load embeds the tasks not embedded yet
                           progress=lambda done, total: tick("embedding tasks", done, total))
        d.update(clusters=res["clusters"], version=res["version"])
    if as_json:
        _echo_json(res)
    else:
        click.echo(f"{res['clusters']} clusters over {res['rows']} trajectories "
                   f"in {res['seconds']} s (version {res['version']})")


@cli.command()
@_common
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why (kept with the trajectory, for audit).")
@click.option("--purge", is_flag=True,
              help="Also remove their content now (task text, meta, steps, payloads only they "
                   "use); older versions keep it until `lake vacuum`.")
@_via_server
def retract(settings: Settings, ids: tuple[str, ...], reason: str, purge: bool,
            server: str | None, token: str | None) -> None:
    """Never serve these trajectories again (they stay in the lake, for audit; --purge
    removes their content too).

    \b
    Example:
      lake retract run-42 run-43 --reason "leaked a customer's card number" --purge
      lake vacuum --older-than 0   # and the versions that still hold it
    """
    client = remote(server, token)
    if client is not None:
        with client:
            res = {"retracted": client.retract(list(ids), reason, purge=purge)}
    else:
        with _service(settings) as cs, audited(cs.lake.store, settings.tenant, "retract",
                                               f"trajectories {','.join(ids)}"[:500],
                                               reason=reason, purge=purge) as d:
            res = cs.retract(settings.tenant, list(ids), reason, purge=purge)
            d["retracted"] = res["retracted"]
    if purge:
        click.echo(f"purged {res['retracted']} trajectories: their content is gone from the "
                   "current version; `lake vacuum` removes the older versions that hold it")
        return
    click.echo(f"retracted {res['retracted']} trajectories")
