"""gemmacli smoke: check the GPU (or the CPU) end to end."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gemmacli.cli.app import app
from gemmacli.cli.common import load_runner
from gemmacli.cli.options import DeviceOpt, JsonOpt, QuietOpt, model_opt
from gemmacli.cli.ui import emit, error, stdout
from gemmacli.models.defaults import DEFAULT_CHAT_MODEL


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli smoke                      [dim]# the GPU; exit 1 when there is none[/]\n
  gemmacli smoke --device cpu         [dim]# the CPU path, e.g. in CI[/]\n
  gemmacli smoke --device cuda:1 --json\n
  gemmacli smoke -m gemma-3-1b-it"""
)
def smoke(
    device: DeviceOpt = "auto",
    model: Annotated[str, model_opt(DEFAULT_CHAT_MODEL, "chat")] = DEFAULT_CHAT_MODEL,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check the GPU: torch build, devices and memory, bf16, a matmul against the CPU, and a real generation.

    Exit 0 only if every check passes; `--device auto` without a GPU fails (use `--device cpu` to check the CPU).
    """
    from gemmacli.smoke import run_smoke

    def load(name: str, where: str):
        return load_runner(name, "chat", device=where, dtype="auto", quiet=quiet)

    report = run_smoke(device, model, load)
    if json_out:
        emit(json.dumps(report.to_json()))
    else:
        stdout.print(_smoke_table(report))
    if not report.ok:
        failed = report.failed
        more = f" (and {len(failed) - 1} more failed checks)" if len(failed) > 1 else ""
        error(f"{failed[0].name}: {failed[0].detail}{more}")
        raise typer.Exit(1)


def _smoke_table(report) -> Table:
    table = Table(title=f"gemmacli smoke ({report.device or report.requested})", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    shown = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[yellow]skip[/]"}
    for check in report.checks:
        table.add_row(check.name, shown[check.status], escape(check.detail))
    return table
