"""Structured logs: one JSON object per line, request fields escaped by the encoder.

JSON escapes newlines and C0 controls (ANSI escapes start with one), so a request field can neither start
a forged line nor drive the terminal; C1 controls and line separators are escaped here too. Exception
texts (from libraries, in `error` fields and messages) lose file paths and anything shaped like a secret.
"""

from __future__ import annotations

import logging
import re
import time

import msgspec

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")  # raw in msgspec's output; terminals may act on C1 controls
_SECRET = re.compile(r"(?i)\b(?:bearer\s+\S+|sk-[\w-]{8,}|hf_\w{8,}|(?:api[_-]?key|token|password)=\S+)")
# An absolute file path: /a/b, ~/a, C:\a\b, file:///a; not URLs (the // after a scheme) nor "org/model" names.
_PATH = re.compile(r"(?<![\w/.:-])(?:file://)?(?:~|[A-Za-z]:)?[/\\](?:[\w.@+-]+[/\\])+[\w.@+-]*|~[/\\][\w.@+/\\-]+")


def redact(text: str) -> str:
    """`text` without secrets and file paths: what may leave the process in a log or an error message."""
    return _PATH.sub("<path>", _SECRET.sub("<redacted>", text))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if isinstance(entry.get("error"), str):
            entry["error"] = redact(entry["error"])
        if record.exc_info:
            entry["error"] = redact(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")  # no stack, no paths
        line = msgspec.json.encode(entry, enc_hook=str).decode()
        return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
