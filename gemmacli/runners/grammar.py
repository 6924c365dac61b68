"""Constrained decoding: a grammar mask as a logits stage, with llguidance as the grammar engine.

llguidance compiles JSON Schema and Lark (with JSON Schema embedded through `%json{...}`) and answers, per
step, which tokens may come next as a bitmask, in tens of microseconds on a 262k vocabulary. It needs no
torch.compile and no other dependency. The grammar builders here run while a request is checked, before
any model is touched; they need no tokenizer. The mask needs one: an llguidance tokenizer built once
per tokenizer (about 4 s on Gemma's vocabulary), on the first constrained request.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np

from gemmacli.errors import InvalidParamError

# One space after ',' and ':' and no free whitespace: a small model cannot wander off into blank lines.
JSON_OPTIONS = {"whitespace_flexible": False}


def json_schema(schema: Any, param: str) -> str:
    """The grammar of JSON that validates against `schema` (a dict); a 400 naming `param` if it cannot be one."""
    if not isinstance(schema, dict):
        raise InvalidParamError(f"{param} must be a JSON Schema object, got {type(schema).__name__}", param=param)
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise InvalidParamError(f"{param} is not a usable JSON Schema: {exc}", param=param) from None
    return checked(grammar, param)


def json_object(param: str) -> str:
    """OpenAI's json_object mode: any JSON object."""
    return json_schema({"type": "object"}, param)


def lark(text: str, param: str) -> str:
    from llguidance import LLMatcher

    return checked(LLMatcher.grammar_from_lark(text), param)


def checked(grammar: str, param: str) -> str:
    """`grammar` if llguidance compiles it; otherwise a 400 naming `param`, with llguidance's own reason."""
    from llguidance import LLMatcher

    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        reason = " ".join(messages[0].split())  # its messages span lines, with a caret under the spot
        raise InvalidParamError(f"{param} cannot be compiled to a grammar: {reason}", param=param)
    return grammar


def either(lark_text: str, content: str) -> str:
    """One grammar for "the Lark grammar `lark_text`, or what the grammar `content` matches": tool calls, or an
    answer in the response format. A Lark rule may name another grammar of llguidance's set with @name."""
    first, *rest = json.loads(content)["grammars"]
    start = lark_text.replace("start:", "either_tools:", 1) + "\nstart: either_tools | @either_content"
    return json.dumps({"grammars": [{"lark_grammar": start}, {**first, "name": "either_content"}, *rest]})


def json_literal(schema: dict) -> str:
    """`schema` as Lark's `%json{...}` argument, with the same compact whitespace as a whole JSON grammar."""
    if isinstance(schema, dict):
        schema = {**schema, "x-guidance": {**JSON_OPTIONS, **schema.get("x-guidance", {})}}
    return json.dumps(schema, separators=(",", ":"), sort_keys=True)


class GrammarMask:
    """A logits stage: every token the grammar does not allow next gets -inf. Once the grammar is complete
    only an end-of-sequence token is allowed, so the sequence ends with finish reason "stop"."""

    def __init__(self, matcher, vocab_size: int):
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.bitmask = np.full((1, (vocab_size + 31) // 32), -1, dtype=np.int32)

    @classmethod
    def build(cls, grammar: str | None, tokenizer, vocab_size: int, eos_ids: Iterable[int]) -> GrammarMask | None:
        if grammar is None:
            return None
        from llguidance import LLMatcher

        matcher = LLMatcher(_llg_tokenizer(tokenizer, vocab_size, tuple(sorted(eos_ids))), grammar)
        if matcher.is_error():
            raise InvalidParamError(f"the grammar cannot be used: {matcher.get_error()}", param="response_format")
        return cls(matcher, vocab_size)

    def __call__(self, logits):
        import torch
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        allowed = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")[: self.vocab_size]
        allowed = torch.from_numpy(allowed.view(np.bool_)).to(logits.device)
        return logits.masked_fill(~allowed[: logits.shape[-1]], float("-inf"))

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):  # only if the sampler picked a masked token: a bug, not input
            raise RuntimeError(f"the grammar refused token {token}: {self.matcher.get_error()}")


_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


def _llg_tokenizer(tokenizer, vocab_size: int, eos_ids: tuple[int, ...]):
    """llguidance's view of `tokenizer`, built once per (tokenizer, vocabulary size, end tokens)."""
    import llguidance.hf

    with _tokenizers_lock:
        built = _tokenizers.setdefault(tokenizer, {})
        key = (vocab_size, eos_ids)
        if key not in built:
            built[key] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids))
        return built[key]
