"""Fakes at the runner seam: runners that speak the real protocols without weights.

FakeChatRunner drives a FakeDecoder: the real Decoder (insertion, defaults, context checks, cancellation,
every per-sequence stage: penalties, logit bias, the sampler, the detokenizer, stop strings) with the model
replaced by a script. Its "model" counts: after a prompt of n words it says " n", " n+1", ... (mod 100),
and a prompt holding "bye" makes it end at once. So the chat and completions HTTP layer is tested in the
fast suite, on the same decoder protocol the engine drives for real models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import ClassVar

import torch

from gemmacli.errors import InvalidParamError
from gemmacli.runners.base import Memory
from gemmacli.runners.chat import ChatRunner
from gemmacli.runners.decoder import Decoder, Prompt, Seq
from gemmacli.runners.tools.pythonic import PYTHONIC
from gemmacli.runners.tools.stage import PromptTools
from gemmacli.types import Delta, GenParams, Message, ToolUse

# token ids
PAD = 0
EOS = 1
BOS = 2
NUMBERS = 3  # NUMBERS + k is " k" for k in 0..99
VOCAB = ["<pad>", "<eos>", "<bos>", *(f" {k}" for k in range(100)), "<|channel>", "<channel|>", "thought\n"]
THINK_OPEN, THINK_CLOSE, THINK_LABEL = 103, 104, 105  # Gemma 4's thinking channel, and its label
SPECIAL = {PAD, EOS, BOS, THINK_OPEN, THINK_CLOSE}
EXPLODE = "explode"  # a prompt holding this makes its sequence fail at its third token (a stage's bug)
PONDER = "ponder"  # a prompt holding this thinks first: <|channel>thought\n 7 8<channel|>, then counts on


class FakeRunner:
    """The runner protocol and nothing else: for routes that never reach the model. Subclasses add what their
    tests need (an `embed` that waits, a `dimensions`...)."""

    task: ClassVar = "chat"
    cpu_bf16: ClassVar = False

    def __init__(self, task: str | None = None, name: str = "fake"):
        self.task, self.name = task or type(self).task, name
        self.closed = False

    def warm_up(self) -> None:
        pass

    def memory(self) -> Memory:
        return Memory("cpu", "float32", "single", 0)

    def close(self) -> None:
        self.closed = True


class FakeTokenizer:
    """Words in, ids out: a word's id depends only on its length; decoding prints the counting vocabulary."""

    eos_token_id = EOS
    bos_token_id = BOS
    unk_token_id = PAD
    chat_template = "fake"

    def convert_tokens_to_ids(self, token: str) -> int:
        return VOCAB.index(token) if token in VOCAB else self.unk_token_id

    def encode(self, text: str) -> list[int]:
        return [BOS, *(NUMBERS + len(word) % 100 for word in text.split())]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(VOCAB[i] for i in ids if not (skip_special_tokens and i in SPECIAL))

    def convert_ids_to_tokens(self, token: int) -> str:
        return VOCAB[token]

    def convert_tokens_to_string(self, pieces: list[str]) -> str:
        return "".join(pieces)


class FakeDecoder(Decoder):
    """The real Decoder with the model replaced by the counting script (no KV cache, no forward pass)."""

    def __init__(
        self,
        *,
        context_length: int = 256,
        defaults: GenParams = GenParams(),
        name: str = "fake-chat",
        delay: float = 0.0,
    ):
        self.tokenizer = FakeTokenizer()
        self.name = name
        self.model = None
        self.eos_ids = frozenset({EOS})
        self.context_length = context_length
        self.defaults = defaults
        self.vocab_size = len(VOCAB)
        self.device = torch.device("cpu")
        self.pending = []
        self.running = []
        self._ended = []
        self.steps: list[int] = []  # sequences decoded at each decode step, to see requests share steps
        self.prefills: list[int] = []  # sequences of each prefill (a prompt's n share one)
        self.delay = delay  # seconds each decode step takes, as a real model's would

    def _prefill(self, group: list[Seq]) -> Iterator[tuple[Seq, list[Delta]]]:
        self.prefills.append(len(group))
        # The prompt's own positions predict nothing in particular: an echo's logprobs are all -log(V).
        echoes = self._echoes(group, torch.zeros(group[0].prompt.length - 1, len(VOCAB)))
        for seq, echo in zip(group, echoes, strict=True):
            deltas = self._start(seq, *_script(seq), echo)
            if not seq.done:
                self.running.append(seq)
            yield seq, deltas

    def _decode(self) -> list[tuple[Seq, list[Delta]]]:
        rows = self.running
        self.steps.append(len(rows))
        time.sleep(self.delay)
        out = [(seq, self._advance(seq, *_script(seq))) for seq in rows]
        self._leave([seq for seq in rows if seq.done])
        return out

    def _leave(self, leaving: list[Seq]) -> None:
        self.running = [seq for seq in self.running if seq not in leaving]

    @staticmethod
    def _advance(seq: Seq, logits: torch.Tensor, argmax: int | None) -> list[Delta]:
        if EXPLODE in seq.prompt.extra_inputs.get("text", "") and len(seq.tokens) == 2:
            seq.error = RuntimeError("a stage broke")
            return []
        return Decoder._advance(seq, logits, argmax)


def _script(seq: Seq) -> tuple[torch.Tensor, int]:
    """Logits (V,) that all but force the script's next token, whatever the sampling settings; and that token."""
    text, step = seq.prompt.extra_inputs.get("text", ""), len(seq.tokens)
    if "bye" in text:
        token = EOS
    elif PONDER in text and step < 5:
        token = (THINK_OPEN, THINK_LABEL, NUMBERS + 7, NUMBERS + 8, THINK_CLOSE)[step]
    else:
        count = seq.tokens[-1] - NUMBERS + 1 if seq.tokens else seq.prompt.length - 1  # <bos> is no word
        token = NUMBERS + count % 100
    logits = torch.zeros(len(VOCAB))
    logits[token] = 100.0
    return logits, token


class FakeChatRunner(ChatRunner):
    """A chat runner over a FakeDecoder: the real generate/stream code, a whitespace "chat template"."""

    modalities = ("text",)

    def __init__(
        self, name: str = "fake-chat", *, context_length: int = 256, defaults: GenParams = GenParams(), delay=0.0
    ):
        self.name = name
        self.placement = None
        self.vision = False
        self.model = None
        self.tool_format = PYTHONIC
        self.decoder = FakeDecoder(context_length=context_length, defaults=defaults, name=name, delay=delay)
        self.tokenizer = self.processor = self.decoder.tokenizer
        self.closed = False

    def memory(self) -> Memory:
        return Memory("cpu", "float32", "single", 0)

    def close(self) -> None:
        self.closed = True

    def encode_text(self, prompt: str) -> Prompt:
        return _prompt(self.tokenizer.encode(prompt), prompt, echoed=prompt)

    def encode_ids(self, ids: Sequence[int]) -> Prompt:
        if not all(0 <= t < len(VOCAB) for t in ids):
            raise InvalidParamError(f"prompt token ids must be between 0 and {len(VOCAB) - 1}", param="prompt")
        return _prompt(list(ids), self.tokenizer.decode(ids))  # echo decodes the ids, as for a real model

    def encode_chat(self, messages: Sequence[Message], tools: ToolUse | None = None, *, thinking=None) -> Prompt:
        self._check_inputs(messages)
        text = " ".join(m.content if isinstance(m.content, str) else "" for m in messages)
        return replace(self.encode_text(text), tools=PromptTools(self.tool_format, tools) if tools else None)


def _prompt(ids: list[int], text: str, echoed: str | None = None) -> Prompt:
    # The prompt's text rides along in extra_inputs, which only the (fake) model reads.
    return Prompt(torch.tensor([ids]), {"text": text}, text=echoed)
