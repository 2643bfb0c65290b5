"""Each tenant's fused stats (``fused.compute``), cached, and what of them a query is served.

Computing them is one DuckDB pass over every run and step of a tenant: it is done when a
query needs them and they are stale, that is when the tenant changed (``changed``: arrivals,
retractions, a refit) and they are older than ``FUSED_TTL_S`` (or there are none). What is
served of a cluster's stats follows the index as it is at the query: trajectories retracted
or expired since the stats were computed are not cited (``_servable``), and its plans are
ranked for the query's neighbours and verdict (``fused.for_query``: a cheap pass over the
neighbours' tool sequences, no SQL), its pitfalls too (``fused.pitfalls_for_query``: those
on tools the neighbours called first). A miss is served neither.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from . import fused as fusedmod
from .index import NEVER, TenantIndex

FUSED_TTL_S = 5.0  # fused stats are recomputed at most this often while the tenant changes


@dataclass(slots=True)
class _Served:
    """What of a cluster's stats may be served from ``since`` until ``until`` (the first
    expiry of a cited run), while the index's rows and the stats stay the ones it was made
    from: the ids cited, less those retracted or expired."""

    idx: TenantIndex
    stats: dict[int, dict]
    generation: int
    since: int
    until: int
    sources: list[str]
    plans: list[dict]  # the cluster's pool, each plan's sources servable
    index: dict[tuple[str, ...], int]  # a plan's position in ``plans`` by its tools
    pitfalls: list[dict]


class FusedCache:
    def __init__(self, lake: Any):
        self.lake = lake
        self._stats: dict[str, tuple[float, int, dict[int, dict]]] = {}  # (at, changes, ...)
        self._served: dict[tuple[str, int], _Served] = {}  # see _servable
        self._changes = 0

    def changed(self) -> None:
        """Some tenant's rows changed: its stats are due once they are ``FUSED_TTL_S`` old."""
        self._changes += 1

    def drop(self, tenant: str) -> None:
        """The tenant's clusters were renumbered (a refit): its stats are due now."""
        self._changes += 1
        self._stats.pop(tenant, None)

    def clear(self) -> None:
        """Every tenant's stats are due now (a restore)."""
        self._stats.clear()
        self._served.clear()
        self._changes += 1

    def stale(self, tenant: str) -> bool:
        """The tenant's fused stats are to be computed again (SQL over its runs and steps)."""
        at, changes, stats = self._stats.get(tenant, (0.0, -1, {}))
        return changes != self._changes and (not stats or time.time() - at > FUSED_TTL_S)

    def cluster(self, tenant: str, cluster: int) -> dict[str, Any]:
        """The cluster's stats as cached (none yet: {}), not computed here."""
        return self._stats.get(tenant, (0.0, -1, {}))[2].get(cluster, {})

    def for_cluster(self, tenant: str, idx: TenantIndex, cluster: int, now: int,
                    neighbors: list[dict], verdict: str,
                    refresh: bool = True) -> dict[str, Any]:
        """The cluster's fused context to serve ``now``, its plans and pitfalls ranked for
        the query's ``neighbors`` and ``verdict`` (exact, hit: the first neighbour's plan
        first; miss: none, the cluster is not this kind of task). ``refresh=False``: stale
        stats as they are (none: {}), not computed here."""
        stats = self._stats.get(tenant, (0.0, -1, {}))[2]
        if refresh and self.stale(tenant):
            stats = self._compute(tenant, idx)
        served = self._servable(tenant, idx, stats, cluster, now)
        out = {**fusedmod.empty(), **stats.get(cluster, {})}
        out["sources"] = list(served.sources)
        if verdict == "miss":
            out["plans"], out["pitfalls"] = [], []
            return out
        out["plans"] = fusedmod.for_query(served.plans, served.index, neighbors,
                                          replay=verdict in ("exact", "hit"))
        out["pitfalls"] = fusedmod.pitfalls_for_query(served.pitfalls, neighbors)
        return out

    def _servable(self, tenant: str, idx: TenantIndex, stats: dict[int, dict], cluster: int,
                  now: int) -> _Served:
        """What of the cluster's stats can be served ``now``: worked out once, then reused
        until the stats or the index's rows change or a cited run expires."""
        got = self._served.get((tenant, cluster))
        if got is not None and got.idx is idx and got.stats is stats \
                and got.generation == idx.generation and got.since <= now < got.until:
            return got
        generation, until = idx.generation, NEVER  # generation first: a change meanwhile
        ok: dict[str, bool] = {}  # misses next time

        def keep(ids: list[str] | None) -> list[str]:
            nonlocal until
            for s in ids or ():
                if s not in ok:
                    row = idx.pos.get(s)
                    ok[s] = row is not None and idx._servable(row, now)
                    expires = idx.rows[row].expires_at_us if ok[s] else None
                    if expires is not None:
                        until = min(until, expires)
            return [s for s in ids or () if ok[s]]

        c = stats.get(cluster, {})
        sources = keep(c.get("sources"))
        plans = [{**p, "sources": keep(p["sources"])} for p in c.get("plans", [])]
        pitfalls = [_pitfall(p, keep(p["sources"])) for p in c.get("pitfalls", [])]
        got = self._served[(tenant, cluster)] = _Served(
            idx, stats, generation, now, until, sources, plans,
            {tuple(p["tools"]): i for i, p in enumerate(plans)}, pitfalls)
        return got

    def _compute(self, tenant: str, idx: TenantIndex) -> dict[int, dict]:
        members = idx.members()
        tids = [idx.rows[r].trajectory_id for rows in members.values() for r in rows]
        cids = [c for c, rows in members.items() for _ in rows]
        m = pa.table({"trajectory_id": pa.array(tids, pa.string()),
                      "cluster_id": pa.array(cids, pa.int32())})
        con = self.lake.connect(tenant=tenant)
        runs = con.sql("select trajectory_id, success, n_steps, cost_usd, tokens_in, tokens_out,"
                       " started_at from trajectories").to_arrow_table()
        steps = con.sql("select trajectory_id, index, kind, name, error, duration_ms, cost_usd "
                        "from steps").to_arrow_table()
        stats = fusedmod.compute(m, runs, steps)
        vecs = idx.model.vectors_by_row()  # once: a copy of every vector
        for cid, rows in members.items():
            if cid in stats:
                stats[cid]["label"] = _label(idx, vecs, cid, rows)
        self._stats[tenant] = (time.time(), self._changes, stats)
        return stats


def _pitfall(p: dict, sources: list[str]) -> dict:
    """A pitfall as served, citing ``sources`` (those of its own still servable), its
    ``example`` the error text of the first of them (a retracted run's text is not shown)."""
    text = dict(zip(p["sources"], p["examples"], strict=True))
    out: dict = {}
    for k, v in p.items():
        if k == "error":
            out.update(error=v, example=text[sources[0]] if sources else None)
        elif k != "examples":
            out[k] = v
    return {**out, "sources": sources}


def _label(idx: TenantIndex, vecs: np.ndarray, cid: int, rows: list[int]) -> str:
    c = idx.model.centroids[cid]
    return idx.rows[rows[int(np.argmax(vecs[rows] @ c))]].task[:200]
