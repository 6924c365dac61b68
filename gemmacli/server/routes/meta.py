"""/health, /metrics and /v1/models: what is served and whether it is ready."""

from __future__ import annotations

from litestar import Response, get

from gemmacli.errors import ModelNotFoundError
from gemmacli.server.models_manager import ModelView
from gemmacli.server.services import Services


@get("/health", sync_to_thread=False)
def health(services: Services) -> Response:
    """200 once every preloaded model has loaded and warmed up; 503 before that (and if loading failed)."""
    models = services.models
    if models.failure:
        return Response({"status": "failed", "error": models.failure}, status_code=503)
    if not models.ready:
        return Response({"status": "loading"}, status_code=503)
    if not services.engine.alive:
        return Response({"status": "stopped"}, status_code=503)
    return Response({"status": "ok", "models": [m.id for m in models.loaded()]})


@get("/metrics", sync_to_thread=False, media_type="text/plain; version=0.0.4; charset=utf-8")
def metrics(services: Services) -> bytes:
    return services.metrics.render()


def model_card(view: ModelView, reads: set[str] | None = None) -> dict:
    """OpenAI's model object, plus our `task`, `status` (loaded, loading or available: loads on first use) and,
    where known, `modalities`: what it takes in."""
    model = view.model
    created = model.created if model is not None else 0
    card = {
        "id": view.id,
        "object": "model",
        "created": created,
        "owned_by": "gemmacli",
        "task": view.task,
        "status": view.status,
    }
    if model is not None and model.dimensions is not None:
        card["dimensions"] = model.dimensions
    if reads:
        card["modalities"] = [kind for kind in ("text", "image", "audio", "video") if kind in reads]
    return card


@get("/v1/models")
async def list_models(services: Services) -> dict:
    """Loaded models first; then, with --load-on-demand, every model this machine can load without a download."""
    views = await services.models.views()
    return {"object": "list", "data": [model_card(v, services.models.reads(v.id)) for v in views]}


@get("/v1/models/{model_id:path}")
async def get_model(services: Services, model_id: str) -> dict:
    name = model_id.lstrip("/")
    view = await services.models.view(name)
    if view is None:
        raise ModelNotFoundError(f"model {name!r} is not served", param="model")
    return model_card(view, services.models.reads(view.id))
