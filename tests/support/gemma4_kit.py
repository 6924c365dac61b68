"""A tiny random-weight Gemma 4 (Gemma4ForConditionalGeneration: text, vision and audio towers), for the plumbing.

Built like the E-models (E2B, E4B) are: sliding and full attention layers (the full ones with their own, wider
head_dim), per-layer inputs (PLE), the last layers reading the keys and values of earlier ones (KV sharing),
double-wide MLPs on those shared layers, a final logit softcap. Its tokenizer is Gemma 3's (from the imported
gemma-3-270m) with Gemma 4's special tokens added, and its chat template writes Gemma 4's turn format; its
outputs are meaningless.

Gemma 4's video processor needs torchvision even to be built: where torchvision is missing, the folder gets
its settings written by hand (as on the real checkpoints) and the processor loads without it (see
gemmacli/runners/processors.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from support.testkit import ensure_built

KIT_VERSION = 4
SLIDING_WINDOW = 16  # small, so that short prompts already cross it
MAX_SOFT_TOKENS = 70  # image tokens at most: the smallest budget Gemma 4's image processor takes
VIDEO = {"max_soft_tokens": MAX_SOFT_TOKENS, "num_frames": 4}  # frames sampled per video (32 by default)
SPECIAL_TOKENS = {  # Gemma 4's names (its tokenizer_config.json); the processor reads the first six
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "sot_token": "<|turn>",
    "eot_token": "<turn|>",
    "soc_token": "<|channel>",
    "eoc_token": "<channel|>",
    "think_token": "<|think|>",
    "escape_token": '<|"|>',
    "str_token": "<|tool_response>",
    "etr_token": "<tool_response|>",
    "stc_token": "<|tool_call>",
    "etc_token": "<tool_call|>",
    "std_token": "<|tool>",
    "etd_token": "<tool|>",
}
VIDEO_TOKEN = "<|video|>"  # Gemma4Processor adds it itself when missing: added first, it is in the vocabulary

# Gemma 4's turn format: a system turn (thinking switch, tool declarations), `<|turn>user` / `<|turn>model` turns
# closed by `<turn|>`, one placeholder per image, clip or video that the processor expands into its soft tokens.
# Calls and their results are written in Gemma's notation inside the model's turn, which stays open after them.
CHAT_TEMPLATE = """\
{%- macro notation(value) -%}
    {%- if value is string -%}{{- '<|"|>' + value + '<|"|>' -}}
    {%- elif value is boolean -%}{{- 'true' if value else 'false' -}}
    {%- elif value is none -%}{{- 'null' -}}
    {%- elif value is mapping -%}{{- '{' -}}
        {%- for key, item in value | dictsort -%}{{- key + ':' + notation(item) -}}{{- ',' if not loop.last -}}
        {%- endfor -%}{{- '}' -}}
    {%- elif value is sequence -%}{{- '[' -}}
        {%- for item in value -%}{{- notation(item) -}}{{- ',' if not loop.last -}}{%- endfor -%}{{- ']' -}}
    {%- else -%}{{- value -}}
    {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set ns = namespace(messages=messages, open_turn=false) -%}
{%- set think = enable_thinking is defined and enable_thinking -%}
{%- if think or tools or (messages and messages[0]['role'] in ['system', 'developer']) -%}
    {{- '<|turn>system\\n' + ('<|think|>' if think else '') -}}
    {%- if messages[0]['role'] in ['system', 'developer'] -%}
        {%- set system = messages[0]['content'] -%}
        {{- (system if system is string else system[0]['text']) | trim -}}
        {%- set ns.messages = messages[1:] -%}
    {%- endif -%}
    {%- for tool in tools or [] -%}
        {%- set function = tool['function'] -%}
        {{- '<|tool>declaration:' + function['name'] + '{description:' + notation(function['description'] or '') -}}
        {{- ',parameters:' + notation(function['parameters']) + '}<tool|>' -}}
    {%- endfor -%}
    {{- '<turn|>\\n' -}}
{%- endif -%}
{%- for message in ns.messages -%}
    {%- if message['role'] == 'tool' -%}
        {{- '<|tool_response>response:' + (message['name'] or 'unknown') + '{value:' + notation(message['content']) -}}
        {{- '}<tool_response|>' -}}
    {%- else -%}
        {%- if ns.open_turn -%}{{- '<turn|>\\n' -}}{%- endif -%}
        {{- '<|turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' -}}
        {%- if message['content'] is string -%}
            {{- message['content'] | trim -}}
        {%- elif message['content'] -%}
            {%- for item in message['content'] -%}
                {%- if item['type'] == 'text' -%}{{- item['text'] | trim -}}
                {%- elif item['type'] == 'image' -%}{{- '<|image|>' -}}
                {%- elif item['type'] == 'audio' -%}{{- '<|audio|>' -}}
                {%- elif item['type'] == 'video' -%}{{- '<|video|>' -}}
                {%- endif -%}
            {%- endfor -%}
        {%- endif -%}
        {%- for call in message['tool_calls'] or [] -%}
            {{- '<|tool_call>call:' + call['function']['name'] + notation(call['function']['arguments']) -}}
            {{- '<tool_call|>' -}}
        {%- endfor -%}
        {%- set ns.open_turn = true -%}
        {%- if not message['tool_calls'] -%}{{- '<turn|>\\n' -}}{%- set ns.open_turn = false -%}{%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and not ns.open_turn -%}{{- '<|turn>model\\n' -}}{%- endif -%}
"""


def ensure_tiny_gemma4(dest: Path, gemma_dir: Path, seed: int = 0, moe: bool = False) -> Path:
    """Build (once) a Gemma4ForConditionalGeneration with a 4-layer text model and 2-layer vision and audio towers;
    `moe`: shaped like 26B A4B instead, mixture-of-experts blocks and no audio tower."""
    return ensure_built(dest, lambda out: _build(out, gemma_dir, seed, moe), KIT_VERSION)


def _build(out: Path, gemma_dir: Path, seed: int, moe: bool = False) -> None:
    import torch
    from transformers import Gemma4ForConditionalGeneration

    tokenizer = _tokenizer(gemma_dir)
    config = _config(tokenizer, moe)
    torch.manual_seed(seed)
    model = Gemma4ForConditionalGeneration(config).eval()
    spread_init(model.model.language_model, seed)
    model = model.to(torch.bfloat16)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(out)
    _save_processor(out, tokenizer)


def _tokenizer(gemma_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_dir, extra_special_tokens=SPECIAL_TOKENS)
    tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _config(tokenizer, moe: bool = False):
    from transformers import Gemma4AudioConfig, Gemma4Config, Gemma4TextConfig, Gemma4VisionConfig

    ids = {name: tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[name]) for name in list(SPECIAL_TOKENS)[:6]}
    text = Gemma4TextConfig(
        vocab_size=len(tokenizer),
        vocab_size_per_layer_input=len(tokenizer),  # the added tokens have per-layer embeddings too
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        num_kv_shared_layers=2,  # layers 2 and 3 read the keys and values of layers 0 and 1
        use_double_wide_mlp=True,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        global_head_dim=32,  # the full-attention layers' own head_dim, as on the real checkpoints
        hidden_size_per_layer_input=8,
        sliding_window=SLIDING_WINDOW,
        final_logit_softcapping=30.0,
        max_position_embeddings=8192,
        # 26B A4B's layers: 4 experts here, 2 routed to per token, beside the dense MLP
        **(dict(enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32) if moe else {}),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = Gemma4VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        position_embedding_size=64,
    )
    audio = Gemma4AudioConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        subsampling_conv_channels=[128, 4],  # the first must be the 128 mel bins (its projection assumes it)
        output_proj_dims=32,
    )
    return Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=None if moe else audio,
        boi_token_id=ids["boi_token"],
        eoi_token_id=ids["eoi_token"],
        image_token_id=ids["image_token"],
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        boa_token_id=ids["boa_token"],
        eoa_token_index=ids["eoa_token"],
        audio_token_id=ids["audio_token"],
    )


def spread_init(language_model, seed: int) -> None:
    """At transformers' init (std 0.02) a 64-wide model gives every prompt nearly the same logits, ties within
    float32 rounding. Embeddings of unit norm and linears of std 2/sqrt(fan_in) make prompts continue differently,
    each with a clear winner, so that comparing greedy token streams means something."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    hidden = language_model.config.hidden_size
    with torch.no_grad():
        for module in language_model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / hidden**0.5)
            elif isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 2 / module.in_features**0.5)


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["eot_token"])],
        pad_token_id=tokenizer.pad_token_id,
    )


def _save_processor(out: Path, tokenizer) -> None:
    """Processor, image processor, feature extractor, video processor settings, tokenizer and template."""
    from transformers import Gemma4AudioFeatureExtractor, Gemma4Processor
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil
    from transformers.utils import is_torchvision_available

    image_processor = Gemma4ImageProcessorPil(max_soft_tokens=MAX_SOFT_TOKENS)
    feature_extractor = Gemma4AudioFeatureExtractor()
    if is_torchvision_available():
        from transformers import Gemma4VideoProcessor

        processor = Gemma4Processor(
            feature_extractor=feature_extractor,
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=Gemma4VideoProcessor(**VIDEO),
            chat_template=CHAT_TEMPLATE,
            image_seq_length=MAX_SOFT_TOKENS,
        )
        processor.save_pretrained(out)
    else:  # what save_pretrained writes, the video processor's settings by hand
        tokenizer.save_pretrained(out)
        (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
        config = {
            "processor_class": "Gemma4Processor",
            "image_seq_length": MAX_SOFT_TOKENS,
            "image_processor": json.loads(image_processor.to_json_string()),
            "feature_extractor": json.loads(feature_extractor.to_json_string()),
            "video_processor": {"video_processor_type": "Gemma4VideoProcessor", **VIDEO},
        }
        (out / "processor_config.json").write_text(json.dumps(config, indent=2))
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"), pretty=False)
