"""Bad /v1/audio/transcriptions and /translations uploads: multipart abuse (no file, two files, text where
the file goes, huge fields, bodies that are not multipart), audio that is empty, corrupt, of the wrong
format, too big, too long (really or by its header's claim). Each case checks the status, OpenAI's error
shape and `param`, then that the server still answers; a real transcription closes the file."""

from __future__ import annotations

import pytest
from support.badinput import (
    EMBED,
    LIMITS,
    WHISPER,
    embeds,
    expect,
    flac_claiming,
    png,
    small_app,
    sound,
    wav_claiming_rate,
)
from support.helpers import AUDIO_DIR

pytestmark = pytest.mark.slow
FOX = (AUDIO_DIR / "quick_brown_fox.wav").read_bytes()


@pytest.fixture(scope="module")
def client(served):
    with small_app(served) as client:
        yield client


def form(name: str, files, status: int, param: str | None, endpoint: str = "transcriptions", **fields):
    data = {"model": WHISPER, **fields}
    return pytest.param(endpoint, files, {k: v for k, v in data.items() if v is not None}, status, param, id=name)


def wav(data: bytes, name: str = "a.wav") -> list:
    return [("file", (name, data, "audio/wav"))]


CASES = [
    form("no file", [("prompt", (None, "no file here"))], 400, "file"),
    form("file as a text field", [("file", (None, "speech.wav"))], 400, "file"),
    form("two files", wav(FOX) + wav(FOX, "b.wav"), 400, "file"),
    form("empty file", wav(b""), 400, "file"),
    form("corrupt file", wav(bytes(range(256)) * 8), 400, "file"),
    form("header-only wav", wav(FOX[:44]), 400, "file"),
    form("png uploaded as audio", wav(png(16, 16), "a.png"), 400, "file"),
    form("text uploaded as audio", wav(b"hello, I am not audio" * 10, "a.txt"), 400, "file"),
    form("file over the byte limit", wav(sound(12)), 400, "file"),
    form("flac really a minute long", wav(sound(60, fmt="FLAC"), "a.flac"), 400, "file"),
    form("flac claiming ten hours", wav(flac_claiming(36_000), "a.flac"), 400, "file"),
    form("wav claiming a 2 GHz rate", wav(wav_claiming_rate(2_000_000_000)), 400, "file"),
    form("no model", wav(FOX), 400, "model", model=None),
    form("unknown model", wav(FOX), 404, "model", model="whisper-1"),
    form("embedding model", wav(FOX), 404, "model", model=EMBED),
    form("model a path", wav(FOX), 404, "model", model="../../etc/passwd"),
    form("model with a nul byte", wav(FOX), 404, "model", model="whisper\x00"),
    form("prompt over the limit", wav(FOX), 400, "prompt", prompt="p" * (LIMITS["max_audio_prompt_chars"] + 1)),
    form("huge language field", wav(FOX), 400, "language", language="x" * 500_000),
    form("temperature above 1", wav(FOX), 400, "temperature", temperature="1.5"),
    form("temperature negative", wav(FOX), 400, "temperature", temperature="-0.5"),
    form("temperature a word", wav(FOX), 400, "temperature", temperature="warm"),
    form("response_format unknown", wav(FOX), 400, "response_format", response_format="docx"),
    form("stream true", wav(FOX), 400, "stream", stream="true"),
    form("stream a word", wav(FOX), 400, "stream", stream="perhaps"),
    form("translation without file", [("prompt", (None, "x"))], 400, "file", "translations"),
    form("translation of corrupt audio", wav(b"\0" * 4000), 400, "file", "translations"),
    form("translation over the byte limit", wav(sound(12)), 400, "file", "translations"),
    form("translation temperature above 1", wav(FOX), 400, "temperature", "translations", temperature="7"),
]


@pytest.mark.parametrize(("endpoint", "files", "fields", "status", "param"), CASES)
def test_a_bad_upload_names_its_field(client, endpoint, files, fields, status, param):
    expect(client.post(f"/v1/audio/{endpoint}", files=files, data=fields), status, param)
    embeds(client)


NOT_FORMS = {
    "json": ({"json": {"model": WHISPER, "file": "speech.wav"}}, 415),
    "urlencoded": ({"data": {"model": WHISPER, "file": "speech.wav"}}, 415),
    "raw wav": ({"content": FOX, "headers": {"content-type": "audio/wav"}}, 415),
    "no content type": ({"content": FOX}, 415),
    "multipart without a boundary": ({"content": FOX, "headers": {"content-type": "multipart/form-data"}}, 400),
    "multipart with a wrong boundary": (
        {"content": b"--nope\r\n\r\n", "headers": {"content-type": "multipart/form-data; boundary=xyz"}},
        400,
    ),
}


@pytest.mark.parametrize(("request_kwargs", "status"), NOT_FORMS.values(), ids=NOT_FORMS.keys())
def test_a_body_that_is_not_a_good_form_is_refused(client, request_kwargs, status):
    expect(client.post("/v1/audio/transcriptions", **request_kwargs), status)
    embeds(client)


def test_a_form_over_the_body_limit_is_a_413(client):
    expect(
        client.post("/v1/audio/transcriptions", files=wav(b"\0" * LIMITS["max_body_bytes"]), data={"model": WHISPER}),
        413,
    )
    embeds(client)


def test_a_real_transcription_still_works_after_the_bad_uploads(client):
    response = client.post("/v1/audio/transcriptions", files=wav(FOX), data={"model": WHISPER})
    assert response.status_code == 200, response.text
    assert "fox" in response.json()["text"].lower()
