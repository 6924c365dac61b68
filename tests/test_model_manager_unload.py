"""What leaves memory and when: LRU eviction under --max-loaded, busy models kept, idle unload, RSS freed.

Real models and a real server (tests/support/manager_kit.py).
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest
from support.helpers import check_openai_error
from support.manager_kit import EMBED, GEMMA, TINY, WHISPER, home_fixture, live_server, stream_tokens  # noqa: F401

from gemmacli.server.model_loading import rss_bytes

pytestmark = pytest.mark.slow


def test_least_recently_used_model_is_evicted_first(home, audio):
    wav = audio / "hello_world.wav"
    with live_server(home=home, max_loaded=2) as live:
        assert live.embed().status_code == 200
        assert live.transcribe(wav).status_code == 200
        assert live.loaded() == {EMBED, WHISPER}
        assert live.embed().status_code == 200  # the embedding model is now the most recently used
        assert live.complete(TINY).status_code == 200
        assert live.loaded() == {EMBED, TINY}  # Whisper went: least recently used
        statuses = {m["id"]: m["status"] for m in live.http.get("/v1/models").json()["data"]}
        assert statuses == {EMBED: "loaded", TINY: "loaded", WHISPER: "available", GEMMA: "available"}
        assert live.http.post(f"/admin/unload/{WHISPER}").json()["was_loaded"] is False
    with live_server(home=home, max_loaded=1) as live:
        for ask, expected in ((live.embed, EMBED), (lambda: live.transcribe(wav), WHISPER), (live.embed, EMBED)):
            assert ask().status_code == 200
            assert live.loaded() == {expected}
        assert (live.loader.count(EMBED), live.loader.count(WHISPER), live.stats()["loads"]) == (2, 1, 3)


def test_a_busy_model_is_not_evicted(home):
    with live_server((TINY,), home=home, max_loaded=1, load_wait=0.5) as live:
        times: list[float] = []
        stop = [False]
        body = {"model": TINY, "prompt": "Hello", "max_tokens": 8000, "temperature": 0}
        streaming = threading.Thread(target=stream_tokens, args=(live.url, body, times, stop))
        streaming.start()
        live.wait_until(lambda: len(times) >= 2)
        started = time.monotonic()
        refused = live.embed()
        waited = time.monotonic() - started
        error = check_openai_error(refused, 503, code="model_capacity", type="server_error")
        assert "busy" in error["message"] and refused.headers["retry-after"]
        assert 0.5 <= waited < 30  # waited load_wait for a place, then said so
        assert live.loaded() == {TINY}
        before = len(times)
        live.wait_until(lambda: len(times) > before + 2)  # the stream goes on
        stop[0] = True
        streaming.join(timeout=60)
        live.wait_until(lambda: live.stats()["models"][0]["in_flight"] == 0)
        assert live.embed().status_code == 200  # idle now: it makes way
        assert live.loaded() == {EMBED}


def test_idle_models_unload(home):
    with live_server(home=home, idle_unload=1.0) as live:
        assert live.embed().status_code == 200
        answered = time.monotonic()
        assert live.loaded() == {EMBED}
        live.wait_until(lambda: not live.loaded(), timeout=20)
        assert time.monotonic() - answered >= 0.9
        assert live.embed().status_code == 200  # and loads again when asked
        assert live.loader.count(EMBED) == 2


def test_unload_gives_the_memory_back(home):
    """gemma-3-270m in fp32 (about 1 GB): RSS must drop by most of its parameter bytes on unload."""
    with live_server(home=home, dtype="float32") as live:
        before = rss_bytes()
        assert live.http.post(f"/admin/load/{GEMMA}").json()["status"] == "loaded"
        assert live.complete(GEMMA, max_tokens=4).status_code == 200  # a request made its batch and KV cache
        (model,) = live.stats()["models"]
        loaded = rss_bytes()
        assert live.http.post(f"/admin/unload/{GEMMA}").json()["was_loaded"] is True
        after = rss_bytes()
    params = model["memory_bytes"]
    mb = 1 << 20
    print(
        f"\nRSS before load {before / mb:.0f} MiB, loaded {loaded / mb:.0f} MiB, after unload {after / mb:.0f} MiB;"
        f" parameters {params / mb:.0f} MiB ({model['dtype']})"
    )
    assert model["dtype"] == "float32" and params > 900 * mb
    assert loaded - after >= 0.8 * params


def _module(runner):
    """The torch module inside a chat, embedding or Whisper runner."""
    return getattr(runner, "model", None) or runner._pipe.model


def test_unloading_frees_each_runner_and_its_module(home, audio):
    """After unloading a chat, an embedding and a transcription model, nothing refers to their runners or
    torch modules any more (weak references die at gc.collect()), and RSS falls by most of their bytes."""
    with live_server(home=home, dtype="float32") as live:
        before = rss_bytes()
        assert live.complete(GEMMA, max_tokens=4).status_code == 200  # a decoded sequence, a KV cache
        assert live.embed().status_code == 200  # an embedding batch
        assert live.transcribe(audio / "hello_world.wav").status_code == 200
        refs = {m.id: (weakref.ref(m.runner), weakref.ref(_module(m.runner))) for m in live.manager.loaded()}
        sizes = {m["id"]: m["memory_bytes"] for m in live.stats()["models"]}
        loaded = rss_bytes()
        for model_id in refs:
            assert live.http.post(f"/admin/unload/{model_id}").json()["was_loaded"] is True
        gc.collect()
        after = rss_bytes()
        assert set(refs) == {GEMMA, EMBED, WHISPER} and not live.loaded()
        alive = [model_id for model_id, pair in refs.items() for ref in pair if ref() is not None]
        assert alive == [], f"still referenced after unloading: {alive}"
    mb = 1 << 20
    print(
        f"\nRSS before {before / mb:.0f} MiB, three models loaded {loaded / mb:.0f} MiB, after unloading "
        f"{after / mb:.0f} MiB; their bytes {sum(sizes.values()) / mb:.0f} MiB"
    )
    assert loaded - after >= 0.8 * sum(sizes.values())
