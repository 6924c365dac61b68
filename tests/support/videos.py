"""Small video clips made on the spot with PyAV: a bar that sweeps left to right, one step per frame."""

from __future__ import annotations

import io


def make_clip(frames: int = 48, fps: int = 24, size: tuple[int, int] = (96, 64), codec: str = "mpeg4") -> bytes:
    """An MP4 (mpeg4), WebM (libvpx) or Matroska (libx264) clip of `frames` frames."""
    import av
    import numpy as np

    container_format = {"mpeg4": "mp4", "libvpx": "webm", "libx264": "matroska"}[codec]
    width, height = size
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, : max(1, (i + 1) * width // frames)] = (230, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
