"""Each tenant's fused stats (``fused.compute``), cached, and what of them a query is served.

Computing them is one DuckDB pass over every run and step of a tenant: it is done when a
query needs them and they are stale, that is when the tenant changed (``changed``: arrivals,
retractions, a refit) and they are older than ``FUSED_TTL_S`` (or there are none). What is
served of a cluster's stats follows the index as it is at the query: trajectories retracted
or expired since the stats were computed are not cited (``_servable_sources``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from . import fused as fusedmod
from .index import NEVER, TenantIndex

FUSED_TTL_S = 5.0  # fused stats are recomputed at most this often while the tenant changes


class FusedCache:
    def __init__(self, lake: Any):
        self.lake = lake
        self._stats: dict[str, tuple[float, int, dict[int, dict]]] = {}  # (at, changes, ...)
        self._sources: dict[tuple[str, int], tuple] = {}  # see _servable_sources
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
        self._sources.clear()
        self._changes += 1

    def stale(self, tenant: str) -> bool:
        """The tenant's fused stats are to be computed again (SQL over its runs and steps)."""
        at, changes, stats = self._stats.get(tenant, (0.0, -1, {}))
        return changes != self._changes and (not stats or time.time() - at > FUSED_TTL_S)

    def cluster(self, tenant: str, cluster: int) -> dict[str, Any]:
        """The cluster's stats as cached (none yet: {}), not computed here."""
        return self._stats.get(tenant, (0.0, -1, {}))[2].get(cluster, {})

    def for_cluster(self, tenant: str, idx: TenantIndex, cluster: int, now: int,
                    refresh: bool = True) -> dict[str, Any]:
        """The cluster's fused context to serve ``now``. ``refresh=False``: stale stats as
        they are (none: {}), not computed here."""
        stats = self._stats.get(tenant, (0.0, -1, {}))[2]
        if refresh and self.stale(tenant):
            stats = self._compute(tenant, idx)
        out = dict(stats.get(cluster, {}))
        out["sources"] = self._servable_sources(tenant, idx, stats, cluster, now)
        return out

    def _servable_sources(self, tenant: str, idx: TenantIndex, stats: dict[int, dict],
                          cluster: int, now: int) -> list[str]:
        """The cluster's fused sources that can be served ``now``: worked out once, then
        reused until the stats or the index's rows change or one of them expires."""
        got = self._sources.get((tenant, cluster))
        if got is not None:
            was_idx, was_stats, generation, since, until, kept = got
            if was_idx is idx and was_stats is stats and generation == idx.generation \
                    and since <= now < until:
                return list(kept)
        generation, kept, until = idx.generation, [], NEVER  # generation first: a change
        for s in stats.get(cluster, {}).get("sources", []):  # meanwhile misses next time
            row = idx.pos.get(s)
            if row is not None and idx._servable(row, now):
                kept.append(s)
                expires = idx.rows[row].expires_at_us
                if expires is not None:
                    until = min(until, expires)
        self._sources[(tenant, cluster)] = (idx, stats, generation, now, until, kept)
        return list(kept)

    def _compute(self, tenant: str, idx: TenantIndex) -> dict[int, dict]:
        members = idx.members()
        tids = [idx.rows[r].trajectory_id for rows in members.values() for r in rows]
        cids = [c for c, rows in members.items() for _ in rows]
        m = pa.table({"trajectory_id": pa.array(tids, pa.string()),
                      "cluster_id": pa.array(cids, pa.int32())})
        con = self.lake.connect(tenant=tenant)
        runs = con.sql("select trajectory_id, success, n_steps, cost_usd, tokens_in, tokens_out "
                       "from trajectories").to_arrow_table()
        steps = con.sql("select trajectory_id, index, kind, name, error, duration_ms, cost_usd "
                        "from steps").to_arrow_table()
        stats = fusedmod.compute(m, runs, steps)
        vecs = idx.model.vectors_by_row()  # once: a copy of every vector
        for cid, rows in members.items():
            if cid in stats:
                stats[cid]["label"] = _label(idx, vecs, cid, rows)
        self._stats[tenant] = (time.time(), self._changes, stats)
        return stats


def _label(idx: TenantIndex, vecs: np.ndarray, cid: int, rows: list[int]) -> str:
    c = idx.model.centroids[cid]
    return idx.rows[rows[int(np.argmax(vecs[rows] @ c))]].task[:200]
