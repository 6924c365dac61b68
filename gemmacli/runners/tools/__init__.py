"""Tool calls: how a model family is told about tools, how its calls look, and how they are read back.

Each family has a `ToolFormat`:
- `render`: the chat template's input (messages as dicts, extra template arguments) for a history that may
  hold calls and their results, with the tools on offer;
- `lark`: the grammar of a turn of calls whose arguments validate against each tool's parameters schema (what
  `tool_choice` required or a named function constrains decoding to);
- `openers`, `anywhere`, `parse`: what a turn of calls starts with, whether text may come before it, and the calls a
  piece of text holds (None until it holds a whole turn of them);
- `spelled`, `ends`: special tokens the parser reads, so the detokenizer writes them out, and the ones among them
  that end a turn of calls.

Gemma 4 has tool tokens and a template that takes `tools`: its own notation (tools/gemma4.py). Gemma 3 has none:
it gets our own pythonic format (`[name(arg=value)]`, read with `ast`, never `eval`). Other models whose chat
template takes `tools` use that template and Hermes' `<tool_call>` JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from gemmacli.errors import InvalidParamError
from gemmacli.runners import grammar
from gemmacli.types import Message, Tool, ToolCall, ToolUse

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule
# Calls in one constrained turn, at most: a small model held to calls can otherwise repeat one until max_tokens.
MAX_CALLS = 8


class ToolFormat(Protocol):
    name: str
    openers: tuple[str, ...]
    anywhere: bool  # text may come before the first call (else a turn is text or calls, decided at its start)
    spelled: tuple[str, ...]
    ends: tuple[str, ...]

    def render(
        self, messages: Sequence[Message], use: ToolUse | None, plain: Callable[[Message], dict]
    ) -> tuple[list[dict], dict]: ...

    def lark(self, use: ToolUse) -> str: ...

    def parse(self, text: str, use: ToolUse) -> list[ToolCall] | None: ...


def tool_format(model_type: str, chat_template: str | None) -> ToolFormat:
    """The format for a model, from its family (the config's model_type) and its chat template."""
    from gemmacli.runners.tools.gemma4 import GEMMA4, OPEN
    from gemmacli.runners.tools.hermes import HERMES
    from gemmacli.runners.tools.pythonic import PYTHONIC

    if chat_template and OPEN in chat_template:
        return GEMMA4
    if model_type.startswith("gemma"):
        return PYTHONIC
    return HERMES if chat_template and "tools" in chat_template else PYTHONIC


def check_tools(use: ToolUse, param: str = "tools") -> None:
    """Names, duplicates, parameter schemas (each must compile to a grammar) and the choice, before any model
    is touched: a 400 naming the field."""
    seen: set[str] = set()
    for i, tool in enumerate(use.tools):
        where = f"{param}[{i}].function"
        if not TOOL_NAME.match(tool.name):
            raise InvalidParamError(
                f"{where}.name must match ^[a-zA-Z0-9_-]{{1,64}}$, got {tool.name!r}", param=f"{where}.name"
            )
        if tool.name in seen:
            raise InvalidParamError(f"two tools are named {tool.name!r}", param=f"{where}.name")
        seen.add(tool.name)
        schema = json.loads(tool.parameters)
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise InvalidParamError(
                f"{where}.parameters must be a JSON Schema of type object", param=f"{where}.parameters"
            )
        grammar.json_schema(schema, f"{where}.parameters")
    if use.choice == "required" and not use.tools:
        raise InvalidParamError("tool_choice is required, but no tools are given", param="tool_choice")
    if use.choice not in ("auto", "required") and use.choice not in seen:
        raise InvalidParamError(f"tool_choice names {use.choice!r}, which is not among the tools", param="tool_choice")


def read_tools(definitions: object, where: str = "tools") -> tuple[Tool, ...]:
    """OpenAI tool definitions as plain JSON (a list, or an object holding one under "tools"), as Tools; a
    definition of the wrong shape is an error naming it. `check_tools` judges the names and schemas."""
    if isinstance(definitions, dict) and "tools" in definitions:
        definitions = definitions["tools"]
    if not isinstance(definitions, list):
        raise InvalidParamError(f"{where} must be a list of tool definitions", param=where)
    tools = []
    for i, definition in enumerate(definitions):
        function = definition.get("function") if isinstance(definition, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidParamError(
                f'{where}[{i}] must look like {{"type": "function", "function": {{"name": ..., "parameters": ...}}}}',
                param=f"{where}[{i}]",
            )
        name, description = function["name"], function.get("description") or ""
        if "parameters" not in function:  # Tool's own default: an object with none
            tools.append(Tool(name, description))
        else:
            tools.append(Tool(name, description, json.dumps(function["parameters"])))
    return tuple(tools)


def offered(use: ToolUse) -> tuple[Tool, ...]:
    """The tools a turn may call: all of them, or the one tool_choice names."""
    return use.tools if use.choice in ("auto", "required") else tuple(t for t in use.tools if t.name == use.choice)


def openai_tools(tools: Sequence[Tool]) -> list[dict]:
    """Tools as OpenAI spells them, which is what chat templates that take `tools` expect."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": json.loads(t.parameters)},
        }
        for t in tools
    ]


def call_names(messages: Sequence[Message]) -> dict[str, str]:
    """Call id -> function name, over a history's assistant turns (tool results only carry the id)."""
    return {call.id: call.name for m in messages for call in m.tool_calls}


def arguments(call: ToolCall) -> dict:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {}


def closed(schema: dict) -> dict:
    """A parameters schema whose calls name no parameter it does not list, unless it says otherwise: what a
    constrained call holds to (OpenAI's strict mode asks the same), so a model cannot invent arguments."""
    return schema if "additionalProperties" in schema else {**schema, "additionalProperties": False}


def with_defs(schema: dict, root: dict) -> dict:
    """A property's schema on its own, still able to follow `$ref`s into its root's `$defs` (pydantic's)."""
    defs = {k: root[k] for k in ("$defs", "definitions") if k in root}
    return {**schema, **defs} if defs and isinstance(schema, dict) else schema
