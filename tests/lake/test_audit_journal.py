"""A server's audit events survive its kill: journaled as recorded, appended by the next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lake.audit import AuditLog
from lake.tables import TableStore

_RECORD_AND_DIE = """
import os, signal, sys
from lake.audit import AuditLog
from lake.tables import TableStore
log = AuditLog(TableStore(sys.argv[1]), interval_s=3600, journal_dir=sys.argv[2]).start()
if sys.argv[3] == "appended":  # appended, then killed before the journal file's removal
    log._rows.journal.done = lambda files: None
    log.record(tenant="acme", actor="bot", action="IngestService/IngestArrow",
               outcome="permission_denied", flush=True)
for i in range(3):
    log.record(tenant="acme", actor="anonymous", action=f"ContextService/GetContext{i}",
               outcome="unauthenticated")
os.kill(os.getpid(), signal.SIGKILL)  # before the log's next append
"""


def _record_and_die(root: Path, journal: Path, appended: bool) -> None:
    p = subprocess.run([sys.executable, "-c", _RECORD_AND_DIE, str(root), str(journal),
                        "appended" if appended else "not"], cwd=Path(__file__).parents[2])
    assert p.returncode == -9


def _actions(store: TableStore) -> list[str]:
    return sorted(store.dataset("audit").to_table(columns=["action"])["action"].to_pylist())


def test_refusals_recorded_before_a_kill_are_appended_by_the_next_log(tmp_path):
    root, journal = tmp_path / "lake", tmp_path / "wal"
    _record_and_die(root, journal, appended=True)
    store = TableStore(str(root))
    assert _actions(store) == ["IngestService/IngestArrow"]  # the one flushed at once
    log = AuditLog(store, journal_dir=journal).start()
    assert _actions(store) == ["ContextService/GetContext0", "ContextService/GetContext1",
                               "ContextService/GetContext2", "IngestService/IngestArrow"]
    log.close()
    assert not list(journal.glob("audit-*.jsonl"))
    AuditLog(store, journal_dir=journal).start().close()  # nothing appended twice
    assert len(_actions(store)) == 4
