"""lake.analysis: `compare` (per kind of task, Wilson intervals, regression flags) and the cost
views, on the real dev trajectories in real lakes."""

from __future__ import annotations

import copy
import math
import random
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pytest

from lake import InvalidArgument, Lake, NotFound
from lake.analysis import ALL, compare, cost, natural_key
from lake.schema import CLUSTER_MEMBERS, CLUSTERS, EMBEDDING_DIM

DOMAIN = "meta->>'domain'"
REGRESSED = 2  # the cluster the synthetic version 1.1 got worse on


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Reference Wilson score interval, written out independently of the SQL macro."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half



def test_success_rates_per_domain_match_direct_sql(dev_lake):
    con = dev_lake.connect()
    res = compare(con, "agent", group_by=DOMAIN)
    direct = con.sql(f"""
        SELECT coalesce({DOMAIN}, '(all)') AS g, agent, count(*), count_if(success)::BIGINT,
               avg(success::INT)
        FROM trajectories GROUP BY GROUPING SETS (({DOMAIN}, agent), (agent))""").fetchall()
    assert len(direct) == len(res.rows) == 6  # (all), retail, telecom x two agents
    got = {(r["group"], r["arm"]): r for r in res.rows}
    for g, agent, runs, wins, rate in direct:
        r = got[(g, agent)]
        assert (r["runs"], r["successes"], r["success_rate"]) == (runs, wins, round(rate, 4))
        lo, hi = wilson(wins, runs)
        assert (r["ci_low"], r["ci_high"]) == (round(lo, 4), round(hi, 4))
        assert r["ci_low"] < r["success_rate"] < r["ci_high"]
    assert [r["group"] for r in res.rows] == [ALL, ALL, "retail", "retail", "telecom", "telecom"]
    assert [r["role"] for r in res.rows] == ["A", "B"] * 3
    # the fine-tuned agent (A: first in natural order) is ahead on telecom only
    assert [(r["group"], r["flag"]) for r in res.rows if r["flag"]] == \
        [(ALL, "worse"), ("telecom", "worse")]


def test_without_clusters_the_groups_are_the_domains(dev_lake):
    con = dev_lake.connect()
    default, by_domain = compare(con, "agent"), compare(con, "agent", group_by=DOMAIN)
    assert default.rows == by_domain.rows and default.group_by == "cluster"


def test_every_metric_is_the_per_run_mean_or_median(dev_lake):
    con = dev_lake.connect()
    r = next(r for r in compare(con, "agent", group_by=DOMAIN).rows
             if r["group"] == "retail" and r["arm"] == "gpt-4.1")
    want = con.sql(f"""
        SELECT avg(reward), median(n_steps), avg(cost_usd), avg(tokens_in + tokens_out)
        FROM trajectories WHERE agent = 'gpt-4.1' AND {DOMAIN} = 'retail'""").fetchall()[0]
    assert (r["mean_reward"], r["median_steps"]) == (round(want[0], 4), want[1])
    assert r["cost_usd"] == pytest.approx(want[2], abs=1e-6)
    assert r["tokens"] == pytest.approx(want[3], abs=0.05)
    calls, ms = con.sql(f"""
        SELECT count(*) / count(DISTINCT trajectory_id), sum(duration_ms) / 1000
        FROM steps JOIN trajectories t USING (trajectory_id)
        WHERE t.agent = 'gpt-4.1' AND {DOMAIN} = 'retail' AND kind = 'tool'""").fetchall()[0]
    all_ms = con.sql(f"""SELECT sum(duration_ms) / 1000 / count(DISTINCT trajectory_id)
        FROM steps JOIN trajectories t USING (trajectory_id)
        WHERE t.agent = 'gpt-4.1' AND {DOMAIN} = 'retail'""").fetchall()[0][0]
    assert r["tool_calls"] == pytest.approx(calls, abs=0.005)
    assert r["duration_s"] == pytest.approx(all_ms, abs=0.0005)


def test_the_sql_macro_gives_the_same_rows(dev_lake):
    con = dev_lake.connect()
    res = compare(con, "agent", "gpt-4.1")
    rel = con.sql("FROM compare_runs('agent', 'gpt-4.1')")
    macro = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    assert [(m["group"], m["arm"], m["flag"]) for m in macro] == \
        [(r["group"], r["arm"], r["flag"]) for r in res.rows]
    for m, r in zip(macro, res.rows, strict=True):
        for col in ("runs", "successes", "success_rate", "ci_low", "diff_high", "cost_usd"):
            assert m[col] == pytest.approx(r[col], abs=1e-4), col
    only_b = compare(con, "agent", b=res.rows[1]["arm"])  # A: the first value other than B
    assert only_b.a == "gpt-4.1" and only_b.rows == res.rows
    arms = con.sql("SELECT arm, runs FROM compare_arms('agent') WHERE \"group\" = '(all)' "
                   "ORDER BY arm").fetchall()
    assert [n for _, n in arms] == [120, 120]


# -- a synthetic regression --------------------------------------------------------------
def _versions(dev_records: list[dict]) -> list[dict]:
    """The dev runs twice, as agent 'bot' 1.0 and 1.1; 1.1 loses most of its successes on
    the tasks of cluster REGRESSED and has seeded noise (outcomes flipped both ways) elsewhere."""
    rng = random.Random(11)
    out = []
    for rec in dev_records:
        for version in ("1.0", "1.1"):
            r = copy.deepcopy(rec)
            r["trajectory_id"] = f"{rec['trajectory_id']}@{version}"
            r["agent"], r["agent_version"] = "bot", version
            ok = bool(r["outcome"]["success"])
            if version == "1.1":
                if _cluster(rec) == REGRESSED:
                    ok = ok and rng.random() < 0.3
                elif rng.random() < 0.06:
                    ok = not ok
            r["outcome"] = {"success": ok, "reward": float(ok)}
            out.append(r)
    return out


def _cluster(rec: dict) -> int:
    return sum(map(ord, rec["meta"]["canonical_task_id"])) % 5


def _install_clusters(lk: Lake, records: list[dict], tenant: str = "default") -> None:
    """Cluster rows as `lake recluster` persists them (label NULL), one cluster per task
    family: what a k-means fit gives, without loading the embedding model."""
    ids = [r["trajectory_id"] for r in records]
    cid = [_cluster(r) for r in records]
    k = max(cid) + 1
    sim = [1.0 - (i % 7) / 10 for i in range(len(ids))]
    clusters = pa.table({
        "tenant": [tenant] * k, "cluster_id": pa.array(range(k), pa.int32()),
        "size": [cid.count(c) for c in range(k)], "label": [None] * k,
        "success_rate": pa.array([None] * k, pa.float64()), "hit_threshold": [0.95] * k,
        "stats": pa.array([None] * k, pa.string()),
        "centroid": pa.FixedSizeListArray.from_arrays(
            pa.array(np.zeros(k * EMBEDDING_DIM, np.float32)), EMBEDDING_DIM),
        "fitted_at": pa.array([1_754_000_000_000_000] * k, CLUSTERS.field("fitted_at").type)},
        schema=CLUSTERS)
    members = pa.table({"tenant": [tenant] * len(ids), "trajectory_id": ids,
                        "cluster_id": pa.array(cid, pa.int32()),
                        "similarity": pa.array(sim, pa.float32())}, schema=CLUSTER_MEMBERS)
    lk.replace_tenant_rows(tenant, {"clusters": clusters, "cluster_members": members},
                           operation="recluster", detail={"clusters": k})


@pytest.fixture(scope="module")
def regressed(tmp_path_factory, dev_records):
    records = _versions(dev_records)
    lk = Lake.open(str(tmp_path_factory.mktemp("regressed") / "lake"))
    assert not lk.ingest(records).rejected
    _install_clusters(lk, records)
    yield lk, records
    lk.close()


def test_a_synthetic_regression_is_flagged_on_its_cluster_and_nowhere_else(regressed):
    lk, records = regressed
    res = compare(lk.connect(), "agent_version", "1.0", "1.1")
    groups = [r["group"] for r in res.rows if r["group"] != ALL]
    assert sorted(set(groups)) == [f"cluster {c}" for c in range(5)]  # every kind of task
    assert {r["group"] for r in res.flagged} - {ALL} == {f"cluster {REGRESSED}"}
    assert not [r for r in res.rows if r["flag"] == "better"]
    noisy = [r for r in res.rows if r["role"] == "B" and r["group"] not in
             (ALL, f"cluster {REGRESSED}")]
    assert any(r["diff"] != 0 for r in noisy)  # the other clusters differ, within the interval
    assert all(r["diff_low"] < 0 < r["diff_high"] for r in noisy)
    # labels: the member task nearest the centroid (highest similarity), as the cache has none
    nearest = {c: min((-(1.0 - (i % 7) / 10), rec["trajectory_id"], rec["task"])
                      for i, rec in enumerate(records) if _cluster(rec) == c)[2]
               for c in range(5)}
    for r in res.rows:
        if r["group"] != ALL:
            assert r["label"] == nearest[r["cluster_id"]][:120]
    # defaults: A = first version in natural order, B = the others
    assert compare(lk.connect(), "agent_version").as_dict() == res.as_dict()


def test_grouping_by_domain_ignores_the_clusters(regressed):
    lk, _ = regressed
    res = compare(lk.connect(), "agent_version", group_by=DOMAIN, where="agent = 'bot'")
    assert {r["group"] for r in res.rows} == {ALL, "retail", "telecom"}
    assert all(r["cluster_id"] is None for r in res.rows)


def test_output_does_not_depend_on_ingest_order(tmp_path, regressed):
    lk, records = regressed
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    with Lake.open(str(tmp_path / "other")) as other:
        assert not other.ingest(shuffled).rejected
        _install_clusters(other, records)
        for kw in ({}, {"group_by": DOMAIN}):
            assert compare(other.connect(), "agent_version", **kw).as_dict() == \
                compare(lk.connect(), "agent_version", **kw).as_dict()
        for by in ("agent_version", "tool", "model"):
            assert cost(other.connect(), by) == cost(lk.connect(), by)


def test_compare_runs_with_a_value_no_run_has_says_so(regressed):
    """Not an empty answer, which would read as "no regressions"."""
    lk, records = regressed
    n = len(records) // 2
    for args, absent in (("'1.4.0'", "1.4.0"), ("'1.0', '2.0'", "2.0"), ("'x', b := '1.1'", "x")):
        with pytest.raises(InvalidArgument) as err:
            lk.sql(f"FROM compare_runs('agent_version', {args})")
        assert f"compare_runs: no runs with agent_version = '{absent}'; give a value present: " \
            f"'1.0' ({n} runs), '1.1' ({n} runs)" in str(err.value)
    with pytest.raises(InvalidArgument, match="none, as this tenant has no runs"):
        lk.sql("FROM compare_runs('agent', 'bot')", tenant="nobody")
    assert lk.sql("SELECT count(*) FROM compare_runs('agent_version', '1.0', b := '1.1')"
                  ).fetchall() == [(12,)]  # (all) and 5 clusters, A and B


def test_the_same_ids_in_two_tenants_are_two_runs_each_under_all_tenants(tmp_path, regressed):
    """Keyed by (tenant, trajectory_id): every view and macro, and the documented joins, count
    each tenant's runs once; each tenant's clusters are groups of their own."""
    _, records = regressed
    with Lake.open(str(tmp_path / "twins")) as lk:
        for tenant in ("default", "acme"):
            assert not lk.ingest(records, tenant=tenant).rejected
            _install_clusters(lk, records, tenant)
        one, both = lk.connect(), lk.connect(all_tenants=True)
        for sql in ("SELECT tool, calls, runs FROM cost_by_tool ORDER BY tool",
                    "SELECT s.name, count(*), count(DISTINCT (tenant, trajectory_id)) FROM "
                    "steps s JOIN trajectories t USING (tenant, trajectory_id) "
                    "WHERE s.kind = 'tool' GROUP BY 1 ORDER BY 1",  # README's join
                    "SELECT agent_version, runs FROM cost_by_version ORDER BY 1"):
            assert both.sql(sql).fetchall() == \
                [(r[0], *(2 * n for n in r[1:])) for r in one.sql(sql).fetchall()], sql
        assert both.sql("SELECT count(*) FROM cluster_labels").fetchall() == [(10,)]
        single = compare(one, "agent_version", "1.0", "1.1")
        res = compare(both, "agent_version", "1.0", "1.1")
        got = {(r["group"], r["arm"]): r for r in res.rows}
        assert len(got) == len(res.rows) == 2 * len(single.rows) - 2  # (all): once
        for r in single.rows:
            if r["group"] == ALL:
                assert got[(ALL, r["arm"])]["runs"] == 2 * r["runs"]
                continue
            for tenant in ("default", "acme"):
                g = got[(f"{r['group']} ({tenant})", r["arm"])]
                assert (g["runs"], g["cluster_id"], g["label"], g["flag"]) == \
                    (r["runs"], r["cluster_id"], r["label"], r["flag"])
        assert both.sql("SELECT count(*) FROM compare_runs('agent_version', '1.0', '1.1')"
                        ).fetchall() == [(len(res.rows),)]


def test_natural_order_puts_1_10_after_1_9():
    assert sorted(["1.10", "1.9", "2.0", "1.9.1", "v1"], key=natural_key) == \
        ["1.9", "1.9.1", "1.10", "2.0", "v1"]


# -- errors --------------------------------------------------------------------------------
def test_errors_say_what_is_wrong_and_what_to_do(dev_lake, lake):
    con = dev_lake.connect()
    with pytest.raises(InvalidArgument, match=r"no runs with agent = 'nope'; the values "
                       r"present are 'ft:gpt-4.1.*' \(120 runs\), 'gpt-4.1' \(120 runs\)"):
        compare(con, "agent", "nope")
    with pytest.raises(InvalidArgument, match="--b.*no runs with agent = 'x'"):
        compare(con, "agent", b="x")
    with pytest.raises(InvalidArgument, match=r"every run has agent_version = '\(none\)'"):
        compare(con, "agent_version")
    with pytest.raises(InvalidArgument, match="use one of agent, agent_version, model"):
        compare(con, "tool")
    with pytest.raises(InvalidArgument, match="run_facts view, whose columns are .*cluster"):
        compare(con, "agent", group_by="no_such_column")
    with pytest.raises(InvalidArgument, match="--a and --b are both"):
        compare(con, "agent", "gpt-4.1", "gpt-4.1")
    with pytest.raises(InvalidArgument, match="between 0 and 1"):
        compare(con, "agent", confidence=95)
    with pytest.raises(NotFound, match="no runs match --where"):
        compare(con, "agent", where="n_steps > 100000")
    with pytest.raises(NotFound, match="lake ingest"):
        compare(lake.connect(), "agent")
    with pytest.raises(NotFound, match="lake ingest"):
        cost(lake.connect())
    with pytest.raises(InvalidArgument, match="run_costs view"):
        cost(con, where="nope = 1")


def test_a_wider_confidence_flags_less(dev_lake):
    con = dev_lake.connect()
    r95 = compare(con, "agent", group_by=DOMAIN)
    r999 = compare(con, "agent", group_by=DOMAIN, confidence=0.999)
    for a, b in zip(r95.rows, r999.rows, strict=True):
        if a["ci_low"] is not None:
            assert b["ci_low"] < a["ci_low"] and b["ci_high"] > a["ci_high"]


# -- cost ----------------------------------------------------------------------------------
def test_cost_views_add_up_to_the_direct_sums(dev_lake):
    con = dev_lake.connect()
    total_cost, tin, tout = con.sql("SELECT sum(cost_usd), sum(tokens_in), sum(tokens_out) "
                                    "FROM trajectories").fetchall()[0]
    res = cost(con, "agent")
    assert res["total"]["cost_usd"] == pytest.approx(total_cost, abs=1e-6)
    assert res["total"]["runs"] == 240
    assert (res["total"]["tokens_in"], res["total"]["tokens_out"]) == (tin, tout)
    assert sum(r["cost_usd"] for r in res["rows"]) == pytest.approx(total_cost, abs=1e-5)
    assert [r["agent"] for r in res["rows"]] == ["gpt-4.1", res["rows"][1]["agent"]]  # costliest
    for view in ("cost_by_agent", "cost_by_version", "cost_by_model", "cost_by_day"):
        assert con.sql(f"SELECT sum(cost_usd), sum(runs) FROM {view}").fetchall()[0] == \
            pytest.approx((total_cost, 240))
    tools = cost(con, "tool")["rows"]
    n_tool = con.sql("SELECT count(*) FROM steps WHERE kind = 'tool'").fetchall()[0][0]
    assert sum(r["calls"] for r in tools) == n_tool
    assert con.sql("SELECT sum(calls) FROM cost_by_tool").fetchall()[0][0] == n_tool
    assert [r["calls"] for r in tools] == sorted((r["calls"] for r in tools), reverse=True)
    gpt = cost(con, "tool", where="agent = 'gpt-4.1'")["rows"]
    assert 0 < sum(r["calls"] for r in gpt) < n_tool
    one = cost(con, "day", where="agent = 'gpt-4.1'")
    assert one["total"]["runs"] == 120 and sum(r["runs"] for r in one["rows"]) == 120
    actors = {r["actor"]: r for r in cost(con, "actor")["rows"]}  # the agent's vs the
    assert set(actors) == {"agent", "user"}  # simulated user's steps (tau2-bench)
    steps_cost = con.sql("SELECT sum(cost_usd) FROM steps").fetchall()[0][0]
    assert sum(r["cost_usd"] or 0 for r in actors.values()) == pytest.approx(steps_cost, 1e-5)
    assert 0 < actors["user"]["cost_usd"] < actors["agent"]["cost_usd"]
    assert con.sql("SELECT sum(steps) FROM cost_by_actor").fetchall()[0][0] == \
        con.sql("SELECT count(*) FROM steps").fetchall()[0][0]


def test_bonferroni_widens_every_interval_and_keeps_the_real_regression(regressed):
    lk, _ = regressed
    plain = compare(lk.connect(), "agent_version", "1.0", "1.1")
    res = compare(lk.connect(), "agent_version", "1.0", "1.1", adjust="bonferroni")
    assert (plain.tests, plain.level, plain.adjust) == (6, 0.95, "none")  # 5 clusters + (all)
    assert res.tests == 6 and res.level == pytest.approx(1 - 0.05 / 6)
    z = NormalDist().inv_cdf(0.5 + res.level / 2)
    for p, r in zip(plain.rows, res.rows, strict=True):
        assert (p["group"], p["arm"]) == (r["group"], r["arm"])
        lo, hi = wilson(r["successes"], r["outcomes"], z)
        assert (r["ci_low"], r["ci_high"]) == (round(lo, 4), round(hi, 4))
        assert r["ci_low"] <= p["ci_low"] and r["ci_high"] >= p["ci_high"]
        if r["role"] == "B":
            assert r["diff_low"] <= p["diff_low"] and r["diff_high"] >= p["diff_high"]
    assert {r["group"] for r in res.flagged} <= {r["group"] for r in plain.flagged}
    assert f"cluster {REGRESSED}" in {r["group"] for r in res.flagged}  # 30% kept: still out
    assert res.as_dict()["adjust"] == "bonferroni"
    with pytest.raises(InvalidArgument, match="holm"):
        compare(lk.connect(), "agent_version", adjust="holm")
