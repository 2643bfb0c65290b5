"""A real server on port 0 in this process, a real channel, a real lake in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lake import Settings
from server.app import Server, serve
from server.client import LakeClient


def make_settings(lake_dir: Path, **overrides: Any) -> Settings:
    overrides.setdefault("flush_interval_ms", 0)  # commit at once: tests read their writes
    return Settings.load(data=str(lake_dir), **overrides)


def run(tid: str, n_steps: int = 2, **fields: Any) -> dict[str, Any]:
    """A small valid trajectory in the interchange format."""
    steps = [{"kind": "tool" if i % 2 else "llm", "name": f"tool{i}", "input": f"in {i}",
              "output": f"out {i}", "duration_ms": float(i)} for i in range(n_steps)]
    return {"trajectory_id": tid, "task": f"task of {tid}", "agent": "bot", "steps": steps,
            "outcome": {"success": True, "reward": 1.0}, **fields}


@pytest.fixture
def server(lake_dir: Path) -> Iterator[Server]:
    """An open (no-auth) server on loopback."""
    srv = serve(make_settings(lake_dir), "127.0.0.1", 0)
    yield srv
    srv.stop(grace=1)


@pytest.fixture
def client(server: Server) -> Iterator[LakeClient]:
    with LakeClient(server.target) as c:
        yield c


@pytest.fixture
def secure(lake_dir: Path) -> Iterator[Server]:
    """A server that requires tokens (auth on, loopback)."""
    srv = serve(make_settings(lake_dir, auth="on"), "127.0.0.1", 0)
    yield srv
    srv.stop(grace=1)


def token(srv: Server, tenant: str = "acme", agent: str = "bot",
          scopes: str = "read,ingest") -> str:
    return srv.tokens.create(tenant, agent, scopes)[0]


def audit_rows(srv: Server) -> list[dict[str, Any]]:
    srv.audit.flush()
    rel = srv.lake.sql("select * from audit order by time", all_tenants=True)
    return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
