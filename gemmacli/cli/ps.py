"""gemmacli ps: what a running server has loaded (and the HTTP helper `models --url` shares)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from gemmacli.cli.app import app
from gemmacli.cli.options import JsonOpt
from gemmacli.cli.ui import emit, stdout
from gemmacli.errors import GemmacliError

DEFAULT_URL = "http://127.0.0.1:8000"


def server_url(value: str) -> str:
    """The base URL as users paste it: with or without a trailing /v1."""
    if not value.startswith(("http://", "https://")):
        raise typer.BadParameter("give a URL like http://127.0.0.1:8000")
    return value.rstrip("/").removesuffix("/v1").rstrip("/")


UrlOpt = Annotated[str, typer.Option("--url", help="A running gemmacli server.", callback=server_url)]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", help="Bearer key the server expects.")]


def server_get(url: str, path: str, api_key: str | None) -> Any:
    """GET `url + path` as JSON; every failure is one GemmacliError line that says what to do."""
    import httpx

    from gemmacli.loadgen import describe, http_error

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url + path, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise GemmacliError(f"cannot reach {url}: {describe(exc)}") from None
    if response.status_code == 401:
        raise GemmacliError(f"{url} wants an API key: pass --api-key")
    if response.status_code != 200:
        raise GemmacliError(f"{url}{path}: {http_error(response.status_code, response.text)}")
    return response.json()


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli ps\n
  gemmacli ps --url http://gpu-box:8000 --api-key $KEY --json"""
)
def ps(url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, json_out: JsonOpt = False) -> None:
    """List the models a running server has loaded: task, device, dtype, memory, requests in flight, idle time."""
    stats = server_get(url, "/admin/stats", api_key)
    if json_out:
        emit(json.dumps(stats, indent=2))
    else:
        stdout.print(ps_table(stats))


def ps_table(stats: dict):
    from rich.table import Table

    loading = ", ".join(stats.get("loading", ()))
    table = Table(title=f"loaded models{f' (loading: {loading})' if loading else ''}")
    for column in ("model", "task", "device", "dtype"):
        table.add_column(column, no_wrap=True)
    for column in ("memory", "in flight", "requests", "idle for"):
        table.add_column(column, justify="right")
    for m in stats["models"]:
        idle = "busy" if m["in_flight"] else _duration(m["idle_s"])
        table.add_row(
            m["id"],
            m["task"],
            m["device"],
            m["dtype"],
            _size(m["memory_bytes"]),
            str(m["in_flight"]),
            str(m["requests"]),
            idle,
        )
    return table


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _duration(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds >= 60 else f"{seconds:.0f} s"
