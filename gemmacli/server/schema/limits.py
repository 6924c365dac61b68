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
from gemmacli.settings import ServerSettings


@dataclass(frozen=True)
class RequestLimits:
    """The server's settings of the same names; their defaults and docs are declared there (gemmacli/settings.py)."""

    max_messages: int = ServerSettings.max_messages
    max_inputs: int = ServerSettings.max_inputs
    max_text_chars: int = ServerSettings.max_text_chars  # OpenAI's limit for one string
    max_total_chars: int = ServerSettings.max_total_chars
    max_images: int = ServerSettings.max_images
    max_audio_clips: int = ServerSettings.max_audio_clips
    max_video_clips: int = ServerSettings.max_video_clips
    max_n: int = ServerSettings.max_n
    max_stop: int = ServerSettings.max_stop
    max_stop_chars: int = ServerSettings.max_stop_chars
    max_audio_prompt_chars: int = ServerSettings.max_audio_prompt_chars
    embed_truncate: bool = ServerSettings.embed_truncate  # for embedding inputs longer than the model's window


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
