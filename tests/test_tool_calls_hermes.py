"""Tool calls on a model whose own chat template takes `tools` (a tiny random-weight one, tests/support/
hermes_kit.py): the template renders the tools, the calls and their results; calls are Hermes `<tool_call>`
JSON, constrained when required, parsed back, and streamed by the server like any other model's."""

from __future__ import annotations

import json

import jsonschema
import pytest

from gemmacli.runners.tools.hermes import HERMES
from gemmacli.types import GenParams, Message, Tool, ToolCall, ToolUse

pytestmark = pytest.mark.slow
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = Tool("get_weather", "Weather in a city", json.dumps(CITY))
ASK = [Message("user", "Weather in Oslo?")]


@pytest.fixture(scope="module")
def runner(hermes_dir):
    from gemmacli.device import placement
    from gemmacli.runners.chat import ChatRunner

    return ChatRunner.load(hermes_dir, placement("cpu", "float32"), name="tiny-hermes")


def test_the_template_renders_tools_calls_and_results(runner):
    history = [*ASK, Message("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),))]
    history.append(Message("tool", "-3 C", tool_call_id="call_1"))
    prompt = runner.tokenizer.decode(runner.encode_chat(history, ToolUse((WEATHER,))).input_ids[0])
    assert runner.tool_format is HERMES and '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in prompt
    assert "<tool_response>\n-3 C\n</tool_response>" in prompt


@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_required_calls_validate(runner, choice):
    for seed in range(3):
        c = runner.complete(ASK, GenParams(max_tokens=400, seed=seed), ToolUse((WEATHER, Tool("noop")), choice))
        assert c.finish_reason == "tool_calls" and c.tool_calls and not c.text.strip()
        for call in c.tool_calls:
            if call.name == "get_weather":
                jsonschema.validate(json.loads(call.arguments), CITY)
            else:
                assert choice == "required" and json.loads(call.arguments) == {}


def test_the_server_streams_hermes_calls(runner):
    from support.liveserver import openai_on

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]
    with openai_on(runner, "tiny-hermes") as client:
        kw = dict(model="tiny-hermes", messages=[{"role": "user", "content": "Oslo?"}], tools=tools, max_tokens=400)
        with client.chat.completions.stream(**kw, tool_choice="required", seed=1) as stream:
            final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls" and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), CITY)
