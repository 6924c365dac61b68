"""Hub downloads through the real huggingface_hub.snapshot_download, against a fake Hub on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub.utils import filter_repo_objects
from rich.console import Console
from safetensors.numpy import save
from support.fakehub import FakeHub, closed_port_url, point_hf_at

from gemmacli.errors import GemmacliError, ModelNotFoundError, ModelUnavailableError
from gemmacli.models import hub
from gemmacli.progress import progress_bars, rich_tqdm_class

TOKEN = "hf_fake_token"
# The layout of a sentence-transformers repo (all-MiniLM-L6-v2), with the weights in every format it ships.
WANTED = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "chat_template.jinja",
}
UNWANTED = {
    "pytorch_model.bin",
    "onnx/model.onnx",
    "model.gguf",
    "tf_model.h5",
    "flax_model.msgpack",
    "rust_model.ot",
    "openvino/openvino_model.bin",
    "README.md",
    ".gitattributes",
    "train_script.py",
}


def make_repo(folder: Path) -> Path:
    """Write a tiny but real repo to disk: JSON configs, a safetensors file that loads, junk weights beside it."""
    weights = {"embeddings.weight": np.arange(64, dtype=np.float32).reshape(16, 4)}
    texts = {
        "config.json": {"model_type": "bert", "hidden_size": 4, "num_hidden_layers": 1},
        "tokenizer.json": {"version": "1.0", "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}},
        "tokenizer_config.json": {"tokenizer_class": "BertTokenizer"},
        "special_tokens_map.json": {"unk_token": "[UNK]"},
        "modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}],
        "sentence_bert_config.json": {"max_seq_length": 256},
        "config_sentence_transformers.json": {"similarity_fn_name": "cosine"},
        "1_Pooling/config.json": {"word_embedding_dimension": 4, "pooling_mode_mean_tokens": True},
    }
    for name, payload in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(payload))
    (folder / "model.safetensors").write_bytes(save(weights))
    (folder / "vocab.txt").write_text("[UNK]\nhello\nworld\n")
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    for name in UNWANTED:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\0" * 2048)
    return folder


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def fake_hub(tmp_path: Path, repo_dir: Path, monkeypatch: pytest.MonkeyPatch):
    repos = {
        "org/tiny": repo_dir,
        "org/gated": repo_dir,
        "org/onnx-only": {"README.md": b"# onnx", "model.onnx": b"\0" * 64},
    }
    with FakeHub(repos, gated={"org/gated"}, revisions=("main", "v1.0"), token=TOKEN) as fake:
        point_hf_at(monkeypatch, fake.url, tmp_path / "hf")
        yield fake


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}


def test_download_fetches_only_safetensors_and_configs(fake_hub: FakeHub, repo_dir: Path, tmp_path: Path):
    folder = hub.download("org/tiny")

    assert folder == tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / fake_hub.commit("org/tiny")
    assert files_in(folder) == WANTED
    assert set(fake_hub.downloaded("org/tiny")) == WANTED  # the others were never even requested
    assert (folder / "model.safetensors").read_bytes() == (repo_dir / "model.safetensors").read_bytes()
    assert not [r for r in fake_hub.requests if r.status == 404], "a request the fake hub does not know"


def test_include_replaces_the_default_patterns(fake_hub: FakeHub):
    folder = hub.download("org/tiny", include=["config.json", "onnx/*"])

    assert files_in(folder) == {"config.json", "onnx/model.onnx"}
    assert sorted(fake_hub.downloaded("org/tiny")) == ["config.json", "onnx/model.onnx"]


def test_revision_is_passed_to_the_hub(fake_hub: FakeHub):
    folder = hub.download("org/tiny", revision="v1.0")

    assert "/api/models/org/tiny/revision/v1.0" in [r.path for r in fake_hub.requests]
    assert folder.name == fake_hub.commit("org/tiny", "v1.0") != fake_hub.commit("org/tiny", "main")


def test_local_dir_gets_the_files(fake_hub: FakeHub, tmp_path: Path):
    out = tmp_path / "out"

    assert hub.download("org/tiny", local_dir=out) == out.resolve()
    assert files_in(out) == WANTED
    assert not (tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots").exists()


def test_cached_snapshot_finds_a_download_without_network(fake_hub: FakeHub):
    assert hub.cached_snapshot("org/tiny") is None
    folder = hub.download("org/tiny", revision="v1.0")
    fake_hub.stop()  # from here on any request would fail
    seen = len(fake_hub.requests)

    assert hub.cached_snapshot("org/tiny", revision="v1.0") == folder
    assert hub.cached_snapshot("org/tiny", revision=folder.name) == folder
    assert hub.cached_snapshot("org/tiny") is None  # main was never downloaded
    assert hub.cached_snapshot("org/other") is None
    assert len(fake_hub.requests) == seen


def test_cached_snapshot_ignores_an_interrupted_download(fake_hub: FakeHub):
    folder = hub.download("org/tiny")
    (folder / "model.safetensors").unlink()  # as if the download stopped half way

    assert hub.cached_snapshot("org/tiny") is None


def test_offline_mode_uses_the_cache(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = hub.download("org/tiny")
    point_hf_at(monkeypatch, fake_hub.url, tmp_path / "hf", offline=True)
    seen = len(fake_hub.requests)

    assert hub.download("org/tiny") == folder
    assert len(fake_hub.requests) == seen


def test_gated_repo_asks_to_accept_the_licence(fake_hub: FakeHub):
    with pytest.raises(ModelUnavailableError, match="licence") as err:
        hub.download("org/gated")

    assert f"{fake_hub.url}/org/gated" in err.value.message
    assert "HF_TOKEN" in err.value.message and "\n" not in err.value.message


def test_gated_repo_downloads_with_hf_token(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    point_hf_at(monkeypatch, fake_hub.url, tmp_path / "hf", token=TOKEN)

    assert files_in(hub.download("org/gated")) == WANTED
    assert {r.headers.get("authorization") for r in fake_hub.requests if "/resolve/" in r.path} == {f"Bearer {TOKEN}"}


def test_missing_repo(fake_hub: FakeHub):
    with pytest.raises(ModelNotFoundError, match="org/nope was not found"):
        hub.download("org/nope")


def test_missing_revision(fake_hub: FakeHub):
    with pytest.raises(ModelNotFoundError, match="no revision 'v9'"):
        hub.download("org/tiny", revision="v9")


def test_repo_without_usable_files(fake_hub: FakeHub):
    with pytest.raises(GemmacliError, match="no safetensors weights or config"):
        hub.download("org/onnx-only")
    with pytest.raises(GemmacliError, match=r"no file in org/tiny matches --include \*\.xyz"):
        hub.download("org/tiny", include=["*.xyz"])


def test_not_a_repo_id_makes_no_request(fake_hub: FakeHub):
    with pytest.raises(ModelNotFoundError, match="not a Hugging Face repo id"):
        hub.download("../etc/passwd")
    assert fake_hub.requests == []


def test_offline_and_not_cached(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    point_hf_at(monkeypatch, fake_hub.url, tmp_path / "hf", offline=True)

    with pytest.raises(ModelUnavailableError, match="offline mode is on") as err:
        hub.download("org/tiny")
    assert "gemmacli download org/tiny" in err.value.message
    assert fake_hub.requests == []


def test_unreachable_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = closed_port_url()
    point_hf_at(monkeypatch, url, tmp_path / "hf")

    with pytest.raises(ModelUnavailableError, match=f"cannot reach the Hugging Face Hub at {url}") as err:
        hub.download("org/tiny")
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("google/gemma-3-1b-it", True),
        ("openai/whisper-large-v3-turbo", True),
        ("sentence-transformers/all-MiniLM-L6-v2", True),
        ("a/b", True),
        ("Org_1/model.v2", True),
        ("gemma3", False),  # an alias, not a repo
        ("a/b/c", False),
        ("./models/x", False),
        ("/abs/path", False),
        ("org/", False),
        ("org/-name", False),
        ("org/name.", False),
        ("org/na..me", False),
        ("org/na--me", False),
        ("org/name.git", False),
        ("org/na me", False),
        ("org/" + "x" * 96, True),
        ("org/" + "x" * 97, False),
        ("", False),
    ],
)
def test_looks_like_repo_id(name: str, ok: bool):
    assert hub.looks_like_repo_id(name) is ok


def test_patterns_take_weights_and_configs_only():
    names = sorted(WANTED | UNWANTED | {"model-00001-of-00002.safetensors", "model.safetensors.index.json"})
    names += ["generation_config.json", "preprocessor_config.json", "processor_config.json", "normalizer.json"]
    names += ["tokenizer.model", "merges.txt", "vocab.json", "added_tokens.json", "qwen.tiktoken", "model.pt"]
    names += ["original/consolidated.pth", "2_Dense/model.safetensors", "2_Dense/config.json"]

    taken = set(filter_repo_objects(names, allow_patterns=list(hub.HUB_FILE_PATTERNS)))

    assert set(names) - taken == UNWANTED | {"model.pt", "original/consolidated.pth"}


def render(drive) -> str:
    out = io.StringIO()
    with progress_bars(Console(file=out, width=100, color_system=None)) as bars:
        drive(bars)
    return out.getvalue()


def test_rich_bars_render_like_tqdm():
    def drive(bars):
        with bars(total=3, desc="Fetching 3 files") as files:
            files.update(3)
        sizes = bars(desc="Downloading bytes", total=0, initial=0, unit="B", unit_scale=True, bar_format="{desc}")
        sizes.total = (sizes.total or 0) + 2048  # how snapshot_download grows its byte bar
        sizes.update(2048)
        sizes.set_description_str("Download complete")
        assert sizes.n == 2048 and "rate" in sizes.format_dict

    text = render(drive)

    assert "Fetching 3 files" in text and "3/3" in text
    assert "Download complete" in text and "2.0/2.0 kB" in text


def test_download_draws_rich_bars(fake_hub: FakeHub):
    text = render(lambda bars: hub.download("org/tiny", tqdm_class=bars))

    assert f"Fetching {len(WANTED)} files" in text
    assert f"{len(WANTED)}/{len(WANTED)}" in text
    assert "Download complete" in text


def test_rich_tqdm_class_shares_one_display():
    bars = rich_tqdm_class(Console(file=io.StringIO()))
    try:
        first, second = bars(total=1, desc="a"), bars(total=2, desc="b", unit="B")
        bars(total=1, desc="off", disable=True).update(1)

        assert first.progress is second.progress
        assert [t.description for t in bars.progress.tasks] == ["a", "b"]
    finally:
        bars.progress.stop()


def test_rich_bar_counts_updates_from_many_threads():
    bars = rich_tqdm_class(Console(file=io.StringIO()))
    try:
        shared = bars(total=8000, desc="bytes", unit="B")
        threads = [threading.Thread(target=lambda: [shared.update(1) for _ in range(1000)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert shared.n == 8000 and bars.progress.tasks[0].completed == 8000
    finally:
        bars.progress.stop()
