"""Gemma 4's own tool calls. Its chat template declares the tools (`<|tool>declaration:NAME{...}<tool|>`) and
writes calls and their results; a call is `<|tool_call>call:NAME{key:value,...}<tool_call|>`, its arguments in
Gemma's notation (tools/notation.py), and after its calls the model opens the results' block, which ends the turn.

The markers are special tokens: the detokenizer spells them out (`spelled`) so that the parser can read them,
and the grammar names them as tokens.
"""

from __future__ import annotations

import json
import re
import uuid

from gemmacli.runners.tools import MAX_CALLS, closed, offered
from gemmacli.runners.tools.hermes import Hermes
from gemmacli.runners.tools.notation import QUOTE, NotationError, SchemaLark, read
from gemmacli.types import ToolCall, ToolUse

OPEN, CLOSE, RESULTS = "<|tool_call>", "<tool_call|>", "<|tool_response>"
CALL = re.compile(re.escape(OPEN) + r"\s*call:([A-Za-z0-9_.-]+)(.*?)" + re.escape(CLOSE), re.DOTALL)


class Gemma4(Hermes):
    """Rendered by the model's own template, as Hermes-style models are; its own calls and grammar."""

    name = "gemma4"
    openers = (OPEN,)
    anywhere = True
    spelled = (OPEN, CLOSE, QUOTE, RESULTS)
    ends = (RESULTS,)

    def lark(self, use: ToolUse) -> str:
        """Calls to the offered tools whose arguments, in the notation, validate against their parameters."""
        values = SchemaLark()
        functions = []
        for tool in offered(use):
            schema = closed(json.loads(tool.parameters))
            functions.append(f"{json.dumps(tool.name)} {values.object(schema, schema)}")
        call = f'call: <|tool_call> "call:" ({" | ".join(functions)}) <tool_call|>'
        start = f"start: call{{1,{MAX_CALLS}}}" if use.parallel else "start: call"
        return "\n".join([start, call, values.grammar()])

    def parse(self, text: str, use: ToolUse) -> list[ToolCall] | None:
        """The calls of every closed block in `text`, if each names a known tool and its arguments read; else None."""
        blocks = CALL.findall(text)
        rest = CALL.sub("", text).strip()
        if not blocks or (rest and rest not in self.ends):
            return None
        known = {t.name for t in use.tools}
        calls = []
        for name, body in blocks:
            try:
                arguments, end = read(body)
            except NotationError:
                return None
            if name not in known or not isinstance(arguments, dict) or body[end:].strip():
                return None
            calls.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, json.dumps(arguments, ensure_ascii=False)))
        return calls


GEMMA4 = Gemma4()
