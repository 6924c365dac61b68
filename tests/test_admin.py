"""/admin/* and the CLI around them (`gemmacli ps`, `gemmacli models --url`), over placeholder runners.

The embedding runner here blocks until the test lets it go, so a request stays in flight on purpose.
"""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest
from litestar.testing import TestClient
from support.fakes import FakeRunner
from support.helpers import check_openai_error
from support.liveserver import LiveServer
from typer.testing import CliRunner

from gemmacli.cli import app as cli
from gemmacli.server import create_app
from gemmacli.server.loaded import LoadedModel
from gemmacli.server.settings import ServerSettings
from gemmacli.types import Embeddings

KEY = "admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


class GatedEmbedRunner(FakeRunner):
    """Embeds only once `gate` is set, so the request holding it is in flight as long as the test wants."""

    task, dimensions = "embed", 4

    def __init__(self):
        super().__init__()
        self.gate, self.entered = threading.Event(), threading.Event()

    def embed(self, texts):
        self.entered.set()
        assert self.gate.wait(30)
        return Embeddings(np.eye(len(texts), 4, dtype=np.float32), tuple(1 for _ in texts))


def make_app(runner=None, **settings):
    models = [
        LoadedModel("gated", runner or GatedEmbedRunner(), aliases=("org/gated",)),
        LoadedModel("chat-model", FakeRunner("chat")),
    ]
    return create_app(ServerSettings(**settings), models=models)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/admin/stats"), ("POST", "/admin/load/gated"), ("POST", "/admin/unload/gated")]
)
def test_admin_routes_need_the_api_key(method, path):
    with TestClient(make_app(api_keys=(KEY,))) as client:
        check_openai_error(client.request(method, path), 401, code="invalid_api_key")
        check_openai_error(client.request(method, path, headers={"Authorization": "Bearer nope"}), 401)
        assert client.request(method, path, headers=AUTH).status_code == 200
        assert client.get("/health").status_code == 200  # still public


def test_stats_describe_models_queue_and_uptime():
    with TestClient(make_app()) as client:
        stats = client.get("/admin/stats").json()
    assert {m["id"] for m in stats["models"]} == {"gated", "chat-model"}
    model = stats["models"][0]
    assert set(model) == {
        "id",
        "task",
        "device",
        "dtype",
        "placement",
        "memory_bytes",
        "requests",
        "in_flight",
        "loaded_at",
        "last_used",
        "idle_s",
    }
    assert stats["queue"] == {"running": 0, "waiting": 0} and stats["uptime_s"] >= 0
    assert stats["loading"] == [] and stats["policy"]["max_loaded"] == 0
    assert stats["rss_bytes"] > 0


def test_load_and_unload_unknown_models_are_404():
    with TestClient(make_app()) as client:
        check_openai_error(client.post("/admin/load/no-such-model"), 404, code="model_not_found", param="model")
        check_openai_error(client.post("/admin/unload/no-such-model"), 404, code="model_not_found")
        assert client.post("/admin/load/org/gated").json()["id"] == "gated"  # loaded already: a no-op


def test_a_model_in_use_cannot_be_unloaded_until_its_request_ends():
    runner = GatedEmbedRunner()
    with LiveServer(make_app(runner)) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        result = {}
        body = {"model": "gated", "input": "x"}
        request = threading.Thread(target=lambda: result.update(r=http.post("/v1/embeddings", json=body)))
        request.start()
        assert runner.entered.wait(10)
        (gated,) = [m for m in http.get("/admin/stats").json()["models"] if m["id"] == "gated"]
        assert (gated["in_flight"], gated["idle_s"]) == (1, 0.0)
        error = check_openai_error(http.post("/admin/unload/gated"), 409, code="model_busy")
        assert "1 request" in error["message"]
        runner.gate.set()
        request.join(10)
        assert result["r"].status_code == 200
        assert http.post("/admin/unload/org/gated").json() == {"id": "gated", "status": "unloaded", "was_loaded": True}
        # Handed in ready-made, it cannot be loaded again: now it is unknown.
        check_openai_error(http.post("/admin/unload/gated"), 404, code="model_not_found")
        check_openai_error(http.post("/v1/embeddings", json=body), 404)
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["chat-model"]


def test_ps_and_models_url_ask_a_running_server():
    runner = GatedEmbedRunner()
    runner.gate.set()
    with LiveServer(make_app(runner, api_keys=(KEY,))) as server:
        ps = CliRunner().invoke(cli, ["ps", "--url", f"{server.url}/v1", "--api-key", KEY])
        ps_json = CliRunner().invoke(cli, ["ps", "--url", server.url, "--api-key", KEY, "--json"])
        models = CliRunner().invoke(cli, ["models", "--url", server.url, "--api-key", KEY, "--json"])
        table = CliRunner().invoke(cli, ["models", "--url", server.url, "--api-key", KEY])
        refused = CliRunner().invoke(cli, ["ps", "--url", server.url])
    assert ps.exit_code == 0, ps.output
    for word in ("gated", "chat-model", "embed", "memory"):  # (the narrow test terminal wraps long headers)
        assert word in ps.stdout
    assert {m["id"] for m in json.loads(ps_json.stdout)["models"]} == {"gated", "chat-model"}
    rows = json.loads(models.stdout)
    assert {(r["name"], r["task"], r["status"]) for r in rows} == {
        ("gated", "embed", "loaded"),
        ("chat-model", "chat", "loaded"),
    }
    assert table.exit_code == 0 and "gated" in table.stdout
    assert refused.exit_code == 1 and "--api-key" in refused.stderr


def test_ps_explains_an_unreachable_server():
    result = CliRunner().invoke(cli, ["ps", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:9" in result.stderr
    assert CliRunner().invoke(cli, ["ps", "--url", "localhost:8000"]).exit_code == 2
