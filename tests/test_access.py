"""Who may call the server: CORS only for the origins given, keys from flags and a key file, /metrics
behind the key on request, and no spelling of a path, Host header or absolute URI that turns a protected
route public (the CVE-2026-48746 class). Placeholder runners behind the model manager: no model runs here."""

from __future__ import annotations

import logging
import socket

import pytest
from litestar.testing import TestClient
from support.fakes import FakeRunner
from support.helpers import check_openai_error
from support.liveserver import LiveServer

from gemmacli.errors import GemmacliError
from gemmacli.server import create_app
from gemmacli.server.loaded import LoadedModel
from gemmacli.server.logs import JsonFormatter
from gemmacli.server.settings import ServerSettings

KEY = "sk-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
APP = "https://app.example.com"
EVIL = "https://evil.example.net"


class FakeEmbedRunner(FakeRunner):
    task, dimensions = "embed", 8


def make_app(**settings):
    models = [LoadedModel("chat-model", FakeRunner("chat")), LoadedModel("embed-model", FakeEmbedRunner())]
    return create_app(ServerSettings(**settings), models=models)


def client(**settings) -> TestClient:
    return TestClient(make_app(**settings))


def preflight(c: TestClient, origin: str):
    return c.options(
        "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_the_default_bind_is_loopback_and_everything_is_closed_to_browsers():
    assert ServerSettings().host == "127.0.0.1" and ServerSettings().cors_origins == ()
    with client() as c:
        assert "access-control-allow-origin" not in preflight(c, APP).headers
        response = c.get("/v1/models", headers={"Origin": APP})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_cors_answers_only_the_origins_given():
    with client(cors_origins=(APP, "http://localhost:3000")) as c:
        ok = preflight(c, APP)
        assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == APP
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        evil = preflight(c, EVIL)
        assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
        assert c.get("/v1/models", headers={"Origin": APP}).headers["access-control-allow-origin"] == APP
        assert "access-control-allow-origin" not in c.get("/v1/models", headers={"Origin": EVIL}).headers
        exposed = c.get("/health", headers={"Origin": "http://localhost:3000"}).headers
        assert "x-request-id" in exposed["access-control-expose-headers"].lower()


def test_cors_with_keys_preflight_needs_none_but_requests_do():
    with client(cors_origins=(APP,), api_keys=(KEY,)) as c:
        assert preflight(c, APP).status_code == 204  # browsers never send credentials on a preflight
        refused = c.get("/v1/models", headers={"Origin": APP})
        check_openai_error(refused, 401, code="invalid_api_key")
        assert refused.headers["access-control-allow-origin"] == APP  # so the page can read the 401
        assert "access-control-allow-origin" not in c.get("/v1/models", headers={"Origin": EVIL}).headers
        assert c.get("/v1/models", headers={"Origin": APP, **AUTH}).status_code == 200
        # An OPTIONS request from an unknown origin gets no further than CORS either: no data, no 200.
        assert preflight(c, EVIL).status_code == 400


BAD_ORIGINS = {
    "trailing-slash": "https://app.example.com/",
    "with-path": "https://app.example.com/ui",
    "no-scheme": "app.example.com",
    "other-scheme": "ftp://app.example.com",
    "userinfo": "https://user@app.example.com",
    "empty": "",
}


@pytest.mark.parametrize("origin", BAD_ORIGINS.values(), ids=BAD_ORIGINS.keys())
def test_bad_cors_origins_are_a_startup_error(origin):
    with pytest.raises(GemmacliError, match="--cors-origin"):
        make_app(cors_origins=(origin,))


def test_keys_from_the_flag_and_the_key_file_are_all_accepted(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\n\nfile-key-one\n  file-key-two  \n")
    with client(api_keys=("flag-key",), api_key_file=keys) as c:
        for key in ("flag-key", "file-key-one", "file-key-two"):
            assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200, key
        for key in ("# team keys", "file-key", "file-key-one file-key-two", ""):
            assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401, key


KEY_FILE_ERRORS = {
    "missing-file": (None, "cannot read the API key file"),
    "only-comments": (b"# no keys yet\n\n", "holds no keys"),
    "empty-file": (b"", "holds no keys"),
    "not-utf8": (b"\xff\xfe" + KEY.encode(), "cannot read the API key file"),
}


@pytest.mark.parametrize(("content", "says"), KEY_FILE_ERRORS.values(), ids=KEY_FILE_ERRORS.keys())
def test_key_file_problems_are_a_startup_error_that_never_shows_a_key(tmp_path, content, says):
    path = tmp_path / "keys.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GemmacliError) as err:
        make_app(api_key_file=path)
    assert says in err.value.message and KEY not in err.value.message


def test_metrics_are_public_by_default_and_behind_the_key_on_request():
    with client(api_keys=(KEY,)) as c:
        assert c.get("/metrics").status_code == 200
    with client(api_keys=(KEY,), metrics_auth=True) as c:
        check_openai_error(c.get("/metrics"), 401, code="invalid_api_key")
        assert c.get("/metrics", headers=AUTH).status_code == 200
        assert c.get("/health").status_code == 200  # orchestrators probe it without keys
    with pytest.raises(GemmacliError, match="--metrics-auth needs a key"):
        make_app(metrics_auth=True)


def test_a_root_path_does_not_change_what_is_public():
    with TestClient(make_app(api_keys=(KEY,), metrics_auth=True), root_path="/api") as c:
        assert c.get("/api/health").status_code == 200
        for path in ("/api/v1/models", "/api/metrics", "/health/api/v1/models", "/api/health/../v1/models"):
            check_openai_error(c.get(path), 401)


# -- raw HTTP, as an attacker writes it: no client library normalising the request first


@pytest.fixture(scope="module")
def live():
    with LiveServer(make_app(api_keys=(KEY,), metrics_auth=True)) as server:
        yield int(server.url.rsplit(":", 1)[1])


def raw_get(port: int, target: str, headers: str = "Host: 127.0.0.1\r\n") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


TRICKS = {
    "double-slash": "//v1/models",
    "dot-segment": "/health/../v1/models",
    "dot-slash": "/./v1/models",
    "encoded-dots": "/health/%2E%2E/v1/models",
    "encoded-slash": "/v1%2Fmodels",
    "encoded-traversal": "/health%2F..%2Fv1%2Fmodels",
    "all-encoded": "/health%2F%2E%2E%2Fv1%2Fmodels",
    "nul-byte": "/health%00/../v1/models",
    "semicolon": "/health;/../v1/models",
    "semicolon-suffix": "/v1/models;/health",
    "query-lookalike": "/v1/models?/health",
    "encoded-query": "/v1/models%3F/health",
    "encoded-fragment": "/v1/models%23/health",
    "upper-case": "/HEALTH/../v1/models",
    "backslashes": "/health\\..\\v1\\models",
    "absolute-uri": "http://127.0.0.1/v1/models",
    "absolute-uri-health-host": "http://health/v1/models",
    "absolute-uri-traversal": "http://x/health/../v1/models",
    "asterisk": "*",
    "model-by-id": "/v1/models/chat-model",
    "metrics": "/metrics",
    "metrics-double-slash": "//metrics",
    "metrics-trailing-slash": "/metrics/",
    "metrics-via-health": "/health/../metrics",
}


@pytest.mark.parametrize("target", TRICKS.values(), ids=TRICKS.keys())
def test_no_spelling_of_a_protected_path_skips_the_key(live, target):
    status, body = raw_get(live, target)
    assert status == 401 and b"invalid_api_key" in body
    assert b"chat-model" not in body and b"gemmacli_requests_total" not in body


HEADER_TRICKS = {
    "host-health": "Host: health\r\n",
    "host-with-path": "Host: example.com/health\r\n",
    "x-original-url": "Host: 127.0.0.1\r\nX-Original-URL: /health\r\n",
    "x-rewrite-url": "Host: 127.0.0.1\r\nX-Rewrite-URL: /health\r\n",
    "x-forwarded-prefix": "Host: 127.0.0.1\r\nX-Forwarded-Prefix: /health\r\n",
    "x-forwarded-host": "Host: 127.0.0.1\r\nX-Forwarded-Host: health\r\nX-Forwarded-Uri: /health\r\n",
    "basic-auth-with-key": f"Host: 127.0.0.1\r\nAuthorization: Basic {KEY}\r\n",
    "key-in-other-header": f"Host: 127.0.0.1\r\nX-API-Key: {KEY}\r\n",
}


@pytest.mark.parametrize("headers", HEADER_TRICKS.values(), ids=HEADER_TRICKS.keys())
def test_no_header_opens_a_protected_path(live, headers):
    status, body = raw_get(live, "/v1/models", headers)
    assert status in (400, 401) and b"chat-model" not in body


def test_public_paths_stay_public_in_every_spelling_the_router_accepts(live):
    for target in ("/health", "//health", "/health/", "/%68ealth", "/health?probe=1"):
        status, body = raw_get(live, target)
        assert status == 200 and b'"status"' in body, target


def test_keys_never_reach_logs_or_error_messages():
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(JsonFormatter().format(record))
    logger = logging.getLogger("gemmacli")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with client(api_keys=(KEY,)) as c:
            refused = c.get("/v1/models", headers={"Authorization": "Bearer sk-wrong-key-42"})
            assert c.get("/v1/models", headers=AUTH).status_code == 200
            c.get("/v1/chat/completions", headers={"Authorization": f"Basic {KEY}"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert len(lines) >= 3  # the access log did run
    for secret in (KEY, "sk-wrong-key-42"):
        assert secret not in refused.text and secret not in refused.headers.values()
        assert not any(secret in line for line in lines), lines


SERVE_FLAG_ERRORS = {
    "cors-origin-with-slash": (["--cors-origin", "https://app.example.com/"], "--cors-origin"),
    "missing-key-file": (["--api-key-file", "no-such-keys.txt"], "cannot read the API key file"),
    "metrics-auth-without-key": (["--metrics-auth"], "--metrics-auth needs a key"),
    "bad-network": (["--allow-remote-media", "--remote-media-allow-network", "10.0.0.0/33"], "not a CIDR"),
    "bad-media-host": (["--allow-remote-media", "--remote-media-host", "http://x"], "--remote-media-host"),
}


@pytest.mark.parametrize(("flags", "says"), SERVE_FLAG_ERRORS.values(), ids=SERVE_FLAG_ERRORS.keys())
def test_serve_refuses_bad_access_flags_before_touching_any_model(tmp_path, monkeypatch, flags, says):
    from typer.testing import CliRunner

    from gemmacli.cli import app

    monkeypatch.chdir(tmp_path)  # no stray .env
    result = CliRunner().invoke(app, ["serve", "-m", "no-such-model", "-q", *flags])
    assert result.exit_code == 1 and says in result.stderr and "unknown model" not in result.stderr


def test_access_and_media_settings_come_from_the_environment_too(tmp_path):
    env = {
        "GEMMACLI_CORS_ORIGINS": f"{APP},http://localhost:3000",
        "GEMMACLI_API_KEY_FILE": str(tmp_path / "k"),
        "GEMMACLI_METRICS_AUTH": "yes",
        "GEMMACLI_REMOTE_MEDIA_HOSTS": "img.example.com,*.cdn.example.com",
        "GEMMACLI_REMOTE_MEDIA_NETWORKS": "10.1.0.0/16",
        "GEMMACLI_REMOTE_MEDIA_TIMEOUT": "2.5",
    }
    s = ServerSettings.load({"metrics_auth": False}, environ=env, dotenv=tmp_path / "none")
    assert s.cors_origins == (APP, "http://localhost:3000") and s.api_key_file == tmp_path / "k"
    assert s.metrics_auth is False  # the flag wins
    assert s.remote_media_hosts == ("img.example.com", "*.cdn.example.com") and s.remote_media_timeout == 2.5
    assert s.remote_media_networks == ("10.1.0.0/16",)
