"""A sequence's stages: what runs for it, in order, at every decode step.

    logits stages (penalties, logit bias, grammar mask) -> sampler -> detokenizer -> reasoning splitter ->
    output stages (stop strings, tool calls)

A logits stage reshapes one row of logits and hears which token was chosen; an output stage sees the
text each token adds and may hold some back or end the sequence. Each stage is one small class with a
`build` that returns None when the request does not need it; `Pipeline.build` is the one place that
lists them, a line each, so a new stage (a grammar mask, a tool-call parser) is a class and a line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from gemmacli.errors import InvalidParamError
from gemmacli.runners.grammar import GrammarMask
from gemmacli.runners.reasoning import ReasoningSplitter, special_id
from gemmacli.runners.sampling import Sampler, SamplingConfig
from gemmacli.runners.text_stream import IncrementalDecoder, StopMatcher
from gemmacli.runners.tools.stage import PromptTools, ToolCallParser
from gemmacli.types import GenParams, TokenLogprob, ToolCall


class LogitsStage(Protocol):
    def __call__(self, logits: torch.Tensor) -> torch.Tensor: ...  # (V,) float32 -> (V,)
    def accept(self, token: int) -> None: ...


class OutputStage(Protocol):
    stopped: bool  # set when the sequence must end here, with finish reason "stop"

    def feed(self, text: str) -> str: ...  # the text it lets through now
    def flush(self) -> str: ...  # what it still holds, once the sequence ends another way


class Penalties:
    """Repetition (HF: prompt and output), frequency and presence (OpenAI: output only) penalties."""

    def __init__(self, config: SamplingConfig, prompt_ids: torch.Tensor, vocab_size: int, device: torch.device):
        self.config = config
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.seen[prompt_ids.to(device)] = True
        self.output_counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)

    @classmethod
    def build(cls, config: SamplingConfig, prompt_ids, vocab_size: int, device) -> Penalties | None:
        return cls(config, prompt_ids, vocab_size, device) if config.penalised else None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        logits = logits.clone()
        if c.repetition_penalty != 1.0:
            seen = logits[self.seen]
            logits[self.seen] = torch.where(seen > 0, seen / c.repetition_penalty, seen * c.repetition_penalty)
        if c.frequency_penalty or c.presence_penalty:
            logits -= c.frequency_penalty * self.output_counts + c.presence_penalty * (self.output_counts > 0)
        return logits

    def accept(self, token: int) -> None:
        self.output_counts[token] += 1
        self.seen[token] = True


class LogitBias:
    """OpenAI's logit_bias: a value added to chosen tokens' logits (-100 bans a token, 100 all but forces it)."""

    def __init__(self, ids: torch.Tensor, values: torch.Tensor):
        self.ids, self.values = ids, values

    @classmethod
    def build(cls, bias: Sequence[tuple[int, float]], vocab_size: int, device) -> LogitBias | None:
        if not bias:
            return None
        if bad := [token for token, _ in bias if not 0 <= token < vocab_size]:
            raise InvalidParamError(
                f"logit_bias token ids must be between 0 and {vocab_size - 1}, got {bad[0]}", param="logit_bias"
            )
        ids = torch.tensor([token for token, _ in bias], device=device)
        return cls(ids, torch.tensor([value for _, value in bias], dtype=torch.float32, device=device))

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.index_add(0, self.ids, self.values)

    def accept(self, token: int) -> None:
        pass


class Logprobs:
    """The sampler's record: each chosen token's logprob under the raw logits, with the `top` likeliest tokens."""

    def __init__(self, top: int, tokenizer):
        self.top, self.tokenizer = top, tokenizer
        self.recorded: list[TokenLogprob] = []

    @classmethod
    def build(cls, top: int | None, tokenizer) -> Logprobs | None:
        return None if top is None else cls(top, tokenizer)

    def record(self, raw: torch.Tensor, token: int) -> None:
        """`raw`: the (V,) logits before any stage touched them, as the model gave them."""
        self.recorded.append(self._scored(torch.log_softmax(raw, dim=-1), token))

    def prompt(self, logits: torch.Tensor, ids: torch.Tensor) -> tuple[TokenLogprob, ...]:
        """Every prompt token's entry (echo) from the prefill's logits (T - 1, V), in which row t predicts token
        t + 1; the first token has none. Rows become float32 a chunk at a time: all of a long prompt's 262k-wide
        rows in float32 at once would take gigabytes."""
        ids = ids.tolist()  # (T,)
        entries = [self._entry(ids[0], None)]
        step = max(1, _CHUNK_ELEMENTS // logits.shape[-1])
        for start in range(0, logits.shape[0], step):
            rows = torch.log_softmax(logits[start : start + step].float(), dim=-1)  # (C, V)
            entries += [self._scored(row, token) for row, token in zip(rows, ids[start + 1 :], strict=False)]
        return tuple(entries)

    def take(self) -> tuple[TokenLogprob, ...]:
        taken, self.recorded = tuple(self.recorded), []
        return taken

    def _scored(self, logprobs: torch.Tensor, token: int) -> TokenLogprob:
        """`token`'s entry from one position's (V,) logprobs, with that position's `top` likeliest tokens."""
        values, ids = torch.topk(logprobs, self.top) if self.top else (logprobs[:0], logprobs[:0].long())
        top = tuple(self._entry(i, v) for i, v in zip(ids.tolist(), values.tolist(), strict=True))
        return replace(self._entry(token, float(logprobs[token])), top=top)

    def _entry(self, token: int, logprob: float | None) -> TokenLogprob:
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if match := _BYTE_TOKEN.fullmatch(piece):  # SentencePiece byte fallback: one raw byte
            return TokenLogprob(token, piece, bytes([int(match.group(1), 16)]), logprob)
        text = self.tokenizer.convert_tokens_to_string([piece])
        return TokenLogprob(token, text, text.encode("utf-8"), logprob)


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
REASONING_TAIL = 8  # prompt tokens in which a template may have opened the thinking channel for the model
_CHUNK_ELEMENTS = 2**24  # float32 logits per chunk of echoed prompt rows: 64 MiB


@dataclass(frozen=True)
class Pipeline:
    """One sequence's stages, built from its request."""

    logits: tuple[LogitsStage, ...]
    sampler: Sampler
    detokenizer: IncrementalDecoder
    outputs: tuple[OutputStage, ...]
    logprobs: Logprobs | None = None
    calls: ToolCallParser | None = None  # also among the outputs
    reasoning: ReasoningSplitter | None = None  # thinking models: thoughts apart from the answer

    @property
    def called(self) -> bool:
        """Whether the sequence made tool calls: it then ends with finish reason "tool_calls"."""
        return self.calls is not None and bool(self.calls.made)

    def take_reasoning(self) -> str:
        return self.reasoning.take() if self.reasoning is not None else ""

    @property
    def reasoning_tokens(self) -> int:
        return self.reasoning.tokens if self.reasoning is not None else 0

    def take_calls(self) -> tuple[ToolCall, ...]:
        return self.calls.take() if self.calls is not None else ()

    @classmethod
    def build(
        cls,
        params: GenParams,
        prompt_ids: torch.Tensor,
        tokenizer,
        vocab_size: int,
        device,
        eos_ids=(),
        tools: PromptTools | None = None,
    ) -> Pipeline:
        """`params` with every default filled in; `prompt_ids` (T,); `tools`: the prompt was rendered with tools."""
        config = SamplingConfig.from_params(params)
        grammar = tools.grammar(params.grammar) if tools is not None else params.grammar
        logits = [
            Penalties.build(config, prompt_ids, vocab_size, device),
            LogitBias.build(params.logit_bias, vocab_size, device),
            GrammarMask.build(grammar, tokenizer, vocab_size, eos_ids),  # last: nothing may lift its -inf
        ]
        calls = ToolCallParser.build(tools)
        outputs = [
            StopMatcher.build(params.stop),
            calls,
        ]
        detokenizer = IncrementalDecoder(tokenizer, prompt_ids.tolist(), _spelled(tokenizer, tools))
        sampler, recorder = Sampler(config, device), Logprobs.build(params.logprobs, tokenizer)
        reasoning = ReasoningSplitter.build(tokenizer, prompt_ids[-REASONING_TAIL:].tolist())
        return cls(_present(logits), sampler, detokenizer, _present(outputs), recorder, calls, reasoning)

    @property
    def plain_greedy(self) -> bool:
        """The argmax of the raw logits, nothing recorded: what a batch computes for all such rows in one call."""
        return self.sampler.config.greedy and not self.logits and self.logprobs is None

    def choose(self, logits: torch.Tensor) -> int:
        """(V,) float32 logits -> the token: every logits stage, then the sampler (which records logprobs)."""
        raw = logits
        for stage in self.logits:
            logits = stage(logits)
        token = self.sampler(logits)
        if self.logprobs is not None:
            self.logprobs.record(raw, token)
        return token

    def take_logprobs(self) -> tuple[TokenLogprob, ...]:
        """The logprobs recorded since the last delta, for the next one."""
        return self.logprobs.take() if self.logprobs is not None else ()

    def accept(self, token: int) -> None:
        for stage in self.logits:
            stage.accept(token)

    def text(self, token: int) -> tuple[str, bool]:
        """The text `token` adds once every output stage has seen it, and whether one of them ended the sequence."""
        piece = self.detokenizer.push(token)
        if self.reasoning is not None:  # thoughts go around the output stages, straight to their own field
            piece, thought = self.reasoning.route(token, piece)
            self.reasoning.pending += thought
        for stage in self.outputs:
            piece = stage.feed(piece)
            if stage.stopped:
                return piece, True
        return piece, False

    def flush(self) -> str:
        """What the output stages still hold, in order (each one's held text passes through the stages after it)."""
        if self.reasoning is not None:
            self.reasoning.flush()
        text = ""
        for stage in self.outputs:
            text = stage.feed(text) + stage.flush()
        return text


def _spelled(tokenizer, tools: PromptTools | None) -> dict[int, str]:
    """The special tokens a tool format reads, by id, for the detokenizer to write out (those the tokenizer has)."""
    if tools is None:
        return {}
    ids = {token: special_id(tokenizer, token) for token in tools.format.spelled}
    return {found: token for token, found in ids.items() if found is not None}


def _present(stages: list) -> tuple:
    return tuple(stage for stage in stages if stage is not None)
