"""A bad request never loads, evicts or waits for a model: every field is checked first.

With --load-on-demand --max-loaded 1 and only the embedding model loaded, invalid requests for models that
are not loaded (a chat model, Whisper) get their 400 while the set of loaded models stays as it was.
Real models, a real loader and a real server (tests/support/manager_kit.py).
"""

from __future__ import annotations

import base64

import pytest
from support.helpers import check_openai_error
from support.manager_kit import EMBED, GEMMA, WHISPER, home_fixture, live_server  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow
USER = [{"role": "user", "content": "Hi"}]
SCHEMA = "response_format.json_schema.schema"
NOT_AN_IMAGE = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()


def chat(**kw) -> dict:
    return {"model": GEMMA, "messages": USER, "max_tokens": 4, **kw}


CHAT = {
    "n above --max-n": (chat(n=9), "n"),
    "temperature out of range": (chat(temperature=5), "temperature"),
    "a field of the wrong type": (chat(max_tokens="many"), "max_tokens"),
    "tools": (chat(tools=[{"type": "function", "function": {"name": "f f"}}]), "tools[0].function.name"),
    "json schema": (chat(response_format={"type": "json_schema", "json_schema": {"schema": 1}}), SCHEMA),
    "too many stop strings": (chat(stop=["x"] * 17), "stop"),
    "an image to a text-only model": (
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": NOT_AN_IMAGE}}]}]),
        "messages[0].content[0]",
    ),
}
COMPLETIONS = {
    "max_tokens 0 without echo": ({"model": GEMMA, "prompt": "Hi", "max_tokens": 0}, "max_tokens"),
    "an empty prompt list": ({"model": GEMMA, "prompt": []}, "prompt"),
    "best_of": ({"model": GEMMA, "prompt": "Hi", "best_of": 3}, "best_of"),
}


def test_invalid_requests_are_refused_before_any_model_is_loaded(home, audio):
    with live_server((EMBED,), home=home, max_loaded=1) as live:
        assert live.loaded() == {EMBED}
        for body, param in CHAT.values():
            check_openai_error(live.http.post("/v1/chat/completions", json=body), 400, param=param)
        for body, param in COMPLETIONS.values():
            check_openai_error(live.http.post("/v1/completions", json=body), 400, param=param)
        wav = (audio / "hello_world.wav").read_bytes()
        for data, files, param in (
            ({"model": WHISPER, "language": "klingon"}, {"file": ("a.wav", wav)}, "language"),
            ({"model": WHISPER}, {"file": ("a.wav", b"RIFF not really a wav")}, "file"),
            ({"model": WHISPER, "response_format": "docx"}, {"file": ("a.wav", wav)}, "response_format"),
        ):
            response = live.http.post("/v1/audio/transcriptions", data=data, files=files)
            check_openai_error(response, 400, param=param)
        stats = live.stats()
        assert {m["id"] for m in stats["models"]} == {EMBED} and stats["loads"] == 1 and not stats["loading"]
        assert live.loader.count(GEMMA) == live.loader.count(WHISPER) == 0
        assert live.complete(GEMMA, max_tokens=1).status_code == 200  # a good request still loads it
        assert live.loaded() == {GEMMA}
