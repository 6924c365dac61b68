"""Shared pieces of the tests/test_bad_input_*.py files: a live app with small limits, crafted bad media,
and the checks every case makes (status, OpenAI's error shape, and a valid request right after).

The limits are small so that the cases over them stay cheap: a few KB of text, a 1-megapixel image.
"""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import zlib

import httpx
import numpy as np
import soundfile as sf
from PIL import Image

from support.helpers import check_openai_error

CHAT = "gemma-3-270m"
VISION = "tiny-gemma3-vision"
EMBED = "all-minilm-l6-v2"
WHISPER = "whisper-tiny.en"
HEARS = "fake-chat-with-audio"
SEES = "fake-chat-with-video"
KEY = "bad-input-key"
LIMITS = dict(
    max_body_bytes=2_000_000,
    max_messages=8,
    max_inputs=8,
    max_text_chars=4000,
    max_total_chars=10_000,
    max_images=2,
    max_image_bytes=200_000,
    max_image_pixels=1_000_000,
    min_image_side=2,
    max_audio_clips=1,
    max_audio_bytes=300_000,
    max_audio_seconds=10.0,
    max_video_clips=1,
    max_video_bytes=100_000,
    max_video_seconds=5.0,
    max_stop=4,
    max_stop_chars=20,
    max_audio_prompt_chars=200,
)
_UNSET = object()


@contextlib.contextmanager
def small_app(served):
    """The real app over the session's runners, with an API key and the small LIMITS; yields an httpx client
    that sends the key. Runners are not thread-safe: the session server must be idle meanwhile (it is)."""
    from gemmacli.server import create_app
    from gemmacli.server.loaded import LoadedModel
    from gemmacli.server.settings import ServerSettings
    from support.fakes import FakeChatRunner
    from support.liveserver import LiveServer

    # A model that takes audio, so bad audio reaches the decoding checks (a real one would only answer after them).
    hears = FakeChatRunner(HEARS)
    hears.modalities = ("text", "audio")
    sees = FakeChatRunner(SEES)
    sees.modalities = ("text", "image", "video")
    models = [*served(), LoadedModel(HEARS, hears), LoadedModel(SEES, sees)]
    app = create_app(ServerSettings(api_keys=(KEY,), warmup=False, **LIMITS), models=models)
    auth = {"Authorization": f"Bearer {KEY}"}
    with LiveServer(app) as live, httpx.Client(base_url=live.url, headers=auth, timeout=60) as client:
        yield client


def expect(response, status: int, param=_UNSET, code=_UNSET) -> dict:
    """The status, OpenAI's error shape, the `param` when given, and a readable, bounded message."""
    checks = {k: v for k, v in (("param", param), ("code", code)) if v is not _UNSET}
    error = check_openai_error(response, status, **checks)
    assert "Traceback" not in response.text and len(error["message"]) < 20_000, error["message"][:200]
    return error


def embeds(client: httpx.Client) -> None:
    """The cheapest valid request: the server still answers after a bad one."""
    response = client.post("/v1/embeddings", json={"model": EMBED, "input": "still here"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 384


_checks = iter(range(1 << 30))


def still_serving(client: httpx.Client, every: int = 8) -> None:
    """After each bad request an embedding; after every `every`th a one-token chat too (it costs ~1 s on CPU)."""
    embeds(client)
    if next(_checks) % every == 0:
        chats(client)


def chats(client: httpx.Client) -> None:
    """A one-token chat: the chat path, engine thread included, still works after a bad request."""
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 1


# -- media


def png(width: int, height: int, noise: bool = False) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8) if noise else None
    image = Image.fromarray(pixels) if noise else Image.new("RGB", (width, height), "red")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header says width x height: a decompression bomb's first step, at no cost."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def image_as(fmt: str, size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "blue").save(buffer, format=fmt)
    return buffer.getvalue()


def sound(seconds: float, rate: int = 16_000, fmt: str = "WAV") -> bytes:
    """Silence: a 60 s FLAC of it is about 1.4 KB, so "really too long" costs nothing to send."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), dtype=np.float32), rate, format=fmt)
    return buffer.getvalue()


def flac_claiming(seconds: float) -> bytes:
    """A one-second FLAC whose STREAMINFO claims `seconds`: refused from the header, before decoding."""
    data = bytearray(sound(1, fmt="FLAC"))
    field = int.from_bytes(data[18:26], "big")  # rate (20 bits), channels, bits, total samples (36 bits)
    data[18:26] = ((field & ~((1 << 36) - 1)) | int(seconds * 16_000)).to_bytes(8, "big")
    return bytes(data)


def wav_claiming_rate(rate: int) -> bytes:
    """A tiny WAV whose header claims a sample rate that would size read buffers in the gigabytes."""
    data = bytearray(sound(0.1))
    data[24:32] = struct.pack("<II", rate, rate * 2)
    return bytes(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"
