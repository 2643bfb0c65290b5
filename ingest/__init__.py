"""Turn outside formats (JSONL, Parquet, Arrow IPC; OTLP spans later) into lake records.

Imports ``lake``; never ``server``.
"""

from .quarantine import Quarantine
from .readers import SUFFIXES, expand
from .runner import EXIT_NOTHING_READ, EXIT_OK, EXIT_SOME_REJECTED, Summary, ingest_paths

__all__ = ["ingest_paths", "Summary", "Quarantine", "expand", "SUFFIXES", "EXIT_OK",
           "EXIT_NOTHING_READ", "EXIT_SOME_REJECTED"]
