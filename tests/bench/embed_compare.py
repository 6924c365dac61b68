"""Embeddings served to concurrent clients against the same model encoding in process, in batches.

Each client sends one sentence per request, the hardest case for a server: throughput then depends on
the server gathering concurrent requests into one model call. Sentences are all different, so the
server's cache of recent inputs never answers for the model. Requests ask for base64 vectors, which
is what the official openai client sends unless told otherwise.

The two sides take turns, a slice of the sentences each, and the ratio is the median of the rounds'
ratios: on a shared or throttled machine the speed drifts by tens of percent within a minute, and
measuring the two sides minutes apart would compare the drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from gemmacli.bench import WORDS


@dataclass(frozen=True)
class EmbedComparison:
    model: str
    sentences: int
    batch: int  # in-process encode batch size
    concurrency: int  # HTTP clients
    rounds: int
    in_process: float  # sentences/s, median over the rounds
    served: float  # sentences/s, median over the rounds
    ratio: float  # median of each round's served / in_process
    # CPU time per sentence (ms, medians), every thread counted: where the served case's cores went
    cpu_in_process: float
    cpu_server: float | None  # None without the server's pid
    cpu_client: float


def compare_embeddings(
    url: str,
    folder: Path,
    *,
    concurrency: int = 16,
    sentences: int = 2048,
    batch: int = 32,
    rounds: int = 4,
    server_pid: int | None = None,
) -> EmbedComparison:
    texts = make_sentences(sentences)
    model = asyncio.run(first_model(url))
    runner = load_runner(folder)
    runner.embed(texts[:batch], batch_size=batch)  # warm-ups, not counted
    asyncio.run(serve_rate(url, model, texts[:concurrency], concurrency))
    local = []
    served = []
    cpu = {"in_process": [], "server": [], "client": []}
    for i in range(rounds):
        chunk = texts[i * sentences // rounds : (i + 1) * sentences // rounds]
        with cpu_ms_per(len(chunk), cpu["in_process"]):
            local.append(encode_rate(runner, chunk, batch))
        with cpu_ms_per(len(chunk), cpu["client"]), cpu_ms_per(len(chunk), cpu["server"], server_pid):
            served.append(asyncio.run(serve_rate(url, model, chunk, concurrency)))
    median = statistics.median
    ratio = median(s / p for s, p in zip(served, local, strict=True))
    return EmbedComparison(
        model=model,
        sentences=sentences,
        batch=batch,
        concurrency=concurrency,
        rounds=rounds,
        in_process=median(local),
        served=median(served),
        ratio=ratio,
        cpu_in_process=median(cpu["in_process"]),
        cpu_server=median(cpu["server"]) if server_pid else None,
        cpu_client=median(cpu["client"]),
    )


@contextlib.contextmanager
def cpu_ms_per(count: int, into: list[float], pid: int | None = None):
    """Append the CPU milliseconds per item that this process (or process `pid`) spends inside the block."""
    clock = time.process_time if pid is None else lambda: _process_cpu_seconds(pid)
    start = clock()
    yield
    into.append((clock() - start) * 1000 / count)


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads


def make_sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))) for i in range(count)]


async def first_model(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        models = (await client.get("/v1/models")).json()["data"]
    return models[0]["id"]


async def serve_rate(url: str, model: str, texts: list[str], concurrency: int) -> float:
    """Closed loop: `concurrency` clients, each posting its next sentence when the last one is answered."""
    queue = iter(texts)
    limits = httpx.Limits(max_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for text in queue:  # shared iterator: no await between taking a sentence and sending it
            body = {"model": model, "input": text, "encoding_format": "base64"}
            r = await client.post("/v1/embeddings", json=body)
            if r.status_code != 200:
                raise SystemExit(f"error: embeddings request failed: HTTP {r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - start)


def load_runner(folder: Path):
    from gemmacli.device import placement
    from gemmacli.runners.embed import EmbedRunner

    return EmbedRunner.load(folder, placement("cpu", "auto"), name=folder.name)


def encode_rate(runner, texts: list[str], batch: int) -> float:
    """The same sentences through EmbedRunner in this process, `batch` at a time."""
    start = time.perf_counter()
    runner.embed(texts, batch_size=batch)
    return len(texts) / (time.perf_counter() - start)
