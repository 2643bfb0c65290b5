"""Progress display for long commands (rich), off when not on a terminal or asked."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def bar(enabled: bool, label: str) -> Iterator[Callable[[int, int], None]]:
    if not enabled or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), transient=True) as p:
        task = p.add_task(label, total=None)
        yield lambda done, total: p.update(task, completed=done, total=total)


@contextlib.contextmanager
def rows_bar(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar counting rows, one line per table / step (stderr, terminals only)."""
    if not enabled or not sys.stderr.isatty():
        yield lambda label, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as p:

        def tick(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = p.add_task(label, total=total)
            p.update(tasks[label], completed=done, total=total)

        yield tick
