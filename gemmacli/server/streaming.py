"""What /v1/chat/completions and /v1/completions share: run a generation on the engine, time it, then
collect it into one response or stream it as server-sent events.

Error contract: everything up to the first generated piece (unknown model, bad parameter, prompt too
long, queue full, timeout while queued) is an ordinary HTTP error, because `start` waits for that first
piece before the route builds its response. An error after the stream began cannot change the status
any more: it is sent as one `data: {"error": {...}}` event in OpenAI's shape, and the stream ends there
without `data: [DONE]` (the openai client raises APIError on such an event).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from litestar import Request
from litestar.response import Stream

from gemmacli.server import errors
from gemmacli.server.engine import EngineStopped
from gemmacli.server.loaded import LoadedModel
from gemmacli.server.services import Services
from gemmacli.server.sse import DONE, event, stream_response
from gemmacli.types import Completion, Delta, GenParams, TokenLogprob, ToolCall, Usage

Receive = Callable[[], Awaitable[dict]]  # the ASGI receive channel
T = TypeVar("T")


class Chunks(Protocol):
    """How an endpoint spells its stream: chunks before, for, and after the deltas."""

    def opening(self) -> list[Any]: ...
    def on_delta(self, index: int, delta: Delta) -> list[Any]: ...
    def closing(self, usage: Usage) -> list[Any]: ...


class Run:
    """A generation on the engine whose first delta has arrived.

    Several choices (several prompts, n per prompt) decode together, so their deltas interleave; each delta
    comes with its choice's index, and each choice ends with the delta that carries its finish_reason and usage.
    The n choices of a prompt share it: its tokens count once.
    """

    def __init__(
        self,
        services: Services,
        model: str,
        endpoint: str,
        rest: AsyncIterator[tuple[int, Delta]],
        first: tuple[int, Delta],
        started: float,
        choices: int,
        n: int = 1,
    ):
        self.metrics = services.metrics
        self.model = model
        self.endpoint = endpoint
        self.choices = choices
        self.n = n
        self._rest = rest
        self._first = first
        self._started = started
        self._last = time.perf_counter()
        self.usage = Usage(0, 0)  # summed over the finished choices
        self.metrics.ttft.labels(model).observe(self._last - started)

    async def deltas(self) -> AsyncIterator[tuple[int, Delta]]:
        """(choice index, delta) pairs; closing this early cancels the engine job."""
        pair, counted = self._first, Counter()
        try:
            while True:
                index, delta = pair
                counted[index] += self._count(delta, counted[index], first_of_prompt=index % self.n == 0)
                yield pair
                try:
                    pair = await anext(self._rest)
                except StopAsyncIteration:
                    break
                self._tick(pair[1])
            self.metrics.e2e.labels(self.model).observe(time.perf_counter() - self._started)
            self.metrics.model_requests.labels(self.model, self.endpoint).inc()
        finally:
            await self._rest.aclose()

    def _count(self, delta: Delta, counted: int, first_of_prompt: bool) -> int:
        """Count tokens as they stream (so /metrics shows a generation live, and where it stopped); the
        final delta tops the choice up to the runner's exact count (held-back tokens carry no delta)."""
        tokens = len(delta.token_ids)
        if delta.usage is not None:
            tokens = max(tokens, delta.usage.completion_tokens - counted)
            usage = delta.usage if first_of_prompt else Usage(0, delta.usage.completion_tokens)
            self.metrics.prompt_tokens.labels(self.model).inc(usage.prompt_tokens)
            self.usage = _add(self.usage, usage)
        self.metrics.generation_tokens.labels(self.model).inc(tokens)
        return tokens

    def _tick(self, delta: Delta) -> None:
        now = time.perf_counter()
        if delta.finish_reason is None:  # a final delta may come without a forward pass: not a token's latency
            self.metrics.itl.labels(self.model).observe(now - self._last)
        self._last = now

    async def collect(self, receive: Receive | None = None) -> list[Completion]:
        """Every choice, whole, in index order. With `receive` (the ASGI one), a client that hangs up meanwhile
        cancels the generation instead of leaving the engine busy for nobody."""
        return await _unless_hangup(self._collect(), receive)

    async def _collect(self) -> list[Completion]:
        parts: list[list[str]] = [[] for _ in range(self.choices)]
        ids: list[list[int]] = [[] for _ in range(self.choices)]
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(self.choices)]
        calls: list[list[ToolCall]] = [[] for _ in range(self.choices)]
        thoughts: list[list[str]] = [[] for _ in range(self.choices)]
        out: dict[int, Completion] = {}
        async with contextlib.aclosing(self.deltas()) as deltas:
            async for index, delta in deltas:
                parts[index].append(delta.text)
                ids[index].extend(delta.token_ids)
                logprobs[index].extend(delta.logprobs)
                calls[index].extend(delta.tool_calls)
                thoughts[index].append(delta.reasoning)
                if delta.finish_reason is not None:
                    text, reason, usage = "".join(parts[index]), delta.finish_reason, delta.usage
                    made, thought = tuple(calls[index]), "".join(thoughts[index])
                    out[index] = Completion(
                        text, tuple(ids[index]), reason, usage, tuple(logprobs[index]), made, thought
                    )
        return [out[i] for i in sorted(out)]


async def start(
    services: Services,
    model: LoadedModel,
    endpoint: str,
    prompts: Callable[[], Sequence[Any]],
    params: GenParams,
    receive: Receive | None = None,
    n: int = 1,
) -> Run:
    """Decode `prompts` (encoded on the inference thread), `n` choices each, in the decoder of `model`'s runner,
    beside its other requests, and wait for the first delta (see the error contract above). A client that hangs
    up while its request waits or prefills is noticed through `receive`."""
    started, encoded = time.perf_counter(), []

    def encode() -> Sequence[Any]:
        encoded[:] = prompts()
        return encoded

    decoder = model.runner.decoder
    rest = services.engine.generate(decoder, encode, params, n, timeout=services.settings.request_timeout)

    async def first() -> tuple[int, Delta]:
        try:
            return await anext(rest)  # an exception here has already closed `rest` and cancelled the job
        except StopAsyncIteration:
            raise EngineStopped("the generation ended without a result") from None

    pair = await _unless_hangup(first(), receive)
    return Run(services, model.id, endpoint, rest, pair, started, len(encoded) * n, n)


def sse(run: Run, chunks: Chunks, request: Request) -> Stream:
    return stream_response(_events(run, chunks, request.scope.get("state", {}).get("request_id")))


async def _events(run: Run, chunks: Chunks, request_id: str | None) -> AsyncIterator[bytes]:
    try:
        for chunk in chunks.opening():
            yield event(chunk)
        async with contextlib.aclosing(run.deltas()) as deltas:
            async for index, delta in deltas:
                for chunk in chunks.on_delta(index, delta):
                    yield event(chunk)
        for chunk in chunks.closing(run.usage):
            yield event(chunk)
        yield DONE
    except Exception as exc:  # not CancelledError: a client that left gets nothing more
        yield event(errors.to_api_error(exc, request_id).body())


async def _unless_hangup(awaitable: Awaitable[T], receive: Receive | None) -> T:
    """Await `awaitable`, unless the client disconnects first: then cancel it (which closes the engine
    stream and so cancels the job) and answer 499, as nginx logs a client that left."""
    if receive is None:
        return await awaitable
    task, hangup = asyncio.ensure_future(awaitable), asyncio.ensure_future(_hangup(receive))
    try:
        done, _ = await asyncio.wait({task, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        task.cancel()  # a no-op once it is done
        await asyncio.gather(hangup, task, return_exceptions=True)
    if task not in done:
        raise errors.APIError(499, "the client closed the connection", code="client_closed")
    return task.result()


async def _hangup(receive: Receive) -> None:
    """Returns when the client disconnects (the body was read already, so nothing else arrives)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _add(total: Usage, more: Usage) -> Usage:
    return Usage(
        total.prompt_tokens + more.prompt_tokens,
        total.completion_tokens + more.completion_tokens,
        total.image_tokens + more.image_tokens,
        total.reasoning_tokens + more.reasoning_tokens,
    )
