"""The OpenAPI document, completed where Litestar cannot know the answers: OpenAI's error body on every
4xx/5xx (Litestar documents its own validation body, which this server never sends), the typed and the
streamed 200 bodies of the generation routes, /health's 503, and an example request per JSON endpoint.

JSON request bodies are described by msgspec's own schemas, the ones that validate them: Litestar's
rendering loses constraints (a `ge=0` bound disappears) and the `type` tags of content parts.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar.openapi.spec import (
    Example,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
)
from litestar.openapi.spec import Schema as Spec

from gemmacli.server.errors import ErrorBody
from gemmacli.server.schema.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from gemmacli.server.schema.completions import CompletionRequest, TextCompletion
from gemmacli.server.schema.embeddings import EmbeddingRequest


class Health(msgspec.Struct, omit_defaults=True):
    status: Literal["ok", "loading", "failed", "stopped"]
    models: list[str] | None = None  # when ok
    error: str | None = None  # when failed


ERRORS = {
    400: "Invalid request; `param` names the field",
    401: "Missing or invalid API key (when the server has keys)",
    404: "No such model served",
    413: "Request body too large",
    415: "Unsupported content type",
    429: "Too many requests waiting; retry after Retry-After seconds",
    500: "Internal error; the message carries the request id",
    503: "Out of memory (retry after Retry-After seconds), shutting down, or still loading",
    504: "The request took longer than the server's request timeout",
}
_INFERENCE = (400, 401, 404, 413, 415, 429, 500, 503, 504)
_STATUSES = {"/health": (500,), "/metrics": (500,), "/v1/models": (401, 500), "/v1/models/{model_id}": (401, 404, 500)}
# path -> (the whole answer, one streamed chunk)
_TYPED_200 = {
    "/v1/chat/completions": ("ChatCompletion", "ChatCompletionChunk"),
    "/v1/completions": ("TextCompletion", "TextCompletion"),
}
_EXAMPLES = {
    "/v1/chat/completions": {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 16,
    },
    "/v1/completions": {"model": "gemma-3-270m", "prompt": "Once upon a time", "max_tokens": 16},
    "/v1/embeddings": {"model": "all-minilm-l6-v2", "input": ["first text", "second text"]},
}
_RETRY = {"Retry-After": OpenAPIHeader(schema=Spec(type=OpenAPIType.INTEGER), description="Seconds to wait")}


def document(openapi: OpenAPI) -> None:
    """Complete Litestar's generated document in place (once; later calls change nothing)."""
    schemas = openapi.components.schemas
    if "ErrorBody" in schemas:
        return
    schemas.update(_schemas(ChatCompletionRequest, CompletionRequest, EmbeddingRequest))
    for name, schema in _schemas(ErrorBody, ChatCompletion, ChatCompletionChunk, TextCompletion, Health).items():
        schemas.setdefault(name, schema)
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "post"):
            if (operation := getattr(item, method, None)) is not None:
                _complete(path, operation.responses)
        if path in _EXAMPLES:
            item.post.request_body.content["application/json"].examples = _examples(_EXAMPLES[path])


def _complete(path: str, responses: dict) -> None:
    for status in [s for s in responses if s.startswith(("4", "5"))]:
        del responses[status]  # Litestar's ValidationException body
    for status in _STATUSES.get(path, _INFERENCE):
        headers = _RETRY if status in (429, 503) else None
        responses[str(status)] = OpenAPIResponse(ERRORS[status], headers=headers, content=_json("ErrorBody"))
    if path == "/health":
        responses["200"].content = _json("Health")
        responses["503"] = OpenAPIResponse("Loading, failed or stopped", content=_json("Health"))
    if path in _TYPED_200:
        whole, chunk = _TYPED_200[path]
        responses["200"].description = "The whole answer; with `stream: true`, server-sent events ending `[DONE]`"
        responses["200"].content = {**_json(whole), "text/event-stream": OpenAPIMediaType(schema=_event(chunk))}


def _event(chunk: str) -> dict:
    """One server-sent event (OpenAPI 3.1 describes each event of a stream): a chunk, an error, or [DONE]."""
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{chunk}"}, {"$ref": "#/components/schemas/ErrorBody"}]}
    json_text = {"type": "string", "contentMediaType": "application/json", "contentSchema": payload}
    data = {"anyOf": [{"const": "[DONE]"}, json_text]}
    return {"type": "object", "required": ["data"], "properties": {"data": data}}


def _examples(body: dict) -> dict[str, Example]:
    if "max_tokens" not in body:  # not a generation: nothing to stream
        return {"request": Example(value=body)}
    return {"whole": Example(value=body), "streamed": Example(value={**body, "stream": True})}


def _schemas(*types: type) -> dict[str, dict]:
    """JSON Schema dicts by component name (Litestar writes plain dicts out as they are)."""
    return msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")[1]


def _json(name: str) -> dict[str, OpenAPIMediaType]:
    return {"application/json": OpenAPIMediaType(schema=Reference(f"#/components/schemas/{name}"))}
