"""lake.index.TenantIndex: where search is exact, where it probes the clusters."""

from __future__ import annotations

import numpy as np

from lake import index
from lake.index import Filters, Row, StoredFit, TenantIndex

from .test_clusters import fake_embed, moved  # unit vectors around topics, like task vectors


def _tenant(n: int, seed: int) -> tuple[TenantIndex, np.ndarray]:
    x, _ = fake_embed(n, seed=seed, topics=60)
    idx = TenantIndex("t", x.shape[1])
    idx.add([Row(f"t{i}", f"task {i}", f"h{i}", True, 1.0, "a", "1", (), None, None, ())
             for i in range(n)], x)
    idx.fit()
    return idx, x


def test_search_is_exact_up_to_exact_search_rows_then_probes_the_clusters(monkeypatch):
    """A small tenant reads every vector; past EXACT_SEARCH_ROWS its k-means clusters (the
    same kinds of task) are probed: fewer vectors read, the same neighbours nearly always."""
    monkeypatch.setattr(index, "EXACT_SEARCH_ROWS", 400)
    small, _ = _tenant(400, 5)
    assert small.model.exact and small.scan_rows(Filters()) == 400
    big, x = _tenant(1_600, 6)
    m = big.model
    assert not m.exact and m.k == 40 and big.scan_rows(Filters()) < 1_600 // 2
    queries = moved(x, np.arange(0, 1_600, 16))
    hits = 0
    for q in queries:
        want = np.argsort(-(x @ q), kind="stable")[:5]
        got, _ = big.search(q, 5, Filters(), 0)
        hits += len(set(got.tolist()) & set(want.tolist()))
    assert hits / (5 * len(queries)) >= 0.95


def test_a_restored_fit_searches_as_a_new_fit_would(monkeypatch):
    """A fit persisted while search was exact up to 20,000 rows comes back probed when the
    tenant is past EXACT_SEARCH_ROWS (its n_probe was calibrated all the same)."""
    monkeypatch.setattr(index, "EXACT_SEARCH_ROWS", 10_000)  # the fit is made exact ...
    old, x = _tenant(1_600, 6)
    assert old.model.exact and old.model.n_probe >= 4
    monkeypatch.setattr(index, "EXACT_SEARCH_ROWS", 400)  # ... and restored under the new rule
    fresh = TenantIndex("t", x.shape[1])
    fresh.add(old.rows, x)
    fresh.restore(StoredFit(np.arange(1_600), old.labels, old.model.centroids,
                            old.model.n_probe, old.model.beta, True, 0, old.fitted_at))
    assert not fresh.model.exact and fresh.scan_rows(Filters()) < 1_600 // 2
    assert fresh.search(x[7], 1, Filters(), 0)[0].tolist() == [7]
