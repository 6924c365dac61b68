"""The Typer app and its error handling; commands live in the sibling modules."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from gemmacli import __version__
from gemmacli.cli.ui import error, stderr
from gemmacli.errors import GemmacliError


class _Group(TyperGroup):
    """Every GemmacliError becomes one readable line on stderr and exit code 1 (usage errors stay 2)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GemmacliError as exc:
            error(exc.message)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            stderr.print("interrupted")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    help="Gemma 3, Whisper and embedding models on your own machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gemmacli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Gemma 3, Whisper and embedding models on your own machine."""
