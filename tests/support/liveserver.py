"""Run an ASGI app under uvicorn on 127.0.0.1 in a background thread, for tests that speak real HTTP."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn


class LiveServer:
    def __init__(self, app, host: str = "127.0.0.1"):
        with socket.socket() as s:  # a free port, chosen by the OS
            s.bind((host, 0))
            port = s.getsockname()[1]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextlib.contextmanager
def fake_chat_server(model: str = "fake-chat", delay: float = 0.0, **settings):
    """The real app on one FakeChatRunner (tests/support/fakes.py); yields an httpx client, the runner and the
    app's services."""
    import httpx

    from gemmacli.server import create_app
    from gemmacli.server.loaded import LoadedModel
    from gemmacli.server.settings import ServerSettings
    from support.fakes import FakeChatRunner

    runner = FakeChatRunner(model, context_length=64, delay=delay)
    app = create_app(ServerSettings(**settings), models=[LoadedModel(model, runner, aliases=("org/fake",))])
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, runner, app.state["services"]


@contextlib.contextmanager
def openai_on(runner, name: str):
    """The real app serving one loaded runner as `name`; yields the official openai client pointed at it."""
    import openai

    from gemmacli.server import create_app
    from gemmacli.server.loaded import LoadedModel
    from gemmacli.server.settings import ServerSettings

    with LiveServer(create_app(ServerSettings(), models=[LoadedModel(name, runner)])) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
