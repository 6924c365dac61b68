"""POST /v1/chat/completions: the chat template, then the same ChatRunner.generate the CLI uses."""

from __future__ import annotations

from functools import partial

import anyio.to_thread
from litestar import Request, Response, post

from gemmacli.server import streaming
from gemmacli.server.engine import Batched
from gemmacli.server.schema.chat import ChatChunks, ChatCompletion, ChatCompletionRequest
from gemmacli.server.services import Services
from gemmacli.types import Message

ENDPOINT = "/v1/chat/completions"


@post(ENDPOINT, status_code=200)
async def chat_completions(data: ChatCompletionRequest, services: Services, request: Request) -> Response:
    """OpenAI's chat completions; `"stream": true` answers with server-sent events."""
    data.check_limits(services.request_limits)  # counts images and text before any is decoded
    served = await services.models.acquire(data.model, "chat", request.scope)
    params = data.to_params()
    messages = await _messages(data, services)
    runner = served.runner

    def work(cancelled):
        # Runs on the engine thread: tokenizers and processors are only ever touched there. The request
        # then decodes in the model's shared batch, one token per engine step, beside the others.
        return Batched(runner, runner.start(runner.encode_chat(messages), params, cancelled), runner.new_batch)

    run = await streaming.start(services, served.id, ENDPOINT, work, request.receive)
    if data.stream:
        return streaming.sse(run, ChatChunks(served.id, data.include_usage), request)
    (completion,) = await run.collect(request.receive)
    return Response(ChatCompletion.build(served.id, completion))


async def _messages(data: ChatCompletionRequest, services: Services) -> list[Message]:
    """Decoding images and audio is real CPU work, fetching them is blocking I/O: keep both off the event loop
    (and off the engine thread)."""
    convert = partial(data.to_messages, services.media_limits, remote=services.remote_media)
    return await anyio.to_thread.run_sync(convert) if data.has_media else convert()
