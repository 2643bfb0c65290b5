"""lake.index.SharedScans: concurrent searches share a scan, and lose nothing doing so."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lake import clusters as C
from lake.index import SharedScans


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 64), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _wait_for(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


def test_queries_queued_during_a_scan_share_the_next_and_each_gets_its_own_answer():
    x = _vectors(500, 1)
    model = C.fit(x, k=1)
    qs = _vectors(6, 2)
    scans = SharedScans()
    first_started, release = threading.Event(), threading.Event()
    batches: list[int] = []

    def scan(queries: np.ndarray, k: int):
        batches.append(len(queries))
        if len(batches) == 1:  # hold the first scan until five more queries queue
            first_started.set()
            release.wait(10)
        return C.search_batch(model, queries, k)

    got: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def ask(i: int, k: int) -> None:
        got[i] = scans.search(scan, qs[i], k)

    threads = [threading.Thread(target=ask, args=(0, 3))]
    threads[0].start()
    assert first_started.wait(10)
    threads += [threading.Thread(target=ask, args=(i, 3 + i)) for i in range(1, 6)]
    for t in threads[1:]:
        t.start()
    _wait_for(lambda: len(scans._queue) == 5)
    release.set()
    for t in threads:
        t.join(10)
    assert batches == [1, 5] and (scans.scans, scans.queries) == (2, 6)
    for i in range(6):  # its own k, its own rows: as a search of it alone
        want_ids, want_sc = C.search(model, qs[i], 3 + (i > 0) * i)
        assert got[i][0].tolist() == want_ids.tolist()
        np.testing.assert_allclose(got[i][1], want_sc, rtol=1e-5, atol=1e-6)


def test_a_failed_scan_fails_its_batch_and_the_next_query_scans_again():
    x = _vectors(100, 3)
    model = C.fit(x, k=1)
    scans = SharedScans()
    calls = []

    def scan(queries: np.ndarray, k: int):
        calls.append(len(queries))
        if len(calls) == 1:
            raise MemoryError("no room for the scores")
        return C.search_batch(model, queries, k)

    with pytest.raises(MemoryError, match="no room"):
        scans.search(scan, x[0], 5)
    ids, _ = scans.search(scan, x[0], 5)
    assert ids[0] == 0 and calls == [1, 1] and not scans._busy


def _tenant(n: int, seed: int):
    from lake.index import Row, TenantIndex

    from .test_clusters import fake_embed  # unit vectors around topics, like task vectors

    x, _ = fake_embed(n, seed=seed, topics=60)
    idx = TenantIndex("t", x.shape[1])
    idx.add([Row(f"t{i}", f"task {i}", f"h{i}", True, 1.0, "a", "1", (), None, None, ())
             for i in range(n)], x)
    idx.fit()
    return idx, x


def test_search_is_exact_up_to_exact_search_rows_then_probes_the_clusters(monkeypatch):
    """A small tenant reads every vector; past EXACT_SEARCH_ROWS its k-means clusters (the
    same kinds of task) are probed: fewer vectors read, the same neighbours nearly always."""
    from lake import index
    from lake.index import Filters

    monkeypatch.setattr(index, "EXACT_SEARCH_ROWS", 400)
    small, _ = _tenant(400, 5)
    assert small.model.exact and small.scan_rows(Filters()) == 400
    big, x = _tenant(1_600, 6)
    m = big.model
    assert not m.exact and m.k == 40 and big.scan_rows(Filters()) < 1_600 // 2
    from .test_clusters import moved

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
    from lake import index
    from lake.index import Filters, StoredFit

    monkeypatch.setattr(index, "EXACT_SEARCH_ROWS", 10_000)  # the fit is made exact ...
    old, x = _tenant(1_600, 6)
    assert old.model.exact and old.model.n_probe >= 4
    monkeypatch.setattr(index, "EXACT_SEARCH_ROWS", 400)  # ... and restored under the new rule
    fresh, _ = _tenant(0, 6)
    fresh.add(old.rows, x)
    fresh.restore(StoredFit(np.arange(1_600), old.labels, old.model.centroids,
                            old.model.n_probe, old.model.beta, True, 0, old.fitted_at))
    assert not fresh.model.exact and fresh.scan_rows(Filters()) < 1_600 // 2
    assert fresh.search(x[7], 1, Filters(), 0)[0].tolist() == [7]
