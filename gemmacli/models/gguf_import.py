"""GGUF files -> a bf16 Hugging Face folder, once, so later loads take a fraction of a second.

transformers dequantizes GGUF weights on every load (about a minute for Gemma 3 270M on two
cores); doing it once at import time and saving safetensors removes that cost for good.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from gemmacli.errors import GemmacliError

GGUF_MAGIC = b"GGUF"
Report = Callable[[str], None]


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return path.is_file() and f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def gemma3_chat_template() -> str:
    return files("gemmacli.models").joinpath("gemma3_chat_template.jinja").read_text()


def import_gguf(gguf_path: Path, out: Path, report: Report = lambda step: None) -> None:
    """Dequantize `gguf_path` into `out` (an empty folder) as bf16 safetensors + tokenizer + chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not is_gguf(gguf_path):
        raise GemmacliError(f"{gguf_path.name} is not a GGUF file (no GGUF header)")
    folder, name = str(gguf_path.parent), gguf_path.name
    report("reading the tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        report("dequantizing the weights")
        # transformers dequantizes fastest into float32; the result is cast to bf16 below.
        with _tensor_progress(getattr(report, "tqdm_class", None)):
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as exc:  # architecture or quant type transformers lacks
        raise GemmacliError(f"transformers cannot read {name}: {exc}") from None

    report("saving bf16 safetensors")
    model = model.to(torch.bfloat16)
    model.hf_quantizer = None  # the weights are dense now: save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _set_generation_config(model, tokenizer)
    model.save_pretrained(out)

    if tokenizer.chat_template is None and model.config.model_type.startswith("gemma3"):
        tokenizer.chat_template = gemma3_chat_template()
    tokenizer.save_pretrained(out)
    # save_pretrained writes tokenizer.json pretty-printed (33 MB for Gemma); compact is 14 MB and loads faster.
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"), pretty=False)
    _drop_load_flags(out / "tokenizer_config.json")


@contextlib.contextmanager
def _tensor_progress(tqdm_class):
    """Show transformers' per-tensor dequantization bar (the minute-long step) in the caller's display."""
    if tqdm_class is None:
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    gguf_utils.tqdm = tqdm_class
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _set_generation_config(model, tokenizer) -> None:
    """GGUF carries no generation config: stop on <eos> and, for Gemma, on <end_of_turn> like the -it models."""
    from transformers import GenerationConfig

    eos = [tokenizer.eos_token_id]
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        eos.append(end_of_turn)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )


def _drop_load_flags(path: Path) -> None:
    """save_pretrained copies load-time flags into tokenizer_config.json; they would leak into later loads."""
    config = json.loads(path.read_text())
    for key in ("is_local", "local_files_only", "gguf_file"):
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
