"""Bad /v1/chat/completions requests (text only; media in test_bad_input_media.py): wrong types, missing
fields, every number past each end of its range, too many messages or stop strings, too much text, weird
model names. Each case checks the status, OpenAI's error shape with its `param`, then a one-token chat."""

from __future__ import annotations

import pytest
from support.badinput import CHAT, LIMITS, chats, expect, small_app, still_serving

pytestmark = pytest.mark.slow
USER = [{"role": "user", "content": "Hi"}]
TEXT_LIMIT = LIMITS["max_text_chars"]


@pytest.fixture(scope="module")
def client(served):
    with small_app(served) as client:
        yield client


def case(name: str, fields: dict, param: str | None, status: int = 400, drop: tuple[str, ...] = ()):
    body = {"model": CHAT, "messages": USER, "max_tokens": 1, **fields}
    return pytest.param({k: v for k, v in body.items() if k not in drop}, status, param, id=name)


def say(*texts: str) -> list[dict]:
    """Alternating user/assistant turns ending on a user turn, as Gemma's template wants."""
    roles = ["user", "assistant"] * len(texts)
    return [{"role": r, "content": t} for r, t in zip(roles[len(roles) % 2 :], texts, strict=False)][-len(texts) :]


def parts(*content: dict) -> list[dict]:
    return [{"role": "user", "content": list(content)}]


def text(length: int) -> dict:
    return {"type": "text", "text": "x" * length}


NUMBERS = [
    case("max_tokens 0", {"max_tokens": 0}, "max_tokens"),
    case("max_tokens negative", {"max_tokens": -5}, "max_tokens"),
    case("max_tokens above int32", {"max_tokens": 2**31}, "max_tokens"),
    case("max_tokens 1e30", {"max_tokens": 10**30}, "max_tokens"),
    case("max_tokens float", {"max_tokens": 1.5}, "max_tokens"),
    case("max_completion_tokens 0", {"max_completion_tokens": 0}, "max_completion_tokens"),
    case("max_completion_tokens huge", {"max_completion_tokens": 2**40}, "max_completion_tokens"),
    case("temperature below 0", {"temperature": -0.1}, "temperature"),
    case("temperature above 2", {"temperature": 2.01}, "temperature"),
    case("temperature string", {"temperature": "hot"}, "temperature"),
    case("temperature 1e400", {"temperature": 1e300 * 10}, "temperature"),
    case("top_p 0", {"top_p": 0}, "top_p"),
    case("top_p above 1", {"top_p": 1.01}, "top_p"),
    case("top_p negative", {"top_p": -0.5}, "top_p"),
    case("top_k below -1", {"top_k": -2}, "top_k"),
    case("top_k huge", {"top_k": 10**7}, "top_k"),
    case("top_k float", {"top_k": 4.5}, "top_k"),
    case("min_p below 0", {"min_p": -0.01}, "min_p"),
    case("min_p above 1", {"min_p": 1.5}, "min_p"),
    case("frequency_penalty below -2", {"frequency_penalty": -2.5}, "frequency_penalty"),
    case("frequency_penalty above 2", {"frequency_penalty": 2.5}, "frequency_penalty"),
    case("presence_penalty below -2", {"presence_penalty": -3}, "presence_penalty"),
    case("presence_penalty above 2", {"presence_penalty": 3}, "presence_penalty"),
    case("repetition_penalty 0", {"repetition_penalty": 0}, "repetition_penalty"),
    case("repetition_penalty negative", {"repetition_penalty": -1}, "repetition_penalty"),
    case("repetition_penalty above 100", {"repetition_penalty": 101}, "repetition_penalty"),
    case("seed above int64", {"seed": 2**63}, "seed"),
    case("seed below int64", {"seed": -(2**63) - 1}, "seed"),
    case("seed float", {"seed": 1.5}, "seed"),
    case("seed a word", {"seed": "forty-two"}, "seed"),
    case("n 0", {"n": 0}, "n"),
    case("n above 128", {"n": 129}, "n"),
    case("n above --max-n", {"n": 9}, "n"),
    case("top_logprobs negative", {"top_logprobs": -1}, "top_logprobs"),
    case("top_logprobs above 20", {"top_logprobs": 21}, "top_logprobs"),
    case("logit_bias value above 100", {"logit_bias": {"42": 101}}, "logit_bias"),
    case("logit_bias value below -100", {"logit_bias": {"42": -101}}, "logit_bias"),
    case("logit_bias key not a token id", {"logit_bias": {"hello": 1}}, "logit_bias"),
    case("logit_bias too many keys", {"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
    case("logit_bias not an object", {"logit_bias": [1, 2]}, "logit_bias"),
]


@pytest.mark.parametrize(("body", "status", "param"), NUMBERS)
def test_a_number_out_of_range_names_its_field(client, body, status, param):
    error = expect(client.post("/v1/chat/completions", json=body), status, param)
    assert error["type"] == "invalid_request_error"
    still_serving(client)


SHAPES = [
    case("no messages field", {}, "messages", drop=("messages",)),
    case("messages empty", {"messages": []}, "messages"),
    case("messages a string", {"messages": "Hi"}, "messages"),
    case("messages null", {"messages": None}, "messages"),
    case("message not an object", {"messages": ["Hi"]}, "messages[0]"),
    case("message without role", {"messages": [{"content": "Hi"}]}, "messages[0].role"),
    case("role robot", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    case("role not a string", {"messages": [{"role": 1, "content": "x"}]}, "messages[0].role"),
    case("content a number", {"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    case("content null for user", {"messages": [{"role": "user", "content": None}]}, "messages[0]"),
    case("part without type", {"messages": parts({"text": "x"})}, "messages[0].content[0].type"),
    case("part type video", {"messages": parts({"type": "video"})}, "messages[0].content[0].type"),
    case("text part without text", {"messages": parts({"type": "text"})}, "messages[0].content[0].text"),
    case("text part text a number", {"messages": parts({"type": "text", "text": 5})}, "messages[0].content[0].text"),
    case(
        "tool_calls in history",
        {"messages": [{"role": "assistant", "content": "x", "tool_calls": [{}]}, *USER]},
        "messages[0].tool_calls[0].id",
    ),
    case("too many messages", {"messages": say(*["hi"] * (LIMITS["max_messages"] + 1))}, "messages"),
    case("message over the text limit", {"messages": say("x" * (TEXT_LIMIT + 1))}, "messages[0].content"),
    case(
        "text parts over the text limit",
        {"messages": parts(text(TEXT_LIMIT // 2 + 1), text(TEXT_LIMIT // 2))},
        "messages[0].content",
    ),
    case("total text over the limit", {"messages": say(*["x" * (TEXT_LIMIT - 10)] * 3)}, "messages[2].content"),
    case("stop strings over the count", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    case("stop string over the length", {"stop": "x" * (LIMITS["max_stop_chars"] + 1)}, "stop"),
    case("second stop string too long", {"stop": ["ok", "y" * 100]}, "stop[1]"),
    case("stop a number", {"stop": 5}, "stop"),
    case("stop list of numbers", {"stop": [1, 2]}, "stop[0]"),
    case("user over 512 chars", {"user": "u" * 513}, "user"),
    case("user a number", {"user": 7}, "user"),
    case("stream a string", {"stream": "yes"}, "stream"),
    case("stream_options a list", {"stream": True, "stream_options": [1]}, "stream_options"),
    case("tools", {"tools": [{"type": "function", "function": {"name": "f()"}}]}, "tools[0].function.name"),
    case("response_format json_schema", {"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    case("response_format without type", {"response_format": {}}, "response_format.type"),
    case("audio output", {"modalities": ["text", "audio"]}, "modalities"),
]


@pytest.mark.parametrize(("body", "status", "param"), SHAPES)
def test_a_malformed_request_names_its_field(client, body, status, param):
    expect(client.post("/v1/chat/completions", json=body), status, param)
    still_serving(client)


ABSENT = object()
MODELS = {
    "no model": (ABSENT, 400),
    "model a number": (42, 400),
    "model null": (None, 400),
    "unknown model": ("gpt-4o", 404),
    "dotdot passwd": ("../../etc/passwd", 404),
    "absolute path": ("/abs", 404),
    "windows path": ("C:\\x", 404),
    "nul byte": ("gemma-3-270m\x00", 404),
    "10 kB name": ("m" * 10_000, 404),
    "embedding model for chat": ("all-minilm-l6-v2", 404),
    "empty name": ("", 404),
}


@pytest.mark.parametrize(("model", "status"), MODELS.values(), ids=MODELS.keys())
def test_a_bad_model_name_is_refused_without_touching_the_disk(client, model, status):
    body = {"messages": USER, "max_tokens": 1, **({} if model is ABSENT else {"model": model})}
    error = expect(client.post("/v1/chat/completions", json=body), status, "model")
    assert error["code"] == ("model_not_found" if status == 404 else "invalid_value")
    still_serving(client)


def test_limits_count_a_streamed_request_too(client):
    body = {"model": CHAT, "messages": USER, "stream": True, "stop": ["a"] * 5}
    expect(client.post("/v1/chat/completions", json=body), 400, "stop")
    chats(client)
