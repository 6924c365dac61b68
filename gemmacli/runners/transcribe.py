"""Speech to text with Whisper, through the transformers automatic-speech-recognition pipeline.

The pipeline only ever sees arrays (no ffmpeg here). Audio longer than 30 s is cut into windows
of at most 30 s, each cut in the longest pause of the window's last 10 s, and the windows run as
batches: the pipeline's own `chunk_length_s` merging misplaces or reorders timestamps across chunk
borders (transformers 5.x), while windows cut in pauses keep every timestamp right after an offset.

torch and transformers are imported inside methods, so importing this module is cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gemmacli.errors import GemmacliError, InvalidParamError, MediaError, UnsupportedInputError
from gemmacli.runners.base import Memory, module_memory
from gemmacli.types import AudioPart, GenParams, Segment, TranscribeOptions, Transcript, Word

if TYPE_CHECKING:
    import numpy as np

    from gemmacli.device import Placement

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30  # Whisper's receptive field
SEARCH_SECONDS = 10  # each cut falls in the last 10 s of a window
FRAME = SAMPLE_RATE // 10  # loudness is measured per 0.1 s
CUT_MARGIN_FRAMES = 2  # cut 0.2 s before speech resumes
QUIET_ENERGY = 1e-8  # mean square of a frame quieter than -80 dBFS: silence for cutting purposes
BATCH_SIZE = 8  # windows decoded together; padding is per window, so this only costs memory
MAX_PROMPT_TOKENS = 223  # half of Whisper's 448-token context, minus <|startofprev|> (as OpenAI's decoder)
ENGLISH = {"en", "english"}
MAX_NEW_TOKENS = 440  # Whisper's 448-token decoder context minus the start prompt
TOKENS_PER_SECOND, MIN_NEW_TOKENS = 15, 16
_SENTENCE_END = re.compile(r"[.!?。！？]['\")\]]*$")


@dataclass(frozen=True)
class Window:
    start: int  # sample offsets into the whole recording
    end: int

    @property
    def seconds(self) -> tuple[float, float]:
        return self.start / SAMPLE_RATE, self.end / SAMPLE_RATE


class TranscribeRunner:
    """One Whisper model: `transcribe(audio, options) -> Transcript`. Not thread-safe: one caller at a time."""

    task: ClassVar = "transcribe"
    cpu_bf16: ClassVar = False  # a small encoder-decoder: bf16 buys little on a CPU

    def __init__(self, pipe: Any, name: str, *, english_only: bool, placement: Placement | None = None):
        self._pipe = pipe
        self._name = name
        self._english_only = english_only
        self.placement = placement

    @classmethod
    def detects(cls, config: dict, folder: Path) -> bool:
        return config.get("model_type") == "whisper" or "SpeechSeq2Seq" in " ".join(config.get("architectures") or [])

    @classmethod
    def load(
        cls, path: Path, placement: Placement, *, name: str, defaults: GenParams = GenParams()
    ) -> TranscribeRunner:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor, pipeline

        try:
            processor = WhisperProcessor.from_pretrained(path)
            model = WhisperForConditionalGeneration.from_pretrained(path, **placement.from_pretrained_kwargs())
        except (OSError, ValueError, TypeError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GemmacliError(f"cannot load Whisper model {name!r} from {path}: {first_line}") from None
        model.eval()
        # With device_map="auto" accelerate has placed the layers; the pipeline must not move them.
        device = None if placement.device_map_auto else placement.device
        pipe = pipeline(
            "automatic-speech-recognition",
            model=model,
            tokenizer=processor.tokenizer,
            feature_extractor=processor.feature_extractor,
            device=device,
            dtype=placement.dtype,  # input features must match the weights' dtype
        )
        return cls(pipe, name, english_only=_is_english_only(model), placement=placement)

    def warm_up(self) -> None:
        import numpy as np

        self.transcribe(AudioPart(np.zeros(SAMPLE_RATE, dtype=np.float32)), TranscribeOptions())

    def memory(self) -> Memory:
        return module_memory(getattr(self._pipe, "model", None), self.placement)

    def close(self) -> None:
        self._pipe = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def english_only(self) -> bool:
        return self._english_only

    def transcribe(self, audio: AudioPart, options: TranscribeOptions) -> Transcript:
        samples = audio.samples
        if samples.ndim != 1 or samples.size == 0:
            raise MediaError("audio must be non-empty mono samples")
        language = self._language(options)
        windows = split_windows(samples)
        outputs = self._run(samples, windows, options, language)
        if language is None:  # multilingual model asked to detect it
            language = _detected_language(outputs)
        text = "".join(out["text"] for out in outputs).strip()
        if options.timestamps == "word":
            words = _words(outputs, windows)
            segments = _segments_from_words(outputs, windows)
        elif options.timestamps == "segment":
            words, segments = (), _segments_from_chunks(outputs, windows)
        else:  # one segment per window, so a long recording still gets coarse timings
            words = ()
            segments = [
                (out["text"], *w.seconds) for out, w in zip(outputs, windows, strict=True) if out["text"].strip()
            ]
        return Transcript(
            text=text,
            language=language or "",
            duration=samples.size / SAMPLE_RATE,
            segments=self._segments(segments, options.temperature),
            words=words,
        )

    # ----------------------------------------------------------------- helpers

    def _language(self, options: TranscribeOptions) -> str | None:
        """The language code to force, None to let a multilingual model detect it; rejects what the model can't do."""
        language = (options.language or "").strip().lower() or None
        if self._english_only:
            if options.translate:
                raise UnsupportedInputError(
                    f"model {self._name!r} is English-only and cannot translate; use a multilingual Whisper model"
                )
            if language not in (None, *ENGLISH):
                raise UnsupportedInputError(
                    f"model {self._name!r} is English-only; it cannot transcribe language {options.language!r}"
                )
            return "en"
        return language_code(language)

    def _run(self, samples: np.ndarray, windows: list[Window], options: TranscribeOptions, language: str | None):
        kwargs: dict[str, Any] = {"generate_kwargs": self._generate_kwargs(options, language)}
        longest = max(w.end - w.start for w in windows) / SAMPLE_RATE
        kwargs["generate_kwargs"]["max_new_tokens"] = token_budget(longest)
        if options.timestamps:
            if options.timestamps == "word" and not hasattr(self._pipe.model.generation_config, "alignment_heads"):
                raise UnsupportedInputError(
                    f"model {self._name!r} has no alignment_heads in generation_config.json: no word timestamps"
                )
            kwargs["return_timestamps"] = "word" if options.timestamps == "word" else True
        if language is None:
            kwargs["return_language"] = True
        inputs = [{"raw": samples[w.start : w.end], "sampling_rate": SAMPLE_RATE} for w in windows]
        return self._pipe(inputs, batch_size=min(BATCH_SIZE, len(inputs)), **kwargs)

    def _generate_kwargs(self, options: TranscribeOptions, language: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if not self._english_only:  # English-only models reject both arguments
            kwargs["task"] = "translate" if options.translate else "transcribe"
            if language is not None:
                kwargs["language"] = language
        if options.temperature > 0:
            kwargs.update(do_sample=True, temperature=float(options.temperature))
        if options.prompt and options.prompt.strip():
            kwargs["prompt_ids"] = self._prompt_ids(options.prompt)
        return kwargs

    def _prompt_ids(self, prompt: str):
        """<|startofprev|> + the prompt's last tokens: every window is conditioned on it, like previous text."""
        import torch

        try:
            ids = self._pipe.tokenizer.get_prompt_ids(prompt, return_tensors="np").tolist()
        except ValueError as exc:  # the prompt spells a special token such as <|endoftext|>
            raise InvalidParamError(f"prompt: {exc}", param="prompt") from None
        return torch.tensor(ids[:1] + ids[1:][-MAX_PROMPT_TOKENS:], device=self._pipe.model.device)

    def _segments(self, spans: list[tuple[str, float, float]], temperature: float) -> tuple[Segment, ...]:
        tokenizer = self._pipe.tokenizer
        return tuple(
            Segment(
                id=i,
                start=start,
                end=end,
                text=text,
                # The pipeline returns text, not ids: these are the ids of the segment's text.
                tokens=tuple(tokenizer.encode(text, add_special_tokens=False)),
                temperature=float(temperature),
            )
            for i, (text, start, end) in enumerate(spans)
        )


def language_code(language: str | None) -> str | None:
    """Whisper's code for a language name or code ("German", "de"); None for none. Needs no model, so the
    server checks it before loading one."""
    language = (language or "").strip().lower() or None
    if language is None:
        return None
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    code = TO_LANGUAGE_CODE.get(language, language)
    if code not in LANGUAGES:
        raise InvalidParamError(f"unknown language {language!r} for Whisper", param="language")
    return code


def token_budget(seconds: float) -> int:
    """Most tokens a window of `seconds` may produce.

    Speech runs at about 3 words (4-5 tokens) a second; timestamps add two per segment. Whisper can loop on
    silence or noise until its 448-token limit, which with beam search takes minutes on a CPU; this bound
    (three times fast speech) stops such loops early without clipping real speech.
    """
    return int(min(MAX_NEW_TOKENS, TOKENS_PER_SECOND * seconds + MIN_NEW_TOKENS))


# --------------------------------------------------------------------- windows and timestamps


def split_windows(samples: np.ndarray) -> list[Window]:
    """Cut a recording into windows of at most 30 s, each cut in the longest pause of its last 10 s."""
    import numpy as np

    n, size = samples.size, WINDOW_SECONDS * SAMPLE_RATE
    windows, start = [], 0
    while n - start > size:
        lo = start + size - SEARCH_SECONDS * SAMPLE_RATE  # every offset here is a whole number of frames
        frames = samples[lo : start + size].reshape(-1, FRAME)  # (100, 1600)
        cut = lo + _quiet_cut(np.square(frames, dtype=np.float64).mean(axis=1)) * FRAME
        windows.append(Window(start, cut))
        start = cut
    windows.append(Window(start, n))
    return windows


def _quiet_cut(energy: np.ndarray) -> int:
    """Frame index to cut at: just before the end of the longest quiet stretch.

    The longest stretch is a pause, not a gap between two words; cutting near its end lets the next
    window start where speech resumes, which matters as Whisper dates a window's first segment within 1 s.
    """
    import numpy as np

    quiet = energy <= max(2 * float(energy.min()), QUIET_ENERGY)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
    starts, ends = edges[::2], edges[1::2]  # quiet frames are [starts[i], ends[i])
    longest = int(np.argmax(ends - starts))
    return int(max(starts[longest], ends[longest] - CUT_MARGIN_FRAMES))


def _clamp(chunks: list[dict], window: Window) -> list[tuple[str, float, float]]:
    """Window-relative (start, end|None) -> absolute, monotone spans inside the window.

    Whisper leaves the last end open when speech runs to the window's edge; it closes at the edge.
    """
    lo, hi = window.seconds
    spans, previous_end = [], lo
    for chunk in chunks:
        start, end = chunk["timestamp"]
        start = min(max(lo + (start or 0.0), previous_end), hi)
        end = hi if end is None else min(max(lo + end, start), hi)
        spans.append((chunk["text"], round(start, 3), round(end, 3)))
        previous_end = end
    return spans


def _segments_from_chunks(outputs: list[dict], windows: list[Window]) -> list[tuple[str, float, float]]:
    spans = []
    for out, window in zip(outputs, windows, strict=True):
        spans += [s for s in _clamp(out.get("chunks", []), window) if s[0].strip()]
    return spans


def _words(outputs: list[dict], windows: list[Window]) -> tuple[Word, ...]:
    return tuple(
        Word(text.strip(), start, end)
        for out, window in zip(outputs, windows, strict=True)
        for text, start, end in _clamp(out.get("chunks", []), window)
        if text.strip()
    )


def _segments_from_words(outputs: list[dict], windows: list[Window]) -> list[tuple[str, float, float]]:
    """Word mode returns words only; group them into sentences (and never across windows) for segments."""
    spans: list[tuple[str, float, float]] = []
    for out, window in zip(outputs, windows, strict=True):
        current: list[tuple[str, float, float]] = []
        for word in _clamp(out.get("chunks", []), window):
            current.append(word)
            if _SENTENCE_END.search(word[0].strip()):
                spans.append(_join(current))
                current = []
        if current:
            spans.append(_join(current))
    return [s for s in spans if s[0].strip()]


def _join(words: list[tuple[str, float, float]]) -> tuple[str, float, float]:
    return "".join(w[0] for w in words), words[0][1], words[-1][2]


def _detected_language(outputs: list[dict]) -> str:
    """The first language a multilingual model named (return_language=True); '' when it named none."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    for out in outputs:
        for chunk in out.get("chunks", []):
            if chunk.get("language"):
                return TO_LANGUAGE_CODE.get(chunk["language"], chunk["language"])
    return ""


def _is_english_only(model: Any) -> bool:
    """openai/whisper-*.en and our imports say is_multilingual=False; the vocabulary tells for older configs."""
    multilingual = getattr(model.generation_config, "is_multilingual", None)
    if multilingual is None:
        return model.config.vocab_size <= 51864
    return not multilingual
