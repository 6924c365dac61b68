"""The engine: the one thread that touches models, its queue, and cancellation.

Exactly one thread runs model code, because torch models and tokenizers are not safe to share
between threads and because one thread keeps the cores busy without contention. Requests are jobs: a
function that, on that thread, returns an iterator of results, or a Generation: sequences it inserted
into a chat model's decoder. The thread keeps up to `max_running` jobs active. Each turn it advances
every plain job by one result, then steps every decoder that has sequences once (a prefill, or one
token for all of them), so streams interleave fairly and a model's requests decode as one batch.
Results cross back to the event loop with `call_soon_threadsafe`, and exceptions travel the same way.
A cancelled job (client gone, timeout) is dropped before its next step; its sequences leave their
decoder at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gemmacli.server.memory import is_out_of_memory, release_memory
from gemmacli.types import Delta, GenParams

Work = Callable[[Callable[[], bool]], Any]  # gets an is-cancelled check; returns an iterator, or a Generation


class Decoder(Protocol):
    """What the engine needs of a chat runner's decoder (gemmacli.runners.decoder.Decoder)."""

    def fork(self, prompt: Any, params: GenParams, n: int, cancelled: Callable[[], bool]) -> list[Any]: ...
    def advance(self) -> Iterator[tuple[Any, list[Delta]]]: ...
    def cancel(self, seq: Any) -> None: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Generation:
    """What a generating job's work returns: its sequences, inserted into `decoder`; a sequence's index is
    its choice."""

    decoder: Decoder
    seqs: tuple[Any, ...]


class Overloaded(Exception):
    """The queue is full: the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int = 1):
        super().__init__("the server is busy: too many requests waiting")
        self.retry_after = retry_after


class EngineStopped(Exception):
    """The engine is shutting down and takes no new work."""


_ITEM = "item"
_ERROR = "error"
_DONE = "done"


@dataclass(eq=False)
class Job:
    work: Work
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    results: Iterator[Any] | None = None
    generation: Generation | None = None  # set once its sequences are in a decoder
    unfinished: int = 0  # of those sequences

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
        self._owners: dict[Any, tuple[Job, int]] = {}  # sequence -> its job and its choice index
        self._decoders: dict[Decoder, None] = {}  # decoders with sequences, in the order they got them
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

    def generate(
        self,
        decoder: Decoder,
        prompts: Callable[[], Sequence[Any]],
        params: GenParams,
        n: int = 1,
        timeout: float | None = None,
    ) -> AsyncIterator[tuple[int, Delta]]:
        """(choice index, delta) pairs of `prompts` decoding in `decoder`, beside its other sequences: `n` choices
        per prompt, prompt i's j-th being choice i * n + j, as OpenAI numbers them.

        `prompts` runs on the inference thread (tokenizers live there); every prompt is inserted before any
        decodes, so a bad one fails the request before it produces anything.
        """
        return self.stream(lambda cancelled: _insert(decoder, prompts(), params, n, cancelled), timeout)

    async def call(self, fn: Callable[[], Any], timeout: float | None = None, *, admit: bool = True) -> Any:
        """Run `fn()` on the inference thread and return its result."""
        async for result in self.stream(lambda cancelled: iter((fn(),)), timeout, admit=admit):
            return result
        raise EngineStopped("the job ended without a result")

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
        for job in list(self._active):
            self._finish(job, _ERROR, EngineStopped("the server is shutting down"))
        self._changed()

    def _advance(self) -> None:
        """One turn: every plain job by one result, then every decoder by one step. A method of its own so that
        its loop variables die with it: left in `_run`'s frame while the thread waits, the last job or decoder
        would keep an unloaded model alive."""
        for job in [j for j in self._active if j.generation is None]:
            self._step(job)
        for decoder in list(self._decoders):
            self._step_decoder(decoder)

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
                if isinstance(started, Generation):
                    return self._adopt(job, started)
                job.results = iter(started)
            job.send(_ITEM, next(job.results))
        except StopIteration:
            self._finish(job, _DONE)
        except BaseException as exc:  # the job's own failure: report it, keep serving the others
            self._finish(job, _ERROR, exc)

    def _adopt(self, job: Job, generation: Generation) -> None:
        """From now on the job's results come from its decoder's steps."""
        job.generation, job.unfinished = generation, len(generation.seqs)
        for index, seq in enumerate(generation.seqs):
            self._owners[seq] = (job, index)
        self._decoders[generation.decoder] = None

    def _step_decoder(self, decoder: Decoder) -> None:
        """One step of `decoder`: each sequence's deltas go to its job the moment they exist; a failed sequence
        fails its job."""
        try:
            for seq, deltas in decoder.advance():
                self._deliver(seq, deltas)
        except BaseException as exc:  # the decoder reports its failures per sequence: this is a bug in it
            for job in {job for job, _ in self._owners.values() if job.generation.decoder is decoder}:
                self._finish(job, _ERROR, exc)
            del self._decoders[decoder]
            return
        if not len(decoder):
            del self._decoders[decoder]  # nothing left to step: the engine no longer holds it (or its model)

    def _deliver(self, seq: Any, deltas: list[Delta]) -> None:
        owner = self._owners.get(seq)
        if owner is None:  # its job already ended (another of its sequences failed)
            return
        job, index = owner
        if seq.error is not None:
            self._finish(job, _ERROR, seq.error)
            return
        for delta in deltas:
            job.send(_ITEM, (index, delta))
        if seq.done:
            del self._owners[seq]
            job.unfinished -= 1
            if not job.unfinished:
                self._finish(job, _DONE)

    def _finish(self, job: Job, kind: str, value: Any = None) -> None:
        close = getattr(job.results, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        if job.generation is not None:  # its sequences still decoding (one failed, or the engine stops) end now
            for seq in job.generation.seqs:
                if self._owners.pop(seq, None) is not None and not seq.done:
                    job.generation.decoder.cancel(seq)
        self._active.remove(job)
        if kind == _ERROR and is_out_of_memory(value):
            release_memory(value)  # the next request must find the memory free again
        job.send(kind, value)

    def _changed(self) -> None:
        self._on_change(len(self._active), self._waiting)


def _insert(
    decoder: Decoder, prompts: Sequence[Any], params: GenParams, n: int, cancelled: Callable[[], bool]
) -> Generation:
    """Every prompt into `decoder`, n times each, or none: one that fails takes the ones inserted before it out."""
    seqs = []
    try:
        for prompt in prompts:
            seqs += decoder.fork(prompt, params, n, cancelled)
    except BaseException:
        for seq in seqs:
            decoder.cancel(seq)
        raise
    return Generation(decoder, tuple(seqs))
