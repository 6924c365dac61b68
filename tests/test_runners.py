"""The runner protocol and the one task table: every runner speaks it, and loading, task detection and the
catalog all go through RUNNERS (no model is loaded here)."""

from __future__ import annotations

import inspect
import json

import pytest

from gemmacli.errors import GemmacliError
from gemmacli.models.resolve import detect_task
from gemmacli.runners import RUNNERS, Runner, detect, runner_class

PROTOCOL = ("detects", "load", "warm_up", "memory", "close")


@pytest.mark.parametrize("task", list(RUNNERS))
def test_every_runner_speaks_the_protocol(task):
    runner = RUNNERS[task]
    assert runner.task == task and isinstance(runner.cpu_bf16, bool)
    for name in PROTOCOL:
        assert callable(getattr(runner, name)), name
    for name in ("path", "placement", "name", "defaults"):  # what the loader passes
        assert name in inspect.signature(runner.load).parameters, name
    assert {n for n in dir(Runner) if not n.startswith("_")} <= {*PROTOCOL, "task", "cpu_bf16", "name"}


def test_an_unknown_task_is_an_error_not_a_fallback():
    assert runner_class("chat") is RUNNERS["chat"]
    with pytest.raises(GemmacliError, match=r"unknown task 'rerank': gemmacli runs embed, transcribe, chat"):
        runner_class("rerank")


CONFIGS = {
    "gemma 3 text": ({"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"]}, "chat"),
    "gemma 3 vision": ({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]}, "chat"),
    "a bare gemma model": ({"model_type": "gemma3", "architectures": ["Gemma3Model"]}, "chat"),
    "whisper": ({"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"]}, "transcribe"),
    "bert": ({"model_type": "bert", "architectures": ["BertModel"]}, "embed"),
    "an encoder by architecture": ({"model_type": "newmodel", "architectures": ["NewModel"]}, "embed"),
    "a vision transformer for images": ({"model_type": "vit", "architectures": ["ViTForImageClassification"]}, None),
}


@pytest.mark.parametrize("config,task", CONFIGS.values(), ids=CONFIGS.keys())
def test_task_detection_asks_the_table(tmp_path, config, task):
    assert detect(config, tmp_path) == task
    (tmp_path / "config.json").write_text(json.dumps(config))
    if task is None:
        with pytest.raises(GemmacliError, match=r"not a model for any task gemmacli runs \(embed, transcribe, chat\)"):
            detect_task(tmp_path)
    else:
        assert detect_task(tmp_path) == task


def test_a_sentence_transformers_folder_is_an_embedding_model_whatever_its_config(tmp_path):
    (tmp_path / "modules.json").write_text("[]")
    gemma = {"model_type": "gemma3_text", "architectures": ["Gemma3TextModel"]}  # EmbeddingGemma
    assert detect(gemma, tmp_path) == "embed"
    assert detect_task(tmp_path) == "embed"  # even without a config.json at the top


def test_the_catalog_takes_the_tasks_of_the_table(tmp_path):
    from gemmacli.models.catalog import Catalog

    extra = tmp_path / "catalog.toml"
    extra.write_text('[models."x"]\ntask = "rerank"\nhub = "org/x"\n')
    with pytest.raises(GemmacliError, match="task must be one of embed, transcribe, chat, not 'rerank'"):
        Catalog.load(extra)
