"""Shared fixtures: every test gets a fresh temp-dir lake, isolated from the user's env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
DEV_TRAJECTORIES = DEV / "trajectories.jsonl"

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LAKE_* from the developer's shell, no lake.toml from the working directory."""
    for key in list(os.environ):
        if key.startswith("LAKE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def lake(lake_dir: Path):
    from lake import Lake

    lk = Lake.open(str(lake_dir))
    yield lk
    lk.close()


@pytest.fixture(scope="session")
def dev_records() -> list[dict]:
    """The real tau2-bench dev trajectories (../shared), else the bundled sample."""
    import gzip

    import orjson

    from ingest.sample import PATH

    if DEV_TRAJECTORIES.exists():
        lines = DEV_TRAJECTORIES.read_bytes().splitlines()
    else:
        lines = gzip.decompress(PATH.read_bytes()).splitlines()
    return [orjson.loads(x) for x in lines if x.strip()]
