"""Chat through the server's engine: disconnects, queue limits, timeouts and shared batches, each on an app
of its own over the same runners (the real Gemma 3 270M), so its engine can be watched directly."""

from __future__ import annotations

import contextlib
import json
import time

import httpx
import pytest
from support.helpers import check_openai_error, sse_events

from gemmacli.types import GenParams

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"
USER = [{"role": "user", "content": "Name three colours."}]


# -- the engine: disconnects, queue limits, timeouts (an app of our own, to watch its engine directly)


@contextlib.contextmanager
def live_app(served, settings):
    """Another app over the same runners, for settings the session server does not have. Only use it
    while the session server is idle: the runners are not thread-safe."""
    from support.liveserver import LiveServer

    from gemmacli.server import create_app

    app = create_app(settings, models=served())
    with LiveServer(app) as live:
        yield live.url, app.state["services"]


def _generated(services) -> float:
    return services.metrics.registry.get_sample_value("gemmacli_generation_tokens_total", {"model": MODEL}) or 0.0


def _finished(services) -> float:
    """Generations that ran to their end (a cancelled one never does)."""
    labels = {"model": MODEL, "endpoint": "/v1/chat/completions"}
    return services.metrics.registry.get_sample_value("gemmacli_model_requests_total", labels) or 0.0


def _client_closed(services) -> float:
    labels = {"endpoint": "/v1/chat/completions", "status": "499"}
    return services.metrics.registry.get_sample_value("gemmacli_requests_total", labels) or 0.0


def _wait_idle(services, seconds: float = 5.0) -> float:
    deadline = time.monotonic() + seconds
    while services.engine.running or services.engine.waiting:
        assert time.monotonic() < deadline, "the engine is still busy: generation did not stop"
        time.sleep(0.01)
    return time.monotonic()


LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write a very long essay."}],
    "max_tokens": 2000,
    "temperature": 1,
    "seed": 1,
    "min_p": 0,
    "top_k": 0,
    "top_p": 1,
}


@pytest.fixture(scope="module")
def small_server(served):
    """One request at a time, nobody waiting: the second concurrent request gets 429."""
    from gemmacli.server.settings import ServerSettings

    with live_app(served, ServerSettings(max_batch=1, max_queue=0)) as served:
        yield served


def test_disconnect_stops_generation_within_a_step(small_server):
    url, services = small_server
    before, finished = _generated(services), _finished(services)
    with (
        httpx.Client(base_url=url, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as r,
    ):
        lines = r.iter_lines()
        first, _, second, _ = (next(lines) for _ in range(4))  # two events, each with its blank line
        assert first.startswith("data: ") and second.startswith("data: ")
        assert services.engine.running == 1
    _wait_idle(services)  # 2000 tokens would take minutes here: idle within seconds means it stopped
    stopped_at = _generated(services)
    assert stopped_at - before < 100
    time.sleep(0.3)
    assert _generated(services) == stopped_at and _finished(services) == finished


def test_non_stream_disconnect_stops_generation_too(small_server):
    url, services = small_server
    finished, closed = _finished(services), _client_closed(services)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=LONG, timeout=1.0)
    # On a busy machine the job may not even be submitted yet when the client gives up: wait for the
    # server to notice the hang-up (it logs a 499) before checking that the engine is idle.
    deadline = time.monotonic() + 10
    while _client_closed(services) == closed:
        assert time.monotonic() < deadline, "the server never noticed that the client left"
        time.sleep(0.02)
    _wait_idle(services)
    assert _finished(services) == finished


def test_queue_full_is_a_429_with_retry_after_before_any_byte(small_server):
    url, services = small_server
    with httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as busy:
            assert busy.status_code == 200 and next(busy.iter_lines()).startswith("data: ")
            r = client.post("/v1/chat/completions", json={**LONG, "stream": True, "max_tokens": 1})
            assert check_openai_error(r, 429)["code"] == "rate_limit_exceeded"
            assert int(r.headers["retry-after"]) >= 1
        _wait_idle(services)
        assert (
            client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, "max_tokens": 1}).status_code
            == 200
        )


def test_timeout_mid_stream_is_one_error_event_then_the_end(served):
    from gemmacli.server.settings import ServerSettings

    with live_app(served, ServerSettings(request_timeout=1.5)) as (url, services):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**LONG, "stream": True}, timeout=60) as r:
            if r.status_code != 200:  # the first token itself took longer than 1.5 s (a very busy machine)
                pytest.skip(f"no first token within the timeout: {r.status_code}")
            events = sse_events(r.read())
        _wait_idle(services)
    error = json.loads(events[-1])
    assert list(error) == ["error"] and error["error"]["code"] == "timeout"
    assert b"[DONE]" not in events and all("choices" in json.loads(e) for e in events[:-1])


@pytest.mark.slow
def test_cli_and_server_give_the_same_greedy_text(openai_client, gemma_dir):
    """`gemmacli chat` and /v1/chat/completions share the runner: the same prompt gives the same text."""
    import json

    from typer.testing import CliRunner

    from gemmacli.cli import app

    prompt = "Name three fruits."
    cli = CliRunner().invoke(app, ["chat", prompt, "--temperature", "0", "--max-tokens", "16", "--json", "-q"])
    assert cli.exit_code == 0, cli.output
    http = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=16
    )
    assert json.loads(cli.stdout)["text"] == http.choices[0].message.content


@pytest.mark.slow
def test_concurrent_requests_decode_in_one_batch_and_match_alone(served, chat_runner):
    """Requests to one model share a batch: each gets the greedy text it would get alone."""
    import asyncio

    import torch

    from gemmacli.runners.decoder import Decoder
    from gemmacli.server.settings import ServerSettings

    sizes: list[int] = []
    original = Decoder.advance

    def spying(self):
        sizes.append(len(self.running))
        return original(self)

    prompts = ["Monday, Tuesday, Wednesday,", "One, two, three,", "The capital of France is", "Red, green,"]
    alone = [chat_runner.complete_text(p, GenParams(temperature=0, max_tokens=12)).text for p in prompts]

    async def together(url):
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            bodies = [{"model": MODEL, "prompt": p, "temperature": 0, "max_tokens": 12} for p in prompts]
            replies = await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))
        return [r.json()["choices"][0]["text"] for r in replies]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Decoder, "advance", spying)
        with live_app(served, ServerSettings(max_batch=4)) as (url, _):
            texts = asyncio.run(together(url))
    if chat_runner.model.dtype == torch.float32:
        assert texts == alone
    else:  # bf16 rounding differs with the batch shape: compare the start only
        assert [t[:8] for t in texts] == [a[:8] for a in alone]
    assert max(sizes) >= 2  # at least two requests really shared decode steps
