"""Which chat model reads a request's inputs: the default when none is named, and the check on a named one.

`gemmacli chat photo.jpg "describe"` names no model. Text alone goes to the bundled default; images, audio or
video go to the smallest model of the newest generation in the catalog that reads every kind given (for an
image, Gemma 4 E2B), fetched on first use. Both checks run before any weights are touched.
"""

from __future__ import annotations

from gemmacli.errors import ModelUnavailableError, UnsupportedInputError
from gemmacli.models.catalog import Catalog, CatalogEntry
from gemmacli.models.defaults import DEFAULT_CHAT_MODEL


def readers(catalog: Catalog, inputs: set[str]) -> list[CatalogEntry]:
    """Chat models that read every kind in `inputs`, newest generation first, then smallest download."""
    found = [e for e in catalog if e.task == "chat" and e.takes(inputs)]
    return sorted(found, key=lambda e: (-e.generation, e.size_gb or float("inf")))


def default_chat_model(catalog: Catalog, inputs: set[str]) -> CatalogEntry | str:
    """The model `chat` uses when none is named: the bundled default for text, else the first reader."""
    media = inputs - {"text"}
    if not media:
        return DEFAULT_CHAT_MODEL
    found = readers(catalog, media)
    if not found:
        raise UnsupportedInputError(f"no catalog model reads {_kinds(media)}")
    return found[0]


def check_reads(entry: CatalogEntry | None, catalog: Catalog, inputs: set[str]) -> None:
    """A catalog model named for inputs it cannot read is an error naming the ones that can."""
    media = inputs - {"text"}
    if entry is None or entry.takes(media):
        return
    missing = sorted(media - set(entry.modalities), key=("image", "audio", "video").index)
    can = ", ".join(e.name for e in readers(catalog, media)[:4]) or "none in the catalog"
    reads = " and ".join(entry.modalities)
    raise UnsupportedInputError(
        f"model {entry.name} reads {reads} only, not {_kinds(set(missing))}; models that do: {can}", param="model"
    )


def unavailable(entry: CatalogEntry, inputs: set[str], ready: list[str], reason: str) -> ModelUnavailableError:
    """The one line for a default that cannot be fetched: what was needed, how to get it, what is here."""
    kinds = _kinds(inputs - {"text"})
    here = f"models here that read {kinds}: {', '.join(ready)}" if ready else f"no model here reads {kinds}"
    return ModelUnavailableError(
        f"{kinds} need {entry.name}, which could not be fetched: {reason.rstrip('.')}. "
        f"Fetch it with `gemmacli download {entry.name}`, or pass -m MODEL ({here})"
    )


def announce(entry: CatalogEntry, inputs: set[str]) -> str:
    size = f" (about {entry.size_gb:g} GB)" if entry.size_gb else ""
    return f"{_kinds(inputs - {'text'})} need a model that reads them: fetching {entry.name} from {entry.hub}{size}"


def _kinds(media: set[str]) -> str:
    names = {"image": "images", "audio": "audio", "video": "video"}
    return " and ".join(names[m] for m in ("image", "audio", "video") if m in media)
