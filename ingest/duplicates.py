"""Trajectory ids that come more than once in one load, and what the lake keeps of them.

The lake keeps one record per id (``lake/writer.py``): the most progressed (more steps;
as many, finished over running: ``lake.records.progress``), the later of equals. A load
may hold an id twice (a run sent again, or as it grew), so the summary counts the
trajectories of a load, not its records: ``Ids`` sees the valid records in the order the
lake gets them and counts the distinct ids, the steps of the version of each that the
lake keeps, the ids seen more than once and those whose copies differ (another record
hash, the one the lake compares: for JSON Lines, other bytes).

Memory: one dict entry (about 115 bytes) per distinct id, for the first ``MAX_IDS`` ids:
a 64-bit hash of the id to the kept version's steps, status rank and a 32-bit hash of the
last copy's content. Ids past those are counted as new, unchecked (``complete`` is False).
"""

from __future__ import annotations

from lake.records import Record, progress

MAX_IDS = 2_000_000  # about 230 MB
EXAMPLES = 5
_MASK = 0xFFFFFFFF  # a content hash: 32 bits


def _pack(steps: int, rank: int, content: int) -> int:
    """A tracked id's value: its kept version's steps and status rank (< 256), and the
    content hash of its last copy, as one int (one object: less memory than a tuple)."""
    return (steps << 8 | rank) << 32 | content


def _unpack(value: int) -> tuple[int, int, int]:
    return value >> 40, value >> 32 & 0xFF, value & _MASK


class Ids:
    def __init__(self, max_ids: int = MAX_IDS):
        self.max_ids = max_ids
        self._kept: dict[int, int] = {}  # hash(id) -> steps, rank, content (packed)
        self._repeated: set[int] = set()
        self._differing: set[int] = set()
        self._examples: tuple[list[str], list[str]] = ([], [])  # (differing, same)
        self.complete = True  # every id was checked

    @property
    def repeated(self) -> int:
        """Ids seen more than once."""
        return len(self._repeated)

    @property
    def differing(self) -> int:
        """Ids seen more than once, not always with the same content."""
        return len(self._differing)

    @property
    def examples(self) -> list[str]:
        """A few repeated ids, those whose copies differ first."""
        differing, same = self._examples
        return (differing + [t for t in same if t not in differing])[:EXAMPLES]

    def add(self, records: list[Record]) -> tuple[int, int]:
        """See ``records`` (in the lake's order); returns how many of their ids are new and
        how many steps they add to the kept versions."""
        new = steps = 0
        for r in records:
            t = r.trajectory
            key, n = hash(t["trajectory_id"]), t["n_steps"]
            rank, content = progress(n, t["status"])[1], hash(t["_record_hash"]) & _MASK
            old = self._kept.get(key)
            if old is None:
                if len(self._kept) < self.max_ids:
                    self._kept[key] = _pack(n, rank, content)
                else:
                    self.complete = False
                new, steps = new + 1, steps + n
                continue
            kept_n, kept_rank, last = _unpack(old)
            self._repeat(key, t["trajectory_id"], differs=content != last)
            if (n, rank) >= (kept_n, kept_rank):  # as the lake resolves: the later of equals
                steps += n - kept_n
                self._kept[key] = _pack(n, rank, content)
            else:  # the kept version stays; this copy's content is the one to compare next
                self._kept[key] = _pack(kept_n, kept_rank, content)
        return new, steps

    def _repeat(self, key: int, tid: str, differs: bool) -> None:
        differing, same = self._examples
        if key not in self._repeated:
            self._repeated.add(key)
            if not differs and len(same) < EXAMPLES:
                same.append(tid)
        if differs and key not in self._differing:
            self._differing.add(key)
            if len(differing) < EXAMPLES:
                differing.append(tid)

    def as_dict(self) -> dict:
        return {"ids": self.repeated, "differing": self.differing, "examples": self.examples,
                "complete": self.complete}

    def message(self) -> str | None:
        """The warning a load with repeated ids gets, else None."""
        if not self._repeated:
            return None
        unchecked = "" if self.complete else (
            f"; ids past the first {self.max_ids:,} were not checked")
        return (f"{self.repeated} id(s) appeared more than once in this load ({self.differing} "
                "with different content; the lake keeps one version of each: the one with "
                "the most steps, finished over running, else the later), e.g. "
                f"{', '.join(self.examples)}{unchecked}")
