"""Thinking over HTTP, on the fake chat runner whose script thinks when asked to ponder: the thoughts come as
reasoning_content (and `reasoning`), never inside content, and usage counts the tokens spent on them."""

from __future__ import annotations

import json

import pytest
from support.helpers import check_openai_error, sse_events

MODEL = "fake-chat"
PONDER = [{"role": "user", "content": "ponder this"}]  # the script: <|channel>thought\n 7 8<channel|> 2 3 ...


@pytest.fixture
def http(fake_chat):
    return fake_chat


def chat(**kw) -> dict:
    return {"model": MODEL, "messages": PONDER, "max_tokens": 7, "reasoning_effort": "high", **kw}


def test_thoughts_are_reasoning_content_and_counted(http):
    body = http.post("/v1/chat/completions", json=chat()).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == " 7 8" and message["content"] == " 2 3"
    assert body["usage"]["completion_tokens"] == 7
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}


def test_streamed_thoughts_never_reach_content(http):
    events = sse_events(http.post("/v1/chat/completions", json=chat(stream=True)).content)
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1] if json.loads(e)["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == " 7 8"
    assert all(d.get("reasoning") == d["reasoning_content"] for d in deltas if "reasoning_content" in d)
    assert "".join(d.get("content") or "" for d in deltas) == " 2 3"


def test_a_model_that_does_not_think_has_no_reasoning_fields(http):
    body = http.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "one two"}])).json()
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert "completion_tokens_details" not in body["usage"]


BAD = {
    "unknown reasoning_effort": (chat(reasoning_effort="extreme"), "reasoning_effort"),
    "unknown template kwarg": (
        chat(chat_template_kwargs={"tools_in_user": True}),
        "chat_template_kwargs.tools_in_user",
    ),
    "enable_thinking not a bool": (
        chat(chat_template_kwargs={"enable_thinking": "yes"}),
        "chat_template_kwargs.enable_thinking",
    ),
}


@pytest.mark.parametrize("body,param", BAD.values(), ids=BAD.keys())
def test_bad_thinking_fields_name_the_field(http, body, param):
    check_openai_error(http.post("/v1/chat/completions", json=body), 400, param=param)
