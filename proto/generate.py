"""Regenerate the Python stubs from the ``.proto`` files: ``python -m proto.generate [OUT]``.

Runs the pinned ``grpcio-tools`` (pyproject's dev extra) with ``-I <repo root>``, so the
stubs import each other as ``proto.contextlake.v1.lake_pb2``. ``OUT`` defaults to the
repository itself; the stub test generates into a temporary directory and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "proto").rglob("*.proto"))
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out: Path = ROOT) -> list[Path]:
    """Write the stubs under ``out`` (mirroring the repo layout); return their paths."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    args = ["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *PROTOS]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {', '.join(PROTOS)}")
    return stubs(out)

def stubs(root: Path = ROOT) -> list[Path]:
    """The generated files as they sit under ``root``."""
    return [root / (p.removesuffix(".proto") + s) for p in PROTOS for s in SUFFIXES]


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT):
        print(path)
