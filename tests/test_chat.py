"""ChatRunner on the real Gemma 3 270M (bf16) and the tiny random Gemma 3 vision model."""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import replace

import pytest

from gemmacli.errors import ContextLengthError, InvalidParamError, UnsupportedInputError
from gemmacli.media import load_image
from gemmacli.types import GenParams, Message, TextPart

pytestmark = pytest.mark.slow
GREEDY = GenParams(temperature=0.0)


def test_base_model_continues_the_weekdays(chat_runner):
    result = chat_runner.complete_text("Monday, Tuesday, Wednesday,", GenParams(temperature=0, max_tokens=4))
    assert result.text.strip().startswith("Thursday")
    assert result.usage.prompt_tokens == 7


@pytest.mark.parametrize("max_tokens", [1, 16])
def test_greedy_equals_model_generate_token_for_token(chat_runner, max_tokens):
    prompt = "The capital of France is"
    ours = chat_runner.complete_text(prompt, GenParams(temperature=0, max_tokens=max_tokens))
    inputs = chat_runner.tokenizer(prompt, return_tensors="pt")
    out = chat_runner.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
    theirs = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert list(ours.token_ids) == [t for t in theirs if t not in chat_runner.eos_ids]
    assert ours.text == chat_runner.tokenizer.decode(theirs, skip_special_tokens=True)


def test_chat_template_path_equals_generate(chat_runner):
    messages = [Message("system", "Be brief."), Message("user", "Name three colours.")]
    prompt = chat_runner.encode_chat(messages)
    text = chat_runner.tokenizer.decode(prompt.input_ids[0])
    assert text.startswith("<bos><start_of_turn>user\nBe brief.\n\nName three colours.<end_of_turn>\n")
    assert text.endswith("<start_of_turn>model\n")
    ours = chat_runner.complete(messages, GenParams(temperature=0, max_tokens=12))
    out = chat_runner.model.generate(prompt.input_ids, max_new_tokens=12, do_sample=False)
    theirs = [t for t in out[0, prompt.length :].tolist() if t not in chat_runner.eos_ids]
    assert list(ours.token_ids) == theirs


def test_chat_streams_several_deltas_then_one_final(chat_runner):
    deltas = list(
        chat_runner.stream([Message("user", "Count from one to ten.")], GenParams(temperature=0, max_tokens=12))
    )
    assert len([d for d in deltas if d.text]) >= 3
    assert all(d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert final.finish_reason in ("stop", "length") and final.usage.completion_tokens <= 12


def test_stops_at_max_tokens(chat_runner):
    result = chat_runner.complete_text("Monday, Tuesday, Wednesday,", GenParams(temperature=0, max_tokens=5))
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 5


def test_stop_string_cuts_the_text_and_finishes_with_stop(chat_runner):
    result = chat_runner.complete_text(
        "Monday, Tuesday, Wednesday,", GenParams(temperature=0, max_tokens=20, stop=("Sat",))
    )
    assert result.finish_reason == "stop"
    assert "Friday" in result.text and "Sat" not in result.text
    assert result.text.rstrip().endswith(",")


def test_seeded_sampling_repeats_and_seeds_differ(chat_runner):
    params = GenParams(temperature=1.0, top_k=64, top_p=0.95, min_p=0.01, max_tokens=12)
    first = chat_runner.complete_text("Once upon a time", GenParams(seed=7).with_defaults(params))
    again = chat_runner.complete_text("Once upon a time", GenParams(seed=7).with_defaults(params))
    others = {
        chat_runner.complete_text("Once upon a time", GenParams(seed=s).with_defaults(params)).text for s in (1, 2, 3)
    }
    assert first.token_ids == again.token_ids
    assert len(others | {first.text}) > 1


def test_penalties_change_a_repetitive_greedy_output(chat_runner):
    plain = chat_runner.complete_text("Monday, Tuesday, Wednesday,", GenParams(temperature=0, max_tokens=24))
    penalised = chat_runner.complete_text(
        "Monday, Tuesday, Wednesday,", GenParams(temperature=0, max_tokens=24, frequency_penalty=2.0)
    )
    assert plain.text.count("Monday") > penalised.text.count("Monday")


def test_model_defaults_come_from_the_catalog(chat_runner):
    assert (chat_runner.defaults.temperature, chat_runner.defaults.top_p) == (1.0, 0.95)
    assert (chat_runner.defaults.top_k, chat_runner.defaults.min_p) == (64, 0.01)


def test_prompt_longer_than_the_context_is_refused(chat_runner):
    with pytest.raises(InvalidParamError, match="at most"):
        chat_runner.complete_text("word " * (chat_runner.context_length + 10), GREEDY)


def test_prompt_plus_max_tokens_over_the_context_is_refused_not_clamped(chat_runner):
    with pytest.raises(ContextLengthError, match="lower max_tokens") as err:
        chat_runner.complete_text("Monday,", GenParams(temperature=0, max_tokens=chat_runner.context_length))
    assert err.value.param == "max_tokens" and err.value.code == "context_length_exceeded"


def test_a_default_max_tokens_is_clamped_to_the_room_left(chat_runner, monkeypatch):
    prompt = chat_runner.encode_text("Monday,")
    model_defaults = replace(chat_runner.defaults, max_tokens=chat_runner.context_length * 2)  # e.g. the catalog's
    monkeypatch.setattr(chat_runner.decoder, "defaults", model_defaults)
    seq = chat_runner.decoder.insert(prompt, GenParams(temperature=0))
    chat_runner.decoder.cancel(seq)
    chat_runner.decoder.step()
    assert seq.max_new_tokens == chat_runner.context_length - prompt.length


@pytest.mark.parametrize("field,value", [("temperature", -1.0), ("top_p", 1.5), ("top_k", -3), ("max_tokens", 0)])
def test_out_of_range_parameters_name_the_field(chat_runner, field, value):
    with pytest.raises(InvalidParamError) as err:
        chat_runner.complete_text("hi", GenParams(**{field: value}))
    assert err.value.param == field


def test_images_to_a_text_only_model_are_refused(chat_runner, images):
    image = load_image(images / "red_circle_64.png")
    with pytest.raises(UnsupportedInputError, match="text-only"):
        chat_runner.complete([Message("user", (image, TextPart("describe")))], GREEDY)


def test_a_stream_closed_early_leaves_the_decoder(chat_runner):
    stream = chat_runner.stream_text("Monday, Tuesday,", GenParams(temperature=0, max_tokens=50))
    next(stream)
    stream.close()
    assert chat_runner.decoder.idle and not len(chat_runner.decoder)
    assert chat_runner.complete_text("One, two,", GenParams(temperature=0, max_tokens=2)).usage.completion_tokens == 2


def test_logit_bias_bans_and_forces_tokens(chat_runner):
    prompt, greedy = "Monday, Tuesday, Wednesday,", GenParams(temperature=0, max_tokens=3)
    plain = chat_runner.complete_text(prompt, greedy)
    banned = chat_runner.complete_text(prompt, replace(greedy, logit_bias=((plain.token_ids[0], -100.0),)))
    assert banned.token_ids[0] != plain.token_ids[0]
    forced_id = chat_runner.tokenizer.convert_tokens_to_ids("▁banana")
    forced = chat_runner.complete_text(prompt, replace(greedy, logit_bias=((forced_id, 100.0),)))
    assert set(forced.token_ids) == {forced_id}


def test_logit_bias_outside_the_vocabulary_names_the_field(chat_runner):
    with pytest.raises(InvalidParamError, match="between 0 and") as err:
        chat_runner.complete_text("hi", GenParams(logit_bias=((10**9, 1.0),)))
    assert err.value.param == "logit_bias"


def test_image_chat_counts_image_tokens_and_honours_max_tokens(vision_runner, images):
    image = load_image(images / "red_circle_640x480.jpg")
    messages = [Message("user", (image, TextPart("describe")))]
    result = vision_runner.complete(messages, GenParams(temperature=0, max_tokens=5))
    assert result.usage.image_tokens == 4
    assert result.usage.completion_tokens <= 5
    prompt = vision_runner.encode_chat(messages)
    out = vision_runner.model.generate(
        input_ids=prompt.input_ids, **prompt.extra_inputs, max_new_tokens=5, do_sample=False
    )
    assert list(result.token_ids) == [t for t in out[0, prompt.length :].tolist() if t not in vision_runner.eos_ids]


def test_two_images_give_twice_the_image_tokens(vision_runner, images):
    image = load_image(images / "red_circle_64.png")
    messages = [Message("user", (image, image, TextPart("compare")))]
    assert vision_runner.encode_chat(messages).image_tokens == 8


def test_roles_that_do_not_alternate_are_a_clear_error(chat_runner):
    with pytest.raises(InvalidParamError, match="alternate"):
        chat_runner.encode_chat([Message("user", "a"), Message("user", "b")])


def test_generation_raises_no_deprecation_or_future_warning(chat_runner, vision_runner, images):
    """gemmacli's own calls into transformers use the current argument names (transformers 5.24 renamed
    past_key_values to cache, and warns on the old name until 5.40)."""
    image = load_image(images / "red_circle_64.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chat_runner.complete([Message("user", "Name a colour.")], GenParams(temperature=0, max_tokens=3))
        chat_runner.complete_text("Monday,", GenParams(temperature=0.7, seed=1, max_tokens=3, frequency_penalty=1.0))
        vision_runner.complete([Message("user", (image, TextPart("describe")))], GenParams(max_tokens=3))
    deprecated = [w for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)]
    assert not deprecated, [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in deprecated]


def test_gemmacli_chat_prints_no_warnings(gemma_dir, tmp_path):
    show_warnings = ["-W", "always::DeprecationWarning", "-W", "always::FutureWarning"]
    chat = ["chat", "--raw", "Monday, Tuesday,", "--temperature", "0", "--max-tokens", "3"]
    command = [sys.executable, *show_warnings, "-m", "gemmacli", *chat]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn" not in done.stderr.lower(), done.stderr
    assert done.stdout.strip()
