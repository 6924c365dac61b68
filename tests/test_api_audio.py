"""POST /v1/audio/transcriptions and /translations on the real whisper tiny.en: the official openai client,
raw multipart over httpx, and every bad input in OpenAI's error shape."""

from __future__ import annotations

import json
import re

import openai
import pytest
from litestar.datastructures import UploadFile
from support.helpers import check_openai_error, word_error_rate

from gemmacli.errors import InvalidParamError
from gemmacli.server.schema.audio import TranscriptionForm, TranslationForm
from gemmacli.types import Segment, TranscribeOptions, Transcript

MODEL = "whisper-tiny.en"
MAX_WER = 0.25
CUE_TIME = r"(\d{2}):(\d{2}):(\d{2})[,.](\d{3})"
DURATION = {"hello_world": 6.205, "please_call_stella": 7.130, "quick_brown_fox": 4.994}


def spoken(audio, name: str) -> str:
    return (audio / f"{name}.txt").read_text().strip()


def transcribe(client, audio, name: str, endpoint: str = "transcriptions", **fields):
    """The official client's call, raw: returns (parsed result, Content-Type)."""
    api = getattr(client.audio, endpoint).with_raw_response
    with open(audio / f"{name}.wav", "rb") as f:
        raw = api.create(file=f, model=MODEL, **fields)
    return raw.parse(), raw.headers["content-type"]


def seconds(match: tuple[str, ...]) -> float:
    hours, minutes, secs, ms = map(int, match)
    return hours * 3600 + minutes * 60 + secs + ms / 1000


def cues(body: str, *, numbered: bool) -> list[tuple[float, float, str]]:
    """Parse SRT or WebVTT cues strictly: (start, end, text) each, with well-formed timing lines."""
    out = []
    for i, block in enumerate(body.strip().split("\n\n"), 1):
        lines = block.split("\n")
        if numbered:
            assert lines.pop(0) == str(i), block
        times = re.fullmatch(f"{CUE_TIME} --> {CUE_TIME}", lines[0])
        assert times, lines[0]
        assert len(lines) == 2 and lines[1].strip(), block  # one line of text per cue
        out.append((seconds(times.groups()[:4]), seconds(times.groups()[4:]), lines[1]))
    return out


def assert_timeline(spans: list[tuple[float, float]], duration: float) -> None:
    previous = 0.0
    for start, end in spans:
        assert previous <= start <= end <= duration + 0.01, (start, end, previous)
        previous = end


def assert_error(response, status: int, param: str | None, code: str | None = None) -> dict:
    codes = {} if code is None else {"code": code}
    return check_openai_error(response, status, param=param, type="invalid_request_error", **codes)


def assert_still_serving(client, audio) -> None:
    result, _ = transcribe(client, audio, "quick_brown_fox", response_format="text")
    assert word_error_rate(spoken(audio, "quick_brown_fox"), result) < MAX_WER


# --------------------------------------------------------------------------- the forms alone (no server)


def form(cls=TranscriptionForm, **fields):
    return cls(file=UploadFile(content_type="audio/wav", filename="a.wav"), model=MODEL, **fields)


def test_a_form_turns_into_runner_options():
    srt = form(response_format="srt", language="en", prompt="Names: Stella.", temperature=0.2)
    assert srt.options() == TranscribeOptions("en", False, "segment", "Names: Stella.", 0.2)
    assert srt.media_type == "text/plain"
    assert form().options().timestamps is None and form().media_type == "application/json"  # json needs no timings
    words = form(response_format="verbose_json", timestamp_granularities="word")  # one `[]` part arrives bare
    assert words.options().timestamps == "word" and words.granularities == ("word",)


def test_a_translation_form_translates_and_says_so():
    translation = form(TranslationForm, response_format="verbose_json")
    assert translation.options().translate and translation.options().timestamps == "segment"
    transcript = Transcript("Hello.", "de", 1.0, (Segment(0, 0.0, 1.0, "Hello."),))
    assert json.loads(translation.render(transcript))["task"] == "translate"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": True}, "stream"),
        ({"include": ["logprobs"]}, "include"),
        ({"timestamp_granularities": ["word"]}, "timestamp_granularities"),
    ],
)
def test_a_form_refuses_what_it_cannot_honour(fields, param):
    with pytest.raises(InvalidParamError) as caught:
        form(**fields)
    assert caught.value.param == param


# --------------------------------------------------------------------------- the five formats


@pytest.mark.slow
def test_json_with_language_and_prompt(openai_client, audio):
    result, content_type = transcribe(openai_client, audio, "quick_brown_fox", language="en", prompt="A pangram.")
    assert isinstance(result, openai.types.audio.Transcription)
    assert content_type.startswith("application/json")
    assert word_error_rate(spoken(audio, "quick_brown_fox"), result.text) < MAX_WER


@pytest.mark.slow
def test_text_and_its_metrics(openai_client, http, audio):
    result, content_type = transcribe(openai_client, audio, "hello_world", response_format="text")
    assert isinstance(result, str) and result.endswith("\n")
    assert content_type.startswith("text/plain")
    assert word_error_rate(spoken(audio, "hello_world"), result) < MAX_WER
    metrics = http.get("/metrics").text
    assert f'gemmacli_model_requests_total{{endpoint="/v1/audio/transcriptions",model="{MODEL}"}}' in metrics
    assert f'gemmacli_e2e_request_latency_seconds_count{{model="{MODEL}"}}' in metrics


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_are_well_formed(openai_client, audio, fmt):
    name = "please_call_stella" if fmt == "srt" else "hello_world"
    body, content_type = transcribe(openai_client, audio, name, response_format=fmt)
    assert content_type.startswith("text/plain")
    if fmt == "vtt":
        assert body.startswith("WEBVTT\n\n")
        body = body.removeprefix("WEBVTT\n\n")
    else:
        assert "," in body.split("\n")[1]  # SRT writes milliseconds after a comma
    parsed = cues(body, numbered=fmt == "srt")
    assert parsed
    assert_timeline([(start, end) for start, end, _ in parsed], DURATION[name])
    assert word_error_rate(spoken(audio, name), " ".join(text for *_, text in parsed)) < MAX_WER


@pytest.mark.slow
def test_verbose_json_has_segments(openai_client, audio):
    result, content_type = transcribe(
        openai_client, audio, "quick_brown_fox", response_format="verbose_json", timestamp_granularities=["segment"]
    )
    assert isinstance(result, openai.types.audio.TranscriptionVerbose)
    assert content_type.startswith("application/json")
    assert result.language == "english" and result.duration == pytest.approx(DURATION["quick_brown_fox"], abs=0.01)
    assert result.segments and not result.words
    assert_timeline([(s.start, s.end) for s in result.segments], result.duration)
    assert word_error_rate(spoken(audio, "quick_brown_fox"), result.text) < MAX_WER
    assert word_error_rate(result.text, " ".join(s.text for s in result.segments)) == 0


@pytest.mark.slow
def test_verbose_json_has_words_when_asked(openai_client, audio):
    result, _ = transcribe(
        openai_client,
        audio,
        "please_call_stella",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],  # two repeated `timestamp_granularities[]` parts
    )
    reference = spoken(audio, "please_call_stella")
    assert result.words and result.segments
    assert_timeline([(w.start, w.end) for w in result.words], result.duration)
    assert word_error_rate(reference, " ".join(w.word for w in result.words)) < MAX_WER
    assert word_error_rate(reference, result.text) < MAX_WER


# --------------------------------------------------------------------------- what the model cannot do


@pytest.mark.slow
def test_translation_on_an_english_only_model_is_a_400_naming_it(openai_client, audio):
    with pytest.raises(openai.BadRequestError) as caught:
        transcribe(openai_client, audio, "hello_world", endpoint="translations")
    error = assert_error(caught.value.response, 400, None, "unsupported_input")
    assert MODEL in error["message"] and "translate" in error["message"]
    assert_still_serving(openai_client, audio)


@pytest.mark.slow
def test_language_reaches_the_model(openai_client, audio):
    with pytest.raises(openai.BadRequestError) as caught:
        transcribe(openai_client, audio, "hello_world", language="de")
    error = assert_error(caught.value.response, 400, None, "unsupported_input")
    assert MODEL in error["message"] and "'de'" in error["message"]
    assert_still_serving(openai_client, audio)


# --------------------------------------------------------------------------- bad requests, raw


def upload(kind: str, audio, images) -> dict:
    """The multipart parts httpx sends besides the text fields; (None, text) is a part without a filename."""
    fox = (audio / "quick_brown_fox.wav").read_bytes()
    return {
        "wav": {"file": ("fox.wav", fox, "audio/wav")},
        "none": NO_FILE,
        "text": {"file": (None, "speech.wav")},
        "empty": {"file": ("empty.wav", b"")},
        "corrupt": {"file": ("noise.wav", bytes(range(256)) * 8)},
        "header only": {"file": ("cut.wav", fox[:44])},
        "image": {"file": ("red.png", (images / "red_circle_64.png").read_bytes(), "image/png")},
    }[kind]


GRANULARITIES = "timestamp_granularities[]"  # the field's name on the wire, as the openai client sends it
NO_FILE = {"prompt": (None, "no file here")}  # still multipart/form-data, but nothing uploaded


def bad(case: str, status: int, param: str, code: str | None = None, file: str = "wav", **fields):
    return pytest.param(file, fields, status, param, code, id=case)


BAD_FORMS = [
    bad("missing file", 400, "file", "invalid_value", file="none"),
    bad("file as a text field", 400, "file", "invalid_value", file="text"),
    bad("empty file", 400, "file", "invalid_media", file="empty"),
    bad("corrupt file", 400, "file", "invalid_media", file="corrupt"),
    bad("header-only wav", 400, "file", "invalid_media", file="header only"),
    bad("image", 400, "file", "invalid_media", file="image"),
    bad("unknown model", 404, "model", "model_not_found", model="no-such-model"),  # wrong-task: test_api_embeddings
    bad("response_format diarized_json", 400, "response_format", response_format="diarized_json"),
    bad("temperature above 1", 400, "temperature", temperature="2"),
    bad("temperature not a number", 400, "temperature", temperature="hot"),
    bad("granularities without verbose_json", 400, "timestamp_granularities", **{GRANULARITIES: "word"}),
    bad(
        "unknown granularity",
        400,
        "timestamp_granularities",
        response_format="verbose_json",
        **{GRANULARITIES: ["word", "char"]},
    ),
    bad("stream", 400, "stream", stream="true"),
    bad("include logprobs", 400, "include", **{"include[]": "logprobs"}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("file", "fields", "status", "param", "code"), BAD_FORMS)
def test_bad_form_is_an_error_naming_the_field(http, openai_client, audio, images, file, fields, status, param, code):
    response = http.post("/v1/audio/transcriptions", files=upload(file, audio, images), data={"model": MODEL, **fields})
    assert_error(response, status, param, code)
    assert_still_serving(openai_client, audio)


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["transcriptions", "translations"])
def test_a_body_that_is_not_a_form_is_a_415(http, openai_client, audio, endpoint):
    response = http.post(f"/v1/audio/{endpoint}", json={"model": MODEL, "file": "speech.wav"})
    error = assert_error(response, 415, None, "unsupported_media_type")
    assert "multipart/form-data" in error["message"]
    assert_still_serving(openai_client, audio)
