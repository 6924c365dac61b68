"""Bad tools, tool histories and response formats: each a 400 in OpenAI's shape naming the field, answered
before any model is touched, with the server going on. On the fake chat runner: fast, no weights."""

from __future__ import annotations

import pytest
from support.helpers import check_openai_error

MODEL = "fake-chat"
USER = [{"role": "user", "content": "one two three"}]


@pytest.fixture
def http(fake_chat):
    return fake_chat


def chat(**kw) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 4, **kw}


def tool(name: str = "get_weather", parameters=None) -> dict:
    function = {"name": name, "description": "d"}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def schema_format(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
CASES = {
    "tool name with a space": (chat(tools=[tool("get weather")]), "tools[0].function.name"),
    "tool name too long": (chat(tools=[tool("x" * 65)]), "tools[0].function.name"),
    "duplicate tool names": (chat(tools=[tool(), tool()]), "tools[1].function.name"),
    "parameters not an object": (chat(tools=[tool(parameters=[1, 2])]), "tools[0].function.parameters"),
    "parameters of type string": (chat(tools=[tool(parameters={"type": "string"})]), "tools[0].function.parameters"),
    "parameters the engine rejects": (
        chat(tools=[tool(parameters={"type": "object", "properties": {"a": {"type": "strin"}}})]),
        "tools[0].function.parameters",
    ),
    "tool type other than function": (chat(tools=[{"type": "code", "function": {"name": "f"}}]), "tools[0].type"),
    "tool_choice naming an unknown tool": (
        chat(tools=[tool()], tool_choice={"type": "function", "function": {"name": "nope"}}),
        "tool_choice",
    ),
    "tool_choice required without tools": (chat(tool_choice="required"), "tool_choice"),
    "tool_choice unknown word": (chat(tools=[tool()], tool_choice="always"), "tool_choice"),
    "tool message without tool_call_id": (
        chat(messages=[*USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "20 C"}]),
        "messages[2].tool_call_id",
    ),
    "call arguments that are not JSON": (
        chat(
            messages=[
                *USER,
                {"role": "assistant", "tool_calls": [{**CALL, "function": {**CALL["function"], "arguments": "{"}}]},
            ]
        ),
        "messages[1].tool_calls[0].function.arguments",
    ),
    "tool_calls on a user message": (
        chat(messages=[{"role": "user", "content": "x", "tool_calls": [CALL]}]),
        "messages[0].tool_calls",
    ),
    "legacy functions": (chat(functions=[{"name": "f"}]), "functions"),
    "response_format of an unknown type": (chat(response_format={"type": "yaml"}), "response_format.type"),
    "json_schema without json_schema": (chat(response_format={"type": "json_schema"}), "response_format.json_schema"),
    "schema that is not an object": (
        chat(response_format=schema_format([1])),
        "response_format.json_schema.schema",
    ),
    "schema the engine rejects": (
        chat(response_format=schema_format({"type": "object", "properties": {"a": {"type": "strin"}}})),
        "response_format.json_schema.schema",
    ),
    "schema name with a space": (
        chat(response_format={"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
        "response_format.json_schema.name",
    ),
}


@pytest.mark.parametrize("body,param", CASES.values(), ids=CASES.keys())
def test_bad_tools_and_formats_name_the_field(http, body, param):
    error = check_openai_error(http.post("/v1/chat/completions", json=body), 400, param=param)
    assert error["message"]
    assert http.post("/v1/chat/completions", json=chat()).status_code == 200  # and the server goes on


def test_the_engines_reason_reaches_the_client(http):
    bad = schema_format({"type": "object", "properties": {"a": {"type": "strin"}}})
    error = check_openai_error(http.post("/v1/chat/completions", json=chat(response_format=bad)), 400)
    assert "strin" in error["message"]


def test_completions_check_response_format_too(http):
    body = {"model": MODEL, "prompt": "one", "response_format": schema_format("not a schema")}
    check_openai_error(http.post("/v1/completions", json=body), 400, param="response_format.json_schema.schema")


def test_tool_choice_none_and_auto_with_text_answers_are_content(http):
    """The counting script never calls: with auto, its text is content; with none, tools are not even offered."""
    for choice in ("auto", "none"):
        body = http.post("/v1/chat/completions", json=chat(tools=[tool()], tool_choice=choice)).json()
        message = body["choices"][0]["message"]
        assert message["content"] == " 3 4 5 6" and "tool_calls" not in message
        assert body["choices"][0]["finish_reason"] == "length"


def test_a_history_with_calls_and_results_is_accepted(http):
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}]
    messages.append({"role": "tool", "tool_call_id": "call_1", "content": "20 C"})
    assert http.post("/v1/chat/completions", json=chat(messages=messages, tools=[tool()])).status_code == 200
