"""Benchmarks: modules ``bench_*.py`` in this directory, run only by ``make bench``.

``make bench`` runs ``pytest -m benchmark benchmarks``; the default run (``-m 'not
benchmark'`` in pyproject's addopts, testpaths ``tests``) never collects or runs them. Every
test collected here is marked ``benchmark``, so even ``pytest benchmarks`` without ``-m``
deselects them all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
os.environ.setdefault("LANCE_LOG", "error")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.benchmark)
