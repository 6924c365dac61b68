"""POST /v1/completions: raw text (or token ids) in, no chat template, the same ChatRunner.generate.

Several prompts are all tokenized first, then generated one after another in a single engine job;
streamed, their chunks carry the choice index, and choice i+1 starts after choice i has finished.
"""

from __future__ import annotations

from itertools import chain

from litestar import Request, Response, post

from gemmacli.errors import InvalidParamError
from gemmacli.runners.chat import ChatRunner, Prompt
from gemmacli.server import streaming
from gemmacli.server.engine import Batched
from gemmacli.server.schema.completions import CompletionChunks, CompletionRequest, TextCompletion, TextPrompt
from gemmacli.server.services import Services

ENDPOINT = "/v1/completions"


@post(ENDPOINT, status_code=200)
async def completions(data: CompletionRequest, services: Services, request: Request) -> Response:
    """OpenAI's (legacy) completions; `"stream": true` answers with server-sent events."""
    data.check_limits(services.request_limits)
    served = await services.models.acquire(data.model, "chat", request.scope)
    params, prompts = data.to_params(), data.to_prompts()
    runner = served.runner

    def work(cancelled):
        # Runs on the engine thread. All prompts are encoded first, so a bad one fails before any output.
        encoded = [encode(runner, p) for p in prompts]
        if len(encoded) == 1:  # decodes in the model's shared batch, beside other requests
            return Batched(runner, runner.start(encoded[0], params, cancelled), runner.new_batch)
        return chain.from_iterable(runner.generate(p, params, cancelled=cancelled) for p in encoded)

    try:
        run = await streaming.start(services, served.id, ENDPOINT, work, request.receive)
    except InvalidParamError as exc:
        exc.param = "prompt" if exc.param == "messages" else exc.param  # the runner speaks of chat messages
        raise
    if data.stream:
        return streaming.sse(run, CompletionChunks(served.id, data.include_usage), request)
    choices = await run.collect(request.receive)
    return Response(TextCompletion.build(served.id, choices, run.usage))


def encode(runner: ChatRunner, prompt: TextPrompt) -> Prompt:
    """A string goes through the tokenizer (which adds <bos>); token ids are fed exactly as given."""
    if isinstance(prompt, str):
        return runner.encode_text(prompt)
    import torch

    vocab = runner.model.config.get_text_config().vocab_size
    if not all(0 <= t < vocab for t in prompt):
        raise InvalidParamError(f"prompt token ids must be between 0 and {vocab - 1}", param="prompt")
    return Prompt(torch.tensor([prompt], device=runner.model.device), {})  # (1, T)
