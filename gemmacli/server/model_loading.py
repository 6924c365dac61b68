"""What the model manager does to a model besides bookkeeping: find it, warm it up, describe it, free it.

These run on the loader thread (or a worker thread), never on the event loop: they read disks and run
torch. None of them keeps a reference to a runner.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from pathlib import Path

from gemmacli.models.loader import ModelLoader, Prepared
from gemmacli.types import Task

_SERVABLE = ("ready", "demo")  # listing statuses that load without a download


def aliases(given: str, item: Prepared) -> tuple[str, ...]:
    """Every name a client may reasonably send: what was typed, the catalog alias and its Hub id."""
    entry = item.ref.entry
    names = {given, item.ref.name}
    if entry is not None:
        names |= {entry.name, *entry.aliases, *([entry.hub] if entry.hub else [])}
    if item.ref.repo_id:
        names.add(item.ref.repo_id)
    return tuple(sorted(n for n in names if n != item.ref.name))


def available(loader: ModelLoader) -> dict[str, tuple[str, Task]]:
    """Models on this machine that load without a download, by every lower-cased name a request may use
    (catalog name and aliases, Hub id, imported name) -> (name to load it by, task)."""
    from gemmacli.models.listing import list_models

    names: dict[str, tuple[str, Task]] = {}
    for row in list_models(loader.catalog, loader.paths):
        if row["status"] not in _SERVABLE:
            continue
        target = (row["name"], row["task"])
        entry = loader.catalog.get(row["name"])
        spellings = [row["name"], *((entry.name, *entry.aliases, entry.hub or "") if entry else ())]
        for spelling in filter(None, spellings):
            names.setdefault(spelling.lower(), target)
    return names


def release_memory() -> None:
    """Give freed weights back to the system: collect cycles, empty the CUDA cache, and trim glibc's heap
    (which otherwise keeps freed small allocations for the next malloc, and RSS stays high)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes() -> int | None:
    """This process's resident memory (Linux), for /admin/stats."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
