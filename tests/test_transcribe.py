"""TranscribeRunner: a fake pipeline at the runner's one seam, then the real whisper tiny.en on real speech."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support.helpers import SAMPLE_RATE, SPEECH, speech, word_error_rate

from gemmacli.device import Placement
from gemmacli.errors import GemmacliError, InvalidParamError, MediaError, UnsupportedInputError
from gemmacli.runners.transcribe import TranscribeRunner, split_windows
from gemmacli.types import AudioPart, TranscribeOptions

SILENCE_S = 8  # between sentences in the long recording


# --------------------------------------------------------------------------- fakes


class FakePipe:
    """Stands in for transformers' ASR pipeline: records each call, answers one output per window."""

    def __init__(self, reply=None, *, alignment_heads: bool = True):
        config = SimpleNamespace(alignment_heads=[[1, 0]]) if alignment_heads else SimpleNamespace()
        self.model = SimpleNamespace(generation_config=config, device="cpu")
        self.tokenizer = SimpleNamespace(encode=lambda text, add_special_tokens: [len(w) for w in text.split()])
        self.reply = reply or (lambda i, kwargs: {"text": f" window {i}."})
        self.calls: list[tuple[list[dict], int, dict]] = []

    def __call__(self, inputs: list[dict], batch_size: int, **kwargs):
        self.calls.append((inputs, batch_size, kwargs))
        return [self.reply(i, kwargs) for i in range(len(inputs))]


def fake_runner(*, english_only: bool = True, **kwargs) -> tuple[TranscribeRunner, FakePipe]:
    pipe = FakePipe(**kwargs)
    return TranscribeRunner(pipe, "fake-whisper", english_only=english_only), pipe


def seconds(n: float, value: float = 0.0) -> np.ndarray:
    return np.full(round(n * SAMPLE_RATE), value, np.float32)


def noise(n: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, round(n * SAMPLE_RATE)).astype(np.float32)


def assert_timeline(spans, duration: float) -> None:
    """Each span inside [0, duration], not ending before it starts, and none starting before the last ended."""
    previous_end = 0.0
    for span in spans:
        assert 0.0 <= previous_end <= span.start <= span.end <= duration + 1e-6, (span, previous_end)
        previous_end = span.end


# --------------------------------------------------------------------------- windows (pure numpy)


def test_short_audio_is_one_window():
    (window,) = split_windows(seconds(30))
    assert (window.start, window.end) == (0, 30 * SAMPLE_RATE)


def test_long_audio_is_cut_where_speech_pauses():
    # sound 0-22 s, pause 22-27, sound 27-50, pause 50-54, sound 54-75: each pause in the last 10 s of a window
    samples = np.concatenate([noise(22), seconds(5), noise(23, 1), seconds(4), noise(21, 2)])
    windows = split_windows(samples)
    assert windows[0].start == 0 and windows[-1].end == samples.size
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))  # contiguous
    assert all(w.end - w.start <= 30 * SAMPLE_RATE for w in windows)
    # Each cut lands 0.2 s before sound resumes, so Whisper's window-relative times start right.
    assert [w.start / SAMPLE_RATE for w in windows[1:]] == [26.8, 53.8]


def test_continuous_sound_still_gets_windows_of_at_most_30_s():
    windows = split_windows(noise(95))
    assert len(windows) == 4
    assert all(20 * SAMPLE_RATE <= w.end - w.start <= 30 * SAMPLE_RATE for w in windows[:-1])


# --------------------------------------------------------------------------- runner logic (fake pipeline)


def test_english_only_model_refuses_translation_and_other_languages():
    runner, pipe = fake_runner()
    audio = AudioPart(seconds(1))
    with pytest.raises(UnsupportedInputError, match="'fake-whisper' is English-only and cannot translate"):
        runner.transcribe(audio, TranscribeOptions(translate=True))
    with pytest.raises(UnsupportedInputError, match=r"'fake-whisper' is English-only; .* language 'de'"):
        runner.transcribe(audio, TranscribeOptions(language="de"))
    assert pipe.calls == []  # refused before any decoding
    result = runner.transcribe(audio, TranscribeOptions(language="English"))
    assert result.language == "en"
    ((_, _, kwargs),) = pipe.calls
    assert kwargs == {"generate_kwargs": {"max_new_tokens": 31}}  # English-only models take neither language nor task


def test_multilingual_model_gets_language_and_task():
    runner, pipe = fake_runner(english_only=False)
    result = runner.transcribe(AudioPart(seconds(1)), TranscribeOptions(language="German", translate=True))
    assert pipe.calls[0][2] == {"generate_kwargs": {"task": "translate", "language": "de", "max_new_tokens": 31}}
    assert result.language == "de"
    with pytest.raises(InvalidParamError, match="unknown language 'klingon'") as err:
        runner.transcribe(AudioPart(seconds(1)), TranscribeOptions(language="klingon"))
    assert err.value.param == "language"


def test_multilingual_model_reports_the_language_it_detected():
    def reply(i, kwargs):  # return_language=True: chunks carry the language Whisper named
        return {"text": " Bonjour.", "chunks": [{"text": " Bonjour.", "language": "french"}]}

    runner, pipe = fake_runner(english_only=False, reply=reply)
    result = runner.transcribe(AudioPart(seconds(1)), TranscribeOptions())
    assert pipe.calls[0][2] == {
        "generate_kwargs": {"task": "transcribe", "max_new_tokens": 31},
        "return_language": True,
    }
    assert (result.language, result.text) == ("fr", "Bonjour.")


def test_temperature_turns_on_sampling():
    runner, pipe = fake_runner()
    result = runner.transcribe(AudioPart(seconds(1)), TranscribeOptions(temperature=0.7))
    assert pipe.calls[0][2]["generate_kwargs"] == {"do_sample": True, "temperature": 0.7, "max_new_tokens": 31}
    assert result.segments[0].temperature == 0.7


def test_windows_are_batched_and_offset():
    def reply(i, kwargs):  # the last segment of each window has no end: Whisper left it open
        return {
            "text": f" one{i}. two{i}.",
            "chunks": [
                {"text": f" one{i}.", "timestamp": (0.5, 2.0)},
                {"text": f" two{i}.", "timestamp": (2.0, None)},
            ],
        }

    runner, pipe = fake_runner(reply=reply)
    samples = np.concatenate([noise(25), seconds(5), noise(25, 1)])
    windows = [(w.start / SAMPLE_RATE, w.end / SAMPLE_RATE) for w in split_windows(samples)]
    result = runner.transcribe(AudioPart(samples), TranscribeOptions(timestamps="segment"))
    ((inputs, batch_size, kwargs),) = pipe.calls
    assert batch_size == len(inputs) == len(windows) == 2
    assert kwargs["return_timestamps"] is True and inputs[0]["sampling_rate"] == SAMPLE_RATE
    (_, w1), (w2, end) = windows
    assert [s.text for s in result.segments] == [" one0.", " two0.", " one1.", " two1."]
    times = [t for s in result.segments for t in (s.start, s.end)]
    assert times == pytest.approx([0.5, 2.0, 2.0, w1, w2 + 0.5, w2 + 2.0, w2 + 2.0, end])
    assert [s.id for s in result.segments] == [0, 1, 2, 3]
    assert result.text == "one0. two0. one1. two1."


def test_word_timestamps_group_into_sentences():
    def reply(i, kwargs):
        words = [(" Hi", 0.0, 0.4), (" there.", 0.4, 0.9), (" Bye", 1.0, 3.0), (" now.", 1.5, 2.0)]
        return {"text": " Hi there. Bye now.", "chunks": [{"text": w, "timestamp": (a, b)} for w, a, b in words]}

    runner, pipe = fake_runner(reply=reply)
    result = runner.transcribe(AudioPart(seconds(4)), TranscribeOptions(timestamps="word"))
    assert pipe.calls[0][2]["return_timestamps"] == "word"
    assert [(w.word, w.start, w.end) for w in result.words] == [
        ("Hi", 0.0, 0.4),
        ("there.", 0.4, 0.9),
        ("Bye", 1.0, 3.0),
        ("now.", 3.0, 3.0),  # clamped: never backwards
    ]
    assert [(s.text, s.start, s.end) for s in result.segments] == [(" Hi there.", 0.0, 0.9), (" Bye now.", 1.0, 3.0)]
    assert_timeline(result.words, result.duration)


def test_word_timestamps_need_alignment_heads():
    runner, _ = fake_runner(alignment_heads=False)
    with pytest.raises(UnsupportedInputError, match="alignment_heads"):
        runner.transcribe(AudioPart(seconds(1)), TranscribeOptions(timestamps="word"))


def test_empty_audio_is_refused():
    runner, _ = fake_runner()
    with pytest.raises(MediaError):
        runner.transcribe(AudioPart(np.zeros(0, np.float32)), TranscribeOptions())


def test_load_reports_a_folder_that_is_not_a_model(tmp_path: Path):
    with pytest.raises(GemmacliError, match="cannot load Whisper model 'nothing'"):
        TranscribeRunner.load(tmp_path, Placement(), name="nothing")


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def runner(transcribe_runner) -> TranscribeRunner:
    return transcribe_runner


@pytest.fixture(scope="module")
def tokenizer(whisper_dir):
    from transformers import WhisperTokenizer

    return WhisperTokenizer.from_pretrained(whisper_dir)


@pytest.fixture(scope="module")
def long_recording() -> tuple[AudioPart, list[str], list[float]]:
    """The three sentences with 8 s of silence after each: 42 s, so two windows."""
    parts = []
    references = []
    offsets = []
    at = 0.0
    for name in SPEECH:
        audio, reference = speech(name)
        parts += [audio.samples, seconds(SILENCE_S)]
        references.append(reference)
        offsets.append(at)
        at += audio.samples.size / SAMPLE_RATE + SILENCE_S
    return AudioPart(np.concatenate(parts)), references, offsets


@pytest.mark.slow
@pytest.mark.parametrize("name", SPEECH)
def test_speech_is_transcribed(runner: TranscribeRunner, tokenizer, name: str):
    audio, reference = speech(name)
    result = runner.transcribe(audio, TranscribeOptions())
    assert word_error_rate(reference, result.text) < 0.25, result.text
    assert (runner.name, runner.english_only, result.language) == ("whisper-tiny.en", True, "en")
    assert result.duration == audio.samples.size / SAMPLE_RATE
    (segment,) = result.segments  # one segment spans the audio when no timestamps are asked
    assert (segment.start, segment.end, segment.text.strip()) == (0.0, result.duration, result.text)
    assert tokenizer.decode(list(segment.tokens)) == segment.text  # the ids of the segment's text
    assert result.words == ()


@pytest.mark.slow
def test_segment_timestamps(runner: TranscribeRunner):
    audio, reference = speech("please_call_stella")
    result = runner.transcribe(audio, TranscribeOptions(timestamps="segment"))
    assert result.segments and result.words == ()
    assert_timeline(result.segments, result.duration)
    assert result.segments[-1].end > result.duration - 1.5  # speech runs nearly to the end
    assert word_error_rate(reference, "".join(s.text for s in result.segments)) < 0.25


@pytest.mark.slow
def test_word_timestamps(runner: TranscribeRunner):
    audio, reference = speech("hello_world")
    result = runner.transcribe(audio, TranscribeOptions(timestamps="word"))
    assert len(result.words) == len(reference.split())
    assert word_error_rate(reference, " ".join(w.word for w in result.words)) < 0.25
    assert_timeline(result.words, result.duration)
    assert all(w.word == w.word.strip() and w.end > w.start for w in result.words)
    assert result.segments and result.segments[0].start == result.words[0].start
    assert result.segments[-1].end == result.words[-1].end


@pytest.mark.slow
@pytest.mark.parametrize("timestamps", ["segment", "word"])
def test_long_audio_is_windowed_and_keeps_every_sentence(runner: TranscribeRunner, long_recording, timestamps):
    audio, references, offsets = long_recording
    assert audio.samples.size > 30 * SAMPLE_RATE and len(split_windows(audio.samples)) == 2
    result = runner.transcribe(audio, TranscribeOptions(timestamps=timestamps))
    assert word_error_rate(" ".join(references), result.text) < 0.25, result.text
    assert result.duration == audio.samples.size / SAMPLE_RATE
    assert_timeline(result.segments, result.duration)
    assert_timeline(result.words, result.duration)
    # Each sentence's segment starts within a second of where it was placed, the third in the second window.
    starts = [s.start for s in result.segments]
    for offset in offsets:
        assert min(abs(start - offset) for start in starts) < 1.0, (offset, starts)
    if timestamps == "word":
        assert len(result.words) == sum(len(r.split()) for r in references)


@pytest.mark.slow
def test_prompt_steers_the_spelling(runner: TranscribeRunner):
    audio, _ = speech("quick_brown_fox")  # " The quick brown fox..." without a prompt
    prompted = runner.transcribe(audio, TranscribeOptions(prompt="Quick Brown Fox."))
    assert prompted.text.startswith("Quick Brown Fox")  # prompt_ids reached generate; the prompt is not echoed
    assert "lazy dog" in prompted.text
    with pytest.raises(InvalidParamError, match="special token") as err:
        runner.transcribe(audio, TranscribeOptions(prompt="hi <|endoftext|>"))
    assert err.value.param == "prompt"


@pytest.mark.slow
def test_real_translate_request_is_refused(runner: TranscribeRunner):
    audio, _ = speech("hello_world")
    with pytest.raises(UnsupportedInputError, match=r"whisper-tiny\.en"):
        runner.transcribe(audio, TranscribeOptions(translate=True))


@pytest.mark.slow
def test_silence_ends_quickly_instead_of_looping(runner):
    """Whisper can loop on silence up to 448 tokens; the per-window budget keeps that to a few."""
    from gemmacli.runners.transcribe import token_budget

    result = runner.transcribe(AudioPart(np.zeros(SAMPLE_RATE, dtype=np.float32)), TranscribeOptions())
    assert len(runner._pipe.tokenizer.encode(result.text, add_special_tokens=False)) <= token_budget(1.0)
    assert token_budget(30.0) == 440 and token_budget(1.0) == 31
