"""Schema fuzzing: schemathesis sends generated requests to every operation of the app's own OpenAPI
document and checks each answer: never a 5xx, a documented status, a documented content type, a body
that matches the documented schema (OpenAI's error body for every 4xx).

The real app and real runners on 127.0.0.1: the tiny random-weight Gemma 3 vision model stands in for
the chat model (same tokenizer, template and code paths, a fraction of the cost), with generations cut
to a few tokens, since a fuzzer's max_tokens would otherwise run to the end of the context.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow
# Per operation and mode: about a minute in all on two busy cores; raise it for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("GEMMACLI_FUZZ_EXAMPLES", 25))
FUZZ_RANDOM = os.environ.get("GEMMACLI_FUZZ_RANDOM", "") not in ("", "0")
MAX_TOKENS = 4
MODELS = {
    "/v1/chat/completions": "tiny-chat",
    "/v1/completions": "tiny-chat",
    "/v1/embeddings": "all-minilm-l6-v2",
    "/v1/audio/transcriptions": "whisper-tiny.en",
    "/v1/audio/translations": "whisper-tiny.en",
}
EXAMPLE_MODELS = ("gemma-3-270m", "all-minilm-l6-v2")  # what the document's examples name
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
examples: Counter[str] = Counter()  # requests sent per operation, and their statuses, printed at the end
statuses: Counter[int] = Counter()
_turn = itertools.count()


class Capped:
    """The real chat runner, generating at most MAX_TOKENS tokens (a bad max_tokens still fails as it would)."""

    def __init__(self, inner):
        self.inner = inner
        self.decoder = CappedDecoder(inner.decoder)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class CappedDecoder:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __len__(self):
        return len(self.inner)

    def fork(self, prompt, params, n, cancelled=lambda: False):
        return self.inner.fork(prompt, _capped(params), n, cancelled)


def _capped(params):
    if params.max_tokens is None or params.max_tokens > MAX_TOKENS:
        return dataclasses.replace(params, max_tokens=MAX_TOKENS)
    return params


@pytest.fixture(scope="module")
def api_schema(vision_runner, embed_runner, transcribe_runner):
    from support.liveserver import LiveServer

    from gemmacli.server import create_app
    from gemmacli.server.loaded import LoadedModel
    from gemmacli.server.settings import ServerSettings

    models = [
        LoadedModel("tiny-chat", Capped(vision_runner)),
        LoadedModel("all-minilm-l6-v2", embed_runner),
        LoadedModel("whisper-tiny.en", transcribe_runner),
    ]
    with LiveServer(create_app(ServerSettings(max_batch=4), models=models)) as live:
        yield schemathesis.openapi.from_url(f"{live.url}/docs/openapi.json")
    print(f"\nschemathesis: {sum(examples.values())} requests {dict(examples)}; statuses {dict(statuses)}")


OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/translations"),
    ("GET", "/admin/stats"),
    ("POST", "/admin/load/{model}"),
    ("POST", "/admin/unload/{model}"),
]


def test_the_document_lists_every_operation(api_schema):
    documented = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert documented == set(OPERATIONS)


# Invalid requests (negative mode) only exist where there is a body to break.
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST" and not p.startswith("/admin")
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_every_operation_answers_as_documented(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(mode))
    # The same examples every run, so CI is deterministic; GEMMACLI_FUZZ_RANDOM=1 explores new ones.
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=not FUZZ_RANDOM,
    )
    def check(case):
        _aim(case)
        examples[f"{method} {path}"] += 1
        response = case.call_and_validate(checks=CHECKS, timeout=60)
        statuses[response.status_code] += 1

    check()


def _aim(case) -> None:
    """The document's examples, and two generated requests in three, name a served model: random names
    alone would only ever meet the 404."""
    model = MODELS.get(case.path)
    named = case.body.get("model") if isinstance(case.body, dict) else None
    if model and isinstance(named, str) and (named in EXAMPLE_MODELS or next(_turn) % 3):
        case.body["model"] = model
