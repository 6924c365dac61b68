"""render(): OpenAI's audio response shapes, checked by parsing them back."""

from __future__ import annotations

import json
import re

import pytest
from support.helpers import speech

from gemmacli.errors import InvalidParamError
from gemmacli.transcript_formats import FORMATS, compression_ratio, render
from gemmacli.types import Segment, TranscribeOptions, Transcript, Word

SRT_CUE = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)\n")
VTT_CUE = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)\n")
SEGMENT_KEYS = {
    "id",
    "seek",
    "start",
    "end",
    "text",
    "tokens",
    "temperature",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
}

TWO_SEGMENTS = Transcript(
    text="Hello there. General Kenobi!",
    language="en",
    duration=3661.5,
    segments=(
        Segment(0, 0.0, 1.25, " Hello there.", tokens=(15496, 612, 13)),
        Segment(1, 3600.0, 3661.5, " General Kenobi!", temperature=0.4),
    ),
)


def seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def parse_srt(body: str) -> list[tuple[int, float, float, str]]:
    """Every cue of a well-formed SRT file (numbered cues, a blank line after each), or an assertion error."""
    cues = body.split("\n\n")
    assert cues[-1] == "", "the file ends with a blank line after the last cue"
    parsed = []
    for block in cues[:-1]:
        match = SRT_CUE.fullmatch(block + "\n")
        assert match, block
        parsed.append((int(match[1]), seconds(match[2]), seconds(match[3]), match[4]))
    assert [n for n, *_ in parsed] == list(range(1, len(parsed) + 1))
    assert all(start < end for _, start, end, _ in parsed)
    return parsed


def parse_vtt(body: str) -> list[tuple[float, float, str]]:
    assert body.startswith("WEBVTT\n\n")
    cues = body.removeprefix("WEBVTT\n\n").split("\n\n")
    assert cues[-1] == ""
    parsed = []
    for block in cues[:-1]:
        match = VTT_CUE.fullmatch(block + "\n")
        assert match, block
        parsed.append((seconds(match[1]), seconds(match[2]), match[3]))
    assert all(start < end for start, end, _ in parsed)
    return parsed


# --------------------------------------------------------------------------- hand-built transcripts


def test_formats_constant():
    assert FORMATS == ("json", "text", "srt", "vtt", "verbose_json")


def test_json_and_text():
    assert json.loads(render(TWO_SEGMENTS, "json")) == {"text": "Hello there. General Kenobi!"}
    assert render(TWO_SEGMENTS, "text") == "Hello there. General Kenobi!\n"
    unicode = Transcript(text="Grüße, 世界", language="de", duration=1.0)
    assert "Grüße, 世界" in render(unicode, "json")  # UTF-8 as is, not \\u escapes


def test_srt():
    body = render(TWO_SEGMENTS, "srt")
    assert body == (
        "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n01:00:00,000 --> 01:01:01,500\nGeneral Kenobi!\n\n"
    )
    assert parse_srt(body) == [(1, 0.0, 1.25, "Hello there."), (2, 3600.0, 3661.5, "General Kenobi!")]


def test_vtt():
    body = render(TWO_SEGMENTS, "vtt")
    assert body == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n01:00:00.000 --> 01:01:01.500\nGeneral Kenobi!\n\n"
    )
    assert parse_vtt(body) == [(0.0, 1.25, "Hello there."), (3600.0, 3661.5, "General Kenobi!")]


def test_timestamps_round_to_whole_milliseconds():
    transcript = Transcript("x", "en", 60.0, segments=(Segment(0, 1.0004, 59.9996, "x"),))
    assert "00:00:01,000 --> 00:01:00,000" in render(transcript, "srt")
    assert "00:00:01.000 --> 00:01:00.000" in render(transcript, "vtt")


def test_cues_stay_well_formed_with_awkward_segments():
    transcript = Transcript(
        text="a b",
        language="en",
        duration=5.0,
        segments=(
            Segment(0, 0.0, 1.0, "  line one\n\nline two --> three  "),  # blank line and arrow inside
            Segment(1, 1.0, 2.0, "   "),  # nothing said: no cue
            Segment(2, 2.0, 2.0, " instant"),  # zero length: players would drop it
        ),
    )
    srt = parse_srt(render(transcript, "srt"))
    assert [(n, text) for n, _, _, text in srt] == [(1, "line one line two -> three"), (2, "instant")]
    assert srt[1][1:3] == (2.0, 2.001)
    assert [text for *_, text in parse_vtt(render(transcript, "vtt"))] == ["line one line two -> three", "instant"]


def test_transcript_without_segments_is_one_cue():
    transcript = Transcript(text="Just text.", language="en", duration=2.5)
    assert parse_srt(render(transcript, "srt")) == [(1, 0.0, 2.5, "Just text.")]
    empty = Transcript(text="", language="en", duration=2.5)
    assert render(empty, "srt") == ""
    assert render(empty, "vtt") == "WEBVTT\n\n"


def test_verbose_json():
    data = json.loads(render(TWO_SEGMENTS, "verbose_json"))
    assert set(data) == {"task", "language", "duration", "text", "segments"}  # no words: none were asked for
    header = (data["task"], data["language"], data["duration"], data["text"])
    assert header == ("transcribe", "english", 3661.5, "Hello there. General Kenobi!")
    first, second = data["segments"]
    assert set(first) == set(second) == SEGMENT_KEYS
    assert (first["id"], first["start"], first["end"], first["text"]) == (0, 0.0, 1.25, " Hello there.")
    assert (first["tokens"], first["temperature"], second["temperature"]) == ([15496, 612, 13], 0.0, 0.4)
    assert (second["seek"], first["avg_logprob"], first["no_speech_prob"]) == (360000, 0.0, 0.0)
    assert first["compression_ratio"] == pytest.approx(compression_ratio(" Hello there."))


def test_verbose_json_with_words_and_translate():
    transcript = Transcript(
        text="Hi.",
        language="fr",
        duration=1.0,
        segments=(Segment(0, 0.0, 0.5, " Hi."),),
        words=(Word("Hi.", 0.1, 0.5),),
    )
    data = json.loads(render(transcript, "verbose_json", task="translate"))
    assert data["task"] == "translate"
    assert data["words"] == [{"word": "Hi.", "start": 0.1, "end": 0.5}]
    with pytest.raises(InvalidParamError):
        render(transcript, "verbose_json", task="summarize")


def test_compression_ratio_grows_with_repetition():
    assert compression_ratio("") == 0.0
    assert compression_ratio("the the the the the the the the the the the the") > 2.4 > compression_ratio("Hi there.")


@pytest.mark.parametrize("fmt", ["xml", "JSON", "", "srt "])
def test_unknown_format(fmt: str):
    with pytest.raises(InvalidParamError, match="unknown response_format") as err:
        render(TWO_SEGMENTS, fmt)
    assert err.value.param == "response_format"


# --------------------------------------------------------------------------- a real transcript


@pytest.mark.slow
def test_every_format_of_a_real_transcript(transcribe_runner):
    audio, _ = speech("quick_brown_fox")
    transcript = transcribe_runner.transcribe(audio, TranscribeOptions(timestamps="word"))

    srt, vtt = parse_srt(render(transcript, "srt")), parse_vtt(render(transcript, "vtt"))
    assert len(srt) == len(vtt) == len(transcript.segments) >= 1
    assert all(end <= transcript.duration for _, _, end, _ in srt)
    assert " ".join(text for *_, text in srt) == transcript.text
    assert [cue[1:] for cue in srt] == [(start, end, text) for start, end, text in vtt]

    data = json.loads(render(transcript, "verbose_json"))
    assert data["text"] == transcript.text == json.loads(render(transcript, "json"))["text"]
    assert data["language"] == "english" and data["duration"] == pytest.approx(audio.samples.size / 16_000)
    assert all(set(s) == SEGMENT_KEYS and s["tokens"] for s in data["segments"])
    assert [w["word"] for w in data["words"]][:3] == ["The", "quick", "brown"]
    assert render(transcript, "text") == transcript.text + "\n"
