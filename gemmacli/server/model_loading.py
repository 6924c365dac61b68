"""What the model manager does to a model besides bookkeeping: find it, warm it up, describe it, free it.

These run on the loader thread (or a worker thread), never on the event loop: they read disks and run
torch. None of them keeps a reference to a runner.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemmacli.models.loader import ModelLoader, Prepared
from gemmacli.types import GenParams, Task

_SERVABLE = ("ready", "demo")  # listing statuses that load without a download


@dataclass(frozen=True)
class Placed:
    """Where a loaded model's weights are, read from the weights themselves."""

    device: str
    dtype: str
    placement: str  # "single" or accelerate's device map, summarized as "cuda:0×20, cpu×6"
    memory_bytes: int  # parameters and buffers


def aliases(given: str, item: Prepared) -> tuple[str, ...]:
    """Every name a client may reasonably send: what was typed, the catalog alias and its Hub id."""
    entry = item.ref.entry
    names = {given, item.ref.name}
    if entry is not None:
        names |= {entry.name, *entry.aliases, *([entry.hub] if entry.hub else [])}
    if item.ref.repo_id:
        names.add(item.ref.repo_id)
    return tuple(sorted(n for n in names if n != item.ref.name))


def warm_up(task: str, runner) -> None:
    """One tiny request per model, so the first user does not pay for lazy initialisation."""
    if task == "chat":
        for _ in runner.stream_text("Hello", GenParams(max_tokens=2, temperature=0.0)):
            pass
    elif task == "embed":
        runner.embed(["warm-up"])
    else:
        import numpy as np

        from gemmacli.types import AudioPart, TranscribeOptions

        runner.transcribe(AudioPart(np.zeros(16_000, dtype=np.float32)), TranscribeOptions())


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


def describe(runner: Any) -> Placed:
    """Device, dtype, layer placement and parameter bytes of a runner's torch module."""
    module = _module(runner)
    if module is None:
        return Placed("unknown", "unknown", "single", 0)
    tensors = [*module.parameters(), *module.buffers()]
    memory = sum(t.numel() * t.element_size() for t in tensors)
    first = next(iter(module.parameters()), None)
    device = str(first.device) if first is not None else "unknown"
    dtype = str(first.dtype).removeprefix("torch.") if first is not None else "unknown"
    device_map = getattr(module, "hf_device_map", None)
    return Placed(device, dtype, _summarize(device_map, getattr(runner, "placement", None)), memory)


def _module(runner: Any):
    """The nn.Module inside a chat, embedding (sentence-transformers) or Whisper (pipeline) runner."""
    for candidate in (getattr(runner, "model", None), getattr(getattr(runner, "_pipe", None), "model", None)):
        if candidate is not None and hasattr(candidate, "parameters"):
            return candidate
    return None


def _summarize(device_map: dict | None, placement: Any = None) -> str:
    """Accelerate's module -> device map as counts per device ("cuda:0×20, cpu×6"); "auto" (with its caps)
    when accelerate placed it all on one device; "single" when we did."""
    if not device_map:
        if placement is None or not placement.device_map_auto:
            return "single"
        caps = ", ".join(f"{d}={size}" for d, size in placement.max_memory)
        return "auto" + (f" (max {caps})" if caps else "") + (", int8" if placement.load_in_8bit else "")
    counts: dict[str, int] = {}
    for where in device_map.values():
        name = f"cuda:{where}" if isinstance(where, int) else str(where)
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name}×{n}" for name, n in counts.items())


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
