"""`gemmacli serve` as a user runs it: a real process on 127.0.0.1, driven by the official openai client."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gemmacli.cli import app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_model_offline_points_to_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env
    result = CliRunner().invoke(app, ["serve", "-q"])
    assert result.exit_code == 1
    assert "google/gemma-3-12b-it" in result.stderr and "gemmacli serve -m gemma-3-270m" in result.stderr
    assert "pip install 'gemmacli[demo]'" in result.stderr


def test_unknown_model_fails_before_listening(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "-m", "no-such-model", "-q"])
    assert result.exit_code == 1 and "unknown model" in result.stderr


@pytest.mark.slow
def test_serve_three_models_then_sigterm(gemma_dir, minilm_dir, whisper_dir, audio, tmp_path):
    import openai

    port = free_port()
    model_flags = ["-m", "gemma-3-270m", "-m", "all-minilm-l6-v2", "-m", "whisper-tiny.en"]
    command = [sys.executable, "-m", "gemmacli", "serve", *model_flags, "--port", str(port), "--device", "cpu", "-q"]
    log_file = (tmp_path / "server.log").open("w")  # a file, not a pipe: a full pipe would block the server
    process = subprocess.Popen(command, cwd=tmp_path, env=os.environ.copy(), stderr=log_file, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        statuses = wait_for_health(base, process, tmp_path / "server.log")
        assert statuses[-1] == 200 and 503 in statuses  # answered "loading" before "ok"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
        models = {m.id: m for m in client.models.list().data}
        tasks = {m: models[m].task for m in models}
        assert tasks == {"gemma-3-270m": "chat", "all-minilm-l6-v2": "embed", "whisper-tiny.en": "transcribe"}
        assert client.models.retrieve("google/gemma-3-270m").id == "gemma-3-270m"  # the Hub id is an alias
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log_file.close()
    logs = (tmp_path / "server.log").read_text()
    assert code == 0, logs
    assert '"message":"all models ready"' in logs and '"path":"/v1/models"' in logs


def wait_for_health(base: str, process: subprocess.Popen, log: Path, timeout: float = 240) -> list[int]:
    statuses, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            statuses.append(httpx.get(f"{base}/health", timeout=5).status_code)
        if statuses and statuses[-1] == 200:
            return statuses
        time.sleep(0.2)
    raise AssertionError(f"not healthy after {timeout} s: {statuses[-5:]}")
