"""/v1/chat/completions and /v1/completions over real HTTP, on a fake chat runner (tests/support/fakes.py).

The whole server is real (schemas, limits, the engine, the decoder with every stage, streaming); only the
model is a script that counts, so the HTTP layer is tested in the fast suite without weights.
"""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest
from support.fakes import VOCAB
from support.helpers import check_openai_error, sse_events
from support.liveserver import fake_chat_server

MODEL = "fake-chat"
USER = [{"role": "user", "content": "one two three"}]  # three words: the script answers " 3 4 5..."


def live(delay: float = 0.0, **settings):
    return fake_chat_server(MODEL, delay, **settings)


@pytest.fixture(scope="module")
def served():
    with live(max_batch=8) as running:
        yield running


@pytest.fixture
def http(served):
    client, runner, _ = served
    yield client
    assert runner.decoder.idle  # no request leaves a sequence behind


def chat(**kw) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 4, **kw}


def completion(**kw) -> dict:
    return {"model": MODEL, "prompt": "one two three", "max_tokens": 4, **kw}


def test_chat_completion_shape(http):
    r = http.post("/v1/chat/completions", json=chat(temperature=0))
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": " 3 4 5 6", "refusal": None},
        "finish_reason": "length",
        "logprobs": None,
    }
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}


def test_an_alias_answers_with_the_model_id(http):
    assert http.post("/v1/chat/completions", json=chat(model="ORG/fake")).json()["model"] == MODEL


def test_chat_stream_shape(http):
    r = http.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    events = sse_events(r.content)
    assert r.headers["content-type"].startswith("text/event-stream") and events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == " 3 4 5 6"
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length", "logprobs": None}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stop_strings_cut_the_text(http):
    body = http.post("/v1/chat/completions", json=chat(max_tokens=10, stop=[" 6"])).json()
    assert body["choices"][0]["message"]["content"] == " 3 4 5"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_end_of_sequence_is_a_stop(http):
    body = http.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "bye"}])).json()
    assert body["choices"][0]["message"]["content"] == "" and body["choices"][0]["finish_reason"] == "stop"


def test_logit_bias_reaches_the_sampler(http):
    banned = http.post("/v1/completions", json=completion(max_tokens=1, logit_bias={"6": -100}, temperature=0))
    assert banned.json()["choices"][0]["text"] != " 3"  # token 6 is " 3": with it banned, any other wins


def test_several_prompts_decode_together_and_interleave(http, served):
    _, runner, _ = served
    before = len(runner.decoder.steps)
    prompts = ["one", "one two three four five"]
    r = http.post("/v1/completions", json=completion(prompt=prompts, stream=True))
    chunks = [json.loads(e) for e in sse_events(r.content)[:-1]]
    indices = [c["choices"][0]["index"] for c in chunks]
    assert indices[:4] == [0, 1, 0, 1]  # one token of each per step
    texts = ["".join(c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == i) for i in (0, 1)]
    assert texts == [" 1 2 3 4", " 5 6 7 8"]
    assert max(runner.decoder.steps[before:]) == 2  # both in the same decode steps
    whole = http.post("/v1/completions", json=completion(prompt=prompts)).json()
    assert [c["text"] for c in whole["choices"]] == texts and whole["usage"]["completion_tokens"] == 8


def test_n_choices_share_one_prefill(http, served):
    _, runner, _ = served
    body = http.post("/v1/chat/completions", json=chat(n=3, temperature=0.9, seed=5)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2] and runner.decoder.prefills[-1] == 3
    assert all(c["message"]["content"] == " 3 4 5 6" for c in body["choices"])  # the script forces its tokens
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16}  # the prompt once


def test_n_choices_stream_with_their_index(http):
    r = http.post("/v1/chat/completions", json=chat(n=2, stream=True, stream_options={"include_usage": True}))
    chunks = [json.loads(e) for e in sse_events(r.content)[:-1]]
    roles = [c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("role")]
    finished = [c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert roles == [0, 1] and sorted(finished) == [0, 1]
    for i in (0, 1):
        text = "".join(
            c["choices"][0]["delta"].get("content", "") for c in chunks[2:-1] if c["choices"][0]["index"] == i
        )
        assert text == " 3 4 5 6"
    assert chunks[-1]["usage"]["prompt_tokens"] == 4 and chunks[-1]["usage"]["completion_tokens"] == 8


def test_n_choices_of_several_prompts_are_numbered_prompt_by_prompt(http):
    body = http.post("/v1/completions", json=completion(prompt=["one", "one two"], n=2, best_of=2)).json()
    assert [(c["index"], c["text"]) for c in body["choices"]] == [
        (0, " 1 2 3 4"),
        (1, " 1 2 3 4"),
        (2, " 2 3 4 5"),
        (3, " 2 3 4 5"),
    ]
    assert body["usage"]["prompt_tokens"] == 2 + 3
    check_openai_error(http.post("/v1/completions", json=completion(n=2, best_of=3)), 400, param="best_of")


def test_token_id_prompts(http):
    assert http.post("/v1/completions", json=completion(prompt=[2, 5, 5])).json()["choices"][0]["text"] == " 2 3 4 5"
    check_openai_error(http.post("/v1/completions", json=completion(prompt=[2, 999])), 400, param="prompt")


ERRORS = {
    "unknown model": (chat(model="gpt-4o"), 404, "model"),
    "temperature above 2": (chat(temperature=3), 400, "temperature"),
    "n above --max-n": (chat(n=9), 400, "n"),
    "too many stop strings": (chat(stop=["x"] * 17), 400, "stop"),
    "prompt over the context": (chat(max_tokens=100), 400, "max_tokens"),
    "logit_bias outside the vocabulary": (chat(logit_bias={"500": 1}), 400, "logit_bias"),
    "roles": (chat(messages=[{"role": "robot", "content": "x"}]), 400, "messages[0].role"),
}


@pytest.mark.parametrize("body,status,param", ERRORS.values(), ids=ERRORS.keys())
def test_errors_have_openai_shape_and_name_the_field(http, body, status, param):
    check_openai_error(http.post("/v1/chat/completions", json=body), status, param=param)
    assert http.post("/v1/chat/completions", json=chat()).status_code == 200  # and the server goes on


def test_a_failing_sequence_fails_its_request_only(http):
    body = completion(prompt="please explode", max_tokens=8, stream=True)
    with httpx.Client(base_url=str(http.base_url), timeout=30) as other:
        healthy = other.post("/v1/completions", json=completion(max_tokens=3))
    events = sse_events(http.post("/v1/completions", json=body).content)
    assert json.loads(events[-1])["error"]["code"] == "internal_error" and b"[DONE]" not in events
    assert healthy.status_code == 200


def test_a_client_that_leaves_cancels_its_sequence():
    with live(delay=0.01, max_batch=2) as (client, runner, services):
        body = completion(max_tokens=60, stream=True)
        with client.stream("POST", "/v1/completions", json=body) as r:
            next(r.iter_lines())
        deadline = time.monotonic() + 10
        while services.engine.running or not runner.decoder.idle:
            assert time.monotonic() < deadline, "the sequence kept decoding for nobody"
            time.sleep(0.01)
        assert sum(runner.decoder.steps) < 60


def test_a_full_queue_is_a_429_before_anything_runs():
    body = completion(max_tokens=60, stream=True)
    with (
        live(delay=0.05, max_batch=1, max_queue=0) as (client, _, _),
        client.stream("POST", "/v1/completions", json=body) as busy,
    ):
        next(busy.iter_lines())
        r = client.post("/v1/completions", json=completion())
        assert check_openai_error(r, 429)["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1


def test_chat_logprobs_cover_every_token(http):
    body = http.post("/v1/chat/completions", json=chat(logprobs=True, top_logprobs=2)).json()
    (choice,) = body["choices"]
    content = choice["logprobs"]["content"]
    assert "".join(e["token"] for e in content) == choice["message"]["content"] == " 3 4 5 6"
    for entry in content:
        assert entry["bytes"] == list(entry["token"].encode()) and -1e-3 < entry["logprob"] <= 0
        first, second = entry["top_logprobs"]
        assert first["token"] == entry["token"] and second["logprob"] == pytest.approx(-100, abs=0.1)  # the script


def test_streamed_chat_logprobs_ride_on_their_chunks(http):
    r = http.post("/v1/chat/completions", json=chat(logprobs=True, stream=True))
    chunks = [json.loads(e) for e in sse_events(r.content)[:-1]]
    content = [c["choices"][0] for c in chunks if c["choices"][0]["delta"].get("content")]
    assert [c["delta"]["content"] for c in content] == [" 3", " 4", " 5", " 6"]
    assert [[e["token"] for e in c["logprobs"]["content"]] for c in content] == [[" 3"], [" 4"], [" 5"], [" 6"]]
    assert all(c["logprobs"]["content"][0]["top_logprobs"] == [] for c in content)
    assert chunks[0]["choices"][0]["logprobs"] is None  # the role chunk


def test_completion_logprobs_in_the_legacy_shape(http):
    body = http.post("/v1/completions", json=completion(logprobs=1)).json()
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["tokens"] == [" 3", " 4", " 5", " 6"] and logprobs["text_offset"] == [0, 2, 4, 6]
    assert all(-1e-3 < lp <= 0 for lp in logprobs["token_logprobs"])
    assert [list(top) for top in logprobs["top_logprobs"]] == [[" 3"], [" 4"], [" 5"], [" 6"]]
    r = http.post("/v1/completions", json=completion(logprobs=0, stream=True))
    chunks = [json.loads(e)["choices"][0]["logprobs"] for e in sse_events(r.content)[:-1]]
    assert [o for c in chunks for o in c["text_offset"]] == [0, 2, 4, 6]  # offsets go on across chunks
    unasked = http.post("/v1/completions", json=completion()).json()
    assert unasked["choices"][0]["logprobs"] is None


def test_completion_echo_lists_the_prompt_tokens_first(http):
    body = http.post("/v1/completions", json=completion(echo=True, logprobs=1, max_tokens=2)).json()
    (choice,) = body["choices"]
    logprobs = choice["logprobs"]
    assert choice["text"] == "one two three 3 4"  # the prompt as given, then the completion
    assert logprobs["tokens"] == ["<bos>", " 3", " 3", " 5", " 3", " 4"]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert logprobs["token_logprobs"][1:4] == pytest.approx([-math.log(len(VOCAB))] * 3)
    assert all(len(top) == 1 for top in logprobs["top_logprobs"][1:])
    assert logprobs["text_offset"] == [0, 5, 7, 9, 11, 13]  # every token's text counts, <bos> too, as in vLLM
    r = http.post("/v1/completions", json=completion(echo=True, logprobs=1, max_tokens=2, stream=True))
    chunks = [json.loads(e)["choices"][0] for e in sse_events(r.content)[:-1]]
    assert "".join(c["text"] for c in chunks) == choice["text"]
    streamed = {key: [v for c in chunks for v in c["logprobs"][key]] for key in logprobs}
    assert streamed == logprobs


def test_completion_echo_for_every_prompt_and_choice(http):
    body = http.post("/v1/completions", json=completion(prompt=["one two", "three"], n=2, echo=True, max_tokens=1))
    assert [c["text"] for c in body.json()["choices"]] == ["one two 2", "one two 2", "three 1", "three 1"]
    ids = http.post("/v1/completions", json=completion(prompt=[2, 4, 10], echo=True, max_tokens=1)).json()
    assert ids["choices"][0]["text"] == " 1 7 2"  # token ids echo as their text


def test_completion_echo_with_max_tokens_0_is_the_prompt_alone(http):
    body = http.post("/v1/completions", json=completion(echo=True, max_tokens=0, logprobs=0)).json()
    (choice,) = body["choices"]
    assert choice["text"] == "one two three" and choice["finish_reason"] == "length"
    assert len(choice["logprobs"]["tokens"]) == 4 and body["usage"]["completion_tokens"] == 0


LOGPROB_ERRORS = {
    "top_logprobs without logprobs": ("/v1/chat/completions", chat(top_logprobs=2), "top_logprobs"),
    "top_logprobs above 20": ("/v1/chat/completions", chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    "completion logprobs above 5": ("/v1/completions", completion(logprobs=6), "logprobs"),
    "max_tokens 0 without echo": ("/v1/completions", completion(max_tokens=0), "max_tokens"),
}


@pytest.mark.parametrize("path,body,param", LOGPROB_ERRORS.values(), ids=LOGPROB_ERRORS.keys())
def test_bad_logprobs_fields_name_the_field(http, path, body, param):
    check_openai_error(http.post(path, json=body), 400, param=param)
