"""Import a CTranslate2 (faster-whisper) Whisper folder as a transformers WhisperForConditionalGeneration folder.

The source holds model.bin (CTranslate2 binary, version 6), config.json (suppressed tokens, alignment
heads) and tokenizer.json (the HF fast tokenizer). The weights are mapped back to transformers names
by inverting ctranslate2/converters/transformers.py (WhisperLoader); greedy decoding of the result
matches CTranslate2 token for token. Only English-only models (vocab 51864) are accepted for now.

numpy is cheap; torch and transformers are imported inside functions.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gemmacli.errors import GemmacliError
from gemmacli.models.ct2_format import BINARY_VERSION, read_header, read_variables

if TYPE_CHECKING:
    import numpy as np
    import torch

SOURCE_FILES = ("model.bin", "config.json", "tokenizer.json")
SPEC_NAME = "WhisperSpec"
ENGLISH_VOCAB_SIZE = 51864
SAMPLING_RATE = 16_000


# --------------------------------------------------------------------------- weights


def count_layers(variables: dict, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    return len({m.group(1) for m in map(pattern.match, variables) if m})


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000) -> torch.Tensor:
    """Whisper's fixed encoder positions (same formula as OpenAI's and transformers' `sinusoids`)."""
    import torch

    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length).view(-1, 1) * inv_timescales.view(1, -1)
    return torch.cat([scaled_time.sin(), scaled_time.cos()], dim=1)  # (length, channels)


class _StateDictBuilder:
    """Inverse of CTranslate2's WhisperLoader: CT2 variable names -> transformers names, float32 tensors.

    Self-attention q,k,v are fused in linear_0 (k has no bias, stored as zeros) and out_proj is linear_1;
    cross-attention q is linear_0, k,v are fused in linear_1 and out_proj is linear_2.
    """

    def __init__(self, variables: dict[str, np.ndarray]):
        self.variables = variables
        self.d_model = variables["decoder/embeddings/weight"].shape[1]
        self.sd: dict[str, torch.Tensor] = {}

    def tensor(self, name: str) -> torch.Tensor:
        import numpy as np
        import torch

        if name not in self.variables:
            raise GemmacliError(f"the CTranslate2 Whisper model has no variable {name!r}")
        return torch.from_numpy(np.array(self.variables[name], dtype=np.float32))

    def linear(self, hf: str, ct: str) -> None:
        self.sd[f"{hf}.weight"] = self.tensor(f"{ct}/weight")
        if f"{ct}/bias" in self.variables:
            self.sd[f"{hf}.bias"] = self.tensor(f"{ct}/bias")

    def layer_norm(self, hf: str, ct: str) -> None:
        self.sd[f"{hf}.weight"] = self.tensor(f"{ct}/gamma")
        self.sd[f"{hf}.bias"] = self.tensor(f"{ct}/beta")

    def fused(self, hf: str, ct: str, names: tuple[str, ...]) -> None:
        import torch

        weights = self.tensor(f"{ct}/weight").split(self.d_model)
        biases = self.tensor(f"{ct}/bias").split(self.d_model)
        for name, weight, bias in zip(names, weights, biases, strict=True):
            self.sd[f"{hf}.{name}.weight"] = weight
            if name != "k_proj":
                self.sd[f"{hf}.{name}.bias"] = bias
            elif torch.count_nonzero(bias):  # transformers' k_proj has no bias to put it in
                raise GemmacliError(f"{ct}: unexpected non-zero k_proj bias; cannot convert")

    def attention(self, hf: str, ct: str, *, cross: bool) -> None:
        if cross:
            self.linear(f"{hf}.q_proj", f"{ct}/linear_0")
            self.fused(hf, f"{ct}/linear_1", ("k_proj", "v_proj"))
            self.linear(f"{hf}.out_proj", f"{ct}/linear_2")
        else:
            self.fused(hf, f"{ct}/linear_0", ("q_proj", "k_proj", "v_proj"))
            self.linear(f"{hf}.out_proj", f"{ct}/linear_1")

    def block(self, hf: str, ct: str, *, cross: bool) -> None:
        self.attention(f"{hf}.self_attn", f"{ct}/self_attention", cross=False)
        self.layer_norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        if cross:
            self.attention(f"{hf}.encoder_attn", f"{ct}/attention", cross=True)
            self.layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        self.linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        self.linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        self.layer_norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")

    def encoder(self) -> None:
        for conv in ("conv1", "conv2"):
            self.linear(f"model.encoder.{conv}", f"encoder/{conv}")
        # Stored in float16; recompute the exact float32 sinusoids, after checking they are the same thing.
        stored = self.tensor("encoder/position_encodings/encodings")
        positions = whisper_sinusoids(*stored.shape)
        if (positions - stored).abs().max() > 1e-3:  # float16 rounding is < 5e-4
            raise GemmacliError("encoder/position_encodings are not Whisper's sinusoids; refusing to convert")
        self.sd["model.encoder.embed_positions.weight"] = positions
        for i in range(count_layers(self.variables, "encoder")):
            self.block(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
        self.layer_norm("model.encoder.layer_norm", "encoder/layer_norm")

    def decoder(self) -> None:
        import torch

        self.sd["model.decoder.embed_tokens.weight"] = self.tensor("decoder/embeddings/weight")
        self.sd["model.decoder.embed_positions.weight"] = self.tensor("decoder/position_encodings/encodings")
        for i in range(count_layers(self.variables, "decoder")):
            self.block(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
        self.layer_norm("model.decoder.layer_norm", "decoder/layer_norm")
        # transformers ties proj_out to the token embeddings and gives it no bias.
        if not torch.equal(self.tensor("decoder/projection/weight"), self.sd["model.decoder.embed_tokens.weight"]):
            raise GemmacliError("decoder/projection differs from decoder/embeddings; untied output is not supported")
        if "decoder/projection/bias" in self.variables and torch.count_nonzero(self.tensor("decoder/projection/bias")):
            raise GemmacliError("decoder/projection has a non-zero bias; not supported")


def ct2_whisper_to_hf_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """CTranslate2 WhisperSpec variables -> WhisperForConditionalGeneration state dict (float32, proj_out tied)."""
    builder = _StateDictBuilder(variables)
    builder.encoder()
    builder.decoder()
    return builder.sd


# --------------------------------------------------------------------------- configs and tokenizer


def _special_ids(tokenizer_json: dict) -> dict[str, int]:
    ids = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    needed = ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>")
    missing = [name for name in needed if name not in ids]
    if missing:
        raise GemmacliError(f"tokenizer.json lacks the Whisper special tokens {', '.join(missing)}")
    return ids


def _model_config(variables: dict, ct2_config: dict, ids: dict[str, int]):
    from transformers import WhisperConfig

    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=count_layers(variables, "encoder"),
        decoder_layers=count_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=ids["<|startoftranscript|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        suppress_tokens=ct2_config["suppress_ids"],
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    return config


def _generation_config(config, ct2_config: dict, ids: dict[str, int]):
    """The decoder prompt <|startoftranscript|><|notimestamps|> comes from decoder_start_token_id +
    no_timestamps_token_id (transformers 5's replacement for forced_decoder_ids); alignment_heads
    make word timestamps possible."""
    from transformers import GenerationConfig

    return GenerationConfig(
        alignment_heads=ct2_config.get("alignment_heads"),
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        suppress_tokens=ct2_config["suppress_ids"],
        bos_token_id=config.bos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        is_multilingual=False,
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        return_timestamps=False,
    )


def _tokenizer(src: Path, tokenizer_json: dict, ids: dict[str, int], vocab_size: int):
    """WhisperTokenizer from the shipped tokenizer.json, plus the 1501 timestamp tokens <|0.00|> ... <|30.00|>.

    Declaring the special tokens puts the first timestamp right after <|notimestamps|>, and the
    timestamps make len(tokenizer) == vocab_size, as in openai/whisper-*.
    """
    from transformers import AddedToken, WhisperTokenizer

    specials = [t["content"] for t in sorted(tokenizer_json["added_tokens"], key=lambda t: t["id"])]
    settings = {
        "tokenizer_class": "WhisperTokenizer",
        **dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token"), "<|endoftext|>"),
        "add_prefix_space": False,
        "errors": "replace",
        "model_max_length": 1024,
        "additional_special_tokens": specials,
    }
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(src / "tokenizer.json", Path(tmp) / "tokenizer.json")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(settings))
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    no_timestamps = ids["<|notimestamps|>"]
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(vocab_size - no_timestamps - 1)]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in timestamps])
    if len(tokenizer) != vocab_size or tokenizer.convert_tokens_to_ids("<|0.00|>") != no_timestamps + 1:
        raise GemmacliError(f"tokenizer.json gives {len(tokenizer)} tokens, but the model has {vocab_size}")
    return tokenizer


def _save_processor(out: Path, tokenizer, num_mel_bins: int) -> None:
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    feature_extractor = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=SAMPLING_RATE)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    feature_extractor.save_pretrained(out)  # preprocessor_config.json, for AutoFeatureExtractor
    # save_pretrained copies load-time flags into the config; they mean nothing to the next loader.
    path = out / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    for key in ("is_local", "local_files_only"):
        settings.pop(key, None)
    path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    # OpenAI's British->American spelling map is not available offline; an empty map keeps
    # tokenizer.normalize() working without spelling changes.
    (out / "normalizer.json").write_text("{}\n")


def _save_model(out: Path, config, generation_config, state_dict: dict) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration

    # Built on the meta device and filled by assignment, so weights exist only once in memory.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to decoder.embed_tokens
    if missing or unexpected:
        raise GemmacliError(f"Whisper conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    model.generation_config = generation_config
    model.save_pretrained(out)


# --------------------------------------------------------------------------- public API


def is_ct2_whisper(path: Path) -> bool:
    """True for a folder with model.bin + config.json + tokenizer.json whose model.bin is a WhisperSpec."""
    path = Path(path)
    if not all((path / name).is_file() for name in SOURCE_FILES):
        return False
    try:
        return read_header(path / "model.bin") == (BINARY_VERSION, SPEC_NAME)
    except (OSError, GemmacliError):
        return False


def convert_ct2_whisper(src: Path, out: Path) -> None:
    """Write a WhisperForConditionalGeneration folder (float32 safetensors, configs, tokenizer, processor)
    converted from the CTranslate2 Whisper folder `src` into the existing empty folder `out`."""
    src, out = Path(src), Path(out)
    if not out.is_dir():
        raise GemmacliError(f"output folder {out} does not exist")
    missing = [name for name in SOURCE_FILES if not (src / name).is_file()]
    if missing:
        raise GemmacliError(f"{src} is not a CTranslate2 Whisper folder: {', '.join(missing)} missing")
    ct2_config = _read_json(src / "config.json")
    tokenizer_json = _read_json(src / "tokenizer.json")
    for key in ("suppress_ids", "suppress_ids_begin"):
        if key not in ct2_config:
            raise GemmacliError(f"{src / 'config.json'} has no {key!r}; it is not a faster-whisper config")
    variables = read_variables(src / "model.bin", SPEC_NAME)
    vocab_size = _check_supported(variables, src / "model.bin")
    ids = _special_ids(tokenizer_json)
    tokenizer = _tokenizer(src, tokenizer_json, ids, vocab_size)
    try:
        config = _model_config(variables, ct2_config, ids)
    except KeyError as exc:
        raise GemmacliError(f"{src / 'model.bin'} lacks the Whisper variable {exc}") from None
    state_dict = ct2_whisper_to_hf_state_dict(variables)
    del variables  # the float32 copies in state_dict are all we need from here
    _save_model(out, config, _generation_config(config, ct2_config, ids), state_dict)
    _save_processor(out, tokenizer, config.num_mel_bins)


def _check_supported(variables: dict[str, np.ndarray], path: Path) -> int:
    """The vocabulary size, once the model is known to be one we convert: English-only, not quantized."""
    embeddings = variables.get("decoder/embeddings/weight")
    if embeddings is None or embeddings.ndim != 2:
        raise GemmacliError(f"{path} has no decoder/embeddings matrix; it is not a Whisper model")
    if any(name.endswith("_scale") for name in variables):
        raise GemmacliError(
            "int8/int16-quantized CTranslate2 Whisper models cannot be imported; use a float16 or float32 conversion"
        )
    # Multilingual vocabularies (51865+) need language and task tokens wired into the configs.
    if embeddings.shape[0] != ENGLISH_VOCAB_SIZE:
        raise GemmacliError(
            "only English-only CTranslate2 Whisper models (such as tiny.en) can be imported for now; "
            f"this one has a multilingual vocabulary of {embeddings.shape[0]} tokens"
        )
    return embeddings.shape[0]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GemmacliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise GemmacliError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GemmacliError(f"{path} should hold a JSON object")
    return data
