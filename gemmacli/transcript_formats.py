"""A Transcript as text in the shapes of OpenAI's audio API: json, text, srt, vtt and verbose_json.

Shared by the CLI (`--format`) and the server (`response_format`); pure functions, no heavy imports.
"""

from __future__ import annotations

import json
import zlib
from typing import Literal

from gemmacli.errors import InvalidParamError
from gemmacli.types import Segment, Transcript

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
Task = Literal["transcribe", "translate"]


def render(transcript: Transcript, fmt: str, *, task: Task = "transcribe") -> str:
    """The response body for `fmt`; raises InvalidParamError(param="response_format") for an unknown one."""
    if fmt == "json":
        return _dumps({"text": transcript.text})
    if fmt == "text":
        return transcript.text + "\n"
    if fmt == "srt":
        return "".join(
            f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n\n"
            for i, (text, start, end) in enumerate(_cues(transcript), 1)
        )
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(
            f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n\n" for text, start, end in _cues(transcript)
        )
    if fmt == "verbose_json":
        return _dumps(_verbose(transcript, task))
    raise InvalidParamError(
        f"unknown response_format {fmt!r}: use one of {', '.join(FORMATS)}", param="response_format"
    )


def _dumps(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False)


def _verbose(transcript: Transcript, task: Task) -> dict:
    if task not in ("transcribe", "translate"):
        raise InvalidParamError(f"unknown task {task!r}: use transcribe or translate", param="task")
    data = {
        "task": task,
        "language": language_name(transcript.language),
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": [_verbose_segment(s) for s in transcript.segments],
    }
    if transcript.words:  # OpenAI sends words only when word timestamps were asked for
        data["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
    return data


def _verbose_segment(segment: Segment) -> dict:
    return {
        "id": segment.id,
        # Offset in 10 ms mel frames; OpenAI reports its decoding window's, we report the segment's own.
        "seek": round(segment.start * 100),
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature,
        "avg_logprob": 0.0,  # not measured by the transformers pipeline; 0.0 never trips clients' filters
        "compression_ratio": compression_ratio(segment.text),
        "no_speech_prob": 0.0,  # not measured either
    }


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes, as openai-whisper computes it (high values mean repetition)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _cues(transcript: Transcript) -> list[tuple[str, float, float]]:
    """(text, start, end) per non-empty segment; a transcript without segments becomes one cue."""
    cues = [(_cue_text(s.text), s.start, s.end) for s in transcript.segments]
    if not transcript.segments and transcript.text.strip():
        cues = [(_cue_text(transcript.text), 0.0, transcript.duration)]
    # Players drop cues that do not end after they start: give an instant one a millisecond.
    return [(text, start, max(end, start + 0.001)) for text, start, end in cues if text]


def _cue_text(text: str) -> str:
    # A blank line would end the cue and "-->" would start a new one: keep each cue on one line.
    return " ".join(text.split()).replace("-->", "->")


def _timestamp(seconds: float, decimal_mark: str) -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT); rounded to whole milliseconds first, so 59.9996 s is 00:01:00."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{ms:03d}"


def language_name(code: str) -> str:
    """OpenAI's verbose_json names the language ("english"), while Whisper and our Transcript use codes ("en")."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return LANGUAGES.get(code, code)
