"""Admin commands run from the shell are audited like the admin RPCs: one row in the
``audit`` table (actor ``cli:<user>``) however the command ends."""

from __future__ import annotations

import contextlib
import getpass
import re
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
    the yielded detail) or the error's kind (``not_found``, ...) and message."""
    outcome = "ok"
    try:
        yield detail
    except LakeError as e:
        outcome = re.sub(r"(?<!^)(?=[A-Z])", "_", type(e).__name__).lower()
        detail["error"] = str(e)[:1000]
        raise
    finally:
        AuditLog(store).record(tenant=tenant, actor=actor(), action=action, resource=resource,
                               outcome=outcome, detail=detail or None, flush=True)
