"""``LakeClient.trajectory``'s ``Run``: a live trajectory logged step by step.

Steps are numbered, checked and sized as they are logged (a step no message can carry is
refused there, at the call), kept in a buffer and sent in batches that each fit one message.
One ``Run`` may be shared by threads (an agent's parallel tool calls): numbering and the
buffer are under a lock, sends go one at a time, outside it, in index order.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from lake.errors import Conflict, InvalidArgument, LakeError, ResourceExhausted, Unavailable
from proto.contextlake.v1 import lake_pb2 as pb

from . import checked
from .client_stream import reworded

if TYPE_CHECKING:
    from .client import LakeClient

TRANSIENT = (Unavailable, ResourceExhausted)  # the lake did not answer: the steps are kept
_STEP_OVERHEAD = 11  # a step's tag and length inside a request: 1 + up to 10 bytes
_REFUSED_CHARS, _REASON_CHARS = 4000, 300  # the steps_refused text, each refusal in it
_BIG_FIELDS = ("output", "input", "error", "attributes", "name", "actor")


class Run:
    """A live trajectory: steps are numbered and sent in batches; durable at ``finish``.

    A step is checked when it is logged: a value of the wrong type raises there, naming
    ``steps[i].<field>``, and so does a step too big for one message (``max_message_bytes``);
    neither is kept, nor takes an index. Steps get ``started_at`` (now, less their
    ``duration_ms``) unless given. Every ``BATCH`` steps the buffer is sent without waiting
    on a failure: logging a step never raises for other steps' sending, which ``flush`` and
    ``finish`` retry and raise. Leaving the block without ``finish`` marks the run failed if
    an exception escaped (or steps were refused), else abandoned; if the lake did not
    answer, the run keeps what was not sent: call ``finish`` again once it does. After
    ``finish``, logging a step or finishing again raises ``Conflict``. Thread-safe."""

    BATCH = 32

    def __init__(self, client: LakeClient, task: str, fields: dict[str, Any]):
        self.client, self.task, self.fields = client, task, fields
        self.trajectory_id = fields.pop("trajectory_id", None) or f"run-{uuid.uuid4().hex}"
        self._head = pb.AppendStepsRequest(trajectory_id=self.trajectory_id).ByteSize()
        self._lock = threading.Lock()  # numbering, the buffer, the refusals
        self._sending = threading.Lock()  # one send at a time: steps go in index order
        self._buffer: list[tuple[pb.Step, int]] = []  # (step, its serialized size)
        self._next = 0
        self._flush_at = self.BATCH
        self._refused: list[tuple[str, str]] = []  # (field, reason): every refused step
        self._logged = self._raised = 0  # of _refused: in a steps_refused step / raised
        self._closing = self.finished = False
        self._gave_up: LakeError | None = None  # the error that left the run unsent
        self.lsn = 0

    def __enter__(self) -> Run:
        self.client.start(self.task, trajectory_id=self.trajectory_id, **self.fields)
        return self

    # -- logging ------------------------------------------------------------------------------
    def step(self, kind: str, **fields: Any) -> None:
        if fields.get("started_at") is None:
            took = fields.get("duration_ms")
            now = datetime.now(UTC)
            fields["started_at"] = now - timedelta(milliseconds=took) \
                if isinstance(took, (int, float)) and not isinstance(took, bool) \
                and 0 <= took < 1e10 else now
        with self._lock:
            self._open("log a step")
            self._add(checked.step({"index": self._next, "kind": kind, **fields},
                                   f"steps[{self._next}]"))
            due = len(self._buffer) >= self._flush_at
        if due:
            self._send_now()

    def tool(self, name: str, input: Any = None, output: Any = None, **fields: Any) -> None:
        self.step("tool", name=name, input=input, output=output, **fields)

    def llm(self, output: Any = None, input: Any = None, **fields: Any) -> None:
        self.step("llm", input=input, output=output, **fields)

    def _open(self, action: str) -> None:
        if self.finished or self._closing:
            state = "finished" if self.finished else "being finished (finish() was called)"
            raise Conflict(f"cannot {action}: run {self.trajectory_id!r} is {state}. Log "
                           "every step before finish(); for another attempt, start a new run "
                           "with client.trajectory(...)", field="trajectory_id")

    def _add(self, step: pb.Step) -> None:
        """Buffer a numbered step (the lock held), unless no message can carry it."""
        size, limit = step.ByteSize(), self.client.max_message_bytes
        if self._head + size + _STEP_OVERHEAD > limit:
            big = max(_BIG_FIELDS, key=lambda f: len(getattr(step, f).encode()))
            raise InvalidArgument(
                f"is {len(getattr(step, big).encode()):,} bytes: the step ({size:,} bytes "
                f"serialized) cannot fit one message of this client's max_message_bytes "
                f"({limit:,}), so it was not logged (steps[{step.index}] is still free). "
                "Store the value elsewhere (a file, an object store) and log a reference to "
                "it, or raise max_message_bytes here and the server's --max-message-bytes",
                field=f"steps[{step.index}].{big}")
        self._buffer.append((step, size))
        self._next += 1

    # -- sending ------------------------------------------------------------------------------
    def _send_now(self) -> None:
        """The batch a logged step completed: one attempt, unless another thread is sending.
        A failure keeps the steps to send with the next batch (flush and finish raise it)."""
        if not self._sending.acquire(blocking=False):
            return
        try:
            self._send(retry=False)
            with self._lock:
                self._flush_at = self.BATCH
        except LakeError:
            with self._lock:  # try again a batch later: a server away is not waited for here
                self._flush_at = len(self._buffer) + self.BATCH
        finally:
            self._sending.release()

    def _send(self, retry: bool) -> None:
        """Send the buffer in messages that each fit (``_sending`` held). Steps the lake
        refuses are recorded; a failed call puts the unsent steps back in front and raises."""
        with self._lock:
            pending, self._buffer = self._buffer, []
        try:
            while pending:
                room, n = self.client.max_message_bytes - self._head, 0
                while n < len(pending) and pending[n][1] + _STEP_OVERHEAD <= room:
                    room -= pending[n][1] + _STEP_OVERHEAD
                    n += 1
                self._append(pending[:max(n, 1)], retry)
                del pending[:max(n, 1)]
        except BaseException:
            with self._lock:
                self._buffer[:0] = pending
            raise

    def _append(self, batch: list[tuple[pb.Step, int]], retry: bool) -> None:
        steps = [s for s, _ in batch]
        try:
            reply = self.client._append(steps, self.trajectory_id, retry=retry)
        except InvalidArgument as e:
            if e.field != "request":  # the server's max_message_bytes is below this client's
                raise
            if len(batch) > 1:
                for one in batch:
                    self._append([one], retry)
            else:
                self._refuse(f"steps[{steps[0].index}]", e.message)
            return
        for r in reply.rejects:
            at, index = f"steps[{r['index']}]", steps[r["index"]].index
            field = r["field"] or ""
            self._refuse(f"steps[{index}]{field[len(at):]}" if field.startswith(at)
                         else f"steps[{index}]", r["reason"])

    def _refuse(self, field: str, reason: str) -> None:
        with self._lock:
            self._refused.append((field, reason))

    def _unsent(self, e: LakeError, then: str) -> LakeError:
        """``e`` (the lake did not answer), saying what this run has not sent and how to."""
        self._gave_up = reworded(e, f"{e.message}; {self._kept(then)}")
        return self._gave_up

    def _kept(self, then: str) -> str:
        with self._lock:
            kept = [s.index for s, _ in self._buffer]
        what = f"{len(kept)} step(s) not sent (steps[{kept[0]}] to steps[{kept[-1]}]) are " \
            "kept by this Run" if kept else "every step logged landed"
        return (f"run {self.trajectory_id!r} is not finished: {what}. Once the server "
                f"answers, call {then} again to send them and finish it (a resend is "
                "harmless: steps carry their index)")

    def flush(self) -> None:
        """Send the buffered steps now (retried for ``retry_s``). If the lake does not
        answer, the steps are kept (sent by the next flush or finish) and it raises; steps
        the lake refuses raise ``InvalidArgument`` naming them (the others landed)."""
        with self._sending:
            try:
                self._send(retry=True)
            except TRANSIENT as e:
                raise self._unsent(e, "run.flush() or run.finish(...)") from e
        self._raise_refused()

    def _raise_refused(self) -> None:
        with self._lock:
            new, self._raised = self._refused[self._raised:], len(self._refused)
        if new:
            raise InvalidArgument(f"{refused_text(new)} (the other steps landed)",
                                  field=new[0][0])

    def _log_refused(self) -> None:
        """Refusals not yet in the run's trace, as a last ``error`` step (``_sending`` held)."""
        with self._lock:
            new, self._logged = self._refused[self._logged:], len(self._refused)
            if not new:
                return
            self._buffer.append((step := checked.step(
                {"index": self._next, "kind": "error", "name": "steps_refused",
                 "error": refused_text(new), "started_at": datetime.now(UTC)},
                f"steps[{self._next}]"), step.ByteSize()))
            self._next += 1
        self._send(retry=True)

    # -- finishing ----------------------------------------------------------------------------
    def finish(self, success: bool | None = None, **fields: Any) -> int:
        """Send what is buffered, then the outcome; returns the LSN. Steps the lake refused
        raise ``InvalidArgument`` after the run is finished with this outcome, and are named
        in its last step (``error``, ``steps_refused``). If the lake does not answer (after
        ``retry_s``), it raises and the run keeps what it has not sent: call it again."""
        with self._lock:
            self._open("finish it again")
            self._closing = True
        try:
            with self._sending:
                self._send(retry=True)
                self._log_refused()
                self.lsn = self.client.finish(self.trajectory_id, success=success, **fields)
                self.finished = True
        except TRANSIENT as e:
            raise self._unsent(e, "run.finish(...)") from e
        finally:
            self._closing = False
        self._raise_refused()
        return self.lsn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.finished:
            return
        if isinstance(exc, TRANSIENT):  # the lake did not answer just now: no second wait
            if exc is not self._gave_up:
                exc.add_note(self._kept("run.finish(...)"))
            return
        try:
            if exc_type is not None:  # what ended it: a step, for pitfalls
                self.step("error", name=exc_type.__name__, error=str(exc)[:4000] or None)
            with self._sending:
                try:
                    self._send(retry=True)
                except TRANSIENT as e:
                    raise self._unsent(e, "run.finish(...)") from e
            with self._lock:
                failed = exc_type is not None or len(self._refused) > self._raised
            self.finish(status="failed" if failed else "abandoned",
                        success=False if failed else None)
        except LakeError as e:
            if exc is None:
                raise
            exc.add_note(f"then, leaving run {self.trajectory_id!r}'s block, "
                         f"{type(e).__name__}: {e}")


def refused_text(refused: list[tuple[str, str]]) -> str:
    """Every refusal (field: reason), within ``_REFUSED_CHARS``."""
    text = f"{len(refused)} step(s) refused when this run's steps were sent: "
    for k, (field, reason) in enumerate(refused):
        part = f"{'; ' if k else ''}{field}: {reason[:_REASON_CHARS]}"
        if len(text) + len(part) > _REFUSED_CHARS - 40:
            return f"{text}; and {len(refused) - k} more"
        text += part
    return text
