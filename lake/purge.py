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
from .tables import TableStore, in_filter, quote

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
    refs = _payload_refs(store, tenant, ids)
    for at in range(0, len(ids), 500):
        store.delete("steps", in_filter(tenant, "trajectory_id", ids[at:at + 500]))
    unused = sorted(refs - _payload_refs(store, tenant, None, among=refs))
    for at in range(0, len(unused), 500):
        store.delete("payloads", in_filter(tenant, "sha256", unused[at:at + 500]))
    _forget_embeddings(store, hashes)
    for name in ("trajectories", "steps", "payloads", "_embeddings"):
        if store.exists(name):  # a deleted row stays in its file until the file is rewritten
            store.compact(name, every_deletion=True)
    return len(rows)


def _payload_refs(store: TableStore, tenant: str, ids: list[str] | None, *,
                  among: set[str] | None = None) -> set[str]:
    """The payloads the steps of ``ids`` (None: every step of the tenant) refer to, of
    ``among`` if given."""
    if not store.exists("steps") or (among is not None and not among):
        return set()
    has = "(input_ref IS NOT NULL OR output_ref IS NOT NULL)"
    scopes = [f"tenant = {quote(tenant)}"] if ids is None else [
        in_filter(tenant, "trajectory_id", ids[at:at + 500]) for at in range(0, len(ids), 500)]
    refs: set[str] = set()
    for scope in scopes:
        t = store.dataset("steps").to_table(columns=["input_ref", "output_ref"],
                                            filter=f"{scope} AND {has}")
        refs |= {v for col in ("input_ref", "output_ref") for v in t[col].to_pylist() if v}
    return refs if among is None else refs & among


def _forget_embeddings(store: TableStore, hashes: set[str]) -> None:
    """Delete the stored vectors of task texts no trajectory (of any tenant) still has."""
    if not hashes or not store.exists("_embeddings"):
        return
    t = store.dataset("trajectories").to_table(columns=["task_hash"])
    still = set(pc.unique(t["task_hash"]).to_pylist())
    gone = sorted(hashes - still)
    for at in range(0, len(gone), 500):
        keys = ", ".join(quote(h) for h in gone[at:at + 500])
        store.delete("_embeddings", f"text_hash IN ({keys})")
