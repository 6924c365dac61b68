"""Tiny random-weight Gemma 3n models, for the plumbing: the multimodal one and its text model alone.

The text model is built like the E-models are: sliding and full attention layers, AltUp (four streams), LAuReL,
per-layer inputs, activation sparsity on the first layers, the last layers reading the keys and values of
earlier ones (KV sharing), a final logit softcap. The tokenizer is Gemma 3's (from the imported gemma-3-270m),
grown to Gemma 3n's 262,400 tokens with its image and audio tokens at Gemma 3n's ids (the model embeds the ids
past 262,144 with its vision and audio embedders); the chat template is Gemma 3's turn format with image and
audio placeholders. Outputs are meaningless.

Gemma 3n's vision tower is timm's MobileNetV5: the multimodal model needs timm (and timm needs torchvision).
The text model alone (Gemma3nForCausalLM) needs neither.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support.gemma4_kit import spread_init
from support.testkit import ensure_built

KIT_VERSION = 2
SLIDING_WINDOW = 16  # small, so that short prompts already cross it
IMAGE_SIZE = 64
IMAGE_TOKENS = 4  # MobileNetV5's fusion adapter pooled to 2x2
AUDIO_TOKENS = 188  # soft tokens per clip, as on the real models: its 30 s window (the extractor cuts there)
VOCAB = 262_400  # 262,144 text tokens, then 128 for vision and 128 for audio
VISION_OFFSET, AUDIO_OFFSET = 262_144, 262_272
# Gemma 3n's ids for its media tokens; 255999 keeps Gemma 3's `<start_of_image>`, and 256000 (Gemma 3's
# `<end_of_image>`) is renamed `<start_of_audio>`, as in Gemma 3n's own tokenizer.
MEDIA_TOKENS = {
    "boi_token": ("<start_of_image>", 255_999),
    "boa_token": ("<start_of_audio>", 256_000),
    "eoi_token": ("<end_of_image>", VISION_OFFSET),
    "image_token": ("<image_soft_token>", VISION_OFFSET + 1),
    "eoa_token": ("<end_of_audio>", AUDIO_OFFSET),
    "audio_token": ("<audio_soft_token>", AUDIO_OFFSET + 1),
}
CHAT_TEMPLATE = """\
{{- bos_token -}}
{%- set ns = namespace(prefix='', messages=messages) -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}
    {%- set ns.prefix = (system if system is string else system[0]['text']) + '\\n\\n' -%}
    {%- set ns.messages = messages[1:] -%}
{%- endif -%}
{%- for message in ns.messages -%}
    {{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' -}}
    {{- ns.prefix if loop.first else '' -}}
    {%- if message['content'] is string -%}
        {{- message['content'] | trim -}}
    {%- else -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}{{- item['text'] | trim -}}
            {%- elif item['type'] == 'image' -%}{{- '<image_soft_token>' -}}
            {%- elif item['type'] == 'audio' -%}{{- '<audio_soft_token>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}
"""


def ensure_tiny_gemma3n(dest: Path, gemma_dir: Path, seed: int = 0) -> Path:
    """Build (once) a Gemma3nForConditionalGeneration: the text model below, a MobileNetV5 and a 2-layer conformer."""
    return ensure_built(dest, lambda out: _build(out, gemma_dir, seed), KIT_VERSION)


def ensure_tiny_gemma3n_text(dest: Path, gemma_dir: Path, seed: int = 0) -> Path:
    """Build (once) a Gemma3nForCausalLM: 4 layers, hidden 64, with a tokenizer and the chat template."""
    return ensure_built(dest, lambda out: _build_text(out, gemma_dir, seed), KIT_VERSION)


def _build(out: Path, gemma_dir: Path, seed: int) -> None:
    import torch
    from transformers import Gemma3nConfig, Gemma3nForConditionalGeneration

    tokenizer = _tokenizer(gemma_dir, out)
    ids = {name: token_id for name, (_, token_id) in MEDIA_TOKENS.items()}
    config = Gemma3nConfig(
        text_config=_text_config(tokenizer),
        vision_config=_vision_config(),
        audio_config=_audio_config(),
        audio_soft_tokens_per_image=AUDIO_TOKENS,
        vision_soft_tokens_per_image=IMAGE_TOKENS,
        **{name.replace("_token", "_token_id"): token_id for name, token_id in ids.items()},
    )
    torch.manual_seed(seed)
    model = Gemma3nForConditionalGeneration(config).eval()
    spread_init(model.model.language_model, seed)
    model.generation_config = _generation_config(tokenizer)
    model.to(torch.bfloat16).save_pretrained(out)
    _save_processor(out, tokenizer)


def _build_text(out: Path, gemma_dir: Path, seed: int) -> None:
    import torch
    from transformers import Gemma3nForCausalLM

    tokenizer = _tokenizer(gemma_dir, out)
    torch.manual_seed(seed)
    model = Gemma3nForCausalLM(_text_config(tokenizer)).eval()
    spread_init(model.model, seed)
    model.generation_config = _generation_config(tokenizer)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"), pretty=False)


def _tokenizer(gemma_dir: Path, scratch: Path):
    """Gemma 3's tokenizer with 256 tokens more, the media ones at Gemma 3n's ids (256000 renamed in place)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    renamed = MEDIA_TOKENS["boa_token"][0]
    old = tokenizer.convert_ids_to_tokens(256_000)
    data["model"]["vocab"][renamed] = data["model"]["vocab"].pop(old)
    for entry in data["added_tokens"]:
        if entry["id"] == 256_000:
            entry["content"] = renamed
    by_id = {token_id: token for token, token_id in MEDIA_TOKENS.values()}
    for token_id in range(len(tokenizer), VOCAB):
        content = by_id.get(token_id, f"<unused_media_{token_id - VISION_OFFSET}>")
        data["added_tokens"].append(_added(token_id, content))
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "tokenizer.json").write_text(json.dumps(data))
    shutil.copy(gemma_dir / "tokenizer_config.json", scratch)
    tokenizer = AutoTokenizer.from_pretrained(
        scratch, extra_special_tokens={name: token for name, (token, _) in MEDIA_TOKENS.items()}
    )
    assert len(tokenizer) == VOCAB and tokenizer.convert_tokens_to_ids(renamed) == 256_000
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _added(token_id: int, content: str) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _text_config(tokenizer):
    from transformers import Gemma3nTextConfig

    return Gemma3nTextConfig(
        vocab_size=VOCAB,
        vocab_size_per_layer_input=VISION_OFFSET,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        num_kv_shared_layers=2,  # layers 2 and 3 read the keys and values of layers 0 and 1
        activation_sparsity_pattern=[0.95, 0.95, 0.0, 0.0],
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        hidden_size_per_layer_input=8,
        laurel_rank=8,
        sliding_window=SLIDING_WINDOW,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vision_config():
    """MobileNetV5 at a tenth of its channels; its fusion adapter always ends in 2048 channels, pooled to 2x2."""
    from transformers import Gemma3nVisionConfig

    return Gemma3nVisionConfig(
        architecture="mobilenetv5_300m_enc",
        model_args={"channel_multiplier": 0.1, "msfa_output_resolution": 2},
        hidden_size=2048,
        vocab_offset=VISION_OFFSET,
        num_labels=0,
    )


def _audio_config():
    from transformers import Gemma3nAudioConfig

    return Gemma3nAudioConfig(
        hidden_size=32,
        vocab_offset=AUDIO_OFFSET,
        conf_num_hidden_layers=2,
        conf_num_attention_heads=2,
        sscp_conv_channel_size=[8, 4],
    )


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
        pad_token_id=tokenizer.pad_token_id,
    )


def _save_processor(out: Path, tokenizer) -> None:
    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    image_processor = SiglipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.0] * 3, image_std=[1.0] * 3
    )
    processor = Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        audio_seq_length=AUDIO_TOKENS,
        image_seq_length=IMAGE_TOKENS,
    )
    processor.save_pretrained(out)
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"), pretty=False)
