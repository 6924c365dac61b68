"""`load`: from a model name to a ready runner, the one entry point the CLI and server use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from gemmacli.device import placement
from gemmacli.errors import InvalidParamError
from gemmacli.models.catalog import Catalog
from gemmacli.models.gguf_import import Report
from gemmacli.models.resolve import ModelRef, materialize, resolve, task_of
from gemmacli.settings import Paths
from gemmacli.types import Task

if TYPE_CHECKING:
    from gemmacli.runners.chat import ChatRunner
    from gemmacli.runners.embed import EmbedRunner
    from gemmacli.runners.transcribe import TranscribeRunner

    Runner = ChatRunner | EmbedRunner | TranscribeRunner


class Prepared(NamedTuple):
    ref: ModelRef
    folder: Path
    task: Task


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"
    dtype: str = "auto"
    multi_gpu: bool = False  # device_map="auto" across every visible GPU


@dataclass
class ModelLoader:
    """Resolves names against one catalog and one store; builds runners."""

    paths: Paths = field(default_factory=Paths.from_env)
    catalog: Catalog | None = None

    def __post_init__(self):
        if self.catalog is None:
            self.catalog = Catalog.load(self.paths.catalog_file)

    def prepare(self, name: str, *, task: Task | None = None, report: Report = print) -> Prepared:
        """Resolve `name` and get its files onto disk (download or import); no weights are loaded yet."""
        ref = resolve(name, self.catalog, self.paths)
        folder = materialize(ref, self.paths, report)
        found = task_of(ref, folder)
        if task is not None and found != task:
            raise InvalidParamError(f"{ref.name} is a {found} model, not a {task} model", param="model")
        return Prepared(ref, folder, found)

    def build(self, prepared: Prepared, options: LoadOptions = LoadOptions(), report: Report = print) -> Runner:
        """Load the weights of a prepared model into the runner for its task."""
        ref, folder, task = prepared
        where = placement(options.device, options.dtype, multi_gpu=options.multi_gpu, cpu_bf16=task == "chat")
        report(f"loading {ref.name} on {where.device} ({where.dtype_name})")
        if task == "chat":
            from gemmacli.runners.chat import ChatRunner

            return ChatRunner.load(folder, where, name=ref.name, defaults=ref.defaults)
        if task == "embed":
            from gemmacli.runners.embed import EmbedRunner

            return EmbedRunner.load(folder, where, name=ref.name)
        from gemmacli.runners.transcribe import TranscribeRunner

        return TranscribeRunner.load(folder, where, name=ref.name)

    def load(
        self, name: str, *, task: Task | None = None, options: LoadOptions = LoadOptions(), report: Report = print
    ) -> Runner:
        return self.build(self.prepare(name, task=task, report=report), options, report)
