"""The writer's key lookup: the trajectory ids of a commit, with and without the BTREE index.

    .venv/bin/python -m benchmarks.bench_keys                      # 100k, 1M, 4M rows
    .venv/bin/python -m benchmarks.bench_keys --sizes 100000 --no-write

Before every commit the writer reads the stored rows of the commit's trajectory ids
(``TableStore.lookup``: dedupe, the stored steps of appended trajectories; deletes use the
same filter). The table here has the columns that lookup reads, ids shaped like the
synthetic ones, written as 20 fragments. Each size is timed three ways, alternating: no
index (a scan of the id column), the index ``TableStore.index_keys`` makes, and that index
with ``tables.INDEX_LAG_ROWS`` rows appended after it (the most a lookup scans besides the
index before maintenance brings it up to date). A lookup: 1,000 ids, either all new (a load
of new trajectories) or all stored by one earlier commit (a load run again), five different
sets of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import common

pytestmark = pytest.mark.benchmark

KEYS = 1000
COLUMNS = ["trajectory_id", "n_steps", "status", "_record_hash", "retracted_at",
           "retract_reason"]


def _rows(start: int, n: int) -> pa.Table:
    i = np.arange(start, start + n)
    ids = [_id(k) for k in i.tolist()]
    return pa.table({"tenant": pa.array(["default"] * n), "trajectory_id": pa.array(ids),
                     "n_steps": pa.array(np.full(n, 37, np.int32)),
                     "status": pa.array(["succeeded"] * n),
                     "_record_hash": pa.array(["0" * 24] * n),
                     "retracted_at": pa.nulls(n, pa.timestamp("us", "UTC")),
                     "retract_reason": pa.nulls(n, pa.string())})


def _id(k: int) -> str:
    return f"synth/retail/support-agent/task{k % 5000}/trial{k % 7}/{k:08d}"


def _lookup_ms(store: object, name: str, keys: list[list[str]], stored: int) -> float:
    times = []
    for ks in keys:
        t = time.perf_counter()
        got = store.lookup(name, "default", "trajectory_id", ks, COLUMNS)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t)
        assert got.num_rows == stored, got.num_rows
    return common.median(times) * 1e3


def measure(sizes: list[int], rounds: int, seed: int) -> list[dict]:
    import lance

    from lake import tables
    from lake.tables import TableStore

    out = []
    rng = np.random.default_rng(seed)
    for n in sizes:
        with common.fresh_dir("keys-") as d:
            store = TableStore(d)
            for name in ("plain", "indexed", "lagging"):
                for part in range(20):
                    lance.write_dataset(_rows(part * n // 20, n // 20), store.uri(name),
                                        mode="append" if part else "create")
            assert store.index_keys("indexed", "trajectory_id")
            assert store.index_keys("lagging", "trajectory_id")
            lance.write_dataset(_rows(n, tables.INDEX_LAG_ROWS), store.uri("lagging"),
                                mode="append")
            new = [[f"new/{r}/{k}" for k in range(KEYS)] for r in range(5)]
            again = [[_id(k) for k in range(a, a + KEYS)]
                     for a in rng.choice(n - KEYS, 5, replace=False).tolist()]
            res: dict[str, list[float]] = {f"{name} {mix}": [] for mix in ("new", "again")
                                           for name in ("plain", "indexed", "lagging")}
            for r in range(rounds):
                order = list(res) if r % 2 == 0 else list(reversed(res))
                for side in order:
                    name, mix = side.split()
                    res[side].append(_lookup_ms(store, name, new if mix == "new" else again,
                                                0 if mix == "new" else KEYS))
            out.append({"rows": n, **{k: common.median(v) for k, v in res.items()}})
    return out


def report(rows: list[dict], cmd: str, before: str, after: str) -> str:
    from lake import tables

    lines = [
        "## Writer key lookups: trajectory ids with and without the BTREE index",
        "",
        f"- command: `{cmd}`",
        f"- date: {common.now()}; code: {common.git_rev()}",
        f"- machine: {common.machine()}; load average (1/5/15 min) {before} before, "
        f"{after} after",
        f"- a lookup: `TableStore.lookup` of {KEYS:,} ids reading {len(COLUMNS)} columns, as "
        "the writer does before each commit: **new** ids (a load of new trajectories) or "
        "**again**, ids one earlier commit stored (a load run again); medians over "
        "alternating rounds of 5 lookups of different ids; tables of 20 fragments",
        f"- index + appended: the index with {tables.INDEX_LAG_ROWS:,} rows appended after "
        "it, which a lookup scans too (maintenance updates the index past this many)",
        "",
        "| rows | ids | no index ms | BTREE index ms | index + appended ms | no index / index |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        for mix in ("new", "again"):
            plain, idx, lag = (r[f"{k} {mix}"] for k in ("plain", "indexed", "lagging"))
            lines.append(f"| {r['rows']:,} | {mix} | {plain:.1f} | {idx:.1f} | {lag:.1f} | "
                         f"{plain / idx:.1f} |")
    lines += ["", "Without the index a lookup grows with the table (a scan of the id column), "
              "so a bulk load of many commits into a big lake grows quadratic; with it the "
              "lookup of new ids stays flat. Ids that are stored cost a read of their rows "
              "either way; the index finds them without the scan."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_keys",
                                description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100000,1000000,4000000")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    a = p.parse_args(argv)
    os.environ.setdefault("LANCE_LOG", "error")
    before = common.load()
    rows = measure([int(x) for x in a.sizes.split(",")], a.rounds, a.seed)
    text = report(rows, common.command("benchmarks.bench_keys", argv), before, common.load())
    print(text)
    if not a.no_write:
        common.write_section(text)
    return rows


def test_key_lookups() -> None:
    """`make bench`: writes its RESULTS.md section; the index must not be slower."""
    rows = main(["--sizes", os.environ.get("BENCH_KEY_SIZES", "100000,1000000")])
    assert all(r["indexed new"] <= r["plain new"] for r in rows), rows


if __name__ == "__main__":
    main()
    sys.exit(0)
