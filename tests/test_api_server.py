"""The server around the endpoints: health, models, metrics, auth, request ids, body limits, error shape.

These use placeholder runners behind the model manager: no model runs here.
"""

from __future__ import annotations

import pytest
from litestar.testing import TestClient
from support.fakes import FakeRunner
from support.helpers import check_openai_error

from gemmacli.server import create_app
from gemmacli.server.loaded import LoadedModel
from gemmacli.server.settings import ServerSettings


class FakeEmbedRunner(FakeRunner):
    task, dimensions = "embed", 8


def make_client(*, ready: bool = True, **settings) -> TestClient:
    models = [
        LoadedModel("chat-model", FakeRunner("chat"), aliases=("org/chat-model",)),
        LoadedModel("embed-model", FakeEmbedRunner()),
    ]
    client = TestClient(create_app(ServerSettings(**settings), models=models))
    client.app.state["services"].models.ready = ready
    return client


def assert_error(response, status: int, code: str | None = None, param: str | None = None) -> dict:
    checks = {k: v for k, v in (("code", code), ("param", param)) if v is not None}
    return check_openai_error(response, status, **checks)


def test_health_is_503_until_ready_then_200():
    with make_client(ready=False) as client:
        assert client.get("/health").status_code == 503
        client.app.state["services"].models.ready = True
        assert client.get("/health").json() == {"status": "ok", "models": ["chat-model", "embed-model"]}


def test_health_reports_a_loading_failure():
    with make_client(ready=False) as client:
        client.app.state["services"].models.failure = "out of memory"
        assert client.get("/health").json() == {"status": "failed", "error": "out of memory"}


def test_models_list_and_get():
    with make_client() as client:
        data = client.get("/v1/models").json()["data"]
        assert [(m["id"], m["object"], m["owned_by"], m["task"]) for m in data] == [
            ("chat-model", "model", "gemmacli", "chat"),
            ("embed-model", "model", "gemmacli", "embed"),
        ]
        assert data[1]["dimensions"] == 8 and "dimensions" not in data[0]
        assert isinstance(data[0]["created"], int)
        assert client.get("/v1/models/org/chat-model").json()["id"] == "chat-model"  # an alias with a slash
        assert_error(client.get("/v1/models/nope"), 404, code="model_not_found", param="model")


def test_metrics_count_requests_by_endpoint_and_status():
    with make_client() as client:
        client.get("/v1/models")
        client.get("/no/such/path")
        text = client.get("/metrics").text
    assert 'gemmacli_requests_total{endpoint="/v1/models",status="200"} 1.0' in text
    assert 'gemmacli_requests_total{endpoint="other",status="404"} 1.0' in text
    for name in ("gemmacli_requests_running", "gemmacli_requests_waiting", "gemmacli_time_to_first_token_seconds"):
        assert name in text


def test_request_id_is_echoed_or_made():
    with make_client() as client:
        assert client.get("/health", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
        made = client.get("/health", headers={"X-Request-Id": "bad id\twith tabs"}).headers["x-request-id"]
        assert made != "bad id\twith tabs" and len(made) == 32
        assert client.get("/nope").headers["x-request-id"]  # errors carry one too


def test_unknown_route_and_wrong_method_have_the_openai_shape():
    with make_client() as client:
        assert_error(client.get("/v1/nothing"), 404)
        assert_error(client.get("/v1/chat/completions"), 405)


def test_oversized_body_is_413():
    with make_client(max_body_bytes=1000) as client:
        response = client.post(
            "/v1/embeddings", content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}
        )
        assert_error(response, 413, code="request_too_large")
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic c2VjcmV0", "Bearer", "bearer  "])
def test_api_key_required_when_set(header):
    with make_client(api_keys=("secret", "other")) as client:
        headers = {"Authorization": header} if header else {}
        error = assert_error(client.get("/v1/models", headers=headers), 401, code="invalid_api_key")
        assert "secret" not in error["message"]


def test_api_keys_accepted_and_health_metrics_public():
    with make_client(api_keys=("secret", "other")) as client:
        assert client.get("/v1/models", headers={"Authorization": "Bearer other"}).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": "bearer secret"}).status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8000", "example.com/health", "health"])
def test_host_header_cannot_open_a_protected_path(host):
    with make_client(api_keys=("secret",)) as client:
        response = client.get("/v1/models", headers={"Host": host})
        assert response.status_code in (400, 401)
        assert_error(response, response.status_code)
        assert_error(client.get("/health/../v1/models"), 401)


def test_settings_precedence_flags_over_env_over_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("GEMMACLI_PORT=7000\nGEMMACLI_HOST=0.0.0.0\n# comment\nGEMMACLI_MODELS='a,b'\n")
    env = {"GEMMACLI_PORT": "7100", "GEMMACLI_API_KEY": "k1,k2", "GEMMACLI_ALLOW_REMOTE_MEDIA": "true"}
    settings = ServerSettings.load({"port": 7200, "host": None}, environ=env, dotenv=dotenv)
    assert (settings.port, settings.host, settings.models) == (7200, "0.0.0.0", ("a", "b"))
    assert settings.api_keys == ("k1", "k2") and settings.allow_remote_media is True
    assert ServerSettings.load({}, environ={}, dotenv=tmp_path / "none").models == ("google/gemma-3-12b-it",)


def test_bad_setting_values_are_one_clear_error():
    from gemmacli.errors import GemmacliError

    assert ServerSettings.load({}, environ={"GEMMACLI_THREADS": "1"}).threads == 1
    with pytest.raises(GemmacliError, match="GEMMACLI_PORT"):
        ServerSettings.load({}, environ={"GEMMACLI_PORT": "eighty"})
    with pytest.raises(GemmacliError, match="GEMMACLI_WARMUP"):
        ServerSettings.load({}, environ={"GEMMACLI_WARMUP": "perhaps"})


class BrokenChatRunner(FakeRunner):
    """Fails the way a bug would, with a path in its message that must not reach the client."""

    def encode_chat(self, messages, tools=None, **kw):
        raise RuntimeError("failure in /opt/secret/gemmacli/runners/chat.py line 42")

    def encode_text(self, prompt):
        return self.encode_chat([])


def test_a_runner_bug_is_a_500_without_internals_and_the_server_keeps_serving():
    with TestClient(create_app(ServerSettings(), models=[LoadedModel("broken", BrokenChatRunner())])) as client:
        body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}]}
        response = client.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "req-500"})
        error = assert_error(response, 500, code="internal_error")
        assert error["type"] == "server_error" and "req-500" in error["message"]
        assert "/opt/secret" not in response.text and "Traceback" not in response.text
        assert client.get("/health").status_code == 200
        assert_error(client.post("/v1/chat/completions", json={**body, "stream": True}), 500)
