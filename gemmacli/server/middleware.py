"""ASGI middleware: request ids, API-key checks, access logs and request counts.

Written against raw ASGI so it runs before routing: an unauthenticated request never reaches a
handler, and every response (errors included) carries its X-Request-Id.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid

import msgspec

from gemmacli.server.errors import error_body
from gemmacli.server.metrics import Metrics

log = logging.getLogger("gemmacli.access")
PUBLIC_PATHS = frozenset({"/health", "/metrics"})
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/audio/transcriptions",
              "/v1/audio/translations", "/v1/models", "/health", "/metrics")  # fmt: skip


def endpoint_label(path: str) -> str:
    """A bounded label for metrics: known routes by name, everything else as 'other'."""
    if path in _ENDPOINTS:
        return path
    return "/v1/models/{model}" if path.startswith("/v1/models/") else "other"


def request_context(api_keys: tuple[str, ...], metrics: Metrics):
    """Middleware factory: Litestar calls it with the next ASGI app."""
    keys = [k.encode() for k in api_keys]

    def middleware(app):
        async def handle(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"x-request-id", b"").decode("latin-1")
            request_id = given if _CLIENT_ID.match(given) else uuid.uuid4().hex
            scope.setdefault("state", {})["request_id"] = request_id
            status, started = [500], time.perf_counter()

            async def send_with_id(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                await send(message)

            try:
                # The path as the server routes it decides what is public, never the Host header.
                if keys and scope["path"] not in PUBLIC_PATHS and not _authorized(headers, keys):
                    await _unauthorized(send_with_id)
                else:
                    await app(scope, receive, send_with_id)
            finally:
                metrics.requests.labels(endpoint_label(scope["path"]), str(status[0])).inc()
                elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
                fields = {"method": scope["method"], "path": scope["path"], "status": status[0]}
                log.info("request", extra={"request_id": request_id, **fields, "duration_ms": elapsed_ms})

        return handle

    return middleware


def _authorized(headers: dict[bytes, bytes], keys: list[bytes]) -> bool:
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() != b"bearer" or not token:
        return False
    # compare_digest against every key, so timing tells nothing about which key came close.
    return sum(secrets.compare_digest(token.strip(), key) for key in keys) > 0


async def _unauthorized(send) -> None:
    body = msgspec.json.encode(error_body("missing or invalid API key: send 'Authorization: Bearer <key>'",
                                          "invalid_request_error", code="invalid_api_key"))  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"www-authenticate", b"Bearer")]  # fmt: skip
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
