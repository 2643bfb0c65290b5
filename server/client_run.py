"""``LakeClient.trajectory``'s ``Run``: a live trajectory logged step by step, its steps
numbered and checked as they are logged and sent in batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from lake.errors import Conflict, InvalidArgument, LakeError

from . import checked

if TYPE_CHECKING:
    from proto.contextlake.v1 import lake_pb2 as pb

    from .client import LakeClient


class Run:
    """A live trajectory: steps are numbered and sent in batches; durable at ``finish``.

    A step is checked when it is logged: a value of the wrong type raises there, naming
    ``steps[i].<field>``, and the step is not kept. Steps get ``started_at`` (now, less
    their ``duration_ms``) unless given. Leaving the block without ``finish`` marks the run
    failed if an exception escaped (or its last steps were refused), else abandoned.
    After ``finish``, logging a step or finishing again raises ``Conflict``."""

    BATCH = 32

    def __init__(self, client: LakeClient, task: str, fields: dict[str, Any]):
        self.client, self.task, self.fields = client, task, fields
        self.trajectory_id = fields.pop("trajectory_id", None) or f"run-{uuid.uuid4().hex}"
        self._buffer: list[pb.Step] = []
        self._next = 0
        self.finished = False
        self.lsn = 0

    def __enter__(self) -> Run:
        self.client.start(self.task, trajectory_id=self.trajectory_id, **self.fields)
        return self

    def step(self, kind: str, **fields: Any) -> None:
        self._open("log a step")
        if fields.get("started_at") is None:
            took = fields.get("duration_ms")
            now = datetime.now(UTC)
            fields["started_at"] = now - timedelta(milliseconds=took) \
                if isinstance(took, (int, float)) and not isinstance(took, bool) \
                and 0 <= took < 1e10 else now
        self._buffer.append(checked.step({"index": self._next, "kind": kind, **fields},
                                         f"steps[{self._next}]"))
        self._next += 1
        if len(self._buffer) >= self.BATCH:
            self.flush()

    def _open(self, action: str) -> None:
        if self.finished:
            raise Conflict(f"cannot {action}: run {self.trajectory_id!r} is finished. Log "
                           "every step before finish(); for another attempt, start a new run "
                           "with client.trajectory(...)", field="trajectory_id")

    def tool(self, name: str, input: Any = None, output: Any = None, **fields: Any) -> None:
        self.step("tool", name=name, input=input, output=output, **fields)

    def llm(self, output: Any = None, input: Any = None, **fields: Any) -> None:
        self.step("llm", input=input, output=output, **fields)

    def flush(self) -> None:
        """Send the buffered steps. Steps the lake refuses raise ``InvalidArgument`` (the
        others landed: the buffer is done); a failed call keeps the buffer to send again."""
        if self._buffer:
            steps, self._buffer = self._buffer, []
            try:
                reply = self.client._append(steps, self.trajectory_id)
            except LakeError:
                self._buffer = steps + self._buffer
                raise
            if reply.rejects:
                first = reply.rejects[0]
                index = steps[first["index"]].index
                landed = len(steps) - len(reply.rejects)
                raise InvalidArgument(f"{len(reply.rejects)} of {len(steps)} step(s) refused "
                                      f"({landed} landed); the first: {first['reason']}",
                                      field=(first["field"] or "steps").replace(
                                          f"steps[{first['index']}]", f"steps[{index}]", 1))

    def _send_refused(self) -> InvalidArgument | None:
        """``flush``, and what the lake refused as one error (None: all landed). A batch too
        big for a message goes a step at a time: only the steps that cannot be sent are
        lost. What was refused is then logged as a last ``error`` step (``steps_refused``),
        so the run's trace shows it."""
        try:
            self.flush()
            return None
        except InvalidArgument as e:
            refused, why = e, [str(e)]
        if self._buffer:  # not sent at all (too big): one at a time
            steps, self._buffer, why = self._buffer, [], []
            for step in steps:
                self._buffer = [step]
                try:
                    self.flush()
                except InvalidArgument as e:
                    self._buffer = []
                    why.append(str(e) if (e.field or "").startswith("steps[")
                               else f"steps[{step.index}]: {e.message}")
        self.step("error", name="steps_refused",
                  error=f"{len(why)} refusal(s) when this run's steps were sent: "
                        + "; ".join(why)[:4000])
        try:
            self.flush()
        except LakeError:
            self._buffer = []
        return refused

    def finish(self, success: bool | None = None, **fields: Any) -> int:
        """Send what is buffered, then the outcome; returns the LSN. Steps the lake refused
        (or too big to send) raise ``InvalidArgument`` after the run is finished with this
        outcome, and are named in its last step (``error``, ``steps_refused``)."""
        self._open("finish it again")
        refused = self._send_refused()
        self.lsn = self.client.finish(self.trajectory_id, success=success, **fields)
        self.finished = True
        if refused is not None:
            raise refused
        return self.lsn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.finished:
            return
        refused: LakeError | None = None
        try:
            refused = self._send_refused()
        except LakeError as e:
            refused, self._buffer = e, []
        failed = exc_type is not None or refused is not None
        if exc_type is not None and refused is None:  # what ended it: a step, for pitfalls
            try:
                self.step("error", name=exc_type.__name__, error=str(exc)[:4000] or None)
                self.flush()
            except LakeError:
                self._buffer = []
        self.finish(status="failed" if failed else "abandoned",
                    success=False if failed else None)
        if refused is not None and exc_type is None:
            raise refused
