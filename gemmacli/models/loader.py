"""`load`: from a model name to a ready runner, the one entry point the CLI and server use."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from gemmacli.device import placement
from gemmacli.errors import GemmacliError, InvalidParamError
from gemmacli.models.catalog import Catalog
from gemmacli.models.gguf_import import Report
from gemmacli.models.resolve import ModelRef, materialize, resolve, task_of
from gemmacli.runners import Runner, runner_class
from gemmacli.settings import Paths
from gemmacli.types import Task

PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
_MEMORY_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|B)$", re.IGNORECASE)
CONVERT_HINT = (
    'python -c "import torch; from safetensors.torch import save_file; '
    "sd = torch.load('pytorch_model.bin', weights_only=True); "
    "save_file({k: v.contiguous().clone() for k, v in sd.items()}, 'model.safetensors', metadata={'format': 'pt'})\""
)


class Prepared(NamedTuple):
    ref: ModelRef
    folder: Path
    task: Task


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"
    dtype: str = "auto"
    multi_gpu: bool = False  # device_map="auto" across every visible GPU
    max_memory: tuple[tuple[int | str, str], ...] = ()  # accelerate's cap per device (see parse_max_memory)
    load_in_8bit: bool = False  # bitsandbytes int8 weights (chat and Whisper models)

    def check(self) -> LoadOptions:
        """Fail at startup, in one line, on options this machine cannot honour."""
        if self.load_in_8bit and importlib.util.find_spec("bitsandbytes") is None:
            raise GemmacliError("--load-in-8bit needs the bitsandbytes package: pip install bitsandbytes")
        return self


def parse_max_memory(text: str) -> tuple[tuple[int | str, str], ...]:
    """'0=20GiB,cpu=64GiB' -> ((0, '20GiB'), ('cpu', '64GiB')): GPU indices, cpu, mps or disk, each with a size."""
    out: list[tuple[int | str, str]] = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        device, _, size = (s.strip() for s in item.partition("="))
        device = device.lower().removeprefix("cuda:")
        if not (device.isdigit() or device in ("cpu", "mps", "disk")) or not _MEMORY_SIZE.match(size):
            raise InvalidParamError(
                f"--max-memory entry {item!r} is not DEVICE=SIZE (e.g. 0=20GiB,cpu=64GiB)", param="max_memory"
            )
        out.append((int(device) if device.isdigit() else device, size.replace(" ", "")))
    return tuple(out)


def require_safetensors(folder: Path, name: str) -> None:
    """Refuse pickle-only weights: unpickling a checkpoint can run any code it carries."""
    if not folder.is_dir() or any(folder.rglob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.rglob(pattern))
    if pickles:
        raise GemmacliError(
            f"{name} has only PyTorch pickle weights ({', '.join(pickles[:3])}); gemmacli loads safetensors only. "
            f"Convert once, inside {folder}: {CONVERT_HINT}"
        )
    raise GemmacliError(f"{name} has no .safetensors weights in {folder}")


@dataclass
class ModelLoader:
    """Resolves names against one catalog and one store; builds runners."""

    paths: Paths = field(default_factory=Paths.from_env)
    catalog: Catalog | None = None

    def __post_init__(self):
        if self.catalog is None:
            self.catalog = Catalog.load(self.paths.catalog_file)

    def prepare(
        self,
        name: str,
        *,
        task: Task | None = None,
        report: Report = print,
        download: bool = True,
        local_paths: bool = True,
    ) -> Prepared:
        """Resolve `name` and get its files onto disk (download or import); no weights are loaded yet."""
        ref = resolve(name, self.catalog, self.paths, local_paths=local_paths)
        folder = materialize(ref, self.paths, report, download=download)
        found = task_of(ref, folder)
        if task is not None and found != task:
            raise InvalidParamError(f"{ref.name} is a {found} model, not a {task} model", param="model")
        return Prepared(ref, folder, found)

    def build(self, prepared: Prepared, options: LoadOptions = LoadOptions(), report: Report = print) -> Runner:
        """Load the weights of a prepared model into the runner of its task."""
        ref, folder, task = prepared
        runner = runner_class(task)
        require_safetensors(folder, ref.name)
        where = placement(
            options.device,
            options.dtype,
            multi_gpu=options.multi_gpu,
            cpu_bf16=runner.cpu_bf16,
            max_memory=options.max_memory,
            load_in_8bit=options.load_in_8bit,
        )
        report(f"loading {ref.name} on {where.device} ({where.dtype_name})")
        return runner.load(folder, where, name=ref.name, defaults=ref.defaults)

    def load(
        self, name: str, *, task: Task | None = None, options: LoadOptions = LoadOptions(), report: Report = print
    ) -> Runner:
        return self.build(self.prepare(name, task=task, report=report), options, report)
