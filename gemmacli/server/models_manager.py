"""The model manager: which models are in memory, loading them when asked, unloading them when not used.

Bookkeeping runs on the event loop only, so it needs no locks. Loading and freeing run on one loader
thread of their own: a model being loaded is not shared with anybody yet, so the inference thread keeps
decoding the other models meanwhile, and one load at a time bounds the memory peak.

Requests hold a lease on their model from lookup until their HTTP exchange ends (`release_leases`
wraps the app); a model with leases, or with requests waiting for it to load, is never unloaded. With
`max_loaded`, a new model takes the place of the least recently used idle one, or waits `load_wait`
seconds for one to become idle, then answers 503. Loading is single flight: requests for a model being
loaded wait for that one load (within their request timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gemmacli.errors import GemmacliError, ModelNotFoundError, ModelUnavailableError
from gemmacli.models.loader import LoadOptions, ModelLoader, Prepared, parse_max_memory
from gemmacli.server import model_loading
from gemmacli.server.engine import Engine, EngineStopped
from gemmacli.server.errors import APIError
from gemmacli.server.logs import redact
from gemmacli.server.model_loading import Placed
from gemmacli.server.registry import Registry, ServedModel
from gemmacli.types import Task

log = logging.getLogger("gemmacli.server")
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
class Slot:
    """A model in memory and what /admin/stats says about it."""

    served: ServedModel
    placed: Placed
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    in_flight: int = 0
    requests: int = 0


@dataclass(frozen=True)
class ModelView:
    """One row of /v1/models: a model in memory, being loaded, or loadable ("available")."""

    id: str
    task: Task
    status: str  # loaded | loading | available
    served: ServedModel | None = None


class Lease:
    """A request's hold on its model; released once, when the request's HTTP exchange ends."""

    def __init__(self, manager: ModelManager, slot: Slot):
        self._manager, self._slot = manager, slot

    def release(self) -> None:
        if self._slot is not None:
            slot, self._slot = self._slot, None  # a released lease must not keep the model alive
            self._manager._released(slot)


class ModelManager:
    def __init__(self, registry: Registry, engine: Engine, *, loader: ModelLoader | None = None,
                 options: LoadOptions = LoadOptions(), policy: Policy = Policy()):  # fmt: skip
        self.registry, self.engine, self.loader, self.options, self.policy = registry, engine, loader, options, policy
        self.started = time.time()
        self.loads = 0  # models loaded since start (preloads included)
        self._slots = {m.id: Slot(m, model_loading.describe(m.runner)) for m in registry}
        self._known: dict[str, Prepared] = {}  # every name of a model loaded once -> how to load it again
        self._loading: dict[str, asyncio.Future] = {}  # model id -> its one load
        self._wanted: Counter[str] = Counter()  # model id -> requests waiting for it to load
        self._reserved = 0  # places taken by loads in progress
        self._unloading = 0  # places still held by models being freed
        self._changed: asyncio.Event | None = None  # set (and replaced) whenever a place may have come free
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gemmacli-loader")
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def from_settings(cls, registry: Registry, engine: Engine, settings, loader: ModelLoader | None) -> ModelManager:
        options = LoadOptions(device=settings.device, dtype=settings.dtype, load_in_8bit=settings.load_in_8bit,
                              max_memory=parse_max_memory(settings.max_memory))  # fmt: skip
        return cls(registry, engine, loader=loader, options=options.check(), policy=Policy.from_settings(settings))

    # -- lifecycle

    def start(self, preload: list[tuple[str, Prepared]] | None = None) -> None:
        """On the event loop at startup: load `preload` in order, then mark the registry ready (without
        one, readiness is the caller's), and watch for idle models."""
        if preload is not None:
            self._spawn(self._preload(list(preload)), "gemmacli-preload")
        if self.policy.idle_unload > 0:
            self._spawn(self._unload_idle(), "gemmacli-idle-unload")

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- requests

    async def acquire(self, name: str | None, task: Task, scope: dict | None) -> ServedModel:
        """The model named `name` for `task`, loading it first if need be; leased until the HTTP exchange
        of `scope` (its ASGI scope) ends. 404 when no such model may be served."""
        deadline = asyncio.get_running_loop().time() + self.policy.request_timeout
        name = (name or "").strip()
        if (served := self.registry.find(name)) is None:
            prepared = await self._loadable(name)
            if prepared is None:
                self.registry.get(name, task)  # raises the 404 that lists what is served
            if prepared.task != task:
                raise ModelNotFoundError(f"model {name!r} is a {prepared.task} model, not a {task} model",
                                         param="model")  # fmt: skip
            served = await self._wait_loaded(name, prepared, deadline)
        else:
            served = self.registry.get(name, task)
        lease = Lease(self, self._lease(served.id))
        if scope is not None:
            scope.setdefault("state", {}).setdefault(LEASES, []).append(lease)
        return served

    async def _wait_loaded(self, name: str, prepared: Prepared, deadline: float) -> ServedModel:
        """Wait for the model's load (starting it if nobody has); counted as wanted meanwhile, so nobody
        unloads it between its load and this request's lease."""
        model_id = prepared.ref.name
        self._wanted[model_id] += 1
        try:
            while (served := self.registry.find(model_id)) is None:
                remaining = deadline - asyncio.get_running_loop().time()
                await asyncio.wait_for(asyncio.shield(self._load_once(name, prepared)), max(0.0, remaining))
            return served
        finally:
            self._wanted[model_id] -= 1
            if not self._wanted[model_id]:
                del self._wanted[model_id]

    def _lease(self, model_id: str) -> Slot:
        slot = self._slots[model_id]
        slot.in_flight += 1
        slot.last_used = time.time()
        return slot

    def _released(self, slot: Slot) -> None:
        slot.in_flight -= 1
        slot.requests += 1
        slot.last_used = time.time()
        self._notify()

    # -- admin

    async def load(self, name: str) -> ServedModel:
        """POST /admin/load: load `name` now (no-op when loaded); 404 when it may not be served."""
        if (served := self.registry.find(name)) is not None:
            return served
        prepared = await self._loadable(name)
        if prepared is None:
            raise ModelNotFoundError(f"model {name!r} is not available on this server", param="model")
        deadline = asyncio.get_running_loop().time() + self.policy.request_timeout
        return await self._wait_loaded(name, prepared, deadline)

    async def unload(self, name: str) -> str | None:
        """POST /admin/unload: free `name` now; its id, or None when it was not loaded. 404 unknown, 409 busy."""
        served = self.registry.find(name)
        if served is None:
            model_id = self._known[name.lower()].ref.name if name.lower() in self._known else None
            if model_id in self._loading:
                raise APIError(409, f"model {model_id!r} is loading; unload it once it is ready", code="model_busy")
            if model_id is None and await self._loadable(name) is None:
                raise ModelNotFoundError(f"model {name!r} is not available on this server", param="model")
            return None
        model_id = served.id
        del served  # held across the unload's awaits, it would keep the weights alive
        if busy := self._slots[model_id].in_flight + self._wanted[model_id]:
            raise APIError(409, f"model {model_id!r} has {busy} request(s) in flight", code="model_busy")
        await self._unload(model_id, "asked")
        return model_id

    def stats(self) -> dict[str, Any]:
        now = time.time()
        models = [{
            "id": s.served.id, "task": s.served.task, "device": s.placed.device, "dtype": s.placed.dtype,
            "placement": s.placed.placement, "memory_bytes": s.placed.memory_bytes, "requests": s.requests,
            "in_flight": s.in_flight, "loaded_at": round(s.loaded_at, 3), "last_used": round(s.last_used, 3),
            "idle_s": 0.0 if s.in_flight else round(now - s.last_used, 3),
        } for s in self._slots.values()]  # fmt: skip
        p = self.policy
        return {"uptime_s": round(now - self.started, 3), "models": models, "loading": sorted(self._loading),
                "loads": self.loads, "queue": {"running": self.engine.running, "waiting": self.engine.waiting},
                "rss_bytes": model_loading.rss_bytes(),
                "policy": {"load_on_demand": p.load_on_demand, "max_loaded": p.max_loaded,
                           "idle_unload": p.idle_unload, "load_wait": p.load_wait}}  # fmt: skip

    async def views(self) -> list[ModelView]:
        """Loaded models, then those being loaded, then the rest that may be loaded, for /v1/models."""
        out = [ModelView(s.served.id, s.served.task, "loaded", s.served) for s in self._slots.values()]
        out += [ModelView(model_id, self._task_of(model_id), "loading") for model_id in self._loading]
        seen = {v.id for v in out}
        candidates = {p.ref.name: p.task for p in self._known.values()}
        if self.policy.load_on_demand and self.loader is not None:
            index = await asyncio.to_thread(model_loading.available, self.loader)
            candidates.update(dict(index.values()))
        out += [ModelView(mid, task, "available") for mid, task in sorted(candidates.items()) if mid not in seen]
        return out

    async def view(self, name: str) -> ModelView | None:
        key = name.strip().lower()
        if (served := self.registry.find(key)) is not None:
            return ModelView(served.id, served.task, "loaded", served)
        return next((v for v in await self.views() if v.id.lower() == key), None)

    def _task_of(self, model_id: str) -> Task:
        return next(p.task for p in self._known.values() if p.ref.name == model_id)

    # -- loading

    async def _loadable(self, name: str) -> Prepared | None:
        """How to load `name`: known from an earlier load, or (on demand) found among this machine's models.
        A request's name is matched against names, never taken as a path."""
        key = name.strip().lower()
        if key in self._known:
            return self._known[key]
        if not (self.policy.load_on_demand and self.loader is not None and key):
            return None
        match = (await asyncio.to_thread(model_loading.available, self.loader)).get(key)
        if match is None:
            return None
        if (known := self._known.get(match[0].lower())) is not None:
            return known
        report = lambda step: log.info(step, extra={"model": match[0]})  # noqa: E731
        prepare = partial(self.loader.prepare, match[0], download=False, local_paths=False, report=report)
        prepared = await asyncio.get_running_loop().run_in_executor(self._executor, prepare)
        self._known[key] = prepared
        return prepared

    def _load_once(self, name: str, prepared: Prepared) -> asyncio.Future:
        """The load of `prepared`: the one already running, or a new one."""
        model_id = prepared.ref.name
        if model_id not in self._loading:
            self._known.setdefault(model_id.lower(), prepared)
            self._loading[model_id] = self._spawn(self._load(name, prepared), f"gemmacli-load-{model_id}")
        return self._loading[model_id]

    async def _load(self, name: str, prepared: Prepared) -> None:
        model_id, started = prepared.ref.name, time.monotonic()
        try:
            await self._make_room()
            self._reserved += 1
            try:
                build = lambda: self._build(prepared)  # noqa: E731
                runner, placed = await asyncio.get_running_loop().run_in_executor(self._executor, build)
            finally:
                self._reserved -= 1
            served = ServedModel(model_id, prepared.task, runner, aliases=model_loading.aliases(name, prepared))
            self.registry.add(served)
            self._slots[model_id] = Slot(served, placed)
            self._known.update({n.lower(): prepared for n in (model_id, *served.aliases)})
            self.loads += 1
            log.info("model loaded", extra={"model": model_id, "task": prepared.task, "device": placed.device,
                                            "seconds": round(time.monotonic() - started, 2)})  # fmt: skip
        finally:
            self._loading.pop(model_id, None)
            self._notify()

    def _build(self, prepared: Prepared) -> tuple[Any, Placed]:
        """On the loader thread: weights, warm-up, and where they ended up."""
        model_id = prepared.ref.name
        try:
            runner = self.loader.build(prepared, self.options, report=lambda step: log.info(step))
            if self.policy.warmup:
                model_loading.warm_up(prepared.task, runner)
        except GemmacliError as exc:  # the server's problem, not the request's: 503, not 400
            raise ModelUnavailableError(f"cannot load {model_id}: {exc.message}") from None
        return runner, model_loading.describe(runner)

    async def _make_room(self) -> None:
        """Unload least recently used idle models until a new one fits under max_loaded; wait for one to
        become idle for at most load_wait seconds, then answer 503."""
        limit, loop = self.policy.max_loaded, asyncio.get_running_loop()
        deadline = loop.time() + self.policy.load_wait
        while limit and len(self._slots) + self._reserved + self._unloading >= limit:
            if (victim := self._least_recently_used_idle()) is not None:
                await self._unload(victim, "evicted")
                continue
            if (remaining := deadline - loop.time()) <= 0:
                raise APIError(503, f"every loaded model is busy (at most {limit} loaded); try again shortly",
                               type="server_error", code="model_capacity", headers={"Retry-After": "5"})  # fmt: skip
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def _idle(self) -> list[Slot]:
        return [s for s in self._slots.values() if not s.in_flight and not self._wanted[s.served.id]]

    def _least_recently_used_idle(self) -> str | None:
        """The id only: a slot held across the unload's awaits would keep the model from being freed."""
        idle = self._idle()
        return min(idle, key=lambda s: s.last_used).served.id if idle else None

    async def _unload(self, model_id: str, reason: str) -> None:
        """Drop every reference to the model (registry, stats, the engine's batch), then free its memory."""
        slot = self._slots.pop(model_id)
        self.registry.remove(model_id)
        self._unloading += 1
        try:
            runner, idle_s = slot.served.runner, round(time.time() - slot.last_used, 1)
            del slot
            with contextlib.suppress(EngineStopped):
                await self.engine.drop_batch(runner)
            del runner
            await asyncio.get_running_loop().run_in_executor(self._executor, model_loading.release_memory)
            log.info("model unloaded", extra={"model": model_id, "reason": reason, "idle_s": idle_s})
        finally:
            self._unloading -= 1
            self._notify()

    async def _preload(self, preload: list[tuple[str, Prepared]]) -> None:
        try:
            for given, prepared in preload:
                await self._load_once(given, prepared)
            self.registry.ready = True
            log.info("all models ready", extra={"models": [m.id for m in self.registry]})
        except Exception as exc:  # kept for /health; the process stays up to report it
            # /health is public: the reason, without the paths and secrets a library's message may carry.
            self.registry.failure = redact(exc.message if hasattr(exc, "message") else f"{type(exc).__name__}: {exc}")
            log.error("loading failed", extra={"error": self.registry.failure})

    async def _unload_idle(self) -> None:
        period = min(max(self.policy.idle_unload / 4, 0.1), 5.0)
        while True:
            await asyncio.sleep(period)
            cutoff = time.time() - self.policy.idle_unload
            for model_id in [s.served.id for s in self._idle() if s.last_used <= cutoff]:
                slot = self._slots.get(model_id)  # the previous unload awaited: check again
                if slot is not None and not slot.in_flight and not self._wanted[model_id]:
                    del slot
                    await self._unload(model_id, "idle")

    # -- plumbing

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _notify(self) -> None:
        """Wake loads waiting for a place (after a release, a load or an unload)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def release_leases(app):
    """ASGI wrapper: whatever way a request ends (done, failed, client gone), its model leases end too."""

    async def handle(scope, receive, send):
        try:
            await app(scope, receive, send)
        finally:
            for lease in scope.get("state", {}).pop(LEASES, ()):
                lease.release()

    return handle
