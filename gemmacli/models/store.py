"""The local store of imported models: one ready-to-load HF folder per name under Paths.models_dir.

Every folder is built in a staging directory and renamed into place, with a marker that records
its task, source and file sizes, so a half-written or damaged import is never loaded.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
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
    return StoredModel(data["name"], data["task"], data.get("source", ""), folder)


def list_stored(models_dir: Path) -> list[StoredModel]:
    if not models_dir.is_dir():
        return []
    found = (read(d) for d in sorted(models_dir.iterdir()) if d.is_dir() and not d.name.startswith("."))
    return [m for m in found if m is not None]


@contextlib.contextmanager
def staging(models_dir: Path, name: str, task: Task, source: str) -> Iterator[Path]:
    """Yield an empty folder to build into; on success it replaces `models_dir/name` in one rename."""
    dest = models_dir / check_name(name)
    tmp = models_dir / f".staging-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        marker = {"version": STORE_VERSION, "name": name, "task": task, "source": source, "files": files}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove(models_dir: Path, name: str) -> bool:
    dest = models_dir / check_name(name)
    if not dest.is_dir():
        return False
    shutil.rmtree(dest)
    return True
