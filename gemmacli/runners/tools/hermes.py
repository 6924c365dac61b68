"""Hermes-style tool calls, for models whose own chat template takes `tools` (Qwen, Hermes, many others): the
template renders the tools, the calls and their results; a call is `<tool_call>{"name", "arguments"}</tool_call>`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence

from gemmacli.runners.grammar import json_literal
from gemmacli.runners.tools import MAX_CALLS, arguments, call_names, closed, offered, openai_tools
from gemmacli.types import Message, ToolCall, ToolUse

OPEN, CLOSE = "<tool_call>", "</tool_call>"
BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


class Hermes:
    name = "hermes"
    openers = (OPEN,)
    anywhere = True
    spelled: tuple[str, ...] = ()
    ends: tuple[str, ...] = ()

    def render(
        self, messages: Sequence[Message], use: ToolUse | None, plain: Callable[[Message], dict]
    ) -> tuple[list[dict], dict]:
        names = call_names(messages)
        turns = [self._turn(m, plain, names) for m in messages]
        return turns, ({"tools": openai_tools(offered(use))} if use is not None and use.tools else {})

    @staticmethod
    def _turn(message: Message, plain: Callable[[Message], dict], names: dict[str, str]) -> dict:
        turn = plain(message)
        if message.role == "tool":
            turn.update(tool_call_id=message.tool_call_id, name=names.get(message.tool_call_id or "", ""))
        if message.tool_calls:
            turn["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments(c)}}
                for c in message.tool_calls
            ]
        return turn

    def lark(self, use: ToolUse) -> str:
        """Blocks whose JSON names an offered tool and carries arguments valid against its parameters."""
        choices = [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": closed(json.loads(t.parameters))},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in offered(use)
        ]
        call = f'call: "{OPEN}\\n" %json{json_literal({"anyOf": choices})} "\\n{CLOSE}"'
        start = f'start: call ("\\n" call){{0,{MAX_CALLS - 1}}}' if use.parallel else "start: call"
        return "\n".join([start, call])

    def parse(self, text: str, use: ToolUse) -> list[ToolCall] | None:
        """The calls of every closed block in `text`, if each names a known tool; else None."""
        blocks = BLOCK.findall(text)
        if not blocks or BLOCK.sub("", text).strip():
            return None
        known = {t.name for t in use.tools}
        calls = []
        for block in blocks:
            try:
                call = json.loads(block)
            except json.JSONDecodeError:
                return None
            args = call.get("arguments", call.get("parameters", {})) if isinstance(call, dict) else None
            if isinstance(args, str):
                args = _object(args)
            if not isinstance(call, dict) or call.get("name") not in known or not isinstance(args, dict):
                return None
            calls.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", call["name"], json.dumps(args, ensure_ascii=False)))
        return calls


def _object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


HERMES = Hermes()
