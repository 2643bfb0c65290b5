"""Fixtures for tests/lake: the real embedding model (loaded once per session), a semantic
cache over a fresh lake, the labelled dev pairs, and a lake of the dev trajectories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PAIRS = Path(__file__).resolve().parents[3] / "shared" / "data" / "dev" / "pairs.jsonl"


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 from the bundled weights, loaded once for the whole session."""
    from lake.embedder import MiniLMEmbedder

    return MiniLMEmbedder().load()


@pytest.fixture
def cache(tmp_path, minilm):
    """A semantic cache over a fresh lake (the real model)."""
    from lake import Lake
    from lake.context import ContextService

    lake = Lake.open(str(tmp_path / "lake"))
    cs = ContextService(lake, embedder=minilm)
    yield cs
    cs.close()
    lake.close()


@pytest.fixture(scope="session")
def dev_pairs() -> dict[str, dict]:
    """The labelled pairs of /work/shared/data/dev/pairs.jsonl by pair_id (skip if absent)."""
    if not PAIRS.exists():
        pytest.skip(f"{PAIRS} not found")
    with PAIRS.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["pair_id"]: r for r in rows}


@pytest.fixture(scope="module")
def dev_lake(tmp_path_factory, dev_records):
    """A lake holding the dev trajectories, tagged ``dev`` (one per test module)."""
    from lake import Lake

    lk = Lake.open(str(tmp_path_factory.mktemp("dev") / "lake"))
    assert not lk.ingest(dev_records).rejected
    lk.tag("dev")
    yield lk
    lk.close()
