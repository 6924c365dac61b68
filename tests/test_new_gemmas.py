"""Gemma 4 and Gemma 3n through the chat runner, on tiny random-weight models (tests/support/gemma4_kit.py and
gemma3n_kit.py): a chat with text, with an image and with an audio clip; and, the core of it, greedy sequences
that join and leave the decoder's batch decoding token for token as `model.generate` alone.

Both architectures share keys and values across layers: their last layers have no cache of their own and read
the states an earlier layer computed in the same forward pass. Their sliding window is 16 positions here, so
that short prompts already cross it. The multimodal Gemma 3n needs timm (its vision tower); without it its
tests skip, and the text model alone (Gemma3nForCausalLM, the same decoder) carries the batch tests.
"""

from __future__ import annotations

import pytest
import torch
from support.helpers import speech

from gemmacli.device import placement
from gemmacli.errors import ModelUnavailableError, UnsupportedInputError
from gemmacli.media import load_image
from gemmacli.types import GenParams, Message, TextPart

pytestmark = pytest.mark.slow
PROMPTS = [
    "Monday, Tuesday, Wednesday,",
    "The capital of France is",
    "One, two, three, four, five,",
    " ".join(["The old lighthouse keeper climbed the stairs again."] * 4) + " At the top he saw",  # > 16 tokens
    "Water boils at a temperature of",
]
NEW_TOKENS = 12
TURNS = {  # how each template opens a user turn and the model's answer
    "tiny-gemma4": ("<|turn>user\n", "<turn|>\n<|turn>model\n"),
    "tiny-gemma4-moe": ("<|turn>user\n", "<turn|>\n<|turn>model\n"),
    "tiny-gemma3n": ("<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n"),
    "tiny-gemma3n-text": ("<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n"),
}


def _runner(folder, name):
    from gemmacli.runners.chat import ChatRunner

    return ChatRunner.load(folder, placement("cpu", "float32"), name=name)


@pytest.fixture(scope="module")
def gemma4(gemma4_dir):
    return _runner(gemma4_dir, "tiny-gemma4")


@pytest.fixture(scope="module")
def gemma3n(gemma3n_dir):
    return _runner(gemma3n_dir, "tiny-gemma3n")


@pytest.fixture(scope="module")
def gemma3n_text(gemma3n_text_dir):
    return _runner(gemma3n_text_dir, "tiny-gemma3n-text")


@pytest.fixture(params=["gemma4", "gemma3n"])
def multimodal(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def gemma4_moe(gemma4_moe_dir):
    return _runner(gemma4_moe_dir, "tiny-gemma4-moe")


@pytest.fixture(params=["gemma4", "gemma4_moe", "gemma3n_text", "gemma3n"])
def any_runner(request):
    return request.getfixturevalue(request.param)


def greedy(tokens: int = 6) -> GenParams:
    return GenParams(temperature=0.0, max_tokens=tokens)


def user(*parts) -> list[Message]:
    return [Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))]


def _count(prompt, token_id: int) -> int:
    return int((prompt.input_ids == token_id).sum())


# -- chat: text, an image, an audio clip


def test_a_text_chat_renders_the_models_turns_and_answers(multimodal):
    runner = multimodal
    prompt = runner.encode_chat([Message("user", "Say hello")])
    opening, answer = TURNS[runner.name]
    assert runner.tokenizer.decode(prompt.input_ids[0]) == f"<bos>{opening}Say hello{answer}"
    result = runner.complete([Message("user", "Say hello")], greedy())
    assert result.token_ids and result.usage.prompt_tokens == prompt.length
    assert result.finish_reason in ("stop", "length")


def test_an_image_becomes_its_soft_tokens_and_changes_the_answer(multimodal, images):
    runner = multimodal
    circle, photo = load_image(images / "red_circle_64.png"), load_image(images / "red_circle_640x480.jpg")
    prompt = runner.encode_chat(user(circle, "What is this?"))
    assert prompt.image_tokens == _count(prompt, runner.model.config.image_token_id) > 0
    assert "pixel_values" in prompt.extra_inputs
    first = runner.complete(user(circle, "What is this?"), greedy())
    assert first.usage.image_tokens == prompt.image_tokens
    assert runner.complete(user(photo, "What is this?"), greedy()).token_ids != first.token_ids


def test_an_audio_clip_becomes_its_soft_tokens_and_changes_the_answer(multimodal):
    runner = multimodal
    (fox, _), (hello, _) = speech("quick_brown_fox"), speech("hello_world")
    prompt = runner.encode_chat(user(fox, "Transcribe this."))
    assert _count(prompt, runner.model.config.audio_token_id) > 0
    assert {"input_features", "input_features_mask"} <= prompt.extra_inputs.keys()
    first = runner.complete(user(fox, "Transcribe this."), greedy())
    assert first.token_ids and first.usage.image_tokens == 0
    assert runner.complete(user(hello, "Transcribe this."), greedy()).token_ids != first.token_ids


def test_a_model_without_an_audio_tower_still_refuses_audio(gemma3n_text):
    fox, _ = speech("quick_brown_fox")
    with pytest.raises(UnsupportedInputError, match="cannot read audio"):
        gemma3n_text.encode_chat(user(fox, "Transcribe this."))


def test_gemma4_reads_video_without_torchvision_through_its_image_processor(gemma4):
    from transformers.utils import is_torchvision_available

    from gemmacli.runners.processors import FramesAsImages

    if not is_torchvision_available():  # with it, the model's own video processor is there
        assert isinstance(gemma4.processor.video_processor, FramesAsImages)
    assert "video" in gemma4.modalities and gemma4.video_frames == 4  # the kit's num_frames


def test_a_video_decodes_as_generate_does_with_a_timestamp_per_frame(gemma4):
    """Frames come sampled from the clip (media_video.py), thinned to the model's num_frames, and each gets its
    time in the prompt; the decoder's greedy tokens are generate's on the same inputs."""
    from support.videos import make_clip

    from gemmacli.media_video import decode_video
    from gemmacli.runners.chat import collect

    video = decode_video(make_clip(frames=96, fps=24), 32)  # 4 s: 32 frames kept, 4 read
    prompt = gemma4.encode_chat(user(video, "What happens?"))
    text = gemma4.tokenizer.decode(prompt.input_ids[0])
    assert [text.count(f"00:0{s} <|image>") for s in range(4)] == [1, 1, 1, 1]  # frames 0, 24, 48, 72
    assert prompt.extra_inputs["pixel_values_videos"].shape[0] == 4
    result = collect(gemma4.generate(prompt, greedy()))
    out = gemma4.model.generate(input_ids=prompt.input_ids, **prompt.extra_inputs, max_new_tokens=6, do_sample=False)
    generated = out[0, prompt.input_ids.shape[1] :].tolist()
    assert list(result.token_ids) == [t for t in generated if t not in gemma4.eos_ids]


def test_video_to_a_model_without_video(gemma3n_text):
    from support.videos import make_clip

    from gemmacli.media_video import decode_video

    with pytest.raises(UnsupportedInputError, match="cannot read video"):
        gemma3n_text.encode_chat(user(decode_video(make_clip(), 4), "What happens?"))


# -- batched decoding: every sequence as if alone


def alone(runner, prompt: str, tokens: int = NEW_TOKENS) -> list[int]:
    """Greedy `generate` on the prompt alone, after checking that no step is a near-tie (where float rounding
    could legitimately pick the other token)."""
    ids = runner.tokenizer(prompt, return_tensors="pt")
    out = runner.model.generate(
        **ids, max_new_tokens=tokens, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    margins = [float(top[0] - top[1]) for top in (s[0].float().topk(2).values for s in out.scores)]
    assert min(margins) > 1e-3, "the reference itself is a near-tie: pick another prompt or seed"
    return out.sequences[0, ids["input_ids"].shape[1] :].tolist()


@pytest.fixture
def no_eos(any_runner):
    """Every sequence runs its full length, so that every step is compared."""
    eos, any_runner.decoder.eos_ids = any_runner.decoder.eos_ids, frozenset()
    yield any_runner
    any_runner.decoder.eos_ids = eos


def test_sequences_joining_and_leaving_decode_as_if_alone(no_eos):
    runner, decoder = no_eos, no_eos.decoder
    expected = [alone(runner, p) for p in PROMPTS]
    window = runner.model.config.get_text_config().sliding_window
    assert len(runner.tokenizer(PROMPTS[3])["input_ids"]) > window  # the sliding window is really crossed

    seqs, sizes = [], []
    join_at = {0: [0], 3: [1, 2], 5: [3], 9: [4]}  # step -> prompts that join before it
    for step in range(80):
        for i in join_at.get(step, []):
            seqs.append(decoder.insert(runner.encode_text(PROMPTS[i]), greedy(NEW_TOKENS)))
        decoder.step()
        sizes.append(len(decoder.running))
        if not len(decoder) and step > max(join_at):
            break
    assert [seq.error for seq in seqs] == [None] * len(PROMPTS)
    assert [seq.tokens for seq in seqs] == expected
    assert max(sizes) >= 3  # several sequences really decoded together


def test_n_sequences_of_one_prompt_share_its_prefill_and_decode_as_alone(no_eos):
    runner, decoder = no_eos, no_eos.decoder
    under_way = decoder.insert(runner.encode_text(PROMPTS[0]), greedy(NEW_TOKENS))
    decoder.step()  # the n rows join a batch already under way
    forked = decoder.fork(runner.encode_text(PROMPTS[3]), greedy(NEW_TOKENS), 3)  # past the sliding window
    while len(decoder):
        decoder.step()
    assert [seq.tokens for seq in forked] == [alone(runner, PROMPTS[3])] * 3
    assert under_way.tokens == alone(runner, PROMPTS[0])


def test_batched_logits_match_the_prompt_and_output_in_one_pass(no_eos):
    """The logits behind each batched token are those of one forward pass over prompt and output, within float32
    rounding: the cache holds what the model would have computed, not merely something that picks the same argmax."""
    runner, decoder = no_eos, no_eos.decoder
    params = GenParams(temperature=0.0, max_tokens=NEW_TOKENS, logprobs=1)
    seqs = [decoder.insert(runner.encode_text(p), params) for p in PROMPTS[2:4]]
    got = {seq: [] for seq in seqs}
    while len(decoder):
        for seq, deltas in decoder.step():
            got[seq] += [entry.logprob for delta in deltas for entry in delta.logprobs]
    for prompt, seq in zip(PROMPTS[2:4], seqs, strict=True):
        ids = runner.tokenizer(prompt, return_tensors="pt")["input_ids"]
        full = torch.cat([ids, torch.tensor([seq.tokens])], dim=1)  # (1, T + n)
        with torch.inference_mode():
            logits = runner.model(input_ids=full).logits[0, ids.shape[1] - 1 : -1].float()  # (n, V)
        expected = torch.log_softmax(logits, dim=-1)
        chosen = expected[torch.arange(len(seq.tokens)), torch.tensor(seq.tokens)]
        torch.testing.assert_close(torch.tensor(got[seq]), chosen, rtol=0, atol=1e-4)


def test_gemma4_thinking_is_turned_on_in_the_template_and_split_from_the_answer(gemma4):
    """enable_thinking puts <|think|> in the system turn; a reply that thinks (held to the channel's shape by a
    grammar, since random weights would not think on their own) has its thoughts apart, and counted."""
    from gemmacli.runners import grammar
    from gemmacli.runners.chat import collect

    messages = [Message("user", "Why is the sky blue?")]
    on = gemma4.tokenizer.decode(gemma4.encode_chat(messages, thinking=True).input_ids[0])
    off = gemma4.tokenizer.decode(gemma4.encode_chat(messages, thinking=False).input_ids[0])
    assert "<|think|>" in on and "<|think|>" not in off
    opens, closes = (gemma4.tokenizer.convert_tokens_to_ids(t) for t in ("<|channel>", "<channel|>"))
    shape = f'start: <[{opens}]> "thought\\n" /[a-z]{{2,8}}/ <[{closes}]> /[a-z]{{2,8}}/'
    params = GenParams(grammar=grammar.lark(shape, "test"), max_tokens=40, temperature=0)
    reply = collect(gemma4.stream(messages, params, thinking=True))
    assert reply.reasoning.isalpha() and reply.text.isalpha() and reply.finish_reason == "stop"
    assert "thought" not in reply.reasoning and reply.usage.reasoning_tokens >= 4


def test_gemma3n_without_timm_is_one_line_saying_what_to_install(cli, tmp_path):
    import importlib.util

    from support.helpers import assert_one_error_line
    from transformers import Gemma3nConfig

    from gemmacli.runners.chat import ChatRunner

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed: Gemma 3n's vision tower loads")
    Gemma3nConfig().save_pretrained(tmp_path)  # the config alone: the check comes before any weight is read
    with pytest.raises(ModelUnavailableError, match=r"needs timm.*pip install 'gemmacli\[gemma3n\]'"):
        ChatRunner.load(tmp_path, placement("cpu", "float32"), name="gemma-3n-e4b-it")
    from safetensors.torch import save_file

    save_file({"unused": torch.zeros(1)}, tmp_path / "model.safetensors")  # what the CLI looks for in a folder
    result = cli("chat", "-m", tmp_path, "hi", "-q")
    assert_one_error_line(result, r"vision tower needs timm, which is not installed: pip install")
