"""The tool formats without a model: parsing calls (never eval), the parser stage on streamed text, the
prompts they render and the grammars they constrain decoding to."""

from __future__ import annotations

import json

import pytest

from gemmacli.runners import grammar
from gemmacli.runners.tools import read_tools, tool_format
from gemmacli.runners.tools.gemma4 import GEMMA4
from gemmacli.runners.tools.hermes import HERMES
from gemmacli.runners.tools.notation import NotationError, SchemaLark, literal, read
from gemmacli.runners.tools.pythonic import PYTHONIC
from gemmacli.runners.tools.stage import PromptTools, ToolCallParser
from gemmacli.types import Message, Tool, ToolCall, ToolUse

WEATHER = Tool(
    "get_weather",
    "Weather",
    json.dumps({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}),
)
CLOCK = Tool("get_time")
USE = ToolUse((WEATHER, CLOCK))


def parsed(calls) -> list[tuple[str, dict]]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[get_weather(city='Paris', days=3)]", [("get_weather", {"city": "Paris", "days": 3})]),
        ('[get_weather(city="Oslo"), get_time()]', [("get_weather", {"city": "Oslo"}), ("get_time", {})]),
        ("get_time()", [("get_time", {})]),
        ("```tool_code\n[get_time()]\n```", [("get_time", {})]),
        ("[get_weather(city=null, days=-2)]", [("get_weather", {"city": None, "days": -2})]),
        ("[get_weather(city={'a': [true, False]})]", [("get_weather", {"city": {"a": [True, False]}})]),
    ],
)
def test_pythonic_calls_parse(text, expected):
    assert parsed(PYTHONIC.parse(text, USE)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[get_weather(city='Par",  # not whole yet
        "[1, 2, 3]",
        "[unknown_tool()]",
        "[get_weather('Paris')]",  # positional
        "[get_weather(**kw)]",
        "[get_weather(city=__import__('os').getcwd())]",  # a call inside: refused, never run
        "[get_weather(city=open('x'))]",
        "[get_weather(city=2 + 2)]",
        "The weather is fine.",
    ],
)
def test_pythonic_refuses_what_is_not_a_whole_literal_call(text):
    assert PYTHONIC.parse(text, USE) is None


def test_hermes_calls_parse():
    text = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": "{}"}</tool_call>'
    )
    assert parsed(HERMES.parse(text, USE)) == [("get_weather", {"city": "Rome"}), ("get_time", {})]
    assert HERMES.parse('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', USE) is None
    assert HERMES.parse('<tool_call>{"name": "get_time"', USE) is None


def feed(parser: ToolCallParser, pieces: list[str]) -> tuple[str, list[ToolCall]]:
    text = "".join(parser.feed(p) for p in pieces) + parser.flush()
    return text, list(parser.take())


def test_auto_text_streams_as_content_at_once():
    parser = ToolCallParser(PromptTools(PYTHONIC, USE))
    assert parser.feed("The") == "The" and parser.feed(" sky") == " sky"
    assert feed(parser, [" is blue."]) == (" is blue.", [])


def test_auto_call_is_held_then_handed_over_whole_and_ends_the_turn():
    parser = ToolCallParser(PromptTools(PYTHONIC, USE))
    assert [parser.feed(p) for p in [" [", "get_time", "()"]] == ["", "", ""] and not parser.take()
    assert parser.feed("]") == "" and parsed(parser.take()) == [("get_time", {})] and parser.stopped


def test_a_list_that_is_no_call_is_content_in_the_end():
    parser = ToolCallParser(PromptTools(PYTHONIC, USE))
    assert feed(parser, ["[1, ", "2]"]) == ("[1, 2]", [])


def test_hermes_text_before_a_call_streams_and_the_call_follows():
    parser = ToolCallParser(PromptTools(HERMES, USE))
    out = [parser.feed(p) for p in ["Let me check.", "<tool", "_call>", '{"name": "get_time", "arguments": {}}']]
    assert "".join(out) == "Let me check." and out[1] == ""  # "<tool" is held: it may begin a call
    assert parser.feed("</tool_call>") == "" and parsed(parser.take()) == [("get_time", {})]
    assert not parser.stopped  # Hermes models may write another block


def test_parallel_false_keeps_the_first_call():
    parser = ToolCallParser(PromptTools(PYTHONIC, ToolUse((WEATHER, CLOCK), "required", parallel=False)))
    assert parsed(feed(parser, ["[get_time(), get_weather(city='x')]"])[1]) == [("get_time", {})]


HISTORY = [
    Message("system", "Be brief."),
    Message("user", "Weather in Paris?"),
    Message("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
    Message("tool", "21 C", tool_call_id="call_1"),
]


def plain(message: Message) -> dict:
    return {"role": message.role, "content": message.content}


def test_pythonic_renders_tools_calls_and_results_in_alternating_turns():
    turns, kwargs = PYTHONIC.render(HISTORY, USE, plain)
    assert kwargs == {} and [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[0]["content"].endswith("Be brief.") and '"name": "get_weather"' in turns[0]["content"]
    assert turns[2]["content"] == "[get_weather(city='Paris')]"
    assert turns[3]["content"] == "```tool_output\nget_weather: 21 C\n```"
    assert all(set(t) == {"role", "content"} for t in turns)


def test_hermes_hands_tools_and_calls_to_the_template():
    turns, kwargs = HERMES.render(HISTORY, USE, plain)
    assert [t["function"]["name"] for t in kwargs["tools"]] == ["get_weather", "get_time"]
    assert turns[2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert turns[3] == {"role": "tool", "content": "21 C", "tool_call_id": "call_1", "name": "get_weather"}


@pytest.mark.parametrize("fmt", [PYTHONIC, HERMES, GEMMA4])
@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_constrained_grammars_compile(fmt, choice):
    grammar.lark(fmt.lark(ToolUse((WEATHER, CLOCK), choice)), "tools")
    content = grammar.json_object("response_format")
    grammar.checked(grammar.either(fmt.lark(ToolUse((WEATHER, CLOCK))), content), "tools")


def test_the_format_follows_the_family_and_the_template():
    assert tool_format("gemma3_text", "{{ tools }}") is PYTHONIC
    assert tool_format("qwen2", "{% if tools %}...{% endif %}") is HERMES
    assert tool_format("llama", "{{ messages }}") is PYTHONIC
    assert tool_format("gemma4", "{{ '<|tool_call>call:' + name }}") is GEMMA4


def test_read_tools_takes_openai_definitions():
    (tool,) = read_tools({"tools": [{"type": "function", "function": {"name": "f", "description": "d"}}]})
    assert tool.name == "f" and json.loads(tool.parameters)["type"] == "object"


Q = '<|"|>'


@pytest.mark.parametrize(
    "text,expected",
    [
        (f"{{city:{Q}Oslo, Norway{Q},days:3}}", {"city": "Oslo, Norway", "days": 3}),
        (f"{{a:[1,-2.5e3,true,null],b:{{c:{Q}{Q}}}}}", {"a": [1, -2500.0, True, None], "b": {"c": ""}}),
        (f'{{{Q}odd key{Q}:"json \\"quoted\\"",n:false}}', {"odd key": 'json "quoted"', "n": False}),
        (f"{{text:{Q}a {{b:[c]}} ,: {Q}}}", {"text": "a {b:[c]} ,: "}),  # the notation's marks inside a string
        ("{ a : 1 , b : [ ] }", {"a": 1, "b": []}),
        ("{}", {}),
    ],
)
def test_gemma_notation_reads(text, expected):
    value, end = read(text)
    assert value == expected and end == len(text)


@pytest.mark.parametrize("text", [f"{{a:{Q}open}}", "{a:1", "{a 1}", "{a:1;b:2}", "[1 2]", "{a:nope}"])
def test_gemma_notation_refuses_what_is_not_a_whole_value(text):
    with pytest.raises(NotationError):
        read(text)


def test_gemma4_calls_parse():
    text = f"<|tool_call>call:get_weather{{city:{Q}Rome{Q},days:2}}<tool_call|>"
    text += "<|tool_call>call:get_time{}<tool_call|>"
    assert parsed(GEMMA4.parse(text, USE)) == [("get_weather", {"city": "Rome", "days": 2}), ("get_time", {})]
    assert parsed(GEMMA4.parse(text + "<|tool_response>", USE))[1] == ("get_time", {})
    assert GEMMA4.parse("<|tool_call>call:nope{}<tool_call|>", USE) is None
    assert GEMMA4.parse(f"<|tool_call>call:get_weather{{city:{Q}Ro", USE) is None
    assert GEMMA4.parse("<|tool_call>call:get_time{} trailing<tool_call|>", USE) is None


def test_gemma4_text_streams_then_the_call_ends_the_turn_at_the_results_block():
    parser = ToolCallParser(PromptTools(GEMMA4, USE))
    pieces = ["Checking.", "<|tool_call>", "call:get_weather{city:", Q, "Oslo", Q, "}", "<tool_call|>"]
    out = [parser.feed(p) for p in pieces]
    assert "".join(out) == "Checking." and parsed(parser.take()) == [("get_weather", {"city": "Oslo"})]
    assert not parser.stopped and parser.feed("<|tool_response>") == "" and parser.stopped


def test_gemma4_hands_calls_to_the_template_as_objects():
    turns, kwargs = GEMMA4.render(HISTORY, USE, plain)
    assert [t["function"]["name"] for t in kwargs["tools"]] == ["get_weather", "get_time"]
    assert turns[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}


def test_schema_lark_follows_the_schema():
    schema = {
        "type": "object",
        "properties": {
            "unit": {"enum": ["c", "f"]},
            "when": {"$ref": "#/$defs/Day"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "minItems": 1},
            "n": {"type": ["integer", "null"]},
        },
        "$defs": {"Day": {"type": "string", "const": "today"}},
    }
    rules = SchemaLark()
    top = rules.object(schema, schema)
    text = f"start: {top}\n{rules.grammar()}"
    grammar.lark(text, "tools")  # compiles
    assert literal("today") in text and f'<|"|> {json.dumps("c")} <|"|>' in text and "{1,4}" not in text
    assert '"unit:"' in text and "INTEGER" in text and '"null"' in text and "{0,4}" in text
