"""/v1/completions over real HTTP on Gemma 3 270M: the four prompt shapes, streaming, and errors."""

from __future__ import annotations

import json

import pytest
import torch
from support.helpers import check_openai_error

from gemmacli.types import GenParams

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"
WEEK = "Monday, Tuesday, Wednesday,"


def assert_openai_error(response, status: int, param: str | None = None) -> dict:
    return check_openai_error(response, status, **({} if param is None else {"param": param}))


def test_string_prompt(openai_client):
    r = openai_client.completions.create(model=MODEL, prompt=WEEK, max_tokens=4, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == MODEL
    (choice,) = r.choices
    assert choice.index == 0 and choice.text.strip().startswith("Thursday") and choice.logprobs is None
    assert choice.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (7, 4, 11)


def test_http_greedy_output_equals_the_runner(openai_client, chat_runner):
    """The contract: `gemmacli` (the runner) and the server give identical greedy completions."""
    ours = chat_runner.complete_text("The capital of France is", GenParams(temperature=0, max_tokens=12))
    r = openai_client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=12, temperature=0)
    assert r.choices[0].text == ours.text and r.choices[0].finish_reason == ours.finish_reason
    assert r.usage.completion_tokens == ours.usage.completion_tokens


def test_several_prompts_give_one_choice_each_and_summed_usage(openai_client):
    prompts = [WEEK, "One, two, three,"]
    single = [openai_client.completions.create(model=MODEL, prompt=p, max_tokens=3, temperature=0) for p in prompts]
    r = openai_client.completions.create(model=MODEL, prompt=prompts, max_tokens=3, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.text for c in r.choices] == [s.choices[0].text for s in single]
    assert r.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in single)
    assert r.usage.completion_tokens == sum(s.usage.completion_tokens for s in single)


def test_token_id_prompts_equal_the_string_prompt(openai_client, chat_runner):
    ids = chat_runner.tokenizer(WEEK)["input_ids"]  # <bos> included, as the string path adds it
    text = openai_client.completions.create(model=MODEL, prompt=WEEK, max_tokens=3, temperature=0).choices[0].text
    r = openai_client.completions.create(model=MODEL, prompt=ids, max_tokens=3, temperature=0)
    assert r.choices[0].text == text and r.usage.prompt_tokens == len(ids)
    r = openai_client.completions.create(model=MODEL, prompt=[ids, ids[:-1]], max_tokens=3, temperature=0)
    assert r.choices[0].text == text and len(r.choices) == 2


def test_streaming_completion_with_usage(openai_client):
    kw = dict(model=MODEL, prompt=WEEK, max_tokens=5, temperature=0)
    whole = openai_client.completions.create(**kw)
    chunks = list(openai_client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert {c.id for c in chunks} == {chunks[0].id} and all(c.object == "text_completion" for c in chunks)
    *texts, last = chunks
    assert [c.choices[0].finish_reason for c in texts] == [None] * (len(texts) - 1) + ["length"]
    assert "".join(c.choices[0].text for c in texts) == whole.choices[0].text
    assert last.choices == [] and last.usage.completion_tokens == 5


def test_streaming_several_prompts_tags_each_choice(http):
    body = {"model": MODEL, "prompt": [WEEK, "One, two,"], "max_tokens": 2, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as r:
        events = r.read().decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    indexes = [c["choices"][0]["index"] for c in chunks]
    assert indexes[:2] == [0, 1]  # both prompts decode together: each one's first token, then the next step's
    finished = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1]


def test_stop_strings(openai_client):
    r = openai_client.completions.create(model=MODEL, prompt=WEEK, max_tokens=20, temperature=0, stop="Sat")
    assert r.choices[0].finish_reason == "stop"
    assert "Friday" in r.choices[0].text and "Sat" not in r.choices[0].text


def model_prompt_logprobs(runner, ids: list[int]) -> list[float]:
    """Each prompt token's logprob after the ones before it, from one in-process forward pass (the first has none)."""
    with torch.inference_mode():
        logits = runner.model(torch.tensor([ids])).logits[0, :-1].float()  # (T - 1, V)
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1).tolist()


def test_echo_returns_the_prompt_then_the_completion(openai_client, chat_runner):
    kw = dict(model=MODEL, max_tokens=4, temperature=0)
    plain = openai_client.completions.create(prompt=WEEK, **kw)
    r = openai_client.completions.create(prompt=WEEK, echo=True, **kw)
    assert r.choices[0].text == WEEK + plain.choices[0].text and r.usage == plain.usage
    ids = chat_runner.tokenizer(WEEK)["input_ids"]
    by_ids = openai_client.completions.create(prompt=ids, echo=True, **kw)  # token ids echo as their text
    assert by_ids.choices[0].text == r.choices[0].text
    several = openai_client.completions.create(prompt=[WEEK, "One, two,"], n=2, echo=True, **kw)
    prompts = [WEEK, WEEK, "One, two,", "One, two,"]  # n choices per prompt, each echoing its own
    assert all(c.text.startswith(p) and len(c.text) > len(p) for c, p in zip(several.choices, prompts, strict=True))


def test_echo_logprobs_are_the_models_over_the_prompt(openai_client, chat_runner):
    """The prompt's logprobs come from the prefill's own pass; they equal a plain forward pass over the prompt."""
    ids = chat_runner.tokenizer(WEEK)["input_ids"]
    expected = model_prompt_logprobs(chat_runner, ids)
    kw = dict(model=MODEL, prompt=WEEK, max_tokens=3, temperature=0, echo=True, logprobs=2)
    r = openai_client.completions.create(**kw)
    logprobs, n = r.choices[0].logprobs, len(ids)
    assert len(logprobs.tokens) == n + 3 and logprobs.tokens[0] == "<bos>"
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.token_logprobs[1:n] == pytest.approx(expected, abs=1e-4)
    for chosen, top in zip(logprobs.token_logprobs[1:], logprobs.top_logprobs[1:], strict=True):
        assert 1 <= len(top) <= 2 and max(top.values()) >= chosen  # the likeliest two at that position
    assert "".join(logprobs.tokens[1:]) == r.choices[0].text
    chunks = [c.choices[0] for c in openai_client.completions.create(**kw, stream=True)]
    assert "".join(c.text for c in chunks) == r.choices[0].text
    streamed = [lp for c in chunks for lp in c.logprobs.token_logprobs]
    assert streamed == logprobs.token_logprobs and [o for c in chunks for o in c.logprobs.text_offset] == list(
        logprobs.text_offset
    )


def test_echo_with_max_tokens_0_scores_the_prompt_alone(openai_client, chat_runner):
    ids = chat_runner.tokenizer(WEEK)["input_ids"]
    r = openai_client.completions.create(model=MODEL, prompt=WEEK, max_tokens=0, echo=True, logprobs=0)
    (choice,) = r.choices
    assert choice.text == WEEK and choice.finish_reason == "length" and r.usage.completion_tokens == 0
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(model_prompt_logprobs(chat_runner, ids), abs=1e-4)


ERRORS = {
    "suffix": ({"suffix": "end"}, "suffix"),
    "best_of": ({"best_of": 2}, "best_of"),
    "logprobs above 5": ({"logprobs": 6}, "logprobs"),
    "n above --max-n": ({"n": 9}, "n"),
    "mixed prompt": ({"prompt": [1, "two"]}, "prompt"),
    "empty prompt list": ({"prompt": []}, "prompt"),
    "empty token list": ({"prompt": [[]]}, "prompt"),
    "token id out of range": ({"prompt": [2, 10**9]}, "prompt"),
    "negative token id": ({"prompt": [-1]}, "prompt"),
    "prompt wrong type": ({"prompt": {"text": "x"}}, "prompt"),
    "prompt too long": ({"prompt": "word " * 33000}, "prompt"),
    "max_tokens zero": ({"max_tokens": 0}, "max_tokens"),
}


@pytest.mark.parametrize("extra,param", ERRORS.values(), ids=ERRORS.keys())
def test_errors_name_the_param_and_the_server_stays_up(http, extra, param):
    body = {"model": MODEL, "prompt": WEEK, "max_tokens": 1, **extra}
    assert assert_openai_error(http.post("/v1/completions", json=body), 400, param)["type"] == "invalid_request_error"
    assert http.post("/v1/completions", json={"model": MODEL, "prompt": WEEK, "max_tokens": 1}).status_code == 200


def test_unknown_model_is_a_404(http):
    response = http.post("/v1/completions", json={"model": "davinci", "prompt": "x"})
    error = assert_openai_error(response, 404, param="model")
    assert error["code"] == "model_not_found"
    # An embedding model is served, but is not a completion model.
    assert assert_openai_error(http.post("/v1/completions", json={"model": "all-minilm-l6-v2", "prompt": "x"}), 404)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_prompt_plus_max_tokens_over_the_window_is_a_400_not_a_clamp(http, path):
    body = {"model": MODEL, "max_tokens": 10**6, "temperature": 0}
    body |= {"prompt": "Monday,"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "Hi"}]}
    r = http.post(path, json=body)
    error = check_openai_error(r, 400, param="max_tokens")
    assert error["code"] == "context_length_exceeded" and "lower max_tokens" in error["message"]
    assert http.post("/v1/completions", json={"model": MODEL, "prompt": "Monday,", "max_tokens": 1}).status_code == 200
