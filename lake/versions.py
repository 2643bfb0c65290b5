"""Lake-level versions and tags.

A lake version is a row of ``_versions`` that pins one Lance version of every data table,
so a reader at version N sees all tables as they were together at N (snapshot reads), and
a writer's half-done work is invisible until its version row is committed. Tags name
versions. Restore writes the old contents as a *new* version: nothing is destroyed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from .errors import AlreadyExists, InvalidArgument, NotFound
from .records import now_us
from .schema import DATA_TABLES, TAGS, VERSIONS
from .tables import TableStore, quote

_TAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Version:
    version: int
    created_at: Any
    operation: str
    tables: dict[str, int]
    writer: str
    wal_lsn: int
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "created_at": self.created_at, "operation": self.operation,
                "tables": self.tables, "detail": self.detail}


class Catalog:
    def __init__(self, store: TableStore):
        self.store = store
        self._latest: Version | None = None

    def list(self) -> list[Version]:
        rows = self.store.dataset("_versions").to_table().sort_by("version").to_pylist()
        return [_version(r) for r in rows]

    def latest(self) -> Version | None:
        ds = self.store.dataset("_versions")
        if ds.count_rows() == 0:
            return None
        tbl = ds.to_table()
        row = tbl.sort_by([("version", "descending")]).slice(0, 1).to_pylist()[0]
        return _version(row)

    def current(self) -> Version | None:
        """The latest version as this process last saw it (a writer sees every commit)."""
        if self._latest is None:
            self._latest = self.latest()
        return self._latest

    def last_lsn(self, writer: str) -> int:
        tbl = self.store.dataset("_versions").to_table(
            columns=["wal_lsn"], filter=f"writer = {quote(writer)}")
        return max(tbl["wal_lsn"].to_pylist(), default=0)

    def commit(self, operation: str, writer: str, wal_lsn: int,
               detail: dict[str, Any] | None = None,
               tables: dict[str, int] | None = None) -> Version:
        """Record a new lake version pinning the current (or given) table versions."""
        prev = self._latest or self.latest()
        number = (prev.version if prev else 0) + 1
        tables = tables or {name: self.store.version(name) for name in DATA_TABLES}
        row = {"version": number, "created_at": now_us(), "operation": operation,
               "tables": orjson.dumps(tables).decode(), "writer": writer, "wal_lsn": wal_lsn,
               "detail": orjson.dumps(detail or {}).decode()}
        self.store.append("_versions", pa.Table.from_pylist([row], schema=VERSIONS))
        self._latest = _version(row)
        return self._latest

    # -- tags ---------------------------------------------------------------------------------
    def tags(self) -> dict[str, int]:
        rows = self.store.dataset("_tags").to_table().to_pylist()
        return {r["name"]: r["version"] for r in rows}

    def tag(self, name: str, version: int, *, force: bool = False) -> None:
        if not _TAG_RE.match(name) or name.isdigit():
            raise InvalidArgument(f"tag name {name!r} is not valid: use letters, digits, '_', "
                                  "'.', '-', starting with a letter", field="name")
        existing = self.tags().get(name)
        if existing == version:  # a retry of a tag that landed: nothing to do
            return
        if existing is not None and not force:
            raise AlreadyExists(f"tag {name!r} already exists (version {existing}); pick "
                                "another name or move it (force: `lake tag --force`, "
                                "force=true in Tag)")
        row = {"name": name, "version": version, "created_at": now_us()}
        self.store.upsert("_tags", ["name"], pa.Table.from_pylist([row], schema=TAGS))

    def untag(self, name: str) -> int:
        """Remove a tag (its version is then vacuumed like any other); returns the version
        it named. Removing a tag that is not there is NotFound (a retry: the tags say so)."""
        tags = self.tags()
        if name not in tags:
            raise NotFound(f"no tag {name!r}; known tags: {', '.join(sorted(tags)) or 'none'}",
                           field="name")
        self.store.delete("_tags", f"name = {quote(name)}")
        return tags[name]

    def resolve(self, ref: int | str | None) -> Version:
        """A version number, a tag name, a time (ISO 8601: the lake as it was then, the
        latest version made at or before it), or None (latest) -> Version."""
        versions = {v.version: v for v in self.list()}
        if not versions:
            raise NotFound("the lake has no versions yet; ingest something first")
        if ref is None:
            return versions[max(versions)]
        if isinstance(ref, str) and not ref.lstrip("-").isdigit():
            tags = self.tags()
            if ref in tags:
                return _readable(versions, versions[tags[ref]])
            at = _time(ref)
            if at is None:
                raise NotFound(f"no tag {ref!r}; known tags: {', '.join(sorted(tags)) or 'none'} "
                               "(see `lake versions`), or give a version number or an ISO 8601 "
                               "time (2026-01-31T12:00:00Z)")
            before = [v for v in versions.values() if v.created_at <= at]
            if not before:
                first = versions[min(versions)]
                raise NotFound(f"the lake did not exist at {at.isoformat()}: its first version "
                               f"({first.version}) was made at {first.created_at.isoformat()}")
            return _readable(versions, max(before, key=lambda v: v.version))
        n = int(ref)
        if n not in versions:
            raise NotFound(f"no version {n}; versions run from {min(versions)} to {max(versions)} "
                           "(see `lake versions`)")
        return _readable(versions, versions[n])


def vacuums(versions: Iterable[Version]) -> list[Version]:
    """The vacuums among ``versions`` (few: ``vacuumed`` scans them for each version)."""
    return [v for v in versions if v.operation == "vacuum"]


def vacuumed(vacuums: list[Version], number: int) -> Version | None:
    """Of ``vacuums`` (``lake/vacuum.py``), the one that removed version ``number``'s files,
    if one did."""
    return next((v for v in vacuums if number < v.detail.get("horizon", 0)
                 and number not in v.detail.get("tagged", ())), None)


def _readable(versions: dict[int, Version], v: Version) -> Version:
    vac = vacuumed(vacuums(versions.values()), v.version)
    if vac is not None:
        raise NotFound(f"version {v.version} was vacuumed (version {vac.version}, "
                       f"{vac.created_at:%Y-%m-%d %H:%M} UTC): its files are gone. Versions "
                       f"from {vac.detail['horizon']} on, and tagged ones, can be read "
                       "(see `lake versions`)")
    return v


def _time(ref: str) -> datetime | None:
    """An ISO 8601 time (naive: UTC; a date alone: its midnight), else None."""
    try:
        at = datetime.fromisoformat(ref)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _version(r: dict[str, Any]) -> Version:
    return Version(r["version"], r["created_at"], r["operation"], orjson.loads(r["tables"]),
                   r["writer"], r["wal_lsn"], orjson.loads(r["detail"] or "{}"))
