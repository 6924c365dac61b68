"""A multimodal chat model's processor, even where its video processor cannot be built.

Gemma 4's processor holds a video processor, and transformers builds video processors with torchvision only:
without torchvision, `AutoProcessor` fails on every Gemma 4 checkpoint, for images and audio too. There the
processor is put together from its other parts, and frames go through its image processor (`FramesAsImages`);
with torchvision nothing changes.
"""

from __future__ import annotations

import json
from pathlib import Path

VIDEO = "video_processor"


def load_processor(path: Path):
    """`AutoProcessor.from_pretrained(path)`, or the same processor without its video processor when only that
    part needs torchvision, which is not installed."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, OSError):
        base = None if is_torchvision_available() else _processor_class(path)
        if base is None or VIDEO not in base.get_attributes():
            raise
    return _without_video(base, path)


def _processor_class(path: Path):
    import transformers

    config = path / "processor_config.json"
    name = json.loads(config.read_text()).get("processor_class") if config.is_file() else None
    return getattr(transformers, name, None) if name else None


def _without_video(base, path: Path):
    """An instance of `base` built from the folder's other parts, its video processor None."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    loaders = {
        "tokenizer": AutoTokenizer,
        "image_processor": AutoImageProcessor,
        "feature_extractor": AutoFeatureExtractor,
    }
    names = [name for name in base.get_attributes() if name != VIDEO]
    parts = {name: loaders[name].from_pretrained(path) for name in names}
    saved = json.loads((path / "processor_config.json").read_text())
    settings = {key: value for key, value in saved.items() if key not in (*base.get_attributes(), "processor_class")}
    processor = _class_without_video(base)(**parts, video_processor=None, **settings)
    if processor.chat_template is None:  # saved beside the tokenizer's, in chat_template.jinja
        processor.chat_template = parts["tokenizer"].chat_template
    video = _video_in(saved, path)
    if video is not None and "image_processor" in parts:
        processor.video_processor = FramesAsImages(parts["image_processor"], video)
    return processor


def video_settings(path: Path) -> dict | None:
    """The video processor's settings: in processor_config.json (transformers 5), or a file of their own."""
    config = path / "processor_config.json"
    try:
        saved = json.loads(config.read_text()) if config.is_file() else {}
    except (OSError, ValueError):
        saved = {}
    return _video_in(saved, path)


def _video_in(saved: object, path: Path) -> dict | None:
    """The video settings within a folder's processor_config.json (`saved`), or in their own file beside it."""
    video = saved.get(VIDEO) if isinstance(saved, dict) else None
    own = path / "video_preprocessor_config.json"
    if not isinstance(video, dict) and own.is_file():
        video = json.loads(own.read_text())
    return video if isinstance(video, dict) else None


def _class_without_video(base):
    """`base`, whose parts are checked and set by ProcessorMixin, with the video processor left out of them."""
    from transformers.processing_utils import ProcessorMixin

    class DropVideo(ProcessorMixin):
        def __init__(self, *args, video_processor=None, **kwargs):
            self.video_processor = None
            super().__init__(*args, **kwargs)

    class WithoutVideo(base, DropVideo):
        @classmethod
        def get_attributes(cls):
            return [name for name in base.get_attributes() if name != VIDEO]

    WithoutVideo.__name__ = WithoutVideo.__qualname__ = base.__name__
    return WithoutVideo


class FramesAsImages:
    """Gemma 4's video processor where torchvision is missing: each frame goes through the model's own image
    processor at the video's soft-token budget, which is the resize, rescale and patching the video processor
    does per frame (with PIL's bicubic in place of torchvision's). Frames come sampled (media_video.py)."""

    def __init__(self, image_processor, settings: dict):
        self.image_processor = image_processor
        self.max_soft_tokens = settings.get("max_soft_tokens", 70)
        self.num_frames = settings.get("num_frames", 32)

    def __call__(self, videos, video_metadata=None, **_):
        import torch
        from PIL import Image
        from transformers import BatchFeature
        from transformers.video_utils import make_batched_videos

        pixels, positions, frames, soft_tokens = [], [], [], []
        for video in make_batched_videos(videos):
            images = [Image.fromarray(frame) for frame in video]
            out = self.image_processor(images, max_soft_tokens=self.max_soft_tokens, return_tensors="pt")
            pixels.append(out["pixel_values"])
            positions.append(out["image_position_ids"])
            frames.append(len(images))
            soft_tokens.append(int(out["num_soft_tokens_per_image"][0]))
        data = {
            "pixel_values_videos": torch.cat(pixels),
            "video_position_ids": torch.cat(positions),
            "num_frames_per_video": frames,
            "num_soft_tokens_per_video": soft_tokens,
            "video_metadata": video_metadata,
        }
        return BatchFeature(data=data)
