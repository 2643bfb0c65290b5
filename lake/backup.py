"""A consistent copy of a local lake, taken while a server writes it.

A lake version pins one Lance version of every data table, and Lance never changes a
version's files once written (only a vacuum removes them). So the catalog (``_versions``,
``_tags``) is copied first, then every table: each table copy holds at least the versions
the copied catalog pins, and the copy reads as the lake was when its catalog was copied.
Within a table its manifests go first, then its files (a version's files are written
before its manifest).
Versions committed meanwhile may be in a table copy, half copied even; the copy's first
writer rolls them back (``writer.roll_back``), as after an interrupted commit. A plain
``cp -r`` may copy a table before the catalog that pins its next version.

A vacuum during the copy may remove files the copied catalog pins: the copy is checked at
the end and refused if so. Not copied: the write-ahead log (``_wal``: its acknowledged,
uncommitted writes are at most ``flush_interval_ms`` old and stay in the source) and the
lock files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import AlreadyExists, InvalidArgument, LakeError, NotFound
from .settings import WAL_DIR
from .wal import WRITER_LOCK

FIRST = ("_versions.lance", "_tags.lance")
SKIP = {WAL_DIR, WRITER_LOCK}


def backup(root: Path, dest: Path, tick: Callable[[str], None] | None = None) -> list[str]:
    """Copy the lake at ``root`` to the new directory ``dest`` (made whole in
    ``dest.partial``, then renamed); returns what was copied."""
    if not (root / "_versions.lance").is_dir():
        raise NotFound(f"no lake at {root}: point --data / LAKE_DATA at one")
    dest = dest.expanduser()
    if dest.resolve().is_relative_to(root.resolve()):
        raise InvalidArgument(f"{dest} is inside the lake {root}: back it up elsewhere",
                              field="dest")
    if dest.exists() and any(dest.iterdir()):
        raise AlreadyExists(f"{dest} is not empty: give a new directory (a backup never "
                            "writes over another)")
    work = dest.with_name(f"{dest.name}.partial")  # renamed to dest once whole: an
    if work.exists():  # interrupted backup is never taken for one
        shutil.rmtree(work)
    work.mkdir(mode=0o700, parents=True)
    rest = sorted(p.name for p in root.iterdir() if p.name not in SKIP and p.name not in FIRST)
    copied = []
    for name in (*[n for n in FIRST if (root / n).exists()], *rest):
        src = root / name
        if tick is not None:
            tick(name)
        if src.is_dir() and (src / "_versions").is_dir():  # a Lance table
            _copy_table(src, work / name)
        elif src.is_dir():
            shutil.copytree(src, work / name, symlinks=True, copy_function=_copy_present)
        else:
            _copy_present(src, work / name)
        copied.append(name)
    _check_whole(work)
    if dest.exists():
        dest.rmdir()  # empty, checked above
    work.rename(dest)
    return copied


def _check_whole(dest: Path) -> None:
    """Every data file the copy's latest version pins is there (a vacuum during the copy
    may have removed some: then the copy is no backup, and says so)."""
    from .schema import DATA_TABLES
    from .tables import TableStore
    from .versions import Catalog

    store = TableStore(str(dest))
    latest = Catalog(store).latest()
    for name, pinned in (latest.tables.items() if latest else ()):
        if name not in DATA_TABLES or not store.exists(name):
            continue
        try:
            ds = store.dataset(name, pinned)
        except (OSError, ValueError) as e:
            raise _torn(dest, name, pinned) from e
        base = dest / f"{name}.lance" / "data"
        if any(not (base / f.path).exists() for frag in ds.get_fragments()
               for f in frag.data_files()):
            raise _torn(dest, name, pinned)


def _torn(dest: Path, name: str, version: int) -> LakeError:
    return LakeError(f"the copy in {dest} lacks files of table {name} at its version "
                     f"{version}: a vacuum ran during the backup and removed them. Delete "
                     f"{dest} and run the backup again, with no vacuum meanwhile")


def _copy_table(src: Path, dst: Path) -> None:
    """A Lance table, its manifests first: a version's data files are written before its
    manifest, so every manifest copied has its files copied after it (a commit meanwhile
    adds files and a manifest the copy may lack: a version newer than the catalog's)."""
    shutil.copytree(src / "_versions", dst / "_versions", copy_function=_copy_present)
    shutil.copytree(src, dst, symlinks=True, copy_function=_copy_present, dirs_exist_ok=True,
                    ignore=lambda d, names: ["_versions"] if Path(d) == src else [])


def _copy_present(src: str | Path, dst: str | Path) -> None:
    """Copy a file that is still there: a writer's temporary file (Lance writes one, then
    renames it) may be gone between listing and copying, and was never part of a version."""
    try:
        shutil.copy2(src, dst)
    except FileNotFoundError:
        pass
