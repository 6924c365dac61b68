"""Bad images, audio and video inside /v1/chat/completions: corrupt, truncated, bombs (claimed and real), over
the byte, pixel, count and duration limits, bad base64, wrong data-URL media types. Each case checks the
status, OpenAI's error shape with the part's `param`, then that the server still answers."""

from __future__ import annotations

import pytest
from support.badinput import (
    CHAT,
    HEARS,
    LIMITS,
    SEES,
    VISION,
    b64,
    data_url,
    expect,
    flac_claiming,
    image_as,
    png,
    png_claiming,
    small_app,
    sound,
    still_serving,
    wav_claiming_rate,
)

pytestmark = pytest.mark.slow
IMG = "messages[0].content[0].image_url"
AUDIO = "messages[0].content[0].input_audio.data"
AUDIO_URL = "messages[0].content[0].audio_url"
VIDEO = "messages[0].content[0].video_url"


@pytest.fixture(scope="module")
def client(served):
    with small_app(served) as client:
        yield client


def image(url) -> dict:
    return {"type": "image_url", "image_url": url if isinstance(url, str | int) else {"url": url}}


def audio(data: str) -> dict:
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def heard(*content: dict) -> dict:
    """A chat request to a model that takes audio."""
    return request(*content, model=HEARS)


def request(*content: dict, role: str = "user", model: str = VISION) -> dict:
    messages = [{"role": role, "content": [*content, {"type": "text", "text": "describe"}]}]
    if role != "user":
        messages.append({"role": "user", "content": "and?"})
    return {"model": model, "messages": messages, "max_tokens": 1}


def case(name: str, body: dict, param: str | None, code: str | None = "invalid_media"):
    return pytest.param(body, param, code, id=name)


def noisy_png_over_bytes() -> bytes:
    data = png(300, 300, noise=True)  # 90,000 px (under the pixel limit), ~270 kB (over the byte limit)
    assert len(data) > LIMITS["max_image_bytes"]
    return data


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


IMAGES = [
    case("corrupt bytes", request(image(data_url(bytes(range(256)) * 4))), IMG),
    case("truncated png", request(image(data_url(truncated(png(64, 64, noise=True))))), IMG),
    case("truncated jpeg", request(image(data_url(truncated(image_as("JPEG", 64)), "image/jpeg"))), IMG),
    case("empty data url", request(image("data:image/png;base64,")), IMG),
    case("header claims 100000x100000", request(image(data_url(png_claiming(100_000, 100_000)))), IMG),
    case("header claims 1x10^9", request(image(data_url(png_claiming(1, 1_000_000_000)))), IMG),
    case("real image over the pixel limit", request(image(data_url(png(1200, 1000)))), IMG),
    case("image over the byte limit", request(image(data_url(noisy_png_over_bytes()))), IMG),
    case("1x1 image", request(image(data_url(png(1, 1)))), IMG),
    case("1x500 image", request(image(data_url(png(1, 500)))), IMG),
    case("ico is not an accepted format", request(image(data_url(image_as("ICO"), "image/x-icon"))), IMG),
    case("pdf is not an image", request(image(data_url(b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n", "image/png"))), IMG),
    case(
        "svg is not decoded",
        request(image(data_url(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"))),
        IMG,
    ),
    case("broken base64", request(image("data:image/png;base64,!!notbase64")), IMG, "invalid_parameter"),
    case("base64 with a bad length", request(image("data:image/png;base64,iVBORw0KGgo")), IMG, "invalid_parameter"),
    case("data url without a comma", request(image("data:image/png;base64")), IMG),
    case("not a url", request(image("hello")), IMG),
    case("http url with remote media off", request(image("https://example.com/a.png")), IMG),
    case("file url", request(image("file:///etc/passwd")), IMG),
    case("text/plain media type", request(image(data_url(png(8, 8), "text/plain"))), IMG),
    case("text/html media type", request(image(data_url(png(8, 8), "text/html"))), IMG),
    case("audio media type for an image", request(image(data_url(png(8, 8), "audio/wav"))), IMG),
    case("image_url without url", request(image({})), f"{IMG}.url", "invalid_value"),
    case("image_url a number", request(image(5)), IMG, "invalid_value"),
    case(
        "three images over the limit of two",
        request(*[image(data_url(png(8, 8)))] * 3),
        "messages[0].content[2]",
        "invalid_parameter",
    ),
    case(
        "image in a system message",
        request(image(data_url(png(8, 8))), role="system"),
        "messages[0]",
        "invalid_parameter",
    ),
    case(
        "image to a text-only model",
        request(image(data_url(png(8, 8))), model=CHAT),
        "messages[0].content[0]",
        "unsupported_input",
    ),
]


@pytest.mark.parametrize(("body", "param", "code"), IMAGES)
def test_a_bad_image_is_a_400_naming_the_part(client, body, param, code):
    error = expect(client.post("/v1/chat/completions", json=body), 400, param, code)
    assert "Traceback" not in error["message"]
    still_serving(client)


AUDIOS = [
    case("empty audio", heard(audio("")), AUDIO),
    case("corrupt audio", heard(audio(b64(bytes(range(256)) * 8))), AUDIO),
    case("png sent as audio", heard(audio(b64(png(8, 8)))), AUDIO),
    case("header-only wav", heard(audio(b64(sound(1)[:44]))), AUDIO),
    case("bad base64 audio", heard(audio("%%%")), AUDIO, "invalid_parameter"),
    case("audio over the byte limit", heard(audio(b64(sound(12)))), AUDIO),
    case("flac claiming ten hours", heard(audio(b64(flac_claiming(36_000)))), AUDIO),
    case("flac really a minute long", heard(audio(b64(sound(60, fmt="FLAC")))), AUDIO),
    case("wav claiming a 2 GHz rate", heard(audio(b64(wav_claiming_rate(2_000_000_000)))), AUDIO),
    case("wav claiming a 1 Hz rate", heard(audio(b64(wav_claiming_rate(1)))), AUDIO),
    case(
        "audio_url with an image type",
        heard({"type": "audio_url", "audio_url": data_url(sound(1), "image/png")}),
        AUDIO_URL,
    ),
    case("audio_url not a data url", heard({"type": "audio_url", "audio_url": {"url": "ftp://x/a.wav"}}), AUDIO_URL),
    case(
        "input_audio without data",
        heard({"type": "input_audio", "input_audio": {}}),
        "messages[0].content[0].input_audio.data",
        "invalid_value",
    ),
    case(
        "two clips over the limit of one",
        heard(audio(b64(sound(1))), audio(b64(sound(1)))),
        "messages[0].content[1]",
        "invalid_parameter",
    ),
    case(
        "valid audio to a model without audio",
        request(audio(b64(sound(1))), model=CHAT),
        "messages[0].content[0]",
        "unsupported_input",
    ),
    case(
        "an audio format that is not one",
        request({"type": "input_audio", "input_audio": {"data": b64(sound(1)), "format": "aiff"}}),
        "messages[0].content[0].input_audio.format",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(("body", "param", "code"), AUDIOS)
def test_bad_audio_in_a_chat_is_a_400_naming_the_part(client, body, param, code):
    expect(client.post("/v1/chat/completions", json=body), 400, param, code)
    still_serving(client)


def test_a_valid_image_still_works_after_the_bad_ones(client):
    with_image = client.post("/v1/chat/completions", json=request(image(data_url(png(64, 64)))))
    text_only = client.post("/v1/chat/completions", json=request())
    assert with_image.status_code == text_only.status_code == 200, with_image.text
    assert with_image.json()["usage"]["prompt_tokens"] > text_only.json()["usage"]["prompt_tokens"]


def video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def seen(*content: dict) -> dict:
    """A chat request to a model that takes video."""
    return request(*content, model=SEES)


def clip(**kw) -> bytes:
    from support.videos import make_clip

    return make_clip(**kw)


VIDEOS = [
    case("corrupt video", seen(video(data_url(bytes(range(256)) * 8, "video/mp4"))), VIDEO),
    case("truncated mp4", seen(video(data_url(truncated(clip()), "video/mp4"))), VIDEO),
    case("truncated webm", seen(video(data_url(truncated(clip(codec="libvpx")), "video/webm"))), VIDEO),
    case("a wav sent as video", seen(video(data_url(sound(1), "video/mp4"))), VIDEO),
    case("video over the byte limit", seen(video(data_url(clip(frames=120, size=(640, 480)), "video/mp4"))), VIDEO),
    case("video over the length limit", seen(video(data_url(clip(frames=150, fps=24), "video/mp4"))), VIDEO),
    case("frames over the pixel limit", seen(video(data_url(clip(frames=2, size=(1280, 800)), "video/mp4"))), VIDEO),
    case("bad base64 video", seen(video("data:video/mp4;base64,%%%")), VIDEO, "invalid_parameter"),
    case("image media type for a video", seen(video(data_url(clip(), "image/png"))), VIDEO),
    case("http video with remote media off", seen(video("https://example.com/clip.mp4")), VIDEO),
    case(
        "two videos over the limit of one",
        seen(video(data_url(clip(), "video/mp4")), video(data_url(clip(), "video/mp4"))),
        "messages[0].content[1]",
        "invalid_parameter",
    ),
    case(
        "video to a model without video",
        request(video(data_url(clip(), "video/mp4"))),
        "messages[0].content[0]",
        "unsupported_input",
    ),
]


@pytest.mark.parametrize(("body", "param", "code"), VIDEOS)
def test_bad_video_in_a_chat_is_a_400_naming_the_part(client, body, param, code):
    error = expect(client.post("/v1/chat/completions", json=body), 400, param, code)
    assert "Traceback" not in error["message"]
    still_serving(client)


def test_a_valid_video_is_taken(client):
    reply = client.post("/v1/chat/completions", json=seen(video(data_url(clip(), "video/mp4"))))
    assert reply.status_code == 200, reply.text
