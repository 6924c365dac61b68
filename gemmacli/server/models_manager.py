"""The model manager: which models are in memory, loading them when asked, unloading them when not used.

Each model in memory is one LoadedModel record in one dict: its runner, the names it answers to, its
statistics and its leases. Unloading is popping that record and closing its runner.

Bookkeeping runs on the event loop only, so it needs no locks. Loading runs on one loader thread of its
own: a model being loaded is not shared with anybody yet, so the inference thread keeps decoding the
other models meanwhile, and one load at a time bounds the memory peak.

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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from gemmacli.errors import GemmacliError, ModelNotFoundError, ModelUnavailableError
from gemmacli.models.loader import LoadOptions, ModelLoader, Prepared, parse_max_memory
from gemmacli.server import model_loading
from gemmacli.server.engine import Engine, EngineStopped
from gemmacli.server.errors import APIError
from gemmacli.server.loaded import LEASES, LoadedModel, ModelView, Policy
from gemmacli.server.logs import redact
from gemmacli.types import Task

log = logging.getLogger("gemmacli.server")


class ModelManager:
    def __init__(
        self,
        engine: Engine,
        *,
        models: Sequence[LoadedModel] = (),
        loader: ModelLoader | None = None,
        options: LoadOptions = LoadOptions(),
        policy: Policy = Policy(),
    ):
        self.engine = engine
        self.loader = loader
        self.options = options
        self.policy = policy
        self.started = time.time()
        self.ready = True  # every preloaded model is in memory and warmed up (see start)
        self.failure: str | None = None  # why preloading failed, for /health
        self.loads = 0  # models loaded since start (preloads included)
        self._models: dict[str, LoadedModel] = {m.id: m for m in models}
        self._known: dict[str, Prepared] = {}  # every name of a model loaded once -> how to load it again
        self._loading: dict[str, asyncio.Future] = {}  # model id -> its one load
        self._wanted: Counter[str] = Counter()  # model id -> requests waiting for it to load
        self._reserved = 0  # places taken by loads in progress
        self._unloading = 0  # places still held by models being freed
        self._changed: asyncio.Event | None = None  # set (and replaced) whenever a place may have come free
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gemmacli-loader")
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def from_settings(cls, engine: Engine, settings, *, models=(), loader: ModelLoader | None = None) -> ModelManager:
        options, policy = load_options(settings), Policy.from_settings(settings)
        return cls(engine, models=models, loader=loader, options=options, policy=policy)

    # -- lifecycle

    def start(self, preload: list[tuple[str, Prepared]] | None = None) -> None:
        """On the event loop at startup: load `preload` in order (ready once they all are), and watch for
        idle models."""
        if preload is not None:
            self.ready = False
            self._spawn(self._preload(list(preload)), "gemmacli-preload")
        if self.policy.idle_unload > 0:
            self._spawn(self._unload_idle(), "gemmacli-idle-unload")

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- lookups

    def find(self, name: str) -> LoadedModel | None:
        """The model in memory that answers to `name` (its id or an alias, any case)."""
        key = name.strip().lower()
        return next((m for m in self._models.values() if key in m.names), None)

    def reads(self, name: str) -> set[str] | None:
        """What the model `name` takes in, as far as is known without loading it: a loaded model's runner says,
        else its catalog entry; None when neither knows (its runner checks once loaded)."""
        if (found := self.find(name)) is not None:
            return set(getattr(found.runner, "modalities", ())) or None
        entry = self.loader.catalog.get(name) if self.loader is not None else None
        return set(entry.modalities) if entry is not None else None

    def loaded(self) -> list[LoadedModel]:
        return list(self._models.values())

    def _not_served(self, name: str, task: Task, found: LoadedModel | None = None) -> ModelNotFoundError:
        served = ", ".join(m.id for m in self._models.values() if m.task == task) or "none"
        what = f"model {name!r} is not served" if found is None else f"model {name!r} is a {found.task} model"
        return ModelNotFoundError(f"{what}; {task} models here: {served}", param="model")

    # -- requests

    async def acquire(self, name: str | None, task: Task, scope: dict | None) -> LoadedModel:
        """The model named `name` for `task`, loading it first if need be; leased until the HTTP exchange
        of `scope` (its ASGI scope) ends. 404 when no such model may be served."""
        deadline = asyncio.get_running_loop().time() + self.policy.request_timeout
        name = (name or "").strip()
        if (model := self.find(name)) is None:
            prepared = await self._loadable(name)
            if prepared is None:
                raise self._not_served(name, task)
            if prepared.task != task:
                raise ModelNotFoundError(
                    f"model {name!r} is a {prepared.task} model, not a {task} model", param="model"
                )
            model = await self._wait_loaded(name, prepared, deadline)
        if model.task != task:
            raise self._not_served(name, task, model)
        lease = model.lease(self._notify)
        if scope is not None:
            scope.setdefault("state", {}).setdefault(LEASES, []).append(lease)
        return model

    async def _wait_loaded(self, name: str, prepared: Prepared, deadline: float) -> LoadedModel:
        """Wait for the model's load (starting it if nobody has); counted as wanted meanwhile, so nobody
        unloads it between its load and this request's lease."""
        model_id = prepared.ref.name
        self._wanted[model_id] += 1
        try:
            while (model := self._models.get(model_id)) is None:
                remaining = deadline - asyncio.get_running_loop().time()
                await asyncio.wait_for(asyncio.shield(self._load_once(name, prepared)), max(0.0, remaining))
            return model
        finally:
            self._wanted[model_id] -= 1
            if not self._wanted[model_id]:
                del self._wanted[model_id]

    # -- admin

    async def load(self, name: str) -> LoadedModel:
        """POST /admin/load: load `name` now (no-op when loaded); 404 when it may not be served."""
        if (model := self.find(name)) is not None:
            return model
        prepared = await self._loadable(name)
        if prepared is None:
            raise ModelNotFoundError(f"model {name!r} is not available on this server", param="model")
        deadline = asyncio.get_running_loop().time() + self.policy.request_timeout
        return await self._wait_loaded(name, prepared, deadline)

    async def unload(self, name: str) -> str | None:
        """POST /admin/unload: free `name` now; its id, or None when it was not loaded. 404 unknown, 409 busy."""
        model = self.find(name)
        if model is None:
            model_id = self._known[name.lower()].ref.name if name.lower() in self._known else None
            if model_id in self._loading:
                raise APIError(409, f"model {model_id!r} is loading; unload it once it is ready", code="model_busy")
            if model_id is None and await self._loadable(name) is None:
                raise ModelNotFoundError(f"model {name!r} is not available on this server", param="model")
            return None
        model_id = model.id
        del model  # held across the unload's awaits, it would keep the weights alive
        if busy := self._models[model_id].in_flight + self._wanted[model_id]:
            raise APIError(409, f"model {model_id!r} has {busy} request(s) in flight", code="model_busy")
        await self._unload(model_id, "asked")
        return model_id

    def stats(self) -> dict[str, Any]:
        p = self.policy
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "models": [m.stats() for m in self._models.values()],
            "loading": sorted(self._loading),
            "loads": self.loads,
            "queue": {"running": self.engine.running, "waiting": self.engine.waiting},
            "rss_bytes": model_loading.rss_bytes(),
            "policy": {
                "load_on_demand": p.load_on_demand,
                "max_loaded": p.max_loaded,
                "idle_unload": p.idle_unload,
                "load_wait": p.load_wait,
            },
        }

    async def views(self) -> list[ModelView]:
        """Loaded models, then those being loaded, then the rest that may be loaded, for /v1/models."""
        out = [ModelView(m.id, m.task, "loaded", m) for m in self._models.values()]
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
        if (model := self.find(key)) is not None:
            return ModelView(model.id, model.task, "loaded", model)
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
                runner = await asyncio.get_running_loop().run_in_executor(self._executor, self._build, prepared)
            finally:
                self._reserved -= 1
            model = LoadedModel(model_id, runner, aliases=model_loading.aliases(name, prepared))
            self._models[model_id] = model
            self._known.update({n: prepared for n in model.names})
            self.loads += 1
            log.info(
                "model loaded",
                extra={
                    "model": model_id,
                    "task": model.task,
                    "device": model.memory.device,
                    "seconds": round(time.monotonic() - started, 2),
                },
            )
        finally:
            self._loading.pop(model_id, None)
            self._notify()

    def _build(self, prepared: Prepared) -> Any:
        """On the loader thread: the weights, then the warm-up."""
        try:
            runner = self.loader.build(prepared, self.options, report=lambda step: log.info(step))
            if self.policy.warmup:
                runner.warm_up()
        except GemmacliError as exc:  # the server's problem, not the request's: 503, not 400
            raise ModelUnavailableError(f"cannot load {prepared.ref.name}: {exc.message}") from None
        return runner

    async def _make_room(self) -> None:
        """Unload least recently used idle models until a new one fits under max_loaded; wait for one to
        become idle for at most load_wait seconds, then answer 503."""
        limit, loop = self.policy.max_loaded, asyncio.get_running_loop()
        deadline = loop.time() + self.policy.load_wait
        while limit and len(self._models) + self._reserved + self._unloading >= limit:
            if (victim := self._least_recently_used_idle()) is not None:
                await self._unload(victim, "evicted")
                continue
            if (remaining := deadline - loop.time()) <= 0:
                raise APIError(
                    503,
                    f"every loaded model is busy (at most {limit} loaded); try again shortly",
                    type="server_error",
                    code="model_capacity",
                    headers={"Retry-After": "5"},
                )
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def _idle_ids(self) -> list[str]:
        """Ids only: a record held across an unload's awaits would keep its model from being freed."""
        return [m.id for m in self._models.values() if not m.in_flight and not self._wanted[m.id]]

    def _least_recently_used_idle(self) -> str | None:
        return min(self._idle_ids(), key=lambda model_id: self._models[model_id].last_used, default=None)

    async def _unload(self, model_id: str, reason: str) -> None:
        """Pop the model's record, close its runner, give the memory back."""
        model = self._models.pop(model_id)
        runner, idle_s = model.runner, round(time.time() - model.last_used, 1)
        del model
        self._unloading += 1
        try:
            await self._close(runner)
            del runner
            await asyncio.get_running_loop().run_in_executor(self._executor, model_loading.release_memory)
            log.info("model unloaded", extra={"model": model_id, "reason": reason, "idle_s": idle_s})
        finally:
            self._unloading -= 1
            self._notify()

    async def _close(self, runner: Any) -> None:
        """`runner.close()` on the inference thread, between two steps: its decoder may still hold the
        cancelled sequences of requests that just ended."""
        try:
            await self.engine.call(runner.close, admit=False)
        except EngineStopped:  # no inference thread any more: nothing else can touch the runner
            runner.close()

    async def _preload(self, preload: list[tuple[str, Prepared]]) -> None:
        try:
            for given, prepared in preload:
                await self._load_once(given, prepared)
            self.ready = True
            log.info("all models ready", extra={"models": list(self._models)})
        except Exception as exc:  # kept for /health; the process stays up to report it
            # /health is public: the reason, without the paths and secrets a library's message may carry.
            self.failure = redact(exc.message if hasattr(exc, "message") else f"{type(exc).__name__}: {exc}")
            log.error("loading failed", extra={"error": self.failure})

    async def _unload_idle(self) -> None:
        period = min(max(self.policy.idle_unload / 4, 0.1), 5.0)
        while True:
            await asyncio.sleep(period)
            cutoff = time.time() - self.policy.idle_unload
            for model_id in self._idle_ids():
                if model_id in self._idle_ids() and self._models[model_id].last_used <= cutoff:  # checked again:
                    await self._unload(model_id, "idle")  # the previous unload awaited

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


def load_options(settings) -> LoadOptions:
    """How the server loads every model; a flag this machine cannot honour is one error line."""
    options = LoadOptions(
        device=settings.device,
        dtype=settings.dtype,
        max_memory=parse_max_memory(settings.max_memory),
        load_in_8bit=settings.load_in_8bit,
    )
    return options.check()


def release_leases(app):
    """ASGI wrapper: whatever way a request ends (done, failed, client gone), its model leases end too."""

    async def handle(scope, receive, send):
        try:
            await app(scope, receive, send)
        finally:
            for lease in scope.get("state", {}).pop(LEASES, ()):
                lease.release()

    return handle
