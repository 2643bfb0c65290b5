"""IngestArrow's memory: the server's peak RSS for one message of many tiny rows.

A row costs a few KB of Python while it is validated and queued for the writer, whatever
its size in Arrow. Compared in the same run (each mode in a fresh process):

- ``sliced``: the service as it is, ``ARROW_SLICE_ROWS`` rows validated and logged at a
  time, the writer's backpressure counting trajectory rows as well as steps;
- ``whole``: the message validated and logged at once, backpressure on steps only (the
  service before 2026-11-22), for the ratio.

The servicer is called in process on a fresh lake (no gRPC, no semantic cache: only the
ingest path's memory). Peak: VmRSS sampled every 50 ms, minus the RSS before the call.

    python -m benchmarks.bench_arrow_memory [--rows 1000000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
from typing import Any

from benchmarks import common


def _rss_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


def _run(mode: str, rows: int, out: Any) -> None:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from lake import Lake
    from lake import writer as writer_mod
    from lake.tokens import Identity
    from proto.contextlake.v1 import lake_pb2 as pb
    from server import auth, service

    if mode == "whole":
        service.ARROW_SLICE_ROWS = rows + 1
        writer_mod._size = lambda item: (len(item.record.steps) if hasattr(item, "kind")
                                         else item.trajectory["n_steps"])
    table = pa.table({"trajectory_id": [f"r{i}" for i in range(rows)], "task": ["t"] * rows})
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    request = pb.IngestArrowRequest(arrow_ipc=sink.getvalue().to_pybytes())
    mb = len(request.arrow_ipc) / 2**20
    del table, sink
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.05)

    with common.fresh_dir("arrowmem") as d, Lake.open(d) as lake:
        auth._IDENTITY.set(Identity("default", "bench", frozenset({"ingest"})))
        svc = service.IngestServicer(lake)
        base = _rss_mb()
        threading.Thread(target=watch, daemon=True).start()
        t0 = time.perf_counter()
        reply = svc.IngestArrow(request, None)
        durable = time.perf_counter() - t0
        lake.flush()
        visible = time.perf_counter() - t0
        stop.set()
        assert reply.accepted == rows, reply.accepted
    out.put({"mode": mode, "mb": mb, "peak": max(peak[0], base) - base, "durable": durable,
             "visible": visible})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    a = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    got = {}
    for mode in ("sliced", "whole"):
        q = ctx.Queue()
        proc = ctx.Process(target=_run, args=(mode, a.rows, q))
        proc.start()
        got[mode] = q.get()
        proc.join()
    s, w = got["sliced"], got["whole"]
    print(f"{common.command('benchmarks.bench_arrow_memory', argv)} at {common.git_rev()}, "
          f"{common.now()}, load {common.load()}")
    print(f"{a.rows:,} rows (trajectory_id, task; no steps), {s['mb']:.1f} MB of Arrow IPC\n")
    print("| mode | peak RSS over the call, MB | durable s | visible s |")
    print("|---|---:|---:|---:|")
    for r in (s, w):
        print(f"| {r['mode']} | {r['peak']:,} | {r['durable']:.1f} | {r['visible']:.1f} |")
    print(f"\nsliced / whole: memory **{s['peak'] / max(w['peak'], 1):.2f}**, time to visible "
          f"{s['visible'] / w['visible']:.2f}")


if __name__ == "__main__":
    main()
