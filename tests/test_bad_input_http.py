"""Bad requests at the HTTP level, on every JSON endpoint: bodies that are not JSON, not UTF-8, not objects,
too big, or without the API key; odd paths and model names in the URL. Each case checks the status, OpenAI's
error shape and that a valid request right after still succeeds."""

from __future__ import annotations

import pytest
from support.badinput import CHAT, EMBED, KEY, LIMITS, embeds, expect, small_app

pytestmark = pytest.mark.slow
ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}
VALID = {
    "chat": {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
    "completions": {"model": CHAT, "prompt": "Hi", "max_tokens": 1},
    "embeddings": {"model": EMBED, "input": "hi"},
}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(served):
    with small_app(served) as client:
        yield client


def per_endpoint(name: str, *values) -> list:
    return [pytest.param(endpoint, *values, id=f"{endpoint}-{name}") for endpoint in ENDPOINTS]


BODIES = [
    *per_endpoint("malformed json", b'{"model": "x", "input": [', JSON),
    *per_endpoint("empty body", b"", JSON),
    *per_endpoint("non-utf8 body", b'{"model": "\xff\xfe\xfa", "input": "x"}', JSON),
    *per_endpoint("json array", b'["model", "input"]', JSON),
    *per_endpoint("json string", b'"hello"', JSON),
    *per_endpoint("json null", b"null", JSON),
    *per_endpoint("nan literal", b'{"model": "x", "temperature": NaN}', JSON),
    *per_endpoint("trailing garbage", b'{"model": "x"} {"model": "y"}', JSON),
    *per_endpoint("deep nesting", b"[" * 100_000 + b"]" * 100_000, JSON),
    *per_endpoint("form urlencoded", b"model=x&input=hello", {"content-type": "application/x-www-form-urlencoded"}),
    *per_endpoint("xml", b"<request><model>x</model></request>", {"content-type": "application/xml"}),
    *per_endpoint("utf16 json", '{"model": "x"}'.encode("utf-16"), JSON),
]


@pytest.mark.parametrize(("endpoint", "body", "headers"), BODIES)
def test_a_body_that_is_not_a_json_object_is_a_400(client, endpoint, body, headers):
    expect(client.post(ENDPOINTS[endpoint], content=body, headers=headers), 400)
    embeds(client)


OVERSIZED = [
    *per_endpoint("json padded with spaces", "spaces"),
    *per_endpoint("one huge string", "string"),
]


@pytest.mark.parametrize(("endpoint", "shape"), OVERSIZED)
def test_a_body_over_the_limit_is_a_413(client, endpoint, shape):
    size = LIMITS["max_body_bytes"] + 1000
    body = b"{" + b" " * size + b"}" if shape == "spaces" else b'{"model": "' + b"x" * size + b'"}'
    expect(client.post(ENDPOINTS[endpoint], content=body, headers=JSON), 413, code="request_too_large")
    embeds(client)


def test_a_chunked_body_over_the_limit_is_a_413(client):
    def chunks():  # no Content-Length: the server must count as it reads
        for _ in range(LIMITS["max_body_bytes"] // 100_000 + 2):
            yield b" " * 100_000

    expect(client.post(ENDPOINTS["embeddings"], content=chunks(), headers=JSON), 413)
    embeds(client)


AUTH = [
    pytest.param("chat", None, id="chat-no key"),
    pytest.param("completions", "Bearer wrong-key", id="completions-wrong key"),
    pytest.param("embeddings", f"Basic {KEY}", id="embeddings-basic scheme"),
    pytest.param("embeddings", f"Bearer {KEY}x", id="embeddings-key with a suffix"),
    pytest.param("chat", f"Bearer {KEY[:-1]}", id="chat-key prefix"),
    pytest.param("completions", f"Token {KEY}", id="completions-token scheme"),
    pytest.param("embeddings", "bad-input-key", id="embeddings-key without scheme"),
]


@pytest.mark.parametrize(("endpoint", "authorization"), AUTH)
def test_a_missing_or_wrong_api_key_is_a_401(client, endpoint, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    request = client.build_request("POST", ENDPOINTS[endpoint], json=VALID[endpoint], headers=headers)
    if authorization is None:
        del request.headers["Authorization"]
    error = expect(client.send(request), 401, code="invalid_api_key")
    assert KEY not in error["message"]
    embeds(client)


@pytest.mark.parametrize("host", ["localhost/health", "health", "evil.example:80/health", "127.0.0.1:1"])
def test_the_host_header_cannot_make_a_protected_path_public(client, host):
    request = client.build_request("GET", "/v1/models", headers={"Host": host})
    del request.headers["Authorization"]
    response = client.send(request)
    expect(response, response.status_code)
    assert response.status_code in (400, 401)
    embeds(client)


@pytest.mark.parametrize(
    "path",
    ["/health/../v1/models", "/metrics/../v1/models", "/health%2F..%2Fv1%2Fmodels", "/health/%2e%2e/v1/models"],
    ids=["dotdot from health", "dotdot from metrics", "encoded slashes", "encoded dots"],
)
def test_dot_segments_do_not_skip_the_key(client, path):
    request = client.build_request("GET", client.base_url.join(path))
    del request.headers["Authorization"]
    request.url = request.url.copy_with(raw_path=path.encode())  # sent as is, not normalised by the client
    response = client.send(request)
    expect(response, response.status_code)
    assert response.status_code in (401, 404)
    embeds(client)


MODEL_PATHS = {
    "dotdot passwd": "/v1/models/..%2F..%2Fetc%2Fpasswd",
    "encoded dots": "/v1/models/%2e%2e/%2e%2e/etc/passwd",
    "absolute path": "/v1/models//etc/passwd",
    "windows path": "/v1/models/C:%5Cx",
    "nul byte": "/v1/models/gemma%00x",
    "10 kB name": "/v1/models/" + "m" * 10_000,
    "percent junk": "/v1/models/%ff%fe",
}


@pytest.mark.parametrize("path", MODEL_PATHS.values(), ids=MODEL_PATHS.keys())
def test_weird_model_ids_in_the_url_are_a_404(client, path):
    request = client.build_request("GET", "/")
    request.url = request.url.copy_with(raw_path=path.encode())
    expect(client.send(request), 404)
    embeds(client)


def test_unknown_route_and_wrong_method(client):
    expect(client.get("/v1/nothing"), 404)
    expect(client.get("/v1/embeddings"), 405)
    expect(client.put("/v1/chat/completions", json=VALID["chat"]), 405)
    embeds(client)


def test_limits_come_from_flags_then_env_then_dotenv(tmp_path):
    from gemmacli.server.settings import ServerSettings

    dotenv = tmp_path / ".env"
    dotenv.write_text("GEMMACLI_MAX_IMAGES=3\nGEMMACLI_MAX_AUDIO_SECONDS=9.5\nGEMMACLI_MAX_STOP=2\n")
    env = {"GEMMACLI_MAX_STOP": "5", "GEMMACLI_EMBED_TRUNCATE": "true"}
    settings = ServerSettings.load({"max_images": 7}, environ=env, dotenv=dotenv)
    limits, media = settings.request_limits(), settings.media_limits()
    assert (limits.max_images, limits.max_stop, limits.embed_truncate) == (7, 5, True)
    assert media.max_audio_seconds == 9.5 and media.max_image_pixels == 50_000_000
