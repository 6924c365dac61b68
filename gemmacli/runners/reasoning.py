"""Thinking models: their thoughts kept apart from their answer.

Gemma 4 thinks in a channel: `<|channel>thought\\n ... <channel|>`, then the answer. Both markers are special
tokens, which the detokenizer drops, so the splitter follows token ids: text inside the channel is reasoning
(streamed as `reasoning_content`, never as content), the rest is the answer. The channel's "thought" label is
not part of the thoughts.
"""

from __future__ import annotations

from collections.abc import Sequence

CHANNELS = (("<|channel>", "<channel|>"),)  # (opens, closes) per family that thinks in a token-marked channel
LABEL = "thought"


class ReasoningSplitter:
    def __init__(self, opens: int, closes: int):
        self.opens, self.closes = opens, closes
        self.inside = False
        self.head = ""  # the channel's first text, until its label line is known
        self.tokens = 0  # tokens spent thinking, markers included
        self.pending = ""  # reasoning text not yet handed to a delta

    @classmethod
    def build(cls, tokenizer, prompt_tail: Sequence[int] = ()) -> ReasoningSplitter | None:
        """A splitter for tokenizers that have a thinking channel; None for the others. A prompt that ends
        inside the channel (a template that opens it for the model) starts the reply in its thoughts."""
        for opens, closes in CHANNELS:
            ids = [special_id(tokenizer, token) for token in (opens, closes)]
            if None not in ids:
                splitter = cls(*ids)
                splitter.inside = _last(prompt_tail, ids[0]) > _last(prompt_tail, ids[1])
                return splitter
        return None

    def route(self, token: int, piece: str) -> tuple[str, str]:
        """(answer text, reasoning text) of `token`, whose text is `piece`."""
        if token == self.opens:
            self.inside, self.head, self.tokens = True, "", self.tokens + 1
            return "", ""
        if token == self.closes:
            self.inside, self.tokens = False, self.tokens + 1
            return "", self._unlabelled(flush=True)
        if not self.inside:
            return piece, ""
        self.tokens += 1
        if self.head is not None:
            self.head += piece
            return "", self._unlabelled(flush=False)
        return "", piece

    def _unlabelled(self, flush: bool) -> str:
        """The channel's opening text without its "thought" label line, once it can be told apart."""
        if self.head is None:
            return ""
        head = self.head
        if not flush and LABEL.startswith(head.strip()) and "\n" not in head:
            return ""  # still possibly the label
        self.head = None
        return head[len(LABEL) :].lstrip("\n") if head.startswith(LABEL) else head

    def flush(self) -> None:
        """The sequence ended mid-thought: what the channel holds is reasoning all the same."""
        if self.inside:
            self.pending += self._unlabelled(flush=True)

    def take(self) -> str:
        taken, self.pending = self.pending, ""
        return taken


def special_id(tokenizer, token: str) -> int | None:
    """The id of `token` if the tokenizer has it as one token of its own (not its unknown token)."""
    convert = getattr(tokenizer, "convert_tokens_to_ids", None)
    found = convert(token) if convert is not None else None
    return None if found is None or found == getattr(tokenizer, "unk_token_id", None) else found


def _last(ids: Sequence[int], token: int) -> int:
    return max((i for i, t in enumerate(ids) if t == token), default=-1)
