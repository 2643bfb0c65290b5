"""The semantic cache: ``get_context``, ``report``, ``recluster``, ``retract``.

A query (text, or a client-computed vector) gets the closest past trajectories of its
tenant, a verdict, and the fused context of its cluster, its plans ranked for the query's
neighbours (``fused``, cached by ``fused_cache``):

- ``exact``: a neighbour has the same normalized task text, and a run of that text
  succeeded or none is known to have failed (a successful one comes first);
- ``hit``: the best neighbour is a near-duplicate safe to reuse as is: cosine at or above
  its cluster's calibrated threshold AND equal slots (numbers, ids, names, negations, the
  roles of from/to ...: ``slots``) AND it did not fail;
- ``similar``: related: adapt it, do not replay it (cosine at or above ``SIMILAR_MIN``);
  also the same text when none of its runs succeeded and one failed;
- ``miss``: nothing close.

A vector query has no text, so it can be ``similar`` at best. Every answer carries a
``context_id``; ``report(context_id, used, success, reward)`` stores feedback that moves
the cluster's threshold (``verdict.calibrate``) and shows in its fused stats.

Vectors are computed after the durable write, in the background (``Indexer``); a
trajectory is retrievable once embedded, and ``stats()`` shows the lag.
A trace whose spans have not given a task yet (``patches.SPANS_PLACEHOLDER_TASK``) is not
indexed: it joins when a span gives its task.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow.compute as pc

from . import embedder as embedders
from . import fused as fusedmod
from . import reads, slots
from . import verdict as verdicts
from .context_log import ContextLog
from .embed_ahead import EmbedAhead
from .errors import InvalidArgument, NotFound, ResourceExhausted
from .feedback import Feedback
from .fused_cache import FusedCache
from .index import Filters, Row, StoredFit, TenantIndex, fit_tables, match_fit
from .patches import SPANS_PLACEHOLDER_TASK
from .records import normalize_task, now_us, task_hash
from .tables import quote
from .vectors import LRU_SIZE, EmbeddingService, VectorCache

log = logging.getLogger(__name__)
K_MAX = 100
REUSE_FAILED = 2  # reported failed replays of a run (more than its successes): no longer hit
# answer_now searches only indexes this small for the query (``TenantIndex.scan_rows``):
# 4,096 vectors of 384 floats take ~0.1 ms in a loop here (2-3x that inside the server); an
# exact scan of 20,000 takes ~3 ms, which on an event loop stalls every other call as long.
LOOP_SCAN_ROWS = 4096
EMBED_CHUNK = 2_048  # task texts embedded, then persisted, at a time by a tenant's load
Progress = Callable[[int, int], None]  # (done, total)
BULK_VECTORS = 10_000  # at least this many task vectors at once: one scan of _embeddings


@dataclass
class Query:
    text: str | None = None
    vector: Any = None
    k: int = 5
    filters: Filters = field(default_factory=Filters)
    agent: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Query:
        d = dict(d)
        k = d.pop("k", 5)
        text, vector, agent = d.pop("text", None), d.pop("vector", None), d.pop("agent", None)
        return cls(text, vector, k, Filters.from_dict(d.pop("filters", None) or d), agent)


class ContextService:
    def __init__(self, lake: Any, embedder: embedders.Embedder | None = None):
        self.lake = lake
        self.embedder = embedder or embedders.get("minilm")
        self.cache = VectorCache(lake.store, self.embedder.model_id, self.embedder.dim)
        self.embedding = EmbeddingService(self.embedder, self.cache)
        self._indexes: dict[str, TenantIndex] = {}
        self.fused = FusedCache(lake)  # each tenant's fused stats, computed by SQL
        self.contexts = ContextLog(  # what was served, for reports and SQL; journaled by
            lake.store, lake.settings.wal_path if lake.writer is not None else None)  # a writer
        self.feedback = Feedback(lake)  # reports on served contexts; hit thresholds
        self._slot_cache: dict[str, slots.Slots] = {}
        self._pending: list[tuple[int, dict[str, list[dict]]]] = []  # (lsn, rows by tenant)
        # retracted while a commit of theirs waited here: (tenant, id) -> that commit's lsn
        self._retracted_queued: dict[tuple[str, str], int] = {}
        self._pending_cv = threading.Condition()
        self.indexed_lsn = lake.writer.lag["applied_lsn"] if lake.writer else 0
        self._closed = False
        self._indexer = threading.Thread(target=self._index_loop, name="lake-indexer",
                                         daemon=True)
        self._indexer.start()
        self.ahead = EmbedAhead(self.embed_tasks)  # tenants not loaded: their tasks' vectors
        lake.subscribe(self._committed)
        lake.on_retract(self._retracted)
        self._lock = threading.RLock()  # the tenants' indexes (held while one loads)

    # -- the index ----------------------------------------------------------------------------
    def index(self, tenant: str) -> TenantIndex:
        with self._lock:
            idx = self._indexes.get(tenant)
            if idx is None:
                idx = self._indexes[tenant] = self._load(tenant)[0]
            return idx

    def _load(self, tenant: str, *, refit: bool = False,
              progress: Progress | None = None) -> tuple[TenantIndex, int | None]:
        """The tenant's index: its rows and vectors, and the persisted fit if it still
        matches them (``_stored_fit``); rows committed after that fit join their nearest
        centroid, as on arrival. Fits (and persists, as one version, returned) when asked
        to, or when there is no usable fit or it is stale by ``TenantIndex.needs_refit``.
        ``progress(done, total)`` follows the embedding of texts not embedded before."""
        con = self.lake.connect(tenant=tenant)
        t = con.sql("select trajectory_id, task, task_hash, success, reward, agent, agent_version,"
                    " tags, epoch_us(started_at) s, epoch_us(expires_at) e, retracted_at is null a"
                    " from trajectories where task <> ? order by ingested_at, trajectory_id",
                    params=[SPANS_PLACEHOLDER_TASK]).fetchall()
        tools = dict(con.sql("select trajectory_id, list(name order by index) from steps "
                             "where kind = 'tool' and name is not null group by 1").fetchall())
        idx = TenantIndex(tenant, self.embedder.dim)
        rows = [Row(tid, task, h, ok, rw, ag, av, tuple(tg or ()), s, e, _collapse(tools.get(tid)),
                    bool(a)) for tid, task, h, ok, rw, ag, av, tg, s, e, a in t]
        vecs = self.embed_tasks([r.task_hash for r in rows], [r.task for r in rows],
                                progress)
        stored = self._stored_fit(tenant, rows, vecs)
        if stored is not None:
            idx.add([rows[i] for i in stored.rows], vecs[stored.rows])
            idx.restore(stored)
            later = np.setdiff1d(np.arange(len(rows)), stored.rows)
            if len(later):
                idx.add([rows[i] for i in later], vecs[later])
        elif rows:
            idx.add(rows, vecs)
        if refit or stored is None or idx.needs_refit():
            return idx, self._fit(idx)
        self.feedback.load(tenant, idx.cluster_of)
        return idx, None

    def _stored_fit(self, tenant: str, rows: list[Row], vecs: np.ndarray) -> StoredFit | None:
        """The tenant's persisted fit if it still matches ``rows`` (``index.match_fit``)."""
        store, flt = self.lake.store, f"tenant = {quote(tenant)}"
        if not rows or not store.exists("clusters") or not store.exists("cluster_members"):
            return None
        clusters = store.dataset("clusters").to_table(
            columns=["cluster_id", "centroid", "stats", "fitted_at"], filter=flt)
        if clusters.num_rows == 0:
            return None
        members = store.dataset("cluster_members").to_table(
            columns=["trajectory_id", "cluster_id", "similarity"], filter=flt)
        got = match_fit(clusters, members, rows, vecs, self.embedder.model_id)
        if isinstance(got, str):
            log.info("tenant %r: not reusing its persisted clusters (%s): re-fitting", tenant, got)
            return None
        return got

    def _add(self, idx: TenantIndex, rows: list[Row]) -> None:
        if not rows:
            return
        vecs = self.embed_tasks([r.task_hash for r in rows], [r.task for r in rows])
        idx.add(rows, vecs)

    def embed_tasks(self, hashes: list[str], tasks: list[str],
                    progress: Progress | None = None) -> np.ndarray:
        """Vectors for task texts, embedding only the unseen ones, ``EMBED_CHUNK`` at a time,
        each chunk persisted as it is done (a load killed midway resumes where it was)."""
        out = np.empty((len(hashes), self.embedder.dim), np.float32)
        have = self._stored_vectors(hashes, out)
        todo = {h: normalize_task(t) for h, t, ok in zip(hashes, tasks, have, strict=True)
                if not ok}
        keys, texts, got = list(todo), list(todo.values()), {}
        for at in range(0, len(keys), EMBED_CHUNK):
            chunk = keys[at:at + EMBED_CHUNK]
            vecs = self.embedding.embed_hashed(chunk, texts[at:at + EMBED_CHUNK],
                                               persisted=False)
            self.cache.persist(chunk, vecs)
            got.update(zip(chunk, vecs, strict=True))
            done = at + len(chunk)
            if progress is not None:
                progress(done, len(keys))
            elif len(keys) > EMBED_CHUNK:
                log.info("embedded %d of %d task texts", done, len(keys))
        for i in np.flatnonzero(~have):
            out[i] = got[hashes[i]]
        return out

    def _stored_vectors(self, hashes: list[str], out: np.ndarray) -> np.ndarray:
        """Fill ``out`` with the cached vectors of ``hashes``; returns which were found. Many
        at once (a tenant's index at start-up) are read in one scan of ``_embeddings`` rather
        than key by key when they are a good share of it; the last ``LRU_SIZE`` of them also
        go to the in-memory cache (for queries that repeat a stored task)."""
        store = self.lake.store
        if len(hashes) < BULK_VECTORS or not store.exists("_embeddings") or \
                4 * len(set(hashes)) < store.dataset("_embeddings").count_rows():
            known = self.cache.get_many(hashes)
            have = np.fromiter((h in known for h in hashes), np.bool_, len(hashes))
            for i in np.flatnonzero(have):
                out[i] = known[hashes[i]]
            return have
        got, vecs = self.cache.load_all()
        pos = dict(zip(got, range(len(got)), strict=True))
        at = np.fromiter((pos.get(h, -1) for h in hashes), np.int64, len(hashes))
        have = at >= 0
        out[have] = vecs[at[have]]
        recent = np.flatnonzero(have)[-LRU_SIZE:]
        self.cache.remember([hashes[i] for i in recent], out[recent])
        return have

    def _committed(self, version: Any, written: dict[str, list[dict]] | None) -> None:
        """Writer thread: queue the rows; the indexer thread embeds them. A restore (None):
        every tenant's index and stats are dropped now, to load again from the lake."""
        if written is None:
            with self._lock:
                self._indexes.clear()
                self.fused.clear()
            return
        with self._pending_cv:
            self._pending.append((version.wal_lsn, written))
            self._pending_cv.notify_all()

    def _index_loop(self) -> None:
        while True:
            with self._pending_cv:
                while not self._pending and not self._closed:
                    self._pending_cv.wait()
                if self._closed and not self._pending:
                    return
                lsn, written = self._pending[0]
            try:
                for tenant, rows in written.items():
                    self.on_commit(tenant, rows, lsn)
            except Exception:  # noqa: BLE001 - keep indexing; the rows reload on restart
                log.exception("indexing committed trajectories failed")
            with self._pending_cv:
                self._pending.pop(0)
                self.indexed_lsn = max(self.indexed_lsn, lsn)
                for key in [k for k, at in self._retracted_queued.items() if at <= lsn]:
                    del self._retracted_queued[key]
                self._pending_cv.notify_all()

    def wait_indexed(self, lsn: int, timeout: float = 60.0) -> None:
        """Block until writes through ``lsn`` are committed and embedded (read your writes);
        an ``lsn`` never logged is refused."""
        if lsn <= 0:
            return
        reads.wait_visible(self.lake, lsn, timeout)
        deadline = time.monotonic() + timeout
        with self._pending_cv:
            while self._pending and self.indexed_lsn < lsn:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResourceExhausted(f"writes through log position {lsn} are not "
                                            f"embedded after {timeout:g} s (the index is "
                                            "behind); retry shortly", retry_after_s=1.0)
                self._pending_cv.wait(min(left, 0.2))

    @property
    def lag(self) -> dict[str, int]:
        """Committed trajectories not yet embedded (retrievable once they are)."""
        with self._pending_cv:
            return {"commits": len(self._pending),
                    "trajectories": sum(len(r) for _, w in self._pending for r in w.values())}

    def on_commit(self, tenant: str, trajectories: list[dict[str, Any]], lsn: int = 0) -> None:
        """New or updated trajectory rows were committed (at ``lsn``): index them, or, the
        tenant's index not loaded, embed their tasks. Rows retracted since (while waiting
        here) are left out: they are as committed, from before the retraction."""
        with self._lock:
            idx = self._indexes.get(tenant)
        with self._pending_cv:
            late = self._retracted_queued
            trajectories = [t for t in trajectories if t["task"] != SPANS_PLACEHOLDER_TASK
                            and late.get((tenant, t["trajectory_id"]), -1) < lsn]
        if idx is None:  # not loaded: embedded ahead, off this thread (``EmbedAhead``)
            if trajectories:
                self.ahead.add(tenant, trajectories)
            return
        tools = _tool_names(self.lake, tenant, [t["trajectory_id"] for t in trajectories])
        rows = [Row(t["trajectory_id"], t["task"], t["task_hash"], t["success"], t["reward"],
                    t["agent"], t["agent_version"], tuple(t["tags"] or ()), t["started_at"],
                    t["expires_at"], _collapse(tools.get(t["trajectory_id"])),
                    t.get("retracted_at") is None) for t in trajectories]
        self._add(idx, rows)
        self.fused.changed()
        if idx.needs_refit():
            self.recluster(tenant)

    # -- lookup -------------------------------------------------------------------------------
    def get_context(self, tenant: str, query: Query | dict[str, Any]) -> dict[str, Any]:
        q = query if isinstance(query, Query) else Query.from_dict(query)
        return self._answer(tenant, self.index(tenant), q, refresh=True)

    def answer_now(self, tenant: str, query: Query) -> dict[str, Any] | None:
        """``get_context`` if it can answer from memory without waiting: a vector query, the
        tenant's index loaded, small enough for the query (``LOOP_SCAN_ROWS``) and not being
        changed, its fused stats fresh. Else None (the caller asks ``get_context`` where it
        may block). For an event loop."""
        idx = self._indexes.get(tenant)
        if idx is None or query.text is not None or self.fused.stale(tenant) \
                or idx.scan_rows(query.filters) > LOOP_SCAN_ROWS:
            return None
        if not idx.lock.acquire(blocking=False):  # a re-fit or an arrival holds it
            return None
        try:
            return self._answer(tenant, idx, query, refresh=False)
        finally:
            idx.lock.release()

    def _answer(self, tenant: str, idx: TenantIndex, q: Query, *,
                refresh: bool) -> dict[str, Any]:
        t0 = time.perf_counter()
        vec, qhash = self._query_vector(tenant, q)
        t1 = time.perf_counter()
        now = now_us()
        ids, scores = idx.search(vec, q.k, q.filters, now)
        neighbors = [self._neighbor(idx, int(r), float(s)) for r, s in zip(ids, scores,
                                                                             strict=True)]
        cluster = idx.cluster_of_vector(vec)[0] if idx.model is not None else None
        threshold = self.threshold(tenant, cluster)
        if qhash is not None:
            self._keep_a_success(idx, vec, qhash, q, neighbors, now)
        verdict = self._verdict(tenant, q, qhash, neighbors, threshold)
        fused = self._fused_for(tenant, idx, cluster, now, neighbors, verdict["verdict"],
                                refresh)
        ctx_id = "ctx_" + uuid.uuid4().hex
        version = self.lake.catalog.current().version
        answer = {
            "context_id": ctx_id, "verdict": verdict["verdict"], "reason": verdict["reason"],
            "cluster": self._cluster_info(tenant, idx, cluster, threshold),
            "neighbors": neighbors, "fused": fused,
            "provenance": {"lake_version": version, "embedder": self.embedder.model_id,
                           "sources": fused.get("sources", []),
                           "neighbors": [n["trajectory_id"] for n in neighbors]},
            "timing_ms": {"embed": round((t1 - t0) * 1e3, 3),
                          "total": round((time.perf_counter() - t0) * 1e3, 3)},
        }
        self._remember(tenant, ctx_id, q, answer, verdict, neighbors, cluster, version)
        return answer

    def embed_queries(self, tenant: str, texts: list[str]) -> np.ndarray:
        """Query vectors of ``tenant``, in one batched pass (later lookups of these texts by
        this tenant skip the model). Kept apart per tenant: a query's speed must not tell
        one tenant that another asked, or stored, the same text."""
        norm = [normalize_task(t) for t in texts]
        return self.embedding.embed_hashed([_query_key(tenant, task_hash(t)) for t in texts],
                                           norm, persisted=False)

    def _query_vector(self, tenant: str, q: Query) -> tuple[np.ndarray, str | None]:
        if (q.text is None) == (q.vector is None):
            raise InvalidArgument("give exactly one of text or vector", field="text")
        if not 1 <= int(q.k) <= K_MAX:
            raise InvalidArgument(f"k must be between 1 and {K_MAX}, got {q.k}", field="k")
        if q.text is not None:
            if not isinstance(q.text, str) or not q.text.strip():
                raise InvalidArgument("text is empty; send the task text", field="text")
            h = task_hash(q.text)
            return self.embedding.embed_hashed([_query_key(tenant, h)],
                                               [normalize_task(q.text)], persisted=False)[0], h
        v = np.asarray(q.vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.embedder.dim:
            raise InvalidArgument(f"vector has {v.shape[0]} dimensions; this lake's embedder "
                                  f"({self.embedder.model_id}) makes {self.embedder.dim}",
                                  field="vector")
        norm = float(np.sqrt(v.dot(v)))  # np.linalg.norm's arithmetic, without its checks
        if norm == 0 or (not math.isfinite(norm) and not np.isfinite(v).all()):
            raise InvalidArgument("vector must be finite and non-zero", field="vector")
        return v / norm, None

    def _neighbor(self, idx: TenantIndex, row: int, score: float) -> dict[str, Any]:
        r = idx.rows[row]
        return {"trajectory_id": r.trajectory_id, "task": r.task, "similarity": round(score, 6),
                "success": r.success, "reward": r.reward, "agent": r.agent,
                "agent_version": r.agent_version, "tools": list(r.tools),
                "cluster": int(idx.labels[row]) if row < len(idx.labels) else None,
                "_hash": r.task_hash}

    def _keep_a_success(self, idx: TenantIndex, vec: np.ndarray, qhash: str, q: Query,
                        neighbors: list[dict], now: int) -> None:
        """All k neighbours are runs of the query's own text and none succeeded: runs of it
        tie, so one that succeeded may lie beyond k. The best of those (if any) replaces the
        last neighbour, for the verdict to see it."""
        if len(neighbors) < q.k or any(n["_hash"] != qhash or n["success"] for n in neighbors):
            return
        ids, scores = idx.search(vec, 1, replace(q.filters, success_only=True), now)
        if len(ids) and idx.rows[int(ids[0])].task_hash == qhash:
            neighbors[-1] = self._neighbor(idx, int(ids[0]), float(scores[0]))

    def _verdict(self, tenant: str, q: Query, qhash: str | None, neighbors: list[dict],
                 threshold: float) -> dict[str, Any]:
        hashes = [n.pop("_hash") for n in neighbors]
        hash_of = {n["trajectory_id"]: h for n, h in zip(neighbors, hashes, strict=True)}
        v = verdicts.of_neighbors(q.text, qhash, neighbors, hashes, threshold, self._slots)
        if v["verdict"] not in (verdicts.EXACT, verdicts.HIT):
            return v

        def failing(n: dict) -> tuple[int, int] | None:  # what replaying it did, reported
            failed, ok = self.feedback.reuses(tenant, n["trajectory_id"])
            return (failed, ok) if failed >= REUSE_FAILED and failed > ok else None

        bad = failing(neighbors[0])
        if bad is None:
            return v
        top = neighbors[0]["trajectory_id"]
        if v["verdict"] == verdicts.EXACT:  # another run of the same text may do
            alt = next((i for i, n in enumerate(neighbors[1:], 1) if hash_of[
                n["trajectory_id"]] == qhash and n["success"] and failing(n) is None), None)
            if alt is not None:
                neighbors.insert(0, neighbors.pop(alt))
                return {**v, "reason": f"{v['reason']}; run {top!r:.80}, whose replays "
                        f"failed {bad[0]} of {sum(bad)} reported times, passed over"}
        return {**v, "verdict": verdicts.SIMILAR, "reason": (
            f"{v['reason']}; but replaying run {top!r:.80} failed {bad[0]} of {sum(bad)} "
            "reported times: adapt it, do not replay it")}

    def _slots(self, text: str) -> slots.Slots:
        """Slots of a stored task text, extracted once (stored texts repeat across queries)."""
        got = self._slot_cache.get(text)
        if got is None:
            if len(self._slot_cache) > 100_000:
                self._slot_cache.clear()
            got = self._slot_cache[text] = slots.extract(text)
        return got

    # -- clusters and fused context ---------------------------------------------------------
    def threshold(self, tenant: str, cluster: int | None) -> float:
        return self.feedback.threshold(tenant, cluster)

    def _cluster_info(self, tenant: str, idx: TenantIndex, cluster: int | None,
                      threshold: float) -> dict[str, Any] | None:
        if cluster is None:
            return None
        stats = self.fused.cluster(tenant, cluster)
        return {"id": cluster, "size": stats.get("runs", 0),
                "success_rate": stats.get("success_rate"), "hit_threshold": threshold,
                "label": stats.get("label")}

    def _fused_for(self, tenant: str, idx: TenantIndex, cluster: int | None, now: int,
                   neighbors: list[dict], verdict: str, refresh: bool = True) -> dict[str, Any]:
        """The cluster's fused context, its plans ranked for ``neighbors`` and ``verdict``
        (``FusedCache.for_cluster``). ``refresh=False``: stale stats as they are (none: {}),
        not computed here."""
        if cluster is None:  # no clusters yet (a new lake): the fields, empty
            return {**fusedmod.empty(), "feedback": self.feedback.stats(tenant, -1)}
        out = self.fused.for_cluster(tenant, idx, cluster, now, neighbors, verdict, refresh)
        out["feedback"] = self.feedback.stats(tenant, cluster)
        return out

    def recluster(self, tenant: str, progress: Progress | None = None) -> dict[str, Any]:
        """Re-fit the tenant's clusters now, as one new version. An index not loaded yet is
        loaded with this fit (not fitted twice); ``seconds`` counts the load too."""
        t0 = time.perf_counter()
        with self._lock:
            idx = self._indexes.get(tenant)
            loaded = idx is None
            if loaded:
                idx, version = self._load(tenant, refit=True, progress=progress)
                self._indexes[tenant] = idx
        if not loaded:
            version = self._fit(idx)
        self.fused.drop(tenant)
        return {"tenant": tenant, "clusters": idx.model.k if idx.model else 0,
                "rows": idx.size, "seconds": round(time.perf_counter() - t0, 3),
                "version": version}

    def _fit(self, idx: TenantIndex) -> int | None:
        """Fit the index's clusters, reload its tenant's reports into them, and persist the
        fit with the thresholds those reports give (one version, returned)."""
        idx.fit()
        self.contexts.flush()  # the reports' contexts, to find their clusters in the new fit
        self.feedback.load(idx.tenant, idx.cluster_of)
        return self._persist_clusters(idx)

    def _persist_clusters(self, idx: TenantIndex) -> int | None:
        """Write the fit to ``clusters`` / ``cluster_members``, as one version (with what a
        restart needs to reuse it: ``index.fit_tables``)."""
        if idx.model is None:
            return None
        thresholds = [self.threshold(idx.tenant, c) for c in range(idx.model.k)]
        clusters, members = fit_tables(idx, self.embedder.model_id, thresholds)
        return self.lake.replace_tenant_rows(idx.tenant, {"clusters": clusters,
                                                          "cluster_members": members},
                                             operation="recluster",
                                             detail={"clusters": idx.model.k,
                                                     "rows": members.num_rows})

    # -- feedback and the context log -------------------------------------------------------
    def _remember(self, tenant: str, ctx_id: str, q: Query, answer: dict, verdict: dict,
                  neighbors: list[dict], cluster: int | None, version: int) -> None:
        row = {"tenant": tenant, "context_id": ctx_id, "created_at": now_us(), "query": q.text,
               "agent": q.agent, "verdict": verdict["verdict"], "cluster_id": cluster,
               "top_similarity": neighbors[0]["similarity"] if neighbors else None,
               "slots_equal": verdict["slots_equal"],
               "neighbors": [n["trajectory_id"] for n in neighbors], "lake_version": version,
               "top_success": neighbors[0]["success"] if neighbors else None}
        self.contexts.remember(row)

    def flush_log(self) -> None:
        self.contexts.flush()

    def report(self, tenant: str, context_id: str, *, used: bool | None = None,
               success: bool | None = None, reward: float | None = None,
               trajectory_id: str | None = None) -> dict[str, Any]:
        ctx = self.contexts.get(context_id)
        if ctx is None or ctx["tenant"] != tenant:
            raise NotFound(f"no context {context_id!r:.100} for this tenant; report the "
                           "context_id that get_context returned")
        if reward is not None and not math.isfinite(reward):
            raise InvalidArgument(f"must be a finite number, got {reward}", field="reward")
        stored = self.feedback.record(ctx, (used, success, reward, trajectory_id),
                                      self.contexts.served_here(context_id))
        return {"context_id": context_id, "stored": stored,
                "hit_threshold": self.threshold(tenant, ctx["cluster_id"])}

    def retract(self, tenant: str, ids: list[str], reason: str, *,
                purge: bool = False) -> dict[str, Any]:
        return {"retracted": self.lake.retract(ids, reason, tenant=tenant, purge=purge)}

    def _retracted(self, tenant: str, ids: list[str]) -> None:
        """``lake.retract`` (whoever called it) retracted these: never serve them again,
        nor index them from a commit still waiting for the indexer (``on_commit``)."""
        with self._pending_cv:
            if self._pending:
                last = self._pending[-1][0]
                self._retracted_queued.update({(tenant, tid): last for tid in ids})
        self.ahead.forget(tenant, ids)
        with self._lock:
            idx = self._indexes.get(tenant)
        if idx is not None:
            idx.retract(ids)
            self.fused.changed()

    def stats(self) -> dict[str, Any]:
        return {"tenants": {t: {"rows": i.size, "clusters": i.model.k if i.model else 0}
                            for t, i in self._indexes.items()},
                "embedding_lag": self.lag, "indexed_lsn": self.indexed_lsn,
                "embedder": self.embedder.model_id, "model_calls": self.embedding.model_calls,
                "model_texts": self.embedding.model_texts}

    def close(self) -> None:
        with self._pending_cv:
            self._closed = True
            self._pending_cv.notify_all()
        self._indexer.join(timeout=60)
        self.ahead.close()
        self.contexts.close()
        self.embedding.close()


def _tool_names(lake: Any, tenant: str, tids: list[str]) -> dict[str, list[str]]:
    """Each trajectory's tool names in step order, read from the steps table as it is now
    (these trajectories were just committed; a later commit re-indexes what it changes).
    Straight from Lance: a DuckDB connection per commit would cost more than the rest."""
    if not tids:
        return {}
    steps = lake.store.lookup("steps", tenant, "trajectory_id", tids,
                              ["trajectory_id", "index", "kind", "name"])
    steps = steps.filter(pc.and_(pc.equal(steps["kind"], "tool"), pc.is_valid(steps["name"])))
    out: dict[str, list[str]] = {}
    for tid, _, name in sorted(zip(steps["trajectory_id"].to_pylist(),
                                   steps["index"].to_pylist(), steps["name"].to_pylist(),
                                   strict=True)):
        out.setdefault(tid, []).append(name)
    return out


def _collapse(tools: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for t in tools or ():
        if not out or out[-1] != t:
            out.append(t)
    return tuple(out)


def _query_key(tenant: str, text_hash: str) -> str:
    """The embedding cache's key of a tenant's query text (task vectors use the bare hash)."""
    return f"{tenant}\x00{text_hash}"
