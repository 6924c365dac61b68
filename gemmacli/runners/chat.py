"""ChatRunner: Gemma 3 chat (text, and images on the multimodal checkpoints) as a stream of deltas."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gemmacli.device import Placement, cpu_has_native_bf16
from gemmacli.errors import ContextLengthError, GemmacliError, InvalidParamError, UnsupportedInputError
from gemmacli.runners.cpu_linear import pack_linears
from gemmacli.types import GLOBAL_GEN_DEFAULTS, Completion, Delta, GenParams, Message, TextPart


@dataclass(frozen=True)
class Prompt:
    """A tokenized prompt, ready for the decode loop."""

    input_ids: object  # torch.Tensor (1, T)
    extra_inputs: dict  # pixel_values, token_type_ids... (prefill only)
    image_tokens: int = 0

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


class ChatRunner:
    """Owns one chat model and its tokenizer/processor. Not thread-safe: one caller at a time."""

    def __init__(self, model, processor, *, name: str, defaults: GenParams = GenParams(), placement: Placement):
        self.model, self.processor, self.name, self.placement = model, processor, name, placement
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.defaults = defaults
        self.vision = getattr(model.config, "vision_config", None) is not None
        self.context_length = _context_length(model.config)
        self.eos_ids = _eos_ids(model.generation_config, self.tokenizer)

    @classmethod
    def load(cls, path: Path, placement: Placement, *, name: str, defaults: GenParams = GenParams()) -> ChatRunner:
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        config = AutoConfig.from_pretrained(path)
        vision = getattr(config, "vision_config", None) is not None
        model_class = AutoModelForImageTextToText if vision else AutoModelForCausalLM
        model = model_class.from_pretrained(path, **placement.from_pretrained_kwargs())
        if not placement.device_map_auto:
            model = model.to(placement.device)
        # CPU only: decode steps stop repacking every weight matrix; bf16 without bf16 instructions computes in fp32
        pack_linears(model, widen_bf16=not cpu_has_native_bf16())
        processor = AutoProcessor.from_pretrained(path) if vision else AutoTokenizer.from_pretrained(path)
        return cls(model.eval(), processor, name=name, defaults=defaults, placement=placement)

    # -- public surface: two streams, everything else derives from them

    def stream(self, messages: Sequence[Message], params: GenParams = GenParams(), **kw) -> Iterator[Delta]:
        """Chat: render the model's chat template, then generate."""
        return self.generate(self.encode_chat(messages), params, **kw)

    def stream_text(self, prompt: str, params: GenParams = GenParams(), **kw) -> Iterator[Delta]:
        """Raw completion of `prompt`, no chat template (what /v1/completions and base models want)."""
        return self.generate(self.encode_text(prompt), params, **kw)

    def complete(self, messages: Sequence[Message], params: GenParams = GenParams()) -> Completion:
        return collect(self.stream(messages, params))

    def complete_text(self, prompt: str, params: GenParams = GenParams()) -> Completion:
        return collect(self.stream_text(prompt, params))

    # -- prompts

    def encode_text(self, prompt: str) -> Prompt:
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        return Prompt(ids.to(self.model.device), {})

    def encode_chat(self, messages: Sequence[Message]) -> Prompt:
        if not messages:
            raise InvalidParamError("messages must not be empty", param="messages")
        if any(m.images for m in messages) and not self.vision:
            raise UnsupportedInputError(f"model {self.name} is text-only and cannot read images", param="messages")
        if any(m.audios for m in messages):
            raise UnsupportedInputError(f"model {self.name} cannot read audio", param="messages")
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise UnsupportedInputError(f"model {self.name} has no chat template; use a raw text completion instead")
        try:
            inputs = self.processor.apply_chat_template(
                [_message_dict(m) for m in messages],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
        except Exception as exc:  # jinja raise_exception (roles not alternating...) and processor errors
            raise InvalidParamError(f"cannot render the chat template: {exc}", param="messages") from None
        inputs = inputs.to(self.model.device)
        input_ids = inputs.pop("input_ids")
        inputs.pop("attention_mask", None)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        image_token = getattr(self.model.config, "image_token_index", None)
        image_tokens = int((input_ids == image_token).sum()) if image_token is not None else 0
        return Prompt(input_ids, dict(inputs), image_tokens)

    # -- generation

    def generate(
        self, prompt: Prompt, params: GenParams = GenParams(), *, cancelled: Callable[[], bool] = lambda: False
    ) -> Iterator[Delta]:
        """Decode `prompt` alone: a batch of one, over the same code a shared batch runs."""
        batch = self.new_batch()
        yield from batch.add(self.start(prompt, params, cancelled))
        while batch:
            for _, deltas in batch.step():
                yield from deltas

    def new_batch(self):
        """An empty ChatBatch of this model: TextGenerations added to it decode together."""
        from gemmacli.runners.generation import ChatBatch

        return ChatBatch(self.model)

    def start(self, prompt: Prompt, params: GenParams, cancelled: Callable[[], bool] = lambda: False):
        """A TextGeneration for `prompt`, with the request's, the model's and the global defaults merged."""
        from gemmacli.runners.generation import TextGeneration

        self._check_context(prompt, params.max_tokens)  # the caller's own max_tokens; defaults only clamp
        params = params.with_defaults(self.defaults, GLOBAL_GEN_DEFAULTS)
        return TextGeneration(self, prompt, params, self._max_new_tokens(prompt, params), cancelled)

    def decode_batch(self, prompts: Sequence[str], params: GenParams = GenParams()) -> Iterator[list[int | None]]:
        """Plain-text prompts decoded as one batch, the way the server runs them: each prefilled alone, then
        one token for all of them per step. Yields each sequence's new token per step (None once it ended).

        The raw loop without detokenizing, for `gemmacli bench` to time prefill and decode steps.
        """
        from gemmacli.runners.batch import DecodeBatch

        params = params.with_defaults(self.defaults, GLOBAL_GEN_DEFAULTS)
        generations = [self.start(self.encode_text(p), params) for p in prompts]
        batch = DecodeBatch(self.model)
        yield [batch.prefill(g.member, g.prompt.input_ids) for g in generations]
        while batch:
            produced = {id(member): token for member, token in batch.step()}
            if produced:
                yield [produced.get(id(g.member)) for g in generations]

    def _check_context(self, prompt: Prompt, max_tokens: int | None) -> None:
        """Refuse, as OpenAI and vLLM do, a prompt plus max_tokens that overflows the window (no silent clamp)."""
        if max_tokens is not None and max_tokens < 1:
            raise InvalidParamError(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        asked = prompt.length + (max_tokens or 1)
        if asked > self.context_length:
            wanted = f" ({prompt.length} in the prompt, {max_tokens} in the completion)" if max_tokens else ""
            raise ContextLengthError(
                f"model {self.name} takes at most {self.context_length} tokens, but this request needs "
                f"{asked}{wanted}; shorten the prompt or lower max_tokens",
                param="max_tokens" if max_tokens and prompt.length < self.context_length else "messages",
            )

    def _max_new_tokens(self, prompt: Prompt, params: GenParams) -> int:
        """The request's max_tokens, or the default one clamped to the room left in the window."""
        room = self.context_length - prompt.length
        return min(params.max_tokens or room, room)


def collect(deltas: Iterator[Delta]) -> Completion:
    """Join a stream into one Completion."""
    parts, ids = [], []
    for d in deltas:
        parts.append(d.text)
        ids.extend(d.token_ids)
        if d.finish_reason is not None:
            return Completion("".join(parts), tuple(ids), d.finish_reason, d.usage)
    raise GemmacliError("generation ended without a final delta")


def _message_dict(message: Message) -> dict:
    if isinstance(message.content, str):
        return {"role": message.role, "content": message.content}
    content = []
    for part in message.content:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        else:
            content.append({"type": "image", "image": part.image})
    return {"role": message.role, "content": content}


def _context_length(config) -> int:
    text = config.get_text_config()
    return int(getattr(text, "max_position_embeddings", None) or 8192)


def _eos_ids(generation_config, tokenizer) -> set[int]:
    eos = generation_config.eos_token_id if generation_config is not None else None
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
