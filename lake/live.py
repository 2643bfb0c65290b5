"""Live runs: what the lake remembers of the trajectories started, stepped and finished
through it, to refuse at the call, before anything is logged, what a commit would otherwise
drop without a word (``patches`` applies a trajectory's patches first-write-wins):

- a start that reuses the id of another run: another task, or another agent when both
  name one (``Conflict``; a retry repeats the first start and passes);
- a step sent again at an index the run has with other content (``Conflict``, per step:
  a retry re-sends the same content);
- on a finished run, steps it does not have yet or a finish with another outcome
  (``Conflict``: a finish is final);
- an end before the run's start (``InvalidArgument``).

A run is remembered from its first patch here, or recalled from the trajectories table
the first time a patch names it (a restarted server, or one forgotten past ``LIVE_KEPT``).
A start of an id the table cannot hold skips that lookup (a few ms in Lance, more than the
start's own log write): ``StoredIds`` answers from hashes of the stored ids, read once, kept
up to date from the writer's commits.
Step contents are remembered as digests of the steps logged through this process, the
newest ``STEPS_KEPT``: a step re-sent at an index logged before a restart (or forgotten)
is not compared, and the first write still wins at commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from .errors import Conflict, InvalidArgument, NotFound
from .patches import SPANS_PLACEHOLDER_TASK, Patch
from .purge import is_purged
from .tables import TableStore

OUTCOME = ("status", "success", "reward", "scores")  # what a finish sets, for good
LIVE_KEPT = 1_000_000  # runs whose state is remembered (~250 B each)
STEPS_KEPT = 500_000  # step digests remembered (~100 B each), the newest runs' first
_DIGEST = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS

Key = tuple[str, str]  # (tenant, trajectory_id)


@dataclass(slots=True)
class Run:
    started_at: int | None  # us
    task: int | None = None  # who started it: a hash of its task (None: not known, e.g. a
    agent: str | None = None  # trace's placeholder); texts are long, runs many
    outcome: dict[str, Any] | None = None  # once finished
    steps: dict[int, int] | None = None  # index -> digest of the content logged here


def digest(step: dict[str, Any]) -> int:
    """A step row's content, to tell a retry (the same) from another step at its index."""
    return hash(orjson.dumps(step, option=_DIGEST, default=str))


class LiveRuns:
    def __init__(self, store: TableStore, flush: Callable[[], None]):
        self.store, self.flush = store, flush
        self.ids = StoredIds(store)
        self._runs: dict[Key, Run] = {}  # oldest first
        self._stepped: dict[Key, None] = {}  # runs holding digests, oldest first
        self._digests = 0
        self._mutex = threading.Lock()  # the bookkeeping (no I/O under it)
        self._stripes = [threading.Lock() for _ in range(64)]

    def lock(self, key: Key) -> threading.Lock:
        """Held from a patch's check until it is logged and remembered: two patches of one
        run (a start racing another, one index sent twice) are checked one after the other."""
        return self._stripes[hash(key) % len(self._stripes)]

    def __contains__(self, key: Key) -> bool:
        return key in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def clear(self) -> None:
        """Forget every run (a restore: their state is the restored rows' now)."""
        self._runs.clear()
        self._stepped.clear()
        self._digests = 0
        self.ids.reset()

    def forget(self, keys: list[Key]) -> None:
        """Forget these runs (purged): their next patch recalls them from the table."""
        with self._mutex:
            for key in keys:
                self._forget_steps(key, self._runs.pop(key, None))

    # -- before logging ---------------------------------------------------------------------
    def check(self, patch: Patch, tenant: str) -> None:
        """Raise if ``patch`` (start, steps or finish) would change what the lake must keep."""
        key = (tenant, patch.trajectory_id)
        run = self._runs.get(key)
        if run is None:  # its state as stored (not patched here, or forgotten); a start
            run = self._recall(key, must_exist=patch.kind != "start")  # may be new
        if run is None:
            return
        if patch.kind == "start":
            self._check_same_run(patch, run, key)
        if run.outcome is not None:
            self._check_open(patch, run.outcome, tenant)
        if patch.kind == "start" and patch.record.steps:
            for i, e in self.clashes(key, patch.record.steps):
                raise Conflict(e.message, field=f"steps[{i}].index")
        if patch.kind == "finish" and "ended_at" in patch.fields:
            self._check_ends_after_start(patch, run, key)

    def clashes(self, key: Key, steps: list[dict[str, Any]]) -> list[tuple[int, Conflict]]:
        """The steps (position, error) sent again at an index with other content."""
        run = self._runs.get(key)
        known = run.steps if run is not None else None
        if not known:
            return []
        out = []
        for i, s in enumerate(steps):
            had = known.get(s["index"])
            if had is not None and had != digest(s):
                out.append((i, Conflict(
                    f"trajectory {key[1]!r:.200} already has a step at index {s['index']} "
                    "with other content: a retry must re-send the same step, and a new step "
                    f"needs the next free index (above {max(known)})", field="steps[0].index")))
        return out

    # -- after logging ----------------------------------------------------------------------
    def logged(self, patch: Patch, tenant: str) -> None:
        """Remember what a logged patch says about its run."""
        key = (tenant, patch.trajectory_id)
        with self._mutex:
            self._logged(key, patch)

    def _logged(self, key: Key, patch: Patch) -> None:
        run = self._runs.get(key)
        traj = patch.record.trajectory
        if run is None:
            started = traj.get("started_at") if patch.kind == "start" else None
            run = self._remember(key, Run(started))
        if patch.kind == "start" and run.task is None:
            run.task, run.agent = _who(traj)
            if run.started_at is None:
                run.started_at = traj.get("started_at")
        if patch.kind == "finish" and run.outcome is None:
            run.outcome = {f: traj.get(f) for f in OUTCOME}
        if patch.kind != "spans" and patch.record.steps:
            self._digest(key, run, patch.record.steps)

    def _remember(self, key: Key, run: Run) -> Run:
        self._runs[key] = run
        if len(self._runs) > LIVE_KEPT:
            oldest = next(iter(self._runs))
            self._forget_steps(oldest, self._runs.pop(oldest, None))
        return run

    def _digest(self, key: Key, run: Run, steps: list[dict[str, Any]]) -> None:
        if run.steps is None:
            run.steps = {}
            self._stepped[key] = None
        before = len(run.steps)
        for s in steps:
            run.steps.setdefault(s["index"], digest(s))  # the first write wins, as at commit
        self._digests += len(run.steps) - before
        while self._digests > STEPS_KEPT and self._stepped:
            oldest = next(iter(self._stepped))
            self._forget_steps(oldest, self._runs.get(oldest))

    def _forget_steps(self, key: Key, run: Run | None) -> None:
        if key in self._stepped:
            del self._stepped[key]
            if run is not None and run.steps is not None:
                self._digests -= len(run.steps)
                run.steps = None

    # -- the checks -------------------------------------------------------------------------
    def _recall(self, key: Key, must_exist: bool) -> Run | None:
        """The stored run's start, starter and outcome (``NotFound`` if ``must_exist``)."""
        if not must_exist and not self.ids.maybe(key):
            return None
        row = self._stored(key, ["started_at", "task", "agent", "retract_reason", *OUTCOME])
        if row is not None and is_purged(row):
            raise Conflict(f"trajectory {key[1]!r:.200} was purged ({row['retract_reason']!r:.200}"
                           "): it takes no more starts, steps or finish; send the run under a "
                           "new trajectory_id", field="trajectory_id")
        if row is None:
            if must_exist:
                raise NotFound(f"trajectory {key[1]!r:.200} was not started: call "
                               "StartTrajectory (start_trajectory) first",
                               field="trajectory_id")
            return None
        run = Run(row["started_at"], *_who(row))
        if row["status"] != "running":
            row["scores"] = dict(row["scores"]) if row["scores"] else None  # a map: pairs
            run.outcome = {f: row[f] for f in OUTCOME}
        with self._mutex:
            return self._remember(key, run)

    def _stored(self, key: Key, columns: list[str]) -> dict[str, Any] | None:
        """The run's stored row (``columns``; ``started_at`` in us), None if not stored."""
        rows = self.store.lookup("trajectories", key[0], "trajectory_id", [key[1]], columns)
        if not rows.num_rows:
            return None
        if "started_at" in columns:
            rows = rows.set_column(rows.schema.get_field_index("started_at"), "started_at",
                                   rows["started_at"].cast(pa.int64()))
        return rows.to_pylist()[0]

    def _check_same_run(self, patch: Patch, run: Run, key: Key) -> None:
        task, agent = _who(patch.record.trajectory)
        if run.task is None or task is None:
            return
        other = task != run.task or (agent and run.agent and agent != run.agent)
        if other:
            self.flush()  # the run's text, for the message (a rare path)
            got = self._stored(key, ["task"])
            was = (f"task {got['task']!r:.120}" if got else "another task") + \
                (f", agent {run.agent!r:.60}" if run.agent else "")
            if run.outcome is not None:
                was += ", finished: " + ", ".join(f"{f} {v}" for f, v in run.outcome.items()
                                                  if v is not None)
            raise Conflict(f"trajectory_id {patch.trajectory_id!r:.200} is taken by another "
                           f"run ({was}): a start again must repeat the first (a retry). "
                           "Give the new run its own trajectory_id (the client makes one when "
                           "you leave it out); parent_id links a new attempt to the old",
                           field="trajectory_id")

    def _check_open(self, patch: Patch, done: dict[str, Any], tenant: str) -> None:
        """A finished trajectory is final: a finish again must say the same (a retry), and
        steps, appended or with a start, may only be ones already stored (a retry)."""
        tid, what = patch.trajectory_id, ", ".join(
            f"{f} {v}" for f, v in done.items() if v is not None)
        if patch.kind == "finish":
            new = patch.record.trajectory
            changed = [f for f in OUTCOME if f in patch.fields and new.get(f) != done[f]]
            if changed:
                raise Conflict(f"trajectory {tid!r:.200} is already finished ({what}): a finish "
                               f"is final, and this one changes {', '.join(changed)}. Report "
                               "later judgements with ReportOutcome, or record a new attempt "
                               "as a new trajectory (parent_id links it)", field=changed[0])
            return
        if not patch.record.steps:
            return
        self.flush()  # a retried append's steps may still be on their way to the tables
        stored = set(self.store.lookup("steps", tenant, "trajectory_id", [tid],
                                       ["index"])["index"].to_pylist())
        new = sorted(s["index"] for s in patch.record.steps if s["index"] not in stored)
        if new and patch.kind == "start":
            raise Conflict(f"trajectory {tid!r:.200} is already finished ({what}): a start "
                           f"again may only repeat the first (a retry), and this one brings "
                           f"steps it does not have (index {', '.join(map(str, new[:5]))}). "
                           "Record a new attempt as a new trajectory (parent_id links it)",
                           field="trajectory_id")
        if new:
            raise Conflict(f"trajectory {tid!r:.200} is finished ({what}): steps cannot be "
                           "added after FinishTrajectory. Log every step before finishing, or "
                           "record a new attempt as a new trajectory (parent_id links it)",
                           field="trajectory_id")

    def _check_ends_after_start(self, patch: Patch, run: Run, key: Key) -> None:
        ended = patch.record.trajectory.get("ended_at")
        started = run.started_at
        if ended is None:
            return
        if started is None:  # not started here (or without a time): as stored
            self.flush()
            got = self._stored(key, ["started_at"])
            started = got["started_at"] if got else None
        if started is not None and ended < started:
            iso = [str(datetime.fromtimestamp(t / 1e6, UTC)) for t in (ended, started)]
            raise InvalidArgument(
                f"ended_at {iso[0]} is before the trajectory's started_at {iso[1]}: a run "
                "ends after it starts; send the time it ended (default: now)",
                field="ended_at")


def _who(row: dict[str, Any]) -> tuple[int | None, str | None]:
    """(hash of the task, agent) of a start or stored run; no task while a trace's spans
    stand in."""
    task = row.get("task")
    if task is None or task == SPANS_PLACEHOLDER_TASK:
        return None, None
    return hash(task), row.get("agent") or None


class StoredIds:
    """Whether the trajectories table may hold an id: no false negatives (every id stored
    when the set was read, and every one committed through this lake since), few false
    positives (64-bit hashes, in this process: Python's). ~8 bytes an id. Ids written by
    another process sharing the lake are seen when it is read again (a restore)."""

    MERGE_AT = 50_000  # recent ids kept in a set before they join the sorted array

    def __init__(self, store: TableStore):
        self.store = store
        self._sorted: np.ndarray | None = None  # read on first use
        self._recent: set[int] = set()
        self._during: set[int] | None = None  # committed while a read runs (None: no read)
        self._reset = 0  # resets so far: a read a reset overtook is read again
        self._lock = threading.Lock()  # the state above, held for no I/O
        self._reading = threading.Lock()  # one read at a time; the others wait for it

    def maybe(self, key: Key) -> bool:
        h = hash(key)
        if h in self._recent:
            return True
        arr = self._sorted if self._sorted is not None else self._read()
        i = int(np.searchsorted(arr, h))
        return i < len(arr) and int(arr[i]) == h

    def warm(self) -> None:
        """Read the stored ids now (1M in ~2 s), not in the first start that asks."""
        if self._sorted is None:
            self._read()

    def committed(self, written: dict[str, list[dict[str, Any]]] | None) -> None:
        """A commit wrote these trajectory rows (None: any row may have changed). Never
        waits for a read of the table: the writer calls it."""
        if written is None:
            self.reset()
            return
        hashes = (hash((tenant, r["trajectory_id"]))
                  for tenant, rows in written.items() for r in rows)
        with self._lock:
            if self._during is not None:  # a read runs: it may have missed these
                self._during.update(hashes)
            elif self._sorted is not None:  # else not read yet: it will be, with these
                self._recent.update(hashes)
                if len(self._recent) > self.MERGE_AT:
                    self._sorted = np.union1d(self._sorted, _array(self._recent))
                    self._recent = set()

    def reset(self) -> None:
        with self._lock:
            self._sorted = None
            self._reset += 1

    def _read(self) -> np.ndarray:
        with self._reading:
            while True:
                with self._lock:
                    if self._sorted is not None:
                        return self._sorted
                    self._during, resets = set(), self._reset
                arr = self._load()  # the table as of now or later: commits from here on
                with self._lock:     # are in it or in _during
                    during, self._during = self._during, None
                    if self._reset == resets:
                        self._sorted = np.union1d(arr, _array(during)) if during else arr
                        return self._sorted

    def _load(self) -> np.ndarray:
        if not self.store.exists("trajectories"):
            return np.empty(0, np.int64)
        t = self.store.dataset("trajectories").to_table(columns=["tenant", "trajectory_id"])
        keys = zip(t["tenant"].to_pylist(), t["trajectory_id"].to_pylist(), strict=True)
        return np.unique(np.fromiter((hash(k) for k in keys), np.int64, t.num_rows))


def _array(hashes: set[int]) -> np.ndarray:
    return np.fromiter(hashes, np.int64, len(hashes))
