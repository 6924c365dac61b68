"""The `gemmacli` command: thin Typer commands over the model layer and the runners."""

import sys

from gemmacli.cli import bench, inference, manage, ps, serve, smoke  # noqa: F401  (each module registers its commands)
from gemmacli.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    sys.exit(app())
