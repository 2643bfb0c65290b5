"""Acceptance: SIGKILL at any moment never loses an acknowledged trajectory.

A child process (real Python, real Lance, real fsync) ingests a slice of a large file built
from the dev trajectories and prints one line per durable submit (``ingest(wait=False)``
returned: the records are fsynced in the write-ahead log). The test SIGKILLs it at a
seeded-random moment of a chosen kind: during the first open; a few ms after the n-th
submit (validating / appending to the log); as soon as the log grows (an entry written or
being fsynced, not yet acknowledged); as soon as a table version appears (inside a lake
commit: tables moved, lake version row not yet written), also when that commit is the
last one, with no later log entry to replay; while a compaction writes its output; at a
random time; and (replay trials) a restarted process is killed again inside a commit of
its log replay. All trials share ONE lake directory: each restart replays into a
lake holding the earlier trials' data. Each trial stamps its records with a generation
(an unknown field, kept as ``meta.gen``), so every trial updates what earlier ones wrote
(steps deleted and rewritten, trajectories merged) instead of finding it unchanged.

After each kill the lake is reopened (which replays the log) and must:
- open;
- hold every trajectory acknowledged so far, in this or any earlier trial, and for each
  acknowledged version either that version or a newer one at least as progressed, or a
  more progressed one (an acknowledged update is never lost or rolled back);
- have no (tenant, trajectory_id) twice in ``trajectories`` and no (trajectory_id, index)
  twice in ``steps``, no steps without their trajectory, and exactly ``n_steps`` steps
  (indexes 0..n-1, of a version that was sent) under each trajectory: never half-written.
A final uninterrupted run ingests the whole file and everything is counted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from lake import Lake, Settings
from lake.records import progress
from lake.wal import _scan

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 20250801
N_TRAJECTORIES = 3000
# Small groups, frequent commits, compaction as soon as a table has 3 fragments (every
# COMPACT_EVERY=8 commits): the writer is busy in Lance most of the time, where kills hurt.
LAKE_ENV = {"LAKE_COMPACT_FRAGMENTS": "2", "LAKE_FLUSH_ROWS": "2000",
            "LAKE_FLUSH_INTERVAL_MS": "20", "LAKE_WAL_SEGMENT_BYTES": str(4 << 20)}
# Replay trials: big groups (slow commits) let a backlog build up in the log, so the next
# process has a long replay to be killed in.
BACKLOG_ENV = {**LAKE_ENV, "LAKE_FLUSH_ROWS": "30000", "LAKE_FLUSH_INTERVAL_MS": "3000"}
FINAL_GEN = 999

CHILD = r"""
import sys
import orjson
data, src, start, stop, batch, gen = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
lines = open(src, "rb").read().splitlines()
from lake import Lake
print("start", flush=True)
lake = Lake.open(data)  # settings from the LAKE_* environment the test passes
print("ready", flush=True)
for i in range(start, stop, batch):
    end = min(i + batch, stop)
    res = lake.ingest([{**orjson.loads(x), "gen": gen} for x in lines[i:end]], wait=False)
    assert not res.rejected, res.rejected
    # ingest(wait=False) returned: the records are fsynced in the log, i.e. acknowledged
    print(f"acked {i} {end} {res.lsn}", flush=True)
lake.flush()
print("flushed", flush=True)
lake.close()
print("closed", flush=True)
"""


@dataclass(frozen=True)
class Line:
    """One line of the generated file: which trajectory, and which version of it."""

    tid: str
    n_steps: int
    status: str
    kinds: str  # the step kinds in index order: tells a version's steps from another's


def _status(rec: dict) -> str:
    success = (rec.get("outcome") or {}).get("success")
    return rec.get("status") or ("running" if success is None else
                                 ("succeeded" if success else "failed"))


def _make_file(path: Path, dev: list[dict]) -> list[Line]:
    """N_TRAJECTORIES full trajectories (new ids); every 10th also appears earlier in the
    file as a shorter "running" prefix, so later lines update earlier ones."""
    out, lines = [], []

    def emit(rec: dict) -> None:
        lines.append(orjson.dumps(rec))
        out.append(Line(rec["trajectory_id"], len(rec["steps"]), _status(rec),
                        ",".join(s["kind"] for s in rec["steps"])))

    def full(i: int) -> dict:
        return {**dev[i % len(dev)], "trajectory_id": f"crash-{i:05d}"}

    for i in range(N_TRAJECTORIES):
        emit(full(i))
        j = i + 20
        if i % 10 == 0 and j < N_TRAJECTORIES:
            rec = full(j)
            rec["steps"] = rec["steps"][: max(1, len(rec["steps"]) // 2)]
            rec.pop("outcome", None)
            rec["status"] = "running"
            emit(rec)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return out


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}
    env.update(extra, LANCE_LOG="error", PYTHONPATH=str(REPO))
    return env


@dataclass
class Run:
    rc: int
    killed: bool
    out: list[str]
    by_trigger: bool = False  # killed because kill_when fired (not at the deadline)
    ready_after: float | None = None  # seconds from spawn to the lake being open

    @property
    def acked(self) -> list[tuple[int, int]]:
        return [(int(p[1]), int(p[2])) for p in (x.split() for x in self.out) if p[0] == "acked"]

    @property
    def lsns(self) -> list[int]:
        return [int(p[3]) for p in (x.split() for x in self.out) if p[0] == "acked"]


def _run(script: Path, args: list[str], env: dict[str, str], cwd: Path,
         kill_when: Callable[[list[str]], bool] | None, log: Path, deadline: float = 8.0) -> Run:
    """Run the child; once it printed "start" (its imports are done), poll ``kill_when(out)``
    every millisecond and SIGKILL the child's process group as soon as it is true, or after
    ``deadline`` seconds. Returns everything the child printed before it died."""
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                                stderr=err, env=env, cwd=cwd, start_new_session=True)
    out: list[str] = []
    started = threading.Event()

    t0 = time.monotonic()
    ready: list[float] = []

    def pump() -> None:
        for raw in proc.stdout:  # type: ignore[union-attr]
            out.append(raw.decode().strip())
            if out[-1] == "ready":
                ready.append(time.monotonic() - t0)
            started.set()
        started.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = by_trigger = False
    try:
        assert started.wait(60), "the child did not start"
        if kill_when is not None:
            t_end = time.monotonic() + deadline
            while proc.poll() is None:
                by_trigger = kill_when(out)
                if by_trigger or time.monotonic() > t_end:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.001)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(30)
    proc.stdout.close()  # type: ignore[union-attr]
    return Run(rc, killed, out, by_trigger, ready[0] if ready else None)


class Trigger:
    """When to kill, judged from outside the child: its acks, or the files Lance writes."""

    def __init__(self, data: Path):
        self.data = data

    def after(self, seconds: float) -> Callable[[list[str]], bool]:
        """``seconds`` after the child's imports are done (the first check)."""
        t: list[float] = []

        def check(out: list[str]) -> bool:
            if not t:
                t.append(time.monotonic() + seconds)
            return time.monotonic() >= t[0]
        return check

    def acks(self, n: int, then: float) -> Callable[[list[str]], bool]:
        """``then`` seconds after the n-th durable submit: validating / appending to the log."""
        fire: list[float] = []

        def check(out: list[str]) -> bool:
            if not fire and sum(x.startswith("acked") for x in out) >= n:
                fire.append(time.monotonic() + then)
            return bool(fire) and time.monotonic() >= fire[0]
        return check

    def wal_append(self, skip: int) -> Callable[[list[str]], bool]:
        """As soon as the log grows (after ``skip`` appends): an entry is being written or
        fsynced, not yet acknowledged."""
        seen: list[int] = []

        def check(out: list[str]) -> bool:
            try:
                size = sum(f.stat().st_size for f in (self.data / "_wal").glob("*.wal"))
            except FileNotFoundError:  # a segment dropped meanwhile
                return False
            if seen and size > seen[-1]:
                seen.append(size)
                return len(seen) > skip + 1
            seen[-1:] = [size]
            return False
        return check

    def manifests(self, tables: tuple[str, ...]) -> int:
        n = 0
        for t in tables:
            try:
                n += len(os.listdir(self.data / f"{t}.lance" / "_versions"))
            except FileNotFoundError:  # not created yet (or being created)
                pass
        return n

    def commit(self, skip: int, tables: tuple[str, ...] = ("steps", "trajectories")
               ) -> Callable[[list[str]], bool]:
        """As soon as a new table version appears (after ``skip`` of them): the writer is
        inside a lake commit, its data tables moved but its lake version row not yet written."""
        base: list[int] = []

        def check(out: list[str]) -> bool:
            n = self.manifests(tables)
            if not base:
                base.append(n)
            return n > base[0] + skip
        return check

    def compaction(self, then: float) -> Callable[[list[str]], bool]:
        """``then`` seconds after a new steps data file grows past 1 MB: only compaction
        writes files that big (a commit writes at most ~4000 steps, ~0.5 MB)."""
        steps = self.data / "steps.lance" / "data"
        before = set(os.listdir(steps)) if steps.exists() else set()
        fire: list[float] = []

        def check(out: list[str]) -> bool:
            if not fire and steps.exists():
                with os.scandir(steps) as files:
                    for e in files:
                        try:
                            big = e.name not in before and e.stat().st_size > 1 << 20
                        except FileNotFoundError:  # a temporary file, renamed meanwhile
                            continue
                        if big:
                            fire.append(time.monotonic() + then)
                            break
            return bool(fire) and time.monotonic() >= fire[0]
        return check


def _wal_tail(data: Path) -> tuple[int, int]:
    """(last complete LSN in the log, bytes after it: a torn tail)."""
    torn = last_lsn = 0
    for seg in sorted((data / "_wal").glob("*.wal")):
        end = 0
        for lsn, _payload, end_ in _scan(seg):
            last_lsn, end = lsn, end_
        torn += seg.stat().st_size - end
    return last_lsn, torn


def _where_it_died(data: Path) -> dict[str, object]:
    """Evidence of what the killed process was doing, read before anything reopens the lake:
    a torn log tail (killed mid-append), Lance tables ahead of the last lake version (killed
    mid-commit) and which operations those un-pinned table versions are (Rewrite: compaction)."""
    import lance

    last_lsn, torn = _wal_tail(data)
    ahead: dict[str, list[str]] = {}
    vdir = data / "_versions.lance"

    def opened(uri: Path) -> Any:
        try:  # a table killed while being created has no version yet
            return lance.dataset(str(uri)) if uri.exists() else None
        except ValueError:
            return None

    if (versions := opened(vdir)) is not None:
        rows = versions.to_table().to_pylist()
        pinned = orjson.loads(max(rows, key=lambda r: r["version"])["tables"]) if rows else {}
        for name in ("trajectories", "steps", "payloads", "_versions"):
            ds = opened(data / f"{name}.lance")
            if ds is None:
                continue
            base = pinned.get(name, ds.version) if name != "_versions" else ds.version
            if ds.version > base:
                ops = [type(t.operation).__name__ for t in ds.get_transactions(ds.version - base)]
                ahead[name] = ops
    return {"torn_bytes": torn, "wal_last_lsn": last_lsn, "ahead": ahead}


Acked = dict[str, dict[tuple[int, int], int]]  # id -> {progress: latest generation acked}


def _verify(data: Path, settings: Settings, lines: list[Line], acked: Acked) -> tuple[int, int]:
    """Reopen (replaying the log) and check the invariants; returns (trajectories, steps)."""
    versions: dict[str, set[tuple[int, str, str]]] = {}
    for ln in lines:
        versions.setdefault(ln.tid, set()).add((ln.n_steps, ln.status, ln.kinds))
    with Lake.open(settings=settings) as lake:
        dup_t = lake.sql("select trajectory_id, count(*) from trajectories "
                         "group by all having count(*) > 1").fetchall()
        assert dup_t == [], f"duplicated trajectories: {dup_t[:5]}"
        dup_s = lake.sql('select trajectory_id, "index", count(*) from steps '
                         "group by all having count(*) > 1").fetchall()
        assert dup_s == [], f"duplicated steps: {dup_s[:5]}"
        orphans = lake.sql("select distinct trajectory_id from steps where trajectory_id not in "
                           "(select trajectory_id from trajectories)").fetchall()
        assert orphans == [], f"steps without their trajectory: {orphans[:5]}"
        rows = lake.sql(
            "select t.trajectory_id, t.n_steps, t.status, (t.meta->>'gen')::int, "
            'count(s."index"), min(s."index"), max(s."index"), '
            'string_agg(s.kind, \',\' order by s."index") '
            "from trajectories t left join steps s using (trajectory_id) group by all").fetchall()
        stored: dict[str, tuple[tuple[int, int], int]] = {}
        for tid, n, status, gen, count, lo, hi, kinds in rows:
            assert count == n, f"{tid}: n_steps={n} but {count} steps stored (half-written)"
            assert n == 0 or (lo, hi) == (0, n - 1), f"{tid}: step indexes {lo}..{hi}, n={n}"
            assert (n, status, kinds or "") in versions[tid], \
                f"{tid}: stored ({n}, {status}) with steps {kinds!r} is no version we sent"
            stored[tid] = (progress(n, status), gen)
        lost = [tid for tid in acked if tid not in stored]
        assert not lost, f"{len(lost)} acknowledged trajectories lost, e.g. {lost[:5]}"
        # an acknowledged version (progress p, generation g) was applied after everything
        # acknowledged before it: what is stored now is more progressed, or as progressed
        # and at least as new
        stale = [(tid, stored[tid], p, g) for tid, by_p in acked.items() for p, g in by_p.items()
                 if not (stored[tid][0] > p or (stored[tid][0] == p and stored[tid][1] >= g))]
        assert not stale, f"acknowledged versions lost or rolled back: {stale[:5]}"
        # the table heads the next commit will pin must be clean too, not just the snapshot
        head = lake.store.dataset("trajectories").to_table(columns=["trajectory_id"])
        assert head.num_rows == len(set(head["trajectory_id"].to_pylist()))
        return len(stored), sum(p[0] for p, _ in stored.values())


def _setup(tmp_path: Path, dev_records: list[dict], child: str
           ) -> tuple[Path, list[Line], Path, Path, Path, Settings]:
    """The big file, the child script, where the lake and the child's stderr go, and the
    settings the children run with (``LAKE_ENV``)."""
    src = tmp_path / "big.jsonl"
    lines = _make_file(src, dev_records)
    script = tmp_path / "child.py"
    script.write_text(child)
    settings = Settings(data=str(tmp_path / "lake"), compact_fragments=2, flush_rows=2000,
                        flush_interval_ms=20, wal_segment_bytes=4 << 20)
    return src, lines, script, tmp_path / "lake", tmp_path / "child-stderr.log", settings


def test_sigkill_never_loses_acknowledged_trajectories(tmp_path: Path, dev_records):
    t0 = time.monotonic()
    rng = random.Random(SEED)
    src, lines, script, data, log, settings = _setup(tmp_path, dev_records, CHILD)
    acked: Acked = {}

    def ack(run: Run, gen: int) -> int:
        n = 0
        for lo, hi in run.acked:
            for ln in lines[lo:hi]:
                acked.setdefault(ln.tid, {})[progress(ln.n_steps, ln.status)] = gen
                n += 1
        return n

    trig = Trigger(data)
    # trial 0 dies in the very first open (creating the tables); the others, shuffled:
    kinds = (["acks"] * 3 + ["wal"] * 4 + ["commit"] * 5 + ["last"] * 3 + ["compaction"] * 4
             + ["random"] * 2 + ["replay"] * 3)
    rng.shuffle(kinds)
    report = []
    for trial, kind in enumerate(["open", *kinds]):
        start = rng.randrange(len(lines) - 500)
        stop = min(len(lines), start + rng.randint(800, 2000))
        batch = 50 if kind == "replay" else rng.choice([5, 10, 25, 50])
        if kind == "last":  # one submit, then nothing: the log holds no later entry
            stop = start + (batch := 40)
        n_submits = -(-(stop - start) // batch)
        if kind == "open":
            when = trig.after(rng.uniform(0.0, 0.15))
        elif kind == "random":
            when = trig.after(rng.uniform(0.1, 2.0))
        elif kind == "acks":
            when = trig.acks(rng.randint(1, 30), rng.uniform(0.0, 0.03))
        elif kind == "wal":
            when = trig.wal_append(rng.randint(0, 10))
        elif kind == "commit":
            when = trig.commit(rng.randint(0, 6))
        elif kind == "last":  # its trajectories are written, its version row is not (yet)
            when = trig.commit(0, tables=("trajectories",))
        elif kind == "compaction":
            when = trig.compaction(rng.uniform(0.0, 0.15))
        else:  # replay: kill late, with a backlog in the log
            when = trig.acks(rng.randint(n_submits // 3, n_submits - 2), rng.uniform(0.0, 0.03))
        args = [str(data), str(src), str(start), str(stop), str(batch), str(trial)]
        env = _child_env(BACKLOG_ENV if kind == "replay" else LAKE_ENV)
        wal_before = _wal_tail(data)[0] if data.exists() else 0
        run = _run(script, args, env, tmp_path, when, log)
        assert run.killed or (run.rc == 0 and run.out[-1] == "closed"), \
            (run.rc, run.out[-3:], log.read_text()[-3000:])
        if run.killed:
            assert run.rc == -signal.SIGKILL
        entry = {"trial": trial, "kind": kind, "acked": ack(run, trial), "killed": run.killed,
                 "by_trigger": run.by_trigger, "ready_after": run.ready_after,
                 **_where_it_died(data)}
        # the log holds an entry the child never got to acknowledge: killed mid-append
        entry["logged_not_acked"] = entry.pop("wal_last_lsn") > max(run.lsns, default=wal_before)
        if kind == "replay":  # a second process replays that log; killed inside a commit
            rrun = _run(script, [str(data), str(src), "0", "0", "1", "0"], _child_env(LAKE_ENV),
                        tmp_path, trig.commit(rng.randint(0, 3)), log)
            entry["replay"] = {"killed": rrun.killed, "by_trigger": rrun.by_trigger,
                               "finished_replay": "ready" in rrun.out, **_where_it_died(data)}
        entry["lake"] = _verify(data, settings, lines, acked)
        report.append(entry)

    # the final run completes: every trajectory lands, each at its full, newest version
    run = _run(script, [str(data), str(src), "0", str(len(lines)), "50", str(FINAL_GEN)],
               _child_env(LAKE_ENV), tmp_path, None, log)
    assert run.rc == 0 and run.out[-1] == "closed", (run.rc, run.out[-3:], log.read_text()[-2000:])
    assert ack(run, FINAL_GEN) == len(lines)
    n_traj, n_steps = _verify(data, settings, lines, acked)
    full = {ln.tid: ln for ln in lines if ln.status != "running"}
    assert len(full) == N_TRAJECTORIES
    assert (n_traj, n_steps) == (N_TRAJECTORIES, sum(ln.n_steps for ln in full.values()))
    with Lake.open(str(data), readonly=True) as lake:
        assert lake.count("trajectories") == N_TRAJECTORIES
        assert lake.count("steps") == n_steps
        assert lake.sql("select count(*) from trajectories where (meta->>'gen')::int = "
                        f"{FINAL_GEN} and status <> 'running'").fetchall() == [(N_TRAJECTORIES,)]

    # where the kills landed (printed with -s / on failure)
    killed = [e for e in report if e["killed"]]
    mid_commit = [e for e in report if e["ahead"] or e.get("replay", {}).get("ahead")]
    compacting = [e for e in killed if e["kind"] == "compaction" and e["by_trigger"]]
    torn = [e for e in killed if e["torn_bytes"]]
    mid_append = [e for e in killed if e["logged_not_acked"] or e["torn_bytes"]]
    replays = [e["replay"] for e in report if "replay" in e]
    hits = Counter(name for e in mid_commit for name in e["ahead"])
    cut_replays = sum(r["killed"] and not r["finished_replay"] for r in replays)
    print(f"\n{len(report)} trials in {time.monotonic() - t0:.0f}s: {len(killed)} killed, "
          f"{len(mid_commit)} inside a lake commit (tables ahead of the lake version: "
          f"{dict(hits)}), {len(compacting)} while compacting, {len(mid_append)} mid-append "
          f"({len(torn)} with a torn log tail); {cut_replays}/{len(replays)} replays killed "
          "before they finished")
    for e in report:
        print(e)
    assert len(killed) >= 20
    assert mid_commit, "no kill landed inside a lake commit: the test lost its point"
    assert compacting, "no kill landed during a compaction: the test lost its point"
    assert mid_append, "no kill landed inside a log append: the test lost its point"


# -- bulk file loads: acknowledged once committed --------------------------------------------
# `lake ingest` of files does not log the records (only a marker): a chunk is acknowledged
# once the lake committed it. The child writes its slice of the file (stamped with its
# generation) and loads it with ``ingest_paths`` in small chunks, printing each ack.

BULK_CHILD = r"""
import sys
import orjson
data, src, start, stop, chunk, gen = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
lines = open(src, "rb").read().splitlines()
part = f"{data}-slice-{gen}.jsonl"
with open(part, "wb") as f:
    f.write(b"".join(orjson.dumps({**orjson.loads(x), "gen": gen}) + b"\n"
                     for x in lines[start:stop]))
from ingest import runner
from lake import Lake
runner.CHUNK_RECORDS = chunk
runner.JSON_BLOCK_BYTES = 1 << 15  # a few lines per block: many small chunks, many acks
print("start", flush=True)
lake = Lake.open(data)  # settings from the LAKE_* environment the test passes
print("ready", flush=True)

def ack(a):  # "through": the file's last line read, 1-based
    print(f"acked {start} {start + int(a['through'].rsplit(':', 1)[1])} {a['lsn']}", flush=True)

s = runner.ingest_paths(lake, [part], on_ack=ack, workers=0)
assert s.rejected == 0, s
print("flushed", flush=True)
lake.close()
print("closed", flush=True)
"""


def test_sigkill_during_bulk_file_load_loses_no_acknowledged_trajectory(tmp_path: Path,
                                                                        dev_records):
    rng = random.Random(SEED + 1)
    src, lines, script, data, log, settings = _setup(tmp_path, dev_records, BULK_CHILD)
    acked: Acked = {}
    trig = Trigger(data)
    kinds = ["acks"] * 4 + ["commit"] * 4 + ["last"] * 2 + ["random"] * 2
    rng.shuffle(kinds)
    report = []
    for trial, kind in enumerate(kinds):
        start = rng.randrange(len(lines) - 500)
        stop = min(len(lines), start + rng.randint(800, 2000))
        chunk = rng.choice([25, 50, 100])
        if kind == "random":
            when = trig.after(rng.uniform(0.1, 2.0))
        elif kind == "acks":
            when = trig.acks(rng.randint(1, 10), rng.uniform(0.0, 0.03))
        elif kind == "commit":
            when = trig.commit(rng.randint(0, 6))
        else:  # its trajectories are written, its lake version row is not (yet)
            when = trig.commit(0, tables=("trajectories",))
        run = _run(script, [str(data), str(src), str(start), str(stop), str(chunk),
                            str(trial)], _child_env(LAKE_ENV), tmp_path, when, log)
        assert run.killed or (run.rc == 0 and run.out[-1] == "closed"), \
            (run.rc, run.out[-3:], log.read_text()[-3000:])
        hi = max((h for _, h in run.acked), default=start)  # acks are cumulative
        for ln in lines[start:hi]:
            acked.setdefault(ln.tid, {})[progress(ln.n_steps, ln.status)] = trial
        entry = {"trial": trial, "kind": kind, "acked": hi - start, "killed": run.killed,
                 "by_trigger": run.by_trigger, **_where_it_died(data)}
        entry["lake"] = _verify(data, settings, lines, acked)
        report.append(entry)
    for e in report:
        print(e)
    killed = [e for e in report if e["killed"]]
    assert len(killed) >= 10
    assert [e for e in killed if e["ahead"]], "no kill landed inside a lake commit"
    assert sum(e["acked"] for e in report) > 0, "no chunk was ever acknowledged"
