"""The lake's one error tree.

    LakeError                 base: every error the lake raises on purpose
    ├── InvalidArgument       bad input: names the field path / file:line and the fix
    ├── NotFound              a trajectory, version, tag or file that does not exist
    ├── AlreadyExists         a name that must be new is taken
    ├── Conflict              the lake is in use by another writer, or state moved on
    ├── PermissionDenied      the caller's token lacks the scope
    ├── Unauthenticated       no token, or an unknown / revoked one
    ├── ResourceExhausted     overload or a limit: retry later or send less
    ├── Unavailable           the service is down or restarting: retry the same call
    └── DeadlineExceeded      no answer within the caller's deadline: retry, with a longer one

Every message says what failed, the offending value or location, and what to do next.
The gRPC status mapping lives in one table in ``server/errors.py``; the CLI maps the same
classes to exit codes in ``cli/``.
"""

from __future__ import annotations

import errno
import os
import re


class LakeError(Exception):
    """Base class. ``str(err)`` is the full, actionable message."""

    def __init__(self, message: str, *, field: str | None = None, location: str | None = None):
        self.message = message
        self.field = field  # e.g. "steps[3].tokens_in"
        self.location = location  # e.g. "runs.jsonl:17"
        super().__init__(self._render())

    def _render(self) -> str:
        where = ", ".join(x for x in (self.location, self.field) if x)
        return f"{where}: {self.message}" if where else self.message


class InvalidArgument(LakeError):
    pass


class NotFound(LakeError):
    pass


class AlreadyExists(LakeError):
    pass


class Conflict(LakeError):
    pass


class PermissionDenied(LakeError):
    pass


class Unauthenticated(LakeError):
    pass


class ResourceExhausted(LakeError):
    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw: str | None):
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)


class Unavailable(LakeError):
    """Nothing was answered (the server is down or restarting). Calls with client ids are
    idempotent: retry the same call."""


class DeadlineExceeded(LakeError):
    """No answer came within the call's deadline (the Python client's ``timeout``): the
    call may still complete. Calls with client ids are idempotent: retry, with a longer
    deadline."""


ALL_ERRORS: tuple[type[LakeError], ...] = (
    LakeError,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    Conflict,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
)

_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Lance (Rust) names the errno


def os_errno(exc: BaseException) -> int | None:
    """The errno of an OS failure, from Python's ``OSError`` or Lance's text."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    m = _OS_ERROR.search(str(exc))
    return int(m.group(1)) if m else None


def disk_error(exc: BaseException, where: str, then: str = "retry",
               lead: str = "") -> LakeError | None:
    """A write to ``where`` that failed for a reason the user fixes (a full disk, a
    read-only one, no permission), as the error that says so (after ``lead``); None for any
    other failure."""
    n = os_errno(exc)
    if n in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"{lead}the disk holding {where} is full ({os.strerror(n)}): "
                                 f"free space there, then {then}", retry_after_s=5.0)
    if n in (errno.EROFS, errno.EACCES, errno.EPERM):
        return Unavailable(f"{lead}{where} cannot be written ({os.strerror(n)}): make it "
                           f"writable or use another directory, then {then}")
    return None
