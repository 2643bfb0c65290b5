"""Replay tapes: a trajectory's tool calls with their recorded results, answered back.

    tape = Tape.from_lake(lake, "run-42")              # or Tape.load("run-42.tape.json")
    reply = tape.call("get_order", {"id": "#W5442520"})
    if reply.matched:
        use(reply.result)                              # reply.error: the recorded failure
    else:
        print(reply.divergence.detail)                 # the record has no such call
    print(tape.report().as_dict())                     # divergences + calls never made

A tape holds the trajectory's ``tool`` steps that have a name, in step order: name,
arguments (the step's ``input``, as recorded), result (``output``) and ``error``; large
payloads are inlined in full.

**Matching.** A call matches a recorded call of the same tool name whose arguments are
equal *after canonicalization*: arguments given as a dict or as JSON text are parsed and
compared as JSON values, so key order, whitespace and number spelling (``1``, ``1.0``,
``1e0``) do not matter; ``None``, ``""`` and ``{}`` all mean "no arguments"; text that is
not JSON is compared after trimming surrounding whitespace. Nothing else is forgiven:
strings are compared exactly (case and inner spaces count), and so are list orders.

**Order.** Each recorded call answers once. A call takes the *earliest* recorded call not
yet used that matches it, so repeated identical calls get their recorded results in the
recorded order. Taking one past earlier unused calls answers it and notes an
``out_of_order`` divergence (the skipped calls stay available).

**Divergences** (``Reply.divergence``, and all of them in ``report()``):

``unrecorded``          the call matches no unused recorded call and the tool has none left
                        (an extra call, or one the recorded run never made): not answered
``changed_arguments``   the tool has unused recorded calls, but with other arguments; the
                        detail names the arguments that differ from the next one: not answered
``out_of_order``        answered, but recorded calls before it had not been made yet
``not_called``          (report only) a recorded call that was never made
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from .lake import Lake

FORMAT = "context-lake.tape/1"
UNRECORDED, CHANGED, OUT_OF_ORDER, NOT_CALLED = ("unrecorded", "changed_arguments",
                                                 "out_of_order", "not_called")


@dataclass(frozen=True)
class RecordedCall:
    step: int                 # the tool step's index in its trajectory
    name: str
    arguments: str | None     # as recorded
    result: str | None
    error: str | None = None  # set when the recorded call failed


@dataclass(frozen=True)
class Divergence:
    kind: str                 # unrecorded | changed_arguments | out_of_order | not_called
    call: int | None          # the agent's call number (0-based); None for not_called
    name: str
    arguments: str | None     # the agent's arguments (the recorded ones for not_called)
    step: int | None          # the recorded step concerned, if any
    detail: str


@dataclass(frozen=True)
class Reply:
    matched: bool
    result: str | None = None
    error: str | None = None
    step: int | None = None
    divergence: Divergence | None = None


@dataclass
class Report:
    calls: int = 0            # calls made to the tape
    answered: int = 0
    recorded: int = 0         # calls on the tape
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Every recorded call was made, in order, and nothing else was called."""
        return not self.divergences

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "answered": self.answered, "recorded": self.recorded,
                "clean": self.clean, "divergences": [asdict(d) for d in self.divergences]}


class Tape:
    def __init__(self, calls: list[RecordedCall], *, source: dict[str, Any] | None = None):
        self.calls = list(calls)
        self.source = dict(source or {})
        self._keys = [canonical(c.arguments) for c in self.calls]
        self._used = [False] * len(self.calls)
        self._made = 0
        self._answered = 0
        self._divergences: list[Divergence] = []

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def from_steps(cls, steps: list[dict[str, Any]], **source: Any) -> Tape:
        """From step rows (or interchange-format steps): the named ``tool`` steps, in order."""
        calls = [RecordedCall(int(s.get("index", i)), s["name"], _text(s.get("input")),
                              _text(s.get("output")), _text(s.get("error")))
                 for i, s in enumerate(steps) if s.get("kind") == "tool" and s.get("name")]
        calls.sort(key=lambda c: c.step)
        return cls(calls, source=source)

    @classmethod
    def from_lake(cls, lake: Lake, trajectory_id: str, *, tenant: str | None = None,
                  as_of: int | str | None = None) -> Tape:
        """The tape of a stored trajectory, read at ``as_of`` (default: the latest version)."""
        from .reads import trajectory

        tenant = tenant or lake.settings.tenant
        version, row = trajectory(lake, tenant, trajectory_id, as_of=as_of, full_payloads=True)
        return cls.from_steps(row["steps"], trajectory_id=trajectory_id, tenant=tenant,
                              task=row["task"], lake_version=version.version,
                              success=row["success"], reward=row["reward"])

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.source,
                "calls": [asdict(c) for c in self.calls]}

    def dumps(self) -> str:
        """The tape file's text: JSON, keys in a fixed order (the same tape, the same bytes)."""
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Tape:
        """Read a tape file written by ``save`` / ``lake tape --out``."""
        where = str(path)
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise NotFound(f"cannot read the tape file: {e.strerror}", location=where) from e
        except ValueError as e:
            raise InvalidArgument(f"not a JSON tape file ({e}); write one with `lake tape ID "
                                  "--out FILE`", location=where) from e
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise InvalidArgument(f"not a tape: expected \"format\": \"{FORMAT}\"; write one "
                                  "with `lake tape ID --out FILE`", location=where,
                                  field="format")
        raw = obj.pop("calls", None)
        if not isinstance(raw, list):
            raise InvalidArgument("calls must be a list of recorded calls", location=where,
                                  field="calls")
        return cls([_call(c, i, where) for i, c in enumerate(raw)],
                   source={k: v for k, v in obj.items() if k != "format"})

    # -- replaying -----------------------------------------------------------------------------
    def call(self, name: str, arguments: Any = None) -> Reply:
        """Answer a tool call from the record, or say how it diverges (see the module doc)."""
        n = self._made
        self._made += 1
        key = canonical(arguments)
        shown = key if key != "{}" else None
        pending = [i for i, used in enumerate(self._used) if not used]
        for i in pending:
            c = self.calls[i]
            if c.name == name and self._keys[i] == key:
                self._used[i] = True
                self._answered += 1
                div = None
                if i != pending[0]:
                    skipped = [self.calls[j] for j in pending if j < i]
                    div = self._diverge(OUT_OF_ORDER, n, name, shown, c.step,
                                        f"call {n} ({name}) answered from step {c.step}, "
                                        f"before {len(skipped)} earlier recorded call(s): "
                                        + ", ".join(f"{s.name} (step {s.step})"
                                                    for s in skipped[:3]))
                return Reply(True, c.result, c.error, c.step, div)
        same_tool = [self.calls[i] for i in pending if self.calls[i].name == name]
        if same_tool:
            nxt = same_tool[0]
            return Reply(False, divergence=self._diverge(
                CHANGED, n, name, shown, nxt.step,
                f"call {n} ({name}): arguments differ from the recorded call at step "
                f"{nxt.step}: {arguments_diff(nxt.arguments, arguments)}"))
        return Reply(False, divergence=self._diverge(
            UNRECORDED, n, name, shown, None,
            f"call {n} ({name}): the record has no{' more' if self._seen(name) else ''} "
            f"call of {name!r} left to answer it"))

    def report(self) -> Report:
        """What happened so far: divergences in call order, then recorded calls never made."""
        missed = [Divergence(NOT_CALLED, None, c.name, c.arguments, c.step,
                             f"recorded call {c.name} at step {c.step} was never made")
                  for c, used in zip(self.calls, self._used, strict=True) if not used]
        return Report(self._made, self._answered, len(self.calls),
                      self._divergences + missed)

    def reset(self) -> None:
        """Start the replay again from the first recorded call."""
        self._used = [False] * len(self.calls)
        self._made = self._answered = 0
        self._divergences = []

    def _seen(self, name: str) -> bool:
        return any(c.name == name for c in self.calls)

    def _diverge(self, kind: str, n: int, name: str, arguments: str | None, step: int | None,
                 detail: str) -> Divergence:
        d = Divergence(kind, n, name, arguments, step, detail)
        self._divergences.append(d)
        return d


# -- arguments ----------------------------------------------------------------------------------

def canonical(arguments: Any) -> str:
    """The comparison key of a call's arguments (see "Matching" in the module doc)."""
    if isinstance(arguments, (bytes, bytearray)):
        arguments = arguments.decode("utf-8", "replace")
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        text = arguments.strip()
        if not text:
            return "{}"
        try:
            arguments = json.loads(text)
        except ValueError:
            return text
    try:
        return json.dumps(_plain(arguments), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"tool arguments must be JSON values (or JSON text): {e}",
                              field="arguments") from e


def _plain(v: Any) -> Any:
    """Whole floats as ints (``1.0`` == ``1``); containers recursively."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < 2**63:
        return int(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def arguments_diff(recorded: Any, given: Any, limit: int = 3) -> str:
    """A short, readable difference: the keys whose values differ, else both values."""
    a, b = json.loads(_json_or_text(recorded)), json.loads(_json_or_text(given))
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        diffs = [f"{k}: recorded {_short(a.get(k, '<absent>'))}, "
                 f"called with {_short(b.get(k, '<absent>'))}"
                 for k in keys if _plain(a.get(k, _ABSENT)) != _plain(b.get(k, _ABSENT))]
        more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
        return "; ".join(diffs[:limit]) + more
    return f"recorded {_short(a)}, called with {_short(b)}"


_ABSENT = object()


def _json_or_text(v: Any) -> str:
    key = canonical(v)
    try:
        json.loads(key)
        return key
    except ValueError:
        return json.dumps(key)


def _short(v: Any, n: int = 60) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else json.dumps(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def _call(c: Any, i: int, where: str) -> RecordedCall:
    if not isinstance(c, dict):
        raise InvalidArgument("a recorded call must be an object", location=where,
                              field=f"calls[{i}]")
    if not isinstance(c.get("name"), str) or not c["name"]:
        raise InvalidArgument("name must be the tool's name (a string)", location=where,
                              field=f"calls[{i}].name")
    step = c.get("step", i)
    if isinstance(step, bool) or not isinstance(step, int):
        raise InvalidArgument(f"step must be a whole number, got {step!r}", location=where,
                              field=f"calls[{i}].step")
    for key in ("arguments", "result", "error"):
        if c.get(key) is not None and not isinstance(c[key], str):
            raise InvalidArgument(f"{key} must be text or null", location=where,
                                  field=f"calls[{i}].{key}")
    return RecordedCall(step, c["name"], c.get("arguments"), c.get("result"), c.get("error"))
