"""ASGI middleware: request ids, API-key checks, access logs and request counts.

Written against raw ASGI so it runs before routing: an unauthenticated request never reaches a
handler, and every response (errors included) carries its X-Request-Id. What is public is decided on
the path exactly as the router will see it, so no spelling of a path (`//health`, `/health/`, a Host
header, an absolute URI) can make a protected route look public.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgspec
from litestar.config.cors import CORSConfig
from litestar.utils import normalize_path

from gemmacli.errors import GemmacliError
from gemmacli.server.errors import error_body
from gemmacli.server.metrics import Metrics

log = logging.getLogger("gemmacli.access")
_ORIGIN = re.compile(r"^https?://[^/?#@\\\s]+$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/models",
    "/health",
    "/metrics",
)


def endpoint_label(path: str) -> str:
    """A bounded label for metrics: known routes by name, everything else as 'other'."""
    if path in _ENDPOINTS:
        return path
    return "/v1/models/{model}" if path.startswith("/v1/models/") else "other"


@dataclass(frozen=True)
class Access:
    """Who may call what: the accepted keys, the paths open without one, and the CORS origins."""

    keys: tuple[bytes, ...] = ()
    public_paths: frozenset[str] = frozenset({"/health", "/metrics"})
    cors: CORSConfig | None = None

    @classmethod
    def from_settings(cls, settings) -> Access:
        keys = (*settings.api_keys, *read_key_file(settings.api_key_file))
        if settings.metrics_auth and not keys:  # else /metrics would stay open while the flag says otherwise
            raise GemmacliError("--metrics-auth needs a key: give --api-key or --api-key-file too")
        public = frozenset({"/health"} if settings.metrics_auth else {"/health", "/metrics"})
        return cls(tuple(k.encode() for k in keys), public, cors_config(settings.cors_origins))

    def needs_key(self, scope, headers: dict[bytes, bytes]) -> bool:
        if not self.keys or routed_path(scope) in self.public_paths:
            return False
        # A CORS preflight carries no credentials by design; Litestar's CORS layer answers it without routing.
        return not (self.cors and scope["method"] == "OPTIONS" and b"origin" in headers)

    def cors_headers(self, headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        """On our own 401: lets a browser page of an allowed origin read the error instead of a CORS failure."""
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not (self.cors and origin and self.cors.is_origin_allowed(origin)):
            return []
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


def routed_path(scope) -> str:
    """The path Litestar's router matches: root_path removed, slashes collapsed, no trailing slash."""
    path = scope["path"]
    if root_path := scope.get("root_path", ""):
        path = path.split(root_path, maxsplit=1)[-1]
    return normalize_path(path)


def read_key_file(path: Path | None) -> tuple[str, ...]:
    """Keys from --api-key-file, one a line; errors name the file, never its contents."""
    if path is None:
        return ()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a UTF-8 text file"
        raise GemmacliError(f"cannot read the API key file {path}: {reason}") from None
    keys = tuple(k for k in (line.strip() for line in lines) if k and not k.startswith("#"))
    if not keys:  # silently serving without auth would be worse than not starting
        raise GemmacliError(f"the API key file {path} holds no keys")
    return keys


def cors_config(origins: tuple[str, ...]) -> CORSConfig | None:
    """CORS for exactly these origins (scheme://host[:port]); None (CORS off) when there are none."""
    if not origins:
        return None
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise GemmacliError(
                f"--cors-origin {origin!r} is not an origin such as https://app.example.com "
                "(scheme and host, optional port, no path or trailing slash)"
            )
    return CORSConfig(allow_origins=list(origins), expose_headers=["x-request-id", "retry-after"])


def request_context(access: Access, metrics: Metrics):
    """Middleware factory: Litestar calls it with the next ASGI app."""

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
                if access.needs_key(scope, headers) and not _authorized(headers, access.keys):
                    await _unauthorized(send_with_id, access.cors_headers(headers))
                else:
                    await app(scope, receive, send_with_id)
            finally:
                metrics.requests.labels(endpoint_label(scope["path"]), str(status[0])).inc()
                elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
                fields = {"method": scope["method"], "path": scope["path"], "status": status[0]}
                log.info("request", extra={"request_id": request_id, **fields, "duration_ms": elapsed_ms})

        return handle

    return middleware


def _authorized(headers: dict[bytes, bytes], keys: tuple[bytes, ...]) -> bool:
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() != b"bearer" or not token:
        return False
    # compare_digest against every key, so timing tells nothing about which key came close.
    return sum(secrets.compare_digest(token.strip(), key) for key in keys) > 0


async def _unauthorized(send, extra_headers: list[tuple[bytes, bytes]]) -> None:
    message = "missing or invalid API key: send 'Authorization: Bearer <key>'"
    body = msgspec.json.encode(error_body(message, "invalid_request_error", code="invalid_api_key"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
