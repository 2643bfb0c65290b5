"""Shared by the benchmarks: machine notes, timing, the RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TMP_ROOT = Path(__file__).resolve().parent / "data" / "tmp"  # same disk as the data files


@contextmanager
def fresh_dir(prefix: str) -> Iterator[str]:
    TMP_ROOT.mkdir(parents=True, exist_ok=True)
    d = tempfile.mkdtemp(prefix=prefix, dir=TMP_ROOT)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its finished child processes."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


class Timer:
    """Wall and CPU seconds of a block (CPU: all threads, plus worker processes that ended)."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = _cpu() - self.cpu0


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0
    import duckdb
    import lance
    import lancedb
    import pyarrow

    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, pyarrow "
            f"{pyarrow.__version__}, pylance {lance.__version__}, lancedb {lancedb.__version__}, "
            f"duckdb {duckdb.__version__}")


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return rev + (" + uncommitted changes" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command(module: str, argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join([".venv/bin/python -m", module, *args])


HEADER = """# Benchmark results

Written by the benchmarks themselves (`make bench`, or `python -m benchmarks.<name>`); each
section is replaced by the latest run of its benchmark. The synthetic data comes from
`benchmarks/synth.py` (seeded, shaped like the dev data); see each section for the command.
Times are wall-clock medians over alternating repetitions: the machine is shared, so single
runs are noisy (the load average during the run is given).
"""


def write_section(body: str) -> None:
    """Replace the section of RESULTS.md with this body's ``## `` heading (up to the next
    ``## ``), or append it; other sections are left as they are."""
    heading = body.lstrip().split("\n", 1)[0]
    assert heading.startswith("## "), heading
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start = text.find("\n" + heading + "\n")
    if start >= 0:
        nxt = text.find("\n## ", start + len(heading) + 1)
        rest = "" if nxt < 0 else "\n" + text[nxt + 1:]
        text = text[:start + 1] + body.strip() + "\n" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + body.strip() + "\n"
    RESULTS.write_text(text)
