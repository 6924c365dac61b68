"""Local folders and GGUF files as model sources for download, chat and serve."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from gemmacli.cli import app
from gemmacli.errors import GemmacliError
from gemmacli.models import store
from gemmacli.models.loader import ModelLoader
from gemmacli.models.resolve import materialize, resolve
from gemmacli.settings import Paths

# A GGUF header with no metadata: gemmacli takes it for a GGUF file, transformers cannot read it.
FAKE_GGUF = b"GGUF\x03\x00\x00\x00" + bytes(200)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_download_a_model_folder_checks_it_holds_a_model(minilm_dir, tmp_path):
    ok = invoke("download", minilm_dir, "-q")
    assert ok.exit_code == 0 and ok.stdout == f"all-minilm-l6-v2\t{minilm_dir.resolve()}\n"
    (tmp_path / "notes").mkdir()
    bad = invoke("download", tmp_path / "notes", "-q")
    assert bad.exit_code == 1 and "no readable config.json" in bad.stderr


def test_serve_names_a_folder_model_by_its_folder(minilm_dir, tmp_path):
    from gemmacli.server.launch import prepare_models
    from gemmacli.server.model_loading import aliases
    from gemmacli.server.settings import ServerSettings

    settings = ServerSettings(models=(str(minilm_dir),))
    [(given, item)] = prepare_models(settings, ModelLoader(paths=Paths(tmp_path)), report=lambda step: None)
    assert item.ref.name == "all-minilm-l6-v2" and item.task == "embed" and item.folder == minilm_dir.resolve()
    assert str(minilm_dir) in aliases(given, item)  # requests may name it by the path given too


def test_a_gguf_file_named_like_a_catalog_model_gets_its_own_store_folder(catalog, tmp_path):
    gguf = tmp_path / "gemma-3-270m.gguf"
    gguf.write_bytes(FAKE_GGUF)
    ref = resolve(str(gguf), catalog, Paths(tmp_path))
    assert ref.name == "gemma-3-270m-local" and ref.source == gguf.resolve()


def test_a_replaced_gguf_file_is_imported_again(catalog, tmp_path):
    paths, gguf = Paths(tmp_path / "home"), tmp_path / "mine.gguf"
    gguf.write_bytes(FAKE_GGUF)
    origin = {"origin": store.fingerprint(gguf)}
    with store.staging(paths.models_dir, "mine", "chat", source="gguf:mine.gguf", meta=origin) as out:
        (out / "config.json").write_text("{}")  # stands for an earlier import of this very file
    ref = resolve(str(gguf), catalog, paths)
    assert materialize(ref, paths) == paths.models_dir / "mine"  # same file: the import is reused

    gguf.write_bytes(FAKE_GGUF + bytes(8))
    os.utime(gguf, ns=(0, gguf.stat().st_mtime_ns + 10**9))
    with pytest.raises(GemmacliError, match=r"transformers cannot read mine\.gguf"):
        materialize(ref, paths)  # a new file: imported again (and this one is no real model)
    assert store.read(paths.models_dir / "mine") is not None  # the failed import left the old one alone
