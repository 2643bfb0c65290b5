"""The files one `lake ingest` reads: the paths it was given, and what their directories hold.

A file named on the command line is read if its type is known (``readers.SUFFIXES``),
else refused. A directory is walked, and what it holds is sorted out:

- files of a known type are read; a `lake export` directory (it holds the export's
  manifest) is one source;
- files of another type are skipped and reported (``skipped``: the summary and a warning
  name them), never silently: a folder of files named for another tool reads nothing;
- hidden entries, whose names start with ``.`` or ``_``, are not read, as Spark and Hadoop
  do not (``.git``, ``.part-0.json.crc``, ``_SUCCESS``, an unfinished ``_temporary``);
- the lake's own directories and files (its root, quarantine and write-ahead log, see
  ``lake_paths``) are not read: ``lake ingest .`` with the lake under ``.`` must not read
  its own quarantine files back as input.

Finding no file at all is an error (``InvalidArgument``) that says what was found instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lake.errors import InvalidArgument
from lake.export import MANIFEST as EXPORT_MANIFEST
from lake.settings import Settings

from .readers import SUFFIXES, kind_of

EXAMPLES = 5  # paths named in a message; the count says how many there were


@dataclass
class Inputs:
    files: list[Path] = field(default_factory=list)  # to read, in order
    skipped: list[Path] = field(default_factory=list)  # of another type
    hidden: list[Path] = field(default_factory=list)  # named .* or _*: not walked into
    own: list[Path] = field(default_factory=list)  # the lake's own: not walked into


def lake_paths(settings: Settings, quarantine_file: Path | None = None) -> list[Path]:
    """The lake's own directories (its root when local, the quarantine directory and the
    write-ahead log directory, as the settings place them) and the quarantine file of
    this load: never input."""
    out = [settings.quarantine_path]
    if settings.is_local:
        out.append(settings.local_root)
    if settings.wal_dir or settings.is_local:
        out.append(settings.wal_path)
    if quarantine_file is not None:
        out.append(quarantine_file)
    return out


def find_inputs(paths: Iterable[str], own: Iterable[Path] = ()) -> Inputs:
    """The files to read for ``paths`` (see the module docstring); ``own``: paths never
    read when walking a directory (``lake_paths``)."""
    paths = list(paths)
    own_ids = {i for i in map(_identity, own) if i is not None}
    found = Inputs()
    exports: list[Path] = []
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            _walk(p, own_ids, found, exports, files)
        elif p.exists():
            if kind_of(p) is None:
                raise InvalidArgument(f"unsupported file type; use one of {', '.join(SUFFIXES)}"
                                      " (or a directory, or a `lake export` directory)",
                                      location=str(p))
            files.append(p)
        else:
            raise InvalidArgument("no such file or directory", location=str(p))
    found.files = exports + files
    if not found.files:
        raise InvalidArgument(_nothing_found(found), location=", ".join(paths))
    return found


def names(paths: Sequence[str | Path], n: int = EXAMPLES) -> str:
    """A few of ``paths``, comma-separated, and how many more there are."""
    shown = ", ".join(map(str, paths[:n]))
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _walk(top: Path, own: set[tuple[int, int]], found: Inputs, exports: list[Path],
          files: list[Path]) -> None:
    if _identity(top) in own:
        found.own.append(top)
        return
    if (top / EXPORT_MANIFEST).is_file():
        exports.append(top)
        return
    got: list[Path] = []
    for root, dirs, entries in os.walk(top):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith((".", "_")):
                found.hidden.append(sub)
            elif _identity(sub) in own:
                found.own.append(sub)
            elif (sub / EXPORT_MANIFEST).is_file():
                exports.append(sub)
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(entries):
            f = here / name
            if name.startswith((".", "_")):
                found.hidden.append(f)
            elif not f.is_file():  # a broken link, a socket
                continue
            elif kind_of(f) is None:
                found.skipped.append(f)
            elif _identity(f) not in own:
                got.append(f)
            else:
                found.own.append(f)
    files.extend(sorted(got))
    found.skipped.sort()


def _identity(path: Path) -> tuple[int, int] | None:
    """The file a path names (device, inode): the same whichever way it is spelt."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _nothing_found(found: Inputs) -> str:
    seen = []
    if found.skipped:
        seen.append(f"{len(found.skipped)} file(s) of another type ({names(found.skipped)})")
    if found.hidden:
        seen.append(f"{len(found.hidden)} hidden, named .* or _* ({names(found.hidden)})")
    if found.own:
        seen.append(f"the lake's own data, quarantine or log ({names(found.own)})")
    what = "; ".join(seen) if seen else "nothing"
    return (f"no input file found: the directories given hold {what}, and `lake ingest` "
            f"reads {', '.join(SUFFIXES)} files and `lake export` directories. Name the "
            "files to read, or give JSON Lines files one of those suffixes")
