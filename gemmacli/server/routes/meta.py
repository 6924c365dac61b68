"""/health, /metrics and /v1/models: what is served and whether it is ready."""

from __future__ import annotations

from litestar import Response, get

from gemmacli.errors import ModelNotFoundError
from gemmacli.server.registry import ServedModel
from gemmacli.server.services import Services


@get("/health", sync_to_thread=False)
def health(services: Services) -> Response:
    """200 once every model has loaded and warmed up; 503 before that (and if loading failed)."""
    registry = services.registry
    if registry.failure:
        return Response({"status": "failed", "error": registry.failure}, status_code=503)
    if not registry.ready:
        return Response({"status": "loading"}, status_code=503)
    if not services.engine.alive:
        return Response({"status": "stopped"}, status_code=503)
    return Response({"status": "ok", "models": [m.id for m in registry]})


@get("/metrics", sync_to_thread=False, media_type="text/plain; version=0.0.4; charset=utf-8")
def metrics(services: Services) -> bytes:
    return services.metrics.render()


def model_card(model: ServedModel) -> dict:
    card = {"id": model.id, "object": "model", "created": model.created, "owned_by": "gemmacli", "task": model.task}
    if model.dimensions is not None:
        card["dimensions"] = model.dimensions
    return card


@get("/v1/models", sync_to_thread=False)
def list_models(services: Services) -> dict:
    return {"object": "list", "data": [model_card(m) for m in services.registry]}


@get("/v1/models/{model_id:path}", sync_to_thread=False)
def get_model(services: Services, model_id: str) -> dict:
    model = services.registry.find(model_id.lstrip("/"))
    if model is None:
        raise ModelNotFoundError(f"model {model_id.lstrip('/')!r} is not served", param="model")
    return model_card(model)
