"""Turning a stream of token ids into a stream of text, and cutting it at stop strings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Prompt tokens kept as decoding context so the first generated piece keeps its leading space.
CONTEXT_TOKENS = 5


class IncrementalDecoder:
    """Emits only the new text each token adds (the prefix/read offset scheme used by TGI and vLLM).

    Decoding a window that starts a few tokens back keeps SentencePiece spaces right, and a piece
    ending in U+FFFD (half a UTF-8 character) is held until the next token completes it.
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int], spelled: Mapping[int, str] | None = None):
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.spelled = spelled or {}  # special tokens written out as text (others are skipped)

    def push(self, token_id: int) -> str:
        text = self._push(token_id)
        return text + self.spelled[token_id] if token_id in self.spelled else text

    def _push(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        text = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        if len(text) <= len(prefix) or text.endswith("\ufffd"):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return text[len(prefix) :]


class StopMatcher:
    """Finds stop strings across piece boundaries; holds back text that may be the start of one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.held = ""
        self.stopped = False

    @classmethod
    def build(cls, stops: Sequence[str]) -> StopMatcher | None:
        """An output stage for the request's stop strings; None when it has none."""
        return cls(stops) if any(stops) else None

    def feed(self, piece: str) -> str:
        """The text safe to emit now; sets `stopped` (and drops the rest) once a stop string appears."""
        if not self.stops:
            return piece
        text = self.held + piece
        cut = min((i for s in self.stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.held = True, ""
            return text[:cut]
        keep = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text
