"""A real server with a model manager, for the model-management tests: real loader, real models, real HTTP.

The loader is the real one; it only records when each build starts and ends, which is what the tests observe.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gemmacli.models import store
from gemmacli.models.loader import LoadOptions, ModelLoader, Prepared
from gemmacli.server import create_app
from gemmacli.server.settings import ServerSettings
from gemmacli.settings import Paths
from support.liveserver import LiveServer

TINY = "tiny-gemma3-vision"
EMBED = "all-minilm-l6-v2"
WHISPER = "whisper-tiny.en"
GEMMA = "gemma-3-270m"
COUNTING_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # a base model keeps counting: a long, steady stream


@dataclass
class RecordingLoader(ModelLoader):
    builds: list[tuple[str, float, float]] = field(default_factory=list)  # (model, started, ended), monotonic
    hold: dict[str, Callable[[], None]] = field(default_factory=dict)  # model -> runs before its build returns

    def build(self, prepared: Prepared, options: LoadOptions = LoadOptions(), report=print):
        started = time.monotonic()
        runner = super().build(prepared, options, report)
        self.hold.get(prepared.ref.name, lambda: None)()
        self.builds.append((prepared.ref.name, started, time.monotonic()))
        return runner

    def count(self, model: str) -> int:
        return sum(1 for name, _, _ in self.builds if name == model)


@dataclass
class Live:
    http: httpx.Client
    url: str
    loader: RecordingLoader
    app: object

    @property
    def manager(self):
        return self.app.state["services"].models

    def stats(self) -> dict:
        return self.http.get("/admin/stats").raise_for_status().json()

    def loaded(self) -> set[str]:
        return {m["id"] for m in self.stats()["models"]}

    def embed(self, model: str = EMBED, text: str = "hello") -> httpx.Response:
        return self.http.post("/v1/embeddings", json={"model": model, "input": text})

    def complete(self, model: str = TINY, max_tokens: int | None = 1) -> httpx.Response:
        body = {"model": model, "prompt": COUNTING_PROMPT, "temperature": 0}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self.http.post("/v1/completions", json=body)

    def transcribe(self, audio_file, model: str = WHISPER) -> httpx.Response:
        files = {"file": (audio_file.name, audio_file.read_bytes(), "audio/wav")}
        return self.http.post("/v1/audio/transcriptions", data={"model": model}, files=files)

    def wait_until(self, predicate, timeout: float = 30.0) -> float:
        """Seconds until `predicate()` held; fails after `timeout`."""
        started = time.monotonic()
        while not predicate():
            assert time.monotonic() - started < timeout, f"not true after {timeout} s"
            time.sleep(0.05)
        return time.monotonic() - started


@contextlib.contextmanager
def live_server(
    preload: tuple[str, ...] = (), *, api_key: str | None = None, home: Path | None = None, **settings
) -> Iterator[Live]:
    """Settings as `gemmacli serve` would take them (`home` as GEMMACLI_HOME); CPU, no warm-up unless asked.
    Ready when it yields."""
    settings = {"device": "cpu", "warmup": False, "load_on_demand": True, **settings}
    if api_key:
        settings["api_keys"] = (api_key,)
    server_settings = ServerSettings(models=preload, **settings)
    paths = _paths(server_settings)  # what --catalog / GEMMACLI_CATALOG do
    loader = RecordingLoader(paths=Paths(home, paths.catalog_file) if home else paths)
    prepared = [(name, loader.prepare(name)) for name in preload]
    app = create_app(server_settings, loader=loader, preload=prepared)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=120, headers=headers) as http:
        live = Live(http, server.url, loader, app)
        live.wait_until(lambda: http.get("/health").status_code == 200, timeout=120)
        yield live


def _paths(settings: ServerSettings) -> Paths:
    from gemmacli.server.launch import _paths

    return _paths(settings)


@pytest.fixture(scope="session", name="home")
def home_fixture(tmp_path_factory, paths, vision_dir, gemma_dir, minilm_dir, whisper_dir) -> Path:
    """A gemmacli home whose store holds the demo models plus the tiny vision model, a second (fast) chat model."""
    home = tmp_path_factory.mktemp("home")
    models = home / "models"
    models.mkdir()
    for stored in store.list_stored(paths.models_dir):
        (models / stored.name).symlink_to(stored.path, target_is_directory=True)
    with store.staging(models, TINY, "chat", source="testkit") as out:
        shutil.copytree(vision_dir, out, dirs_exist_ok=True)
    return home


def stream_tokens(url: str, body: dict, times: list[float], stop: list[bool], headers: dict | None = None) -> None:
    """POST a streaming completion and append each chunk's arrival time to `times` until it ends or `stop[0]`."""
    with (
        httpx.Client(base_url=url, timeout=120, headers=headers or {}) as client,
        client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response,
    ):
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                times.append(time.monotonic())
            if stop[0]:
                return
