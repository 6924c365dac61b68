"""From a name a user typed to a folder on disk: object storage URL, local path, catalog alias, stored import
or Hub repo."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from gemmacli.errors import GemmacliError, ModelNotFoundError, ModelUnavailableError
from gemmacli.models import demo, hub, objstore, store
from gemmacli.models.catalog import Catalog, CatalogEntry
from gemmacli.models.gguf_import import Report
from gemmacli.models.imports import default_name, import_path, importable
from gemmacli.settings import Paths
from gemmacli.types import GenParams, Task


@dataclass(frozen=True)
class ModelRef:
    """A model we know how to get: `name` is what we show and serve it as."""

    name: str
    entry: CatalogEntry | None = None
    path: Path | None = None  # already on disk
    repo_id: str | None = None  # else fetched from the Hub
    source: Path | None = None  # a GGUF file or CTranslate2 folder still to import
    url: objstore.ObjectURL | None = None  # s3:// or gs://, fetched into the store once

    @property
    def defaults(self) -> GenParams:
        return self.entry.defaults if self.entry else GenParams()


def resolve(name: str, catalog: Catalog, paths: Paths, *, local_paths: bool = True) -> ModelRef:
    """Match `name` without touching the network; `materialize` later fetches or imports what is missing.

    `local_paths=False` (names that come from HTTP requests) never takes the name as a file or folder.
    """
    name = name.strip()
    if not name:
        raise ModelNotFoundError("empty model name")
    if objstore.is_url(name):
        url = objstore.parse(name)
        return ModelRef(str(url), url=url)  # served and shown by its URL
    local = Path(name).expanduser()
    if local_paths and local.exists():
        return _local_ref(local, catalog)
    if entry := catalog.get(name):
        stored = store.read(paths.models_dir / entry.name)
        return ModelRef(entry.name, entry, path=stored.path if stored else None, repo_id=entry.hub)
    if (stored := _stored(name, paths)) is not None:
        return ModelRef(stored.name, path=stored.path)
    if hub.looks_like_repo_id(name):
        entry = catalog.by_hub_id(name)
        return ModelRef(name, entry, repo_id=name)
    hint = difflib.get_close_matches(name.lower(), [e.name for e in catalog], n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else "; `gemmacli models` lists known names"
    raise ModelNotFoundError(f"unknown model {name!r}{suggestion}", param="model")


def materialize(ref: ModelRef, paths: Paths, report: Report = lambda step: None, *, download: bool = True) -> Path:
    """The folder to load `ref` from: stored import > Hub cache > demo package > Hub download."""
    if ref.path is not None:
        return ref.path
    if ref.source is not None:
        stored = store.read(paths.models_dir / ref.name)
        if stored is None or stored.meta.get("origin") != store.fingerprint(ref.source):  # new or replaced file
            stored = import_path(ref.source, paths.models_dir, ref.name, report)
        return stored.path
    if ref.url is not None:
        if (folder := objstore.stored(ref.url, paths.models_dir)) is not None:
            return folder  # `gemmacli download URL` is what checks the bucket for changes
        if not download:
            raise ModelUnavailableError(f"{ref.url} is not downloaded; run: gemmacli download {ref.url}")
        return objstore.fetch(ref.url, paths.models_dir, report).path
    if ref.repo_id and (cached := hub.cached_snapshot(ref.repo_id)):
        return cached
    if ref.entry is not None and demo.installed(ref.entry):
        return demo.ensure(ref.entry, paths.models_dir, report)
    if ref.repo_id and download:
        try:
            return hub.download(ref.repo_id, tqdm_class=getattr(report, "tqdm_class", None))
        except ModelUnavailableError as exc:
            if ref.entry is None or not ref.entry.demo:
                raise
            hint = "; or install the bundled copy: pip install 'gemmacli[demo]'"
            raise ModelUnavailableError(exc.message + hint, param=exc.param) from None
    raise ModelUnavailableError(f"{ref.name} is not cached; run: gemmacli download {ref.repo_id or ref.name}")


def detect_task(folder: Path) -> Task:
    """The task of an HF folder, from its config (and sentence-transformers' modules.json): the first runner
    in the task table that takes it."""
    from gemmacli.runners import RUNNERS, detect

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        if (folder / "modules.json").is_file():
            config = {}  # a sentence-transformers folder may keep its config in a module's folder
        else:
            raise GemmacliError(f"{folder} has no readable config.json; is it a Hugging Face model folder?") from None
    task = detect(config, folder)
    if task is None:
        raise GemmacliError(
            f"cannot tell what {folder.name} is for (model_type {config.get('model_type', '')!r}); "
            f"not a model for any task gemmacli runs ({', '.join(RUNNERS)})"
        )
    return task


def task_of(ref: ModelRef, folder: Path) -> Task:
    return ref.entry.task if ref.entry else detect_task(folder)


def _local_ref(path: Path, catalog: Catalog) -> ModelRef:
    """A GGUF file or CTranslate2 folder is imported on first use; an HF folder is used in place."""
    if importable(path):
        name = default_name(path)
        if catalog.get(name) is not None:  # `gemma-3-270m.gguf` must not replace the catalog model's store folder
            name = f"{name}-local"
        return ModelRef(name, source=path.resolve())
    if path.is_dir():
        return ModelRef(path.resolve().name, path=path.resolve())
    raise GemmacliError(f"{path} is neither a model folder, a GGUF file nor a CTranslate2 Whisper folder")


def _stored(name: str, paths: Paths) -> store.StoredModel | None:
    try:
        return store.read(paths.models_dir / store.check_name(name))
    except GemmacliError:  # not a valid store name, so not a stored model
        return None
