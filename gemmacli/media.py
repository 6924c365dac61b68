"""Decoding images and audio from bytes, with every limit checked before memory is committed (video: media_video.py).

Pillow decodes images; soundfile decodes audio (there is no ffmpeg, so the ASR pipeline only
ever sees arrays). Both the CLI and the server come through here.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from gemmacli.errors import MediaError
from gemmacli.settings import ServerSettings
from gemmacli.types import AudioPart, ImagePart, VideoPart

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000
# What a photo, screenshot or scan comes as. Other formats Pillow knows (EPS runs Ghostscript; PSD, ICNS,
# FITS...) are never needed for a prompt, and every parser left out is attack surface gone.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
AUDIO_RATES = (1_000, 384_000)  # sample rates anyone records at; the header's claim is refused outside them
MAX_RESAMPLE_FACTOR = 1000  # up/down factors above this make resample_poly's filter huge (2 GHz: 298 GiB)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")  # what soundfile decodes
AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3\x03", b"ID3\x04")
BLOCK_SAMPLES = 1 << 20  # samples (frames x channels) read at a time: 4 MB of float32


@dataclass(frozen=True)
class MediaLimits:
    """Per-file limits. The defaults are the server's settings of the same names (GEMMACLI_MAX_IMAGE_PIXELS and
    friends), so `gemmacli chat photo.jpg` accepts what `gemmacli serve` does."""

    max_image_bytes: int = ServerSettings.max_image_bytes
    max_image_pixels: int = ServerSettings.max_image_pixels  # 50 M: about 7000 x 7000
    min_image_side: int = ServerSettings.min_image_side
    max_audio_bytes: int = ServerSettings.max_audio_bytes
    max_audio_seconds: float = ServerSettings.max_audio_seconds
    max_video_bytes: int = ServerSettings.max_video_bytes
    max_video_seconds: float = ServerSettings.max_video_seconds
    max_video_frames: int = ServerSettings.max_video_frames


DEFAULT_LIMITS = MediaLimits()


def read_file(path: str | Path, what: str) -> bytes:
    """Read a user-named file, turning OS errors into one readable line."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{what} file not found: {p}")
    if not p.is_file():
        raise MediaError(f"{what} path is not a file: {p}")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise MediaError(f"cannot read {what} file {p}: {exc.strerror or exc}") from None


def check_size(data: bytes, limit: int, name: str) -> None:
    if not data:
        raise MediaError(f"{name} is empty")
    if len(data) > limit:
        raise MediaError(f"{name} is {len(data):,} bytes; the limit is {limit:,}")


def decode_image(data: bytes, limits: MediaLimits = DEFAULT_LIMITS, name: str = "image") -> ImagePart:
    """Bytes -> upright RGB image. Size and pixel count are checked before pixels are decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_size(data, limits.max_image_bytes, name)
    # Pillow's own bomb check (in Image.open) is the second line behind ours; one process serves one set of
    # limits, so setting its global here does not fight another caller.
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; make every bomb an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            _check_dimensions(image.size, limits, name)  # from the header: nothing decoded yet
            image.load()
            image = ImageOps.exif_transpose(image).convert("RGB")
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(f"{name} has more than the limit of {limits.max_image_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise MediaError(f"{name} is not an image in a supported format ({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt pixel data
        raise MediaError(f"{name} is corrupt or truncated: {exc}") from None
    return ImagePart(image)


def _check_dimensions(size: tuple[int, int], limits: MediaLimits, name: str) -> None:
    width, height = size
    if width * height > limits.max_image_pixels:
        raise MediaError(
            f"{name} is {width}x{height} = {width * height:,} pixels; the limit is {limits.max_image_pixels:,}"
        )
    if min(width, height) < limits.min_image_side:
        raise MediaError(f"{name} is {width}x{height}; images must be at least {limits.min_image_side} px a side")


def load_image(path: str | Path, limits: MediaLimits = DEFAULT_LIMITS) -> ImagePart:
    return decode_image(read_file(path, "image"), limits, name=f"image {Path(path).name}")


def decode_audio(data: bytes, limits: MediaLimits = DEFAULT_LIMITS, name: str = "audio") -> AudioPart:
    """Bytes -> mono float32 at 16 kHz. The header's claims are checked first, then samples are counted while
    decoding in bounded blocks, so a file that decodes to far more than it claims stops at the limit."""
    import numpy as np
    import soundfile as sf

    check_size(data, limits.max_audio_bytes, name)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = f.samplerate, f.channels
            max_frames = _check_audio_header(f.frames, rate, channels, limits, name)
            blocks, frames = [], 0
            for block in f.blocks(blocksize=max(1, BLOCK_SAMPLES // channels), dtype="float32", always_2d=True):
                frames += len(block)
                if frames > max_frames:
                    raise MediaError(f"{name} is longer than the limit of {limits.max_audio_seconds:g} s")
                blocks.append(block.mean(axis=1) if channels > 1 else block[:, 0])
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)  # libsndfile's own words, without our buffer's repr
        raise MediaError(f"{name} is not audio soundfile can read (WAV, FLAC, OGG, MP3): {reason}") from None
    if frames == 0:
        raise MediaError(f"{name} holds no samples")
    samples = np.concatenate(blocks).astype(np.float32, copy=False)
    return AudioPart(resample(samples, rate))


def _check_audio_header(claimed: int, rate: int, channels: int, limits: MediaLimits, name: str) -> int:
    """The most frames the limit allows; refuses a rate or a claimed length that is out of bounds."""
    low, high = AUDIO_RATES
    if not low <= rate <= high:
        raise MediaError(f"{name} has a sample rate of {rate:,} Hz; accepted: {low:,} to {high:,} Hz")
    if channels < 1:
        raise MediaError(f"{name} has no audio channels")
    max_frames = math.ceil(limits.max_audio_seconds * rate)
    if max_frames < claimed < 1 << 62:  # 2**63-1 means "length unknown" (a stream)
        limit, claims = f"{limits.max_audio_seconds:g}", f"{claimed / rate:,.1f}"
        raise MediaError(f"{name} is longer than the limit of {limit} s (its header says {claims} s)")
    return max_frames


def load_audio(path: str | Path, limits: MediaLimits = DEFAULT_LIMITS) -> AudioPart:
    return decode_audio(read_file(path, "audio"), limits, name=f"audio {Path(path).name}")


def load_media(path: str | Path, limits: MediaLimits = DEFAULT_LIMITS) -> ImagePart | AudioPart | VideoPart:
    """A file named on the command line: audio or video by its extension (audio also by its header: RIFF,
    fLaC, OggS, ID3), else an image. A video keeps `max_video_frames` frames; the model reads up to that."""
    from gemmacli.media_video import VIDEO_SUFFIXES, decode_video

    data = read_file(path, "media")
    name, suffix = Path(path).name, Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return decode_video(data, limits.max_video_frames, limits, name=f"video {name}")
    if suffix in AUDIO_SUFFIXES or data[:4] in AUDIO_MAGIC:
        return decode_audio(data, limits, name=f"audio {name}")
    return decode_image(data, limits, name=f"image {name}")


def media_kind(part: ImagePart | AudioPart | VideoPart) -> str:
    return {AudioPart: "audio", VideoPart: "video"}.get(type(part), "image")


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling: exact for the common 8/22.05/44.1/48/96 kHz rates (44.1 kHz is 160/441), and fast.

    An odd rate (a prime such as 44,101 Hz) would need factors in the tens of thousands and a filter as long:
    its ratio is rounded to factors of at most 1000 instead, off by less than a millionth.
    """
    import numpy as np

    if rate == target:
        return samples
    from scipy.signal import resample_poly

    ratio = Fraction(target, rate).limit_denominator(MAX_RESAMPLE_FACTOR)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)
