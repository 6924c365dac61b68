"""POST /v1/audio/transcriptions and /v1/audio/translations: OpenAI's speech-to-text API over a TranscribeRunner."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated

from litestar import Request, Response, post
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Schema
from litestar.params import Body

from gemmacli.server.metrics import Metrics
from gemmacli.server.schema.audio import TranscriptionForm, TranslationForm
from gemmacli.server.services import Services

TRANSCRIPTIONS, TRANSLATIONS = "/v1/audio/transcriptions", "/v1/audio/translations"
MULTIPART = Body(media_type=RequestEncodingType.MULTI_PART)


@dataclass  # a dataclass of its own, so that the generated __init__ calls __post_init__
class TranscriptOperation(Operation):
    """OpenAPI: the 200 body is JSON for json/verbose_json and text/plain for text/srt/vtt, as OpenAI sends them."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if ok is not None:
            text = Schema(type=OpenAPIType.STRING)
            transcript = Schema(type=OpenAPIType.OBJECT, required=["text"], properties={"text": text})
            ok.content = {
                "application/json": OpenAPIMediaType(schema=transcript),
                "text/plain": OpenAPIMediaType(schema=text),
            }


@post(
    TRANSCRIPTIONS, status_code=200, before_request=TranscriptionForm.check_request, operation_class=TranscriptOperation
)
async def transcriptions(
    data: Annotated[TranscriptionForm, MULTIPART], services: Services, request: Request
) -> Response[str]:
    """Speech to text in the spoken language (WAV, FLAC, OGG or MP3 upload)."""
    return await _transcribe(data, services, TRANSCRIPTIONS, request.scope)


@post(TRANSLATIONS, status_code=200, before_request=TranslationForm.check_request, operation_class=TranscriptOperation)
async def translations(
    data: Annotated[TranslationForm, MULTIPART], services: Services, request: Request
) -> Response[str]:
    """Speech in any language to English text; English-only models answer 400."""
    return await _transcribe(data, services, TRANSLATIONS, request.scope)


async def _transcribe(form: TranslationForm, services: Services, endpoint: str, scope: dict) -> Response[str]:
    try:
        form.check_limits(services.request_limits, services.media_limits)
        data = await form.file.read()
    finally:
        await form.file.close()  # Litestar spools uploads above 1 MB to an anonymous temporary file: free it now
    # The whole request is checked, and its audio decoded, before a model is loaded or waited for. Decoding and
    # resampling are CPU work that would stall the event loop: the inference thread does them, as it always has.
    options, started = form.options(), time.perf_counter()
    async with asyncio.timeout(services.settings.request_timeout):  # decoding, waiting for a load, transcribing
        audio = await services.engine.call(lambda: form.decode(data, services.media_limits))
        model = await services.models.acquire(form.model, "transcribe", scope)
        runner = model.runner
        transcript = await services.engine.call(lambda: runner.transcribe(audio, options))
    _observe(services.metrics, model.id, endpoint, started)
    return Response(form.render(transcript), media_type=form.media_type)


def _observe(metrics: Metrics, model: str, endpoint: str, started: float) -> None:
    metrics.model_requests.labels(model, endpoint).inc()
    metrics.e2e.labels(model).observe(time.perf_counter() - started)
