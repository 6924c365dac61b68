"""Embeddings served to concurrent clients against the same model encoding in process, in batches.

Each client sends one sentence per request, the hardest case for a server: throughput then depends on
the server gathering concurrent requests into one model call. Sentences are all different, so the
server's cache of recent inputs never answers for the model.
"""

from __future__ import annotations

import asyncio
import random
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
    in_process: float  # sentences/s
    served: float  # sentences/s


def compare_embeddings(url: str, folder: Path, *, concurrency: int = 16, sentences: int = 1024, batch: int = 32):
    texts = make_sentences(sentences)
    model = asyncio.run(first_model(url))
    asyncio.run(serve_rate(url, model, texts[:concurrency], concurrency))  # warm-up, not counted
    served = asyncio.run(serve_rate(url, model, texts, concurrency))
    in_process = encode_rate(folder, texts, batch)
    return EmbedComparison(model, sentences, batch, concurrency, in_process, served)


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
            r = await client.post("/v1/embeddings", json={"model": model, "input": text})
            if r.status_code != 200:
                raise SystemExit(f"error: embeddings request failed: HTTP {r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - start)


def encode_rate(folder: Path, texts: list[str], batch: int) -> float:
    """The same sentences through EmbedRunner in this process, `batch` at a time (after one warm-up batch)."""
    from gemmacli.device import placement
    from gemmacli.runners.embed import EmbedRunner

    runner = EmbedRunner.load(folder, placement("cpu", "auto"), name=folder.name)
    runner.embed(texts[:batch], batch_size=batch)
    start = time.perf_counter()
    runner.embed(texts, batch_size=batch)
    return len(texts) / (time.perf_counter() - start)
