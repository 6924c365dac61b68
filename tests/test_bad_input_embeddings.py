"""Bad /v1/embeddings requests: wrong input shapes and types, too many inputs, too much text, token ids out
of the vocabulary, inputs longer than the model's window (400 unless truncation is asked for), bad
dimensions and model names. Each case checks the status, OpenAI's error shape and `param`, then a valid call."""

from __future__ import annotations

import pytest
from support.badinput import CHAT, EMBED, LIMITS, embeds, expect, small_app

pytestmark = pytest.mark.slow
TEXT_LIMIT, INPUTS = LIMITS["max_text_chars"], LIMITS["max_inputs"]
LONG = "word " * 600  # 3,000 characters (under the text limit), 602 tokens (over MiniLM's 256-token window)
ABSENT = object()


@pytest.fixture(scope="module")
def client(served):
    with small_app(served) as client:
        yield client


def case(name: str, input, param: str | None, status: int = 400, **fields):
    body = {"model": EMBED, **({} if input is ABSENT else {"input": input}), **fields}
    return pytest.param(body, status, param, id=name)


CASES = [
    case("no input", ABSENT, "input"),
    case("input null", None, "input"),
    case("input a number", 42, "input"),
    case("input an object", {"text": "x"}, "input"),
    case("input a bool", True, "input"),
    case("float token ids", [1.5, 2.5], "input[0]"),
    case("ids nested three deep", [[[1]]], "input[0][0]"),
    case("empty string", "", "input"),
    case("empty list", [], "input"),
    case("empty string in a list", ["ok", ""], "input"),
    case("empty token list", [[1996], []], "input"),
    case("strings mixed with ids", ["ok", 1996], "input"),
    case("ids mixed with id lists", [1996, [1996]], "input"),
    case("inputs over the count", ["x"] * (INPUTS + 1), "input"),
    case("token lists over the count", [[1996]] * (INPUTS + 1), "input"),
    case("one input over the text limit", "x" * (TEXT_LIMIT + 1), "input"),
    case("list input over the text limit", ["ok", "x" * (TEXT_LIMIT + 1)], "input[1]"),
    case("inputs over the total", ["x" * (TEXT_LIMIT - 1)] * 3, "input[2]"),
    case("token list over the text limit", [1996] * (TEXT_LIMIT + 1), "input"),
    case("negative token id", [[-1]], "input"),
    case("token id past the vocabulary", [1996, 30_522], "input"),
    case("token id 1e30", [10**30], "input"),
    case("input longer than the window", LONG, "input"),
    case("second input longer than the window", ["short", LONG], "input[1]"),
    case("token ids longer than the window", [1996] * 600, "input"),
    case("truncate false is still a 400", LONG, "input", truncate=False),
    case("truncate a string", "x", "truncate", truncate="always"),
    case("dimensions 0", "x", "dimensions", dimensions=0),
    case("dimensions negative", "x", "dimensions", dimensions=-3),
    case("dimensions above the model's", "x", "dimensions", dimensions=385),
    case("dimensions huge", "x", "dimensions", dimensions=2**40),
    case("dimensions a string", "x", "dimensions", dimensions="many"),
    case("encoding_format hex", "x", "encoding_format", encoding_format="hex"),
    case("user over 512 chars", "x", "user", user="u" * 513),
    case("user a list", "x", "user", user=["u"]),
    case("unknown model", "x", "model", 404, model="text-embedding-3-small"),
    case("chat model for embeddings", "x", "model", 404, model=CHAT),
    case("model a path", "x", "model", 404, model="../../etc/passwd"),
    case("model with a nul byte", "x", "model", 404, model="all-minilm\x00"),
    case("model a number", "x", "model", model=3),
]


@pytest.mark.parametrize(("body", "status", "param"), CASES)
def test_a_bad_embedding_request_names_its_field(client, body, status, param):
    expect(client.post("/v1/embeddings", json=body), status, param)
    embeds(client)


def test_truncate_true_embeds_the_window_and_counts_what_it_used(client):
    response = client.post("/v1/embeddings", json={"model": EMBED, "input": [LONG, "short"], "truncate": True})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 256 + 3  # the window, then [CLS] short [SEP]
