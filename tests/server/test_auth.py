"""Tokens, scopes, tenant isolation and the audit trail, on a real server."""

from __future__ import annotations

import hashlib
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake import Lake
from lake.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from lake.tokens import Tokens
from server.app import serve
from server.client import LakeClient

from .conftest import audit_rows, make_settings, run, token


def test_a_call_without_a_token_is_unauthenticated_and_audited(secure):
    with LakeClient(secure.target) as c, pytest.raises(Unauthenticated) as e:
        c.stats()
    assert "bearer token" in str(e.value) and "lake token create" in str(e.value)
    [row] = audit_rows(secure)
    assert (row["tenant"], row["actor"], row["action"], row["outcome"]) == \
        ("", "anonymous", "AdminService/Stats", "unauthenticated")
    assert "ipv4:127.0.0.1" in row["detail"]


@pytest.mark.parametrize("bad", ["nope", "cl_000000000000_" + "A" * 43,
                                 "Basic dXNlcjpwYXNz"])
def test_malformed_and_unknown_tokens_are_refused(secure, bad):
    with LakeClient(secure.target, bad) as c, pytest.raises(Unauthenticated):
        c.list_trajectories()


def test_a_bad_token_on_an_open_server_says_none_is_needed(server):
    with LakeClient(server.target, "mytoken") as c, pytest.raises(Unauthenticated) as e:
        c.stats()
    assert "runs without auth: send no token" in str(e.value)


def test_a_wrong_secret_for_a_real_id_is_refused(secure):
    good = token(secure)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with LakeClient(secure.target, forged) as c, pytest.raises(Unauthenticated):
        c.get_trajectory("acme-7")
    [row] = [r for r in audit_rows(secure) if r["outcome"] == "unauthenticated"]
    # the tenant's own audit view shows the attempt on its token; the caller is not its agent
    assert (row["tenant"], row["actor"], row["token_id"]) == \
        ("acme", "anonymous", good.split("_")[1])
    assert row["resource"] == "trajectory_id: 'acme-7'"  # what the refused call named


def test_a_read_token_cannot_ingest_and_the_refusal_is_audited(secure):
    with LakeClient(secure.target, token(secure, scopes="read")) as c:
        with pytest.raises(PermissionDenied) as e:
            c.ingest_arrow([run("a")])
        assert "'ingest'" in str(e.value) and "--scopes ingest" in str(e.value)
        assert c.list_trajectories().trajectories == []  # nothing was written
    [row] = audit_rows(secure)
    assert (row["tenant"], row["actor"], row["action"], row["outcome"]) == \
        ("acme", "bot", "IngestService/IngestArrow", "permission_denied")
    assert row["token_id"] and row["resource"] is None


def test_admin_actions_need_the_admin_scope_and_are_audited_at_once(secure):
    with LakeClient(secure.target, token(secure, scopes="read,ingest")) as c, \
            pytest.raises(PermissionDenied):
        c.tag("x")
    with LakeClient(secure.target, token(secure, "ops", "op", scopes="admin,operator")) as c:
        c.tag("release-1")
        assert secure.audit.pending == 0  # flushed at once, not in the next batch
        with pytest.raises(NotFound):
            c.restore("no-such-tag")
    rows = audit_rows(secure)
    assert [(r["tenant"], r["action"], r["outcome"]) for r in rows] == [
        ("acme", "AdminService/Tag", "permission_denied"),
        ("ops", "AdminService/Tag", "ok"),
        ("ops", "AdminService/Restore", "not_found")]
    assert rows[1]["resource"] == 'name: "release-1"' and rows[1]["actor"] == "op"


def test_lake_wide_changes_need_the_operator_scope(secure):
    """``admin`` manages its tenant's data; what changes every tenant's (Restore, moving a
    tag) needs ``operator``, and another tenant's version details stay hidden from it."""
    acme = LakeClient(secure.target, token(secure, "acme", scopes="read,ingest,admin"))
    bravo = LakeClient(secure.target, token(secure, "bravo", scopes="read,ingest,admin"))
    ops = LakeClient(secure.target, token(secure, "ops", scopes="admin,operator"))
    try:
        bravo.ingest_arrow([run("b-1", task="bravo's card 4111")])
        lsn = acme.ingest_arrow([run("a-1")]).lsn
        acme.get_trajectory("a-1", min_lsn=lsn)
        bravo.tag("bravo-release")
        bravo.retract(["b-1"], reason="leaked bravo's card number")
        acme.retract(["a-1"], reason="acme's own reason")
        for call in (lambda: acme.restore("bravo-release"),
                     lambda: acme.tag("bravo-release", force=True)):
            with pytest.raises(PermissionDenied, match="needs the 'operator' scope"):
                call()
        seen = {v["operation"]: v["detail"] for v in acme.versions() if
                v["operation"] == "retract" and v["detail"]}
        assert seen == {"retract": {"tenant": "acme", "trajectories": 1,
                                    "reason": "acme's own reason"}}
        assert "leaked" not in repr(acme.versions())
        ingests = [v["detail"] for v in acme.versions() if v["operation"] == "ingest"]
        own = {(d.get("tenant"), d.get("inserted")) for d in ingests}
        assert own == {("acme", 1), (None, None)}
        assert all(d == {} or set(d) == {"tenant", "inserted", "updated", "unchanged", "steps"}
                   for d in ingests)  # bravo's counts and the commits' totals: not shown
        assert "leaked" in repr(ops.versions())  # the operator sees every tenant's
        assert ops.restore("bravo-release")["operation"] == "restore"
        assert ops.tag("bravo-release", force=True)
        with pytest.raises(PermissionDenied, match="needs the 'operator' scope"):
            acme.untag("bravo-release")
        assert ops.untag("bravo-release")["version"] > 0
    finally:
        for c in (acme, bravo, ops):
            c.close()
    refused = [(r["tenant"], r["action"], r["outcome"]) for r in audit_rows(secure)
               if r["outcome"] != "ok"]
    assert refused == [("acme", "AdminService/Restore", "permission_denied"),
                       ("acme", "AdminService/Tag", "permission_denied"),
                       ("acme", "AdminService/Tag", "permission_denied")]  # the untag


def test_token_names_are_checked_and_a_mistyped_token_is_not_echoed(secure):
    for tenant in ("", " acme", "acme ", "ac\nme", "x" * 129):
        with pytest.raises(InvalidArgument) as e:
            secure.tokens.create(tenant, "bot", "read")
        assert e.value.field == "tenant"
    text = token(secure)
    with pytest.raises(NotFound) as e:
        secure.tokens.revoke(text[:-3])  # cut short: not read as a token, nor printed
    assert text[20:] not in str(e.value)


def test_a_storm_of_refusals_is_appended_in_batches(secure):
    before = secure.lake.store.dataset("audit").version
    with LakeClient(secure.target) as c:
        for _ in range(40):
            with pytest.raises(Unauthenticated):
                c.stats()
    assert len(audit_rows(secure)) == 40
    assert secure.lake.store.dataset("audit").version - before < 10  # not one commit per call


def test_the_audit_view_is_tenant_scoped(secure):
    for scopes, tenant in (("read", "acme"), ("read", "bravo")):
        with LakeClient(secure.target, token(secure, tenant, scopes=scopes)) as c, \
                pytest.raises(PermissionDenied):
            c.ingest_arrow([run("x")])
    with LakeClient(secure.target) as c, pytest.raises(Unauthenticated):
        c.stats()
    secure.audit.flush()
    count = lambda **kw: secure.lake.sql("select count(*) from audit", **kw).fetchall()[0][0]  # noqa: E731
    assert (count(tenant="acme"), count(tenant="bravo"), count(all_tenants=True)) == (1, 1, 3)


def test_a_revoked_token_is_refused_within_seconds(secure):
    text = token(secure)
    with LakeClient(secure.target, text) as c:
        assert c.stats()["tenant"] == "acme"
        elsewhere = Tokens.at(secure.lake.settings, actor="cli:test")  # as `lake token revoke`
        elsewhere.revoke(text.split("_")[1])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                c.stats()
            except Unauthenticated as e:
                assert "revoked" in str(e)
                break
            time.sleep(0.1)
        else:
            pytest.fail("a revoked token still works after 5 s")
    assert any(r["action"] == "token.revoke" and r["actor"] == "cli:test"
               for r in audit_rows(secure))
    refused = [r for r in audit_rows(secure) if r["outcome"] == "unauthenticated"]
    assert refused and all((r["tenant"], r["actor"], r["token_id"]) == (
        "acme", "bot", text.split("_")[1]) for r in refused)  # its holder, attributed


def test_tokens_are_stored_hashed_with_a_public_id(secure):
    text, info = secure.tokens.create("acme", "bot", "ingest,read")
    m = re.fullmatch(r"cl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})", text)
    assert m and m.group(1) == info.token_id
    rows = secure.lake.store.dataset("tokens").to_table().to_pylist()
    assert text not in str(rows) and m.group(2) not in str(rows)
    assert rows[0]["secret_sha256"] == hashlib.sha256(m.group(2).encode()).hexdigest()
    with pytest.raises(InvalidArgument) as e:
        secure.tokens.create("acme", "bot", "read,write")
    assert e.value.field == "scopes"


def test_an_open_server_acts_as_the_settings_tenant_but_honours_tokens(server, client):
    assert client.stats()["tenant"] == "default"
    with LakeClient(server.target, token(server, "acme", scopes="read")) as c:
        assert c.stats()["tenant"] == "acme"
        with pytest.raises(PermissionDenied):
            c.ingest_arrow([run("a")])
    with LakeClient(server.target, "cl_bad") as c, pytest.raises(Unauthenticated):
        c.stats()


def test_auto_auth_is_on_when_binding_beyond_loopback(lake_dir):
    with pytest.raises(InvalidArgument) as e:
        serve(make_settings(lake_dir, auth="off"), "0.0.0.0", 0)
    assert e.value.field == "auth" and "loopback" in str(e.value)
    with serve(make_settings(lake_dir), "0.0.0.0", 0) as srv:  # auth auto
        assert srv.auth and "auth on" in srv.describe() and "no tokens yet" in srv.describe()
        with LakeClient(f"127.0.0.1:{srv.port}") as c, pytest.raises(Unauthenticated):
            c.stats()
        with LakeClient(f"127.0.0.1:{srv.port}", token(srv)) as c:
            assert c.stats()["auth"] == "on"


def test_the_tenant_comes_from_the_token_never_the_record(secure):
    with LakeClient(secure.target, token(secure, "acme")) as c:
        reply = c.ingest_arrow([run("a", tenant="bravo")])
    assert reply.accepted == 0 and reply.rejects[0]["field"] == "tenant"


ids = st.text(alphabet="ab/'é -", min_size=1, max_size=5).filter(str.strip)


def test_a_tenant_sees_nothing_of_another(lake_dir):
    """Whatever ids two tenants write, each one's reads show exactly its own writes."""
    srv = serve(make_settings(lake_dir, auth="on"), "127.0.0.1", 0)
    clients = {t: LakeClient(srv.target, token(srv, t, f"agent-{t}")) for t in ("acme", "bravo")}
    written: dict[str, dict[str, int]] = {"acme": {}, "bravo": {}}  # tenant -> id -> steps

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(["acme", "bravo"]), ids, st.integers(0, 3)),
                    min_size=1, max_size=6), ids)
    def check(writes, probe):
        lsn = 0
        for tenant, tid, n in writes:
            n = max(n, written[tenant].get(tid, 0))  # a shorter retry never shrinks a run
            lsn = max(lsn, clients[tenant].ingest_arrow(
                [run(tid, n, task=f"{tenant} secret {tid}")]).lsn)
            written[tenant][tid] = n
        for tenant, c in clients.items():
            mine = written[tenant]
            listed = list(c.iter_trajectories(min_lsn=lsn, page_size=3))
            assert sorted(t["trajectory_id"] for t in listed) == sorted(mine)
            assert all(t["task"].startswith(tenant) and t["tenant"] == tenant for t in listed)
            stats = c.stats()
            assert (stats["trajectories"], stats["steps"]) == (len(mine), sum(mine.values()))
            for tid in {probe, *written["acme"], *written["bravo"]}:
                if tid in mine:
                    got = c.get_trajectory(tid)
                    assert got["task"] == f"{tenant} secret {tid}"
                    assert len(got["steps"]) == mine[tid]
                else:
                    with pytest.raises(NotFound):
                        c.get_trajectory(tid)

    try:
        check()
    finally:
        for c in clients.values():
            c.close()
        srv.stop(grace=1)
    with Lake.open(str(lake_dir), readonly=True) as lake:  # and in SQL, per tenant
        for tenant, mine in written.items():
            rows = lake.sql("select trajectory_id from trajectories", tenant=tenant).fetchall()
            assert sorted(r[0] for r in rows) == sorted(mine)


def test_retracted_runs_are_listed_only_to_admins(secure):
    """A read token gets no retracted run, not even its header (its task may be what was
    retracted); an admin token of the tenant lists them, for audit."""
    with LakeClient(secure.target, token(secure, scopes="read,ingest")) as c:
        with pytest.raises(PermissionDenied, match="include_retracted needs the 'admin'") as e:
            c.list_trajectories(include_retracted=True)
        assert e.value.field == "include_retracted"
    with LakeClient(secure.target, token(secure, scopes="read,admin")) as c:
        assert c.list_trajectories(include_retracted=True).trajectories == []


def test_a_full_disk_refusal_stays_resource_exhausted_when_its_audit_row_cannot_be_journaled(
        secure, monkeypatch):
    """The log's disk is full: the ingest is refused (ResourceExhausted, what to do), and
    the refusal's audit row, which cannot be journaled on that disk either, is kept in
    memory and appended later, instead of turning the refusal into an internal error."""
    import errno

    from lake.errors import ResourceExhausted
    from lake.row_buffer import Journal

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lake.wal._write_all", full)  # the log's disk, where the journal is
    monkeypatch.setattr(Journal, "write", full)
    with LakeClient(secure.target, token(secure), retry_s=0) as c, \
            pytest.raises(ResourceExhausted, match="full"):
        c.ingest_arrow([run("r-1")])
    monkeypatch.undo()
    assert [r["outcome"] for r in audit_rows(secure)
            if r["action"] == "IngestService/IngestArrow"] == ["resource_exhausted"]


def test_a_full_disk_never_turns_admin_calls_internal_and_the_audit_catches_up(secure,
                                                                                monkeypatch):
    """The operator QA's tmpfs: the audit journal could not rotate (ENOSPC) and stayed
    closed, so every audited call was INTERNAL until a restart. Now a failed rotate keeps
    the open file, a failed audit append keeps the rows, the call is answered as it was,
    and once space is back the rows land."""
    import errno

    from lake.row_buffer import Journal
    from lake.tables import TableStore

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_append = TableStore.append
    monkeypatch.setattr(Journal, "_open", full)
    monkeypatch.setattr(TableStore, "append", lambda self, name, rows: full() if name ==
                        "audit" else real_append(self, name, rows))
    with LakeClient(secure.target, token(secure, scopes="read,ingest,admin")) as c:
        c.tag("while-full")  # audited at once: its append fails, the call does not
        with pytest.raises(NotFound):
            c.get_trajectory("nope")
        monkeypatch.undo()  # space is back
        c.tag("after")
    actions = [(r["action"], r["outcome"]) for r in audit_rows(secure)]
    assert actions.count(("AdminService/Tag", "ok")) == 2  # the one kept while full, too
