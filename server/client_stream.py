"""``LakeClient.stream``'s messages: built from the caller's steps as gRPC asks for them,
kept to be sent again by a retry, and what ends a stream early (a bad step, the caller's own
exception), raised once the steps before it are acknowledged."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from lake.errors import InvalidArgument, LakeError, ResourceExhausted, Unavailable
from proto.contextlake.v1 import lake_pb2 as pb

from . import checked, convert

if TYPE_CHECKING:
    from .client import IngestReply

STREAM_RESEND_BYTES = 64 << 20  # what stream() keeps to send again after a transient failure


def step_message(row: Any, path: str) -> pb.Step:
    if not isinstance(row, dict):
        raise InvalidArgument(f"a step is a dict of its fields ({{'index': 0, 'kind': 'tool', "
                              f"...}}), got {type(row).__name__}", field=path)
    return checked.step(row, path)


class Stream:
    """One ``stream()``'s messages, built from the caller's steps as gRPC asks for them and
    kept (serialized, counting ~64 bytes each of overhead) while they fit
    ``STREAM_RESEND_BYTES``, to be sent again by a retry. The first bad step, or exception
    of the caller's steps, ends the stream after the steps before it: kept in ``error``."""

    def __init__(self, trajectory_id: str, steps: Iterable[dict[str, Any]], per_message: int):
        self._head, self._per, self._steps = convert.stream_head(trajectory_id), per_message, \
            iter(steps)
        self._lock = threading.Lock()
        self.kept: list[bytes] | None = []  # None: past the bound, it cannot be sent again
        self._kept_bytes = self.built = self.steps = self._pass = 0
        self._done = self.bad_step = False
        self.error: BaseException | None = None

    def attempt(self) -> Iterator[bytes] | None:
        """A pass over the stream from its first message (the pass before stops taking
        steps); None when it cannot be sent again."""
        with self._lock:  # waits for a step the pass before is taking: it is kept
            self._pass += 1
            return None if self.kept is None else self._messages(self._pass)

    def _messages(self, this: int) -> Iterator[bytes]:
        at = 0
        while True:
            with self._lock:
                if this != self._pass:
                    return
                if at < self.built:  # a later pass: what was built, first (all kept)
                    msg = self.kept[at]  # type: ignore[index]
                elif self._done or (msg := self._build()) is None:
                    return
            at += 1
            yield msg

    def _build(self) -> bytes | None:
        batch: list[pb.Step] = []
        while len(batch) < self._per and not self._done:
            try:
                row = next(self._steps)
                self.bad_step = True
                batch.append(step_message(row, f"steps[{self.steps}]"))
                self.bad_step = False
                self.steps += 1
            except StopIteration:
                self._done = True
            except BaseException as e:  # noqa: BLE001 - the caller's: raised after the ack
                self.error, self._done = e, True
        if not batch:
            return None
        msg = convert.stream_request(self._head, batch, lambda step: step)
        self.built += 1
        if self.kept is not None:
            self.kept.append(msg)
            self._kept_bytes += len(msg) + 64
            if self._kept_bytes > STREAM_RESEND_BYTES:
                self.kept = None
        return msg


def raise_after(sent: Stream, reply: IngestReply) -> None:
    """Raise what ended a stream, saying what of it was acknowledged."""
    done = (f"the {sent.steps} step(s) before it were acknowledged ({reply.accepted} stored, "
            f"{len(reply.rejects)} refused by the lake's rules; lsn {reply.lsn})")
    e = sent.error
    if sent.bad_step and isinstance(e, InvalidArgument):
        raise InvalidArgument(f"{e.message}; {done}: fix it and stream the rest from "
                              f"steps[{sent.steps}] (sending the others again is harmless)",
                              field=e.field) from None
    assert e is not None
    e.add_note(f"LakeClient.stream: {done}")
    raise e


def not_resent(e: Unavailable | ResourceExhausted, sent: Stream) -> LakeError:
    return reworded(e, f"{e.message}; the stream was not sent again: its {sent.steps} steps "
                       f"took more than {STREAM_RESEND_BYTES:,} bytes, more than the client "
                       "keeps to resend. Some may have landed: stream them again (indexes "
                       "make that harmless), in smaller streams")


def reworded(e: LakeError, message: str) -> LakeError:
    """``e``'s class, field and retry hint with ``message``: what the client knows more."""
    if isinstance(e, ResourceExhausted):
        return ResourceExhausted(message, retry_after_s=e.retry_after_s, field=e.field,
                                 location=e.location)
    return type(e)(message, field=e.field, location=e.location)
