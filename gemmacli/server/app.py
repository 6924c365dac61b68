"""create_app: the Litestar application around the model manager and one engine."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from gemmacli import __version__
from gemmacli.server import errors, openapi
from gemmacli.server.batching import EmbedBatcher
from gemmacli.server.engine import Engine
from gemmacli.server.loaded import LoadedModel
from gemmacli.server.metrics import Metrics
from gemmacli.server.middleware import Access, request_context
from gemmacli.server.models_manager import ModelManager, release_leases
from gemmacli.server.remote_media import RemoteMedia
from gemmacli.server.routes import admin, audio, chat, completions, embeddings, meta
from gemmacli.server.services import Services
from gemmacli.server.settings import ServerSettings

ROUTES = [
    meta.health,
    meta.metrics,
    meta.list_models,
    meta.get_model,
    chat.chat_completions,
    completions.completions,
    embeddings.embeddings,
    audio.transcriptions,
    audio.translations,
    admin.stats,
    admin.load,
    admin.unload,
]


def create_app(
    settings: ServerSettings = ServerSettings(),
    *,
    models: Sequence[LoadedModel] = (),
    engine: Engine | None = None,
    metrics: Metrics | None = None,
    on_startup: list = (),
    loader=None,
    preload: list | None = None,
) -> Litestar:
    """Everything the app uses is passed in: tests hand it `models` already loaded; `gemmacli serve` hands it a
    loader and the prepared models to `preload` (the manager loads them, and others on demand, with `loader`)."""
    metrics = metrics or Metrics()
    engine = engine or Engine(
        max_running=settings.max_batch, max_queue=settings.max_queue, on_change=metrics.engine_changed
    )
    manager = ModelManager.from_settings(engine, settings, models=models, loader=loader)
    batcher = EmbedBatcher.from_settings(engine, metrics, settings)
    services = Services(engine, metrics, settings, batcher, manager, remote_media=RemoteMedia.from_settings(settings))
    access = Access.from_settings(settings)

    def start_engine() -> None:
        if not engine.alive:
            engine.start()

    def stop_engine() -> None:
        manager.stop()
        engine.stop(timeout=5)

    def complete_openapi() -> None:
        # At startup, not creation: most apps in tests never serve their document. A flaw here only
        # costs the document its additions, never the server its start.
        try:
            openapi.document(app.openapi_schema)
        except Exception:
            logging.getLogger("gemmacli.server").exception("cannot complete the OpenAPI document")

    async def start_models() -> None:
        manager.start(preload)

    app = Litestar(
        route_handlers=ROUTES,
        dependencies={"services": Provide(lambda: services, use_cache=True, sync_to_thread=False)},
        exception_handlers={Exception: errors.handle},
        on_startup=[start_engine, start_models, complete_openapi, *on_startup],
        on_shutdown=[stop_engine],
        request_max_body_size=settings.max_body_bytes,
        cors_config=access.cors,  # None unless --cors-origin: browsers on other sites get no access
        openapi_config=OpenAPIConfig(title="gemmacli", version=__version__, path="/docs"),
        logging_config=None,
        debug=False,
        state={"services": services},
    )
    # Around routing, not inside it: unknown paths and refused keys get request ids, logs and counts too.
    app.asgi_handler = metrics.track_in_flight(request_context(access, metrics)(release_leases(app.asgi_handler)))
    return app


def configure_logging(level: str = "info") -> None:
    """One JSON object per line on stderr: easy to grep, easy to ship."""
    from gemmacli.server.logs import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("gemmacli")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
