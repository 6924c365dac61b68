"""The OpenAI-compatible HTTP server: `create_app(settings)` over the same runners as the CLI."""

from gemmacli.server.app import create_app

__all__ = ["create_app"]
