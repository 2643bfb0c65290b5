"""OTLP/gRPC receiver: the real OpenTelemetry SDK and exporter into a real server and lake."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc import Compression
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.app import Server

from .conftest import token

TASK = "Refund order #W123 to the original card"


def _agent_run(tracer: Any, *, fail_tool: bool = False) -> None:
    """invoke_agent -> chat -> execute_tool -> chat, with usage and an evaluation event."""
    with tracer.start_as_current_span("invoke_agent support-bot", kind=SpanKind.INTERNAL) as a:
        a.set_attributes({"gen_ai.operation.name": "invoke_agent",
                          "gen_ai.agent.name": "support-bot", "gen_ai.agent.version": "1.4",
                          "gen_ai.conversation.id": "conv-7",
                          "gen_ai.provider.name": "openai"})
        with tracer.start_as_current_span("chat gpt-4.1", kind=SpanKind.CLIENT) as c:
            c.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4.1",
                "gen_ai.input.messages": json.dumps([
                    {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                    {"role": "user", "parts": [{"type": "text", "content": TASK}]}]),
                "gen_ai.output.messages": json.dumps([
                    {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1",
                                                     "name": "refund"}]}]),
                "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 12,
                "gen_ai.response.finish_reasons": ["tool_calls"]})
        with tracer.start_as_current_span("execute_tool refund") as t:
            t.set_attributes({"gen_ai.operation.name": "execute_tool",
                              "gen_ai.tool.name": "refund", "gen_ai.tool.call.id": "call_1",
                              "gen_ai.tool.call.arguments": '{"order_id": "#W123"}',
                              "gen_ai.tool.call.result": '{"status": "refunded"}'})
            if fail_tool:
                t.set_status(Status(StatusCode.ERROR, "card expired"))
                t.set_attribute("error.type", "CardExpired")
        with tracer.start_as_current_span("chat gpt-4.1", kind=SpanKind.CLIENT) as c:
            c.set_attributes({"gen_ai.operation.name": "chat",
                              "gen_ai.request.model": "gpt-4.1",
                              "gen_ai.usage.input_tokens": 150,
                              "gen_ai.usage.output_tokens": 20})
        a.add_event("gen_ai.evaluation.result", {
            "gen_ai.evaluation.name": "task_success", "gen_ai.evaluation.score.value": 1.0,
            "gen_ai.evaluation.score.label": "pass"})


def _provider(exporter: Any, batch: bool = True) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    p.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return p


def _steps(srv: Server, tid: str) -> list[tuple]:
    assert all(c in "0123456789abcdef" for c in tid)
    return srv.lake.sql("select kind, name, input, output, error, tokens_in, tokens_out, "
                        f"parent_step_id, step_id from steps where trajectory_id = '{tid}' "
                        "order by index").fetchall()


def test_sdk_exporter_run_becomes_a_trajectory(secure: Server):
    key = token(secure, tenant="acme")
    exporter = OTLPSpanExporter(endpoint=secure.target, insecure=True,
                                headers={"authorization": f"Bearer {key}"},
                                compression=Compression.Gzip)
    provider = _provider(exporter)
    _agent_run(provider.get_tracer("test"))
    assert provider.force_flush(30_000)
    provider.shutdown()
    secure.lake.flush()
    rows = secure.lake.sql("select trajectory_id, task, agent, agent_version, model, session_id, "
                           "status, success, n_steps, tokens_in, tokens_out, scores, meta "
                           "from trajectories", tenant="acme").fetchall()
    assert len(rows) == 1
    tid, task, agent, version, model, session, status, success, n, t_in, t_out, scores, meta \
        = rows[0]
    assert (task, agent, version, model, session) == (TASK, "support-bot", "1.4", "gpt-4.1",
                                                      "conv-7")
    assert (status, success, n, t_in, t_out) == ("succeeded", True, 4, 270, 32)
    assert scores == {"task_success": 1.0}
    assert json.loads(meta)["otel"]["resource"]["service.name"] == "support-bot"
    steps = [s[:7] for s in secure.lake.sql(
        "select kind, name, input, output, error, tokens_in, tokens_out from steps "
        "order by index", tenant="acme").fetchall()]
    assert [s[:2] for s in steps] == [("agent", "support-bot"), ("llm", "gpt-4.1"),
                                      ("tool", "refund"), ("llm", "gpt-4.1")]
    assert steps[2][2:4] == ('{"order_id": "#W123"}', '{"status": "refunded"}')
    assert steps[1][5:] == (120, 12)
    tree = secure.lake.sql("select step_id, parent_step_id from steps order by index",
                           tenant="acme").fetchall()
    assert tree[0][1] is None and all(p == tree[0][0] for _, p in tree[1:])
    attrs = json.loads(secure.lake.sql(
        "select attributes from steps where kind = 'tool'", tenant="acme").fetchall()[0][0])
    assert attrs["gen_ai.tool.call.id"] == "call_1"  # every raw attribute is kept
    assert tid == format(int(tid, 16), "032x")  # the trace id
    assert secure.lake.count("trajectories", tenant="default") == 0  # the token's tenant


def test_a_token_is_required_and_scoped(secure: Server):
    exporter = OTLPSpanExporter(endpoint=secure.target, insecure=True, timeout=5)
    spans = _recorded()
    assert exporter.export(spans).name == "FAILURE"  # no token: refused
    reader = OTLPSpanExporter(endpoint=secure.target, insecure=True, timeout=5, headers={
        "authorization": f"Bearer {token(secure, scopes='read')}"})
    assert reader.export(spans).name == "FAILURE"  # read scope cannot ingest
    secure.lake.flush()
    assert secure.lake.count("steps", tenant="acme") == 0


def _recorded(fail_tool: bool = False) -> list:
    memory = InMemorySpanExporter()
    provider = _provider(memory, batch=False)
    _agent_run(provider.get_tracer("test"), fail_tool=fail_tool)
    return list(memory.get_finished_spans())


@pytest.fixture
def trace_stub(server: Server) -> Iterator[otlp_grpc.TraceServiceStub]:
    with grpc.insecure_channel(server.target) as ch:
        yield otlp_grpc.TraceServiceStub(ch)


def test_exporting_the_same_spans_twice_adds_nothing(server: Server):
    spans = _recorded()
    exporter = OTLPSpanExporter(endpoint=server.target, insecure=True)
    assert exporter.export(spans).name == "SUCCESS"
    server.lake.flush()
    before = (len(server.lake.versions()), server.lake.count("steps"))
    assert exporter.export(spans).name == "SUCCESS"
    assert exporter.export(list(reversed(spans))).name == "SUCCESS"
    server.lake.flush()
    assert (len(server.lake.versions()), server.lake.count("steps")) == before == (
        before[0], 4)


def test_children_before_their_root_make_one_trajectory(server: Server):
    spans = _recorded()
    root = [s for s in spans if s.parent is None]
    children = [s for s in spans if s.parent is not None]
    exporter = OTLPSpanExporter(endpoint=server.target, insecure=True)
    assert exporter.export(children[::-1]).name == "SUCCESS"  # out of order, no root yet
    server.lake.flush()
    assert server.lake.sql("select task, status, n_steps from trajectories").fetchall() == \
        [(TASK, "running", 3)]  # the chat's user message gives the task already
    assert exporter.export(root).name == "SUCCESS"
    server.lake.flush()
    assert server.lake.sql("select task, status, success, n_steps, agent from trajectories"
                           ).fetchall() == [(TASK, "succeeded", True, 4, "support-bot")]
    assert [k for k, *_ in _steps(server, _trace(spans))] == ["agent", "llm", "tool", "llm"]


def test_error_spans_become_error_steps(server: Server):
    spans = _recorded(fail_tool=True)
    assert OTLPSpanExporter(endpoint=server.target, insecure=True).export(spans).name == \
        "SUCCESS"
    server.lake.flush()
    assert server.lake.sql("select name, error from steps where error is not null"
                           ).fetchall() == [("refund", "card expired")]


def _trace(spans: list) -> str:
    return format(spans[0].context.trace_id, "032x")


def _kv(key: str, value: Any) -> KeyValue:
    v = AnyValue(int_value=value) if isinstance(value, int) else \
        AnyValue(double_value=value) if isinstance(value, float) else \
        AnyValue(string_value=value)
    return KeyValue(key=key, value=v)


def _span(span_id: int, parent: int = 0, name: str = "chat m", start: int = 10**18,
          trace: bytes = b"\x01" * 16, **attrs: Any) -> trace_pb2.Span:
    return trace_pb2.Span(trace_id=trace, span_id=span_id.to_bytes(8, "big"),
                          parent_span_id=parent.to_bytes(8, "big") if parent else b"",
                          name=name, start_time_unix_nano=start, end_time_unix_nano=start + 10**6,
                          attributes=[_kv(k.replace("__", "."), v) for k, v in attrs.items()])


def _request(*spans: trace_pb2.Span) -> otlp.ExportTraceServiceRequest:
    return otlp.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))])])


def test_one_malformed_span_is_rejected_and_the_others_stored(server: Server, trace_stub):
    good = [_span(1, name="invoke_agent bot", gen_ai__operation__name="invoke_agent"),
            _span(2, 1, start=10**18 + 5, gen_ai__operation__name="chat")]
    bad = _span(3, 1, trace=b"\x01" * 3)  # a 3-byte trace id
    reply = trace_stub.Export(_request(good[0], bad, good[1]))
    assert reply.partial_success.rejected_spans == 1
    assert "spans[1]" in reply.partial_success.error_message
    assert "trace_id must be 16 bytes" in reply.partial_success.error_message
    # an attribute name the lake reserves; an all-zero id (the right length)
    reserved = _span(4, 1, start=10**18 + 9, gen_ai__operation__name="chat",
                     lake__trajectory="x")
    reply = trace_stub.Export(_request(reserved, _span(5, trace=bytes(16))))
    assert reply.partial_success.rejected_spans == 2
    assert reply.partial_success.error_message == (
        "2 of 2 spans rejected, the others stored: "
        "resource_spans[0].scope_spans[0].spans[0] ('chat m'): attribute 'lake.trajectory' is "
        "reserved for the lake's trajectory hints: rename it in the instrumentation; "
        "resource_spans[0].scope_spans[0].spans[1] ('chat m'): trace_id is all zero, which "
        "OpenTelemetry reserves for an invalid id: fix the exporter or instrumentation that "
        "made it")
    server.lake.flush()
    assert server.lake.sql("select kind from steps order by index").fetchall() == \
        [("agent",), ("llm",)]


def test_a_lake_reject_names_the_span_once():
    from lake.lake import Reject
    from server.otlp import _reason

    where = "resource_spans[0].scope_spans[0].spans[4] ('chat m')"
    assert _reason(Reject(where, "must be a string", f"{where}.attributes.x", "")) == \
        "attributes.x: must be a string"


def test_a_token_count_that_is_no_whole_number_is_not_counted_and_said(server: Server,
                                                                       trace_stub):
    """As a record's tokens_in must be a whole number: 1.7 is not read as 1."""
    chat = _span(1, gen_ai__operation__name="chat", gen_ai__usage__input_tokens=1.7,
                 gen_ai__usage__output_tokens=5.0)
    reply = trace_stub.Export(_request(chat))
    assert reply.partial_success.rejected_spans == 0
    assert reply.partial_success.error_message == (
        "1 span attribute values not used, the spans stored: resource_spans[0]"
        ".scope_spans[0].spans[0] ('chat m'): gen_ai.usage.input_tokens = 1.7 is not counted "
        "in the step's tokens (not a whole number from 0 to 9223372036854775807); the "
        "attribute is kept")
    server.lake.flush()
    assert server.lake.sql("select tokens_in, tokens_out, attributes->>'$.\"gen_ai.usage."
                           "input_tokens\"' from steps").fetchall() == [(None, 5, "1.7")]


def test_older_conventions_and_openinference_map_too(server: Server, trace_stub):
    spans = [
        _span(1, name="agent", openinference__span__kind="AGENT", agent__name="oi-bot",
              session__id="s-1"),
        _span(2, 1, name="completion", start=10**18 + 1, gen_ai__system="openai",
              gen_ai__request__model="gpt-3.5", gen_ai__prompt__0__role="user",
              gen_ai__prompt__0__content="Track parcel 42", gen_ai__completion__0__content="ok",
              gen_ai__usage__prompt_tokens=7, gen_ai__usage__completion_tokens=3),
        _span(3, 1, name="lookup", start=10**18 + 2, openinference__span__kind="TOOL",
              tool__name="track", tool__parameters='{"id": 42}', output__value="in transit"),
        _span(4, 1, name="llm", start=10**18 + 3, openinference__span__kind="LLM",
              llm__model_name="claude", llm__token_count__prompt=11,
              llm__token_count__completion=2),
    ]
    assert not trace_stub.Export(_request(*spans)).HasField("partial_success")
    server.lake.flush()
    assert server.lake.sql("select task, agent, session_id, tokens_in, tokens_out "
                           "from trajectories").fetchall() == \
        [("Track parcel 42", "oi-bot", "s-1", 18, 5)]
    assert [s[:4] for s in _steps(server, "01" * 16)] == [
        ("agent", "oi-bot", None, None),
        ("llm", "gpt-3.5", '[{"role":"user","content":"Track parcel 42"}]',
         '[{"content":"ok"}]'),
        ("tool", "track", '{"id": 42}', "in transit"),
        ("llm", "claude", None, None)]


def test_the_standard_otlp_port_can_be_added(lake_dir):
    from server.app import serve

    from .conftest import make_settings

    srv = serve(make_settings(lake_dir, otlp_port=0), "127.0.0.1", 0)
    try:
        assert srv.otlp_port and srv.otlp_port != srv.port
        assert f"OTLP traces also on port {srv.otlp_port}" in srv.describe()
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{srv.otlp_port}", insecure=True)
        assert exporter.export(_recorded()).name == "SUCCESS"
        srv.lake.flush()
        assert srv.lake.count("steps") == 4
    finally:
        srv.stop(grace=1)


def test_an_overloaded_server_refuses_exports_with_a_retry_hint(lake_dir):
    from server.app import serve

    from .conftest import make_settings

    with serve(make_settings(lake_dir, max_inflight=1), "127.0.0.1", 0) as srv, \
            grpc.insecure_channel(srv.target) as ch:
        stub = otlp_grpc.TraceServiceStub(ch)
        with srv.limiter.slot():  # one call in flight: the limit
            with pytest.raises(grpc.RpcError) as e:
                stub.Export(_request(_span(1)), timeout=5)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(e.value.trailing_metadata())["retry-after-ms"] == "200"
        assert not stub.Export(_request(_span(1)), timeout=5).HasField("partial_success")


def _logged(srv: Server) -> int:
    """The log position of the last write (an Export reply does not carry it)."""
    return srv.lake.writer.lag["submitted_lsn"]


def test_a_trace_without_a_task_yet_is_not_indexed_until_it_has_one(server: Server,
                                                                     trace_stub):
    """A placeholder task would pull every task-less trace into one cluster of identical
    vectors: it joins the semantic cache when a span gives its task."""
    idx = server.cache.index(server.lake.settings.tenant)  # loaded: commits now index
    tool = _span(3, 1, name="execute_tool refund", start=10**18 + 2,
                 gen_ai__operation__name="execute_tool", gen_ai__tool__name="refund")
    assert not trace_stub.Export(_request(tool)).HasField("partial_success")
    server.lake.flush()
    server.cache.wait_indexed(_logged(server))
    tid = server.lake.sql("select trajectory_id from trajectories").fetchall()[0][0]
    assert tid not in idx.pos
    chat = _span(2, 1, start=10**18 + 1, gen_ai__operation__name="chat",
                 gen_ai__input__messages=json.dumps(
                     [{"role": "user", "parts": [{"type": "text", "content": TASK}]}]))
    assert not trace_stub.Export(_request(chat)).HasField("partial_success")
    server.lake.flush()
    server.cache.wait_indexed(_logged(server))
    assert idx.rows[idx.pos[tid]].task == TASK
    # and a restarted server's index leaves task-less traces out too
    other = _span(9, 5, name="execute_tool x", trace=b"\x02" * 16,
                  gen_ai__operation__name="execute_tool", gen_ai__tool__name="x")
    assert not trace_stub.Export(_request(other)).HasField("partial_success")
    server.lake.flush()
    server.cache.wait_indexed(_logged(server))
    fresh, _ = server.cache._load(server.lake.settings.tenant)
    assert list(fresh.pos) == [tid]


def test_a_huge_prompt_is_stored_once_and_the_trajectory_still_reads(lake_dir):
    """A multi-MB user message (on the agent span and each chat span) is the steps' input,
    stored once in payloads: not repeated in attributes nor in the trajectory hints, so
    GetTrajectory stays far under the message limit; the task is the message, cut."""
    from server.app import serve
    from server.client import LakeClient

    from .conftest import make_settings

    doc = "Summarize this document: " + "lorem ipsum " * 250_000  # 3 MB
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": doc}]}])
    with serve(make_settings(lake_dir, max_message_bytes=8 << 20), "127.0.0.1", 0) as srv, \
            grpc.insecure_channel(srv.target, options=[
                ("grpc.max_send_message_length", 8 << 20)]) as ch:
        spans = [_span(1, name="invoke_agent bot", gen_ai__operation__name="invoke_agent",
                       gen_ai__input__messages=messages),
                 _span(2, 1, start=10**18 + 1, gen_ai__operation__name="chat",
                       gen_ai__input__messages=messages),
                 _span(3, 1, name="execute_tool fetch", start=10**18 + 2,
                       gen_ai__operation__name="execute_tool", gen_ai__tool__name="fetch",
                       gen_ai__tool__call__result="r" * 100_000, big__custom="y" * 200_000)]
        assert not otlp_grpc.TraceServiceStub(ch).Export(_request(*spans)).HasField(
            "partial_success")
        srv.lake.flush()
        with LakeClient(srv.target, max_message_bytes=8 << 20) as client:
            run = client.get_trajectory("01" * 16)
            full = client.get_trajectory("01" * 16, full_payloads=True)
    agent, chat, tool = run["steps"]
    assert agent["input_ref"] == chat["input_ref"] and len(chat["input"]) == 1024
    assert full["steps"][1]["input"] == json.dumps(json.loads(messages), separators=(",", ":"))
    assert all(len(s["attributes"]) < 8000 for s in run["steps"])  # no copy of the message
    assert "gen_ai.input.messages" not in json.loads(chat["attributes"])
    assert "gen_ai.tool.call.result" not in json.loads(tool["attributes"])
    custom = json.loads(tool["attributes"])["big.custom"]  # too big an attribute: a preview
    sha = custom.rsplit("payloads.sha256 = ", 1)[1].rstrip("]")
    assert custom.startswith("y" * 1024 + "…[200000 bytes in all: the whole value is ")
    payloads = dict(srv.lake.sql("select sha256, size from payloads").fetchall())
    assert payloads == {chat["input_ref"]: len(full["steps"][1]["input"]),
                        tool["output_ref"]: 100_000, sha: 200_000}  # each once
    assert run["task"].startswith(doc[:4096] + " …[cut at 4096 of 3000025 characters, sha256 ")


def _http(span_id: int, parent: int = 0, start: int = 10**18, **kw: Any) -> trace_pb2.Span:
    """A span of no GenAI kind: a web request or a database query."""
    return _span(span_id, parent, name="GET /healthz" if not parent else "SELECT users",
                 start=start, http__route="/healthz", **kw)


def test_a_trace_with_no_genai_span_is_no_trajectory(server: Server, trace_stub, caplog,
                                                     monkeypatch):
    with caplog.at_level(logging.INFO, logger="server.otlp"):
        reply = trace_stub.Export(_request(_http(1), _http(2, 1, start=10**18 + 1)))
        assert reply.partial_success.rejected_spans == 0  # not refused: exporters would retry
        assert reply.partial_success.error_message.startswith(
            "2 spans of 1 traces with no GenAI span (gen_ai.* attributes, an OpenInference "
            "span kind) not stored")
        trace_stub.Export(_request(_http(1, trace=b"\x02" * 16)))
        monkeypatch.setattr("server.otlp.LOG_EVERY_S", 0.0)
        trace_stub.Export(_request(_http(1, trace=b"\x03" * 16)))
    line = ("OTLP export (tenant 'default'): {} spans of 1 traces with no GenAI span not stored"
            " (held 120 s in memory for one)")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", line.format(2) + " (further such lines at INFO)"),  # `lake serve` shows it
        ("INFO", line.format(1) + " (and 1 more such exports since the last line)")]
    server.lake.flush()
    assert server.lake.count("trajectories") == 0 and server.lake.count("steps") == 0


def test_web_spans_join_their_trace_whichever_export_brings_its_genai_spans(server: Server,
                                                                           trace_stub):
    """The request's root and a query before the agent runs come first; then the chat; then
    a late query (the trace is known by then)."""
    early = trace_stub.Export(_request(_http(1), _http(2, 1, start=10**18 + 1)))
    assert early.partial_success.rejected_spans == 0
    assert not trace_stub.Export(_request(_span(3, 1, start=10**18 + 2))).HasField(
        "partial_success")
    assert not trace_stub.Export(_request(_http(4, 1, start=10**18 + 3))).HasField(
        "partial_success")
    server.lake.flush()
    assert [s[:2] for s in _steps(server, "01" * 16)] == [
        ("span", "GET /healthz"), ("span", "SELECT users"), ("llm", "chat m"),
        ("span", "SELECT users")]
    assert server.lake.sql("select status, task from trajectories").fetchall() == \
        [("succeeded", "GET /healthz")]  # the root anchors the trace


def test_a_restarted_receiver_asks_the_lake_which_traces_are_trajectories(lake_dir):
    from server.app import serve

    from .conftest import make_settings

    for spans in ([_span(2, 1, start=10**18 + 1)], [_http(1)]):  # chat, then its root
        with serve(make_settings(lake_dir), "127.0.0.1", 0) as srv, \
                grpc.insecure_channel(srv.target) as ch:
            reply = otlp_grpc.TraceServiceStub(ch).Export(_request(*spans))
            assert not reply.HasField("partial_success")
    with serve(make_settings(lake_dir), "127.0.0.1", 0) as srv:
        assert srv.lake.sql("select n_steps, status from trajectories").fetchall() == \
            [(2, "succeeded")]


def test_spans_held_past_their_time_are_dropped(server: Server, trace_stub, monkeypatch):
    monkeypatch.setattr("server.otlp.HOLD_SECONDS", 0.0)
    trace_stub.Export(_request(_http(1)))
    time.sleep(0.01)
    assert not trace_stub.Export(_request(_span(3, 1, start=10**18 + 2))).HasField(
        "partial_success")
    server.lake.flush()
    assert [s[:2] for s in _steps(server, "01" * 16)] == [("llm", "chat m")]


def test_rejections_are_logged_as_exporters_do_not_show_them(server: Server, trace_stub,
                                                             caplog, monkeypatch):
    """The OpenTelemetry SDK's exporter never reads partial_success: the server's log is
    where a rejected span shows. One line per export, at most one every LOG_EVERY_S."""
    bad = _span(2, 1, trace=b"\x01" * 3)
    with caplog.at_level(logging.WARNING, logger="server.otlp"):
        for _ in range(3):
            assert trace_stub.Export(_request(_span(1), bad)).partial_success.rejected_spans \
                == 1
        monkeypatch.setattr("server.otlp.LOG_EVERY_S", 0.0)
        trace_stub.Export(_request(bad, bad))
    first = ("OTLP export (tenant 'default'): {} spans rejected, the others stored; the "
             "first: resource_spans[0].scope_spans[0].spans[{}] ('chat m'): trace_id must be "
             "16 bytes (got 3 bytes): fix the exporter or instrumentation that made it")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", first.format("1 of 2", 1)),
        ("WARNING", first.format("2 of 2", 0) + " (and 2 more such exports since the last "
                                                 "line)")]


def test_a_trace_whose_root_is_in_another_service_still_gets_its_times(server: Server,
                                                                      trace_stub):
    """The chat's parent (a gateway's span) is never exported here: no anchor, so the
    trace stays running, but it spans from its first span's start to its last one's end."""
    chat = _span(2, 1, start=10**18, gen_ai__operation__name="chat")
    chat.end_time_unix_nano = 10**18 + 9 * 10**6
    tool = _span(3, 2, name="execute_tool x", start=10**18 + 10**6,
                 gen_ai__operation__name="execute_tool")  # ends at + 2 ms
    assert not trace_stub.Export(_request(tool, chat)).HasField("partial_success")
    server.lake.flush()
    assert server.lake.sql("select status, epoch_ms(started_at), epoch_ms(ended_at) "
                           "from trajectories").fetchall() == [
        ("running", 10**12, 10**12 + 9)]


def test_a_span_whose_parent_is_remote_anchors_the_trace(server: Server):
    """The SDK flags a span whose parent came from another process (a traceparent header):
    it is this service's root, and decides the trace's status and times."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    remote = SpanContext(trace_id=0xAB, span_id=0xCD, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    memory = InMemorySpanExporter()
    tracer = _provider(memory, batch=False).get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4.1", kind=SpanKind.CLIENT,
                                      context=trace.set_span_in_context(
                                          NonRecordingSpan(remote))) as c:
        c.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4.1",
                          "gen_ai.input.messages": json.dumps([{"role": "user",
                                                                "content": TASK}])})
    spans = memory.get_finished_spans()
    assert OTLPSpanExporter(endpoint=server.target, insecure=True).export(spans).name == \
        "SUCCESS"
    server.lake.flush()
    assert server.lake.sql("select task, status, epoch_ns(ended_at) // 1000 from "
                           "trajectories").fetchall() == [
        (TASK, "succeeded", spans[0].end_time // 1000)]


def test_the_token_s_agent_stands_in_when_no_span_names_one(secure: Server):
    """As StartTrajectory: the caller's token names the agent unless the run does."""
    headers = {"authorization": f"Bearer {token(secure, agent='nightly-bot')}"}
    with grpc.insecure_channel(secure.target) as ch:
        stub = otlp_grpc.TraceServiceStub(ch)
        named = _span(1, name="invoke_agent x", gen_ai__operation__name="invoke_agent",
                      gen_ai__agent__name="support-bot")
        unnamed = _span(1, name="chat m", trace=b"\x02" * 16)
        for span in (named, unnamed):
            assert not stub.Export(_request(span), metadata=tuple(headers.items())).HasField(
                "partial_success")
    secure.lake.flush()
    assert secure.lake.sql("select trajectory_id, agent from trajectories order by 1",
                           tenant="acme").fetchall() == [
        ("01" * 16, "support-bot"), ("02" * 16, "nightly-bot")]


def test_span_times_never_end_a_trajectory_before_it_starts(server: Server, trace_stub,
                                                             caplog):
    """The anchor span's times are one pair: an agent span still open when exported (end
    time 0: unknown) takes no end from another span that ended before it started (a child
    on another host's clock, a web request that returned before the agent ran); the trace's
    last span end stands in only if it is not before the start."""
    t = 10**18
    open_agent = _span(1, name="invoke_agent a", start=t + 10**9,
                       gen_ai__operation__name="invoke_agent")
    open_agent.end_time_unix_nano = 0
    skewed = _span(2, 1, start=t, gen_ai__operation__name="chat")  # ends at t + 1 ms
    skewed.flags = 0x300  # its parent came from another process: a root of its own
    web = _span(1, name="GET /run", start=t, trace=b"\x02" * 16, http__route="/run")
    late_agent = _span(2, 1, name="invoke_agent a", start=t + 10**9, trace=b"\x02" * 16,
                       gen_ai__operation__name="invoke_agent")
    late_agent.end_time_unix_nano = 0
    ended = _span(1, name="invoke_agent a", start=t, trace=b"\x03" * 16,
                  gen_ai__operation__name="invoke_agent")
    ended.end_time_unix_nano = 0
    child = _span(2, 1, start=t + 10**6, trace=b"\x03" * 16)  # ends at t + 2 ms
    with caplog.at_level(logging.WARNING):
        for spans in ((open_agent, skewed), (web, late_agent), (ended, child)):
            assert not trace_stub.Export(_request(*spans)).HasField("partial_success")
        server.lake.flush()
    assert [r.getMessage() for r in caplog.records] == []
    assert server.lake.sql("select trajectory_id[:2], status, epoch_us(started_at), "
                           "epoch_us(ended_at) from trajectories order by 1").fetchall() == [
        ("01", "succeeded", 10**15 + 10**6, None), ("02", "succeeded", 10**15 + 10**6, None),
        ("03", "succeeded", 10**15, 10**15 + 2000)]


def test_a_span_id_twice_in_one_export_is_a_retry_or_a_rejection(server: Server, trace_stub):
    """The same span again (equal in every field, same resource and scope) is a retry: left
    out silently. Another span with the same id is refused, naming where the first is."""
    first = _span(2, 1, gen_ai__operation__name="chat", gen_ai__request__model="a")
    other = _span(2, 1, gen_ai__operation__name="chat", gen_ai__request__model="b")
    copy = trace_pb2.Span()
    copy.CopyFrom(first)
    reply = trace_stub.Export(_request(first, other, copy, _span(3, 1, start=10**18 + 1)))
    assert reply.partial_success.rejected_spans == 1
    assert reply.partial_success.error_message == (
        "1 of 4 spans rejected, the others stored: resource_spans[0].scope_spans[0].spans[1] "
        "('chat m'): span_id 0000000000000002 of trace 01010101010101010101010101010101 is "
        "also at resource_spans[0].scope_spans[0].spans[0] ('chat m'), with other content: the "
        "first is taken. A span id names one span of its trace: fix the instrumentation that "
        "reuses it (an identical copy is taken as a retry and left out)")
    server.lake.flush()
    assert [s[1] for s in _steps(server, "01" * 16)] == ["a", "chat m"]


def test_one_tenant_s_held_spans_do_not_evict_another_s(secure: Server, monkeypatch):
    """The hold's bytes are shared: past them, the tenant holding the most loses its oldest
    first. acme's flood of non-GenAI spans evicts its own, not globex's one held span."""
    monkeypatch.setattr("server.otlp.HOLD_BYTES", 20_000)
    acme, globex = ([("authorization", f"Bearer {token(secure, tenant)}")]
                    for tenant in ("acme", "globex"))
    with grpc.insecure_channel(secure.target) as ch:
        stub = otlp_grpc.TraceServiceStub(ch)
        stub.Export(_request(_http(1, trace=b"\x0a" * 16)), metadata=globex)
        for i in range(30):  # ~2 KB each: 60 KB of acme's, held or evicted
            stub.Export(_request(_http(1, trace=bytes([0xb0 + i]) * 16, junk="j" * 2000)),
                        metadata=acme)
        for trace, who in ((b"\x0a", globex), (b"\xb0", acme), (bytes([0xb0 + 29]), acme)):
            stub.Export(_request(_span(2, 1, start=10**18 + 1, trace=trace * 16)),
                        metadata=who)
    secure.lake.flush()
    names = {tid[:2]: steps for tid, steps in secure.lake.sql(
        "select trajectory_id, list(name order by index) from steps group by 1",
        all_tenants=True).fetchall()}
    assert names == {"0a": ["GET /healthz", "chat m"],  # globex's held span joined its trace
                     "b0": ["chat m"],  # acme's oldest was evicted
                     "cd": ["GET /healthz", "chat m"]}  # acme's newest was still held
