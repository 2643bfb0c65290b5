"""Per-tenant k-means clusters that double as an IVF index for the semantic cache.

Pure numpy (plus scipy.sparse for centroid sums): nothing here knows of Lance, gRPC or the
embedder. Vectors are L2-normalized float32 rows (384-d all-MiniLM-L6-v2), so cosine
similarity is a dot product.

Rows are numbered in arrival order: ``fit(vectors)`` gives rows ``0..n-1``, each ``assign``
continues the numbering, ``refit`` keeps it. A filter is a boolean mask over row numbers.
``search`` only reads the model; ``assign`` changes it: callers serialise the two.
``from_assignment`` rebuilds an earlier fit from its rows, labels, centroids and calibration
(a process start reuses the persisted fit instead of training and calibrating again).

Layout
    ``vectors`` is a copy of the fitted rows sorted by cluster: a cluster's members are one
    contiguous block (one BLAS matrix-vector product per probed cluster, read sequentially);
    ``row_ids`` maps a position back to its row; ``offsets[c]:offsets[c + 1]`` is cluster c.
    Rows added later go to an append log (``log_vectors``, doubling when full) and to their
    cluster's list of log positions, and are searched with their cluster.

Rules (module constants, documented where defined; measured on a shared 2-core box)
    * k: ``n / MEMBERS_PER_CLUSTER`` clamped to ``[K_MIN, K_MAX]`` (~2k clusters at 1M).
    * Fewer than ``EXACT_MAX_ROWS`` rows: no clustering (k = 1) and exact search (brute force
      over < 20k rows is ~1-3 ms and has recall 1). A caller may also fit k > 1 clusters on a
      small tenant and set ``model.exact = True``: search stays exact.
    * Fit: Lloyd's k-means on a sample, then every row goes to its nearest centroid.
    * Calibrated at fit (``calibrate``): ``n_probe`` and the filtered walk's ``beta``.
    * Filters never post-filter a fixed candidate set (see ``search``).
    * ``needs_refit``: grown by ``GROWTH_REFIT``, or arrivals drift by ``DRIFT_REFIT``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EXACT_MAX_ROWS = 20_000  # below this many rows: one cluster, exact search
MEMBERS_PER_CLUSTER = 512  # k = n / this: 1953 clusters at 1M, 195 at 100k
K_MIN, K_MAX = 16, 4096
# k-means: Lloyd on TRAIN_PER_CLUSTER * k sampled rows (within [TRAIN_MIN, TRAIN_MAX])
TRAIN_PER_CLUSTER, TRAIN_MIN, TRAIN_MAX = 32, 50_000, 131_072
LLOYD_ITERS = 6
CALIBRATION_QUERIES = 128  # rows; each is also asked moved off by noise (256 queries)
CALIBRATION_NOISE_COS = 0.9  # the moved copy's cosine to its row
CALIBRATION_FILTERS = (0.1, 0.01, 0.001)  # shares of rows allowed (random subsets)
CALIBRATION_RECALL = 0.97  # calibrated on data rows; a margin over the 0.95 target
N_PROBE_MIN = 4
BETA_GRID = np.round(np.arange(0.0, 1.0001, 0.02), 2)  # candidate betas for the filtered walk
EXACT_ALLOWED_MAX = 2_048  # a filter allowing at most this many rows: exact over them (<1 ms)
DENSE_FILTER = 0.25  # filters allowing more than this share score whole blocks, then mask
SKIP_EMPTY_SHARE = 0.02  # filters allowing at most this share skip clusters they leave empty
GROWTH_REFIT = 1.5  # re-fit once the tenant is this many times its size at the last fit
DRIFT_REFIT = 0.15  # ... or arrivals sit this much farther from their centroids (sq. dist.)
DRIFT_MIN_ARRIVALS = 1_000  # ... judged over at least this many arrivals
_CHUNK = 8192


@dataclass
class ClusterModel:
    centroids: np.ndarray  # (k, d) float32
    vectors: np.ndarray  # (n_fit, d) float32, sorted by cluster
    row_ids: np.ndarray  # (n_fit,) int64: the row at each position of ``vectors``
    offsets: np.ndarray  # (k + 1,) int64: cluster c is vectors[offsets[c]:offsets[c + 1]]
    radius: np.ndarray  # (k,) float32: rms distance of a cluster's fitted rows to its centroid
    fit_mean_sqdist: float  # mean squared distance of the fitted rows to their centroid
    n_probe: int = 1  # clusters probed by an unfiltered search (calibrated)
    beta: float = 1.0  # the filtered walk's bound: q . centroid + beta * radius (calibrated)
    exact: bool = False  # True: search is brute force (a small tenant)
    seed: int = 0
    # -- appended rows (row id = n_fit + log position) --
    log_vectors: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    log_clusters: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    log_len: int = 0
    app_pos: list = field(default_factory=list, repr=False)  # per cluster: log positions
    app_len: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    arrivals_sqdist: float = 0.0  # sum over appended rows of the squared distance
    calibration: dict = field(default_factory=dict)  # what ``calibrate`` measured
    _half_norms: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _pos_of_row: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _cluster_of_row: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _centroid_norms: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        k, d = self.centroids.shape
        self._half_norms = 0.5 * np.einsum("ij,ij->i", self.centroids, self.centroids)
        self._pos_of_row = np.empty(len(self.row_ids), np.int64)
        self._pos_of_row[self.row_ids] = np.arange(len(self.row_ids))
        self._cluster_of_row = np.empty(len(self.row_ids), np.int32)
        self._cluster_of_row[self.row_ids] = np.repeat(np.arange(k, dtype=np.int32),
                                                       np.diff(self.offsets))
        if self.log_vectors is None:
            self.log_vectors = np.empty((0, d), np.float32)
            self.log_clusters = np.empty(0, np.int32)
            self.app_pos = [np.empty(0, np.int64) for _ in range(k)]
            self.app_len = np.zeros(k, np.int64)

    @property
    def centroid_norms(self) -> np.ndarray:
        """Each centroid's length (at least 1e-12): centroids are not unit length."""
        if self._centroid_norms is None:
            self._centroid_norms = np.maximum(np.linalg.norm(self.centroids, axis=1), 1e-12)
        return self._centroid_norms

    @property
    def k(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def n_fit(self) -> int:
        return len(self.row_ids)

    @property
    def n_rows(self) -> int:
        return self.n_fit + self.log_len

    @property
    def sizes(self) -> np.ndarray:
        """Rows per cluster, appended ones included."""
        return np.diff(self.offsets) + self.app_len

    @property
    def growth(self) -> float:
        """Rows now over rows at the fit."""
        return self.n_rows / max(self.n_fit, 1)

    @property
    def drift(self) -> float:
        """Assignment quality of the arrivals against the fit: their mean squared distance to
        the nearest centroid over the fitted rows' one, minus 1 (0.0: they fit as well as the
        training data did; 0.15: 15% farther). 0.0 before any arrival."""
        if self.log_len == 0 or self.fit_mean_sqdist <= 0:
            return 0.0
        return self.arrivals_sqdist / self.log_len / self.fit_mean_sqdist - 1.0

    def vectors_by_row(self) -> np.ndarray:
        """Every row's vector, in row order (a copy)."""
        out = np.empty((self.n_rows, self.dim), np.float32)
        out[self.row_ids] = self.vectors
        out[self.n_fit:] = self.log_vectors[: self.log_len]
        return out


def k_for(n: int) -> int:
    """The number of clusters for ``n`` rows: 1 below ``EXACT_MAX_ROWS`` (exact search), else
    ``n / MEMBERS_PER_CLUSTER`` clamped to ``[K_MIN, K_MAX]``."""
    if n < EXACT_MAX_ROWS:
        return 1
    return int(min(K_MAX, max(K_MIN, round(n / MEMBERS_PER_CLUSTER))))


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-d (rows, dim), got shape {x.shape}")
    return np.ascontiguousarray(x)


def _nearest(x: np.ndarray, centroids: np.ndarray, half_norms: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row (squared L2) and the squared distance, in chunks."""
    labels = np.empty(len(x), np.int32)
    sqd = np.empty(len(x), np.float32)
    for s in range(0, len(x), _CHUNK):
        xs = x[s:s + _CHUNK]
        g = xs @ centroids.T
        g -= half_norms  # argmax of x.c - |c|^2/2 == argmin of |x - c|^2
        lab = g.argmax(axis=1)
        labels[s:s + _CHUNK] = lab
        best = g[np.arange(len(xs)), lab]
        sqd[s:s + _CHUNK] = np.einsum("ij,ij->i", xs, xs) - 2.0 * best
    np.maximum(sqd, 0.0, out=sqd)
    return labels, sqd


def fit(vectors: np.ndarray, k: int | None = None, seed: int = 0) -> ClusterModel:
    """Cluster ``vectors`` (rows ``0..n-1``) and build the index; calibrate it if k > 1.
    ``k=None`` follows ``k_for``; ``k=1`` gives an exact (unclustered) model."""
    x = _as_matrix(vectors)
    n, d = x.shape
    k = max(1, min(k_for(n) if k is None else int(k), n))
    if k == 1:
        centroids = (x.mean(axis=0, keepdims=True) if n else np.zeros((1, d))).astype(np.float32)
        labels = np.zeros(n, np.int32)
        diff = x - centroids
        sqd = np.einsum("ij,ij->i", diff, diff)
        del diff
    else:
        centroids = _train(x, k, seed)
        labels, sqd = _nearest(x, centroids, 0.5 * np.einsum("ij,ij->i", centroids, centroids))
    model = _layout(x, centroids, labels, sqd, exact=(k == 1), seed=seed)
    if k > 1:
        model.n_probe, model.beta = calibrate(model, seed=seed)
    return model


def from_assignment(vectors: np.ndarray, labels: np.ndarray, centroids: np.ndarray, *,
                    n_probe: int, beta: float, exact: bool = False, seed: int = 0
                    ) -> ClusterModel:
    """The model of an earlier fit, rebuilt without training or calibrating: ``vectors``
    (rows ``0..n-1``), each row's cluster as the fit assigned it, the fit's centroids and
    calibrated ``n_probe`` / ``beta`` (a caller persisted them). Radii and the drift baseline
    are recomputed from the rows, so they are what ``fit`` measured on the same rows."""
    x, c = _as_matrix(vectors), _as_matrix(centroids)
    lab = np.asarray(labels, np.int32).reshape(-1)
    if c.shape[1] != x.shape[1] or len(lab) != len(x) or not len(c):
        raise ValueError(f"{len(x)} rows of dim {x.shape[1]}, {len(lab)} labels and centroids "
                         f"of shape {c.shape} do not make a model")
    if len(lab) and (lab.min() < 0 or lab.max() >= len(c)):
        raise ValueError(f"labels must lie in [0, {len(c)}), got [{lab.min()}, {lab.max()}]")
    sqd = np.empty(len(x), np.float32)
    for s in range(0, len(x), _CHUNK):
        diff = x[s:s + _CHUNK] - c[lab[s:s + _CHUNK]]
        sqd[s:s + _CHUNK] = np.einsum("ij,ij->i", diff, diff)
    model = _layout(x, c, lab, sqd, exact=exact, seed=seed)
    model.n_probe, model.beta = max(1, min(int(n_probe), model.k)), float(beta)
    return model


def _layout(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray, sqd: np.ndarray, *,
            exact: bool, seed: int) -> ClusterModel:
    """The searchable model: rows sorted by cluster, offsets, radii (see ``ClusterModel``)."""
    k = len(centroids)
    counts = np.bincount(labels, minlength=k)
    order = np.argsort(labels, kind="stable")
    offsets = np.zeros(k + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    radius = np.sqrt(np.bincount(labels, weights=sqd, minlength=k) / np.maximum(counts, 1))
    return ClusterModel(centroids=centroids, vectors=x[order], row_ids=order.astype(np.int64),
                        offsets=offsets, radius=radius.astype(np.float32),
                        fit_mean_sqdist=float(sqd.mean(dtype=np.float64)) if len(x) else 0.0,
                        exact=exact, seed=seed)


def _train(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Centroids: ``LLOYD_ITERS`` Lloyd iterations on a sample of ``TRAIN_PER_CLUSTER * k``
    rows (within ``[TRAIN_MIN, TRAIN_MAX]``), seeded with k distinct sampled rows.

    Plain numpy, not sklearn: on this 2-core box sklearn's k-means++ seeding took ~250 s at
    k = 2000 (one small distance matrix per centre), MiniBatchKMeans ~40 s at k = 800 on 64k
    rows, and a Lloyd step ~1.8x the time of this one (chunked BLAS products, centroid sums
    as one sparse product). Random seeding follows the data's density, which keeps cluster
    sizes (search cost) even; empty clusters are re-seeded with the worst-fitting rows."""
    n = len(x)
    rng = np.random.default_rng(seed)
    m = min(n, max(TRAIN_PER_CLUSTER * k, TRAIN_MIN), TRAIN_MAX)
    sample = x if m == n else x[np.sort(rng.choice(n, m, replace=False))]
    return _lloyd(sample, k, LLOYD_ITERS, rng)


def _lloyd(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.sparse import csr_matrix

    m = len(x)
    c = x[rng.choice(m, k, replace=False)].copy()
    ones = np.ones(m, np.float32)
    rows = np.arange(m)
    for _ in range(iters):
        labels, sqd = _nearest(x, c, 0.5 * np.einsum("ij,ij->i", c, c))
        counts = np.bincount(labels, minlength=k)
        sums = csr_matrix((ones, (labels, rows)), shape=(k, m)) @ x
        full = counts > 0
        c[full] = sums[full] / counts[full, None]
        empty = np.flatnonzero(~full)
        if len(empty):  # re-seed with the rows farthest from their centroid
            c[empty] = x[np.argsort(-sqd, kind="stable")[: len(empty)]]
    return np.ascontiguousarray(c, dtype=np.float32)


def calibrate(model: ClusterModel, k: int = 10, target: float = CALIBRATION_RECALL,
              queries: int = CALIBRATION_QUERIES, seed: int = 0) -> tuple[int, float]:
    """(n_probe, beta) for ``model``; what was measured goes to ``model.calibration``.

    Queries: sampled rows, searched for among the other rows (leave-one-out), and the same
    rows moved off by noise to cosine ``CALIBRATION_NOISE_COS`` (a reworded task is not a
    stored row: it adds its own direction). Truth: exact top-k (numpy).

    n_probe: the fewest probed clusters (nearest centroids first, at least ``N_PROBE_MIN``)
    holding a ``target`` share of the true unfiltered top-k, for each kind of query.

    beta: a filtered walk (``search``) probes those n_probe clusters, then every cluster
    whose bound ``q . centroid + beta * radius`` reaches the k-th best allowed score found
    so far; so it surely visits a neighbour's cluster when that cluster is among the first
    n_probe or its bound reaches the true k-th allowed score. For each filter share of
    ``CALIBRATION_FILTERS`` (random subsets: the k-th allowed score of a 1% filter sits
    ~1,000 ranks deep) the smallest beta of ``BETA_GRID`` for which that holds for a
    ``target`` share of the true top-k, for each kind of query; beta is the largest."""
    n = model.n_fit
    if n <= k + 1:  # too few rows to tell: probe everything
        return model.k, float(BETA_GRID[-1])
    rng = np.random.default_rng(seed + 1)
    qi = rng.choice(n, min(queries, n), replace=False)
    cluster_at = np.repeat(np.arange(model.k, dtype=np.int32), np.diff(model.offsets))
    masks = [None] + [np.flatnonzero(rng.random(n) < f) for f in CALIBRATION_FILTERS]
    noise = np.float32(np.sqrt((1 / CALIBRATION_NOISE_COS**2 - 1) / model.dim))
    seen: list[list[np.ndarray]] = [[] for _ in masks]  # per neighbour: rank, slack, radius
    for s in range(0, len(qi), 16):
        rows = qi[s:s + 16]
        qs = model.vectors[rows]
        moved = qs + noise * rng.standard_normal(qs.shape, dtype=np.float32)
        moved /= np.linalg.norm(moved, axis=1, keepdims=True)
        qs = np.concatenate([qs, moved])
        sc = qs @ model.vectors.T
        sc[np.arange(len(rows)), rows] = -np.inf  # leave the row itself out
        dots = qs @ model.centroids.T
        l2 = np.argsort(np.argsort(-(dots - model._half_norms), axis=1), axis=1)  # rank
        for j, cols in enumerate(masks):
            sub = sc if cols is None else sc[:, cols]
            if sub.shape[1] <= k:
                continue
            top = np.argpartition(sub, sub.shape[1] - k, axis=1)[:, -k:]
            kth = np.take_along_axis(sub, top, axis=1).min(axis=1, keepdims=True)
            c = cluster_at[top if cols is None else cols[top]]
            kind = np.repeat([0, 1], len(rows))[:, None].repeat(k, axis=1)  # row / moved
            seen[j].append(np.stack([np.take_along_axis(l2, c, axis=1).ravel(),
                                     (kth - np.take_along_axis(dots, c, axis=1)).ravel(),
                                     model.radius[c].ravel(), kind.ravel()]))
    # each kind of query (rows, moved rows) must reach the target on its own
    rank, _, _, kind = np.concatenate(seen[0], axis=1)
    needed = max(int(np.quantile(rank[kind == t], target, method="higher")) + 1 for t in (0, 1))
    n_probe = int(min(model.k, max(N_PROBE_MIN, needed)))
    betas = {}
    for f, found in zip(CALIBRATION_FILTERS, seen[1:], strict=True):
        if not found:  # too few rows for this filter to leave k
            continue
        rank, slack, radius, kind = np.concatenate(found, axis=1)
        covered = (rank[None] < n_probe) | (BETA_GRID[:, None] * radius[None] >= slack[None])
        share = np.minimum(covered[:, kind == 0].mean(axis=1), covered[:, kind == 1].mean(axis=1))
        ok = np.flatnonzero(share >= target)
        betas[f] = float(BETA_GRID[ok[0]] if len(ok) else BETA_GRID[-1])
    beta = max(betas.values(), default=float(BETA_GRID[-1]))
    model.calibration = {"queries": 2 * len(qi), "target": target, "n_probe_needed": needed,
                         "beta_by_filter": betas}
    return n_probe, beta


def assign(model: ClusterModel, new_vectors: np.ndarray) -> np.ndarray:
    """Add rows to their nearest cluster, on arrival; returns each new row's cluster.

    The new rows get the row ids ``model.n_rows`` (before the call) onward. They go to the
    append log (which doubles when full: amortized O(1) copies per row) and to their
    cluster's list of log positions; their distance to the centroid feeds ``drift``."""
    x = _as_matrix(new_vectors)
    if x.shape[1] != model.dim:
        raise ValueError(f"vectors have dim {x.shape[1]}, the model {model.dim}")
    m = len(x)
    if m == 0:
        return np.empty(0, np.int32)
    labels, sqd = _nearest(x, model.centroids, model._half_norms)
    lo, hi = model.log_len, model.log_len + m
    if hi > len(model.log_vectors):
        cap = max(hi, 2 * len(model.log_vectors), 1024)
        model.log_vectors = _grow(model.log_vectors, cap)
        model.log_clusters = _grow(model.log_clusters, cap)
    model.log_vectors[lo:hi] = x
    model.log_clusters[lo:hi] = labels
    model.log_len = hi
    model.arrivals_sqdist += float(sqd.sum(dtype=np.float64))
    order = np.argsort(labels, kind="stable")
    cls, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    pos = lo + order
    for c, s, cnt in zip(cls.tolist(), starts.tolist(), counts.tolist(), strict=True):
        a = int(model.app_len[c])
        buf = model.app_pos[c]
        if a + cnt > len(buf):
            buf = model.app_pos[c] = _grow(buf, max(a + cnt, 2 * len(buf), 16))
        buf[a:a + cnt] = pos[s:s + cnt]
        model.app_len[c] = a + cnt
    return labels


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.empty((cap,) + a.shape[1:], a.dtype)
    out[: len(a)] = a
    return out


def needs_refit(model: ClusterModel) -> bool:
    """True when the caller should re-fit (``refit``): a small exact tenant crossed
    ``EXACT_MAX_ROWS``; the tenant grew by ``GROWTH_REFIT``; or at least
    ``DRIFT_MIN_ARRIVALS`` arrivals drifted by more than ``DRIFT_REFIT``."""
    if model.exact:
        return model.n_rows >= EXACT_MAX_ROWS
    if model.growth >= GROWTH_REFIT:
        return True
    return model.log_len >= DRIFT_MIN_ARRIVALS and model.drift > DRIFT_REFIT


def refit(model: ClusterModel, k: int | None = None, seed: int | None = None) -> ClusterModel:
    """A new model over every row of ``model`` (same row numbering)."""
    return fit(model.vectors_by_row(), k=k, seed=model.seed if seed is None else seed)


def search(model: ClusterModel, query: np.ndarray, k: int = 10, n_probe: int | None = None,
           allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows most similar to ``query`` (dot product), best first: (row_ids int64,
    scores float32). Fewer than k only when fewer rows (are allowed to) exist.

    Unfiltered: probe the ``n_probe`` (default: calibrated) clusters with the nearest
    centroids, or every row of an exact model; score their members exactly; keep the top k.

    ``allowed`` (bool mask over row ids; rows past its end are not allowed): a filter must
    not collapse recall, so a fixed candidate set is never post-filtered. Instead:
      * an exact model, or at most ``EXACT_ALLOWED_MAX`` allowed rows: brute force over
        exactly the allowed rows;
      * otherwise a bounded walk: first the ``n_probe`` clusters an unfiltered search
        would probe, then the others in order of the bound ``q . centroid + beta * radius``
        (radius: the cluster's rms distance to its centroid; beta calibrated so the bound
        rarely undershoots the members that matter), in doubling steps, until no unvisited
        cluster's bound reaches the k-th best allowed score found. Only allowed members
        are scored. A selective filter has a lower k-th score, so it walks farther. A
        filter allowing at most ``SKIP_EMPTY_SHARE`` of the rows skips the clusters where
        it allows nothing, so one agent's rows far from the query cost a walk over that
        agent's clusters only. Where a filter allows under ``DENSE_FILTER`` of the visited
        members they are gathered one by one, else whole blocks are scored and masked.
    Either way the result holds min(k, allowed rows) rows."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if q.shape[0] != model.dim:
        raise ValueError(f"query has dim {q.shape[0]}, the model {model.dim}")
    if k <= 0 or model.n_rows == 0:
        return _empty()
    p = model.n_probe if n_probe is None else int(n_probe)
    p = max(1, min(p, model.k))
    if allowed is None:
        if model.exact:
            return _exact_all(model, q, k)
        g = model.centroids @ q
        g -= model._half_norms
        probe = np.argpartition(-g, p - 1)[:p] if p < model.k else np.arange(model.k)
        if model.sizes[probe].sum() < k:  # too few members there: nearest clusters up to k
            order = np.argsort(-g)
            probe = order[: int(np.searchsorted(np.cumsum(model.sizes[order]), k)) + 1]
        return _topk(*_score(model, q, probe, None), k)
    mask = _mask(model, allowed)
    m = int(np.count_nonzero(mask))
    if m == 0:
        return _empty()
    if model.exact or m <= EXACT_ALLOWED_MAX:
        return _exact_rows(model, q, np.flatnonzero(mask), k)
    return _walk(model, q, k, p, mask, m)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty(0, np.float32)


def _mask(model: ClusterModel, allowed: np.ndarray) -> np.ndarray:
    a = np.asarray(allowed)
    if a.dtype != np.bool_ or a.ndim != 1:
        raise ValueError("allowed must be a 1-d boolean mask over row ids")
    n = model.n_rows
    if len(a) >= n:
        return a[:n]
    out = np.zeros(n, np.bool_)
    out[: len(a)] = a
    return out


def _topk(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best, best first; equal scores: the lower row first (as a stable sort of every
    row would give). The k-th best score by ``partition`` (half the cost of
    ``argpartition``), then the rows reaching it: k, or more when some tie with it."""
    n = len(scores)
    if n > k:
        keep = np.flatnonzero(scores >= np.partition(scores, n - k)[n - k])
        ids, scores = ids[keep], scores[keep]
    o = np.lexsort((ids, -scores))[:k]
    return ids[o].astype(np.int64, copy=False), scores[o].astype(np.float32, copy=False)


def _exact_all(model: ClusterModel, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if not model.log_len:
        return _topk(model.row_ids, model.vectors @ q, k)
    ids = np.concatenate([model.row_ids, np.arange(model.n_fit, model.n_rows, dtype=np.int64)])
    sc = np.concatenate([model.vectors @ q, model.log_vectors[: model.log_len] @ q])
    return _topk(ids, sc, k)


def _exact_rows(model: ClusterModel, q: np.ndarray, rows: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    split = int(np.searchsorted(rows, model.n_fit))
    base, app = rows[:split], rows[split:]
    pos = model._pos_of_row[base]
    pos.sort()  # read the vectors in memory order
    ids, sc = [model.row_ids[pos]], [model.vectors[pos] @ q]
    if len(app):
        ids.append(app)
        sc.append(model.log_vectors[app - model.n_fit] @ q)
    return _topk(np.concatenate(ids), np.concatenate(sc), k)


def _score(model: ClusterModel, q: np.ndarray, clusters: np.ndarray, mask: np.ndarray | None,
           sparse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the (allowed) members of ``clusters``. ``sparse``: a selective filter; where
    it allows under ``DENSE_FILTER`` of these clusters' members, only those are gathered and
    scored, else whole blocks are scored (sequential reads) and the rest dropped."""
    ids, sc = [], []
    off, vec, rid = model.offsets, model.vectors, model.row_ids
    blocks = True
    if sparse:
        starts, lens = off[clusters], off[clusters + 1] - off[clusters]
        tot = int(lens.sum())
        pos = np.arange(tot, dtype=np.int64)
        pos += np.repeat(starts - (np.cumsum(lens) - lens), lens)
        ok = mask[rid[pos]]
        if np.count_nonzero(ok) < DENSE_FILTER * tot:
            blocks = False
            pos = pos[ok]
            ids.append(rid[pos])
            sc.append(vec[pos] @ q)
    if blocks:
        for c in clusters.tolist():
            a, b = off[c], off[c + 1]
            if b > a:
                ids.append(rid[a:b])
                sc.append(vec[a:b] @ q)
    for c in clusters[model.app_len[clusters] > 0].tolist():
        lp = model.app_pos[c][: model.app_len[c]]
        if not blocks:
            lp = lp[mask[lp + model.n_fit]]
        ids.append(lp + model.n_fit)
        sc.append(model.log_vectors[lp] @ q)
    if not sc:
        return _empty()
    ids_a, sc_a = np.concatenate(ids), np.concatenate(sc)
    if mask is not None and blocks:
        keep = mask[ids_a]
        ids_a, sc_a = ids_a[keep], sc_a[keep]
    return ids_a, sc_a


def _walk(model: ClusterModel, q: np.ndarray, k: int, step: int, mask: np.ndarray, m: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """The filtered walk (see ``search``). A filter allowing at most ``SKIP_EMPTY_SHARE`` of
    the rows first finds the clusters holding its rows (a scan of the mask, then O(allowed))
    and skips the others, so a filter whose rows sit in a few clusters (one agent) walks
    only those, wherever they are."""
    sparse = m < DENSE_FILTER * model.n_rows
    dots = model.centroids @ q
    if m <= SKIP_EMPTY_SHARE * model.n_rows:
        rows = np.flatnonzero(mask)
        split = int(np.searchsorted(rows, model.n_fit))
        present = np.zeros(model.k, np.bool_)
        present[model._cluster_of_row[rows[:split]]] = True
        present[model.log_clusters[rows[split:] - model.n_fit]] = True
        cand = np.flatnonzero(present)
    else:
        cand = np.arange(model.k)
    if len(cand) > step:  # first the unfiltered probe set: nearest centroids (L2)
        near = np.argpartition(model._half_norms[cand] - dots[cand], step - 1)[:step]
        first, rest = cand[near], np.delete(cand, near)
    else:
        first, rest = cand, cand[:0]
    ids, sc = _topk(*_score(model, q, first, mask, sparse), k)
    ub = dots[rest] + model.beta * model.radius[rest]
    o = np.argsort(-ub)
    rest, neg_ub = rest[o], -ub[o]  # by bound, highest first
    done = 0
    while done < len(rest):
        end = min(len(rest), done + step)
        if len(sc) >= k:  # only clusters whose bound reaches the k-th best can do better
            end = min(end, int(np.searchsorted(neg_ub, -sc[-1], side="right")))
            if end <= done:
                break
        bi, bs = _score(model, q, rest[done:end], mask, sparse)
        done, step = end, 2 * step
        if len(bs):
            ids, sc = _topk(np.concatenate([ids, bi]), np.concatenate([sc, bs]), k)
    return ids, sc
