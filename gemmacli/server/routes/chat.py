"""POST /v1/chat/completions: the chat template, then the model's decoder, beside the model's other requests."""

from __future__ import annotations

from functools import partial

import anyio.to_thread
from litestar import Request, Response, post

from gemmacli.server import streaming
from gemmacli.server.schema.chat import ChatChunks, ChatCompletion, ChatCompletionRequest
from gemmacli.server.services import Services
from gemmacli.types import Message

ENDPOINT = "/v1/chat/completions"


@post(ENDPOINT, status_code=200)
async def chat_completions(data: ChatCompletionRequest, services: Services, request: Request) -> Response:
    """OpenAI's chat completions; `"stream": true` answers with server-sent events."""
    # The whole request is checked, and its media decoded, before a model is loaded or waited for.
    data.check_limits(services.request_limits)  # counts images and text before any is decoded
    params, tools, thinking = data.to_params(), data.to_tools(), data.to_thinking()
    data.check_reads(services.models.reads(data.model), data.model)
    messages = await _messages(data, services)
    model = await services.models.acquire(data.model, "chat", request.scope)
    runner = model.runner
    # The chat template runs on the inference thread: tokenizers and processors are only ever touched there.
    prompts = lambda: [runner.encode_chat(messages, tools, thinking=thinking)]  # noqa: E731
    run = await streaming.start(services, model, ENDPOINT, prompts, params, request.receive, n=data.choices)
    if data.stream:
        return streaming.sse(run, ChatChunks(model.id, data.include_usage, data.choices), request)
    completions = await run.collect(request.receive)
    return Response(ChatCompletion.build(model.id, completions, run.usage, logprobs=bool(data.logprobs)))


async def _messages(data: ChatCompletionRequest, services: Services) -> list[Message]:
    """Decoding images and audio is real CPU work, fetching them is blocking I/O: keep both off the event loop
    (and off the engine thread)."""
    convert = partial(data.to_messages, services.media_limits, remote=services.remote_media)
    return await anyio.to_thread.run_sync(convert) if data.has_media else convert()
