"""Neutral types shared by every layer: the CLI, the server and the runners speak these.

Nothing here imports torch, Litestar or Typer, so every layer can use them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

Task = Literal["chat", "embed", "transcribe"]  # the keys of gemmacli.runners.RUNNERS
Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image already decoded, rotated upright and converted to RGB (see media.py)."""

    image: Image


@dataclass(frozen=True)
class AudioPart:
    """Mono float32 samples at 16 kHz (see media.py)."""

    samples: np.ndarray


@dataclass(frozen=True)
class VideoPart:
    """Frames sampled from a clip (see media_video.py): (N, H, W, 3) uint8 RGB, with where they were taken from,
    so that the model's processor can stamp each with its time."""

    frames: np.ndarray
    fps: float
    indices: tuple[int, ...]  # the frames' numbers in the clip
    total_frames: int


Part = TextPart | ImagePart | AudioPart | VideoPart


@dataclass(frozen=True)
class Tool:
    """A function the model may call. `parameters`: a JSON Schema object, as JSON text (so the type is frozen)."""

    name: str
    description: str = ""
    parameters: str = '{"type": "object", "properties": {}}'


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text (OpenAI's shape)


@dataclass(frozen=True)
class ToolUse:
    """The tools a request offers and how the model may use them."""

    tools: tuple[Tool, ...]
    choice: str = "auto"  # "auto" (call or answer), "required" (call one or more), or the one tool's name to call
    parallel: bool = True  # several calls in one turn

    @property
    def constrained(self) -> bool:
        """Whether the model must call: then decoding is constrained to calls that validate."""
        return self.choice != "auto"


@dataclass(frozen=True)
class Message:
    role: Role
    content: str | tuple[Part, ...]
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool turn: the call it answers

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)] if not isinstance(self.content, str) else []

    @property
    def audios(self) -> list[AudioPart]:
        return [p for p in self.content if isinstance(p, AudioPart)] if not isinstance(self.content, str) else []

    @property
    def videos(self) -> list[VideoPart]:
        return [p for p in self.content if isinstance(p, VideoPart)] if not isinstance(self.content, str) else []


@dataclass(frozen=True)
class GenParams:
    """Sampling and stopping controls; None means "use the model's default, then the global one"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, value added to its logit), OpenAI's logit_bias
    logprobs: int | None = None  # record each token's logprob and this many likeliest alternatives; None = off
    grammar: str | None = None  # what the output must match, in llguidance's syntax (runners/grammar.py builds it)
    # The first delta begins with the prompt: its text and, with logprobs, every prompt token's entry (completions'
    # echo). With echo, max_tokens may be 0: the prompt alone, as vLLM allows.
    echo: bool = False

    def with_defaults(self, *defaults: GenParams) -> GenParams:
        """Fill every unset field from the first of `defaults` that sets it (request > model > global)."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            for fallback in defaults:
                if value not in (None, ()):
                    break
                value = getattr(fallback, f.name)
            values[f.name] = value
        return replace(self, **values)


# What a server or CLI uses when neither the request nor the model says otherwise.
GLOBAL_GEN_DEFAULTS = GenParams(
    max_tokens=512,
    temperature=1.0,
    top_p=1.0,
    top_k=0,
    min_p=0.0,
    repetition_penalty=1.0,
    frequency_penalty=0.0,
    presence_penalty=0.0,
)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    image_tokens: int = 0
    reasoning_tokens: int = 0  # of the completion tokens, those spent thinking

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TokenLogprob:
    """A token and its log-probability: the log-softmax of the model's raw logits at its position, before any
    sampling transform (penalties, bias, temperature), as vLLM reports them; `top`: the likeliest tokens there.
    `logprob` is None only for an echoed prompt's first token, which no position predicts (and `top` is empty)."""

    token_id: int
    text: str
    bytes: bytes
    logprob: float | None
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Delta:
    """One streamed piece of a generation; the last one carries `finish_reason` and `usage`. `logprobs` covers
    the tokens since the previous delta (a token whose text was held back comes with the next one)."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # calls parsed whole since the previous delta
    reasoning: str = ""  # a thinking model's thoughts, never part of `text`


@dataclass(frozen=True)
class Completion:
    """A whole generation, as `ChatRunner.complete` returns it."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # (N, D) float32, unit norm
    token_counts: tuple[int, ...]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None
    translate: bool = False
    timestamps: Literal["segment", "word"] | None = None
    prompt: str | None = None
    temperature: float = 0.0


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()  # token ids of `text` (OpenAI's verbose_json reports them)
    temperature: float = 0.0  # the sampling temperature this segment was decoded with


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: tuple[Segment, ...] = field(default=())
    words: tuple[Word, ...] = field(default=())
