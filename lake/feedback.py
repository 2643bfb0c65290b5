"""Reports on served contexts: stored in the ``feedback`` table, each counted once (a retry,
even one that reaches a restarted or another server, stores nothing), and turned into each
cluster's hit threshold (``verdict.calibrate``).

A context's latest report is the one that counts: every report stays in the table (SQL sees
the history), but calibration takes one observation per context, from its latest report,
which replaces the one before (a report of ``used=False`` withdraws it)."""

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


class _Observed:
    """A tenant's observations: one per context (its latest report), by cluster."""

    def __init__(self) -> None:
        self.clusters: dict[int, dict[str, Observation]] = {}  # cluster -> context_id -> ...
        self.cluster_of: dict[str, int] = {}  # context_id -> the cluster it counts in

    def put(self, context_id: str, cluster: int, obs: Observation | None) -> int | None:
        """Replace the context's observation (None: it has none now); returns the cluster
        the one replaced counted in, if another."""
        was = self.cluster_of.pop(context_id, None)
        if was is not None:
            self.clusters[was].pop(context_id, None)
        if obs is not None:
            self.clusters.setdefault(cluster, {})[context_id] = obs
            self.cluster_of[context_id] = cluster
        return was if was != cluster else None

    def of(self, cluster: int | None) -> list[Observation]:
        return list(self.clusters.get(cluster, {}).values()) if cluster is not None else []


class Feedback:
    def __init__(self, lake: Any):
        self.lake = lake
        self._obs: dict[str, _Observed] = {}  # tenant -> its observations
        self._thresholds: dict[tuple[str, int | None], float] = {}
        self._reported: dict[str, tuple] = {}  # context_id -> its last report
        # tenant -> run the verdict said to replay (exact, hit) -> {context_id: success}
        self._reuse: dict[str, dict[str, dict[str, bool]]] = {}

    def load(self, tenant: str, cluster_of: Callable[[str], int | None]) -> None:
        """The tenant's stored reports that calibrate thresholds, the latest of each context,
        each in the cluster that ``cluster_of`` gives its context's best neighbour now (a
        refit renumbers clusters: the number stored with the report may now be another kind
        of task); and, from the same reports, each replayed run's reuses (``reuses``)."""
        store = self.lake.store  # Lance, not DuckDB: this may run on the indexer thread
        rows: list[dict[str, Any]] = []
        if store.exists("feedback"):  # a context's verdict, cluster, similarity: the same
            rows = _latest(store.dataset("feedback").to_table(  # in all its reports
                columns=["context_id", "reported_at", "verdict", "cluster_id",
                         "top_similarity", "used", "success"],
                filter=f"tenant = {quote(tenant)} and "
                       "verdict in ('exact', 'hit', 'similar')").to_pylist())
        served: dict[str, dict[str, Any]] = {}  # context_id -> best neighbour, slots, ...
        if rows and store.exists("contexts"):
            ds = store.dataset("contexts")
            cols = ["context_id", "neighbors", "slots_equal", "top_success"]
            got = store.lookup("contexts", tenant, "context_id",
                               sorted({r["context_id"] for r in rows}),
                               [c for c in cols if c in ds.schema.names]).to_pylist()
            served = {c["context_id"]: c for c in got}
        out, reuse = _Observed(), {}
        for r in rows:
            c = served.get(r["context_id"], {})
            top = (c.get("neighbors") or [None])[0]
            if r["verdict"] in ("exact", "hit") and top is not None and r["used"] \
                    and r["success"] is not None:  # the replayed run's reuse
                reuse.setdefault(top, {})[r["context_id"]] = bool(r["success"])
            if r["verdict"] == "exact" or r["top_similarity"] is None:
                continue  # matched by text hash: nothing about the threshold
            cid = cluster_of(top) if top is not None else r["cluster_id"]
            if cid is not None:
                out.put(r["context_id"], cid, _observation(r, c))
        self._obs[tenant], self._reuse[tenant] = out, reuse
        for key in [k for k in self._thresholds if k[0] == tenant]:
            del self._thresholds[key]

    def reuses(self, tenant: str, trajectory_id: str) -> tuple[int, int]:
        """(failed, succeeded): reported reuses of the run, one per context (its latest)."""
        got = self._reuse.get(tenant, {}).get(trajectory_id, {})
        ok = sum(got.values())
        return len(got) - ok, ok

    def threshold(self, tenant: str, cluster: int | None) -> float:
        key = (tenant, cluster)
        t = self._thresholds.get(key)
        if t is None:
            obs = self._obs[tenant].of(cluster) if tenant in self._obs else []
            t = self._thresholds[key] = verdicts.calibrate(obs)
        return t

    def stats(self, tenant: str, cluster: int) -> dict[str, Any]:
        obs = self._obs[tenant].of(cluster) if tenant in self._obs else []
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
        self._observe(row, served)
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

    def _observe(self, row: dict[str, Any], served: dict[str, Any]) -> None:
        """The context's new latest report replaces its observation (hit/similar contexts
        only: an exact one is matched by text hash, it says nothing about the threshold),
        and, for exact and hit, the replayed run's reuse."""
        top = (served.get("neighbors") or [None])[0]
        if row["verdict"] in ("exact", "hit") and top is not None:
            tenant_runs = self._reuse.setdefault(row["tenant"], {})
            runs = tenant_runs.setdefault(top, {})
            runs.pop(row["context_id"], None)
            if row["used"] and row["success"] is not None:
                runs[row["context_id"]] = bool(row["success"])
            if len(tenant_runs) > REPORTS_KEPT:  # the runs reported on longest ago go
                del tenant_runs[next(iter(tenant_runs))]
        if row["top_similarity"] is None or row["verdict"] not in ("hit", "similar") \
                or row["cluster_id"] is None:
            return
        tenant, context_id = row["tenant"], row["context_id"]
        observed = self._obs.setdefault(tenant, _Observed())
        cluster = observed.cluster_of.get(context_id, row["cluster_id"])  # as loaded: a
        was = observed.put(context_id, cluster,  # refit may have renumbered clusters
                           _observation(row, served))
        for c in (cluster, was):
            self._thresholds.pop((tenant, c), None)


def _observation(report: dict[str, Any], served: dict[str, Any]) -> Observation | None:
    """What a report says about the threshold: nothing unless the context was used and the
    outcome is known, nor when the best neighbour served had failed (the verdict said not
    to replay it: a failure after it tells nothing of how similar is similar enough)."""
    if not report["used"] or report["success"] is None or served.get("top_success") is False:
        return None
    return (report["top_similarity"], bool(served.get("slots_equal")), bool(report["success"]))


def _latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each context's latest report (rows in the order stored: a tie goes to the later)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        had = out.get(r["context_id"])
        if had is None or r["reported_at"] >= had["reported_at"]:
            out[r["context_id"]] = r
    return list(out.values())
