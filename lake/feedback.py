"""Reports on served contexts: stored in the ``feedback`` table, each counted once (a retry,
even one that reaches a restarted or another server, stores nothing), and turned into each
cluster's hit threshold (``verdict.calibrate``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from . import verdict as verdicts
from .records import now_us
from .schema import FEEDBACK
from .tables import quote

REPORTS_KEPT = 100_000  # the last report of this many contexts, to know a retried report

Observation = tuple[float, bool, bool]  # (top similarity, slots equal, success)


class Feedback:
    def __init__(self, lake: Any):
        self.lake = lake
        self._obs: dict[str, dict[int, list[Observation]]] = {}  # tenant -> cluster -> ...
        self._thresholds: dict[tuple[str, int | None], float] = {}
        self._reported: dict[str, tuple] = {}  # context_id -> its last report

    def load(self, tenant: str, cluster_of: Callable[[str], int | None]) -> None:
        """The tenant's stored reports that calibrate thresholds, each in the cluster that
        ``cluster_of`` gives its context's best neighbour now (a refit renumbers clusters:
        the number stored with the report may now be another kind of task)."""
        store = self.lake.store  # Lance, not DuckDB: this may run on the indexer thread
        rows: list[dict[str, Any]] = []
        if store.exists("feedback"):
            rows = store.dataset("feedback").to_table(
                columns=["context_id", "cluster_id", "top_similarity", "success"],
                filter=f"tenant = {quote(tenant)} and used and success is not null and "
                       "top_similarity is not null and verdict in ('hit', 'similar')",
            ).to_pylist()
        served: dict[str, tuple[str | None, bool]] = {}  # context_id -> (best neighbour, ...)
        if rows and store.exists("contexts"):
            got = store.lookup("contexts", tenant, "context_id",
                               sorted({r["context_id"] for r in rows}),
                               ["context_id", "neighbors", "slots_equal"]).to_pylist()
            served = {c["context_id"]: ((c["neighbors"] or [None])[0], bool(c["slots_equal"]))
                      for c in got}
        out: dict[int, list[Observation]] = {}
        for r in rows:
            top, eq = served.get(r["context_id"], (None, False))
            cid = cluster_of(top) if top is not None else r["cluster_id"]
            if cid is not None:
                out.setdefault(cid, []).append((r["top_similarity"], eq, bool(r["success"])))
        self._obs[tenant] = out
        for key in [k for k in self._thresholds if k[0] == tenant]:
            del self._thresholds[key]

    def threshold(self, tenant: str, cluster: int | None) -> float:
        key = (tenant, cluster)
        t = self._thresholds.get(key)
        if t is None:
            obs = self._obs.get(tenant, {}).get(cluster, []) if cluster is not None else []
            t = self._thresholds[key] = verdicts.calibrate(obs)
        return t

    def stats(self, tenant: str, cluster: int) -> dict[str, Any]:
        obs = self._obs.get(tenant, {}).get(cluster, [])
        return {"reports_used": len(obs),
                "success_rate_when_used": (sum(o[2] for o in obs) / len(obs)) if obs else None}

    def record(self, served: dict[str, Any], said: tuple, served_here: bool) -> bool:
        """Store the report ``said`` = (used, success, reward, trajectory_id) on the context
        ``served``; False when it repeats the context's last report (a retry). Reports on a
        context this process did not serve (``served_here``) are looked up in the table."""
        context_id, tenant = served["context_id"], served["tenant"]
        last = self._reported.get(context_id)
        if last is None and not served_here:
            last = self._stored(tenant, context_id)
        if last == said:
            return False
        used, success, reward, trajectory_id = said
        row = {"tenant": tenant, "context_id": context_id, "reported_at": now_us(),
               "used": used, "success": success, "reward": reward,
               "trajectory_id": trajectory_id, "verdict": served["verdict"],
               "cluster_id": served["cluster_id"], "top_similarity": served["top_similarity"]}
        self.lake.store.append("feedback", pa.Table.from_pylist([row], schema=FEEDBACK))
        self._observe(row, served.get("slots_equal"))
        self._reported[context_id] = said
        if len(self._reported) > REPORTS_KEPT:  # the oldest go: retries come soon after
            del self._reported[next(iter(self._reported))]
        return True

    def _stored(self, tenant: str, context_id: str) -> tuple | None:
        if not self.lake.store.exists("feedback"):
            return None
        rows = self.lake.store.dataset("feedback").to_table(
            columns=["reported_at", "used", "success", "reward", "trajectory_id"],
            filter=f"tenant = {quote(tenant)} and context_id = {quote(context_id)}").to_pylist()
        if not rows:
            return None
        r = max(rows, key=lambda r: r["reported_at"])
        return (r["used"], r["success"], r["reward"], r["trajectory_id"])

    def _observe(self, row: dict[str, Any], slots_equal: bool | None) -> None:
        # only hit/similar contexts say anything about the threshold (exact is by text hash)
        if (row["used"] and row["success"] is not None and row["top_similarity"] is not None
                and row["verdict"] in ("hit", "similar")):
            obs = self._obs.setdefault(row["tenant"], {}).setdefault(row["cluster_id"], [])
            obs.append((row["top_similarity"], bool(slots_equal), bool(row["success"])))
            self._thresholds.pop((row["tenant"], row["cluster_id"]), None)
