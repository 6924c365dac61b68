"""The models a server answers for, by the names clients may use for them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from gemmacli.errors import ModelNotFoundError
from gemmacli.types import Task


@dataclass(frozen=True)
class ServedModel:
    id: str  # the name /v1/models shows and responses echo
    task: Task
    runner: Any  # ChatRunner | EmbedRunner | TranscribeRunner
    aliases: tuple[str, ...] = ()  # other names accepted in requests (catalog alias, Hub repo id)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def dimensions(self) -> int | None:
        return getattr(self.runner, "dimensions", None) if self.task == "embed" else None


class Registry:
    """Served models, looked up by id or alias; `ready` turns true once every preloaded model is warmed up.

    It only indexes what is in memory now; the ModelManager decides what comes and goes.

    A request's `model` field is only ever matched against these names, never turned into a path.
    """

    def __init__(self, models: list[ServedModel] = (), *, ready: bool = True):
        self._models: dict[str, ServedModel] = {}
        self._names: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self.ready = ready
        self.failure: str | None = None  # why loading failed, for /health
        for model in models:
            self.add(model)

    def add(self, model: ServedModel) -> None:
        with self._lock:
            self._models[model.id] = model
            for name in (model.id, *model.aliases):
                self._names.setdefault(name.lower(), model)

    def remove(self, model_id: str) -> ServedModel | None:
        """Stop serving `model_id` under every name; the caller frees its memory."""
        with self._lock:
            model = self._models.pop(model_id, None)
            self._names = {name: m for name, m in self._names.items() if m is not model}
            return model

    def get(self, name: str | None, task: Task) -> ServedModel:
        """The model named `name` for `task`; 404 semantics when it is not served or does another task."""
        model = self._names.get((name or "").strip().lower())
        if model is None or model.task != task:
            served = ", ".join(m.id for m in self._models.values() if m.task == task) or "none"
            what = f"model {name!r} is not served" if model is None else f"model {name!r} is a {model.task} model"
            raise ModelNotFoundError(f"{what}; {task} models here: {served}", param="model")
        return model

    def find(self, name: str) -> ServedModel | None:
        return self._names.get(name.strip().lower())

    def __iter__(self):
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)
