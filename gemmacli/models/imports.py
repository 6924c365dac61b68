"""`gemmacli import`: GGUF files and CTranslate2 Whisper folders into the store, once."""

from __future__ import annotations

import re
from pathlib import Path

from gemmacli.errors import GemmacliError
from gemmacli.models import store
from gemmacli.models.gguf_import import Report, import_gguf, is_gguf


def importable(path: Path) -> bool:
    from gemmacli.models.whisper_import import is_ct2_whisper

    return is_gguf(path) or (path.is_dir() and is_ct2_whisper(path))


def default_name(path: Path) -> str:
    """`gemma-3-270m-Q4_K_M.gguf` -> `gemma-3-270m-q4_k_m`: a safe store name from the file name."""
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "imported-model"


def import_path(
    source: Path, models_dir: Path, name: str | None = None, report: Report = lambda step: None
) -> store.StoredModel:
    """Convert `source` into `models_dir/<name>` and return the stored model."""
    from gemmacli.models.whisper_import import convert_ct2_whisper, is_ct2_whisper

    source = source.expanduser()
    if not source.exists():
        raise GemmacliError(f"{source} does not exist")
    name = store.check_name(name or default_name(source))
    origin = {"origin": store.fingerprint(source)}  # so `-m FILE` re-imports a replaced file
    if is_gguf(source):
        with store.staging(models_dir, name, "chat", source=f"gguf:{source.name}", meta=origin) as out:
            import_gguf(source, out, report)
    elif source.is_dir() and is_ct2_whisper(source):
        source_label = f"ctranslate2:{source.name}"
        with store.staging(models_dir, name, "transcribe", source=source_label, meta=origin) as out:
            report("converting CTranslate2 Whisper to transformers")
            convert_ct2_whisper(source, out)
    else:
        raise GemmacliError(f"{source.name} is neither a GGUF file nor a CTranslate2 Whisper folder")
    return store.read(models_dir / name)
