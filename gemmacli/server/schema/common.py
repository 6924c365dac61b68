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


class Usage(msgspec.Struct, omit_defaults=False):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def decode_data_url(url: str, *, param: str, max_bytes: int) -> bytes:
    """`data:image/png;base64,....` -> bytes, refusing anything larger than `max_bytes` before decoding it."""
    match = _DATA_URL.match(url)
    if match is None:
        raise MediaError("expected a data: URL such as data:image/png;base64,...", param=param)
    payload = url[match.end() :]
    if len(payload) * 3 // 4 > max_bytes:
        raise MediaError(f"the data URL holds more than {max_bytes:,} bytes", param=param)
    if not match.group("b64"):
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(payload)
    return decode_base64(payload, param=param)


def decode_base64(text: str, *, param: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParamError("invalid base64 data", param=param) from None
