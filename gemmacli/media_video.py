"""Decoding video clips for chat, with every limit checked from the container's header before a frame is decoded.

PyAV (FFmpeg's libraries) decodes: it is the backend transformers' own `load_video` defaults to. Only the frames
the model will see are kept, evenly spaced as transformers' default sampler spaces them, each scaled down to at
most MAX_SIDE (the model's processor shrinks it further); decoding stops after the last one wanted.
"""

from __future__ import annotations

import io
from pathlib import Path

from gemmacli.errors import MediaError
from gemmacli.media import DEFAULT_LIMITS, MediaLimits, check_size
from gemmacli.types import VideoPart

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
MAX_SIDE = 1024  # px: above what any Gemma vision tower reads, and 32 frames of it stay near 100 MB
FRAME_SLACK = 0.9  # a header's frame count may be an estimate: a clip that decodes to less than this is truncated


def decode_video(data: bytes, frames: int, limits: MediaLimits = DEFAULT_LIMITS, name: str = "video") -> VideoPart:
    """Bytes -> `frames` frames (fewer if the clip has fewer), evenly spaced over the clip."""
    import av

    check_size(data, limits.max_video_bytes, name)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaError(f"{name} holds no video stream")
            stream = container.streams.video[0]
            fps, total = _check_header(container, stream, limits, name)
            count = max(1, min(frames, limits.max_video_frames, total))
            indices = [i * total // count for i in range(count)]  # transformers' default_sample_indices_fn
            kept, short = _decode(container, stream, indices)
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)  # FFmpeg's words, without our buffer's repr
        raise MediaError(f"{name} is not a video FFmpeg can read: {reason}") from None
    if not kept or (short is not None and short < total * FRAME_SLACK):
        raise MediaError(f"{name} is truncated or corrupt: its header promises {total} frames, {short or 0} decode")
    import numpy as np

    return VideoPart(np.stack(kept), fps, tuple(indices[: len(kept)]), total)


def _check_header(container, stream, limits: MediaLimits, name: str) -> tuple[float, int]:
    """(frames per second, frames in the clip) from the header, refusing a clip over the limits."""
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000  # FFmpeg's AV_TIME_BASE
    else:
        seconds = stream.frames / fps if fps and stream.frames else 0.0
    if fps <= 0 or seconds <= 0:
        raise MediaError(f"{name} does not say how long it is or its frame rate")
    if seconds > limits.max_video_seconds:
        raise MediaError(f"{name} is {seconds:,.1f} s long; the limit is {limits.max_video_seconds:g} s")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > limits.max_image_pixels:
        raise MediaError(f"{name}'s frames are {width}x{height}; the limit is {limits.max_image_pixels:,} pixels")
    return fps, max(1, stream.frames or round(seconds * fps))


def _decode(container, stream, indices: list[int]) -> tuple[list, int | None]:
    """The frames at `indices`, as (H, W, 3) RGB arrays; and None once the last one is reached, else how many
    frames the clip turned out to hold."""
    wanted, last = set(indices), indices[-1]
    kept, decoded = [], 0
    for decoded, frame in enumerate(container.decode(stream), start=1):
        if decoded - 1 in wanted:
            kept.append(_rgb(frame))
        if decoded - 1 == last:
            return kept, None
    return kept, decoded


def _rgb(frame):
    scale = min(1.0, MAX_SIDE / max(frame.width, frame.height))
    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def load_video(path: str | Path, frames: int, limits: MediaLimits = DEFAULT_LIMITS) -> VideoPart:
    from gemmacli.media import read_file

    return decode_video(read_file(path, "video"), frames, limits, name=f"video {Path(path).name}")
