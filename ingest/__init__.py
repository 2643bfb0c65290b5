"""Turn outside formats (JSONL, Parquet, Arrow IPC; OTLP spans later) into lake records.

Imports ``lake``; never ``server``.
"""

from .inputs import find_inputs
from .quarantine import Quarantine
from .readers import SUFFIXES
from .runner import ingest_paths
from .summary import EXIT_NOTHING_READ, EXIT_OK, EXIT_SOME_REJECTED, Summary

__all__ = ["ingest_paths", "Summary", "Quarantine", "find_inputs", "SUFFIXES", "EXIT_OK",
           "EXIT_NOTHING_READ", "EXIT_SOME_REJECTED"]
