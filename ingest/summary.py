"""What one `lake ingest` read and landed, its warnings and its exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .duplicates import Ids
from .inputs import EXAMPLES, names
from .readers import SUFFIXES

# Exit codes of `lake ingest` (documented in the README).
EXIT_OK, EXIT_NOTHING_READ, EXIT_SOME_REJECTED = 0, 1, 2


@dataclass
class Summary:
    """What a load read and landed. ``records``: valid records read (each line or row that
    passed); ``trajectories``: their distinct ids, and ``steps`` those of the version of
    each the lake keeps (one per id, ``duplicates.py``): what the lake holds of this load,
    unless it held a further-along version already."""

    files: int = 0
    records: int = 0
    trajectories: int = 0
    steps: int = 0
    rejected: int = 0
    quarantine: str | None = None
    unreadable: list[str] = field(default_factory=list)
    changed: int | None = 0  # trajectories new to the lake or updated; the others were there
    # already. None: not counted (a `--server` load whose token may not list versions)
    skipped: list[str] = field(default_factory=list)  # in directories, of another type
    duplicates: Ids = field(default_factory=Ids)

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "records": self.records,
                "trajectories": self.trajectories, "steps": self.steps,
                "changed": self.changed, "rejected": self.rejected,
                "quarantine": self.quarantine, "unreadable": self.unreadable,
                "skipped": {"count": len(self.skipped), "examples": self.skipped[:EXAMPLES]},
                "duplicates": self.duplicates.as_dict()}

    def warnings(self) -> list[str]:
        """Lines to show besides the summary: skipped files, repeated ids."""
        out = []
        if self.skipped:
            out.append(f"{len(self.skipped)} file(s) of another type in the directories "
                       f"given, not read: {names(self.skipped)} (`lake "
                       f"ingest` reads {', '.join(SUFFIXES)}); to read JSON Lines files, "
                       "give them one of those suffixes")
        if (dup := self.duplicates.message()) is not None:
            out.append(dup)
        return out

    @property
    def exit_code(self) -> int:
        if self.files and len(self.unreadable) == self.files:
            return EXIT_NOTHING_READ
        if self.rejected or self.unreadable:
            return EXIT_SOME_REJECTED
        return EXIT_OK
