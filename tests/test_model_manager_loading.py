"""How models load: safetensors only, --max-memory, --load-in-8bit, and the settings that shape the manager."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gemmacli.device import Placement
from gemmacli.errors import GemmacliError, InvalidParamError
from gemmacli.models.loader import CONVERT_HINT, LoadOptions, ModelLoader, parse_max_memory
from gemmacli.runners.cpu_linear import PackedLinear
from gemmacli.server.settings import ServerSettings


def test_max_memory_parses_devices_and_sizes():
    assert parse_max_memory("0=20GiB, cpu=64GiB,cuda:1=10 GB") == ((0, "20GiB"), ("cpu", "64GiB"), (1, "10GB"))
    assert parse_max_memory("") == ()
    for bad in ("0:20GiB", "gpu=1GiB", "cpu=lots", "cpu="):
        with pytest.raises(InvalidParamError, match="--max-memory"):
            parse_max_memory(bad)


def test_load_in_8bit_without_bitsandbytes_is_one_clear_error():
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here: the error cannot happen")
    with pytest.raises(GemmacliError, match="pip install bitsandbytes"):
        LoadOptions(load_in_8bit=True).check()


def test_weights_load_as_safetensors_without_remote_code():
    kwargs = Placement("cpu", "float32", max_memory=(("cpu", "2GiB"),), device_map_auto=True).from_pretrained_kwargs()
    assert kwargs["use_safetensors"] is True and kwargs["trust_remote_code"] is False
    assert kwargs["device_map"] == "auto" and kwargs["max_memory"] == {"cpu": "2GiB"}


def test_every_test_model_folder_has_safetensors(gemma_dir, minilm_dir, whisper_dir, vision_dir):
    for folder in (gemma_dir, minilm_dir, whisper_dir, vision_dir):
        assert list(folder.rglob("*.safetensors")), folder


@pytest.mark.slow
def test_pickle_only_weights_are_refused_until_converted(minilm_dir, embed_runner, tmp_path):
    """A folder with only pytorch_model.bin is refused with a recipe; the recipe, run as printed, fixes it."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled-minilm"
    shutil.copytree(minilm_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", ".gemmacli.json"))
    torch.save(load_file(minilm_dir / "model.safetensors"), folder / "pytorch_model.bin")
    loader = ModelLoader()
    prepared = loader.prepare(str(folder))
    with pytest.raises(GemmacliError, match="pickle weights") as refused:
        loader.build(prepared, LoadOptions(device="cpu", dtype="float32"), report=lambda step: None)
    assert CONVERT_HINT in refused.value.message and str(folder) in refused.value.message
    command = CONVERT_HINT.replace("python -c ", "", 1).strip('"')
    subprocess.run([sys.executable, "-c", command], cwd=folder, check=True)
    runner = loader.build(prepared, LoadOptions(device="cpu", dtype="float32"), report=lambda step: None)
    converted, original = runner.embed(["same weights"]), embed_runner.embed(["same weights"])
    np.testing.assert_allclose(converted.vectors, original.vectors, atol=1e-5)


@pytest.mark.slow
def test_max_memory_lets_accelerate_place_the_model(vision_dir):
    loader = ModelLoader()
    options = LoadOptions(device="cpu", dtype="float32", max_memory=(("cpu", "4GiB"),))
    runner = loader.build(loader.prepare(str(vision_dir)), options, report=lambda step: None)
    placed = runner.memory()
    assert (placed.device, placed.dtype, placed.placement) == ("cpu", "float32", "auto (max cpu=4GiB)")
    parameters = sum(p.numel() for p in runner.model.parameters())
    packed = sum(m.packed.numel() for m in runner.model.modules() if isinstance(m, PackedLinear))
    # fp32 parameters and the linears' packed fp32 copies (on CPU), plus small buffers
    assert (parameters + packed) * 4 <= placed.bytes < (parameters + packed) * 4 * 1.01
    assert runner.complete_text("Hello", runner.defaults).finish_reason in ("stop", "length")


def test_load_on_demand_without_models_preloads_nothing(tmp_path):
    none = tmp_path / "no.env"
    assert ServerSettings.load({"load_on_demand": True}, environ={}, dotenv=none).models == ()
    named = ServerSettings.load({"load_on_demand": True, "models": ("a",)}, environ={}, dotenv=none)
    assert named.models == ("a",)
    env = {"GEMMACLI_LOAD_ON_DEMAND": "1", "GEMMACLI_MAX_LOADED": "2"}
    from_env = ServerSettings.load({}, environ=env, dotenv=none)
    assert (from_env.models, from_env.max_loaded) == ((), 2)
    assert ServerSettings.load({}, environ={}, dotenv=none).models == ("google/gemma-3-12b-it",)


def test_serve_flags_fail_before_listening(gemma_dir, minilm_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gemmacli.cli import app

    monkeypatch.chdir(tmp_path)  # no stray .env
    too_many = CliRunner().invoke(app, ["serve", "-m", "gemma-3-270m", "-m", "all-minilm-l6-v2", "--max-loaded", "1"])
    assert too_many.exit_code == 1 and "--max-loaded is 1" in too_many.stderr
    bad_memory = CliRunner().invoke(app, ["serve", "-m", "gemma-3-270m", "-q", "--max-memory", "gpu=1GiB"])
    assert bad_memory.exit_code == 1 and "--max-memory entry 'gpu=1GiB'" in bad_memory.stderr
    if importlib.util.find_spec("bitsandbytes") is None:
        int8 = CliRunner().invoke(app, ["serve", "-m", "gemma-3-270m", "-q", "--load-in-8bit"])
        assert int8.exit_code == 1 and "pip install bitsandbytes" in int8.stderr
