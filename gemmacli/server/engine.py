"""The engine: the one thread that touches models, its queue, and cancellation.

Exactly one thread runs model code, because torch models and tokenizers are not safe to share
between threads and because one thread keeps the cores busy without contention. Requests are jobs:
a function that, on that thread, returns an iterator of results. The thread keeps up to
`max_running` jobs active and advances each by one item (for chat, one decoded token) in turn, so
streams interleave fairly; results cross back to the event loop with `call_soon_threadsafe`, and
exceptions travel the same way. A cancelled job (client gone, timeout) is dropped before its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gemmacli.server.memory import is_out_of_memory, release_memory

Work = Callable[[Callable[[], bool]], Any]  # gets an is-cancelled check; returns an iterator or a Batched


@dataclass(frozen=True)
class Batched:
    """What a job's work returns to decode inside a batch shared with other jobs of the same `key`.

    The engine keeps one batch per key (e.g. a ChatBatch per chat model), made by `new_batch()`; a batch
    needs add(item) -> first results, step() -> [(item, results)], reset() and len(); an item is finished
    when its `finished` attribute is true.
    """

    key: Any
    item: Any
    new_batch: Callable[[], Any]


class Overloaded(Exception):
    """The queue is full: the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int = 1):
        super().__init__("the server is busy: too many requests waiting")
        self.retry_after = retry_after


class EngineStopped(Exception):
    """The engine is shutting down and takes no new work."""


_ITEM, _ERROR, _DONE = "item", "error", "done"


@dataclass(eq=False)
class Job:
    work: Work
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    results: Iterator[Any] | None = None
    batch: Any = None  # set when the job decodes inside a shared batch

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def send(self, kind: str, value: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, (kind, value))


class Engine:
    def __init__(
        self, *, max_running: int = 1, max_queue: int = 64, on_change: Callable[[int, int], None] | None = None
    ):
        self.max_running, self.max_queue = max(1, max_running), max(0, max_queue)
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._active: list[Job] = []
        self._owners: dict[int, Job] = {}  # id(batched item) -> its job
        self._batches: dict[int, Any] = {}  # id(batch key) -> the batch its jobs decode in
        self._waiting = 0  # jobs submitted and not yet started, for admission control
        self._lock = threading.Lock()
        self._on_change = on_change or (lambda running, waiting: None)
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- event-loop side

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gemmacli-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def stream(self, work: Work, timeout: float | None = None, *, admit: bool = True) -> AsyncIterator[Any]:
        """Results of `work` as the thread produces them; leaving early (disconnect, error) cancels the job.

        `timeout` bounds the whole job, waiting included: past it, TimeoutError is raised here.
        `admit=False` skips the queue limit, for housekeeping that frees rather than uses the engine.
        """
        job = self._submit(work, admit)
        deadline = None if timeout is None else job.loop.time() + timeout
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - job.loop.time())
                kind, value = await asyncio.wait_for(job.outbox.get(), remaining)
                if kind == _ITEM:
                    yield value
                elif kind == _ERROR:
                    raise value
                else:
                    return
        finally:
            job.cancel()

    async def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run `fn()` on the inference thread and return its result."""
        async for result in self.stream(lambda cancelled: iter((fn(),)), timeout):
            return result
        raise EngineStopped("the job ended without a result")

    async def drop_batch(self, key: Any) -> None:
        """Forget the shared batch of `key` (a model being unloaded): it holds the model, which could not be freed.

        On the inference thread, which alone touches batches; none of the model's jobs may still run.
        """
        if not self.alive:
            self._batches.pop(id(key), None)
            return
        drop = lambda cancelled: iter((self._batches.pop(id(key), None) is not None,))  # noqa: E731
        async for _ in self.stream(drop, admit=False):
            pass

    def _submit(self, work: Work, admit: bool = True) -> Job:
        if self._stopping or not self.alive:
            raise EngineStopped("the server is shutting down")
        with self._lock:
            if admit and self._waiting >= self.max_queue + max(0, self.max_running - len(self._active)):
                raise Overloaded(retry_after=max(1, self._waiting // max(1, self.max_running)))
            self._waiting += 1
        job = Job(work, asyncio.get_running_loop())
        self._inbox.put(job)
        self._changed()
        return job

    # -- inference-thread side

    def _run(self) -> None:
        while True:
            if not self._admit():
                break
            self._advance()
            self._changed()
        while not self._inbox.empty():  # shutting down: tell whoever still listens, queued jobs too
            if (job := self._inbox.get_nowait()) is not None:
                with self._lock:
                    self._waiting -= 1
                self._active.append(job)
        for job in self._active:
            job.send(_ERROR, EngineStopped("the server is shutting down"))
        self._active.clear()
        self._changed()

    def _advance(self) -> None:
        """One step for every active job. A method of its own so that its loop variables die with it: left in
        `_run`'s frame while the thread waits, the last job or batch would keep an unloaded model alive."""
        for job in [j for j in self._active if j.batch is None]:
            self._step(job)
        for batch in {id(j.batch): j.batch for j in self._active if j.batch is not None}.values():
            self._step_batch(batch)

    def _admit(self) -> bool:
        """Take new jobs while there is room; block only when nothing is running. False means stop."""
        while len(self._active) < self.max_running:
            try:
                job = self._inbox.get(block=not self._active)
            except queue.Empty:
                return not self._stopping
            if job is None:
                return False
            with self._lock:
                self._waiting -= 1
            if not job.cancelled:
                self._active.append(job)
            self._changed()
        return not self._stopping  # a full batch never reads the stop sentinel: stop anyway

    def _step(self, job: Job) -> None:
        """Advance one job by one result; finish it on end, error or cancellation."""
        try:
            if job.cancelled:
                raise StopIteration
            if job.results is None:
                started = job.work(lambda: job.cancelled)
                if isinstance(started, Batched):
                    return self._join(job, started)
                job.results = iter(started)
            job.send(_ITEM, next(job.results))
        except StopIteration:
            self._finish(job, _DONE)
        except BaseException as exc:  # the job's own failure: report it, keep serving the others
            self._finish(job, _ERROR, exc)

    def _join(self, job: Job, started: Batched) -> None:
        """Prefill the job's item into its shared batch; from now on the batch's steps feed it."""
        batch = self._batches.get(id(started.key))
        if batch is None:
            batch = self._batches[id(started.key)] = started.new_batch()
        for result in batch.add(started.item):
            job.send(_ITEM, result)
        if started.item.finished:
            return self._finish(job, _DONE)
        job.batch, job.results = batch, None
        self._owners[id(started.item)] = job

    def _step_batch(self, batch: Any) -> None:
        """One step for every job in `batch`; a failure of the step fails exactly the jobs inside it."""
        try:
            stepped = batch.step()
        except BaseException as exc:
            batch.reset()
            for key, job in list(self._owners.items()):
                if job.batch is batch:
                    del self._owners[key]
                    self._finish(job, _ERROR, exc)
            return
        for item, results in stepped:
            job = self._owners[id(item)]
            for result in results:
                job.send(_ITEM, result)
            if item.finished:
                del self._owners[id(item)]
                self._finish(job, _DONE)

    def _finish(self, job: Job, kind: str, value: Any = None) -> None:
        close = getattr(job.results, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        self._active.remove(job)
        if kind == _ERROR and is_out_of_memory(value):
            release_memory(value)  # the next request must find the memory free again
        job.send(kind, value)

    def _changed(self) -> None:
        self._on_change(len(self._active), self._waiting)
