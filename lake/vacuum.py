"""Vacuum: the files of versions nobody can read any more go, so a lake's disk follows its
data and a chosen stretch of history, not every commit it ever made.

Every commit is a lake version pinning one Lance version of each data table, and Lance keeps
every version's files (a compaction rewrites rows; the old files stay for the old versions).
``vacuum(older_than)`` keeps readable: the latest version, every version made within
``older_than``, and every tagged version; of the data tables it removes exactly the Lance
versions no kept lake version pins (``cleanup_old_versions(versions=...)``: files still used
by a kept version stay). The log, catalog and token tables are not time-travelled: their
versions older than ``older_than`` go. A vacuum is itself a lake version (``vacuum``, its
``horizon`` and the tagged versions it kept), and reading a version it removed says so
(``Catalog.resolve``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .schema import ALL_TABLES, DATA_TABLES
from .tables import TableStore
from .versions import Version, vacuumed, vacuums


@dataclass
class VacuumResult:
    horizon: int  # versions from this one on stay readable (and tagged ones)
    tagged: list[int]  # older versions kept for their tags
    unreadable: list[int]  # lake versions whose files go (or would, in a dry run)
    removed: dict[str, int] = field(default_factory=dict)  # Lance versions removed per table
    bytes_removed: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "tagged": self.tagged,
                "unreadable": len(self.unreadable), "removed": self.removed,
                "bytes_removed": self.bytes_removed, "dry_run": self.dry_run}


def plan(versions: list[Version], tags: dict[str, int], older_than: timedelta,
         now: datetime | None = None) -> VacuumResult:
    """Which lake versions stay readable: from the oldest made within ``older_than`` (the
    latest at least), and the tagged ones before it."""
    now = now or datetime.now(UTC)
    done = vacuums(versions)
    live = [v.version for v in versions if not vacuumed(done, v.version)]
    recent = [v.version for v in versions if _aware(v.created_at) >= now - older_than]
    horizon = min(recent) if recent else max(live)
    tagged = sorted({n for n in tags.values() if n < horizon and n in live})
    return VacuumResult(horizon, tagged, [n for n in live if n < horizon and n not in tagged])


def run(store: TableStore, versions: list[Version], result: VacuumResult,
        older_than: timedelta) -> VacuumResult:
    """Remove what ``result`` (from ``plan``) says; the caller holds the writer's lock."""
    keep = [v for v in versions if v.version >= result.horizon or v.version in result.tagged]
    for name in DATA_TABLES:
        if not store.exists(name):
            continue
        pinned = {v.tables[name] for v in keep if name in v.tables}
        newest = max(pinned, default=store.version(name))
        ds = store.dataset(name)
        drop = [int(x["version"]) for x in ds.versions()
                if int(x["version"]) < newest and int(x["version"]) not in pinned]
        result.removed[name] = len(drop)
        if drop and not result.dry_run:
            result.bytes_removed += ds.cleanup_old_versions(
                versions=drop, error_if_tagged_old_versions=False).bytes_removed
    for name in ALL_TABLES:
        if name in DATA_TABLES or not store.exists(name):
            continue
        ds = store.dataset(name)
        cut = datetime.now() - older_than  # Lance's version times: naive, this host's clock
        result.removed[name] = sum(1 for x in ds.versions()[:-1] if x["timestamp"] < cut)
        if result.removed[name] and not result.dry_run:
            result.bytes_removed += ds.cleanup_old_versions(
                older_than=older_than, error_if_tagged_old_versions=False).bytes_removed
    return result


MAX_AGE_S = 100 * 365 * 86400  # past it, now - age is before any datetime


def parse_age(text: str) -> timedelta:
    """``7d``, ``36h``, ``90m``, ``0`` (a number alone: days) -> timedelta."""
    from .errors import InvalidArgument

    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    s = str(text).strip().lower()
    try:
        n = float(s[:-1]) * units[s[-1]] if s and s[-1] in units else float(s) * 86400
    except ValueError:
        n = -1
    if not n >= 0:
        raise InvalidArgument(f"{text!r} is no age: give a number and a unit, e.g. 7d, 36h, "
                              "90m (a number alone is days)", field="older_than")
    if n > MAX_AGE_S:
        raise InvalidArgument(f"{text!r} is more than 100 years: to keep every version, set "
                              "no age (keep_versions empty) and do not vacuum",
                              field="older_than")
    return timedelta(seconds=n)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
