"""The implemented RPCs through the Python client, against a real server and lake."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from lake.errors import AlreadyExists, InvalidArgument, NotFound
from proto.contextlake.v1 import lake_pb2 as pb
from server import convert

from .conftest import run


def test_ingest_arrow_then_list_get_and_sql_see_it(server, client):
    reply = client.ingest_arrow([run("a", 3), run("b", 1), run("c", 0, agent="other")])
    assert (reply.accepted, reply.steps, reply.rejects) == (3, 4, []) and reply.lsn > 0
    got = client.get_trajectory("a", min_lsn=reply.lsn)
    assert (got["task"], got["status"], got["tenant"]) == ("task of a", "succeeded", "default")
    assert [s["name"] for s in got["steps"]] == ["tool0", "tool1", "tool2"]
    assert isinstance(got["ingested_at"], datetime) and got["ingested_at"].tzinfo is not None
    page = client.list_trajectories()
    assert [t["trajectory_id"] for t in page.trajectories] == ["a", "b", "c"]
    assert all("steps" not in t for t in page.trajectories)  # a listing carries none
    sql = server.lake.sql("select count(*) from steps where trajectory_id = 'a'")
    assert sql.fetchall() == [(3,)]


def test_a_retried_batch_changes_nothing(server, client):
    batch = [run("a", 2), run("b", 2)]
    first = client.ingest_arrow(batch)
    client.get_trajectory("a", min_lsn=first.lsn)
    versions = len(client.versions())
    again = client.ingest_arrow(batch)
    assert again.accepted == 2  # accepted (durably logged) and idempotent ...
    client.get_trajectory("a", min_lsn=again.lsn)
    assert len(client.versions()) == versions  # ... so no new version, no duplicate rows
    assert server.lake.sql("select count(*) from steps").fetchall() == [(4,)]


def test_bad_rows_are_rejected_one_by_one_and_the_rest_land(client):
    rows = [run("ok1"), {"trajectory_id": "no-task"}, run("ok2"),
            run("bad-step", steps=[{"kind": "tool", "tokens_in": -3}])]
    reply = client.ingest_arrow(rows)
    assert reply.accepted == 2
    assert [(r["index"], r["field"], r["trajectory_id"]) for r in reply.rejects] == \
        [(1, "task", "no-task"), (3, "steps[0].tokens_in", "bad-step")]
    assert all(r["reason"] for r in reply.rejects)
    ids = [t["trajectory_id"] for t in client.list_trajectories(min_lsn=reply.lsn).trajectories]
    assert ids == ["ok1", "ok2"]


def test_a_message_is_taken_a_slice_at_a_time(server, client, monkeypatch):
    """Slices of ARROW_SLICE_ROWS rows are validated and logged one after the other: rejects
    keep their index in the message, and a later duplicate still wins across slices."""
    from server import service

    monkeypatch.setattr(service, "ARROW_SLICE_ROWS", 3)
    rows = [run(f"r{i}", 1) for i in range(7)] + [{"trajectory_id": "no-task"},
                                                  run("r1", 1, task="the later r1")]
    reply = client.ingest_arrow(rows)  # r1 again, as far along: the later one wins
    assert (reply.accepted, reply.steps) == (8, 8)
    assert [(r["index"], r["field"]) for r in reply.rejects] == [(7, "task")]
    got = client.get_trajectory("r1", min_lsn=reply.lsn)
    assert (got["task"], got["n_steps"]) == ("the later r1", 1)
    assert client.stats()["trajectories"] == 7


def test_a_pyarrow_table_with_structs_and_an_ipc_file(client):
    table = pa.table({"trajectory_id": ["s1"], "task": ["t"],
                      "meta": [{"team": "x", "n": 1}],
                      "started_at": pa.array([datetime(2025, 8, 1, tzinfo=UTC)],
                                             pa.timestamp("us", tz="UTC")),
                      "steps": [[{"kind": "tool", "name": "n", "duration_ms": 1.5}]]})
    reply = client.ingest_arrow(table)
    got = client.get_trajectory("s1", min_lsn=reply.lsn)
    assert got["meta"] == '{"team":"x","n":1}' and got["started_at"] == datetime(2025, 8, 1,
                                                                                tzinfo=UTC)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write(table.set_column(0, "trajectory_id", pa.array(["s2"])))
    r = client.call(client.ingest.IngestArrow,
                    pb.IngestArrowRequest(arrow_ipc=sink.getvalue().to_pybytes()))
    assert r.accepted == 1


def test_time_travel_tag_restore_and_versions(client):
    first = client.ingest_arrow([run("a")])
    client.get_trajectory("a", min_lsn=first.lsn)
    tagged = client.tag("before")
    assert "before" in tagged["tags"]
    assert client.tag("before")["version"] == tagged["version"]  # a retry: a no-op
    second = client.ingest_arrow([run("a", 5), run("b")])
    client.get_trajectory("b", min_lsn=second.lsn)
    with pytest.raises(AlreadyExists):
        client.tag("before")  # the latest is another version now
    assert len(client.get_trajectory("a", min_lsn=second.lsn)["steps"]) == 5
    assert len(client.get_trajectory("a", as_of="before")["steps"]) == 2
    with pytest.raises(NotFound):
        client.get_trajectory("b", as_of=tagged["version"])
    restored = client.restore("before")
    assert restored["operation"] == "restore" and restored["detail"]["restored"] == \
        tagged["version"]
    assert [t["trajectory_id"] for t in client.list_trajectories().trajectories] == ["a"]
    ops = [v["operation"] for v in client.versions()]
    assert ops[0] == "create" and ops[-1] == "restore"


def test_paging_stays_on_one_version_and_filters_apply(client):
    rows = [run(f"r{i:02}", 1, agent="even" if i % 2 == 0 else "odd",
                outcome={"success": i % 3 != 0},
                started_at=f"2025-08-{i + 1:02}T00:00:00Z") for i in range(12)]
    lsn = client.ingest_arrow(rows).lsn
    page = client.list_trajectories(page_size=5, min_lsn=lsn)
    new = client.ingest_arrow([run("a-new")]).lsn  # lands between pages: not in this listing
    seen = [t["trajectory_id"] for t in page.trajectories]
    while page.next_page_token:
        page = client.list_trajectories(page_size=5, page_token=page.next_page_token)
        seen += [t["trajectory_id"] for t in page.trajectories]
    assert seen == [f"r{i:02}" for i in range(12)]
    def ids(**f):
        return [t["trajectory_id"] for t in client.iter_trajectories(**f, min_lsn=new)]

    assert ids(agent="odd", status="failed") == ["r03", "r09"]
    # a-new has no started_at: its ingested_at (now) counts
    assert ids(success=True, since=datetime(2025, 8, 10, tzinfo=UTC)) == ["a-new", "r10", "r11"]
    assert ids(until=datetime(2025, 8, 4, tzinfo=UTC), agent="even") == ["r00", "r02"]
    with pytest.raises(InvalidArgument) as e:
        client.list_trajectories(page_size=-1)
    assert e.value.field == "page_size"


def test_large_payloads_come_back_as_previews_or_in_full(server, client):
    big = "x" * 200_000
    lsn = client.ingest_arrow([run("big", steps=[{"kind": "tool", "output": big}])]).lsn
    step = client.get_trajectory("big", min_lsn=lsn)["steps"][0]
    assert step["output_ref"] and len(step["output"]) == server.lake.settings.preview_chars
    assert client.get_trajectory("big", full_payloads=True)["steps"][0]["output"] == big


def test_stats_count_the_tenant_and_show_the_writer(client):
    lsn = client.ingest_arrow([run("a", 3), run("b", 2)]).lsn
    client.get_trajectory("a", min_lsn=lsn)
    stats = client.stats()
    assert (stats["tenant"], stats["trajectories"], stats["steps"]) == ("default", 2, 5)
    assert stats["applied_lsn"] == stats["submitted_lsn"] == lsn and stats["auth"] == "off"
    assert stats["version"] == client.versions()[-1]["version"]


def test_read_your_writes_rejects_an_lsn_from_the_future(client):
    with pytest.raises(InvalidArgument) as e:
        client.get_trajectory("a", min_lsn=10**9)
    assert e.value.field == "min_lsn"


def test_columns_the_format_cannot_read_are_named(client):
    table = pa.table({"trajectory_id": ["b1", "b2"], "task": ["t", "t"],
                      "blob": pa.array([b"\x00\x01", None], pa.binary())})
    reply = client.ingest_arrow(table)
    assert reply.accepted == 1
    [reject] = reply.rejects
    assert (reject["index"], reject["field"]) == (0, "blob") and "cast the column" in \
        reject["reason"]
    bad = pa.table({"trajectory_id": ["u1"], "task": pa.array([b"\xff\xfe"], pa.binary())
                    .cast(pa.string(), safe=False)})
    with pytest.raises(InvalidArgument, match="task holds bytes that are not UTF-8"):
        client.ingest_arrow(bad)
    twice = pa.Table.from_arrays([pa.array(["d1"]), pa.array(["t"]), pa.array(["u"])],
                                 names=["trajectory_id", "task", "task"])
    with pytest.raises(InvalidArgument, match="column 'task' appears more than once"):
        client.ingest_arrow(twice)


def test_listings_filter_on_reward_and_tags_not_ignore_them(client):
    reply = client.ingest_arrow([run("r1", tags=["vip", "eu"]),
                                 run("r2", outcome={"success": True, "reward": 0.2},
                                     tags=["vip"]), run("r3")])
    ids = [t["trajectory_id"] for t in client.list_trajectories(
        min_reward=0.5, min_lsn=reply.lsn).trajectories]
    assert ids == ["r1", "r3"]
    assert [t["trajectory_id"] for t in client.list_trajectories(tags=["vip"]).trajectories] \
        == ["r1", "r2"]
    assert [t["trajectory_id"] for t in client.list_trajectories(
        tags=["vip", "eu"]).trajectories] == ["r1"]
    assert client.list_trajectories(tags=["none-such"]).trajectories == []
    with pytest.raises(InvalidArgument) as e:
        client.list_trajectories(min_reward=float("nan"))
    assert e.value.field == "filter.min_reward"


def test_statuses_are_checked_on_the_client_too(client):
    with pytest.raises(InvalidArgument) as e:
        client.list_trajectories(status="done")
    assert e.value.field == "status"
    assert convert.STATUS_TO_PB["failed"] == pb.STATUS_FAILED
