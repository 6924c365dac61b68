"""/admin/*: what is loaded, and loading or unloading a model by hand. Behind the API key when one is set."""

from __future__ import annotations

from litestar import get, post

from gemmacli.server.models_manager import ModelView
from gemmacli.server.routes.meta import model_card
from gemmacli.server.services import Services


@get("/admin/stats")
async def stats(services: Services) -> dict:
    """Loaded models (task, device, dtype, placement, parameter bytes, requests, in flight, last used), the
    engine's queue, loads in progress, the process's memory and uptime."""
    return services.models.stats()


@post("/admin/load/{model:path}", status_code=200)
async def load(services: Services, model: str) -> dict:
    """Load a model now (200 at once if it is loaded); 404 when this server may not serve it."""
    loaded = await services.models.load(model.lstrip("/"))
    return model_card(ModelView(loaded.id, loaded.task, "loaded", loaded))


@post("/admin/unload/{model:path}", status_code=200)
async def unload(services: Services, model: str) -> dict:
    """Unload a model and free its memory; 404 unknown, 409 while requests use it or it is loading."""
    name = model.lstrip("/")
    unloaded = await services.models.unload(name)
    return {"id": unloaded or name, "status": "unloaded", "was_loaded": unloaded is not None}
