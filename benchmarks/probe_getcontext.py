"""Why GetContext with a vector misses 0.7 x echo: the same call served four ways.

    LANCE_LOG=error HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.probe_getcontext
    .venv/bin/python -m benchmarks.probe_getcontext --seconds 2 --reps 1 --no-write

A probe, not a target: bench_grpc's lake (2,000 synthetic trajectories, real MiniLM task
vectors, perturbed query vectors) and its load generator (a separate process, one thread
and channel per concurrent call, requests serialized in advance), against:

- ``echo``: bench_grpc's baseline (thread pool) and the same bytes from a ``grpc.aio``
  server;
- ``ours``: the real server (``grpc.aio`` since 2026-11-21, with its layers: errors, auth,
  limits), and ``ContextServicer.context_now`` run inline in an ``async`` handler of a bare
  ``grpc.aio`` server (the open identity set, no layers);
- ``lean``: what any vector lookup needs at least, on both servers: parse the request, read
  the vector, a top-k over 64 rows (one product, a partition, a sort: numpy), then a
  prebuilt response.

Then the servicer's parts, timed in thread CPU inside the aio server under load at
concurrency 8 (each part wrapped where it is called; "rest": parsing, the response
message, what the wrappers do not cover). Repetitions alternate the order; medians.

Caveat: the server is ``grpc.aio`` since 3026c45, so this probe's bare aio servers now share
a process with another aio server (the real one), and a second aio server in a process slows
the other by ~20% (alternating runs, 2026-11-22; bench_grpc's ``FixedServer`` runs in a
process of its own for that reason). Its RESULTS section (08cc16b) predates the move; a new
run's aio columns would be confounded.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks import bench_grpc as bg
from benchmarks import common

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HEADING = "## GetContext inside the server: thread pool or asyncio (probe)"
LEVELS = (1, 8, 32)
CASES = ("echo, thread pool", "echo, aio", "ours, server", "ours, aio",
         "lean, thread pool", "lean, aio")
LEAN_ROWS = 64


class Parts:
    """Thread CPU per call of named parts, wrapped where they are called."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self.on = False

    def wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kw: Any) -> Any:
            if not self.on:
                return fn(*args, **kw)
            t = time.thread_time_ns()
            try:
                return fn(*args, **kw)
            finally:
                self.ns[name] += time.thread_time_ns() - t
        return timed


def start_aio(handlers: dict[str, Callable]) -> tuple[int, Callable[[], None]]:
    """A grpc.aio server on its own loop thread, a bytes handler per ``/service/method``."""
    import grpc

    ready, box = threading.Event(), {}

    async def run() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        by_service: dict[str, dict[str, Any]] = defaultdict(dict)
        for path, fn in handlers.items():
            service, method = path.strip("/").split("/")
            by_service[service][method] = grpc.unary_unary_rpc_method_handler(fn)
        server.add_generic_rpc_handlers(tuple(
            grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()))
        box["port"] = server.add_insecure_port("127.0.0.1:0")
        box["stop"] = asyncio.Event()
        await server.start()
        ready.set()
        await box["stop"].wait()
        await server.stop(0)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    ready.wait()

    def stop() -> None:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=10)
    return box["port"], stop


def lean_handler(response: bytes) -> Callable[[bytes], bytes]:
    from proto.contextlake.v1 import lake_pb2 as pb

    rows = np.random.default_rng(1).standard_normal((LEAN_ROWS, 384)).astype(np.float32)

    def lean(request: bytes) -> bytes:
        v = np.array(pb.GetContextRequest.FromString(request).vector.values, np.float32)
        scores = rows @ v
        keep = np.flatnonzero(scores >= np.partition(scores, LEAN_ROWS - 5)[LEAN_ROWS - 5])
        np.lexsort((keep, -scores[keep]))
        return response
    return lean


def measure(a: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    import grpc

    from lake import Settings
    from proto.contextlake.v1 import lake_pb2 as pb
    from server import auth, service
    from server.app import serve
    from server.client import LakeClient

    client = bg.ClientProcess()
    out: dict[str, Any] = {"qps": defaultdict(list), "cpu": defaultdict(list)}
    stops: list[Callable[[], None]] = []
    try:
        with common.fresh_dir("probe-") as d:
            records = bg.lake_records(a.trajectories, a.seed)
            hashes, vecs, _ = bg.task_vectors([r["task"] for r in records], log)
            settings = Settings.load(data=os.path.join(d, "lake"), max_inflight=a.max_inflight)
            srv = serve(settings, "127.0.0.1", 0)
            stops.append(lambda: srv.stop(grace=5))
            with LakeClient(srv.target, timeout=600) as c:
                vreqs, vresp = bg.vector_lake(srv, c, records, hashes, vecs, a.vector_pool,
                                              a.seed)
            reqs = [r.SerializeToString() for r in vreqs]
            resp = vresp.SerializeToString()
            out["response_bytes"] = len(resp)
            workers = a.max_inflight + 4
            echo, eport = bg.start_echo(workers, {bg.ECHO_VECTOR: resp, bg.ECHO_TEXT: resp})
            stops.append(lambda: echo.stop(0))
            lean = lean_handler(resp)
            pool = grpc.server(ThreadPoolExecutor(workers), maximum_concurrent_rpcs=workers)
            pool.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                "probe.Lean", {"Call": grpc.unary_unary_rpc_method_handler(
                    lambda r, ctx: lean(r))}),))
            lport = pool.add_insecure_port("127.0.0.1:0")
            pool.start()
            stops.append(lambda: pool.stop(0))

            servicer = service.ContextServicer(srv.lake, srv.cache)
            who = auth.Identity(settings.tenant, "local", frozenset(auth.ALL_SCOPES))
            parts = Parts()
            whole = parts.wrap("servicer", servicer.context_now)

            async def ours(request: bytes, context: Any) -> bytes:
                token = auth._IDENTITY.set(who)
                try:
                    return whole(pb.GetContextRequest.FromString(request)).SerializeToString()
                finally:
                    auth._IDENTITY.reset(token)

            async def echo_aio(request: bytes, context: Any) -> bytes:
                return resp

            async def lean_aio(request: bytes, context: Any) -> bytes:
                return lean(request)

            aport, astop = start_aio({"/probe.Ours/GetContext": ours,
                                      "/probe.Echo/Vector": echo_aio,
                                      "/probe.Lean/Call": lean_aio})
            stops.append(astop)
            local = "127.0.0.1:{}".format
            targets = {"echo, thread pool": (local(eport), bg.ECHO_VECTOR),
                       "echo, aio": (local(aport), "/probe.Echo/Vector"),
                       "ours, server": (srv.target, bg.GET_CONTEXT),
                       "ours, aio": (local(aport), "/probe.Ours/GetContext"),
                       "lean, thread pool": (local(lport), "/probe.Lean/Call"),
                       "lean, aio": (local(aport), "/probe.Lean/Call")}
            for conc in LEVELS:
                for rep in range(a.reps):
                    order = CASES if rep % 2 == 0 else CASES[::-1]
                    for case in order:
                        target, method = targets[case]
                        t = common.Timer()
                        with t:
                            got = client("unary", target, method, reqs, reqs[:conc], conc,
                                         a.seconds, 1 << 60)
                        assert not got["errors"], (case, got["details"])
                        out["qps"][case, conc].append(got["calls"] / got["wall"])
                        out["cpu"][case, conc].append(t.cpu / got["calls"] * 1e3)
                    log(f"  c={conc:<2} rep {rep + 1}: " + ", ".join(
                        f"{case} {out['qps'][case, conc][-1]:.0f}" for case in CASES)
                        + f" QPS (load {common.load()})")
            out["parts"] = _parts(srv, servicer, parts, client, local(aport), reqs, a)
    finally:
        for stop in reversed(stops):
            stop()
        client.close()
    return out


def _parts(srv: Any, servicer: Any, parts: Parts, client: Any, target: str,
           reqs: list[bytes], a: argparse.Namespace) -> dict[str, float]:
    """Thread CPU per call of the servicer's parts in the aio server at concurrency 8."""
    from server import service

    cache, idx = srv.cache, srv.cache.index(srv.lake.settings.tenant)
    patched = [(cache, n) for n in ("_query_vector", "_verdict", "_fused_for",
                                    "_remember")] + [(idx, "search"),
                                                     (idx, "cluster_of_vector")]
    mods = [(service, n) for n in ("describe", "answer_json")]
    for obj, name in patched + mods:
        setattr(obj, name, parts.wrap(name.strip("_"), getattr(obj, name)))
    neighbor = cache._neighbor
    cache._neighbor = parts.wrap("neighbours", neighbor)
    parts.on = True
    try:
        got = client("unary", target, "/probe.Ours/GetContext", reqs, reqs[:8], 8,
                     a.seconds, 1 << 60)
    finally:
        parts.on = False
        for obj, name in patched:
            delattr(obj, name)  # the class's method again
        for obj, name in mods:
            setattr(obj, name, getattr(obj, name).__wrapped__)
        cache._neighbor = neighbor
    calls = got["calls"]
    us = {name: ns / calls / 1e3 for name, ns in parts.ns.items()}
    us["rest"] = us["servicer"] - sum(v for k, v in us.items() if k != "servicer")
    return us


def report(r: dict[str, Any], cmd: str, before: str, after: str) -> str:
    med = statistics.median
    lines = [HEADING, "", f"- command: `{cmd}`", f"- date: {common.now()}; code: "
             f"{common.git_rev()}", f"- machine: {common.machine()}; load average (1/5/15 min) "
             f"{before} before, {after} after",
             f"- lake and load as bench_grpc's (response {r['response_bytes']:,} B); ours on "
             "aio: `ContextServicer.context_now` inline in an async handler, no layers; "
             f"lean: parse, read the vector, top-k over {LEAN_ROWS} rows, prebuilt response",
             "", "QPS (median) and server CPU ms per call; ratios to the echo of the same server "
             "type:", "",
             "| concurrency | " + " | ".join(CASES) + " | ours, server / echo, thread pool | "
             "ours / echo, aio | lean / echo, thread pool | lean / echo, aio |",
             "|---:|" + "---:|" * (len(CASES) + 4)]
    for conc in LEVELS:
        q = {c: med(r["qps"][c, conc]) for c in CASES}
        cpu = {c: med(r["cpu"][c, conc]) for c in CASES}
        ratios = [q["ours, server"] / q["echo, thread pool"], q["ours, aio"] / q["echo, aio"],
                  q["lean, thread pool"] / q["echo, thread pool"], q["lean, aio"] / q["echo, aio"]]
        lines.append(f"| {conc} | " + " | ".join(f"{q[c]:,.0f} ({cpu[c]:.2f})" for c in CASES)
                     + " | " + " | ".join(f"{x:.2f}" for x in ratios) + " |")
    gain = [med(r["qps"]["ours, aio", c]) / med(r["qps"]["ours, server", c])
            for c in LEVELS]
    lines += ["", "Ours inline on a bare aio server / ours, server: " + " / ".join(
        f"{x:.2f}" for x in gain) + " at concurrency " + " / ".join(map(str, LEVELS)) + "."]
    p = r["parts"]
    order = sorted((k for k in p if k != "servicer"), key=lambda k: -p[k])
    lines += ["", f"The servicer inside the aio server at concurrency 8: **{p['servicer']:.0f} "
              "us** of thread CPU a call: " + ", ".join(f"{k} {p[k]:.0f}" for k in order) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.probe_getcontext",
                                description=__doc__.split("\n")[0])
    p.add_argument("--trajectories", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--seconds", type=float, default=3.0, help="per case and concurrency")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--vector-pool", type=int, default=1000)
    p.add_argument("--max-inflight", type=int, default=40)
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    a = p.parse_args(argv)
    before = common.load()
    res = measure(a)
    text = report(res, common.command("benchmarks.probe_getcontext", argv), before,
                  common.load())
    print(text)
    if not a.no_write:
        common.write_section(text)
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
