"""The chat decoder: the one place tokens are produced, for every sequence of one chat model.

    decoder.insert(prompt, params, cancelled) -> Seq      queue a sequence
    decoder.step() -> [(Seq, [Delta])]                     prefill what is queued, then one token for every sequence
    decoder.cancel(seq)                                    end it now; its final delta comes with the next step
    len(decoder)                                           sequences whose end the steps have not reported yet

Sequences join a running batch after their own prefill and leave when they end, without waiting for
each other (iteration-level batching); their KV cache rows live in a BatchCache. Every step runs each
sequence through its stages (stages.py): logits stages, the sampler, the detokenizer, output stages.
`ChatRunner.stream` (insert, then step until done), the server's engine (one shared decoder per model)
and `gemmacli bench` all drive this same object. Not thread-safe: one thread drives it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch

from gemmacli.errors import ContextLengthError, InvalidParamError
from gemmacli.runners.kv_cache import BatchCache, appending_cache
from gemmacli.runners.stages import Pipeline
from gemmacli.runners.tools.stage import PromptTools
from gemmacli.types import GLOBAL_GEN_DEFAULTS, Delta, FinishReason, GenParams, Usage


def never() -> bool:
    return False


@dataclass(frozen=True)
class Prompt:
    """A tokenized prompt, ready for the decoder."""

    input_ids: torch.Tensor  # (1, T)
    extra_inputs: dict = field(default_factory=dict)  # pixel_values, token_type_ids... (prefill only)
    image_tokens: int = 0
    tools: PromptTools | None = None  # rendered with tools: its sequences parse (and may be held to) tool calls
    text: str | None = None  # the string it was encoded from, echoed as given; None: echo decodes the ids

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


@dataclass(eq=False)
class Seq:
    """One sequence and all its state: its prompt, stages, tokens so far and how it ended."""

    prompt: Prompt
    pipeline: Pipeline
    max_new_tokens: int
    eos_ids: frozenset[int]
    cancelled: Callable[[], bool] = never
    echo: bool = False  # its first delta begins with the prompt (GenParams.echo)
    tokens: list[int] = field(default_factory=list)  # generated so far
    finish_reason: FinishReason | None = None
    error: Exception | None = None  # the step that failed it: its owner raises this instead of a final delta

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    def accept(self, token: int) -> list[Delta]:
        """The deltas `token` makes: text (none while an output stage holds it back), then the end, if it ends."""
        self.tokens.append(token)
        self.pipeline.accept(token)
        if token in self.eos_ids:
            if self.pipeline.logprobs is not None and not self.echo:
                # the end of sequence is no token of the text; echo lists every token, as vLLM does, and its
                # readers (lm-eval) count on one entry per generated token
                self.pipeline.logprobs.recorded.pop()
            return [self.finish("stop")]
        piece, stopped = self.pipeline.text(token)
        calls, thought = self.pipeline.take_calls(), self.pipeline.take_reasoning()
        logprobs = self.pipeline.take_logprobs
        deltas = (
            [Delta(piece, (token,), logprobs=logprobs(), tool_calls=calls, reasoning=thought)]
            if piece or calls or thought
            else []
        )
        if stopped:
            deltas.append(self.finish("stop"))
        elif len(self.tokens) >= self.max_new_tokens:
            deltas.append(self.finish("length"))
        return deltas

    def finish(self, reason: FinishReason) -> Delta:
        """The final delta: the text the output stages still hold (a stop string that matched holds none; one
        that only began before an end of sequence is text after all), the calls it still holds, the reason (a turn
        that made calls and stopped is "tool_calls") and the usage."""
        text = self.pipeline.flush()
        self.finish_reason = "tool_calls" if reason == "stop" and self.pipeline.called else reason
        usage = Usage(self.prompt.length, len(self.tokens), self.prompt.image_tokens, self.pipeline.reasoning_tokens)
        calls, thought = self.pipeline.take_calls(), self.pipeline.take_reasoning()
        return Delta(text, (), self.finish_reason, usage, self.pipeline.take_logprobs(), calls, reasoning=thought)


class Decoder:
    """Every sequence of one chat model. `defaults` fill what a request leaves unset, before the global ones."""

    def __init__(self, model, tokenizer, *, eos_ids, context_length: int, defaults: GenParams, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.eos_ids = frozenset(eos_ids)
        self.context_length = context_length
        self.defaults = defaults
        self.vocab_size = model.config.get_text_config().vocab_size
        self.device = model.device
        # transformers 5.24 renamed past_key_values to cache (the old name warns until 5.40); older 5.x has only it.
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.pending: list[Seq] = []
        self.running: list[Seq] = []  # in the order of the cache's rows
        self.rows = BatchCache()
        self._ended: list[tuple[Seq, Delta]] = []  # cancelled since the last step, with their final deltas

    def __len__(self) -> int:
        return len(self.pending) + len(self.running) + len(self._ended)

    @property
    def idle(self) -> bool:
        """Nothing queued or decoding (cancelled sequences may still wait to report their end)."""
        return not self.pending and not self.running

    def insert(self, prompt: Prompt, params: GenParams = GenParams(), cancelled: Callable[[], bool] = never) -> Seq:
        """Queue `prompt`; its prefill runs at the next step. Bad parameters and over-long prompts raise here."""
        return self.fork(prompt, params, 1, cancelled)[0]

    def fork(self, prompt: Prompt, params: GenParams, n: int, cancelled: Callable[[], bool] = never) -> list[Seq]:
        """`n` sequences of one prompt (OpenAI's n): prefilled once, they share the prompt's KV cache and then
        decode as rows of their own. With a seed, sequence i samples with seed + i: reproducible, and distinct."""
        self._check_context(prompt, params.max_tokens, params.echo)  # the caller's own max_tokens; defaults clamp
        params = params.with_defaults(self.defaults, GLOBAL_GEN_DEFAULTS)
        room = self.context_length - prompt.length
        max_new_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        seqs = [
            Seq(prompt, self._pipeline(prompt, _nth(params, i)), max_new_tokens, self.eos_ids, cancelled, params.echo)
            for i in range(n)
        ]
        self.pending += seqs
        return seqs

    def _pipeline(self, prompt: Prompt, params: GenParams) -> Pipeline:
        ids = prompt.input_ids[0]
        return Pipeline.build(params, ids, self.tokenizer, self.vocab_size, self.device, self.eos_ids, prompt.tools)

    def cancel(self, seq: Seq) -> None:
        """End `seq` now (finish reason "cancelled"); its final delta comes with the next step."""
        if seq in self.pending:
            self.pending.remove(seq)
        elif seq in self.running:
            self._leave([seq])
        else:
            return
        self._ended.append((seq, seq.finish("cancelled")))

    def step(self) -> list[tuple[Seq, list[Delta]]]:
        """Prefill every queued sequence (each gets its first token), then advance every running one, the new ones
        included, by a token: a stream of arrivals never starves the running sequences. A sequence that ended
        carries its final delta; one that failed carries its `error` instead (a sequence may appear twice)."""
        return list(self.advance())

    @torch.inference_mode()
    def advance(self) -> Iterator[tuple[Seq, list[Delta]]]:
        """`step`, yielding each sequence's deltas as soon as they exist: the engine sends a new request its first
        token right after its own prefill, not after every other prefill and the decode step too."""
        yield from self._prefill_queued()
        if self.running:
            yield from self._decode()

    def prefill(self) -> list[tuple[Seq, list[Delta]]]:
        """The first half of a step alone, which lets `gemmacli bench` time prompts apart from decode steps."""
        with torch.inference_mode():
            return list(self._prefill_queued())

    def _prefill_queued(self) -> Iterator[tuple[Seq, list[Delta]]]:
        """Drop cancelled sequences (reporting their ends), then prefill the queued ones, each prompt alone."""
        for seq in [s for s in (*self.pending, *self.running) if s.cancelled()]:
            self.cancel(seq)
        ended, self._ended = self._ended, []
        yield from ((seq, [delta]) for seq, delta in ended)
        queued, self.pending = self.pending, []
        for group in _by_prompt(queued):
            yield from self._prefill(group)

    def close(self) -> None:
        """Forget every sequence, the cache and the model (being unloaded): whoever still holds the decoder
        (an engine between two steps) no longer keeps the weights alive."""
        self.pending = []
        self.running = []
        self._ended = []
        self.rows.clear()
        self.model = self.tokenizer = None

    # -- the model

    def _prefill(self, group: list[Seq]) -> Iterator[tuple[Seq, list[Delta]]]:
        """The prompt alone, (1, T), into a fresh cache, once for the sequences of `group` (one prompt's n); each
        takes its first token from the same logits (after its echo, if it asked), then those that go on join the
        running rows, the cache copied once per row."""
        prompt, cache = group[0].prompt, appending_cache(self.model.config)
        try:
            logits, every = self._prompt_pass(prompt, cache, any(_echo_logprobs(seq) for seq in group))
            echoes = self._echoes(group, every)
            del every  # (T - 1, V): gone before anything is sent
        except Exception as exc:  # this prompt's failure alone (out of memory on a long prompt...)
            for seq in group:
                seq.error = exc
                yield seq, []
            return
        argmax = int(logits.argmax()) if any(seq.pipeline.plain_greedy for seq in group) else None
        results = [(seq, self._start(seq, logits, argmax, echo)) for seq, echo in zip(group, echoes, strict=True)]
        going = [seq for seq in group if not seq.done]
        if going:
            self.rows.join(cache, prompt.length, prompt.input_ids.device, copies=len(going))
            self.running += going
        yield from results

    def _prompt_pass(self, prompt: Prompt, cache, keep_all: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's forward pass: the last position's logits (V,) float32, and with `keep_all` (echo's logprobs)
        those of every earlier position, (T - 1, V) in the model's dtype, from the same pass."""
        positions = torch.arange(prompt.length, device=prompt.input_ids.device).unsqueeze(0)
        # logits_to_keep: the 262k-vocabulary projection only where we sample; 0 keeps every position
        out = self._forward(
            prompt.input_ids, cache, position_ids=positions, logits_to_keep=0 if keep_all else 1, **prompt.extra_inputs
        )
        logits = out.logits[0]  # (T or 1, V)
        # a copy, so that the last row alone outlives the pass (.float() of float32 logits would be a view)
        return logits[-1].to(torch.float32, copy=True), logits[:-1] if keep_all else None

    def _echoes(self, group: list[Seq], every: torch.Tensor | None) -> list[Delta | None]:
        """What each sequence of `group` echoes before its first token: the prompt's text and, with logprobs, its
        tokens' entries from `every` (T - 1, V); computed once for all the choices that ask alike."""
        made: dict[int | None, Delta] = {}  # by top-k (None: no logprobs)
        echoes = []
        for seq in group:
            recorder = seq.pipeline.logprobs
            key = None if recorder is None else recorder.top
            if seq.echo and key not in made:
                entries = recorder.prompt(every, seq.prompt.input_ids[0]) if recorder is not None else ()
                made[key] = Delta(self._prompt_text(seq.prompt), logprobs=entries)
            echoes.append(made[key] if seq.echo else None)
        return echoes

    def _prompt_text(self, prompt: Prompt) -> str:
        if prompt.text is not None:
            return prompt.text
        return self.tokenizer.decode(prompt.input_ids[0].tolist(), skip_special_tokens=True)

    def _start(self, seq: Seq, logits: torch.Tensor, argmax: int | None, echo: Delta | None) -> list[Delta]:
        """`seq`'s first deltas, from its prefill: its first token (none when echo asked for max_tokens 0), with
        the echo merged into the first delta, so that the prompt and the first token arrive together."""
        deltas = self._advance(seq, logits, argmax) if seq.max_new_tokens else [seq.finish("length")]
        if echo is None or seq.error is not None:
            return deltas
        if not deltas:  # the first token's text is held back (a stop string may begin there)
            return [echo]
        first = deltas[0]
        return [replace(first, text=echo.text + first.text, logprobs=echo.logprobs + first.logprobs), *deltas[1:]]

    def _decode(self) -> list[tuple[Seq, list[Delta]]]:
        """One forward pass over every running sequence's last token, (B, 1), then each one's own stages."""
        rows = self.running
        tokens = torch.tensor([[seq.tokens[-1]] for seq in rows], device=self.device)
        try:
            mask, positions = self.rows.advance()
            logits = self._forward(tokens, self.rows.cache, attention_mask=mask, position_ids=positions).logits
        except Exception as exc:  # the cache's state cannot be trusted: every sequence in it fails
            self.running = []
            self.rows.clear()
            for seq in rows:
                seq.error = exc
            return [(seq, []) for seq in rows]
        logits = logits[:, -1, :].float()  # (B, V)
        # The plain-greedy rows share one argmax (a 262k-wide argmax per row costs twice as much).
        best = logits.argmax(dim=-1).tolist() if any(seq.pipeline.plain_greedy for seq in rows) else []
        out = [(seq, self._advance(seq, logits[i], best[i] if best else None)) for i, seq in enumerate(rows)]
        self._leave([seq for seq in rows if seq.done])
        return out

    @staticmethod
    def _advance(seq: Seq, logits: torch.Tensor, argmax: int | None) -> list[Delta]:
        """One sequence's stages on its row of logits; a stage that fails ends this sequence alone."""
        try:
            token = argmax if seq.pipeline.plain_greedy else seq.pipeline.choose(logits)
            return seq.accept(token)
        except Exception as exc:
            seq.error = exc
            return []

    def _forward(self, input_ids: torch.Tensor, cache, **inputs):
        return self.model(input_ids=input_ids, use_cache=True, **{self.cache_arg: cache}, **inputs)

    def _leave(self, leaving: list[Seq]) -> None:
        if leaving:
            keep = [i for i, seq in enumerate(self.running) if seq not in leaving]
            self.running = [self.running[i] for i in keep]
            self.rows.keep(keep)

    def _check_context(self, prompt: Prompt, max_tokens: int | None, echo: bool = False) -> None:
        """Refuse, as OpenAI and vLLM do, a prompt plus max_tokens that overflows the window (no silent clamp)."""
        if max_tokens is not None and max_tokens < (0 if echo else 1):
            raise InvalidParamError(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        asked = prompt.length + (1 if max_tokens is None else max_tokens)
        if asked > self.context_length:
            wanted = f" ({prompt.length} in the prompt, {max_tokens} in the completion)" if max_tokens else ""
            raise ContextLengthError(
                f"model {self.name} takes at most {self.context_length} tokens, but this request needs "
                f"{asked}{wanted}; shorten the prompt or lower max_tokens",
                param="max_tokens" if max_tokens and prompt.length < self.context_length else "messages",
            )


def _echo_logprobs(seq: Seq) -> bool:
    return seq.echo and seq.pipeline.logprobs is not None


def _nth(params: GenParams, i: int) -> GenParams:
    """The parameters of a prompt's i-th sequence: its own seed, so that n seeded choices differ."""
    return params if params.seed is None or i == 0 else replace(params, seed=params.seed + i)


def _by_prompt(seqs: list[Seq]) -> list[list[Seq]]:
    """Queued sequences in groups that share one prompt (a fork's n), each group prefilled once."""
    groups: list[list[Seq]] = []
    for seq in seqs:
        if groups and groups[-1][0].prompt is seq.prompt:
            groups[-1].append(seq)
        else:
            groups.append([seq])
    return groups
