"""ChatRunner: Gemma chat (text, and images and audio on the multimodal checkpoints) through its decoder.

torch and transformers are imported where a model loads, not at the top: the task table (RUNNERS)
imports this module, and `gemmacli models` must not pay for torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from gemmacli.device import Placement, cpu_has_native_bf16
from gemmacli.errors import GemmacliError, InvalidParamError, ModelUnavailableError, UnsupportedInputError
from gemmacli.runners.base import Memory, encoder_modalities, module_memory
from gemmacli.runners.tools import tool_format
from gemmacli.types import AudioPart, Completion, Delta, GenParams, Message, TextPart, ToolUse, VideoPart

if TYPE_CHECKING:
    from gemmacli.runners.decoder import Decoder, Prompt


class ChatRunner:
    """One chat model, its tokenizer (or processor) and the decoder that produces its tokens."""

    task: ClassVar = "chat"
    cpu_bf16: ClassVar = True  # bf16 roughly doubles decode speed on CPUs with bf16 instructions

    def __init__(self, model, processor, *, name: str, defaults: GenParams = GenParams(), placement: Placement):
        from gemmacli.runners.decoder import Decoder

        self.model = model
        self.processor = processor
        self.name = name
        self.placement = placement
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.vision = getattr(model.config, "vision_config", None) is not None
        self.audio = getattr(model.config, "audio_config", None) is not None
        # Gemma 4: frames through the vision tower, where the processor has a video processor (or our stand-in)
        self.video = (
            self.vision and getattr(getattr(processor, "video_processor", None), "num_frames", None) is not None
        )
        self.tool_format = tool_format(model.config.model_type, getattr(self.tokenizer, "chat_template", None))
        self.decoder: Decoder = Decoder(
            model,
            self.tokenizer,
            eos_ids=_eos_ids(model.generation_config, self.tokenizer),
            context_length=_context_length(model.config),
            defaults=defaults,
            name=name,
        )

    @classmethod
    def detects(cls, config: dict, folder: Path) -> bool:
        architectures = " ".join(config.get("architectures") or [])
        return any(kind in architectures for kind in ("CausalLM", "ConditionalGeneration")) or config.get(
            "model_type", ""
        ).startswith("gemma")

    @classmethod
    def load(cls, path: Path, placement: Placement, *, name: str, defaults: GenParams = GenParams()) -> ChatRunner:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        from gemmacli.runners.cpu_linear import pack_linears
        from gemmacli.runners.processors import load_processor

        config = AutoConfig.from_pretrained(path)
        vision = getattr(config, "vision_config", None) is not None
        if vision:
            _check_tower_libraries(config, name)
        model_class = AutoModelForImageTextToText if vision else AutoModelForCausalLM
        kwargs = placement.from_pretrained_kwargs()
        if vision:  # the towers keep their own default: Gemma 4's audio tower has no SDPA, Gemma 3n's vision no flash
            kwargs["attn_implementation"] = {"text_config": kwargs["attn_implementation"]}
        model = model_class.from_pretrained(path, **kwargs)
        if not placement.device_map_auto:
            model = model.to(placement.device)
        # CPU only: decode steps stop repacking every weight matrix; bf16 without bf16 instructions computes in fp32
        pack_linears(
            model, widen_bf16=not cpu_has_native_bf16(), only=(model.get_decoder(), model.get_output_embeddings())
        )
        processor = load_processor(path) if vision else AutoTokenizer.from_pretrained(path)
        return cls(model.eval(), processor, name=name, defaults=defaults, placement=placement)

    @property
    def modalities(self) -> tuple[str, ...]:
        """What it takes in, from its config: text, and images and audio where it has their encoders; video where
        its processor samples frames for the vision tower."""
        return (*encoder_modalities(vars(self.model.config)), *(("video",) if self.video else ()))

    @property
    def video_frames(self) -> int:
        """Frames it reads per clip: its video processor's num_frames."""
        return int(self.processor.video_processor.num_frames) if self.video else 0

    @property
    def defaults(self) -> GenParams:
        return self.decoder.defaults

    @property
    def context_length(self) -> int:
        return self.decoder.context_length

    @property
    def eos_ids(self) -> frozenset[int]:
        return self.decoder.eos_ids

    # -- the runner protocol

    def warm_up(self) -> None:
        for _ in self.stream_text("Hello", GenParams(max_tokens=2, temperature=0.0)):
            pass

    def memory(self) -> Memory:
        return module_memory(self.model, self.placement)

    def close(self) -> None:
        self.decoder.close()
        self.model = self.processor = self.tokenizer = self.decoder = None

    # -- generation: insert into the decoder, step until the sequence ends

    def stream(
        self,
        messages: Sequence[Message],
        params: GenParams = GenParams(),
        tools: ToolUse | None = None,
        *,
        thinking: bool | None = None,
        **kw,
    ) -> Iterator[Delta]:
        """Chat: render the model's chat template (with `tools` on offer), then generate."""
        return self.generate(self.encode_chat(messages, tools, thinking=thinking), params, **kw)

    def stream_text(self, prompt: str, params: GenParams = GenParams(), **kw) -> Iterator[Delta]:
        """Raw completion of `prompt`, no chat template (what /v1/completions and base models want)."""
        return self.generate(self.encode_text(prompt), params, **kw)

    def complete(
        self, messages: Sequence[Message], params: GenParams = GenParams(), tools: ToolUse | None = None
    ) -> Completion:
        return collect(self.stream(messages, params, tools))

    def complete_text(self, prompt: str, params: GenParams = GenParams()) -> Completion:
        return collect(self.stream_text(prompt, params))

    def generate(
        self, prompt: Prompt, params: GenParams = GenParams(), *, cancelled: Callable[[], bool] | None = None
    ) -> Iterator[Delta]:
        """Decode `prompt` on a decoder nobody else is using (the CLI, a warm-up): insert, then step until done.
        Parameters are checked at once, before the first delta is asked for."""
        if not self.decoder.idle:
            raise GemmacliError(f"the decoder of {self.name} is busy; the server's engine drives it")
        seq = self.decoder.insert(prompt, params, cancelled or (lambda: False))
        return self._drain(seq)

    def _drain(self, seq) -> Iterator[Delta]:
        try:
            while not seq.done:
                for stepped, deltas in self.decoder.step():
                    if stepped is seq:  # the others are cancelled sequences reporting their end
                        if seq.error is not None:
                            raise seq.error
                        yield from deltas
        finally:
            if not seq.done:  # the caller stopped reading: the sequence leaves the decoder now
                self.decoder.cancel(seq)
                self.decoder.step()

    # -- prompts

    def encode_text(self, prompt: str) -> Prompt:
        from gemmacli.runners.decoder import Prompt

        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        return Prompt(ids.to(self.model.device), text=prompt)

    def encode_ids(self, ids: Sequence[int]) -> Prompt:
        """Token ids fed exactly as given (OpenAI's completions accept them); each must be in the vocabulary."""
        import torch

        from gemmacli.runners.decoder import Prompt

        vocab = self.decoder.vocab_size
        if not all(0 <= t < vocab for t in ids):
            raise InvalidParamError(f"prompt token ids must be between 0 and {vocab - 1}", param="prompt")
        return Prompt(torch.tensor([list(ids)], device=self.model.device))  # (1, T)

    def encode_chat(
        self, messages: Sequence[Message], tools: ToolUse | None = None, *, thinking: bool | None = None
    ) -> Prompt:
        """The chat template over `messages`, in the model's tool format (which also renders past calls and their
        results); with `tools`, the sequences of this prompt parse tool calls, and are held to them if required.
        `thinking` goes to the template as enable_thinking (Gemma 4's switch); None leaves the template's default."""
        from gemmacli.runners.decoder import Prompt
        from gemmacli.runners.tools.stage import PromptTools

        self._check_inputs(messages)
        if any(m.videos for m in messages):
            messages = [_thinned(m, self.video_frames) for m in messages]
        turns, template_kwargs = self.tool_format.render(messages, tools, _message_dict)
        if thinking is not None:
            template_kwargs["enable_thinking"] = thinking
        processor_kwargs = {}
        if videos := [v for m in messages for v in m.videos]:  # frames come sampled: the times of each go along
            processor_kwargs = {"video_metadata": [_video_metadata(v) for v in videos], "do_sample_frames": False}
        try:
            inputs = self.processor.apply_chat_template(
                turns,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs=processor_kwargs,
                **template_kwargs,
            )
        except Exception as exc:  # jinja raise_exception (roles not alternating...) and processor errors
            raise InvalidParamError(f"cannot render the chat template: {exc}", param="messages") from None
        inputs = inputs.to(self.model.device)
        input_ids = inputs.pop("input_ids")
        inputs.pop("attention_mask", None)
        for name in ("pixel_values", "pixel_values_videos", "input_features"):  # the towers compute in its dtype
            if name in inputs:
                inputs[name] = inputs[name].to(self.model.dtype)
        config = self.model.config  # Gemma 3 names it image_token_index, Gemma 3n and 4 image_token_id
        image_token = getattr(config, "image_token_id", getattr(config, "image_token_index", None))
        image_tokens = int((input_ids == image_token).sum()) if image_token is not None else 0
        return Prompt(input_ids, dict(inputs), image_tokens, PromptTools(self.tool_format, tools) if tools else None)

    def _check_inputs(self, messages: Sequence[Message]) -> None:
        if not messages:
            raise InvalidParamError("messages must not be empty", param="messages")
        reads = self.modalities
        if any(m.images for m in messages) and "image" not in reads:
            raise UnsupportedInputError(f"model {self.name} is text-only and cannot read images", param="messages")
        if any(m.audios for m in messages) and "audio" not in reads:
            raise UnsupportedInputError(f"model {self.name} cannot read audio", param="messages")
        if any(m.videos for m in messages) and "video" not in reads:
            raise UnsupportedInputError(f"model {self.name} cannot read video", param="messages")
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise UnsupportedInputError(f"model {self.name} has no chat template; use a raw text completion instead")


def collect(deltas: Iterator[Delta]) -> Completion:
    """Join a stream into one Completion."""
    parts, ids, logprobs, calls, thoughts = [], [], [], [], []
    for d in deltas:
        parts.append(d.text)
        ids.extend(d.token_ids)
        logprobs.extend(d.logprobs)
        calls.extend(d.tool_calls)
        thoughts.append(d.reasoning)
        if d.finish_reason is not None:
            text, thought = "".join(parts), "".join(thoughts)
            return Completion(text, tuple(ids), d.finish_reason, d.usage, tuple(logprobs), tuple(calls), thought)
    raise GemmacliError("generation ended without a final delta")


def _message_dict(message: Message) -> dict:
    if isinstance(message.content, str):
        return {"role": message.role, "content": message.content}
    content = []
    for part in message.content:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, AudioPart):
            content.append({"type": "audio", "audio": part.samples})  # 16 kHz mono, the feature extractors' rate
        elif isinstance(part, VideoPart):
            content.append({"type": "video", "video": part.frames})
        else:
            content.append({"type": "image", "image": part.image})
    return {"role": message.role, "content": content}


def _check_tower_libraries(config, name: str) -> None:
    """Gemma 3n's vision tower is timm's MobileNetV5: without timm, one line saying what to install."""
    if config.model_type != "gemma3n":
        return
    try:
        import timm  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "timm":  # timm is there, one of its own imports is not (torchvision, often)
            reason = f"{name}'s vision tower needs timm, which cannot import {exc.name}"
            raise ModelUnavailableError(reason, param="model") from None
        raise ModelUnavailableError(
            f"{name}'s vision tower needs timm, which is not installed: pip install 'gemmacli[gemma3n]'", param="model"
        ) from None


def _thinned(message: Message, frames: int) -> Message:
    """`message` with each clip cut to `frames` evenly spaced frames, where it holds more than the model reads."""
    if not message.videos:
        return message
    parts = tuple(_fewer_frames(p, frames) if isinstance(p, VideoPart) else p for p in message.content)
    return dataclasses.replace(message, content=parts)


def _fewer_frames(video: VideoPart, frames: int) -> VideoPart:
    if len(video.indices) <= frames:
        return video
    keep = [i * len(video.indices) // frames for i in range(frames)]
    return dataclasses.replace(video, frames=video.frames[keep], indices=tuple(video.indices[i] for i in keep))


def _video_metadata(video: VideoPart):
    from transformers.video_utils import VideoMetadata

    height, width = video.frames.shape[1:3]
    return VideoMetadata(
        total_num_frames=video.total_frames,
        fps=video.fps,
        duration=video.total_frames / video.fps,
        height=height,
        width=width,
        frames_indices=list(video.indices),
    )


def _context_length(config) -> int:
    text = config.get_text_config()
    return int(getattr(text, "max_position_embeddings", None) or 8192)


def _eos_ids(generation_config, tokenizer) -> set[int]:
    eos = generation_config.eos_token_id if generation_config is not None else None
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
