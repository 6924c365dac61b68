"""Bad /v1/completions requests: prompts of the wrong shape, too many or too long, token ids outside the
vocabulary, the legacy fields' ranges, and the sampling numbers shared with chat at one end each.
Each case checks the status, OpenAI's error shape and `param`, then that the server still answers."""

from __future__ import annotations

import pytest
from support.badinput import CHAT, LIMITS, expect, small_app, still_serving

pytestmark = pytest.mark.slow
TEXT_LIMIT = LIMITS["max_text_chars"]
ABSENT = object()


@pytest.fixture(scope="module")
def client(served):
    with small_app(served) as client:
        yield client


def case(name: str, prompt, param: str | None, status: int = 400, **fields):
    body = {"model": CHAT, **({} if prompt is ABSENT else {"prompt": prompt}), "max_tokens": 1, **fields}
    return pytest.param(body, status, param, id=name)


CASES = [
    case("no prompt", ABSENT, "prompt"),
    case("prompt null", None, "prompt"),
    case("prompt a number", 7, "prompt"),
    case("prompt an object", {"text": "x"}, "prompt"),
    case("prompt an empty list", [], "prompt"),
    case("empty token list", [[]], "prompt"),
    case("strings mixed with ids", ["a", 1], "prompt"),
    case("prompts over the count", ["x"] * (LIMITS["max_inputs"] + 1), "prompt"),
    case("prompt over the text limit", "x" * (TEXT_LIMIT + 1), "prompt"),
    case("second prompt over the text limit", ["ok", "x" * (TEXT_LIMIT + 1)], "prompt[1]"),
    case("prompts over the total", ["x" * (TEXT_LIMIT - 1)] * 3, "prompt[2]"),
    case("token ids over the text limit", [2] * (TEXT_LIMIT + 1), "prompt"),
    case("negative token id", [2, -1], "prompt"),
    case("token id past the vocabulary", [2, 10**6], "prompt"),
    case("token id 1e30", [[2, 10**30]], "prompt"),
    case("suffix", "x", "suffix", suffix="tail"),
    case("best_of 0", "x", "best_of", best_of=0),
    case("best_of above 20", "x", "best_of", best_of=21),
    case("best_of above n is not supported", "x", "best_of", best_of=2),
    case("logprobs negative", "x", "logprobs", logprobs=-1),
    case("logprobs above 5", "x", "logprobs", logprobs=6),
    case("max_tokens 0", "x", "max_tokens", max_tokens=0),
    case("max_tokens -1 with echo", "x", "max_tokens", max_tokens=-1, echo=True),
    case("max_tokens huge", "x", "max_tokens", max_tokens=2**63),
    case("temperature above 2", "x", "temperature", temperature=3),
    case("top_p 0", "x", "top_p", top_p=0.0),
    case("seed above int64", "x", "seed", seed=2**64),
    case("n above 128", "x", "n", n=1000),
    case("stop over the count", "x", "stop", stop=list("abcde")),
    case("stop too long", "x", "stop[0]", stop=["z" * (LIMITS["max_stop_chars"] + 1)]),
    case("unknown model", "x", "model", 404, model="text-davinci-003"),
    case("embedding model for completions", "x", "model", 404, model="all-minilm-l6-v2"),
    case("model a windows path", "x", "model", 404, model="C:\\models\\x"),
]


@pytest.mark.parametrize(("body", "status", "param"), CASES)
def test_a_bad_completion_request_names_its_field(client, body, status, param):
    expect(client.post("/v1/completions", json=body), status, param)
    still_serving(client)
