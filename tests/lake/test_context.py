"""The semantic cache on a real lake with the real model (all-MiniLM-L6-v2)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake import InvalidArgument, Lake, NotFound
from lake.context import ContextService
from lake.records import now_us


@pytest.fixture(scope="module")
def dev_cache(tmp_path_factory, dev_records, minilm):
    lake = Lake.open(str(tmp_path_factory.mktemp("ctx") / "lake"))
    lake.ingest(dev_records)
    cs = ContextService(lake, embedder=minilm)
    yield cs
    cs.close()
    lake.close()



def _runs(*tasks: str, tenant_prefix: str = "", **kw) -> list[dict]:
    return [{"trajectory_id": f"{tenant_prefix}r{i}", "task": t,
             "steps": [{"kind": "tool", "name": "search"}, {"kind": "tool", "name": "book"}],
             "outcome": {"success": True}, **kw} for i, t in enumerate(tasks)]


def test_answer_has_every_documented_field(dev_cache, dev_records):
    a = dev_cache.get_context("default", {"text": dev_records[0]["meta"]["first_user_message"]})
    assert {"context_id", "verdict", "reason", "cluster", "neighbors", "fused",
            "provenance"} <= set(a)
    assert a["context_id"].startswith("ctx_") and a["verdict"] in ("exact", "hit", "similar",
                                                                     "miss")
    assert {"id", "size", "success_rate", "hit_threshold", "label"} <= set(a["cluster"])
    assert len(a["neighbors"]) == 5
    for n in a["neighbors"]:
        assert {"trajectory_id", "task", "similarity", "success", "tools"} <= set(n)
    assert {"plans", "tools", "pitfalls", "expected", "runs", "success_rate", "sources",
            "feedback"} <= set(a["fused"])
    assert {"lake_version", "embedder", "sources", "neighbors"} <= set(a["provenance"])
    sims = [n["similarity"] for n in a["neighbors"]]
    assert sims == sorted(sims, reverse=True)


def test_retrieval_by_another_wording_of_the_task(dev_cache, dev_records):
    """Acceptance: >= 90% of retail runs find their task in the top 5 by first user message."""
    meta = {r["trajectory_id"]: r["meta"] for r in dev_records}
    retail = [r for r in dev_records if r["meta"]["domain"] == "retail"]
    dev_cache.embed_queries("default", [r["meta"]["first_user_message"] for r in retail])
    found = 0
    for r in retail:
        a = dev_cache.get_context("default", {"text": r["meta"]["first_user_message"]})
        found += any(meta[n["trajectory_id"]]["canonical_task_id"] ==
                     r["meta"]["canonical_task_id"] for n in a["neighbors"])
    assert found / len(retail) >= 0.9


def test_exact_on_the_same_task_text_even_reworded_in_case_and_spaces(dev_cache, dev_records):
    task = dev_records[3]["task"]
    a = dev_cache.get_context("default", {"text": "  " + task.upper().replace(" ", "   ")})
    assert a["verdict"] == "exact"
    assert a["neighbors"][0]["task"] == task


def test_swapped_route_is_never_a_hit(cache):
    cache.lake.ingest(_runs("Book a flight from NYC to SF on May 3"))
    a = cache.get_context("default", {"text": "Book a flight from SF to NYC on May 3"})
    assert a["neighbors"][0]["similarity"] > 0.9  # the model alone cannot tell them apart
    assert a["verdict"] == "similar" and "differ" in a["reason"] or "role" in a["reason"]


def test_paraphrase_with_equal_slots_is_a_hit(cache):
    cache.lake.ingest(_runs("Book a flight from NYC to SF on May 3"))
    a = cache.get_context("default", {"text": "book a flight from NYC to SF on May 3, please"})
    assert a["verdict"] == "hit", a["reason"]


def test_failed_near_duplicate_is_similar_not_hit(cache):
    runs = _runs("Book a flight from NYC to SF on May 3")
    runs[0]["outcome"] = {"success": False}
    cache.lake.ingest(runs)
    a = cache.get_context("default", {"text": "book a flight from NYC to SF on May 3, please"})
    assert a["verdict"] == "similar" and "failed" in a["reason"]


def test_retracted_and_expired_are_never_served(cache):
    tasks = [f"Cancel order #{100 + i} and refund it to the card" for i in range(12)]
    runs = _runs(*tasks)
    runs[1]["expires_at"] = "2001-01-01T00:00:00Z"
    runs[2]["expires_at"] = "2999-01-01T00:00:00Z"
    cache.lake.ingest(runs)
    cache.index("default")
    cache.retract("default", ["r0"], "bad plan")
    cache.lake.retract(["r3"], "bad plan")  # not through the cache: it learns of it too
    gone = {"r0", "r1", "r3"}
    for q in tasks + ["refund a cancelled order"]:
        for flt in ({}, {"success_only": True}):
            a = cache.get_context("default", {"text": q, "k": 12, "filters": flt})
            served = {n["trajectory_id"] for n in a["neighbors"]} | set(a["fused"]["sources"])
            assert not served & gone
            assert "r2" in {n["trajectory_id"] for n in a["neighbors"]}
    assert cache.lake.sql("select count(*) from trajectories where retracted_at is not null "
                          "and retract_reason = 'bad plan'").fetchall() == [(2,)]
    with pytest.raises(NotFound):
        cache.retract("default", ["nope"], "x")
    with pytest.raises(InvalidArgument, match="reason"):
        cache.retract("default", ["r5"], " ")


def test_fused_sources_follow_retractions_and_expiry_between_queries(cache):
    cache.embedding.embed(["warm up"], persisted=False)  # the model loads before the clock
    soon = now_us() + 4_000_000  # the steps before the sleep take well under 4 s
    runs = _runs(*["Cancel order #7 and refund it to the card"] * 6)
    runs[4]["expires_at"] = datetime.fromtimestamp(soon / 1e6, UTC).isoformat()
    cache.lake.ingest(runs)

    def sources() -> set[str]:
        return set(cache.get_context("default", {"text": "Refund order #7", "k": 3})
                   ["fused"]["sources"])

    assert sources() == sources() == {f"r{i}" for i in range(6)}  # the second: remembered
    cache.retract("default", ["r0"], "bad plan")
    assert sources() == {"r1", "r2", "r3", "r4", "r5"}
    time.sleep(max(0.0, (soon - now_us()) / 1e6) + 0.05)
    assert sources() == {"r1", "r2", "r3", "r5"}


WORDS = ["refund", "order", "flight", "hotel", "cancel", "book", "upgrade", "seat", "card",
         "return", "shoes", "laptop", "paris", "tokyo", "monday", "invoice"]


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(a=st.lists(st.lists(st.sampled_from(WORDS), min_size=2, max_size=6).map(" ".join),
                  min_size=1, max_size=6),
       b=st.lists(st.lists(st.sampled_from(WORDS), min_size=2, max_size=6).map(" ".join),
                  min_size=1, max_size=6),
       query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
       success_only=st.booleans())
def test_a_tenant_never_sees_another_tenants_trajectories(cache, a, b, query, success_only):
    cache.lake.ingest(_runs(*a, tenant_prefix="A-"), tenant="tenant-a")
    cache.lake.ingest(_runs(*b, tenant_prefix="B-"), tenant="tenant-b")
    cache._indexes.clear()  # reload from the lake: what is stored is what is isolated
    for tenant, prefix in (("tenant-a", "A-"), ("tenant-b", "B-")):
        ans = cache.get_context(tenant, {"text": query, "k": 20,
                                         "filters": {"success_only": success_only}})
        ids = {n["trajectory_id"] for n in ans["neighbors"]} | set(ans["fused"]["sources"])
        assert all(i.startswith(prefix) for i in ids), (tenant, ids)


def test_feedback_on_a_false_hit_raises_the_cluster_threshold(cache):
    cache.lake.ingest(_runs("Book a flight from NYC to SF on May 3"))
    q = {"text": "book a flight from NYC to SF on May 3, please"}
    first = cache.get_context("default", q)
    assert first["verdict"] == "hit"
    reply = cache.report("default", first["context_id"], used=True, success=False)
    assert reply["hit_threshold"] > first["cluster"]["hit_threshold"]
    again = cache.get_context("default", q)
    assert again["verdict"] == "similar"
    assert cache.lake.sql("select used, success, verdict from feedback").fetchall() == \
        [(True, False, "hit")]
    with pytest.raises(NotFound):
        cache.report("default", "ctx_unknown", used=True)
    with pytest.raises(NotFound):  # another tenant cannot report on it
        cache.report("other", first["context_id"], used=True)


def test_filters_and_vector_queries(cache, minilm):
    runs = _runs("refund order 1", "refund order 2", "refund order 3")
    runs[1]["outcome"] = {"success": False}
    runs[2]["agent"] = "bot-b"
    cache.lake.ingest(runs)
    got = cache.get_context("default", {"text": "refund an order", "filters": {
        "success_only": True}})
    assert {n["trajectory_id"] for n in got["neighbors"]} == {"r0", "r2"}
    got = cache.get_context("default", {"text": "refund an order", "filters": {"agent": "bot-b"}})
    assert [n["trajectory_id"] for n in got["neighbors"]] == ["r2"]
    v = minilm.embed(["refund order 2"])[0]
    got = cache.get_context("default", {"vector": v.tolist(), "k": 1})
    assert got["neighbors"][0]["trajectory_id"] == "r1" and got["verdict"] == "similar"
    for bad, field in (({"vector": [0.1] * 5}, "vector"), ({"vector": [float("nan")] * 384},
                       "vector"), ({"text": ""}, "text"), ({"text": "x", "k": 0}, "k"),
                       ({"text": "x", "vector": v.tolist()}, "text"),
                       ({"text": "x", "filters": {"colour": "red"}}, "filters")):
        with pytest.raises(InvalidArgument) as e:
            cache.get_context("default", bad)
        assert e.value.field == field


def test_recluster_is_a_version_and_clusters_are_sql_tables(dev_cache):
    res = dev_cache.recluster("default")
    assert res["clusters"] >= 2 and res["rows"] == 240
    lake = dev_cache.lake
    assert lake.versions()[-1].operation == "recluster"
    assert lake.sql("select count(*), sum(size) from clusters").fetchall() == \
        [(res["clusters"], 240)]
    assert lake.sql("select count(distinct trajectory_id) from cluster_members").fetchall() == \
        [(240,)]
    # each label is its nearest member's task; each rate its members' known outcomes
    assert lake.sql("""
        with m as (select m.cluster_id, t.task, t.success, row_number() over (
                       partition by m.cluster_id order by m.similarity desc) as nearest
                   from cluster_members m join trajectories t using (tenant, trajectory_id))
        select count(*) from clusters c where c.label is distinct from (
            select left(task, 200) from m where m.cluster_id = c.cluster_id and nearest = 1)
        or abs(c.success_rate - (select avg(success::int) from m
                                 where m.cluster_id = c.cluster_id)) > 1e-9
        or c.success_rate is null""").fetchall() == [(0,)]
    dev_cache.get_context("default", {"text": "refund my order"})
    dev_cache.flush_log()
    assert lake.sql("select count(*) from contexts").fetchall()[0][0] >= 1


def test_a_query_is_not_faster_for_a_text_another_tenant_stored_or_asked(cache):
    """The embedding cache is kept apart per tenant for queries: whether a text skips the
    model must not tell tenant A that tenant B stored or asked it (a timing oracle)."""
    cache.lake.ingest(_runs("Refund order #88 to the gift card"), tenant="bravo")
    cache.get_context("bravo", {"text": "Refund order #88 to the gift card"})
    cache.get_context("bravo", {"text": "bravo's private question"})
    cache.lake.ingest(_runs("Book a flight"), tenant="acme")
    cache.index("acme")  # its own tasks embedded
    before = cache.embedding.model_texts
    for text in ("Refund order #88 to the gift card", "bravo's private question"):
        cache.get_context("acme", {"text": text})
    assert cache.embedding.model_texts == before + 2  # both ran the model for acme
    cache.get_context("acme", {"text": "bravo's private question"})
    assert cache.embedding.model_texts == before + 2  # acme's own repeat skips it


def test_a_first_recluster_embeds_in_chunks_and_fits_once(tmp_path, dev_records, minilm,
                                                          monkeypatch):
    """`lake recluster` on a lake never served: the load embeds the tasks in chunks, each
    persisted when done (a load killed midway resumes after it), shows progress, and fits
    once: one version, not the load's fit and then the recluster's."""
    import lake.context as ctxmod
    from lake.records import task_hash

    monkeypatch.setattr(ctxmod, "EMBED_CHUNK", 16)
    recs = dev_records[:60]
    distinct = len({task_hash(r["task"]) for r in recs})
    assert distinct > 32
    with Lake.open(str(tmp_path / "lake")) as lake:
        lake.ingest(recs)
        cs = ContextService(lake, embedder=minilm)
        real, calls = cs.embedding.embed_hashed, []

        def dies_on_the_second_chunk(*a, **kw):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("killed")
            return real(*a, **kw)

        with monkeypatch.context() as m:
            m.setattr(cs.embedding, "embed_hashed", dies_on_the_second_chunk)
            with pytest.raises(RuntimeError):
                cs.recluster("default")
        assert lake.store.dataset("_embeddings").count_rows() == 16  # the first chunk kept
        versions, seen = len(lake.versions()), []
        res = cs.recluster("default", progress=lambda done, total: seen.append((done, total)))
        left = distinct - 16
        assert seen[-1] == (left, left) and len(seen) == -(-left // 16)
        assert len(lake.versions()) == versions + 1
        assert (lake.versions()[-1].operation, lake.versions()[-1].version) == \
            ("recluster", res["version"])
        assert res["rows"] == len(recs) and res["seconds"] > 0
        assert lake.store.dataset("_embeddings").count_rows() == distinct
        cs.close()


def _same_answers(a: dict, b: dict) -> None:
    assert (a["verdict"], a["reason"], a["cluster"]) == (b["verdict"], b["reason"], b["cluster"])
    assert [(n["trajectory_id"], n["cluster"]) for n in a["neighbors"]] == \
        [(n["trajectory_id"], n["cluster"]) for n in b["neighbors"]]
    assert [n["similarity"] for n in a["neighbors"]] == \
        pytest.approx([n["similarity"] for n in b["neighbors"]], abs=1e-5)
    def fused(x: dict) -> dict:  # ties come in DuckDB's group order (and the top plans are
        f = {k: sorted(map(repr, v)) if isinstance(v, list) else v  # cut among ties): lists
             for k, v in x["fused"].items() if k != "feedback"}  # as sets, plans by score
        f["plans"] = [(p["support"], p["success_rate"], p["score"]) for p in x["fused"]["plans"]]
        return f

    assert fused(a) == fused(b)


def test_a_restart_loads_the_persisted_clusters_instead_of_refitting(tmp_path, dev_records,
                                                                      minilm, monkeypatch):
    """The fit is persisted; a new process loads it (fitted_at stays, no recluster version),
    assigns rows committed after it to their nearest centroid as on arrival, and answers as
    before the restart. It refits only when the fit is stale: grown 1.5x, or a member's task
    text changed."""
    from lake.index import TenantIndex

    path = str(tmp_path / "lake")
    recs = [r for r in dev_records if r["meta"]["domain"] == "retail"][:75]
    queries = [{"text": r["meta"]["first_user_message"], "k": 5} for r in recs[::10]]
    queries += [{"text": recs[1]["task"]}, {"text": "cancel my order", "k": 3,
                                             "filters": {"success_only": True}}]

    def answers(cs: ContextService) -> list[dict]:
        return [cs.get_context("default", q) for q in queries]

    with Lake.open(path) as lake:
        lake.ingest(recs[:50])
        cs = ContextService(lake, embedder=minilm)
        cs.index("default")  # fitted on first use, and persisted
        cs.wait_indexed(lake.ingest(recs[50:60]).lsn)  # after the fit: assigned on arrival
        idx = cs.index("default")
        fitted_at, k, size = idx.fitted_at, idx.model.k, idx.size
        labels = {r.trajectory_id: int(c) for r, c in zip(idx.rows, idx.labels, strict=True)}
        before, versions = answers(cs), len(lake.versions())
        cs.close()
    assert size == 60 and idx.fitted_rows == 50

    def no_fit(self, seed=0):
        raise AssertionError("the index was refitted at start")

    with Lake.open(path) as lake, monkeypatch.context() as m:
        m.setattr(TenantIndex, "fit", no_fit)
        cs = ContextService(lake, embedder=minilm)
        after = answers(cs)
        idx = cs.index("default")
        assert (idx.fitted_at, idx.model.k, idx.size, idx.fitted_rows) == (fitted_at, k, 60, 50)
        assert {r.trajectory_id: int(c) for r, c in zip(idx.rows, idx.labels, strict=True)} \
            == labels
        assert len(lake.versions()) == versions  # nothing was written
        cs.close()
    for a, b in zip(before, after, strict=True):
        _same_answers(a, b)

    with Lake.open(path) as lake:  # grown 1.5x since the fit, while no cache ran: refit
        lake.ingest(recs[60:75])
        cs = ContextService(lake, embedder=minilm)
        idx = cs.index("default")
        assert idx.fitted_at > fitted_at and idx.fitted_rows == 75
        assert lake.versions()[-1].operation == "recluster"
        fitted_at = idx.fitted_at
        cs.close()
    with Lake.open(path) as lake:  # a member's task text changed: its vector is not the fit's
        lake.ingest([{**recs[3], "task": "Exchange the blue kettle for a red one"}])
        cs = ContextService(lake, embedder=minilm)
        assert cs.index("default").fitted_at > fitted_at
        cs.close()


def test_embedding_is_never_repeated_for_the_same_text(cache):
    cache.lake.ingest(_runs("Refund order #77", "refund   ORDER #77"))  # same normalized text
    cache.index("default")
    cache.wait_indexed(cache.lake.writer.lag["applied_lsn"])  # the background indexer is idle
    calls = cache.embedding.model_texts
    cache.get_context("default", {"text": "Refund order #77"})
    cache.get_context("default", {"text": "REFUND order #77"})
    # once for the tenant's queries (kept apart from task vectors, which every tenant's
    # share: no timing oracle), then reused for the other wording
    assert cache.embedding.model_texts == calls + 1
    vecs = cache.embed_tasks(["h1", "h1"], ["some new text", "some new text"])
    assert np.allclose(vecs[0], vecs[1]) and cache.embedding.model_texts == calls + 2


def test_answer_now_answers_from_memory_or_says_it_would_wait(cache, minilm):
    """What a server's event loop may ask: a vector query against a loaded, unlocked index
    with fresh fused stats is answered (the same answer as get_context); anything that
    would wait (a text to embed, an index not loaded, an index a re-fit holds, stale fused
    stats) gets None, and get_context answers it."""
    import threading

    from lake.context import Query

    cache.lake.ingest(_runs("refund order 1", "cancel order 2"))
    v = minilm.embed(["refund order 1"])[0]
    assert cache.answer_now("default", Query(vector=v)) is None  # not loaded yet
    slow = cache.get_context("default", {"vector": v.tolist()})
    now = cache.answer_now("default", Query(vector=v))
    assert now is not None and now["neighbors"] == slow["neighbors"]
    assert now["fused"] == slow["fused"] and now["verdict"] == slow["verdict"]
    assert cache.answer_now("default", Query(text="refund order 1")) is None
    idx = cache.index("default")
    held, release = threading.Event(), threading.Event()

    def refit() -> None:
        with idx.lock:
            held.set()
            release.wait(10)
    t = threading.Thread(target=refit)
    t.start()
    held.wait(10)
    try:
        assert cache.answer_now("default", Query(vector=v)) is None
    finally:
        release.set()
        t.join()
    cache.fused.drop("default")  # the tenant changed: fused stats are due (at once)
    assert cache.answer_now("default", Query(vector=v)) is None
    assert cache.get_context("default", {"vector": v.tolist()})["neighbors"]
    assert cache.answer_now("default", Query(vector=v)) is not None


def test_answer_now_leaves_big_scans_to_the_pool(cache, minilm, monkeypatch):
    """A search reading more than LOOP_SCAN_ROWS vectors would stall an event loop for as
    long: answer_now declines it and get_context answers. A tag filter (a pass over the rows
    in Python) and a filtered walk of a clustered index count as reading every row."""
    from lake import context as contextmod
    from lake.context import Query
    from lake.index import Filters

    cache.lake.ingest(_runs("refund order 1", "cancel order 2"))
    v = minilm.embed(["refund order 1"])[0]
    assert cache.get_context("default", {"vector": v.tolist()})["neighbors"]
    idx = cache.index("default")
    assert idx.scan_rows(Filters()) == 2  # small: exact, every row
    assert idx.scan_rows(Filters(tags=("x",))) == 20
    assert cache.answer_now("default", Query(vector=v)) is not None
    monkeypatch.setattr(contextmod, "LOOP_SCAN_ROWS", 19)
    assert cache.answer_now("default", Query(vector=v, filters=Filters(tags=("x",)))) is None
    monkeypatch.setattr(contextmod, "LOOP_SCAN_ROWS", 1)
    assert cache.answer_now("default", Query(vector=v)) is None
    assert cache.get_context("default", {"vector": v.tolist()})["neighbors"]
    monkeypatch.setattr(idx.model, "exact", False)  # clustered: centroids + probed clusters
    m = idx.model
    assert idx.scan_rows(Filters()) == m.k + m.n_probe * -(-m.n_rows // m.k)
    assert idx.scan_rows(Filters(success_only=True)) == m.n_rows


def test_reading_your_writes_waits_for_yours_only(tmp_path, minilm):
    """``wait_indexed(lsn)`` does not commit (nor wait for) writes logged after ``lsn``; an
    ``lsn`` never logged is refused."""
    lake = Lake.open(str(tmp_path / "lake"), flush_interval_ms=60_000)
    cs = ContextService(lake, embedder=minilm)
    try:
        mine = lake.ingest(_runs("book a flight to Paris")).lsn  # waits: committed
        later = lake.ingest(_runs("cancel my order", tenant_prefix="x"), wait=False).lsn
        cs.wait_indexed(mine, timeout=5)
        assert lake.writer.lag["applied_lsn"] == mine < later
        with pytest.raises(InvalidArgument, match="min_lsn") as e:
            cs.wait_indexed(later + 5, timeout=5)
        assert e.value.field == "min_lsn"
    finally:
        cs.close()
        lake.close()


def test_a_report_retried_after_a_restart_counts_once(tmp_path, minilm):
    """The retry of a report whose answer was lost (the server died after storing it) goes
    to a new process: it finds the stored report and stores nothing."""
    path = str(tmp_path / "lake")
    with Lake.open(path) as lake:
        cs = ContextService(lake, embedder=minilm)
        lake.ingest(_runs("Book a flight from NYC to SF on May 3"))
        served = cs.get_context("default", {"text": "book a flight from NYC to SF"})
        assert cs.report("default", served["context_id"], used=True, success=True)["stored"]
        cs.close()
    with Lake.open(path) as lake:
        cs = ContextService(lake, embedder=minilm)
        try:
            cid = served["context_id"]
            assert not cs.report("default", cid, used=True, success=True)["stored"]
            assert cs.report("default", cid, used=True, success=False)["stored"]  # a new one
            assert lake.sql("select success from feedback order by reported_at").fetchall() \
                == [(True,), (False,)]
        finally:
            cs.close()



def test_feedback_keeps_to_its_kind_of_task_when_a_refit_renumbers_clusters(cache):
    """A false hit raises its cluster's threshold. Reloaded (at a refit), the report counts
    for the cluster its context's best neighbour is in now, not the number it was stored
    with (a refit renumbers clusters), and a recluster keeps the raise."""
    cache.lake.ingest(_runs("Book a flight from NYC to SF on May 3", "Cancel my order 5"))
    first = cache.get_context("default", {"text": "book a flight from NYC to SF on May 3!"})
    assert first["verdict"] == "hit"
    was = first["cluster"]["id"]
    raised = cache.report("default", first["context_id"], used=True, success=False)
    assert raised["hit_threshold"] > first["cluster"]["hit_threshold"]
    cache.flush_log()
    cache.feedback.load("default", {"r0": was + 7}.get)  # as if renumbered by a refit
    assert cache.threshold("default", was + 7) == raised["hit_threshold"]
    assert cache.threshold("default", was) == first["cluster"]["hit_threshold"]
    cache.recluster("default")
    again = cache.get_context("default", {"text": "book a flight from NYC to SF on May 3!"})
    assert again["cluster"]["hit_threshold"] == raised["hit_threshold"]
    assert again["verdict"] == "similar"


def test_a_served_context_reaches_sql_soon_on_a_quiet_server(tmp_path, minilm, monkeypatch):
    """Contexts are appended in bulk, but none waits longer than CONTEXT_LOG_SECONDS: on a
    quiet server the feedback of a report still joins its context. Small appends are
    compacted now and then."""
    from lake import context_log, row_buffer

    monkeypatch.setattr(context_log, "CONTEXT_LOG_SECONDS", 0.05)
    monkeypatch.setattr(row_buffer, "COMPACT_EVERY", 4)
    lake = Lake.open(str(tmp_path / "lake"))
    cs = ContextService(lake, embedder=minilm)
    cs.contexts._rows.compact_fragments = 2
    try:
        lake.ingest(_runs("Book a flight from NYC to SF on May 3"))
        for i in range(12):
            served = cs.get_context("default", {"text": f"book a flight to SF, take {i}"})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not lake.sql(
                    "select 1 from contexts where context_id = "
                    f"'{served['context_id']}'").fetchall():
                time.sleep(0.02)
        cs.report("default", served["context_id"], used=True, success=True)
        assert lake.sql("select c.query from feedback f join contexts c using (context_id)"
                        ).fetchall() == [("book a flight to SF, take 11",)]
        assert lake.store.fragments("contexts") <= 4
    finally:
        cs.close()
        lake.close()


def test_an_answer_on_a_new_lake_has_every_fused_field(cache):
    """The README's loop reads ctx["fused"]["plans"]: on a lake with nothing in it yet (a
    new `lake serve` without the sample) that must be [], not a KeyError."""
    got = cache.get_context("default", {"text": "Refund order #7"})
    assert got["verdict"] == "miss"
    assert {k: got["fused"][k] for k in ("plans", "pitfalls", "sources", "tools")} == \
        {"plans": [], "pitfalls": [], "sources": [], "tools": []}
    assert got["fused"]["feedback"] == {"reports_used": 0, "success_rate_when_used": None}
