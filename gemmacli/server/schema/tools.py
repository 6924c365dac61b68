"""Tool calling on the wire, OpenAI's shape: tool definitions and tool_choice in, assistant tool_calls in a
history, and tool_calls out (whole in a response; streamed as `delta.tool_calls`, the name first)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType

from gemmacli.errors import InvalidParamError
from gemmacli.runners.tools import check_tools
from gemmacli.types import Tool, ToolCall, ToolUse

# -- request


class FunctionDef(Struct):
    name: str
    description: str | None = None
    parameters: Any = UNSET  # absent: a function without parameters
    strict: bool | None = None  # honoured either way when a call is required: the arguments always validate


class ToolDef(Struct):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Struct):
    name: str


class NamedToolChoice(Struct):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class CalledFunction(Struct):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallIn(Struct):
    id: str
    function: CalledFunction
    type: Literal["function"] = "function"


def tool_use(tools: list[ToolDef] | None, choice: ToolChoice | None, parallel: bool | None) -> ToolUse | None:
    """The request's tools as the runner takes them, checked (names, schemas, the choice); None when the model
    is not to call any (no tools, or tool_choice none)."""
    if isinstance(choice, NamedToolChoice):
        choice = choice.function.name
    choice = choice or "auto"
    for i, tool in enumerate(tools or ()):
        if tool.function.parameters is not UNSET and not isinstance(tool.function.parameters, dict):
            param = f"tools[{i}].function.parameters"
            raise InvalidParamError(f"{param} must be a JSON Schema object", param=param)
    use = ToolUse(tuple(_tool(t.function) for t in tools or ()), choice, parallel is not False)
    if choice == "none":
        return None
    check_tools(use)
    return use if use.tools else None


def _tool(function: FunctionDef) -> Tool:
    """A function without parameters gets Tool's own default: an object with none."""
    description = function.description or ""
    if function.parameters is UNSET:
        return Tool(function.name, description)
    return Tool(function.name, description, json.dumps(function.parameters))


def history_calls(calls: list[ToolCallIn] | None, param: str) -> tuple[ToolCall, ...]:
    """An assistant turn's calls; their arguments must be a JSON object, as the model's own calls are."""
    out = []
    for j, call in enumerate(calls or ()):
        try:
            arguments = json.loads(call.function.arguments)
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            where = f"{param}.tool_calls[{j}].function.arguments"
            raise InvalidParamError(f"{where} must be a JSON object, as text", param=where)
        out.append(ToolCall(call.id, call.function.name, call.function.arguments))
    return tuple(out)


# -- response


class FunctionOut(Struct):
    name: str
    arguments: str


class ToolCallOut(Struct):
    id: str
    function: FunctionOut
    type: str = "function"

    @classmethod
    def build(cls, calls: Sequence[ToolCall]) -> list[ToolCallOut]:
        return [cls(c.id, FunctionOut(c.name, c.arguments)) for c in calls]


class FunctionPiece(Struct):
    arguments: str
    name: str | UnsetType = UNSET


class ToolCallPiece(Struct):
    """A streamed piece of a call: the first carries its id, type and name; the others, arguments."""

    index: int
    function: FunctionPiece
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET


def call_pieces(call: ToolCall, index: int) -> list[ToolCallPiece]:
    """OpenAI's order: the call's id, type and name (with empty arguments) first, then its arguments."""
    return [
        ToolCallPiece(index, FunctionPiece("", call.name), call.id, "function"),
        ToolCallPiece(index, FunctionPiece(call.arguments)),
    ]
