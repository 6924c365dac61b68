"""Embedding micro-batches and a cache of recent inputs, on the event-loop side of the engine.

One embedding request is cheap to run but expensive to schedule: a model call per request wastes the
batch dimension the model runs at almost no extra cost. So requests for one model that arrive within a
few milliseconds wait in a list, and one engine job embeds all their texts at full size; each request
then cuts its own rows to its `dimensions`. Recent (model, text) results are kept in an LRU cache, and
only the texts it does not hold are queued. Everything here runs on the event loop, so nothing needs a
lock; the only code that touches the model is the job handed to `Engine.call`.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gemmacli.runners.embed import check_dimensions, truncate
from gemmacli.server.engine import Engine, EngineStopped
from gemmacli.server.metrics import Metrics
from gemmacli.types import Embeddings

if TYPE_CHECKING:
    import numpy as np

    from gemmacli.server.settings import ServerSettings

Row = tuple["np.ndarray", int]  # one text's full-size unit vector (D,) and the tokens it used


class LRUCache:
    """A bounded mapping that forgets the least recently used entry first; size 0 holds nothing."""

    def __init__(self, size: int):
        self.size = max(0, size)
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)  # a hit makes it the most recent
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.size == 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def keys(self) -> list[Hashable]:
        """Oldest first, without touching the order."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(eq=False)
class _Pending:
    texts: list[str]  # this request's cache misses, in its own order
    future: asyncio.Future  # -> list[Row], one per text


@dataclass(eq=False)
class _Queue:
    """What waits for one model's next batch."""

    runner: Any
    pending: list[_Pending] = field(default_factory=list)
    texts: int = 0
    timer: asyncio.TimerHandle | None = None


class EmbedBatcher:
    """Collects embedding requests per model and runs each batch as one engine job."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        *,
        window_ms: float = 5.0,
        max_batch: int = 64,
        cache_size: int = 4096,
        timeout: float | None = None,
    ):
        self.engine, self.metrics = engine, metrics
        self.window = max(0.0, window_ms) / 1000
        self.max_batch = max(1, max_batch)
        self.cache = LRUCache(cache_size)
        self.timeout = timeout  # bounds each batch job on the engine, as it bounded each request before
        self._queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Task] = set()  # running batches: the loop only keeps weak references
        self._running: Counter[str] = Counter()  # batches on the engine per model

    @classmethod
    def from_settings(cls, engine: Engine, metrics: Metrics, settings: ServerSettings) -> EmbedBatcher:
        return cls(
            engine,
            metrics,
            window_ms=settings.embed_batch_window_ms,
            max_batch=settings.embed_max_batch,
            cache_size=settings.embed_cache_size,
            timeout=settings.request_timeout,
        )

    async def embed(self, model: str, runner: Any, texts: Sequence[str], dimensions: int | None = None) -> Embeddings:
        """Unit vectors for `texts`, cut to `dimensions`, as `runner.embed` would give; callers bound the wait."""
        check_dimensions(dimensions, runner.dimensions, model)
        rows = [self.cache.get((model, text)) for text in texts]
        misses = [text for text, row in zip(texts, rows, strict=True) if row is None]
        self._count(model, len(texts) - len(misses), len(misses))
        if misses:
            fresh = iter(await self._enqueue(model, runner, misses))
            rows = [row if row is not None else next(fresh) for row in rows]
        return _assemble(rows, dimensions)

    def _count(self, model: str, hits: int, misses: int) -> None:
        if self.cache.size:  # no cache, no cache statistics
            self.metrics.embed_cache_hits.labels(model).inc(hits)
            self.metrics.embed_cache_misses.labels(model).inc(misses)

    def _enqueue(self, model: str, runner: Any, texts: list[str]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(model, _Queue(runner))
        future = loop.create_future()
        queue.pending.append(_Pending(texts, future))
        queue.texts += len(texts)
        if queue.texts >= self.max_batch:
            self._flush(model)
        elif self._running[model]:
            pass  # while a batch runs, requests gather; its end sends them as the next batch, with no window
        elif queue.timer is None:
            queue.timer = loop.call_later(self.window, self._flush, model)
        return future

    def _flush(self, model: str) -> None:
        """Hand everything waiting for `model` to one engine job; requests already gone are left out."""
        queue = self._queues.pop(model, None)  # not kept between batches: it holds the runner, which may be unloaded
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        batch = [p for p in queue.pending if not p.future.done()]
        if batch:
            self._running[model] += 1
            task = asyncio.create_task(self._run(model, queue.runner, batch), name=f"embed-batch-{model}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, model: str, runner: Any, batch: list[_Pending]) -> None:
        rows = None
        try:
            rows = await self._embed_batch(model, runner, batch)
        finally:
            self._running[model] -= 1
            if not self._running[model]:
                del self._running[model]
                # What gathered while this batch ran goes to the engine before this batch's answers are
                # written, so the model works while the event loop encodes and sends them.
                self._flush(model)
        if rows is not None:
            self._deliver(model, batch, rows)

    async def _embed_batch(self, model: str, runner: Any, batch: list[_Pending]) -> dict[str, Row] | None:
        texts = list(dict.fromkeys(text for p in batch for text in p.texts))  # a text asked twice is embedded once
        observe = self.metrics.embed_batch_size.labels(model).observe
        try:
            return await self.engine.call(lambda: _encode(runner, texts, self.max_batch, observe), self.timeout)
        except Exception as exc:  # the batch's failure is each of its requests' failure; the server goes on
            _fail(batch, exc)
            return None
        except BaseException:  # cancelled as the loop shuts down: nobody may wait for it forever
            _fail(batch, EngineStopped("the server is shutting down"))
            raise

    def _deliver(self, model: str, batch: list[_Pending], rows: dict[str, Row]) -> None:
        if self.cache.size:
            for text, (vector, tokens) in rows.items():
                self.cache.put((model, text), (_frozen(vector), tokens))
        for p in batch:
            if not p.future.done():  # a client that went away has cancelled its future
                p.future.set_result([rows[text] for text in p.texts])


def _encode(runner: Any, texts: list[str], max_batch: int, observe: Callable[[float], None]) -> dict[str, Row]:
    """On the inference thread: full-size unit vectors for `texts`, in model calls of at most `max_batch`."""
    rows: dict[str, Row] = {}
    for start in range(0, len(texts), max_batch):
        chunk = texts[start : start + max_batch]
        result = runner.embed(chunk)  # (n, D)
        observe(len(chunk))
        rows.update(zip(chunk, zip(result.vectors, result.token_counts, strict=True), strict=True))
    return rows


def _assemble(rows: list[Row], dimensions: int | None) -> Embeddings:
    import numpy as np

    vectors = np.stack([vector for vector, _ in rows])  # (N, D)
    return Embeddings(truncate(vectors, dimensions), tuple(tokens for _, tokens in rows))


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)


def _frozen(vector: np.ndarray) -> np.ndarray:
    # A copy, so the cache does not keep the whole batch's array alive; read-only, because it is shared.
    vector = vector.copy()
    vector.flags.writeable = False
    return vector
