"""lake.clusters: k-means clusters as an IVF index (exact for small tenants, probed and
filter-aware walks for large ones, incremental assign, re-fit triggers).

Vectors come from a seeded fake embedder: unit vectors drawn around a few hundred topic
centres (clustered like task embeddings), which is all the clustering logic needs.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake import clusters as C

DIM = 384


def fake_embed(n: int, seed: int = 0, topics: int = 300, spread: float = 0.75,
               dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors, topic of each row): rows at cosine ~``spread`` around random topics."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.integers(0, topics, n).astype(np.int32)
    sigma = np.float32(np.sqrt((1 / spread**2 - 1) / dim))
    x = centres[topic] + sigma * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, topic


def brute(x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None):
    s = x @ q
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    top = np.argsort(-s, kind="stable")[:k]
    top = top[np.isfinite(s[top])]
    return top, s[top]


def recall(model, x, queries, k=10, mask=None) -> float:
    s = queries @ x.T  # exact truth for all queries at once
    if mask is not None:
        s[:, ~mask] = -np.inf
    truth = np.argpartition(-s, k, axis=1)[:, :k]
    hits = 0
    for q, want in zip(queries, truth, strict=True):
        got, _ = C.search(model, q, k, allowed=mask)
        hits += len(set(got.tolist()) & set(want.tolist()))
    return hits / (k * len(queries))


def moved(x: np.ndarray, rows: np.ndarray, cos: float = 0.9, seed: int = 1) -> np.ndarray:
    """Queries: rows moved off by noise to cosine ~``cos`` (another wording of a task)."""
    rng = np.random.default_rng(seed)
    s = np.float32(np.sqrt((1 / cos**2 - 1) / x.shape[1]))
    q = x[rows] + s * rng.standard_normal((len(rows), x.shape[1]), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@lru_cache(maxsize=1)
def big() -> tuple[np.ndarray, np.ndarray, C.ClusterModel]:
    x, topic = fake_embed(50_000, seed=3)
    return x, topic, C.fit(x, seed=0)


# -- exact (small tenants) --------------------------------------------------------------------
def test_small_tenant_is_exact_and_equals_brute_force():
    x, _ = fake_embed(3_000, seed=1)
    model = C.fit(x)
    assert model.exact and model.k == 1 and C.k_for(3_000) == 1
    rng = np.random.default_rng(0)
    mask = rng.random(len(x)) < 0.3
    for q in moved(x, rng.choice(len(x), 20, replace=False)):
        for allowed in (None, mask):
            want_ids, want_sc = brute(x, q, 10, allowed)
            ids, sc = C.search(model, q, 10, allowed=allowed)
            assert ids.tolist() == want_ids.tolist()
            np.testing.assert_allclose(sc, want_sc, rtol=1e-5, atol=1e-6)


def test_exact_flag_on_a_clustered_small_model_stays_exact():
    x, _ = fake_embed(2_000, seed=2)
    model = C.fit(x, k=40)  # a caller may cluster a small tenant for its own use ...
    model.exact = True  # ... and still ask for exact search
    for q in moved(x, np.arange(0, 2_000, 100)):
        assert C.search(model, q, 10)[0].tolist() == brute(x, q, 10)[0].tolist()


def test_tied_scores_come_as_brute_force_orders_them():
    x, _ = fake_embed(600, seed=5)
    x[100:400:3] = x[7]  # many rows with one vector: their scores tie, also at the k-th
    x[450] = x[7]
    model = C.fit(x, k=12)
    model.exact = True
    for k in (1, 5, 10, 150):
        for q in (x[7], moved(x, np.array([7]))[0]):
            ids, sc = C.search(model, q, k)
            want_ids, want_sc = brute(x, q, k)
            assert ids.tolist() == want_ids.tolist()
            np.testing.assert_allclose(sc, want_sc, rtol=1e-5, atol=1e-6)


def test_fewer_rows_than_k_and_empty_filters():
    x, _ = fake_embed(5, seed=4)
    model = C.fit(x)
    ids, sc = C.search(model, x[0], 10)
    assert sorted(ids.tolist()) == list(range(5)) and ids[0] == 0 and np.all(np.diff(sc) <= 0)
    none = np.zeros(5, bool)
    assert len(C.search(model, x[0], 10, allowed=none)[0]) == 0
    assert len(C.search(model, x[0], 0)[0]) == 0
    empty = C.fit(np.zeros((0, DIM), np.float32))
    assert empty.n_rows == 0 and len(C.search(empty, x[0], 10)[0]) == 0


def test_input_validation():
    x, _ = fake_embed(100)
    model = C.fit(x)
    with pytest.raises(ValueError):
        C.search(model, np.zeros(DIM + 1, np.float32), 10)
    with pytest.raises(ValueError):
        C.search(model, x[0], 10, allowed=np.ones(100, np.int8))
    with pytest.raises(ValueError):
        C.assign(model, np.zeros((3, DIM - 1), np.float32))


# -- clustered (probed) -----------------------------------------------------------------------
def test_k_rule():
    assert C.k_for(C.EXACT_MAX_ROWS - 1) == 1
    assert C.k_for(100_000) == round(100_000 / C.MEMBERS_PER_CLUSTER)
    assert C.k_for(1_000_000) == round(1_000_000 / C.MEMBERS_PER_CLUSTER)
    assert C.k_for(10**9) == C.K_MAX


def test_fit_layout_is_consistent():
    x, _, model = big()
    assert not model.exact and model.k == C.k_for(len(x))
    assert model.vectors.dtype == np.float32 and model.centroids.dtype == np.float32
    assert sorted(model.row_ids.tolist()) == list(range(len(x)))  # a permutation
    np.testing.assert_array_equal(model.vectors, x[model.row_ids])
    assert model.offsets[0] == 0 and model.offsets[-1] == len(x)
    assert model.sizes.sum() == len(x) and model.fit_mean_sqdist > 0
    # every row sits in the block of its nearest centroid
    c = np.repeat(np.arange(model.k), np.diff(model.offsets))
    d = ((model.vectors[:500, None, :] - model.centroids[None]) ** 2).sum(-1)
    assert (d.argmin(1) == c[:500]).mean() > 0.99  # ties / float rounding aside
    assert C.N_PROBE_MIN <= model.n_probe <= model.k and 0 <= model.beta <= 1
    np.testing.assert_array_equal(model.vectors_by_row(), x)


def test_probed_recall_at_50k():
    x, _, model = big()
    rng = np.random.default_rng(7)
    queries = moved(x, rng.choice(len(x), 100, replace=False))
    assert recall(model, x, queries) >= 0.95
    # probing is not exhaustive: the default touches a small share of the rows
    assert model.n_probe / model.k < 0.25


@pytest.mark.parametrize("walk", [False, True])
def test_filtered_recall_with_1pct_random_mask(monkeypatch, walk):
    x, _, model = big()
    if walk:  # force the bounded walk (1% of 50k rows would be brute-forced)
        monkeypatch.setattr(C, "EXACT_ALLOWED_MAX", 0)
    rng = np.random.default_rng(11)
    mask = rng.random(len(x)) < 0.01
    queries = moved(x, rng.choice(len(x), 60, replace=False))
    for q in queries[:10]:
        ids, _ = C.search(model, q, 10, allowed=mask)
        assert len(ids) == 10 and mask[ids].all()
    assert recall(model, x, queries, mask=mask) >= 0.95


def test_filtered_recall_with_correlated_filter_far_from_the_query(monkeypatch):
    """One 'agent' owns three topics; queries come from elsewhere: the walk must reach the
    agent's clusters instead of returning few or poor rows."""
    monkeypatch.setattr(C, "EXACT_ALLOWED_MAX", 0)
    x, topic, model = big()
    mask = np.isin(topic, [5, 6, 7])
    rng = np.random.default_rng(12)
    elsewhere = rng.choice(np.flatnonzero(~mask), 40, replace=False)
    near = rng.choice(np.flatnonzero(mask), 40, replace=False)
    assert recall(model, x, moved(x, elsewhere), mask=mask) >= 0.95
    assert recall(model, x, moved(x, near), mask=mask) >= 0.95


def test_dense_filter_recall():
    x, _, model = big()
    rng = np.random.default_rng(13)
    mask = rng.random(len(x)) < 0.5
    assert recall(model, x, moved(x, rng.choice(len(x), 40, replace=False)), mask=mask) >= 0.95


# -- incremental adds and re-fit ---------------------------------------------------------------
def test_assign_adds_rows_that_search_finds():
    x, _ = fake_embed(30_000, seed=5)
    model = C.fit(x[:25_000])
    labels = C.assign(model, x[25_000:26_000])
    assert labels.shape == (1_000,) and model.n_rows == 26_000
    C.assign(model, x[26_000:26_001])
    C.assign(model, x[26_001:30_000])
    assert model.n_rows == 30_000 and model.sizes.sum() == 30_000
    np.testing.assert_array_equal(model.vectors_by_row(), x)
    new = np.arange(25_000, 30_000, 250)
    for r in new:  # a new row is its own best match, with and without a filter
        ids, sc = C.search(model, x[r], 5)
        assert ids[0] == r and sc[0] == pytest.approx(1.0, abs=1e-5)
        only_new = np.zeros(model.n_rows, bool)
        only_new[25_000:] = True
        ids, _ = C.search(model, x[r], 5, allowed=only_new)
        assert ids[0] == r and (ids >= 25_000).all()
    rng = np.random.default_rng(3)
    assert recall(model, x, moved(x, rng.choice(30_000, 60, replace=False))) >= 0.95
    short = np.zeros(26_000, bool)  # a mask shorter than the rows: the rest is not allowed
    short[25_500:] = True
    ids, _ = C.search(model, x[29_000], 10, allowed=short)
    assert ((ids >= 25_500) & (ids < 26_000)).all()


def test_needs_refit_on_growth_and_drift():
    x, _ = fake_embed(33_000, seed=6, topics=40)  # ~one topic per cluster: a tight fit
    model = C.fit(x[:21_000])
    drifted = copy.deepcopy(model)
    assert not C.needs_refit(model)
    C.assign(model, x[21_000:31_000])  # 1.48x: similar rows, no drift
    assert model.drift < C.DRIFT_REFIT and not C.needs_refit(model)
    C.assign(model, x[31_000:31_500])  # 1.5x
    assert model.growth >= C.GROWTH_REFIT and C.needs_refit(model)
    refitted = C.refit(model)
    assert refitted.n_rows == 31_500 and refitted.growth == 1 and not C.needs_refit(refitted)
    # drift: arrivals from topics the fit never saw
    other, _ = fake_embed(1_500, seed=99, topics=40)
    C.assign(drifted, other)
    assert drifted.growth < C.GROWTH_REFIT and drifted.drift > C.DRIFT_REFIT
    assert C.needs_refit(drifted)


def test_small_exact_tenant_needs_refit_once_it_crosses_the_threshold():
    x, _ = fake_embed(C.EXACT_MAX_ROWS + 10, seed=8)
    model = C.fit(x[:5_000])
    assert model.exact and not C.needs_refit(model)
    C.assign(model, x[5_000:])
    assert C.needs_refit(model)
    assert not C.refit(model).exact



def test_a_model_rebuilt_from_its_assignment_searches_like_the_fit():
    """What a process start does with a persisted fit: no training, no calibration, the
    same layout, radii, drift baseline and answers (filtered or not, with later arrivals)."""
    x, _ = fake_embed(26_000, seed=10)
    fitted = C.fit(x[:24_000], seed=0)
    labels = np.repeat(np.arange(fitted.k), np.diff(fitted.offsets))[np.argsort(fitted.row_ids)]
    again = C.from_assignment(x[:24_000], labels, fitted.centroids, n_probe=fitted.n_probe,
                              beta=fitted.beta, exact=fitted.exact, seed=fitted.seed)
    assert (again.k, again.n_probe, again.beta, again.exact) == \
        (fitted.k, fitted.n_probe, fitted.beta, fitted.exact)
    np.testing.assert_array_equal(again.offsets, fitted.offsets)
    np.testing.assert_array_equal(again.row_ids, fitted.row_ids)
    np.testing.assert_allclose(again.radius, fitted.radius, rtol=1e-4)
    assert again.fit_mean_sqdist == pytest.approx(fitted.fit_mean_sqdist, rel=1e-4)
    for m in (fitted, again):
        C.assign(m, x[24_000:])
    np.testing.assert_array_equal(again.log_clusters[:again.log_len],
                                  fitted.log_clusters[:fitted.log_len])
    mask = np.random.default_rng(1).random(26_000) < 0.05
    for q in moved(x, np.arange(0, 26_000, 1_300)):
        for allowed in (None, mask):
            a, b = C.search(fitted, q, 10, allowed=allowed), C.search(again, q, 10,
                                                                      allowed=allowed)
            assert a[0].tolist() == b[0].tolist()
    with pytest.raises(ValueError):
        C.from_assignment(x[:10], np.zeros(9, np.int32), fitted.centroids, n_probe=4, beta=0.1)
    with pytest.raises(ValueError):
        C.from_assignment(x[:10], np.full(10, fitted.k), fitted.centroids, n_probe=4, beta=0.1)

# -- properties --------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def small() -> tuple[np.ndarray, C.ClusterModel]:
    x, _ = fake_embed(3_000, seed=9, topics=40)
    model = C.fit(x[:2_500], k=30)  # clustered although small, to exercise the walk
    C.assign(model, x[2_500:])
    return x, model


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), share=st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.5, 1.0]),
       k=st.integers(0, 40), n_probe=st.integers(1, 40), mask_len=st.integers(0, 3_200),
       exact_max=st.sampled_from([0, 1_000]))
def test_search_never_returns_a_disallowed_row_nor_more_than_k(seed, share, k, n_probe,
                                                               mask_len, exact_max):
    x, model = small()
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(DIM).astype(np.float32)
    q /= np.linalg.norm(q)
    mask = rng.random(mask_len) < share
    old = C.EXACT_ALLOWED_MAX
    C.EXACT_ALLOWED_MAX = exact_max
    try:
        for allowed in (None, mask):
            ids, sc = C.search(model, q, k, n_probe=n_probe, allowed=allowed)
            assert len(ids) == len(sc) <= k and ids.dtype == np.int64
            assert len(set(ids.tolist())) == len(ids)
            assert ((ids >= 0) & (ids < model.n_rows)).all()
            np.testing.assert_allclose(sc, x[ids] @ q, rtol=1e-5, atol=1e-5)
            assert np.all(np.diff(sc) <= 0)
            if allowed is None:
                assert len(ids) == min(k, model.n_rows)
            else:
                assert all(i < len(mask) and mask[i] for i in ids.tolist())
                if share >= 0.001 and k:  # a filter returns k rows whenever k are allowed
                    assert len(ids) == min(k, int(np.count_nonzero(mask[:model.n_rows])))
    finally:
        C.EXACT_ALLOWED_MAX = old
