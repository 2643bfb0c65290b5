"""Read a `lake export` directory back as trajectory records (with steps and payloads).

A directory holding ``_lake_export.json`` is one source for ``lake ingest``: each
``trajectories`` partition (``tenant=T/day=D``) is read with the same partition of
``steps`` (a trajectory's steps share its day), large inputs / outputs are filled in from
``payloads``, and every row becomes an interchange-format record carrying its ``tenant``
(so an export of another tenant is refused unless ingested with ``--tenant`` of that name).
Derived tables (clusters) and logs (contexts, feedback, audit) are not read: a lake builds
its own. A retracted trajectory is not re-ingested (a record cannot carry a retraction):
it goes to the quarantine file with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from lake.errors import InvalidArgument
from lake.export import FORMAT, MANIFEST
from lake.records import OUTCOME_FIELDS, STEP_FIELDS, TRAJECTORY_FIELDS
from lake.schema import STEPS, TRAJECTORIES, public_columns

from .readers import Item

# Record fields a table column carries as is, in the schema's order (so the same export
# always makes the same record bytes).
_TRAJECTORY = [c for c in public_columns(TRAJECTORIES)
               if c in TRAJECTORY_FIELDS and c not in ("tenant", "meta", *OUTCOME_FIELDS)]
_OUTCOME = [c for c in public_columns(TRAJECTORIES) if c in OUTCOME_FIELDS]
_STEP = [c for c in public_columns(STEPS) if c in STEP_FIELDS and c != "attributes"]


BATCH = 1024  # trajectories made into records at a time


class _MissingPayload(Exception):
    pass


def is_lake_export(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def size_of(path: Path) -> int:
    """Bytes of the trajectory, step and payload files of an export directory."""
    return sum(f.stat().st_size for t in ("trajectories", "steps", "payloads")
               for f in (path / t).rglob("*.parquet"))


class LakeExport:
    def __init__(self, path: Path):
        self.path = path
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"cannot read the export manifest: {e}",
                                  location=str(path / MANIFEST)) from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InvalidArgument(f"not a `lake export` manifest (expected format {FORMAT!r})",
                                  location=str(path / MANIFEST))
        self.partitions = sorted(p for p in (path / "trajectories").glob("tenant=*/day=*")
                                 if p.is_dir())
        self.done = 0

    def position(self) -> int:
        return self.done

    def __iter__(self) -> Iterator[Item]:
        for part in self.partitions:
            steps_dir = self.path / "steps" / part.parent.name / part.name
            yield from self._partition(part, steps_dir)
            self.done += sum(f.stat().st_size for d in (part, steps_dir) if d.is_dir()
                             for f in d.rglob("*.parquet"))

    def _partition(self, part: Path, steps_dir: Path) -> Iterator[Item]:
        """One tenant's day: its steps stay Arrow (compact); rows become Python objects
        ``BATCH`` trajectories at a time."""
        tenant = unquote(part.parent.name.split("=", 1)[1])
        steps = _Steps(_read(steps_dir) if steps_dir.is_dir() else None)
        payloads = _payloads(self.path / "payloads" / part.parent.name, steps.table)
        location = part.relative_to(self.path.parent)
        n = 0
        for batch in _read(part).to_batches(max_chunksize=BATCH):
            for row in batch.to_pylist(maps_as_pydicts="lossy"):
                n += 1
                loc = f"{location}:row {n}"
                if row.get("retracted_at") is not None:
                    yield Item(loc, None, f"trajectory {row['trajectory_id']!r} was retracted "
                               f"({row.get('retract_reason')!r}); a record cannot carry a "
                               "retraction, so it is not re-ingested")
                    continue
                try:
                    obj = _record(row, tenant, steps.of(row["trajectory_id"]), payloads)
                except _MissingPayload as e:
                    yield Item(loc, None, str(e))
                    continue
                yield Item(loc, orjson.dumps(obj), obj=obj)


def _read(directory: Path) -> pa.Table:
    return pads.dataset(directory, format="parquet").to_table()


class _Steps:
    """A partition's steps sorted by (trajectory_id, index); ``of(id)`` is one trajectory's."""

    def __init__(self, table: pa.Table | None):
        self.table = table
        self.spans: dict[str, tuple[int, int]] = {}
        if table is None or table.num_rows == 0:
            return
        self.table = table.sort_by([("trajectory_id", "ascending"), ("index", "ascending")])
        counts = pc.value_counts(self.table["trajectory_id"])  # in order of first appearance
        start = 0
        for tid, k in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                          strict=True):
            self.spans[tid] = (start, k)
            start += k

    def of(self, trajectory_id: str) -> list[dict[str, Any]]:
        span = self.spans.get(trajectory_id)
        if span is None or self.table is None:
            return []
        return self.table.slice(*span).to_pylist()


def _payloads(directory: Path, steps: pa.Table | None) -> dict[str, str]:
    if steps is None or not directory.is_dir():
        return {}
    refs = pc.unique(pa.concat_arrays([steps["input_ref"].combine_chunks(),
                                       steps["output_ref"].combine_chunks()])).drop_null()
    if len(refs) == 0:
        return {}
    t = pads.dataset(directory, format="parquet").to_table(
        columns=["sha256", "data"], filter=pc.field("sha256").isin(refs))
    return dict(zip(t["sha256"].to_pylist(), t["data"].to_pylist(), strict=True))


def _record(row: dict[str, Any], tenant: str, steps: list[dict],
            payloads: dict[str, str]) -> dict[str, Any]:
    rec: dict[str, Any] = {"tenant": tenant}
    for k in _TRAJECTORY:
        if row.get(k) is not None:
            rec[k] = _json(row[k])
    outcome = {k: row[k] for k in _OUTCOME if row.get(k) is not None}
    if outcome:
        rec["outcome"] = outcome
    if row.get("meta") is not None:
        rec["meta"] = orjson.loads(row["meta"])
    rec["steps"] = [_step(s, i, payloads) for i, s in enumerate(steps)]
    return rec


def _step(s: dict[str, Any], i: int, payloads: dict[str, str]) -> dict[str, Any]:
    step = {k: _json(s[k]) for k in _STEP if s.get(k) is not None}
    for col in ("input", "output"):
        ref = s.get(f"{col}_ref")
        if ref is not None:
            if ref not in payloads:
                raise _MissingPayload(f"steps[{i}].{col}_ref: payload {ref} is not in the "
                                      "export's payloads/; export the lake again")
            step[col] = payloads[ref]
    if s.get("attributes") is not None:
        step["attributes"] = orjson.loads(s["attributes"])
    return step


def _json(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v
