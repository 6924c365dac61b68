"""Soak: mixed traffic against a live server on the demo chat, embedding and Whisper models for a bounded
time (GEMMACLI_SOAK_SECONDS, default 180), about one streaming client in ten hanging up mid-stream.

Afterwards nothing may be left behind: no errors on valid requests, every stream that ran to its end
ended with [DONE], memory back within 10 % of its post-warm-up level, no extra threads, and the
in-flight, running and waiting gauges back at 0. The server runs in this process (a uvicorn thread),
so its memory is this process's.
"""

from __future__ import annotations

import gc
import json
import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
SECONDS = float(os.environ.get("GEMMACLI_SOAK_SECONDS", 180))
CLIENTS = 4
HANGUP_RATE = 0.1
WAV = Path(__file__).parent / "data" / "audio" / "hello_world.wav"
CHAT = "gemma-3-270m"
EMBED = "all-minilm-l6-v2"
WHISPER = "whisper-tiny.en"


@pytest.fixture(scope="module")
def live(chat_runner, embed_runner, transcribe_runner):
    from support.liveserver import LiveServer

    from gemmacli.server import create_app
    from gemmacli.server.loaded import LoadedModel
    from gemmacli.server.settings import ServerSettings

    models = [LoadedModel(CHAT, chat_runner), LoadedModel(EMBED, embed_runner), LoadedModel(WHISPER, transcribe_runner)]
    with LiveServer(create_app(ServerSettings(max_batch=4), models=models)) as server:
        yield server.url


class Traffic:
    """One client's requests; counts what happened in `stats` (shared, guarded by a lock)."""

    def __init__(self, base: str, seed: int, stats: Counter, lock: threading.Lock):
        self.http = httpx.Client(base_url=base, timeout=120)
        self.random = random.Random(seed)
        self.stats = stats
        self.lock = lock

    def count(self, *keys: str) -> None:
        with self.lock:
            self.stats.update(keys)

    def run(self, deadline: float) -> None:
        kinds = [self.chat, self.chat_stream, self.completion, self.completion_stream, self.embed, self.transcribe]
        with self.http:
            while time.monotonic() < deadline:
                kind = self.random.choice(kinds)
                try:
                    kind()
                except Exception as exc:  # any failure of a valid request is an error, counted by its kind
                    self.count("errors", f"error:{kind.__name__}:{type(exc).__name__}:{exc}"[:200])
                self.count("requests", kind.__name__)

    def _expect(self, response: httpx.Response) -> dict:
        assert response.status_code == 200, response.text
        return response.json()

    def _max_tokens(self) -> int:
        return self.random.randint(2, 12)

    def chat(self) -> None:
        body = {
            "model": CHAT,
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": self._max_tokens(),
        }
        assert self._expect(self.http.post("/v1/chat/completions", json=body))["choices"][0]["finish_reason"]

    def completion(self) -> None:
        body = {"model": CHAT, "prompt": "The weather today is", "max_tokens": self._max_tokens()}
        assert self._expect(self.http.post("/v1/completions", json=body))["usage"]["completion_tokens"] > 0

    def chat_stream(self) -> None:
        body = {"model": CHAT, "messages": [{"role": "user", "content": "Count to ten."}]}
        self._stream("/v1/chat/completions", body)

    def completion_stream(self) -> None:
        self._stream("/v1/completions", {"model": CHAT, "prompt": "1, 2, 3,"})

    def _stream(self, path: str, body: dict) -> None:
        hang_up = self.random.random() < HANGUP_RATE
        last = None
        body = {**body, "max_tokens": self._max_tokens() + 8, "stream": True}
        with self.http.stream("POST", path, json=body) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                last = line.removeprefix("data: ")
                assert last == "[DONE]" or "error" not in json.loads(last), last
                if hang_up:  # leave mid-stream: closing the response drops the connection
                    self.count("disconnects")
                    return
        assert last == "[DONE]", f"stream ended with {last!r}"
        self.count("streams completed")

    def embed(self) -> None:
        texts = [f"text number {self.random.randint(0, 10_000)}" for _ in range(self.random.randint(1, 8))]
        data = self._expect(self.http.post("/v1/embeddings", json={"model": EMBED, "input": texts}))["data"]
        assert len(data) == len(texts)

    def transcribe(self) -> None:
        files = {"file": ("hello.wav", WAV.read_bytes(), "audio/wav")}
        assert self._expect(self.http.post("/v1/audio/transcriptions", data={"model": WHISPER}, files=files))["text"]


def rss_bytes() -> int:
    gc.collect()
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024


def gauges(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    names = ("gemmacli_http_requests_in_flight", "gemmacli_requests_running", "gemmacli_requests_waiting")
    return {name: float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1)) for name in names}


def settle(base: str, baseline_threads: int, timeout: float = 30) -> tuple[dict, int]:
    """Gauges and thread count once the server has caught up (anyio's idle workers linger for 10 s)."""
    deadline = time.monotonic() + timeout
    while True:
        now, threads = gauges(base), threading.active_count()
        if (not any(now.values()) and threads <= baseline_threads) or time.monotonic() > deadline:
            return now, threads
        time.sleep(0.5)


def test_mixed_traffic_leaves_nothing_behind(live):
    stats, lock = Counter(), threading.Lock()
    for kind in ("chat", "chat_stream", "completion", "completion_stream", "embed", "transcribe"):  # warm-up
        getattr(Traffic(live, seed=-1, stats=Counter(), lock=lock), kind)()
    _, threads_before = settle(live, threading.active_count())
    rss_before = rss_bytes()

    deadline = time.monotonic() + SECONDS
    with ThreadPoolExecutor(CLIENTS, thread_name_prefix="soak-client") as pool:
        for future in [pool.submit(Traffic(live, seed, stats, lock).run, deadline) for seed in range(CLIENTS)]:
            future.result()

    now, threads_after = settle(live, threads_before)
    rss_after = rss_bytes()
    summary = {
        **stats,
        "rss_before_mb": rss_before >> 20,
        "rss_after_mb": rss_after >> 20,
        "threads_before": threads_before,
        "threads_after": threads_after,
    }
    print(f"\nsoak {SECONDS:.0f} s: {json.dumps(summary)}")
    errors = {k: v for k, v in stats.items() if k.startswith("error:")}
    assert stats["errors"] == 0, errors
    assert stats["requests"] > 0 and stats["streams completed"] > 0
    assert now == dict.fromkeys(now, 0.0), now
    assert threads_after <= threads_before, [t.name for t in threading.enumerate()]
    assert abs(rss_after - rss_before) <= 0.10 * rss_before, summary
