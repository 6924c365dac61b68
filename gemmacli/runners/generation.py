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
