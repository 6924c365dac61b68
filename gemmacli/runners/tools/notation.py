"""Gemma 4's notation for a call's arguments: `{city:<|"|>Oslo<|"|>,days:3,units:[<|"|>c<|"|>]}`.

Strings sit between `<|"|>` tokens (no escapes: the quote is a token, text cannot spell it), keys are bare,
numbers, true, false and null are JSON's. `read` turns the notation into Python values, and `SchemaLark`
writes the Lark grammar of the notation that validates against a JSON Schema, for constrained calls.
"""

from __future__ import annotations

import json
import re

QUOTE = '<|"|>'
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
BARE_KEY = re.compile(r"[^:{}\[\],<>\s]+")
WORDS = {"true": True, "false": False, "null": None}

# Any value, for what a schema leaves open (no type, `$ref` cycles, objects without properties). Numbers have
# at most 16 digits (what a double holds): a small model held to digits can otherwise write them until max_tokens.
GENERIC = r"""
gvalue: gstring | NUMBER | "true" | "false" | "null" | gobject | garray
gstring: <|"|> TEXT <|"|>
gobject: "{" (gpair ("," gpair)*)? "}"
gpair: KEY ":" gvalue
garray: "[" (gvalue ("," gvalue)*)? "]"
KEY: /[A-Za-z_][A-Za-z0-9_]*/
TEXT: /(?s:.*)/
NUMBER: /-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,15})?([eE][+-]?[0-9]{1,3})?/
INTEGER: /-?(0|[1-9][0-9]{0,15})/
"""


class NotationError(ValueError):
    pass


def read(text: str, at: int = 0) -> tuple[object, int]:
    """The value that starts at `text[at]` (spaces before it skipped), and where it ends."""
    at = _skip(text, at)
    if text.startswith(QUOTE, at):
        end = text.find(QUOTE, at + len(QUOTE))
        if end < 0:
            raise NotationError("unclosed string")
        return text[at + len(QUOTE) : end], end + len(QUOTE)
    if text.startswith('"', at):  # a JSON string, which some replies use instead
        try:
            return json.JSONDecoder().raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise NotationError(str(exc)) from None
    if text.startswith("{", at):
        return _object(text, at + 1)
    if text.startswith("[", at):
        return _array(text, at + 1)
    for word, value in WORDS.items():
        if text.startswith(word, at):
            return value, at + len(word)
    if number := NUMBER.match(text, at):
        return json.loads(number.group()), number.end()
    raise NotationError(f"no value at {text[at : at + 20]!r}")


def _object(text: str, at: int) -> tuple[dict, int]:
    pairs, at = _items(text, at, "}", _pair)
    return dict(pairs), at


def _array(text: str, at: int) -> tuple[list, int]:
    return _items(text, at, "]", read)


def _items(text: str, at: int, close: str, item) -> tuple[list, int]:
    """Comma-separated `item`s up to `close`, from just after the opening bracket."""
    items: list = []
    at = _skip(text, at)
    if text.startswith(close, at):
        return items, at + 1
    while True:
        value, at = item(text, at)
        items.append(value)
        at = _skip(text, at)
        if text.startswith(close, at):
            return items, at + 1
        if not text.startswith(",", at):
            raise NotationError(f"no ',' or '{close}' after an item")
        at += 1


def _pair(text: str, at: int) -> tuple[tuple[str, object], int]:
    key, at = _key(text, _skip(text, at))
    at = _skip(text, at)
    if not text.startswith(":", at):
        raise NotationError(f"no ':' after key {key!r}")
    value, at = read(text, at + 1)
    return (key, value), at


def _key(text: str, at: int) -> tuple[str, int]:
    if text.startswith((QUOTE, '"'), at):
        key, at = read(text, at)
        return str(key), at
    if bare := BARE_KEY.match(text, at):
        return bare.group(), bare.end()
    raise NotationError(f"no key at {text[at : at + 20]!r}")


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def literal(value: object) -> str:
    """`value` in the notation, as a Lark expression."""
    if isinstance(value, str):
        return f'<|"|> {json.dumps(value)} <|"|>' if value else '<|"|> <|"|>'
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(json.dumps(value))  # a Lark string of JSON's spelling: "true", "3"
    if isinstance(value, list):
        return " ".join(['"["', ' "," '.join(literal(v) for v in value), '"]"']) if value else '"[]"'
    if isinstance(value, dict):
        pairs = ' "," '.join(f"{json.dumps(str(k) + ':')} {literal(v)}" for k, v in value.items())
        return f'"{{" {pairs} "}}"' if value else '"{}"'
    raise NotationError(f"no notation for {type(value).__name__}")


class SchemaLark:
    """Lark rules for the notation of values valid against JSON Schemas; each `value` call returns the rule's
    name. Keywords it does not know widen to any value: the call still parses, as an unconstrained one would."""

    def __init__(self):
        self.rules: list[str] = []

    def grammar(self) -> str:
        return "\n".join([*self.rules, GENERIC])

    def value(self, schema: object, root: dict, depth: int = 0) -> str:
        index = len(self.rules)
        self.rules.append("")  # its place, so that nested rules number after it
        self.rules[index] = f"v{index}: {self._expression(schema, root, depth)}"
        return f"v{index}"

    def _expression(self, schema: object, root: dict, depth: int) -> str:
        if not isinstance(schema, dict) or depth > 8:
            return "gvalue"
        if "const" in schema:
            return literal(schema["const"])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return " | ".join(literal(v) for v in schema["enum"])
        if "$ref" in schema:
            return self.value(_resolve(schema["$ref"], root), root, depth + 1)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return " | ".join(self.value(s, root, depth + 1) for s in schema[key])
        kind = schema.get("type")
        if isinstance(kind, list):
            return " | ".join(self.value({**schema, "type": k}, root, depth + 1) for k in kind)
        return self._typed(kind, schema, root, depth)

    def _typed(self, kind: object, schema: dict, root: dict, depth: int) -> str:
        if kind == "string":
            low, high = schema.get("minLength", 0), schema.get("maxLength")
            if not low and high is None:
                return "gstring"
            return f'<|"|> /(?s:.){{{int(low)},{"" if high is None else int(high)}}}/ <|"|>'
        if kind in ("integer", "number"):
            return "INTEGER" if kind == "integer" else "NUMBER"
        if kind == "boolean":
            return '"true" | "false"'
        if kind == "null":
            return '"null"'
        if kind == "array":
            item = self.value(schema.get("items", {}), root, depth + 1)
            items = f'{item} ("," {item})*'
            return f'"[" {items} "]"' if schema.get("minItems", 0) > 0 else f'"[" ({items})? "]"'
        if kind == "object" and isinstance(schema.get("properties"), dict):
            return self.object(schema, root, depth)
        return "gobject" if kind == "object" else "gvalue"

    def object(self, schema: dict, root: dict, depth: int = 0) -> str:
        """Every property, in the schema's order: a call that names them all validates, and the model cannot
        trail off into keys the tool does not take."""
        properties = schema.get("properties") or {}
        pairs = [f"{json.dumps(key + ':')} {self.value(sub, root, depth + 1)}" for key, sub in properties.items()]
        return '"{" ' + ' "," '.join(pairs) + ' "}"' if pairs else '"{}"'


def _resolve(ref: object, root: dict) -> object:
    """A local `$ref` (`#/$defs/Name`) within `root`; anything else widens to any value."""
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return {}
    node: object = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
