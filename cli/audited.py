"""Admin commands run from the shell are audited like the admin RPCs: one row in the
``audit`` table (actor ``cli:<user>``) however the command ends."""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterator
from typing import Any

from lake import LakeError
from lake.audit import AuditLog


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@contextlib.contextmanager
def audited(store: Any, tenant: str, action: str, resource: str | None,
            **detail: Any) -> Iterator[dict[str, Any]]:
    """Record ``action`` on ``resource`` once the block ends: ``ok`` (the block may add to
    the yielded detail) or the error's status as the RPCs' rows have it (``not_found``,
    ``aborted``, ...) and its message."""
    outcome = "ok"
    try:
        yield detail
    except LakeError as e:
        from server.errors import status_of  # the RPCs' audit rows name refusals so too

        outcome = status_of(e)[0].name.lower()
        detail["error"] = str(e)[:1000]
        raise
    finally:
        AuditLog(store).record(tenant=tenant, actor=actor(), action=action, resource=resource,
                               outcome=outcome, detail=detail or None, flush=True)
