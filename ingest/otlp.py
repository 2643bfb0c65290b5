"""OpenTelemetry spans -> trajectory steps (the mapping table is in docs/otlp.md).

One trace is one trajectory (``trajectory_id`` = the trace id in hex); every span is one
step (``step_id`` = the span id, ``parent_step_id`` = its parent), numbered by start time
when the lake commits (``Lake.ingest_spans``), so spans may come in any order and across
exports. The trajectory's fields come from the spans as prioritised hints
(``lake.trajectory``: lower wins): an ``invoke_agent`` / ``invoke_workflow`` span first,
then the trace's root span (or a span whose parent the exporter flags remote: this
service's root), then the others (the first chat's user message gives the task when the
agent span has none; until an anchor comes, the lake times the trace by its spans).
Read: the GenAI semantic conventions (current and the older names still emitted), and
OpenInference (``openinference.span.kind``, ``llm.*``, ``tool.*``). Every raw attribute is
kept in the step's ``attributes`` but those that became its input or output (a prompt is
stored once: as the input, a payload when large); a task taken from a message is cut at
``TASK_CHARS``. A span id twice in one request: an equal copy (a retry) is left out, one
with other content rejected (``_again``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, SpanFlags, Status

from lake.patches import HINTS

# Hint priorities (lower wins): an evaluation's verdict beats the agent span's status.
EVALUATION, AGENT, ROOT, OTHER, FALLBACK = -1, 0, 1, 2, 9
TASK_CHARS = 4096  # a longer task is cut (``_bounded``); the whole text stays in its span
LLM_OPS = {"chat", "text_completion", "generate_content"}
KINDS = {**dict.fromkeys(LLM_OPS, "llm"), "execute_tool": "tool", "invoke_agent": "agent",
         "create_agent": "agent", "invoke_workflow": "workflow", "embeddings": "embeddings",
         "retrieval": "retrieval"}
OPENINFERENCE_KINDS = {"LLM": "llm", "TOOL": "tool", "AGENT": "agent", "CHAIN": "chain",
                       "RETRIEVER": "retrieval", "EMBEDDING": "embeddings",
                       "RERANKER": "reranker", "GUARDRAIL": "guardrail",
                       "EVALUATOR": "evaluator"}
PASS = {"pass", "passed", "success", "succeeded", "true", "correct", "yes", "good"}
FAIL = {"fail", "failed", "failure", "false", "incorrect", "no", "bad"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_COUNT = (1 << 63) - 1  # what the lake's token columns hold
_SPAN_KINDS = {v: k for k, v in Span.SpanKind.items()}
_STATUS_CODES = {v: k for k, v in Status.StatusCode.items()}
_REMOTE_PARENT = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK  # the flags bit (read once)


@dataclass(slots=True)
class Mapped:
    """An export request's spans: ``spans`` as ``(location, trajectory_id, step)``, ``bad``
    those that cannot be steps as ``(location, reason)``; ``genai`` the trace ids that have
    a GenAI span (``is_genai``) among them; ``notes`` ``(location, what)``: values of stored
    spans that were not used (a token count that is no whole number). A location reads
    ``resource_spans[0].scope_spans[1].spans[4] ('chat gpt-4o')``."""

    spans: list[tuple[str, str, dict]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    genai: set[str] = field(default_factory=set)
    notes: list[tuple[str, str]] = field(default_factory=list)
    copies: int = 0  # spans left out as retries: equal to one earlier in the request

    @property
    def total(self) -> int:
        """The request's spans."""
        return len(self.spans) + len(self.bad) + self.copies


def spans_of(request: ExportTraceServiceRequest, agent: str | None = None) -> Mapped:
    """``agent``: the trajectory's agent when no span names one (the caller's token's).
    A span id that comes again in the request is ``_again``: a copy, or a rejection."""
    out, named = Mapped(), set()
    seen: dict[tuple[bytes, bytes], tuple[str, Span, Any, Any]] = {}  # the stored spans
    for i, rs in enumerate(request.resource_spans):
        resource = attributes(rs.resource.attributes)
        for j, ss in enumerate(rs.scope_spans):
            scope = ss.scope.name or None
            for k, span in enumerate(ss.spans):
                where = f"resource_spans[{i}].scope_spans[{j}].spans[{k}]{_named(span)}"
                key = (span.trace_id, span.span_id)
                if key in seen:
                    _again(out, where, (span, rs.resource, ss.scope), *seen[key])
                    continue
                notes: list[str] = []
                try:
                    tid, step, genai = span_step(span, resource, scope, notes)
                except ValueError as e:
                    out.bad.append((where, str(e)))
                    continue
                seen.setdefault(key, (where, span, rs.resource, ss.scope))
                out.notes += [(where, n) for n in notes]
                if agent and tid not in named:  # one span of each trace in a request is
                    named.add(tid)  # enough: the first to be stored carries it
                    step.setdefault(HINTS, {}).setdefault("agent", [FALLBACK, agent])
                out.spans.append((where, tid, step))
                if genai:
                    out.genai.add(tid)
    return out


def _again(out: Mapped, where: str, this: tuple, first_where: str, *first: Any) -> None:
    """A span whose trace and span id are those of one taken earlier from the request:
    equal to it (span, resource and scope: a retry, as an exporter may send) it is left
    out; else it is rejected (the first is taken)."""
    if this == first:
        out.copies += 1
        return
    span = this[0]
    out.bad.append((where, f"span_id {span.span_id.hex()} of trace {span.trace_id.hex()} "
                           f"is also at {first_where}, with other content: the first is "
                           "taken. A span id names one span of its trace: fix the "
                           "instrumentation that reuses it (an identical copy is taken as a "
                           "retry and left out)"))


def span_step(span: Span, resource: dict[str, Any], scope: str | None,
              notes: list[str] | None = None) -> tuple[str, dict, bool]:
    """One span -> ``(trajectory_id, step, is_genai)``; ValueError names what is wrong.
    ``notes`` gets what of a span that is stored was not used, and why."""
    _check(span)
    a = attributes(span.attributes)
    if HINTS in a:
        raise ValueError(f"attribute {HINTS!r} is reserved for the lake's trajectory hints: "
                         "rename it in the instrumentation")
    events = [{"name": e.name, "time_unix_nano": e.time_unix_nano,
               "attributes": attributes(e.attributes)} for e in span.events]
    op = _operation(span.name, a)
    kind = _kind(op, a)
    anchor = AGENT if kind in ("agent", "workflow") else ROOT if not span.parent_span_id \
        or span.flags & _REMOTE_PARENT else None
    inputs = outputs = None  # the messages (llm, agent...: any but tool spans)
    if kind == "tool":
        used = [(None, _first_key(a, "gen_ai.tool.call.arguments", "tool.parameters",
                                  "input.value")),
                (None, _first_key(a, "gen_ai.tool.call.result", "output.value"))]
        input_, output = (a.get(k) if k else None for _, k in used)
    else:
        (inputs, used_in), (outputs, used_out) = (_messages(a, events, "input"),
                                                  _messages(a, events, "output"))
        used = [*used_in, *used_out]
        input_ = inputs if inputs is not None else a.get("input.value")
        output = outputs if outputs is not None else a.get("output.value")
        used += [(None, k) for k, found in (("input.value", inputs), ("output.value", outputs))
                 if found is None and k in a]
    error = _error(span, a, events)
    genai = is_genai(kind, a)
    hints = _hints(span, a, events, kind, anchor, inputs, resource, scope, error)
    step: dict[str, Any] = {
        "step_id": span.span_id.hex(),
        "parent_step_id": span.parent_span_id.hex() or None,
        "kind": kind,
        "name": _name(kind, span.name, a),
        "input": _text(input_),
        "output": _text(output),
        "error": error,
        "actor": "agent" if kind in ("llm", "tool", "agent") else None,
        "started_at": _time(span.start_time_unix_nano),
        "duration_ms": ((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
                        if span.end_time_unix_nano else None),
    }
    if kind == "llm":  # usage on agent spans sums its children: kept as attributes only
        notes = [] if notes is None else notes
        step["tokens_in"] = _count(a, notes, "gen_ai.usage.input_tokens",
                                   "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
        step["tokens_out"] = _count(a, notes, "gen_ai.usage.output_tokens",
                                    "gen_ai.usage.completion_tokens",
                                    "llm.token_count.completion")
    events = _unused(a, events, used)  # ``a`` too, in place: read above, not below
    step["attributes"] = {
        **a, "otel.span_name": span.name,
        "otel.span_kind": _SPAN_KINDS.get(span.kind, str(span.kind)),
        "otel.status_code": _STATUS_CODES.get(span.status.code, str(span.status.code)),
        **({"otel.status_message": span.status.message} if span.status.message else {}),
        **({"otel.events": events} if events else {}),
        **({"otel.links": [{"trace_id": x.trace_id.hex(), "span_id": x.span_id.hex(),
                            "attributes": attributes(x.attributes)} for x in span.links]}
           if span.links else {}),
        **({"otel.scope": scope} if scope else {})}
    if hints:
        step[HINTS] = hints
    return span.trace_id.hex(), step, genai


def _check(span: Span) -> None:
    if len(span.trace_id) == 16 and len(span.span_id) == 8 and len(span.parent_span_id) in (
            0, 8) and any(span.trace_id) and any(span.span_id) and span.start_time_unix_nano \
            and span.end_time_unix_nano >= span.start_time_unix_nano:
        return  # the common case, at once
    fix = "fix the exporter or instrumentation that made it"
    for name, size in (("trace_id", 16), ("span_id", 8)):
        value = getattr(span, name)
        if len(value) != size:
            raise ValueError(f"{name} must be {size} bytes (got {len(value)} bytes): {fix}")
        if not any(value):
            raise ValueError(f"{name} is all zero, which OpenTelemetry reserves for an "
                             f"invalid id: {fix}")
    if span.parent_span_id and len(span.parent_span_id) != 8:
        raise ValueError(f"parent_span_id must be 8 bytes or empty (got "
                         f"{len(span.parent_span_id)} bytes): {fix}")
    if not span.start_time_unix_nano:
        raise ValueError("start_time_unix_nano is 0: a span needs its start time")
    if span.end_time_unix_nano and span.end_time_unix_nano < span.start_time_unix_nano:
        raise ValueError(f"end_time_unix_nano ({span.end_time_unix_nano}) is before "
                         f"start_time_unix_nano ({span.start_time_unix_nano}): {fix}")


def is_genai(kind: str, a: dict) -> bool:
    """Whether a span is a GenAI one: the mapper knows its kind (an agent, llm, tool...
    span by the GenAI conventions or OpenInference), or it has a ``gen_ai.*`` attribute.
    A trace without one is no trajectory."""
    return kind != "span" or any(k.startswith("gen_ai.") for k in a)


def _hints(span: Span, a: dict, events: list[dict], kind: str, anchor: int | None,
           inputs: Any, resource: dict, scope: str | None, error: str | None) -> dict:
    prio = OTHER if anchor is None else anchor
    h: dict[str, list] = {}

    def put(field: str, p: int, value: Any) -> None:
        if value is not None and value != "":
            h[field] = [p, value]

    task = _user_text(inputs)
    if task is None and anchor is not None:
        task = _first(a, "input.value")
    put("task", prio, _bounded(_str(task)))
    if task is None and anchor is not None:
        put("task", FALLBACK, _bounded(_str(_first(a, "gen_ai.agent.description",
                                                   "gen_ai.workflow.name")) or span.name))
    put("agent", prio, _str(_first(a, "gen_ai.agent.name", "agent.name")))
    put("agent_version", prio, _str(_first(a, "gen_ai.agent.version")))
    if kind in ("llm", "agent"):
        put("model", prio, _str(_first(a, "gen_ai.response.model", "gen_ai.request.model",
                                       "llm.model_name")))
    put("session_id", prio, _str(_first(a, "gen_ai.conversation.id", "session.id")))
    put("on_behalf_of", prio, _str(_first(a, "user.id", "enduser.id")))
    if anchor is not None:
        failed = span.status.code == Status.STATUS_CODE_ERROR or bool(a.get("error.type"))
        put("status", anchor, "failed" if failed else "succeeded")
        if failed or span.status.code == Status.STATUS_CODE_OK:
            put("success", anchor, not failed)
        put("started_at", anchor, _time(span.start_time_unix_nano))
        if span.end_time_unix_nano:
            put("ended_at", anchor, _time(span.end_time_unix_nano))
        meta = {"otel": {"trace_id": span.trace_id.hex(), "root_span_id": span.span_id.hex(),
                         **({"resource": resource} if resource else {}),
                         **({"scope": scope} if scope else {})}}
        put("meta", anchor, meta)
    if events:
        _evaluations(events, put)
    return h


def _bounded(task: str | None) -> str | None:
    """A task of at most ``TASK_CHARS`` characters: a longer one (a whole document pasted as
    the first user message) is cut, and ends with its length and digest, so that two tasks
    cut alike are the same task only if their whole texts are."""
    if task is None or len(task) <= TASK_CHARS:
        return task
    digest = hashlib.sha256(task.encode()).hexdigest()[:16]
    return f"{task[:TASK_CHARS]} …[cut at {TASK_CHARS} of {len(task)} characters, sha256 {digest}]"


def _evaluations(events: list[dict], put: Any) -> None:
    """``gen_ai.evaluation.result`` events -> scores; a pass/fail label -> the outcome; an
    evaluation named ``reward`` (else the deciding one) -> the reward."""
    scores: dict[str, float] = {}
    verdict = reward = None
    for e in events:
        if e["name"] != "gen_ai.evaluation.result":
            continue
        ea = e["attributes"]
        name = _str(ea.get("gen_ai.evaluation.name")) or "evaluation"
        value = ea.get("gen_ai.evaluation.score.value")
        value = float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value) else None
        label = str(ea.get("gen_ai.evaluation.score.label", "")).strip().lower()
        if value is not None:
            scores[name] = value
            if name == "reward":
                reward = value
        if verdict is None and label in PASS | FAIL:
            verdict = label in PASS
            if reward is None:
                reward = value
    put("scores", EVALUATION, scores or None)
    if verdict is not None:
        put("success", EVALUATION, verdict)
        put("status", EVALUATION, "succeeded" if verdict else "failed")
    put("reward", EVALUATION, reward)


# -- attribute readers ----------------------------------------------------------------------

def any_value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return v.bytes_value.hex()
    if which == "double_value" and not math.isfinite(v.double_value):
        return str(v.double_value)  # JSON has no NaN / Infinity
    return getattr(v, which)


_PLAIN = frozenset(("string_value", "int_value", "bool_value"))


def attributes(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        out[kv.key] = getattr(v, which) if which in _PLAIN else any_value(v)
    return out


def _first_key(a: dict, *keys: str) -> str | None:
    for k in keys:
        if a.get(k) is not None:
            return k
    return None


def _first(a: dict, *keys: str) -> Any:
    for k in keys:
        v = a.get(k)
        if v is not None:
            return v
    return None


def _str(v: Any) -> str | None:
    return None if v is None else v if isinstance(v, str) else str(v)


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return orjson.dumps(v).decode()


def _count(a: dict, notes: list[str], *keys: str) -> int | None:
    """A token count: a whole number (as ``records`` reads one: 12, 12.0, or its text)
    from 0 to 2**63 - 1; any other value is not counted, and noted."""
    key = _first_key(a, *keys)
    if key is None:
        return None
    v = a[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    elif isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            pass
    if type(v) is int and 0 <= v <= _MAX_COUNT:
        return v
    notes.append(f"{key} = {v!r:.40} is not counted in the step's tokens (not a whole "
                 f"number from 0 to {_MAX_COUNT}); the attribute is kept")
    return None


def _time(ns: int) -> datetime:
    """Nanoseconds since 1970 -> an aware datetime (microseconds; logged as ISO 8601)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _operation(name: str, a: dict) -> str | None:
    op = a.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    head = name.split(" ", 1)[0]
    return head if head in KINDS else None


def _kind(op: str | None, a: dict) -> str:
    if op in KINDS:
        return KINDS[op]
    oi = a.get("openinference.span.kind")
    if isinstance(oi, str) and oi:
        return OPENINFERENCE_KINDS.get(oi.upper(), oi.lower())
    if op:
        return op
    if a.get("gen_ai.system") is not None or a.get("gen_ai.provider.name") is not None:
        return "llm"  # older instrumentations set no operation name
    return "span"


def _name(kind: str, span_name: str, a: dict) -> str:
    if kind == "tool":
        found = _first(a, "gen_ai.tool.name", "tool.name")
    elif kind == "llm":
        found = _first(a, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
    elif kind in ("agent", "workflow"):
        found = _first(a, "gen_ai.agent.name", "gen_ai.workflow.name", "agent.name")
    else:
        found = None
    return _str(found) or span_name


Used = list[tuple[int | None, str | None]]  # where a value was read: (None, attribute key),
# (event index, its attribute key), or (event index, None) for the whole event


def _messages(a: dict, events: list[dict], side: str) -> tuple[Any, Used]:
    """The span's input or output messages in whichever convention it uses, and where they
    were read (left out of the step's attributes: they are its input or output)."""
    key = f"gen_ai.{side}.messages"
    found, used = a.get(key), [(None, key)]
    if found is None:
        for i, e in enumerate(events):  # the current convention's opt-in event has them too
            if e["name"] == "gen_ai.client.inference.operation.details" \
                    and e["attributes"].get(key) is not None:
                found, used = e["attributes"][key], [(i, key)]
    if isinstance(found, str):
        try:
            found = orjson.loads(found)
        except orjson.JSONDecodeError:
            return found, used
    if found is not None:
        return found, used
    prefix = "gen_ai.prompt." if side == "input" else "gen_ai.completion."
    oi = f"llm.{side}_messages."
    if f"{prefix}0.content" in a or f"{prefix}0.role" in a:  # indexed from 0
        return _indexed(a, prefix)
    if f"{oi}0.message.content" in a or f"{oi}0.message.role" in a:
        return _indexed(a, oi, strip=".message")
    names = ({"gen_ai.user.message", "gen_ai.system.message", "gen_ai.assistant.message",
              "gen_ai.tool.message"} if side == "input" else {"gen_ai.choice"})
    old = [(i, {"role": e["name"].split(".")[1] if side == "input" else "assistant",
                **e["attributes"]}) for i, e in enumerate(events) if e["name"] in names]
    return ([m for _, m in old], [(i, None) for i, _ in old]) if old else (None, [])


def _indexed(a: dict, prefix: str, strip: str = "") -> tuple[list[dict], Used]:
    """``prefix.N.field`` attributes (``gen_ai.prompt.0.content``) -> [{field: value}]."""
    rows: dict[int, dict] = {}
    used: Used = []
    for k, v in a.items():
        if not k.startswith(prefix):
            continue
        n, _, field = k[len(prefix):].partition(".")
        if n.isdigit() and field:
            field = field.removeprefix(strip.lstrip(".") + ".") if strip else field
            rows.setdefault(int(n), {})[field] = v
            used.append((None, k))
    return [rows[n] for n in sorted(rows)], used


def _unused(a: dict, events: list[dict], used: Used) -> list[dict]:
    """Takes out of the attributes (in place) and the events (returned) what became the
    step's input or output."""
    gone = set()
    for i, k in used:
        if i is None:
            a.pop(k, None)
        else:
            gone.add((i, k))
    if gone:
        events = [{**e, "attributes": {k: v for k, v in e["attributes"].items()
                                       if (i, k) not in gone}}
                  for i, e in enumerate(events) if (i, None) not in gone]
    return events


def _user_text(messages: Any) -> str | None:
    """The text of the first user message (parts, content, or gen_ai.event.content)."""
    if not isinstance(messages, list):
        return None
    for m in messages:
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        parts = m.get("parts")
        if isinstance(parts, list):
            texts = [p.get("content") for p in parts
                     if isinstance(p, dict) and p.get("type", "text") == "text"
                     and isinstance(p.get("content"), str)]
            if texts:
                return "\n".join(texts)
        for key in ("content", "gen_ai.event.content"):
            c = m.get(key)
            if isinstance(c, str) and c.strip():
                if key == "gen_ai.event.content":
                    try:
                        c = orjson.loads(c).get("content", c)
                    except (orjson.JSONDecodeError, AttributeError):
                        pass
                return c if isinstance(c, str) else None
    return None


def _error(span: Span, a: dict, events: list[dict]) -> str | None:
    if span.status.code != Status.STATUS_CODE_ERROR and not a.get("error.type"):
        return None
    for e in events:
        if e["name"] == "exception":
            ea = e["attributes"]
            msg = ea.get("exception.message")
            if msg or ea.get("exception.type"):
                return f"{ea.get('exception.type') or 'exception'}: {msg or ''}".strip()
    return span.status.message or _str(a.get("error.type")) or "error"


def _named(span: Span) -> str:
    return f" ({span.name!r})" if span.name else ""
