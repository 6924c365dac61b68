"""Logprobs on the wire: chat's `choices[].logprobs.content[]` and completions' legacy `choices[].logprobs`."""

from __future__ import annotations

from collections.abc import Sequence

from msgspec import Struct

from gemmacli.types import TokenLogprob


class TopLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int]


class ContentLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Struct):
    content: list[ContentLogprob]
    refusal: None = None

    @classmethod
    def build(cls, entries: Sequence[TokenLogprob]) -> ChatLogprobs:
        return cls([_content(e) for e in entries])


def _content(entry: TokenLogprob) -> ContentLogprob:
    top = [TopLogprob(t.text, t.logprob, list(t.bytes)) for t in entry.top]
    return ContentLogprob(entry.text, entry.logprob, list(entry.bytes), top)


class CompletionLogprobs(Struct):
    """OpenAI's legacy shape: parallel lists, `text_offset` counting characters from the text's start (the prompt's,
    with echo). With echo the lists begin with the prompt's tokens, the first with null logprob and top_logprobs;
    as vLLM does, every token's text counts toward the offsets, <bos> included."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]

    @classmethod
    def build(cls, entries: Sequence[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
        """`offset`: characters of the completion before these tokens (a stream's earlier chunks)."""
        offsets = []
        for entry in entries:
            offsets.append(offset)
            offset += len(entry.text)
        top = [None if entry.logprob is None else {t.text: t.logprob for t in entry.top} for entry in entries]
        return cls([e.text for e in entries], [e.logprob for e in entries], top, offsets)
