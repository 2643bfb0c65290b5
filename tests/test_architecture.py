"""Imports point one way: cli -> server | ingest | lake; server -> ingest, lake; ingest -> lake.

Nothing in lake/ imports grpc (or any of our outer packages).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "lake": {"grpc", "server", "ingest", "cli", "proto"},
    "ingest": {"server", "cli", "grpc"},
    "server": {"cli"},
}


def _parse(path: Path) -> ast.Module:
    """``ast.parse``, again on CPython 3.11's spurious "AST constructor recursion depth
    mismatch" (python/cpython#106905: its depth counter is shared, and a thread left over
    from an earlier test may be building an AST at the same time)."""
    for attempt in range(3):
        try:
            return ast.parse(path.read_text(), str(path))
        except SystemError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _imports(path: Path) -> set[str]:
    tree = _parse(path)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    bad = []
    for f in sorted((ROOT / package).rglob("*.py")):
        if "_pb2" in f.name:
            continue
        for mod in _imports(f) & FORBIDDEN[package]:
            bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, "layering violated:\n" + "\n".join(bad)


def test_modules_stay_small():
    big = [f"{f.relative_to(ROOT)}: {n} lines" for pkg in ("lake", "ingest", "server", "cli")
           for f in (ROOT / pkg).rglob("*.py") if "_pb2" not in f.name
           and (n := len(f.read_text().splitlines())) > 600]
    assert not big, "split these modules: " + ", ".join(big)


def test_docs_schema_is_generated_from_the_schema():
    from lake.schema import markdown

    assert (ROOT / "docs" / "schema.md").read_text().strip() == markdown().strip(), \
        "docs/schema.md is stale: run `lake schema > docs/schema.md`"
