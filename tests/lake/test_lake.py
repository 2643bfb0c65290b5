"""The lake on a real temp dir: ingest, idempotence, updates, versions, time travel, SQL."""

from __future__ import annotations

import copy

import pytest

from lake import Lake, NotFound
from lake.errors import AlreadyExists, InvalidArgument


def _traj(tid: str, n: int, **kw) -> dict:
    steps = [{"kind": "tool", "name": f"t{i % 3}", "input": "{}", "output": "ok"} for i in range(n)]
    return {"trajectory_id": tid, "task": f"task {tid}", "steps": steps, **kw}


def test_dev_data_loads_as_is_and_reingest_does_not_duplicate(lake: Lake, dev_records):
    r = lake.ingest(dev_records)
    assert (r.trajectories, r.steps, r.rejected) == (240, 9065, [])
    assert lake.count("trajectories") == 240
    assert lake.count("steps") == 9065
    before = len(lake.versions())
    lake.ingest(dev_records)
    assert lake.count("trajectories") == 240
    assert lake.count("steps") == 9065
    assert len(lake.versions()) == before, "a no-op ingest must not add a version"


def test_unknown_fields_are_kept(lake: Lake, dev_records):
    lake.ingest(dev_records[:3])
    rows = lake.sql("select meta->>'source' as src, meta->'meta'->>'domain' as d, "
                    "meta->>'domain' as domain from trajectories").fetchall()
    assert all(src == "tau2-bench" for src, _, _ in rows)
    assert all(domain in ("retail", "telecom") for _, _, domain in rows)
    attrs = lake.sql("select attributes->>'n_tool_calls' from steps "
                     "where attributes->>'n_tool_calls' is not null").fetchall()
    assert attrs, "step fields we do not model (n_tool_calls) must be kept in attributes"


def test_dev_fields_are_mapped(lake: Lake, dev_records):
    lake.ingest(dev_records[:1])
    rec = dev_records[0]
    llm = next(s for s in rec["steps"] if s.get("tokens_prompt") is not None)
    got = lake.sql(f"select tokens_in, tokens_out, duration_ms from steps "
                   f"where index = {llm['index']}").fetchall()[0]
    assert got == (llm["tokens_prompt"], llm["tokens_completion"], llm["latency_ms"])
    t = lake.sql("select success, reward, status, n_steps, agent from trajectories").fetchall()[0]
    assert t == (rec["outcome"]["success"], rec["outcome"]["reward"],
                 "succeeded" if rec["outcome"]["success"] else "failed", len(rec["steps"]),
                 rec["agent"])


def test_longer_version_updates_shorter_never_regresses(lake: Lake):
    lake.ingest([_traj("a", 2)])
    lake.ingest([_traj("a", 5, outcome={"success": True})])
    assert lake.sql("select n_steps, status from trajectories").fetchall() == [(5, "succeeded")]
    assert lake.count("steps") == 5
    lake.ingest([_traj("a", 3)])  # a stale, shorter version arrives late
    assert lake.sql("select n_steps from trajectories").fetchall() == [(5,)]
    assert lake.count("steps") == 5


def test_batch_keeps_most_progressed_duplicate(lake: Lake):
    lake.ingest([_traj("a", 4), _traj("a", 2), _traj("b", 1)])
    assert sorted(lake.sql("select trajectory_id, n_steps from trajectories").fetchall()) == \
        [("a", 4), ("b", 1)]
    assert lake.count("steps") == 5


def test_tenants_are_isolated(lake: Lake):
    lake.ingest([_traj("x", 1)], tenant="acme")
    lake.ingest([_traj("x", 2)], tenant="globex")
    assert lake.sql("select n_steps from trajectories", tenant="acme").fetchall() == [(1,)]
    assert lake.sql("select n_steps from trajectories", tenant="globex").fetchall() == [(2,)]
    assert lake.count("trajectories") == 0  # the default tenant sees neither
    assert lake.sql("select count(*) from trajectories", all_tenants=True).fetchall() == [(2,)]


def test_large_payloads_stored_once_with_preview(lake: Lake):
    big = "x" * 70_000
    lake.ingest([{"trajectory_id": "p", "task": "t",
                  "steps": [{"kind": "tool", "output": big}, {"kind": "tool", "output": big}]}])
    rows = lake.sql("select length(output), output_ref from steps order by index").fetchall()
    assert rows[0][0] == lake.settings.preview_chars and rows[0][1] == rows[1][1]
    assert lake.sql("select count(*), max(size) from payloads").fetchall() == [(1, 70_000)]
    full = lake.sql(f"select data from payloads where sha256 = '{rows[0][1]}'").fetchall()[0][0]
    assert full == big


def test_tag_ingest_restore_and_versions_history(lake: Lake):
    lake.ingest([_traj("a", 1)])
    lake.tag("before")
    lake.ingest([_traj("b", 2), _traj("c", 3)])
    assert lake.count("trajectories") == 3
    restored = lake.restore("before")
    assert lake.count("trajectories") == 1 and lake.count("steps") == 1
    ops = [v.operation for v in lake.versions()]
    assert ops == ["create", "ingest", "ingest", "restore"]
    assert restored.detail["restored"] == lake.version("before").version
    # nothing is destroyed: the version before the restore is still readable
    assert lake.sql("select count(*) from trajectories", as_of=3).fetchall() == [(3,)]
    # and the lake keeps working after a restore
    lake.ingest([_traj("d", 1)])
    assert lake.count("trajectories") == 2


def test_time_travel_sql_by_version_and_tag(lake: Lake):
    lake.ingest([_traj("a", 1)])
    v = lake.tag("one").version
    lake.ingest([_traj("b", 1)])
    assert lake.sql("select count(*) from trajectories", as_of="one").fetchall() == [(1,)]
    assert lake.sql("select count(*) from trajectories", as_of=v).fetchall() == [(1,)]
    assert lake.sql("select count(*) from trajectories").fetchall() == [(2,)]


def test_bad_refs_and_tags_say_what_to_do(lake: Lake):
    lake.ingest([_traj("a", 1)])
    with pytest.raises(NotFound, match="lake versions"):
        lake.restore("nope")
    with pytest.raises(NotFound, match="versions run from 1"):
        lake.sql("select 1", as_of=99)
    lake.tag("t1")
    assert lake.tag("t1").version == lake.version("t1").version  # a retry: a no-op
    lake.ingest([_traj("b", 1)])
    with pytest.raises(AlreadyExists, match="already exists \\(version 2\\).*--force"):
        lake.tag("t1")  # another version
    lake.tag("t1", force=True)
    with pytest.raises(InvalidArgument):
        lake.tag("has space")
    with pytest.raises(InvalidArgument, match="SQL failed"):
        lake.sql("select * from nowhere")


def test_reopen_sees_everything_and_readonly_cannot_write(lake_dir, dev_records):
    with Lake.open(str(lake_dir)) as lk:
        lk.ingest(dev_records[:10])
    ro = Lake.open(str(lake_dir), readonly=True)
    assert ro.count("trajectories") == 10
    with pytest.raises(Exception, match="read-only"):
        ro.ingest(dev_records[:1])


def test_a_table_a_killed_process_was_creating_is_created_again(tmp_path, dev_records):
    """Killed while Lance created a table (the crash test's first open caught it): the
    table's directory holds only a temporary, empty manifest. Opening the lake creates the
    table instead of failing on it."""
    versions = tmp_path / "lake" / "_tags.lance" / "_versions"
    versions.mkdir(parents=True)
    (versions / "18446744073709551614.manifest#1").write_bytes(b"")
    with Lake.open(str(tmp_path / "lake")) as lk:
        assert lk.store.exists("_tags") and lk.store.dataset("_tags").count_rows() == 0
        lk.ingest(dev_records[:2])
        lk.tag("after-crash")
        assert lk.count("trajectories") == 2


def test_second_writer_gets_a_clear_conflict(lake, lake_dir):
    from lake.errors import Conflict

    with pytest.raises(Conflict, match="in use by another process.*lake ingest PATH "
                                       "--server HOST:PORT"):
        Lake.open(str(lake_dir))


def test_readonly_open_of_missing_lake(tmp_path):
    with pytest.raises(NotFound, match="lake ingest"):
        Lake.open(str(tmp_path / "none"), readonly=True)


def test_rejects_do_not_block_good_records(lake: Lake):
    good = _traj("g", 2)
    bad = copy.deepcopy(good) | {"trajectory_id": "b", "task": ""}
    r = lake.ingest([good, bad, {"task": "x", "steps": [{"kind": "tool", "index": 0},
                                                       {"kind": "tool", "index": 0}]}])
    assert r.trajectories == 1 and len(r.rejected) == 2
    assert r.rejected[0].field == "task" and "empty" in r.rejected[0].reason
    assert r.rejected[1].field == "steps[1].index"
    assert lake.count("trajectories") == 1 and lake.count("steps") == 2


def test_lake_written_by_an_older_schema_opens_and_reads(lake_dir):
    """Columns added to the schema later read as NULL in old versions; readers never write."""
    import lance

    with Lake.open(str(lake_dir)) as lk:  # make it an "old" lake, without retract_reason
        lk.ingest([_traj("a", 1)])
        lk.store.dataset("trajectories").drop_columns(["retract_reason"])
        lk.catalog.commit("ingest", lk.writer.wal.writer_id, lk.writer.lag["applied_lsn"])
    ro = Lake.open(str(lake_dir), readonly=True)
    assert ro.sql("select trajectory_id, retract_reason from trajectories").fetchall() == \
        [("a", None)]
    uri = str(lake_dir / "trajectories.lance")
    assert "retract_reason" not in lance.dataset(uri).schema.names, "a reader wrote"
    with Lake.open(str(lake_dir)) as lk:  # a writer migrates, as a version
        assert lk.versions()[-1].operation == "migrate"
        lk.ingest([_traj("b", 1)])
        assert lk.count("trajectories") == 2
        assert lk.sql("select retract_reason from trajectories", as_of=3).fetchall() == [(None,)]


def test_step_totals_that_overflow_are_rejected_not_acknowledged(lake: Lake):
    """Each step's tokens fit in int64 but their sum does not: reject, never kill the writer."""
    big = {"trajectory_id": "o", "task": "t", "steps": [{"kind": "llm", "tokens_in": 2**62},
                                                        {"kind": "llm", "tokens_in": 2**62}]}
    r = lake.ingest([big, _traj("fine", 1)])
    assert [x.field for x in r.rejected] == ["tokens_in"]
    assert lake.count("trajectories") == 1


def test_connections_are_bounded_and_relations_outlive_them(tmp_path):
    from lake.lake import CONNECTIONS_KEPT

    with Lake.open(str(tmp_path / "lake")) as lake:
        rels = []
        for i in range(CONNECTIONS_KEPT + 4):  # a new version, so a new snapshot, each time
            lake.ingest([{"trajectory_id": f"t{i}", "task": "x"}])
            rels.append(lake.sql("select count(*) from trajectories"))
        assert len(lake._connections) == CONNECTIONS_KEPT
        assert [r.fetchall()[0][0] for r in rels] == list(range(1, CONNECTIONS_KEPT + 5))


def test_key_columns_get_an_index_and_lookups_still_see_rows_outside_it(lake: Lake,
                                                                        monkeypatch):
    """The writer's key lookups (dedupe, appends) use a BTREE index on trajectory_id once a
    table is big enough (small thresholds here); rows committed after the index was last
    updated are still found, so nothing is duplicated."""
    from lake import tables, writer
    from lake.tables import in_filter

    monkeypatch.setattr(tables, "INDEX_MIN_ROWS", 10)
    monkeypatch.setattr(tables, "INDEX_LAG_ROWS", 25)
    monkeypatch.setattr(tables, "INDEX_MAX_DELTAS", 2)
    monkeypatch.setattr(writer, "COMPACT_EVERY", 1)
    deltas = []
    for batch in range(6):
        lake.ingest([_traj(f"b{batch}-{i}", 3) for i in range(8)])
        if "trajectory_id_idx" in [i.name for i in lake.store.dataset("steps").describe_indices()]:
            deltas.append(lake.store.dataset("steps").stats.index_stats(
                "trajectory_id_idx")["num_indices"])
    assert max(deltas) == 2 and deltas[-1] < max(deltas), deltas  # deltas, then merged
    lake.ingest([_traj(f"late-{i}", 3) for i in range(4)])  # fewer rows than the lag
    indexed = {name: [i.field_names for i in lake.store.dataset(name).describe_indices()]
               for name in ("trajectories", "steps")}
    assert indexed == {"trajectories": [["trajectory_id"]], "steps": [["trajectory_id"]]}
    stats = lake.store.dataset("trajectories").stats.index_stats("trajectory_id_idx")
    assert stats["num_unindexed_rows"] > 0  # the last commits are not in it yet
    assert any("trajectories.trajectory_id index" in str(v.detail) for v in lake.versions()
               if v.operation == "compact")
    plan = lake.store.dataset("trajectories").scanner(
        columns=["trajectory_id"], filter=in_filter("default", "trajectory_id", ["b0-1"])
    ).explain_plan()
    assert "ScalarIndexQuery" in plan, plan
    got = lake.store.lookup("trajectories", "default", "trajectory_id", ["b0-1", "b5-7"],
                            ["trajectory_id", "n_steps"]).to_pylist()
    assert sorted(r["trajectory_id"] for r in got) == ["b0-1", "b5-7"]
    lake.ingest([_traj(f"b{batch}-{i}", 3) for batch in range(6) for i in range(8)])
    lake.ingest([_traj("b5-7", 5)])  # longer: an update, found through the index or not
    assert lake.count("trajectories") == 52
    assert lake.count("steps") == 51 * 3 + 5


def test_a_finished_run_stays_final_after_the_lake_forgets_it(lake: Lake, monkeypatch):
    import lake.live as lakemod
    from lake.errors import Conflict

    monkeypatch.setattr(lakemod, "LIVE_KEPT", 2)
    lake.start_trajectory({"trajectory_id": "r0", "task": "t"})
    lake.finish_trajectory("r0", status="succeeded", outcome={"reward": 1.0})
    lake.flush()
    for i in (1, 2):  # r0 is forgotten: its state comes from the table
        lake.start_trajectory({"trajectory_id": f"r{i}", "task": "t"})
    assert ("default", "r0") not in lake.live and len(lake.live) == 2
    with pytest.raises(Conflict, match="changes reward"):
        lake.finish_trajectory("r0", status="succeeded", outcome={"reward": 0.5})
    lake.finish_trajectory("r0", status="succeeded", outcome={"reward": 1.0})  # a retry


def test_after_a_restore_live_runs_follow_the_restored_rows(lake: Lake):
    """A run started after the restored version is gone with it: steps for it are refused
    (NotFound), not acknowledged and dropped; a run the restore kept takes steps again."""
    lake.start_trajectory({"trajectory_id": "kept", "task": "t"})
    lake.flush()
    before = lake.version().version
    lake.start_trajectory({"trajectory_id": "later", "task": "t"})
    lake.append_steps("later", [{"index": 0, "kind": "tool"}])
    lake.flush()
    lake.restore(before)
    with pytest.raises(NotFound, match="was not started"):
        lake.append_steps("later", [{"index": 1, "kind": "tool"}])
    lake.append_steps("kept", [{"index": 0, "kind": "tool"}])
    lake.finish_trajectory("kept", status="succeeded")
    lake.flush()
    assert lake.sql("select trajectory_id, status, n_steps from trajectories").fetchall() == \
        [("kept", "succeeded", 1)]


def test_a_retraction_holds_across_restore_and_time_travel(lake: Lake, tmp_path):
    """Never served again: not after restoring a version from before the retraction, not
    by reading that version (listings, exports, tapes), while SQL time travel still shows
    the history for audit."""
    from lake import reads
    from lake.datasets import export_dataset
    from lake.tape import Tape

    lake.ingest([_traj("a", 2, outcome={"success": True}), _traj("b", 2,
                                                                 outcome={"success": True})])
    lake.tag("before")
    assert lake.retract(["a"], "leaked a card number") == 1
    before = reads.TrajectoryFilter()
    _, rows, _ = reads.trajectories(lake, "default", before, as_of="before")
    assert [r["trajectory_id"] for r in rows] == ["b"]
    _, rows, _ = reads.trajectories(lake, "default", reads.TrajectoryFilter(
        include_retracted=True), as_of="before")
    assert [(r["trajectory_id"], r["retract_reason"]) for r in rows] == [
        ("a", "leaked a card number"), ("b", None)]
    with pytest.raises(NotFound, match="'a' was retracted at .* never served again"):
        reads.trajectory(lake, "default", "a", as_of="before")
    _, row = reads.trajectory(lake, "default", "a", as_of="before", include_retracted=True)
    assert row["retracted_at"] is not None and len(row["steps"]) == 2  # the operator's audit
    with pytest.raises(NotFound, match="retracted"):
        Tape.from_lake(lake, "a", as_of="before")
    out = export_dataset(lake, "sft", tmp_path / "sft", as_of="before")
    assert out.manifest["counts"]["trajectories"] == 1
    assert lake.sql("select retracted_at from trajectories where trajectory_id = 'a'",
                    as_of="before").fetchall() == [(None,)]  # history, for audit

    restored = lake.restore("before")
    assert restored.detail["retractions_kept"] == 1
    assert lake.sql("select trajectory_id, retract_reason from trajectories order by 1"
                    ).fetchall() == [("a", "leaked a card number"), ("b", None)]
    assert lake.retract(["a"], "again") == 0  # still retracted: a retry is a no-op


def test_a_finish_that_ends_before_the_start_is_refused(lake: Lake, lake_dir):
    """The rule ended_at >= started_at holds on the live path too: against the start logged
    here, or the stored one after a restart."""
    lake.start_trajectory({"trajectory_id": "a", "task": "t",
                           "started_at": "2026-01-02T00:00:00Z"})
    with pytest.raises(InvalidArgument, match="is before the trajectory's started_at") as e:
        lake.finish_trajectory("a", ended_at="2026-01-01T23:59:59Z", status="succeeded")
    assert e.value.field == "ended_at"
    lake.start_trajectory({"trajectory_id": "b", "task": "t",
                           "started_at": "2026-01-02T00:00:00Z"})
    lake.close()
    with Lake.open(str(lake_dir)) as again:
        with pytest.raises(InvalidArgument, match="2026-01-01 23:59:59"):
            again.finish_trajectory("b", ended_at="2026-01-01T23:59:59Z", status="failed")
        again.finish_trajectory("b", ended_at="2026-01-02T00:00:01Z", status="failed")
        again.flush()
        assert again.sql("select trajectory_id, status from trajectories order by 1"
                         ).fetchall() == [("a", "running"), ("b", "failed")]


def test_after_a_restart_a_retried_append_does_not_reopen_a_finished_run(lake: Lake, lake_dir):
    """The lake reads a finished run's outcome from the table after a restart; a retried
    append (its steps stored) passes, and a new step after it is still refused."""
    from lake.errors import Conflict

    lake.start_trajectory({"trajectory_id": "a", "task": "t"})
    lake.append_steps("a", [{"index": 0, "kind": "tool", "name": "x"}])
    lake.finish_trajectory("a", status="succeeded")
    lake.close()
    with Lake.open(str(lake_dir)) as again:
        again.append_steps("a", [{"index": 0, "kind": "tool", "name": "x"}])  # a retry
        with pytest.raises(Conflict, match="steps cannot be added after FinishTrajectory"):
            again.append_steps("a", [{"index": 5, "kind": "tool", "name": "y"}])
        with pytest.raises(Conflict, match="changes status"):
            again.finish_trajectory("a", status="failed")


def test_a_new_lake_is_readable_by_its_owner_only(tmp_path):
    """Its directory holds trajectories, hashed tokens and the audit log: created 0700 (an
    existing directory keeps its mode: the operator's choice)."""
    import stat

    with Lake.open(str(tmp_path / "new"), wal_dir=str(tmp_path / "wal")):
        pass
    for d in (tmp_path / "new", tmp_path / "wal"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_as_of_a_time_reads_the_lake_as_it_was_then(lake: Lake):
    """``as_of`` takes an ISO 8601 time too: the latest version made at or before it."""
    import time
    from datetime import UTC, datetime

    from lake.errors import NotFound

    lake.ingest([_traj("a", 1)])
    time.sleep(0.01)
    then = datetime.now(UTC)
    time.sleep(0.01)
    lake.ingest([_traj("b", 1)])
    count = "select count(*) from trajectories"
    assert lake.sql(count, as_of=then.isoformat()).fetchall() == [(1,)]
    assert lake.sql(count, as_of=then.strftime("%Y-%m-%dT%H:%M:%S.%f")).fetchall() == [(1,)]
    assert lake.sql(count).fetchall() == [(2,)]
    with pytest.raises(NotFound, match="did not exist at 2000-01-01T00:00:00.00:00: its first"):
        lake.version("2000-01-01")
    with pytest.raises(NotFound, match="no tag 'nope'.*or an ISO 8601 time"):
        lake.version("nope")


def test_an_id_cut_short_is_answered_with_the_ids_it_starts(lake: Lake):
    """Ids copied from a table cut at 60 characters: the NotFound names the tenant's ids
    that start with it (LIKE's wildcards in it are taken literally; retracted ids are not
    named), else says what else to check."""
    from lake import reads
    from lake.errors import NotFound

    lake.ingest([_traj(t, 1) for t in ("tau2/telecom/task[mms]airplane_on",
                                       "tau2/telecom/task[mms]airplane_off", "ab_c%d", "abXcYd",
                                       "tau2/telecom/task[mms]airplane_gone")])
    lake.retract(["tau2/telecom/task[mms]airplane_gone"], "test")
    with pytest.raises(NotFound) as e:
        reads.trajectory(lake, "default", "tau2/telecom/task[mms]airp")
    assert "Cut short? Ids that start with it: " in str(e.value)
    assert "airplane_on" in str(e.value) and "airplane_off" in str(e.value)
    assert "airplane_gone" not in str(e.value)
    with pytest.raises(NotFound, match="start with it: 'ab_c%d'$"):
        reads.trajectory(lake, "default", "ab_c%")
    with pytest.raises(NotFound, match="Just written"):
        reads.trajectory(lake, "default", "nothing-like-it")
    with pytest.raises(NotFound, match="Just written"):
        reads.trajectory(lake, "acme", "tau2/telecom/task[mms]airp")  # another tenant's


def test_a_lake_of_a_newer_format_is_refused_not_damaged(lake_dir):
    from lake.errors import LakeError
    from lake.schema import FORMAT

    with Lake.open(str(lake_dir)) as lk:
        assert lk.versions()[0].detail == {"format": FORMAT}
        lk.catalog.commit("migrate", lk.writer.wal.writer_id, lk.writer.lag["applied_lsn"],
                          {"tables": [], "format": FORMAT + 1})  # as a newer package would
    for readonly in (False, True):
        with pytest.raises(LakeError, match=f"has format {FORMAT + 1}, written by a newer "
                                            "Context Lake.*upgrade the package"):
            Lake.open(str(lake_dir), readonly=readonly)
