"""Point reads and listings for one tenant, straight from the Lance tables.

Each read resolves a lake version (latest, a number or a tag) and opens the tables at the
Lance versions that version pins, so it sees one consistent snapshot; ``tenant`` is always
part of the filter. These are the service's read paths: a Lance scan with a filter costs a
few milliseconds, where a DuckDB connection with views costs tens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument, NotFound, ResourceExhausted
from .schema import PAYLOADS, STATUSES, STEPS, TRAJECTORIES, public_columns
from .tables import quote
from .versions import Version

if TYPE_CHECKING:
    import lance

    from .lake import Lake

MAX_PAGE = 1000
DEFAULT_PAGE = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class TrajectoryFilter:
    """Which trajectories a listing returns; empty fields match everything."""

    agent: str = ""
    agent_version: str = ""
    model: str = ""
    session_id: str = ""
    statuses: list[str] = field(default_factory=list)
    success: bool | None = None
    since_us: int | None = None  # started_at (ingested_at when unknown) >= since
    until_us: int | None = None
    min_reward: float | None = None
    tags: list[str] = field(default_factory=list)  # every one of them
    include_retracted: bool = False

    def where(self, tenant: str, columns: set[str]) -> str:
        """A Lance filter (columns a pinned old version lacks are treated as null)."""
        parts = [f"tenant = {quote(tenant)}"]
        for col in ("agent", "agent_version", "model", "session_id"):
            if getattr(self, col):
                parts.append(f"{col} = {quote(getattr(self, col))}" if col in columns else "false")
        if self.statuses:
            bad = [s for s in self.statuses if s not in STATUSES]
            if bad:
                raise InvalidArgument(f"status {bad[0]!r} is not one of {', '.join(STATUSES)}",
                                      field="filter.status")
            parts.append(f"status IN ({', '.join(quote(s) for s in self.statuses)})")
        if self.success is not None:
            parts.append(f"success = {str(self.success).lower()}")
        if self.min_reward is not None:
            if not math.isfinite(self.min_reward):
                raise InvalidArgument(f"must be a finite number, got {self.min_reward}",
                                      field="filter.min_reward")
            parts.append(f"reward >= {float(self.min_reward)!r}")
        if self.tags:
            parts.append(f"array_has_all(tags, [{', '.join(quote(t) for t in self.tags)}])"
                         if "tags" in columns else "false")
        start = "coalesce(started_at, ingested_at)"
        if self.since_us is not None:
            parts.append(f"{start} >= {_ts_literal(self.since_us, 'filter.since_us')}")
        if self.until_us is not None:
            parts.append(f"{start} < {_ts_literal(self.until_us, 'filter.until_us')}")
        if not self.include_retracted and "retracted_at" in columns:
            parts.append("retracted_at IS NULL")
        return " AND ".join(parts)


def _ts_literal(us: int, path: str) -> str:
    try:
        dt = _EPOCH + timedelta(microseconds=us)
    except OverflowError as e:
        raise InvalidArgument(f"time {us} (microseconds since 1970) is out of range",
                              field=path) from e
    return f"TIMESTAMP '{dt.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def wait_visible(lake: Lake, lsn: int, timeout: float = 30.0) -> None:
    """Read your writes: return once writes logged through ``lsn`` are committed."""
    if lsn <= 0 or lake.writer is None or lake.writer.lag["applied_lsn"] >= lsn:
        return
    if lake.writer.lag["submitted_lsn"] < lsn:
        raise InvalidArgument(f"min_lsn {lsn} is beyond the last logged position "
                              f"{lake.writer.lag['submitted_lsn']}; pass an lsn an ingest "
                              "call returned", field="min_lsn")
    try:  # only through ``lsn``: writes queued after it are not this reader's to wait for
        lake.writer.wait_applied(lsn, timeout, hurry=True)
    except TimeoutError as e:
        raise ResourceExhausted(f"writes through log position {lsn} are not committed after "
                                f"{timeout:g} s (the writer is behind); retry shortly",
                                retry_after_s=1.0) from e


def _resolve(lake: Lake, as_of: int | str | None) -> Version:
    """The version to read; the latest from the writer's memory when it has it (it records
    every commit it makes, and it is the lake's only writer), else from the catalog."""
    if as_of is None and lake.writer is not None and lake.catalog._latest is not None:
        return lake.catalog._latest
    return lake.version(as_of)


def _table(lake: Lake, version: Version, name: str) -> lance.LanceDataset | None:
    pinned = version.tables.get(name)
    return lake.store.dataset(name, pinned) if pinned else None


def _scan(ds: lance.LanceDataset | None, columns: list[str], where: str,
          **kw: Any) -> list[dict[str, Any]]:
    if ds is None:
        return []
    have = set(ds.schema.names)
    rows = ds.to_table(columns=[c for c in columns if c in have], filter=where,
                       **kw).to_pylist(maps_as_pydicts="lossy")
    missing = [c for c in columns if c not in have]
    for r in rows:  # a column the schema gained after this version was written: null
        r.update(dict.fromkeys(missing))
    return rows


def trajectory(lake: Lake, tenant: str, trajectory_id: str, *, as_of: int | str | None = None,
               full_payloads: bool = False, include_retracted: bool = False
               ) -> tuple[Version, dict[str, Any]]:
    """One trajectory row with ``steps`` (a list of step rows in index order). A retracted
    one (now, whatever the version read) is ``NotFound`` unless ``include_retracted`` (an
    audit by the lake's operator: never served to agents)."""
    if not trajectory_id:
        raise InvalidArgument("trajectory_id is empty; name the trajectory",
                              field="trajectory_id")
    version = _resolve(lake, as_of)
    where = f"tenant = {quote(tenant)} AND trajectory_id = {quote(trajectory_id)}"
    rows = _scan(_table(lake, version, "trajectories"), public_columns(TRAJECTORIES), where)
    if not rows:
        near = _starting_with(lake, version, tenant, trajectory_id)
        raise NotFound(f"no trajectory {trajectory_id!r:.200} in tenant {tenant!r} at version "
                       f"{version.version}. "
                       + (f"Cut short? Ids that start with it: {', '.join(near)}" if near else
                          "Just written? Reads see committed versions, a moment behind the "
                          "log: pass the lsn the write returned as min_lsn. Else list them "
                          "with ListTrajectories or `lake sql`"))
    _show_retractions(rows, _retracted_since(lake, tenant, version))
    if rows[0]["retracted_at"] is not None and not include_retracted:
        raise NotFound(f"trajectory {trajectory_id!r:.200} was retracted at "
                       f"{rows[0]['retracted_at']:%Y-%m-%d %H:%M:%S} UTC and is never served "
                       "again (its reason is in Versions; the lake's operator reads it with "
                       "`lake sql`)",
                       field="trajectory_id")
    steps = sorted(_scan(_table(lake, version, "steps"), public_columns(STEPS), where),
                   key=lambda s: s["index"])
    if full_payloads:
        _inline_payloads(lake, version, tenant, steps)
    return version, {**rows[0], "steps": steps}


def _starting_with(lake: Lake, version: Version, tenant: str, prefix: str,
                   n: int = 3) -> list[str]:
    """Up to ``n`` ids of the tenant that start with ``prefix`` (an id copied cut short)."""
    ds = _table(lake, version, "trajectories")
    if ds is None or len(prefix) < 4:
        return []
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    got = ds.to_table(columns=["trajectory_id"], limit=n, filter=(
        f"tenant = {quote(tenant)} AND retracted_at IS NULL AND trajectory_id LIKE "
        f"{quote(like + '%')}"))
    return [repr(t) for t in got["trajectory_id"].to_pylist()]


def _inline_payloads(lake: Lake, version: Version, tenant: str, steps: list[dict]) -> None:
    refs = sorted({s[c] for s in steps for c in ("input_ref", "output_ref") if s.get(c)})
    if not refs:
        return
    where = f"tenant = {quote(tenant)} AND sha256 IN ({', '.join(quote(r) for r in refs)})"
    data = {r["sha256"]: r["data"] for r in _scan(_table(lake, version, "payloads"),
                                                  public_columns(PAYLOADS), where)}
    for s in steps:
        for col in ("input", "output"):
            ref = s.get(f"{col}_ref")
            if ref in data:
                s[col] = data[ref]


def trajectories(lake: Lake, tenant: str, flt: TrajectoryFilter, *,
                 as_of: int | str | None = None, page_size: int = DEFAULT_PAGE,
                 after: str | None = None) -> tuple[Version, list[dict[str, Any]], bool]:
    """A page of trajectory rows (no steps) in trajectory_id order, after ``after``.

    Returns the version read, the rows and whether more follow."""
    if page_size < 0:
        raise InvalidArgument(f"page_size must be 0 (default {DEFAULT_PAGE}) or positive, "
                              f"got {page_size}", field="page_size")
    size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
    version = _resolve(lake, as_of)
    ds = _table(lake, version, "trajectories")
    if ds is None:
        return version, [], False
    where = flt.where(tenant, set(ds.schema.names))
    if after is not None:
        where += f" AND trajectory_id > {quote(after)}"
    since = _retracted_since(lake, tenant, version)
    if since and not flt.include_retracted:
        where += f" AND trajectory_id NOT IN ({', '.join(quote(t) for t in sorted(since))})"
    rows = _scan(ds, public_columns(TRAJECTORIES), where, order_by=["trajectory_id"],
                 limit=size + 1)
    _show_retractions(rows, since)
    return version, rows[:size], len(rows) > size


def _retracted_since(lake: Lake, tenant: str, version: Version) -> dict[str, tuple[int, str]]:
    """The tenant's retractions in force when ``version`` is an older one (a retraction
    holds whichever version is read): trajectory_id -> (retracted_at, reason)."""
    if version.version == _resolve(lake, None).version:
        return {}
    return {tid: v for (_, tid), v in lake.retractions(tenant).items()}


def _show_retractions(rows: list[dict[str, Any]], since: dict[str, tuple[int, str]]) -> None:
    """Rows of an older version as the retractions made since leave them: retracted."""
    for r in rows:
        if r.get("retracted_at") is None and r["trajectory_id"] in since:
            at, r["retract_reason"] = since[r["trajectory_id"]]
            r["retracted_at"] = _EPOCH + timedelta(microseconds=at)


def stats(lake: Lake, tenant: str) -> dict[str, Any]:
    """The tenant's row counts at the latest version, the version, the writer's lag."""
    version = _resolve(lake, None)
    out: dict[str, Any] = {"tenant": tenant, "version": version.version}
    for name in ("trajectories", "steps", "payloads"):
        ds = _table(lake, version, name)
        out[name] = ds.count_rows(filter=f"tenant = {quote(tenant)}") if ds else 0
    lag = lake.writer.lag if lake.writer is not None else {}
    out.update({k: lag.get(k, 0) for k in ("submitted_lsn", "applied_lsn", "pending_steps")})
    return out
