"""Gemma 4's native tool calls on the tiny random-weight Gemma 4 (tests/support/gemma4_kit.py, whose template
writes Gemma 4's tool declarations, calls and results): the template renders them, constrained calls are
written in Gemma's notation with its special tokens and validate, and the server streams them."""

from __future__ import annotations

import json

import jsonschema
import pytest

from gemmacli.runners.text_stream import IncrementalDecoder
from gemmacli.runners.tools.gemma4 import GEMMA4
from gemmacli.types import GenParams, Message, Tool, ToolCall, ToolUse

pytestmark = pytest.mark.slow
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer"},
        "alerts": {"type": "boolean"},
    },
    "required": ["city", "unit"],
}
WEATHER = Tool("get_weather", "Weather in a city", json.dumps(CITY))
ASK = [Message("user", "Weather in Oslo?")]


@pytest.fixture(scope="module")
def runner(gemma4_dir):
    from gemmacli.device import placement
    from gemmacli.runners.chat import ChatRunner

    return ChatRunner.load(gemma4_dir, placement("cpu", "float32"), name="tiny-gemma4")


def test_the_template_declares_tools_and_writes_calls_and_results(runner):
    history = [*ASK, Message("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),))]
    history.append(Message("tool", "-3 C", tool_call_id="call_1"))
    prompt = runner.tokenizer.decode(runner.encode_chat(history, ToolUse((WEATHER,))).input_ids[0])
    assert runner.tool_format is GEMMA4 and "<|tool>declaration:get_weather{" in prompt
    assert '<|tool_call>call:get_weather{city:<|"|>Oslo<|"|>}<tool_call|>' in prompt
    assert prompt.endswith('<|tool_response>response:get_weather{value:<|"|>-3 C<|"|>}<tool_response|>')


def test_the_detokenizer_spells_the_tokens_the_parser_reads(runner):
    text = '<|tool_call>call:f{a:<|"|>x y<|"|>}<tool_call|>'
    ids = runner.tokenizer.encode(text, add_special_tokens=False)
    spelled = {runner.tokenizer.convert_tokens_to_ids(t): t for t in GEMMA4.spelled}
    assert len(set(ids) & set(spelled)) == 3  # the markers are special tokens
    decoder = IncrementalDecoder(runner.tokenizer, [], spelled)
    assert "".join(decoder.push(i) for i in ids) == text
    plain = IncrementalDecoder(runner.tokenizer, [])
    assert "".join(plain.push(i) for i in ids) == "call:f{a:x y}"


@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_required_calls_validate(runner, choice):
    for seed in range(4):
        c = runner.complete(ASK, GenParams(max_tokens=300, seed=seed), ToolUse((WEATHER, Tool("noop")), choice))
        assert c.finish_reason == "tool_calls" and c.tool_calls and not c.text.strip()
        for call in c.tool_calls:
            if call.name == "get_weather":
                jsonschema.validate(json.loads(call.arguments), {**CITY, "additionalProperties": False})
            else:
                assert choice == "required" and json.loads(call.arguments) == {}


def test_the_server_streams_gemma4_calls_and_takes_their_results_back(runner):
    from support.liveserver import openai_on

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]
    messages = [{"role": "user", "content": "Oslo?"}]
    with openai_on(runner, "tiny-gemma4") as client:
        kw = dict(model="tiny-gemma4", tools=tools, max_tokens=300)
        with client.chat.completions.stream(**kw, messages=messages, tool_choice="required", seed=1) as stream:
            final = stream.get_final_completion()
        message = final.choices[0].message
        assert final.choices[0].finish_reason == "tool_calls" and message.tool_calls[0].function.name == "get_weather"
        jsonschema.validate(json.loads(message.tool_calls[0].function.arguments), CITY)
        call = message.tool_calls[0]
        result = {"role": "tool", "tool_call_id": call.id, "content": "-3 C"}
        messages += [message.model_dump(exclude_none=True), result]
        answer = client.chat.completions.create(**kw, messages=messages, temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls") and answer.usage.prompt_tokens > 40


def test_cli_prints_native_calls(cli, gemma4_dir, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]))
    args = ["chat", "-m", gemma4_dir, "Weather in Oslo?", "--tools", tools, "--tool-choice", "required"]
    result = cli(*args, "--max-tokens", "300", "--seed", "2", "-q")
    assert result.exit_code == 0, result.output
    calls = json.loads(result.stdout)
    assert calls and calls[0]["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), CITY)
