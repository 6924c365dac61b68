"""A model in memory, as the model manager keeps it: one record, with its runner, names, statistics and leases."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from gemmacli.runners import Memory
from gemmacli.types import Task

LEASES = "gemmacli.model_leases"  # key of the request's leases in the ASGI scope's state


@dataclass(frozen=True)
class Policy:
    load_on_demand: bool = False  # any model on this machine may be named, not only the preloaded ones
    max_loaded: int = 0  # 0 = no limit
    idle_unload: float = 0.0  # seconds; 0 = never
    load_wait: float = 30.0  # seconds a load waits for a place before 503
    request_timeout: float = 600.0
    warmup: bool = True

    @classmethod
    def from_settings(cls, s) -> Policy:
        return cls(s.load_on_demand, s.max_loaded, s.idle_unload, s.load_wait, s.request_timeout, s.warmup)


@dataclass(eq=False)
class LoadedModel:
    """One model in memory. `id` is the name /v1/models shows and responses echo; `aliases` are the other
    names a request may use (catalog alias, Hub repo id). A request's `model` is only ever matched against
    these names, never turned into a path."""

    id: str
    runner: Any  # a gemmacli.runners.Runner
    aliases: tuple[str, ...] = ()
    created: int = field(default_factory=lambda: int(time.time()))
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    in_flight: int = 0  # leases held
    requests: int = 0  # leases released

    @property
    def task(self) -> Task:
        return self.runner.task

    @property
    def dimensions(self) -> int | None:
        return getattr(self.runner, "dimensions", None)

    @cached_property
    def names(self) -> frozenset[str]:
        return frozenset(name.lower() for name in (self.id, *self.aliases))

    @cached_property
    def memory(self) -> Memory:
        """Read from the weights once: they do not move while the model is loaded."""
        return self.runner.memory()

    def lease(self, on_release: Callable[[], None]) -> Lease:
        self.in_flight += 1
        self.last_used = time.time()
        return Lease(self, on_release)

    def stats(self) -> dict[str, Any]:
        """A row of /admin/stats."""
        now, memory = time.time(), self.memory
        return {
            "id": self.id,
            "task": self.task,
            "device": memory.device,
            "dtype": memory.dtype,
            "placement": memory.placement,
            "memory_bytes": memory.bytes,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "loaded_at": round(self.loaded_at, 3),
            "last_used": round(self.last_used, 3),
            "idle_s": 0.0 if self.in_flight else round(now - self.last_used, 3),
        }


class Lease:
    """A request's hold on its model; released once, when the request's HTTP exchange ends."""

    def __init__(self, model: LoadedModel, on_release: Callable[[], None]):
        self._model, self._on_release = model, on_release

    def release(self) -> None:
        if self._model is not None:
            model, self._model = self._model, None  # a released lease must not keep the model alive
            model.in_flight -= 1
            model.requests += 1
            model.last_used = time.time()
            self._on_release()


@dataclass(frozen=True)
class ModelView:
    """One row of /v1/models: a model in memory, being loaded, or loadable ("available")."""

    id: str
    task: Task
    status: str  # loaded | loading | available
    model: LoadedModel | None = None
