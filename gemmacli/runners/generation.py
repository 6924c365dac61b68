"""One request's generation as text: its batch member, detokenizer, stop strings and final usage.

The same object serves a request decoded alone (ChatRunner.generate) and one decoded inside a shared
DecodeBatch: whoever drives the batch hands each new token to `on_token` and streams the deltas back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gemmacli.runners.batch import Member
from gemmacli.runners.sampling import Sampler, SamplingConfig
from gemmacli.runners.text_stream import IncrementalDecoder, StopMatcher
from gemmacli.types import Delta, FinishReason, GenParams, Usage


class TextGeneration:
    def __init__(self, runner, prompt, params: GenParams, max_new_tokens: int, cancelled: Callable[[], bool]):
        prompt_ids = prompt.input_ids[0]
        vocab = runner.model.config.get_text_config().vocab_size
        sampler = Sampler(SamplingConfig.from_params(params), prompt_ids, vocab, runner.model.device)
        self.member = Member(sampler, max_new_tokens, runner.eos_ids, cancelled)
        self.prompt = prompt
        self._text = IncrementalDecoder(runner.tokenizer, prompt_ids.tolist())
        self._stops = StopMatcher(params.stop)
        self.finished = False

    def on_token(self, token: int) -> Iterator[Delta]:
        """The deltas one new token makes: text (maybe none while a stop string may be starting), then the end."""
        if token in self.member.eos_ids:
            yield self._finish("stop")
            return
        piece = self._stops.feed(self._text.push(token))
        if piece:
            yield Delta(piece, (token,))
        if self._stops.stopped:
            self.member.done = True  # the batch drops it before its next step
            yield self._finish("stop")
        elif self.member.done:  # max_tokens reached
            yield self._finish("length")

    def cancel(self) -> Delta:
        return self._finish("cancelled")

    def _finish(self, reason: FinishReason) -> Delta:
        self.finished = True
        tail = self._stops.flush() if reason != "stop" else ""
        usage = Usage(self.prompt.length, len(self.member.tokens), self.prompt.image_tokens)
        return Delta(tail, (), reason, usage)


class ChatBatch:
    """TextGenerations of one model decoding together: `add` prefills one, `step` advances all by a token.

    Used alone by ChatRunner.generate (a batch of one) and shared by the server's engine across requests.
    """

    def __init__(self, model):
        self.model = model
        self.reset()

    def reset(self) -> None:
        """Forget every generation (after a failed step, whose cache state cannot be trusted)."""
        from gemmacli.runners.batch import DecodeBatch

        self.batch = DecodeBatch(self.model)
        self.generations: dict[Member, TextGeneration] = {}

    def __len__(self) -> int:
        return len(self.generations)

    def add(self, generation: TextGeneration) -> list[Delta]:
        """Prefill the prompt and return the first token's deltas; unless already finished, it joins the batch."""
        prompt = generation.prompt
        deltas = list(generation.on_token(self.batch.prefill(generation.member, prompt.input_ids, prompt.extra_inputs)))
        if not generation.finished:
            self.generations[generation.member] = generation
        return deltas

    def step(self) -> list[tuple[TextGeneration, list[Delta]]]:
        """One token for every generation: (generation, its deltas); a finished one carries its final delta."""
        out = [(self.generations[m], list(self.generations[m].on_token(t))) for m, t in self.batch.step()]
        for member in [m for m in self.generations if m not in self.batch.members]:
            generation = self.generations.pop(member)
            if not generation.finished:  # left without an end of its own: cancelled
                out.append((generation, [generation.cancel()]))
        return out
