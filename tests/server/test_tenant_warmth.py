"""Every tenant's first GetContext is fast after ingest and after a restart: committed
tasks are embedded even when the tenant's index is not loaded, and a starting server loads
the indexes of the tenants holding the most runs, not only its own."""

from __future__ import annotations

from server.app import serve
from server.client import LakeClient

from .conftest import make_settings, run, token


def test_tasks_of_a_tenant_nobody_queried_are_embedded_as_they_commit(secure):
    with LakeClient(secure.target, token(secure, "acme")) as acme:
        rows = [run(f"a-{i}", task=f"Refund order #W{1000 + i} to the card") for i in range(12)]
        lsn = acme.ingest_arrow(rows).lsn
        secure.cache.wait_indexed(lsn)
    assert secure.cache.ahead.wait_idle()  # off the indexer's thread, on its own
    assert "acme" not in secure.cache._indexes  # nobody asked for its index
    hashes = [h for h, in secure.lake.sql("select task_hash from trajectories",
                                          tenant="acme").fetchall()]
    assert len(hashes) == 12 and set(secure.cache.cache.get_many(hashes)) == set(hashes)


def test_a_starting_server_warms_the_biggest_tenants_indexes(lake_dir):
    settings = make_settings(lake_dir, auth="on")
    srv = serve(settings, "127.0.0.1", 0)
    try:
        for tenant, n in (("acme", 6), ("bravo", 3)):
            with LakeClient(srv.target, token(srv, tenant)) as c:
                lsn = c.ingest_arrow([run(f"{tenant}-{i}") for i in range(n)]).lsn
                c.get_trajectory(f"{tenant}-0", min_lsn=lsn)
    finally:
        srv.stop(grace=1)
    srv = serve(settings, "127.0.0.1", 0)
    try:
        srv.warm().join(timeout=120)
        assert {"default", "acme", "bravo"} <= set(srv.cache._indexes)
        assert len(srv.cache._indexes["acme"].rows) == 6
    finally:
        srv.stop(grace=1)
