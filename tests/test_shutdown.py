"""SIGTERM drains `gemmacli serve`: no new connections, running streams finish (or, past --shutdown-timeout,
end with an error event), and the process exits 0. A real process on 127.0.0.1, as a container stop sends it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from test_serve import free_port, wait_for_health

pytestmark = pytest.mark.slow
COUNTING = "1, 2, 3, 4, 5, 6, 7,"  # greedy, the base model keeps counting: no early end of text


@contextmanager
def serving(tmp_path: Path, shutdown_timeout: float) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    port, log = free_port(), tmp_path / "server.log"
    options = ["--port", str(port), "--device", "cpu", "--no-warmup", "-q", "--shutdown-timeout", str(shutdown_timeout)]
    command = [sys.executable, "-m", "gemmacli", "serve", "-m", "gemma-3-270m", *options]
    with log.open("w") as log_file:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(command, cwd=tmp_path, env=os.environ.copy(), stderr=log_file)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_health(base, process, log)
            yield base, process, log
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def stream_events(base: str, max_tokens: int) -> Iterator[dict | str]:
    """Each `data:` payload of a streamed completion: a dict, or "[DONE]"."""
    body = {"model": "gemma-3-270m", "prompt": COUNTING, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                yield payload if payload == "[DONE]" else json.loads(payload)


def wait_until_refused(base: str, timeout: float = 10) -> float:
    """Seconds until a new connection is refused (the listening socket closed)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            httpx.get(f"{base}/health", timeout=1)
        except httpx.ConnectError:
            return time.monotonic() - started
        except httpx.TransportError:  # accepted just before the close, then shut: not refused yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"still accepting connections {timeout} s after SIGTERM")


def test_sigterm_lets_a_running_stream_finish_and_refuses_new_connections(gemma_dir, tmp_path):
    with serving(tmp_path, shutdown_timeout=120) as (base, process, log):
        events = []
        after_signal = 0
        refused_after = None
        for payload in stream_events(base, max_tokens=30):
            events.append(payload)
            if refused_after is not None:
                after_signal += 1
            elif len(events) == 2:  # mid-stream
                process.send_signal(signal.SIGTERM)
                refused_after = wait_until_refused(base)
        code = process.wait(timeout=60)
    assert code == 0, log.read_text()
    assert events[-1] == "[DONE]" and after_signal > 1, events
    chunks = [e for e in events if isinstance(e, dict)]
    assert not any("error" in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert refused_after < 5
    assert '"message":"shutting down"' in log.read_text()


def test_a_stream_longer_than_the_shutdown_timeout_ends_with_an_error_event(gemma_dir, tmp_path):
    with serving(tmp_path, shutdown_timeout=1) as (base, process, log):
        events, signalled = [], 0.0
        for payload in stream_events(base, max_tokens=4000):
            events.append(payload)
            if len(events) == 2:
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
        cut_after = time.monotonic() - signalled
        code = process.wait(timeout=60)
    assert code == 0, log.read_text()
    error = {"message": "the server is shutting down", "type": "server_error", "param": None, "code": "shutting_down"}
    assert events[-1] == {"error": error}
    assert "[DONE]" not in events and not any("error" in e for e in events[:-1])
    assert 1 <= cut_after < 10, cut_after
    assert "shutdown timeout: cancelling running requests" in log.read_text()
