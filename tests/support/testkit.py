"""Test models that no package ships: a tiny random-weight Gemma 3 vision model.

Built from the real Gemma 3 tokenizer (from the imported gemma-3-270m) so prompts tokenize exactly as
on the real multimodal checkpoints; its outputs are meaningless, it exists to test the plumbing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from gemmacli.models.gguf_import import gemma3_chat_template

IMAGE_SIZE = 64
PATCH_SIZE = 16
TOKENS_PER_IMAGE = 4  # 4x4 patches avg-pooled to 2x2 = 4 image tokens
KIT_VERSION = 1


def ensure_tiny_gemma3_vision(dest: Path, gemma_dir: Path, seed: int = 0) -> Path:
    """Build (once) a Gemma3ForConditionalGeneration with a 2-layer text model and a 2-layer SigLIP tower."""
    return ensure_built(dest, lambda out: _build(out, gemma_dir, seed), KIT_VERSION)


def ensure_built(dest: Path, build: Callable[[Path], None], version: int) -> Path:
    """`dest`, built by `build` into a staging folder and moved in whole, unless this version is there already."""
    marker = dest / ".testkit.json"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == version:
        return dest
    tmp = dest.parent / f".staging-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    (tmp / ".testkit.json").write_text(json.dumps({"version": version}))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _build(out: Path, gemma_dir: Path, seed: int) -> None:
    import torch
    from transformers import (
        AutoTokenizer,
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        GenerationConfig,
        SiglipVisionConfig,
    )

    tokenizer = AutoTokenizer.from_pretrained(
        gemma_dir,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    boi, eoi, image = tokenizer.convert_tokens_to_ids(["<start_of_image>", "<end_of_image>", "<image_soft_token>"])
    template = gemma3_chat_template()
    tokenizer.chat_template = template
    processor = Gemma3Processor(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        chat_template=template,
        image_seq_length=TOKENS_PER_IMAGE,
    )
    text = Gemma3TextConfig(
        vocab_size=262_208,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        layer_types=["sliding_attention", "full_attention"],
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        sliding_window=512,
        max_position_embeddings=32_768,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        vision_use_head=False,
        layer_norm_eps=1e-6,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=TOKENS_PER_IMAGE,
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=image,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)  # preprocessor_config.json, for AutoImageProcessor
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"), pretty=False)


def _image_processor():
    """The torchvision backend when torchvision is installed, else the PIL one; both load as Gemma3ImageProcessor."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import Gemma3ImageProcessor as cls
    else:
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil as cls
    return cls(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        image_seq_length=TOKENS_PER_IMAGE,
    )
