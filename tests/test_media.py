"""Image and audio decoding with limits, on the committed test files and crafted bad ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from gemmacli.errors import MediaError
from gemmacli.media import MediaLimits, decode_audio, decode_image, load_audio, load_image


def png_bytes(width: int, height: int, **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG", **save)
    return buffer.getvalue()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_valid_images_decode_to_rgb(images):
    for name, size in [("red_circle_64.png", (64, 64)), ("red_circle_640x480.jpg", (640, 480))]:
        part = load_image(images / name)
        assert part.image.mode == "RGB" and part.image.size == size


@pytest.mark.parametrize("name,message", [("corrupt.png", "not an image"), ("truncated.jpg", "corrupt or truncated")])
def test_broken_images_give_a_readable_error(images, name, message):
    with pytest.raises(MediaError, match=message):
        load_image(images / name)


def test_missing_image_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_exif_rotation_is_applied():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("RGB", (40, 20), "blue").save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue()).image.size == (20, 40)


def test_greyscale_and_alpha_become_rgb():
    buffer = io.BytesIO()
    Image.new("LA", (8, 8)).save(buffer, format="PNG")
    assert decode_image(buffer.getvalue()).image.mode == "RGB"


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(MediaError, match="pixels"):
        decode_image(png_bytes(300, 300), MediaLimits(max_image_pixels=10_000))


def test_byte_limit_and_tiny_and_empty_images():
    with pytest.raises(MediaError, match="bytes"):
        decode_image(png_bytes(64, 64), MediaLimits(max_image_bytes=10))
    with pytest.raises(MediaError, match="at least"):
        decode_image(png_bytes(1, 1))
    with pytest.raises(MediaError, match="empty"):
        decode_image(b"")


def test_speech_wavs_decode_to_16k_mono(audio):
    part = load_audio(audio / "quick_brown_fox.wav")
    assert part.samples.dtype == np.float32 and part.samples.ndim == 1
    assert 2.0 < len(part.samples) / 16_000 < 10.0


def test_stereo_44k_is_mixed_down_and_resampled():
    t = np.arange(44_100) / 44_100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    samples = decode_audio(wav_bytes(stereo, 44_100)).samples
    assert len(samples) == 16_000
    assert abs(np.abs(samples).max() - 0.5) < 0.05


def test_duration_limit_counts_samples():
    with pytest.raises(MediaError, match="longer than"):
        decode_audio(wav_bytes(np.zeros(16_000 * 3), 16_000), MediaLimits(max_audio_seconds=2))


@pytest.mark.parametrize(
    "data,message", [(b"", "empty"), (b"RIFF\x00\x00junkjunk", "not audio"), (b"\x00" * 100, "not audio")]
)
def test_bad_audio_gives_a_readable_error(data, message):
    with pytest.raises(MediaError, match=message) as err:
        decode_audio(data)
    assert " at 0x" not in err.value.message  # no object reprs of our buffers reach the client


def test_audio_without_samples():
    with pytest.raises(MediaError, match="no samples"):
        decode_audio(wav_bytes(np.zeros(0), 16_000))


def test_a_header_claiming_a_huge_image_is_refused_before_decoding():
    from PIL import Image
    from support.badinput import png_claiming

    with pytest.raises(MediaError, match="pixels"):
        decode_image(png_claiming(100_000, 100_000))
    with pytest.raises(MediaError, match="pixels"):
        decode_image(png_claiming(3000, 3000), MediaLimits(max_image_pixels=4_000_000))  # between 1x and 2x
    assert Image.MAX_IMAGE_PIXELS == 4_000_000  # Pillow's own check follows ours


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "TGA"])
def test_formats_outside_the_common_ones_are_not_opened(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, format=fmt)
    with pytest.raises(MediaError, match="supported format"):
        decode_image(buffer.getvalue())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats_open(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, format=fmt)
    assert decode_image(buffer.getvalue()).image.size == (16, 16)


def test_audio_headers_that_lie_are_refused_before_decoding():
    from support.badinput import flac_claiming, wav_claiming_rate

    with pytest.raises(MediaError, match=r"header says 36,000\.0 s"):
        decode_audio(flac_claiming(36_000), MediaLimits(max_audio_seconds=10))
    with pytest.raises(MediaError, match="sample rate"):
        decode_audio(wav_claiming_rate(1_999_999_973))  # a prime: resampling from it once asked for 298 GiB


@pytest.mark.parametrize("rate", [44_101, 383_999, 8_000, 44_100])
def test_odd_sample_rates_resample_quickly_to_the_right_length(rate):
    import time

    t = np.arange(rate * 2) / rate
    started = time.perf_counter()
    samples = decode_audio(wav_bytes(np.sin(2 * np.pi * 440 * t) * 0.5, rate)).samples
    assert time.perf_counter() - started < 2.0  # 383,999 Hz took 5 s for 0.1 s of audio before
    assert abs(len(samples) - 32_000) <= 1


def test_compressed_silence_is_stopped_at_the_limit_while_decoding():
    from support.badinput import sound

    data = sound(60, fmt="FLAC")
    assert len(data) < 5_000  # a minute in a few kilobytes
    with pytest.raises(MediaError, match="longer than"):
        decode_audio(data, MediaLimits(max_audio_seconds=10))
    assert len(decode_audio(data, MediaLimits(max_audio_seconds=60)).samples) == 60 * 16_000
