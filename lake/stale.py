"""Runs left running: an agent that died mid-run never finishes its trajectory, which then
reads ``running`` forever (and skews every success rate that counts it). ``abandon``
finishes, as ``abandoned``, the runs with no start or step for ``older_than``: the last
step's time as the agent gave it (steps without one do not count; the Python client gives
every step one), the run's start, and when it was loaded (so a backfill of runs still
running, their times long past, waits ``older_than`` from its load)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import Conflict, NotFound

_STALE = """
select t.tenant, t.trajectory_id
from trajectories t
left join (select tenant, trajectory_id, max(started_at) as last from steps group by 1, 2) s
  using (tenant, trajectory_id)
where t.status = 'running'
  and greatest(s.last, t.started_at, t.ingested_at) < ?  -- NULLs are passed over
order by 1, 2
"""


def stale_runs(lake: Any, older_than: timedelta) -> list[tuple[str, str]]:
    """(tenant, trajectory_id) of every run ``running`` with nothing newer than
    ``older_than``."""
    if not lake.store.exists("trajectories"):
        return []
    cut = datetime.now(UTC) - older_than
    con = lake.connect(all_tenants=True)
    return [(t, tid) for t, tid in con.execute(_STALE, [cut]).fetchall()]


def abandon(lake: Any, older_than: timedelta) -> list[tuple[str, str]]:
    """Finish the stale runs as ``abandoned``; returns those finished (a run that finished
    or was retracted meanwhile is left as it is)."""
    done = []
    for tenant, tid in stale_runs(lake, older_than):
        try:
            lake.finish_trajectory(tid, tenant=tenant, status="abandoned")
        except (Conflict, NotFound):
            continue
        done.append((tenant, tid))
    return done
