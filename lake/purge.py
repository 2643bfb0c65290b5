"""Purge: a retraction that also removes the content, for what must not be kept (a leaked
card number, a user's request to be forgotten).

A retraction keeps a trajectory's rows for audit and stops serving it. A purge retracts it
and, in the current version, scrubs its row (task text and hash, ``meta``,
``on_behalf_of``) and deletes its steps, the payloads no other step uses, and its task's
stored embedding when no other trajectory has that task. The row stays as a tombstone
(ids, times, outcome, the reason, prefixed ``purged:``) so a retried load never brings the
content back (``writer._apply_tenant`` skips a purged id), and the tables' fragments
holding deleted rows are rewritten (Lance keeps a deleted row in its file until then). The
write-ahead log moves to a new segment so the applied ones, which hold what was ingested,
are deleted. Older versions still hold the content until a vacuum removes them (``lake
vacuum``; tagged versions too, once untagged). Not removed either: a cluster's label (a
member's task text) and pitfall examples (step errors) until the tenant's next recluster;
the query texts of served contexts and the ids in audit rows (the asker's, kept for audit);
quarantine files; a ``.damaged`` log copy; and a log segment holding writes logged after
the purge (a re-send of the run, dropped at commit) until the log moves on past it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .schema import TRAJECTORIES
from .tables import TableStore, quote

PURGED = "purged: "  # a purged row's retract_reason starts so
PURGED_TASK = "[purged]"


def is_purged(row: dict[str, Any]) -> bool:
    """A tombstone: its reason says purged and its content is gone (a restore to before the
    purge brings the content back under the reason, and ``Lake.restore`` purges it again)."""
    return (row.get("retract_reason") or "").startswith(PURGED) and \
        row.get("task", PURGED_TASK) == PURGED_TASK


def purge_rows(store: TableStore, tenant: str, rows: list[dict[str, Any]]) -> int:
    """Scrub ``rows`` (trajectory rows of ``tenant``, already marked retracted) and delete
    their content; the caller holds the writer's lock. Returns how many were purged (a row
    a restore brought back from before its purge is purged again)."""
    rows = [r for r in rows if not is_purged(r)]
    if not rows:
        return 0
    ids = [r["trajectory_id"] for r in rows]
    hashes = {r["task_hash"] for r in rows if r["task_hash"]}
    for r in rows:
        reason = r["retract_reason"] or ""
        r.update(task=PURGED_TASK, task_hash="", meta=None, on_behalf_of=None,
                 retract_reason=reason if reason.startswith(PURGED) else PURGED + reason)
    store.upsert("trajectories", ["tenant", "trajectory_id"],
                 pa.Table.from_pylist(rows, schema=TRAJECTORIES))
    if store.exists("steps"):
        refs = _payload_refs(store.lookup("steps", tenant, "trajectory_id", ids, _REFS))
        store.delete_keys("steps", "trajectory_id", ids, tenant)
        still = _payload_refs(store.dataset("steps").to_table(
            columns=_REFS, filter=f"tenant = {quote(tenant)} AND ({_HAS_REF})"))
        store.delete_keys("payloads", "sha256", sorted(refs - still), tenant)
    if hashes and store.exists("_embeddings"):  # the vectors of texts no run (of any
        have = store.dataset("trajectories").to_table(columns=["task_hash"])  # tenant) has
        store.delete_keys("_embeddings", "text_hash",
                          sorted(hashes - set(pc.unique(have["task_hash"]).to_pylist())))
    for name in ("trajectories", "steps", "payloads", "_embeddings"):
        if store.exists(name):  # a deleted row stays in its file until the file is rewritten
            store.compact(name, every_deletion=True)
    return len(rows)


_REFS = ["input_ref", "output_ref"]
_HAS_REF = "input_ref IS NOT NULL OR output_ref IS NOT NULL"


def _payload_refs(steps: pa.Table) -> set[str]:
    """The payloads (sha256) these steps' inputs and outputs refer to."""
    return {v for col in _REFS for v in steps[col].to_pylist() if v}
