"""Wire pieces every endpoint shares."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time

import msgspec

from gemmacli.errors import InvalidParamError, MediaError

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int


class Usage(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None  # thinking models only


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def decode_data_url(url: str, *, param: str, max_bytes: int, kind: str) -> bytes:
    """`data:image/png;base64,....` -> bytes, refusing anything larger than `max_bytes` before decoding it.

    The media type must be of `kind` ("image", "audio") when given; the bytes are sniffed either way, so
    image/png holding a JPEG is fine, but text/html is a mistake worth naming.
    """
    match = _DATA_URL.match(url)
    if match is None:
        raise MediaError(f"expected a data: URL such as data:{kind}/...;base64,...", param=param)
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith(f"{kind}/") and mime != "application/octet-stream":
        raise MediaError(f"the data URL's media type is {mime}; expected {kind}/...", param=param)
    payload = url[match.end() :]
    if not match.group("b64"):
        from urllib.parse import unquote_to_bytes

        data = unquote_to_bytes(payload)
        if len(data) > max_bytes:
            raise MediaError(f"the data URL holds more than {max_bytes:,} bytes", param=param)
        return data
    return decode_base64(payload, param=param, max_bytes=max_bytes)


def decode_base64(text: str, *, param: str, max_bytes: int) -> bytes:
    """Base64 -> bytes; the length is checked before anything is decoded."""
    if len(text) // 4 * 3 > max_bytes + 2:  # 4 characters carry 3 bytes; padding may drop up to 2
        raise MediaError(f"the base64 data holds more than {max_bytes:,} bytes", param=param)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParamError("invalid base64 data", param=param) from None
    if len(data) > max_bytes:
        raise MediaError(f"the base64 data holds more than {max_bytes:,} bytes", param=param)
    return data
