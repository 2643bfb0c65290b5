"""OTLP ingest: spans/s from the real OpenTelemetry SDK exporter into the durable lake.

`lake serve` runs in its own process (a fresh lake, auth off on loopback). The client, in
this process, is the real SDK: a ``BatchSpanProcessor`` (batches of 512, the default) over
the OTLP gRPC span exporter. Agent runs of 9 spans (invoke_agent, then 4 x chat with
messages and usage + execute_tool with arguments and result) are created first, so the
clock measures the export path, not the SDK's span creation (reported apart). A span is
*durable* once its Export call returned (the lake logged and fsynced it); *committed* once
the lake's tables show it (``Stats``). The server is warm first (one GetContext: the
embedding model, which embeds each new trajectory's task in the background, is loaded).

With ``--phoenix PATH`` (a ``phoenix`` executable, e.g. from a separate venv with
``arize-phoenix``), the same spans go, in the same run, to ``phoenix serve`` (OTLP gRPC on
4317) and the ratio is recorded. Phoenix acknowledges spans before writing them (it queues
them in memory), so its number is spans accepted, and the time until its database shows
them is reported too.

    .venv/bin/python -m benchmarks.bench_otlp [--runs 4000] [--phoenix PATH/bin/phoenix]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from benchmarks import common

TARGET = 10_000  # spans/s, durable
SPANS_PER_RUN = 9
MESSAGES = json.dumps([{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                       {"role": "user", "parts": [{"type": "text",
                                                   "content": "Refund order #W1 to the card"}]}])


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(runs: int) -> tuple[list[Any], float]:
    """Finished SDK spans of ``runs`` agent runs, and the seconds the SDK took to make them."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    t0 = time.perf_counter()
    for r in range(runs):
        with tracer.start_as_current_span("invoke_agent bench-agent") as a:
            a.set_attributes({"gen_ai.operation.name": "invoke_agent",
                              "gen_ai.agent.name": "bench-agent",
                              "gen_ai.conversation.id": f"conv-{r}"})
            for k in range(4):
                with tracer.start_as_current_span("chat gpt-4.1") as c:
                    c.set_attributes({"gen_ai.operation.name": "chat",
                                      "gen_ai.request.model": "gpt-4.1",
                                      "gen_ai.input.messages": MESSAGES,
                                      "gen_ai.usage.input_tokens": 1000 + k,
                                      "gen_ai.usage.output_tokens": 20})
                with tracer.start_as_current_span("execute_tool get_order") as t:
                    t.set_attributes({"gen_ai.operation.name": "execute_tool",
                                      "gen_ai.tool.name": "get_order",
                                      "gen_ai.tool.call.id": f"call-{r}-{k}",
                                      "gen_ai.tool.call.arguments": '{"order_id": "#W1"}',
                                      "gen_ai.tool.call.result": '{"status": "delivered"}'})
    made = time.perf_counter() - t0
    return list(memory.get_finished_spans()), made


def export(spans: list[Any], endpoint: str) -> float:
    """Seconds for the batch span processor + OTLP gRPC exporter to deliver ``spans``."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True,
                                                    timeout=120),
                                   max_queue_size=len(spans) + 1)
    t0 = time.perf_counter()
    for s in spans:
        processor.on_end(s)
    assert processor.force_flush(600_000), "the exporter did not finish"
    took = time.perf_counter() - t0
    processor.shutdown()
    return took


def _wait(check: Any, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if check():
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise AssertionError("timed out")


def run_lake(spans: list[Any]) -> dict[str, float]:
    from server.client import LakeClient

    port = _port()
    with tempfile.TemporaryDirectory(dir=common.TMP_ROOT) as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKE_")}
        proc = subprocess.Popen([str(Path(sys.executable).with_name("lake")), "serve",
                                 "--data", data, "--port", str(port), "--no-sample"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with LakeClient(f"127.0.0.1:{port}", timeout=120) as c:
                _wait(lambda: _ok(c.stats), 120)
                c.get_context("warm up")  # steady state: the embedding model is loaded
                t = export(spans, f"127.0.0.1:{port}")
                committed = t + _wait(lambda: c.stats()["steps"] >= len(spans))
                stats = c.stats()
            assert stats["trajectories"] == len(spans) // SPANS_PER_RUN, stats
        finally:
            proc.terminate()
            proc.wait(60)
    return {"durable_s": t, "committed_s": committed}


def run_phoenix(spans: list[Any], phoenix: str) -> dict[str, float]:
    """The same spans into ``phoenix serve`` (its OTLP gRPC receiver on 4317)."""
    http = _port()
    with tempfile.TemporaryDirectory(dir=common.TMP_ROOT) as work:
        env = {**os.environ, "PHOENIX_WORKING_DIR": work, "PHOENIX_PORT": str(http),
               "PHOENIX_GRPC_PORT": "4317"}
        proc = subprocess.Popen([phoenix, "serve"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: _ok(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{http}/healthz", timeout=2)), 180)
            t = export(spans, "127.0.0.1:4317")
            committed = t + _wait(lambda: _phoenix_spans(http) >= len(spans))
        finally:
            proc.terminate()
            proc.wait(60)
    return {"durable_s": t, "committed_s": committed}


def _phoenix_spans(http: int) -> int:
    q = json.dumps({"query": "{ projects { edges { node { traceCount } } } }"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{http}/graphql", data=q,
                                 headers={"content-type": "application/json"})
    try:
        body = json.loads(urllib.request.urlopen(req, timeout=5).read())
        traces = sum(e["node"]["traceCount"] for e in body["data"]["projects"]["edges"])
    except Exception:  # noqa: BLE001 - not ready yet
        return 0
    return traces * SPANS_PER_RUN


def _ok(fn: Any) -> bool:
    try:
        fn()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_otlp",
                                description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=4000, help="agent runs of 9 spans")
    p.add_argument("--phoenix", default=None, help="a `phoenix` executable to compare with")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    common.TMP_ROOT.mkdir(parents=True, exist_ok=True)
    spans, made = record(args.runs)
    n = len(spans)
    ours = run_lake(spans)
    theirs = run_phoenix(spans, args.phoenix) if args.phoenix else None
    rate = n / ours["durable_s"]
    lines = [
        "## OTLP ingest (spans/s from the SDK exporter)", "",
        f"Command: `{common.command('benchmarks.bench_otlp', argv)}`  ",
        f"Run: {common.now()}, git {common.git_rev()}, load {common.load()}  ",
        f"Machine: {common.machine()}", "",
        f"{n:,} spans ({args.runs:,} agent runs of {SPANS_PER_RUN}), made by the SDK first "
        f"({n / made:,.0f} spans/s: the SDK's own span creation, not timed below), then "
        "delivered by its BatchSpanProcessor + OTLP gRPC exporter (batches of 512).", "",
        "| receiver | durable (Export returned) | spans/s | visible in its store | spans/s |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| Context Lake (`lake serve`, WAL fsync before the reply) | {ours['durable_s']:.2f} s "
        f"| **{rate:,.0f}** | {ours['committed_s']:.2f} s | {n / ours['committed_s']:,.0f} |",
    ]
    if theirs:
        lines.append(f"| Phoenix (`phoenix serve`, acknowledges before writing) | "
                     f"{theirs['durable_s']:.2f} s | {n / theirs['durable_s']:,.0f} | "
                     f"{theirs['committed_s']:.2f} s | {n / theirs['committed_s']:,.0f} |")
    lines += ["", f"Target: >= {TARGET:,} spans/s durable: "
              f"{'**met**' if rate >= TARGET else '**missed**'} ({rate / TARGET:.2f}x)."]
    if theirs:
        lines.append(f"Ratio to Phoenix, same spans, same run: accepted "
                     f"{theirs['durable_s'] / ours['durable_s']:.2f}x, visible "
                     f"{theirs['committed_s'] / ours['committed_s']:.2f}x.")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        common.write_section(text)
    return {"rate": rate, **ours}


@pytest.mark.benchmark
def test_otlp() -> None:
    """`make bench`: writes its RESULTS.md section; a missed target fails only with
    BENCH_ENFORCE=1."""
    res = main([])
    if os.environ.get("BENCH_ENFORCE"):
        assert res["rate"] >= TARGET


if __name__ == "__main__":
    main()
