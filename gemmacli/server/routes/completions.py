"""POST /v1/completions: raw text (or token ids) in, no chat template, the same decoder as chat.

Several prompts are all tokenized and inserted first, then decode together in the model's shared batch
beside other requests; streamed, their chunks interleave, each carrying its choice index.
"""

from __future__ import annotations

from litestar import Request, Response, post

from gemmacli.errors import InvalidParamError
from gemmacli.server import streaming
from gemmacli.server.schema.completions import CompletionChunks, CompletionRequest, TextCompletion, TextPrompt
from gemmacli.server.services import Services

ENDPOINT = "/v1/completions"


@post(ENDPOINT, status_code=200)
async def completions(data: CompletionRequest, services: Services, request: Request) -> Response:
    """OpenAI's (legacy) completions; `"stream": true` answers with server-sent events."""
    # The whole request is checked before a model is loaded or waited for.
    data.check_limits(services.request_limits)
    params, texts = data.to_params(), data.to_prompts()
    model = await services.models.acquire(data.model, "chat", request.scope)
    runner = model.runner
    prompts = lambda: [encode(runner, text) for text in texts]  # noqa: E731  (on the inference thread)
    try:
        run = await streaming.start(services, model, ENDPOINT, prompts, params, request.receive, n=data.choices)
    except InvalidParamError as exc:
        exc.param = "prompt" if exc.param == "messages" else exc.param  # the decoder speaks of chat messages
        raise
    if data.stream:
        chunks = CompletionChunks(model.id, data.include_usage, logprobs=data.logprobs is not None)
        return streaming.sse(run, chunks, request)
    choices = await run.collect(request.receive)
    return Response(TextCompletion.build(model.id, choices, run.usage, logprobs=data.logprobs is not None))


def encode(runner, prompt: TextPrompt):
    """A string goes through the tokenizer (which adds <bos>); token ids are fed exactly as given."""
    return runner.encode_text(prompt) if isinstance(prompt, str) else runner.encode_ids(prompt)
