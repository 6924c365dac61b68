"""/v1/chat/completions over real HTTP: the official openai client, raw SSE through httpx, and every
error in OpenAI's shape. The models are the real Gemma 3 270M and the tiny random vision model."""

from __future__ import annotations

import base64
import json

import openai
import pytest
from support.helpers import check_openai_error, sse_events

from gemmacli.media import load_image
from gemmacli.types import GenParams, Message, TextPart

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"
USER = [{"role": "user", "content": "Name three colours."}]


def data_url(path, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


# -- happy paths, through the official client


def assert_openai_error(response, status: int, param: str | None = None) -> dict:
    return check_openai_error(response, status, **({} if param is None else {"param": param}))


def test_non_stream_completion_has_usage_and_stops_at_max_tokens(openai_client):
    r = openai_client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL
    (choice,) = r.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length" and choice.logprobs is None
    assert r.usage.completion_tokens == 5 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_with_usage_follows_openai_chunk_rules(openai_client):
    kw = dict(model=MODEL, messages=USER, max_tokens=6, temperature=0)
    whole = openai_client.chat.completions.create(**kw)
    chunks = list(openai_client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert {c.id for c in chunks} == {chunks[0].id} and {c.created for c in chunks} == {chunks[0].created}
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    with_choices, (last,) = chunks[:-1], chunks[-1:]
    assert all(len(c.choices) == 1 and c.usage is None for c in with_choices)
    assert [c.choices[0].finish_reason for c in with_choices[:-1]] == [None] * (len(with_choices) - 1)
    assert with_choices[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.choices == [] and last.usage.model_dump() == whole.usage.model_dump()
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == whole.choices[0].message.content


def test_stream_raw_sse_bytes(http):
    body = {
        "model": MODEL,
        "messages": USER,
        "max_tokens": 3,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        events = sse_events(r.read())
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    for chunk in chunks[:-2]:  # explicit nulls, not missing keys
        assert chunk["usage"] is None and chunk["choices"][0]["finish_reason"] is None
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_stream_without_include_usage_has_no_usage_key(http):
    body = {"model": MODEL, "messages": USER, "max_tokens": 2, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        events = sse_events(r.read())
    assert events[-1] == b"[DONE]"
    assert all("usage" not in json.loads(e) and json.loads(e)["choices"] for e in events[:-1])


def test_http_greedy_output_equals_the_runner(openai_client, chat_runner):
    """The contract: the CLI (runner) and the server give identical greedy output for the same input."""
    ours = chat_runner.complete(
        [Message("system", "Be brief."), Message("user", "Name three colours.")],
        GenParams(temperature=0, max_tokens=12),
    )
    r = openai_client.chat.completions.create(
        model=MODEL,
        max_tokens=12,
        temperature=0,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three colours."}],
    )
    assert r.choices[0].message.content == ours.text and r.choices[0].finish_reason == ours.finish_reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (
        ours.usage.prompt_tokens,
        ours.usage.completion_tokens,
    )


def test_developer_role_list_content_and_assistant_history(openai_client, chat_runner):
    history = [
        Message("system", "Be brief."),
        Message("user", "Hi"),
        Message("assistant", "Hello!"),
        Message("user", "Name a colour."),
    ]
    ours = chat_runner.complete(history, GenParams(temperature=0, max_tokens=8))
    r = openai_client.chat.completions.create(
        model=MODEL,
        max_tokens=8,
        temperature=0,
        messages=[
            {"role": "developer", "content": "Be brief."},  # OpenAI's newer name for system
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a colour.", "name": "ignored"},
        ],
    )
    assert r.choices[0].message.content == ours.text
    assert r.usage.prompt_tokens == ours.usage.prompt_tokens


def test_image_chat_counts_the_image_tokens(openai_client, vision_runner, images):
    content = [
        {"type": "image_url", "image_url": {"url": data_url(images / "red_circle_64.png")}},
        {"type": "text", "text": "describe"},
    ]
    r = openai_client.chat.completions.create(
        model="tiny-gemma3-vision", max_tokens=3, temperature=0, messages=[{"role": "user", "content": content}]
    )
    prompt = vision_runner.encode_chat(
        [Message("user", (load_image(images / "red_circle_64.png"), TextPart("describe")))]
    )
    assert prompt.image_tokens == 4 and r.usage.prompt_tokens == prompt.length
    text_only = openai_client.chat.completions.create(
        model="tiny-gemma3-vision", max_tokens=1, temperature=0, messages=[{"role": "user", "content": "describe"}]
    )
    assert r.usage.prompt_tokens >= text_only.usage.prompt_tokens + prompt.image_tokens
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 3


def test_stop_string_cuts_the_text(openai_client):
    kw = dict(model=MODEL, messages=USER, max_tokens=10, temperature=0)
    full = openai_client.chat.completions.create(**kw).choices[0].message.content
    word = full.split()[1]  # a word from the middle of the greedy answer
    r = openai_client.chat.completions.create(**kw, stop=[word, "never-appears"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(word)]


def test_same_seed_same_text_when_sampling(openai_client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=8, temperature=1)
    first, again, other = (
        openai_client.chat.completions.create(**kw, seed=s).choices[0].message.content for s in (7, 7, 8)
    )
    assert first == again
    assert first != other or first != openai_client.chat.completions.create(**kw, seed=9).choices[0].message.content


def test_n_seeded_choices_are_reproducible_and_distinct(openai_client):
    kw = dict(model=MODEL, messages=USER, n=3, temperature=1.0, top_p=1.0, max_tokens=12, seed=7)
    first = openai_client.chat.completions.create(**kw)
    again = openai_client.chat.completions.create(**kw)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2] and texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1
    single = openai_client.chat.completions.create(**{**kw, "n": 1})
    assert first.usage.prompt_tokens == single.usage.prompt_tokens  # the shared prompt counts once


def test_logprobs_through_the_official_client(openai_client):
    r = openai_client.chat.completions.create(
        model=MODEL, messages=USER, temperature=0, max_tokens=6, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs.content
    assert "".join(e.token for e in content) == r.choices[0].message.content and len(content) >= 1
    assert all(e.top_logprobs[0].token == e.token and e.logprob <= 0 for e in content)  # greedy: the top one
    c = openai_client.completions.create(
        model=MODEL, prompt="Monday, Tuesday,", max_tokens=4, temperature=0, logprobs=1
    )
    logprobs = c.choices[0].logprobs
    assert "".join(logprobs.tokens) == c.choices[0].text and len(logprobs.token_logprobs) == 4
    assert logprobs.text_offset[0] == 0 and [list(t) for t in logprobs.top_logprobs] == [[t] for t in logprobs.tokens]


def test_max_completion_tokens_wins_over_max_tokens(openai_client):
    r = openai_client.chat.completions.create(
        model=MODEL, messages=USER, temperature=0, max_tokens=9, max_completion_tokens=2
    )
    assert r.usage.completion_tokens == 2 and r.choices[0].finish_reason == "length"


def test_alias_and_ignored_extras_are_accepted(http):
    body = {
        "model": "google/gemma-3-270m",
        "messages": USER,
        "max_tokens": 1,
        "temperature": 0,
        "n": 1,
        "user": "u-1",
        "logit_bias": None,
        "parallel_tool_calls": True,
        "metadata": {"k": "v"},
        "store": False,
        "service_tier": "auto",
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "logprobs": False,
        "top_k": -1,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "frequency_penalty": 0,
        "presence_penalty": 0,
        "some_future_field": [1, 2],
    }
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == MODEL


def test_generation_metrics_are_recorded_per_model(http):
    from prometheus_client.parser import text_string_to_metric_families

    assert http.post("/v1/chat/completions", json={**_chat(temperature=0), "max_tokens": 3}).status_code == 200
    families = text_string_to_metric_families(http.get("/metrics").text)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}
    by_model = (("model", MODEL),)
    for name in (
        "gemmacli_time_to_first_token_seconds_count",
        "gemmacli_inter_token_latency_seconds_count",
        "gemmacli_e2e_request_latency_seconds_count",
        "gemmacli_prompt_tokens_total",
        "gemmacli_generation_tokens_total",
    ):
        assert samples[(name, by_model)] > 0, name
    assert samples[("gemmacli_model_requests_total", (("endpoint", "/v1/chat/completions"), *by_model))] > 0


# -- errors: status, OpenAI's exact shape, the param; and the server keeps serving afterwards


def _chat(**kw) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 1, **kw}


def _content(*parts) -> list[dict]:
    return [{"role": "user", "content": [*parts, {"type": "text", "text": "describe"}]}]


def _seen(*parts) -> dict:
    """A chat with `parts` to the model that reads images."""
    return _chat(model="tiny-gemma3-vision", messages=_content(*parts))


def _image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


IMG = "messages[0].content[0].image_url"
TOOL_NAME = "tools[0].function.name"
ERRORS = {
    "unknown model": (_chat(model="gpt-4o"), 404, "model"),
    "max_tokens wrong type": (_chat(max_tokens="ten"), 400, "max_tokens"),
    "temperature below 0": (_chat(temperature=-1), 400, "temperature"),
    "top_p above 1": (_chat(top_p=1.5), 400, "top_p"),
    "n above --max-n": (_chat(n=9), 400, "n"),
    "top_logprobs without logprobs": (_chat(top_logprobs=2), 400, "top_logprobs"),
    "tool named with a space": (_chat(tools=[{"type": "function", "function": {"name": "a b"}}]), 400, TOOL_NAME),
    "unknown response_format": (_chat(response_format={"type": "xml"}), 400, "response_format.type"),
    "logit_bias token outside the vocabulary": (_chat(logit_bias={"999999999": 5}), 400, "logit_bias"),
    "empty messages": (_chat(messages=[]), 400, "messages"),
    "missing model": ({"messages": USER}, 400, "model"),
    "tool without id": (_chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages[0].tool_call_id"),
    "unknown part type": (_chat(messages=_content({"type": "video"})), 400, "messages[0].content[0].type"),
    "roles not alternating": (_chat(messages=USER + USER), 400, "messages"),
    "http image url": (
        _seen(_image("https://example.com/a.png")),
        400,
        IMG,
    ),
    "file url": (_seen(_image("file:///etc/passwd")), 400, IMG),
    "broken base64": (_seen(_image("data:image/png;base64,!!notbase64")), 400, IMG),
}


@pytest.mark.parametrize("body,status,param", ERRORS.values(), ids=ERRORS.keys())
def test_errors_have_openai_shape_and_the_server_stays_up(http, body, status, param):
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), status, param)
    assert error["type"] == "invalid_request_error"
    if status == 404:
        assert error["code"] == "model_not_found"
    assert http.post("/v1/chat/completions", json=_chat(temperature=0)).status_code == 200


def test_media_errors_name_what_is_wrong(http, images, audio):
    corrupt = _seen(_image(data_url(images / "corrupt.png")))
    assert assert_openai_error(http.post("/v1/chat/completions", json=corrupt), 400, IMG)["code"] == "invalid_media"
    truncated = _seen(_image(data_url(images / "truncated.jpg", "image/jpeg")))
    assert "truncated" in assert_openai_error(http.post("/v1/chat/completions", json=truncated), 400, IMG)["message"]
    to_text_model = _chat(messages=_content(_image(data_url(images / "red_circle_64.png"))))
    refused = assert_openai_error(http.post("/v1/chat/completions", json=to_text_model), 400, "messages[0].content[0]")
    assert refused["message"] == "model gemma-3-270m cannot read image (it takes text)"
    wav = base64.b64encode((audio / "hello_world.wav").read_bytes()).decode()
    speech = _chat(messages=_content({"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}))
    assert MODEL in assert_openai_error(http.post("/v1/chat/completions", json=speech), 400)["message"]


def test_malformed_json_is_a_400(http):
    r = http.post(
        "/v1/chat/completions",
        content=b'{"model": "gemma-3-270m", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert_openai_error(r, 400)
    assert http.post("/v1/chat/completions", json=_chat(temperature=0)).status_code == 200


def test_the_official_client_raises_bad_request_with_the_param(openai_client):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.chat.completions.create(model=MODEL, messages=USER, n=9)
    assert err.value.status_code == 400 and err.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as err:
        openai_client.chat.completions.create(model="nope", messages=USER, stream=True)
    assert err.value.body["code"] == "model_not_found"


def test_model_cards_say_what_each_model_takes_in(http):
    cards = {card["id"]: card for card in http.get("/v1/models").json()["data"]}
    assert cards["gemma-3-270m"]["modalities"] == ["text"]
    assert cards["tiny-gemma3-vision"]["modalities"] == ["text", "image"]
    assert http.get("/v1/models/tiny-gemma3-vision").json()["modalities"] == ["text", "image"]
