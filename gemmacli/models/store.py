"""The local store of imported models: one ready-to-load HF folder per name under Paths.models_dir.

Every folder is built in a staging directory and renamed into place, with a marker that records
its task, source and file sizes, so a half-written or damaged import is never loaded.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gemmacli.errors import GemmacliError
from gemmacli.types import Task

MARKER = ".gemmacli.json"
STORE_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class StoredModel:
    name: str
    task: Task
    source: str
    path: Path
    meta: dict = field(default_factory=dict)  # what the builder recorded about its source (see `staging`)


def check_name(name: str) -> str:
    """Names become folder names: letters, digits, '.', '_' and '-' only, so no path can escape the store."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise GemmacliError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return name


def read(folder: Path) -> StoredModel | None:
    """The stored model in `folder`, or None when it is missing, unfinished or damaged."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != STORE_VERSION:
        return None
    for rel, size in data.get("files", {}).items():
        f = folder / rel
        if not f.is_file() or f.stat().st_size != size:
            return None
    return StoredModel(data["name"], data["task"], data.get("source", ""), folder, data.get("meta") or {})


def list_stored(models_dir: Path) -> list[StoredModel]:
    if not models_dir.is_dir():
        return []
    found = (read(d) for d in sorted(models_dir.iterdir()) if d.is_dir() and not d.name.startswith("."))
    return [m for m in found if m is not None]


@contextlib.contextmanager
def staging(
    models_dir: Path, name: str, task: Task | Callable[[Path], Task], source: str, meta: dict | None = None
) -> Iterator[Path]:
    """Yield an empty folder to build into; on success it replaces `models_dir/name` in one rename.

    `task` may be a function of the built folder, for sources whose task shows only in their files;
    `meta` (JSON) is kept in the marker, e.g. the source's fingerprint to tell later whether it changed.
    """
    dest = models_dir / check_name(name)
    tmp = models_dir / f".staging-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        if callable(task):
            task = task(tmp)
        marker = {"version": STORE_VERSION, "name": name, "task": task, "source": source, "files": files}
        if meta:
            marker["meta"] = meta
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(source: Path) -> dict:
    """Name, size and newest mtime of a file or folder: changes when the source is replaced or edited."""
    files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
    stats = [f.stat() for f in files]
    return {
        "name": source.name,
        "size": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
    }


def remove(models_dir: Path, name: str) -> bool:
    dest = models_dir / check_name(name)
    if not dest.is_dir():
        return False
    shutil.rmtree(dest)
    return True
