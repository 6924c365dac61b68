"""POST /v1/embeddings: OpenAI's embeddings endpoint over an EmbedRunner, through the embedding batcher."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar import Request, post

from gemmacli.server.metrics import Metrics
from gemmacli.server.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from gemmacli.server.services import Services

ENDPOINT = "/v1/embeddings"


@post(ENDPOINT, status_code=200)
async def embeddings(data: EmbeddingRequest, services: Services, request: Request) -> EmbeddingResponse:
    """Embed texts or token ids; vectors are unit length, as floats or base64 float32 (`encoding_format`).

    Token ids must be the model's own: they are decoded to text with its tokenizer and embedded as that text.
    """
    limits = services.request_limits
    data.check_limits(limits)
    started = time.perf_counter()
    async with asyncio.timeout(services.settings.request_timeout):  # waiting for a load or a batch included
        model = await services.models.acquire(data.model, "embed", request.scope)
        texts = await _texts(services, data, model.runner)
        result = await services.embed_batcher.embed(model.id, model.runner, texts, data.dimensions)
    # The batch embeds an over-long input from its window (it never fails the others); refusing it is ours.
    window = getattr(model.runner, "max_tokens", None)  # None: a runner that knows no window
    result = result if window is None else data.fit(result, window, model.id, limits.embed_truncate)
    _observe(services.metrics, model.id, started, result.total_tokens)
    return EmbeddingResponse.build(model.id, result, data.encoding_format)


async def _texts(services: Services, data: EmbeddingRequest, runner: Any) -> list[str]:
    """Strings as sent; token ids are decoded on the inference thread, the only one that uses the tokenizer."""
    if data.token_ids:
        return await services.engine.call(lambda: data.texts(runner.tokenizer))
    return data.texts(tokenizer=None)


def _observe(metrics: Metrics, model: str, started: float, prompt_tokens: int) -> None:
    metrics.model_requests.labels(model, ENDPOINT).inc()
    metrics.e2e.labels(model).observe(time.perf_counter() - started)
    metrics.prompt_tokens.labels(model).inc(prompt_tokens)
