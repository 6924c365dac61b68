"""Models on demand: loading while others serve, single-flight loads, unknown names, catalog defaults.

Real models and a real server (tests/support/manager_kit.py); the loader only records when it builds.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.helpers import check_openai_error
from support.manager_kit import EMBED, TINY, WHISPER, home_fixture, live_server, stream_tokens  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow


def test_second_model_loads_on_demand_while_the_first_keeps_streaming(home, audio):
    """Model A (chat) streams while model B (Whisper) loads on its first request.

    B's load is held open until A has streamed 5 more tokens: were loading to block the inference thread,
    those tokens could never come and the hold would time out, instead of depending on how fast B loads.
    """
    with live_server((TINY,), home=home) as live:
        times: list[float] = []
        stop = [False]
        body = {"model": TINY, "prompt": "Hello", "max_tokens": 8000, "temperature": 0}
        streaming = threading.Thread(target=stream_tokens, args=(live.url, body, times, stop))
        streaming.start()
        live.wait_until(lambda: len(times) >= 3)

        def until_five_more_tokens() -> None:
            seen = len(times)
            live.wait_until(lambda: len(times) >= seen + 5, timeout=60)

        live.loader.hold[WHISPER] = until_five_more_tokens
        response = live.transcribe(audio / "hello_world.wav")  # never loaded so far
        stop[0] = True
        streaming.join(timeout=60)
    assert response.status_code == 200, response.text
    assert "hello" in response.json()["text"].lower()
    ((_, started, ended),) = [b for b in live.loader.builds if b[0] == WHISPER]
    during = [t for t in times if started <= t <= ended]
    assert len(during) >= 5, f"{len(during)} tokens in {ended - started:.2f} s of loading"
    print(f"\nmodel A streamed {len(during)} tokens during the {ended - started:.2f} s load of model B")


def test_concurrent_first_requests_load_once(home):
    with live_server(home=home) as live:
        names = [EMBED, "sentence-transformers/all-MiniLM-L6-v2"] * 3  # an alias is the same model
        barrier = threading.Barrier(len(names))

        def ask(name: str):
            barrier.wait()
            return live.embed(name, f"text for {name}")

        with ThreadPoolExecutor(len(names)) as pool:
            responses = list(pool.map(ask, names))
        assert [r.status_code for r in responses] == [200] * len(names), [r.text for r in responses]
        assert {r.json()["model"] for r in responses} == {EMBED}
        assert live.loader.count(EMBED) == 1
        stats = live.stats()
        assert stats["loads"] == 1
        (model,) = stats["models"]
        assert (model["id"], model["requests"], model["in_flight"]) == (EMBED, len(names), 0)


def test_requests_arriving_during_a_load_wait_for_it(home):
    with live_server(home=home) as live, ThreadPoolExecutor(2) as pool:
        first = pool.submit(live.embed)
        live.wait_until(lambda: live.stats()["loading"] == [EMBED] or first.done())
        second = pool.submit(live.embed, EMBED, "other")
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert live.loader.count(EMBED) == 1


def test_unknown_names_are_404_and_never_paths(home, minilm_dir):
    with live_server(home=home) as live:
        check_openai_error(live.embed("no-such-model"), 404, code="model_not_found", param="model")
        check_openai_error(live.embed(str(minilm_dir)), 404, code="model_not_found")  # a folder that exists
        error = check_openai_error(live.embed(TINY), 404, code="model_not_found")
        assert "chat model" in error["message"]
        assert live.loaded() == set() and live.loader.builds == []
    with live_server((TINY,), home=home, load_on_demand=False) as live:  # only what -m named may be served
        check_openai_error(live.embed(EMBED), 404, code="model_not_found")
        assert live.complete().status_code == 200


def test_request_beats_catalog_defaults_which_beat_global_ones(home, tmp_path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(f'[models."{TINY}"]\ntask = "chat"\n[models."{TINY}".defaults]\nmax_tokens = 3\n')
    with live_server(home=home, catalog=catalog) as live:  # as --catalog / GEMMACLI_CATALOG give it
        by_model, by_request = live.complete(max_tokens=None), live.complete(max_tokens=5)
    # 3, not the global 512: the model's default beat the global one; 5: the request's beat the model's.
    assert [r.json()["usage"]["completion_tokens"] for r in (by_model, by_request)] == [3, 5]
    assert {r.json()["choices"][0]["finish_reason"] for r in (by_model, by_request)} == {"length"}
