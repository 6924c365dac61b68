"""Request-shape limits the server's settings configure: how many messages, inputs, images and stop strings
one request may carry, and how much text. Checked right after the body is parsed, before any media is
decoded or any work is queued; each refusal is a 400 whose `param` names the field.

Ranges that are part of the API itself (temperature 0 to 2, n up to 128...) are msgspec constraints on
the wire types instead; media limits (bytes, pixels, seconds) are MediaLimits in gemmacli/media.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gemmacli.errors import InvalidParamError


@dataclass(frozen=True)
class RequestLimits:
    max_messages: int = 2048
    max_inputs: int = 2048  # embedding inputs, completion prompts
    max_text_chars: int = 10_485_760  # one text (OpenAI's limit for one string); a token-id list counts its ids
    max_total_chars: int = 20_971_520
    max_images: int = 32
    max_audio_clips: int = 4
    max_stop: int = 16
    max_stop_chars: int = 1024
    max_audio_prompt_chars: int = 4096
    embed_truncate: bool = False  # the server's default for embedding inputs longer than the model's window


def check_count(items: Sequence, limit: int, param: str, what: str) -> None:
    if len(items) > limit:
        raise InvalidParamError(f"{param} holds {len(items):,} {what}; the limit is {limit:,}", param=param)


class TextBudget:
    """Counts the characters of a request's texts: each against the per-text limit, all against the total."""

    def __init__(self, limits: RequestLimits):
        self.limits, self.used = limits, 0

    def add(self, length: int, param: str) -> None:
        if length > self.limits.max_text_chars:
            raise InvalidParamError(
                f"{param} is {length:,} characters long; the limit is {self.limits.max_text_chars:,}", param=param
            )
        self.used += length
        if self.used > self.limits.max_total_chars:
            raise InvalidParamError(
                f"the request's texts add up to more than {self.limits.max_total_chars:,} characters "
                f"(reached at {param})",
                param=param,
            )


def check_stop(stop: str | list[str] | None, limits: RequestLimits) -> None:
    stops = [stop] if isinstance(stop, str) else stop or []
    check_count(stops, limits.max_stop, "stop", "stop strings")
    for i, text in enumerate(stops):
        if len(text) > limits.max_stop_chars:
            param = "stop" if isinstance(stop, str) else f"stop[{i}]"
            raise InvalidParamError(
                f"{param} is {len(text):,} characters long; the limit is {limits.max_stop_chars:,}", param=param
            )
