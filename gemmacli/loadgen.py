"""`gemmacli bench --url`: load any OpenAI-compatible server over HTTP and measure it as vLLM does.

Metrics follow vLLM's benchmark_serving.py, so numbers compare with peers measured by it: TTFT is from
sending a request to its first content chunk, ITL the gaps between successive content chunks (pooled
over all requests), TPOT = (e2e − TTFT) / (output tokens − 1) per request, throughputs are totals over
the wall time of a level. Output tokens are what the server says it sent (usage.completion_tokens), else
the number of content chunks: peers differ on stopping at EOS, so we count what came rather than force it.

Measurement only: `run_load` returns dataclasses (the per-request and per-level ones live in gemmacli.bench)
and reports progress through a callback; the CLI draws.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from gemmacli.bench import Level, LevelResult, RequestResult, build_prompts, summarize_level
from gemmacli.errors import GemmacliError

ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


@dataclass(frozen=True)
class LoadConfig:
    url: str  # base URL, without /v1
    model: str | None = None  # None: the first (chat) model the server lists
    endpoint: str = "chat"  # "chat" or "completions"
    concurrency: tuple[int, ...] = (1,)
    rates: tuple[float, ...] = ()  # requests/s, one open-loop level each; empty: closed loop per concurrency
    max_in_flight: int | None = None  # cap on the open loop's requests in flight (None: unbounded)
    requests: int | None = None  # per level; None: see `default_requests`
    max_tokens: int = 64
    prompt_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0  # of the prompts and of the arrival times
    warmup: int = 1  # requests sent one by one before measuring, not counted
    timeout: float = 600.0  # seconds per request
    api_key: str | None = field(default=None, repr=False)

    def levels(self) -> tuple[Level, ...]:
        if self.rates:
            return tuple(Level(self.max_in_flight, r, self.requests or default_requests(None, r)) for r in self.rates)
        return tuple(Level(c, None, self.requests or default_requests(c, None)) for c in self.concurrency)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "api_key"}  # a key never lands in a report file


@dataclass(frozen=True)
class LoadReport:
    url: str
    model: str
    endpoint: str
    config: LoadConfig
    results: tuple[LevelResult, ...]

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.results)

    @property
    def first_error(self) -> str | None:
        return next((r.first_error for r in self.results if r.first_error), None)

    def to_json(self) -> dict:
        results = [asdict(r) for r in self.results]
        return {
            "url": self.url,
            "model": self.model,
            "endpoint": self.endpoint,
            "failed": self.failed,
            "config": self.config.to_json(),
            "results": results,
        }


# -- pure helpers


def default_requests(concurrency: int | None, rate: float | None) -> int:
    """Enough for every worker to send a few (closed loop), or about 10 s of arrivals (open loop); ≥ 16."""
    return max(16, 4 * concurrency) if rate is None else max(16, math.ceil(10 * rate))


def request_body(config: LoadConfig, model: str, prompt: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def error_message(payload: Any) -> str:
    """The message of an OpenAI error body ({"error": {"message"}}), or of llama.cpp's bare error object."""
    err = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(err, dict):
        return str(err.get("message") or json.dumps(err))
    return str(err)


def describe(exc: BaseException) -> str:
    """httpx errors often print as an empty string (ReadTimeout()): name the class then."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- server-sent events


class SSEParser:
    """Bytes in as they arrive, events out as (type, data), whatever the reads split.

    One event per `data:` line: OpenAI-compatible servers never spread a payload over several lines, and
    waiting for the blank line would only delay the clock. Lines end in \\n or \\r\\n. llama.cpp sends
    stream errors as an `error: {...}` line, which the SSE spec would ignore: here it is an "error" event.
    """

    def __init__(self) -> None:
        self._buffer, self._type = b"", "message"

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        events = []
        for raw in lines:
            # Decoded per whole line, so a UTF-8 character split across two reads comes out intact.
            name, _, value = raw.removesuffix(b"\r").decode("utf-8", errors="replace").partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self._type = value
            elif name in ("data", "error"):
                events.append(("error" if name == "error" else self._type, value))
            elif not name and not value:
                self._type = "message"  # a blank line ends the event; a comment (": ping") changes nothing
        return events


class Trace:
    """One streamed response as its events arrive: content timings, usage, [DONE] or an error."""

    def __init__(self, start: float, endpoint: str = "chat"):
        self.start, self.endpoint = start, endpoint
        self.first: float | None = None
        self.last = self.end = start  # last content chunk; last event of any kind
        self.itl: list[float] = []
        self.chunks = 0
        self.usage_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.done = False
        self.finish_reason: str | None = None
        self.error: str | None = None

    def on_event(self, kind: str, data: str, now: float) -> None:
        self.end = now
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            payload = json.loads(data)
        except ValueError:
            self.error = f"not JSON in the stream: {data[:80]!r}"
            return
        if kind == "error" or not isinstance(payload, dict) or payload.get("error") is not None:
            self.error = error_message(payload)
            return
        if isinstance(usage := payload.get("usage"), dict):
            self.usage_tokens = usage.get("completion_tokens", self.usage_tokens)
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
        choice = (payload.get("choices") or [{}])[0]
        if isinstance(choice, dict) and choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if self._content(payload):
            if self.first is None:
                self.first = now
            else:
                self.itl.append(now - self.last)
            self.last, self.chunks = now, self.chunks + 1

    def _content(self, payload: dict) -> str:
        """The text a chunk carries; role-only and finish chunks carry none and are not tokens."""
        choice = (payload.get("choices") or [{}])[0]
        if self.endpoint == "completions":
            return choice.get("text") or ""
        delta = choice.get("delta") or {}
        # Reasoning models stream their thinking in a field of its own; those are output tokens too.
        return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""

    @property
    def finished(self) -> bool:
        return self.done or self.error is not None

    def result(self) -> RequestResult:
        end, error = self.end, self.error
        # Some servers (transformers serve) end the stream after the finish chunk without [DONE];
        # the openai client accepts that too.
        if error is None and not self.done and self.finish_reason is None:
            error = "the stream ended without data: [DONE]"
        elif error is None and self.first is None:
            error = "the stream carried no content"  # as vLLM: no first token, no TTFT
        if error is not None:
            return RequestResult(False, end - self.start, error=error)
        from_usage = self.usage_tokens is not None
        tokens = self.usage_tokens if from_usage else self.chunks
        return RequestResult(
            True, end - self.start, self.first - self.start, tuple(self.itl), tokens, self.prompt_tokens, from_usage
        )


# -- HTTP


Progress = Callable[[Level, int], None]  # (level, requests done so far); 0 when the level starts


class _Sender:
    """Sends streaming requests over one shared client and counts those in flight."""

    def __init__(self, client: httpx.AsyncClient, path: str, endpoint: str):
        self.client = client
        self.path = path
        self.endpoint = endpoint
        self.in_flight = self.peak = 0

    async def send(self, body: dict[str, Any]) -> RequestResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        start = time.perf_counter()
        try:
            return await self._stream(body, start)
        except httpx.HTTPError as exc:
            return RequestResult(False, time.perf_counter() - start, error=describe(exc))
        finally:
            self.in_flight -= 1

    async def _stream(self, body: dict[str, Any], start: float) -> RequestResult:
        async with self.client.stream("POST", self.path, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", errors="replace")
                return RequestResult(False, time.perf_counter() - start, error=http_error(response.status_code, text))
            parser, trace = SSEParser(), Trace(start, self.endpoint)
            async for chunk in response.aiter_bytes():
                if trace.finished:
                    continue  # read to the end all the same, so the connection goes back to the pool
                now = time.perf_counter()  # one clock reading per network read: its events arrived together
                for kind, data in parser.feed(chunk):
                    trace.on_event(kind, data, now)
            if not trace.finished:
                trace.end = time.perf_counter()  # the server hung up before [DONE]
        return trace.result()


def http_error(status: int, text: str) -> str:
    try:
        message = error_message(json.loads(text))
    except ValueError:
        message = " ".join(text.split())[:200] or "(empty body)"
    return f"HTTP {status}: {message}"


async def closed_loop(sender: _Sender, level: Level, bodies: list[dict], on_done: Callable[[], None]) -> list:
    """`concurrency` workers, each sending its next request as soon as the previous one ends."""
    results: list[RequestResult | None] = [None] * len(bodies)
    queue = iter(enumerate(bodies))  # shared: no await between a worker's `next` and its send, so no races

    async def worker() -> None:
        for i, body in queue:
            results[i] = await sender.send(body)
            on_done()

    await asyncio.gather(*(worker() for _ in range(min(level.concurrency or 1, len(bodies)))))
    return results


async def open_loop(sender: _Sender, level: Level, bodies: list[dict], seed: int, on_done: Callable[[], None]) -> list:
    """Poisson arrivals: seeded exponential gaps, each request sent on schedule whether or not others ended;
    a cap makes late arrivals wait for a free slot (their clock starts when they are sent, as in vLLM)."""
    rng, loop = random.Random(seed), asyncio.get_running_loop()
    slots = asyncio.Semaphore(level.concurrency) if level.concurrency else None

    async def one(body: dict) -> RequestResult:
        async with slots or contextlib.nullcontext():
            result = await sender.send(body)
        on_done()
        return result

    tasks, due = [], loop.time()
    for body in bodies:
        await asyncio.sleep(max(0.0, due - loop.time()))  # against the schedule, so sleeps' overshoot does not add up
        tasks.append(asyncio.create_task(one(body)))
        due += rng.expovariate(level.rate)
    return list(await asyncio.gather(*tasks))


async def preflight(client: httpx.AsyncClient, url: str, model: str | None) -> str:
    """Fail once, readably, when the server is not there; pick a model when none was named."""
    try:
        response = await client.get("/v1/models")
    except httpx.TransportError as exc:
        raise GemmacliError(f"cannot reach {url}: {describe(exc)}") from None
    if model:
        return model  # the list is only a convenience: a peer without it (or behind a key) still gets benchmarked
    if response.status_code != 200:
        answer = http_error(response.status_code, response.text)
        raise GemmacliError(f"{url}/v1/models answered {answer}; name a model with -m")
    try:
        listed = [c for c in response.json()["data"] if isinstance(c, dict)]
    except (ValueError, KeyError, TypeError):
        raise GemmacliError(
            f"{url}/v1/models answered something else than a model list; name a model with -m"
        ) from None
    # Our server names each model's task (the first may embed); other servers list only what they generate with.
    chat = [c["id"] for c in listed if c.get("id") and c.get("task", "chat") == "chat"]
    if not chat:
        raise GemmacliError(f"{url} lists no chat models; name one with -m")
    return chat[0]


async def run_load_async(
    config: LoadConfig, on_progress: Progress, transport: httpx.AsyncBaseTransport | None = None
) -> LoadReport:
    levels = config.levels()
    in_flight = max((lv.concurrency or 0) for lv in levels) or None  # None: an uncapped open loop
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    timeout = httpx.Timeout(config.timeout, connect=30.0)
    client = httpx.AsyncClient(
        base_url=config.url, headers=headers, limits=limits, timeout=timeout, transport=transport
    )
    async with client:
        model = await preflight(client, config.url, config.model)
        sender = _Sender(client, ENDPOINTS[config.endpoint], config.endpoint)
        # Every request gets a prompt of its own, across levels too: a prefix cache (vLLM, llama.cpp)
        # must not make a later level look faster for having seen the same prompts.
        total = config.warmup + sum(lv.requests for lv in levels)
        prompts = iter(build_prompts(total, config.prompt_tokens, config.seed))
        for _ in range(config.warmup):
            await sender.send(request_body(config, model, next(prompts)))  # failures show up in the measured run
        results = []
        for level in levels:
            bodies = [request_body(config, model, next(prompts)) for _ in range(level.requests)]
            results.append(await _measure(sender, level, bodies, config.seed, on_progress))
    return LoadReport(config.url, model, config.endpoint, config, tuple(results))


async def _measure(sender: _Sender, level: Level, bodies: list[dict], seed: int, on_progress: Progress) -> LevelResult:
    counter = itertools.count(1)
    on_done = lambda: on_progress(level, next(counter))  # noqa: E731
    on_progress(level, 0)
    sender.peak, start = 0, time.perf_counter()
    if level.rate is None:
        results = await closed_loop(sender, level, bodies, on_done)
    else:
        results = await open_loop(sender, level, bodies, seed, on_done)
    return summarize_level(level, results, time.perf_counter() - start, sender.peak)


def run_load(
    config: LoadConfig,
    on_progress: Progress = lambda level, done: None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadReport:
    """Warm up, then measure each level in turn; raises GemmacliError when the server cannot be reached.
    `transport` replaces the network (tests plug in a fake server there)."""
    return asyncio.run(run_load_async(config, on_progress, transport))


def parse_levels(text: str, kind: type[int] | type[float], example: str) -> tuple:
    """'1,8,32' -> (1, 8, 32), or floats for rates; ValueError with a readable message otherwise."""
    values = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = kind(part)
        except ValueError:
            value = 0
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{part!r} is not valid here: use positive numbers like {example}")
        values.append(value)
    if not values:
        raise ValueError(f"give values like {example}")
    return tuple(values)
