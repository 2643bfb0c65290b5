"""Served contexts survive a killed server: journaled as served, appended by the next one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lake.context_log import ContextLog
from lake.tables import TableStore

_SERVE_AND_DIE = """
import os, signal, sys
from lake.context_log import ContextLog
from lake.tables import TableStore
store = TableStore(sys.argv[1])
store.ensure("contexts")
log = ContextLog(store, sys.argv[2])
for i in range(3):
    log.remember({"tenant": "acme", "context_id": f"ctx-{i}", "created_at": 1_700_000_000_000_000,
                  "query": "refund #1", "agent": "bot", "verdict": "miss", "cluster_id": None,
                  "top_similarity": None, "slots_equal": None, "neighbors": [],
                  "lake_version": 1})
if sys.argv[3] == "flushed":  # appended, then killed before the journal file's removal
    log._rows.journal.done = lambda files: None
    log.flush()
os.kill(os.getpid(), signal.SIGKILL)  # before the log's 5 s append
"""


def _serve_and_die(root: Path, journal: Path, flushed: bool) -> None:
    p = subprocess.run([sys.executable, "-c", _SERVE_AND_DIE, str(root), str(journal),
                        "flushed" if flushed else "not"], cwd=Path(__file__).parents[2])
    assert p.returncode == -9


def _stored(store: TableStore) -> list[str]:
    return sorted(store.dataset("contexts").to_table(columns=["context_id"])
                  ["context_id"].to_pylist())


def test_contexts_served_before_a_kill_are_appended_by_the_next_log(tmp_path):
    root, journal = tmp_path / "lake", tmp_path / "wal"
    _serve_and_die(root, journal, flushed=False)
    store = TableStore(str(root))
    assert _stored(store) == []
    log = ContextLog(store, journal)
    assert log.get("ctx-1")["query"] == "refund #1"  # a report finds it
    log.flush()
    assert _stored(store) == ["ctx-0", "ctx-1", "ctx-2"]
    log.close()
    assert not list(journal.glob("contexts-*.jsonl"))  # appended: the journal is gone
    log = ContextLog(store, journal)  # and nothing is appended twice
    log.close()
    assert _stored(store) == ["ctx-0", "ctx-1", "ctx-2"]


def test_a_journal_whose_rows_were_appended_adds_nothing(tmp_path):
    """Killed between the append and the journal's removal: the rows are in the table."""
    root, journal = tmp_path / "lake", tmp_path / "wal"
    _serve_and_die(root, journal, flushed=True)
    assert len(list(journal.glob("contexts-*.jsonl"))) == 2  # the appended one, the new
    store = TableStore(str(root))
    log = ContextLog(store, journal)
    log.close()
    assert _stored(store) == ["ctx-0", "ctx-1", "ctx-2"]


def test_one_journal_per_directory(tmp_path):
    store = TableStore(str(tmp_path / "lake"))
    first, second = ContextLog(store, tmp_path / "wal"), ContextLog(store, tmp_path / "wal")
    assert first._rows.journal is not None and second._rows.journal is None
    first.close()
    second.close()
