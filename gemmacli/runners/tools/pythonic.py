"""The pythonic tool format, for models without tool tokens (Gemma 3): the tools and how to call them go at
the head of the first user turn, a turn of calls is a Python list `[name(arg=value, ...), ...]`, and results
come back as a user turn holding a `tool_output` block. Calls are read with `ast`: literals only, never eval.
"""

from __future__ import annotations

import ast
import json
import uuid
from collections.abc import Callable, Sequence

from gemmacli.runners.grammar import json_literal
from gemmacli.runners.tools import MAX_CALLS, arguments, call_names, offered, with_defs
from gemmacli.types import Message, ToolCall, ToolUse

INSTRUCTIONS = """You have access to functions. To call one or more of them, reply with nothing but a Python \
list of calls in this form:
[func_name1(param_name1=value1, param_name2=value2), func_name2(param=value)]
Argument values are Python literals. {must}The results come back to you in a tool_output block.
The functions, with their parameters as JSON Schema:
{tools}"""

MUST = {"auto": "", "required": "You must call at least one function. "}
OURS = "_ours"  # marks the turns this format writes itself
FENCES = ("```tool_code", "```python", "```")
JSON_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class Pythonic:
    name = "pythonic"
    openers = ("[", *FENCES[:2])
    anywhere = False
    spelled: tuple[str, ...] = ()
    ends: tuple[str, ...] = ()

    def render(
        self, messages: Sequence[Message], use: ToolUse | None, plain: Callable[[Message], dict]
    ) -> tuple[list[dict], dict]:
        names = call_names(messages)
        turns = [self._turn(m, plain, names) for m in messages]
        if use is not None and use.tools:
            turns.insert(0, {"role": "system", "content": _instructions(use), OURS: True})
        return _merged(turns), {}

    def _turn(self, message: Message, plain: Callable[[Message], dict], names: dict[str, str]) -> dict:
        if message.role == "tool":
            name = names.get(message.tool_call_id or "", "function")
            return {"role": "user", "content": f"```tool_output\n{name}: {_text(message)}\n```", OURS: True}
        turn = plain(message)
        if message.tool_calls:
            calls = "[" + ", ".join(_call_text(c) for c in message.tool_calls) + "]"
            turn["content"] = f"{_text(message)}\n{calls}".lstrip()
        return turn

    def lark(self, use: ToolUse) -> str:
        """A list of calls (one, unless parallel) to the offered tools, each argument a JSON value valid against
        its property's schema (JSON's true/false/null are read as Python's). Every property is written, in the
        schema's order: a call that names them all validates, and the model cannot trail off into options."""
        rules = []
        for i, tool in enumerate(offered(use)):
            root = json.loads(tool.parameters)
            args = [
                f"{json.dumps(key + '=')} %json{json_literal(with_defs(schema, root))}"
                for key, schema in (root.get("properties") or {}).items()
            ]
            body = ' ", " '.join(args)
            rules.append(f'call{i}: "{tool.name}(" {body} ")"' if args else f'call{i}: "{tool.name}()"')
        calls = f'call (", " call){{0,{MAX_CALLS - 1}}}' if use.parallel else "call"
        alternatives = " | ".join(f"call{i}" for i in range(len(rules)))
        return "\n".join([f'start: "[" {calls} "]"', f"call: {alternatives}", *rules])

    def parse(self, text: str, use: ToolUse) -> list[ToolCall] | None:
        """The calls `text` holds, if it is one whole list of calls to known tools (an optional ``` fence
        around it); else None."""
        source = _unfenced(text.strip())
        if not source.endswith(("]", ")")):
            return None  # cheap: most pieces of a call being written end elsewhere
        try:
            body = ast.parse(source, mode="eval").body
        except SyntaxError:
            return None
        nodes = body.elts if isinstance(body, ast.List) else [body]
        known = {t.name for t in use.tools}
        try:
            calls = [_call(node, known) for node in nodes]
        except ValueError:
            return None
        return calls or None


def _instructions(use: ToolUse) -> str:
    tools = "\n".join(
        json.dumps({"name": t.name, "description": t.description, "parameters": json.loads(t.parameters)})
        for t in offered(use)
    )
    must = MUST.get(use.choice, f"You must call the function {use.choice}. ")
    return INSTRUCTIONS.format(must=must, tools=tools)


def _call(node: ast.expr, known: set[str]) -> ToolCall:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in known):
        raise ValueError("not a call to a known tool")
    if node.args or any(k.arg is None for k in node.keywords):
        raise ValueError("positional or ** arguments")
    args = {k.arg: _literal(k.value) for k in node.keywords}
    return ToolCall(f"call_{uuid.uuid4().hex[:24]}", node.func.id, json.dumps(args, ensure_ascii=False))


def _literal(node: ast.expr):
    """A JSON value from a literal's syntax tree: constants, lists, dicts, negative numbers, and JSON's
    true/false/null besides Python's; anything else (a name, a call, an operation) is refused."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool | type(None)):
        return node.value
    if isinstance(node, ast.Name) and node.id in JSON_NAMES:
        return JSON_NAMES[node.id]
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {str(_literal(k)): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise ValueError("not a literal")


def _unfenced(text: str) -> str:
    for fence in FENCES:
        if text.startswith(fence):
            text = text[len(fence) :]
            return text.removesuffix("```").strip()
    return text


def _call_text(call: ToolCall) -> str:
    args = arguments(call)
    return f"{call.name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def _text(message: Message) -> str:
    return message.content if isinstance(message.content, str) else ""


def _merged(turns: list[dict]) -> list[dict]:
    """Our turns joined to a neighbour of the same role (a tool result and the user turn after it, our
    instructions and the client's system prompt): Gemma's template wants one system turn, then user and
    assistant turns in turn. The client's own turns are left as they are, for the template to judge."""
    out: list[dict] = []
    for turn in turns:
        if out and out[-1]["role"] == turn["role"] and (out[-1].get(OURS) or turn.get(OURS)):
            out[-1] = {"role": turn["role"], "content": _join(out[-1]["content"], turn["content"]), OURS: True}
        else:
            out.append(turn)
    return [{k: v for k, v in turn.items() if k != OURS} for turn in out]


def _join(a, b):
    if isinstance(a, str) and isinstance(b, str):
        return f"{a}\n\n{b}"
    parts = lambda c: [{"type": "text", "text": c}] if isinstance(c, str) else list(c)  # noqa: E731
    return parts(a) + parts(b)


PYTHONIC = Pythonic()
