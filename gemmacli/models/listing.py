"""What `gemmacli models` shows: the catalog, imported models and Hub models already cached."""

from __future__ import annotations

import json
from pathlib import Path

from gemmacli.errors import GemmacliError
from gemmacli.models import demo, hub, store
from gemmacli.models.catalog import Catalog
from gemmacli.models.resolve import detect_task
from gemmacli.runners.base import encoder_modalities
from gemmacli.runners.processors import video_settings
from gemmacli.settings import Paths


def list_models(catalog: Catalog, paths: Paths) -> list[dict]:
    """One row per model: name, task, status (ready / demo / download), source, description."""
    rows, seen = [], set()
    stored = {m.name: m for m in store.list_stored(paths.models_dir)}
    for entry in catalog:
        if entry.name in stored or (entry.hub and hub.cached_snapshot(entry.hub)):
            status = "ready"
        else:
            status = "demo" if demo.installed(entry) else "download"
        source = f"pypi:{entry.demo}" if status == "demo" or entry.name in stored else f"hf:{entry.hub}"
        rows.append(_row(entry.name, entry.task, status, source, entry.description, entry.modalities, entry.context))
        seen.update({entry.name, (entry.hub or "").lower()})
    for model in stored.values():
        if model.name not in seen:
            rows.append(
                _row(model.name, model.task, "ready", model.source, "imported", *_reads(model.path, model.task))
            )
    rows.extend(_hub_cache_rows(seen))
    return rows


def _hub_cache_rows(seen: set[str]) -> list[dict]:
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos  # where downloads go, read now rather than at import
    except (CacheNotFound, OSError):
        return []
    rows = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or repo.repo_id.lower() in seen or not repo.revisions:
            continue
        snapshot = max(repo.revisions, key=lambda r: r.last_modified).snapshot_path
        try:
            task = detect_task(snapshot)
        except GemmacliError:
            continue  # a tokenizer-only or non-model repo
        size = f"{repo.size_on_disk / 1e6:.0f} MB"
        rows.append(_row(repo.repo_id, task, "ready", f"hf:{repo.repo_id}", size, *_reads(snapshot, task)))
    return rows


def _reads(folder: Path, task: str) -> tuple[tuple[str, ...], int | None]:
    """What a model outside the catalog takes in, and its context window, from its config.json."""
    if task != "chat":
        return ("audio",) if task == "transcribe" else ("text",), None
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return ("text",), None
    text = config.get("text_config", config)
    reads = list(encoder_modalities(config))
    if "image" in reads and video_settings(folder) is not None:
        reads.append("video")
    return tuple(reads), text.get("max_position_embeddings")


def _row(
    name: str,
    task: str,
    status: str,
    source: str,
    description: str,
    modalities: tuple[str, ...] = ("text",),
    context: int | None = None,
) -> dict:
    return {
        "name": name,
        "task": task,
        "modalities": list(modalities),
        "context": context,
        "status": status,
        "source": source,
        "description": description,
    }
