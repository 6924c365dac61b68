"""OpenAI's /v1/audio/transcriptions and /v1/audio/translations forms (multipart/form-data) and their answers.

Supported fields: file, model, language, prompt, temperature (0 to 1; 0 decodes greedily, without OpenAI's
fallback to higher temperatures), response_format (json, text, srt, vtt, verbose_json) and, for transcriptions,
timestamp_granularities[] (word, segment), which like OpenAI needs response_format=verbose_json.
Translations also take `language` (the spoken language, a hint for multilingual models).
Refused with a 400 naming the field: stream=true (transcripts come back whole), include[] (no logprobs here)
and any other response_format. Other OpenAI fields (chunking_strategy, keywords[], languages[],
known_speaker_names[], known_speaker_references[]) only steer OpenAI's other models and are ignored.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType

from gemmacli.errors import InvalidParamError, MediaError
from gemmacli.media import MediaLimits, decode_audio
from gemmacli.runners.transcribe import language_code
from gemmacli.server.errors import APIError
from gemmacli.server.schema.limits import RequestLimits
from gemmacli.transcript_formats import FORMATS, Task, render
from gemmacli.types import AudioPart, TranscribeOptions, Transcript

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
Granularity = Literal["word", "segment"]
PLAIN_TEXT = frozenset({"text", "srt", "vtt"})  # OpenAI answers these as text/plain, the others as JSON
CHOICES = {"response_format": FORMATS, "timestamp_granularities": ("word", "segment")}

_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<path>[^`]+)`")
_NAME = re.compile(r"[A-Za-z_]+")  # "timestamp_granularities[][1]" -> "timestamp_granularities"


class TranslationForm(msgspec.Struct, kw_only=True):
    """The translation form; TranscriptionForm adds the transcription-only fields."""

    file: UploadFile
    model: str
    language: Annotated[str, msgspec.Meta(max_length=32)] | None = None  # a code ("en") or a name ("english")
    prompt: str | None = None
    response_format: ResponseFormat = "json"
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    stream: bool = False

    task: ClassVar[Task] = "translate"

    def __post_init__(self) -> None:
        # Runs whenever the form is decoded, so each check below answers 400 before any audio is read.
        if self.stream:
            raise InvalidParamError("stream=true is not supported: the transcript comes back whole", param="stream")

    @property
    def granularities(self) -> tuple[str, ...]:
        return ()

    @classmethod
    async def check_request(cls, request: Request) -> None:
        """Litestar before_request hook: 415 for a body that is not a form, and 400s that name their field.

        Litestar validates the form again right after this; its own errors do not say which field failed.
        """
        media_type = request.content_type[0]
        if media_type != RequestEncodingType.MULTI_PART:
            sent = media_type or "no Content-Type"
            message = f"send multipart/form-data with the audio in the field 'file' (got {sent})"
            raise APIError(415, message, code="unsupported_media_type")
        form = await request.form()  # Litestar keeps the parsed form for the handler's `data`
        fields = {name: values[0] if len(values) == 1 else values for name, values in form.dict().items()}
        try:
            msgspec.convert(fields, cls, strict=False, dec_hook=_upload)
        except msgspec.ValidationError as exc:
            raise _named(str(exc)) from None

    def check_limits(self, limits: RequestLimits, media: MediaLimits) -> None:
        """The prompt's length and the upload's size, before the upload is read into memory."""
        if self.prompt and len(self.prompt) > limits.max_audio_prompt_chars:
            raise InvalidParamError(
                f"prompt is {len(self.prompt):,} characters long; the limit is {limits.max_audio_prompt_chars:,}",
                param="prompt",
            )
        size = self.file.file.seek(0, os.SEEK_END)
        self.file.file.seek(0)
        if size > media.max_audio_bytes:
            raise MediaError(f"file is {size:,} bytes; the limit is {media.max_audio_bytes:,}", param="file")

    def options(self) -> TranscribeOptions:
        """The transcription options, every field checked (the language against Whisper's own list)."""
        language_code(self.language)
        return TranscribeOptions(
            language=self.language or None,
            translate=self.task == "translate",
            timestamps=self.timestamps,
            prompt=self.prompt or None,
            temperature=self.temperature,
        )

    @property
    def timestamps(self) -> Literal["segment", "word"] | None:
        """Word timings only when asked (they cost time); segment timings when the format shows them."""
        if "word" in self.granularities:
            return "word"
        return "segment" if self.response_format in ("verbose_json", "srt", "vtt") else None

    def decode(self, data: bytes, limits: MediaLimits) -> AudioPart:
        """The uploaded bytes as 16 kHz mono samples, in memory; errors name the `file` field."""
        try:
            return decode_audio(data, limits, name=f"file {self.file.filename!r}")
        except MediaError as exc:
            raise MediaError(exc.message, param="file") from None

    def render(self, transcript: Transcript) -> str:
        return render(transcript, self.response_format, task=self.task)

    @property
    def media_type(self) -> str:
        return "text/plain" if self.response_format in PLAIN_TEXT else "application/json"  # Litestar adds the charset


class TranscriptionForm(TranslationForm, kw_only=True):
    # The openai client sends lists as repeated `name[]` parts; a single part arrives as a plain value.
    timestamp_granularities: list[Granularity] | Granularity = msgspec.field(
        default_factory=list, name="timestamp_granularities[]"
    )
    include: list[str] | str = msgspec.field(default_factory=list, name="include[]")

    task: ClassVar[Task] = "transcribe"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.include:
            raise InvalidParamError("include[] is not supported: Whisper here returns no logprobs", param="include")
        if self.granularities and self.response_format != "verbose_json":
            raise InvalidParamError(
                "timestamp_granularities[] needs response_format=verbose_json, as in OpenAI's API",
                param="timestamp_granularities",
            )

    @property
    def granularities(self) -> tuple[str, ...]:
        value = self.timestamp_granularities
        return (value,) if isinstance(value, str) else tuple(value)


def _upload(type_: type, value: Any) -> Any:
    """msgspec's hook for UploadFile fields: a plain text part where a file belongs is an error."""
    if isinstance(value, type_):
        return value
    raise TypeError("expected an uploaded file (a multipart part with a filename)")


def _named(message: str) -> APIError:
    """msgspec's "Expected `float` <= 1.0 - at `$.temperature`" as a 400 whose `param` names the field."""
    match = _AT.search(message) or _MISSING.search(message)
    name = _NAME.match(match.group("path")) if match else None
    param = name.group(0) if name else None
    if param == "file" and _MISSING.search(message):
        message = "file is required: send the audio as the multipart field 'file' (curl: -F file=@speech.wav)"
    elif param in CHOICES:
        message += f"; use one of {', '.join(CHOICES[param])}"
    return APIError(400, message, param=param, code="invalid_value")
