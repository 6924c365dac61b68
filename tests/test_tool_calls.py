"""Tool calls on the bundled Gemma 3 270M base model, through the official openai client and the OpenAI
Agents SDK. With tool_choice required or named, decoding is held to calls whose arguments validate against
the tool's schema, so these pass whatever the model would have said on its own."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from gemmacli.types import Message, Tool, ToolCall, ToolUse

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now"}},
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def schema_of(name: str) -> dict:
    function = next(t["function"] for t in TOOLS if t["function"]["name"] == name)
    return function.get("parameters", {"type": "object"})


def check_calls(calls) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), schema_of(call.function.name))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_required_gives_schema_valid_calls(openai_client, seed):
    r = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=200, seed=seed
    )
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    check_calls(choice.message.tool_calls)


def test_a_named_function_is_the_one_called_once_without_parallel_calls(openai_client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False, max_tokens=80
    )
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    check_calls([call])


def test_streamed_calls_are_assembled_by_the_client(openai_client):
    kw = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=200, seed=3)
    whole = openai_client.chat.completions.create(**kw).choices[0].message.tool_calls
    with openai_client.chat.completions.stream(**kw, stream_options={"include_usage": True}) as stream:
        pieces = [e.chunk for e in stream if e.type == "chunk"]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    check_calls(calls)
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        (c.function.name, c.function.arguments) for c in whole
    ]
    first = next(p.choices[0].delta.tool_calls[0] for p in pieces if p.choices and p.choices[0].delta.tool_calls)
    assert first.id and first.type == "function" and first.function.name == calls[0].function.name
    assert final.choices[0].finish_reason == "tool_calls" and pieces[-1].usage.completion_tokens > 0


def test_a_history_with_tool_results_goes_back_to_the_model(openai_client, chat_runner):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}]
    messages.append({"role": "tool", "tool_call_id": "call_1", "content": "21 degrees and sunny"})
    r = openai_client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=8, seed=0)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    history = [
        Message("user", ASK[0]["content"]),
        Message("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
        Message("tool", "21 degrees and sunny", tool_call_id="call_1"),
    ]
    prompt = chat_runner.tokenizer.decode(
        chat_runner.encode_chat(history, ToolUse((Tool("get_weather"),))).input_ids[0]
    )
    assert "[get_weather(city='Paris')]" in prompt and "get_weather: 21 degrees and sunny" in prompt


def test_agents_sdk_runs_a_function_tool(server):
    """The Agents SDK's chat-completions model class, a function tool, tool_choice required: the base model's
    call validates, and the SDK executes it."""
    import agents
    from openai import AsyncOpenAI

    seen: list[dict] = []

    @agents.function_tool
    def get_weather(city: str, unit: str) -> str:
        """The weather forecast for a city.

        Args:
            city: The city.
            unit: celsius or fahrenheit.
        """
        seen.append({"city": city, "unit": unit})
        return f"21 degrees {unit} in {city}"

    client = AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    agent = agents.Agent(
        name="forecaster",
        instructions="Answer questions about the weather.",
        model=agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        model_settings=agents.ModelSettings(tool_choice="required", parallel_tool_calls=False, max_tokens=200),
        tools=[get_weather],
        tool_use_behavior="stop_on_first_tool",
    )
    agents.set_tracing_disabled(True)
    result = asyncio.run(agents.Runner.run(agent, "What is the weather in Paris?", max_turns=2))
    assert len(seen) == 1 and isinstance(seen[0]["city"], str)
    assert result.final_output == f"21 degrees {seen[0]['unit']} in {seen[0]['city']}"


def test_auto_with_a_response_format_answers_with_calls_or_the_schemas_json(openai_client):
    """Tools and structured output together: each answer is either valid calls or JSON valid against the schema."""
    answer = {"type": "object", "properties": {"reply": {"enum": ["yes", "no"]}}, "required": ["reply"]}
    answer["additionalProperties"] = False
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": answer}}
    kinds = set()
    for seed in range(4):
        r = openai_client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, response_format=response_format, max_tokens=120, seed=seed
        )
        message = r.choices[0].message
        if message.tool_calls:
            check_calls(message.tool_calls)
            kinds.add("calls")
        else:
            jsonschema.validate(json.loads(message.content), answer)
            kinds.add("json")
    assert kinds  # which of the two a base model picks is its own business; both are valid
