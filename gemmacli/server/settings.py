"""The server's settings, and the README's tables of them.

ServerSettings is declared in gemmacli/settings.py, below the server, so that media.py and the request
limits take their defaults from it without importing the server; the server's modules import it from here.
tests/test_settings.py fails when README.md's tables differ from what these functions render.
"""

from __future__ import annotations

from gemmacli.settings import LIMITS, SETTINGS, ServerSettings, Setting, read_dotenv

__all__ = ["SETTINGS", "ServerSettings", "Setting", "markdown_env_row", "markdown_table", "read_dotenv"]


def markdown_table(panel: str = LIMITS) -> str:
    """The README's table of one --help panel's settings: what each limits, its flag, variable and default."""
    rows = [f"| {s.doc} | `{s.flag}` | `{s.env}` | {s.shown} |" for s in SETTINGS if s.panel == panel]
    return "\n".join(["| limit | flag | env var | default |", "| --- | --- | --- | --- |", *rows])


def markdown_env_row() -> str:
    """The README's "Environment variables" row for `gemmacli serve`: each variable but the limits, and its default."""
    names = ", ".join(f"`{s.env}` ({s.shown})" for s in SETTINGS if s.panel != LIMITS)
    return f"| {names}, and the request limits above | `gemmacli serve` settings (also read from `.env`) |"
