"""Every error leaves the server in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

One handler for all exceptions; no paths or stack traces reach the client.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gemmacli import errors
from gemmacli.server.engine import EngineStopped, Overloaded
from gemmacli.server.memory import is_out_of_memory

log = logging.getLogger("gemmacli.server")

# Our error classes -> (HTTP status, OpenAI error type).
_STATUS: list[tuple[type[errors.GemmacliError], int, str]] = [
    (errors.ModelNotFoundError, 404, "invalid_request_error"),
    (errors.ModelUnavailableError, 503, "server_error"),
    (errors.GemmacliError, 400, "invalid_request_error"),
]
OOM_RETRY_AFTER = 5  # seconds: the memory is free again at once, but a burst that caused it needs time to pass
_HTTP_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


class APIError(Exception):
    """An error with its HTTP status decided where it is raised (routes, middleware)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct):
    """OpenAI's error body, for the OpenAPI document (responses build it as a dict in `error_body`)."""

    error: ErrorDetail


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def to_api_error(exc: Exception, request_id: str | None = None) -> APIError:
    """Map any exception to the APIError the client sees."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, errors.GemmacliError):
        status, kind = next((s, t) for cls, s, t in _STATUS if isinstance(exc, cls))
        return APIError(status, exc.message, type=kind, param=exc.param, code=exc.code)
    if isinstance(exc, Overloaded):
        return APIError(
            429, str(exc), type="requests", code="rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after)}
        )
    if is_out_of_memory(exc):
        log.warning("out of memory", extra={"request_id": request_id, "error": type(exc).__name__})
        retry = {"Retry-After": str(OOM_RETRY_AFTER)}
        return APIError(
            503,
            "the server ran out of memory for this request; retry later or ask for less",
            type="server_error",
            code="out_of_memory",
            headers=retry,
        )
    if isinstance(exc, EngineStopped):
        return APIError(503, str(exc), type="server_error", code="shutting_down")
    if isinstance(exc, TimeoutError):
        return APIError(
            504, "the request took longer than the server's request timeout", type="server_error", code="timeout"
        )
    if isinstance(exc, ValidationException):
        return _validation_error(exc)
    if isinstance(exc, UnicodeDecodeError):  # Litestar decodes the body as UTF-8 before msgspec sees it
        return APIError(400, "the request body is not valid UTF-8 JSON", code="invalid_json")
    if isinstance(exc, RecursionError) and "deserializing" in str(exc):  # msgspec's answer to [[[[...]]]]
        return APIError(400, "the request body's JSON is nested too deeply", code="invalid_json")
    if isinstance(exc, HTTPException):
        status = exc.status_code
        return APIError(
            status,
            _http_message(exc),
            type="invalid_request_error" if status < 500 else "server_error",
            code=_HTTP_CODES.get(status),
            headers=dict(exc.headers or {}),
        )
    log.exception("internal error", extra={"request_id": request_id})
    suffix = f" (request id {request_id})" if request_id else ""
    return APIError(500, f"internal server error{suffix}", type="server_error", code="internal_error")


def handle(request: Request, exc: Exception) -> Response:
    """Litestar's exception handler for every exception type."""
    err = to_api_error(exc, request.scope.get("state", {}).get("request_id"))
    return Response(err.body(), status_code=err.status, headers=err.headers, media_type="application/json")


_PARAM_AT = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`$")


def _validation_error(exc: ValidationException) -> APIError:
    """Litestar reports msgspec's failures as extra=[{"message", "key"}]: name the param, and put its path
    back into the sentence ("Expected `int`, got `str` - at `$.max_tokens`") so the message alone says it.

    The key is the field path ("max_tokens", "messages[0]"); for a missing field it is "data" (the whole
    body) and the field's name is in the message.
    """
    extra = [e for e in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(e, dict)]
    located = [_locate(e.get("message", ""), e.get("key")) for e in extra if e.get("message")]
    message = "; ".join(text for text, _ in located) or str(exc.detail or "invalid request")
    param = next((path for _, path in located if path), None)
    return APIError(400, message, param=param, code="invalid_value")


def _locate(message: str, key: str | None) -> tuple[str, str | None]:
    """(message with its `$.path`, path) for one validation failure."""
    if match := _PARAM_AT.search(message):
        return message, match.group(1) or None
    path = None if key in (None, "", "data") else str(key).replace("[...]", "")  # "logit_bias[...]": a map's value
    if missing := _MISSING.search(message):
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return (f"{message} - at `$.{path}`" if path else message), path


def _http_message(exc: HTTPException) -> str:
    if exc.status_code == 413:
        return "request body is too large"
    return str(exc.detail)
