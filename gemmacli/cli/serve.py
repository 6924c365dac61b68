"""gemmacli serve: the OpenAI-compatible HTTP server over the same runners the other commands use.

Its flags are not written out here: one is made per setting declared on ServerSettings (gemmacli/settings.py),
with that setting's doc, range, panel and default, so the flags, the variables and the README cannot disagree.
"""

from __future__ import annotations

import inspect
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from gemmacli.cli.app import app
from gemmacli.cli.common import quiet_libraries
from gemmacli.cli.options import QuietOpt
from gemmacli.cli.ui import reporting
from gemmacli.settings import SETTINGS, ServerSettings, Setting

DEFAULTS = ServerSettings()


def _flag_type(s: Setting) -> Any:
    if s.choices:  # typer shows and checks an Enum's values as choices
        return StrEnum(s.name, {choice: choice for choice in s.choices})
    return list[str] if s.kind is tuple else s.kind


# Short metavars leave the help column room at 80 columns; typer's own (<float range>, <list[str]>) do not.
UNIT_METAVARS = {"s": "SECONDS", "ms": "MS", "bytes": "BYTES", "px": "PX"}
KIND_METAVARS = {int: "N", float: "N", Path: "FILE"}


def _metavar(s: Setting) -> str | None:
    if s.kind is bool:
        return None  # a flag pair takes no value
    if s.choices:  # the help lists them: typer's <auto|bfloat16|float16|float32> would take a third of the width
        return "NAME"
    return UNIT_METAVARS.get(s.unit) or KIND_METAVARS.get(s.kind, "TEXT")


def _help(s: Setting) -> str:
    choices = f"; one of {', '.join(s.choices)}" if s.choices else ""
    return escape(f"{s.doc}{choices} [default: {s.shown}].")


def _flag(s: Setting) -> inspect.Parameter:
    """A keyword parameter whose `Annotated` typer.Option is the setting's flag; None means "not given", so the
    variables and the .env file still apply."""
    option = typer.Option(
        *s.decls,
        help=_help(s),
        min=s.min,
        max=s.max,
        rich_help_panel=s.panel,
        show_default=False,
        metavar=_metavar(s),
    )
    flag_type = Annotated[_flag_type(s) | None, option]
    return inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=flag_type)


def _with_setting_flags(command):
    """Typer reads a command's options from its signature: one keyword per setting, then the command's own."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    command.__signature__ = inspect.Signature([*map(_flag, SETTINGS), *own])
    return command


def _value(given: Any) -> Any:
    if isinstance(given, list):
        return tuple(given)
    return given.value if isinstance(given, Enum) else given


@app.command(
    epilog=f"""[b]Examples[/]\n
  gemmacli serve                                   [dim]# {DEFAULTS.models[0]} on {DEFAULTS.host}:{DEFAULTS.port}[/]\n
  gemmacli serve -m gemma-3-270m -m all-minilm-l6-v2 -m whisper-tiny.en\n
  gemmacli serve -m gemma-3-4b-it --host 0.0.0.0 --api-key $KEY --max-queue 16\n
  gemmacli serve --load-on-demand --max-loaded 2 --idle-unload 600   [dim]# any local model, on first use[/]\n
  GEMMACLI_MODELS=gemma-3-270m GEMMACLI_PORT=9000 gemmacli serve   [dim]# or put them in .env[/]"""
)
@_with_setting_flags
def serve(
    *,
    env_file: Annotated[Path, typer.Option(help="KEY=VALUE file of GEMMACLI_* settings.")] = Path(".env"),
    quiet: QuietOpt = False,
    **flags: Any,
) -> None:
    """OpenAI-compatible HTTP server: chat, completions, embeddings, audio, models, health, metrics.

    Every flag can also be set as a GEMMACLI_* environment variable (GEMMACLI_MODELS=a,b, GEMMACLI_API_KEY=k1,k2)
    or in a .env file; flags win over the environment, which wins over the file.
    """
    from gemmacli.server.launch import serve as run

    settings = ServerSettings.load({name: _value(given) for name, given in flags.items()}, dotenv=env_file)
    quiet_libraries()
    with reporting("preparing models", quiet=quiet) as report:
        run(settings, report)
