"""/v1/completions wire types, and the sampling fields /v1/chat/completions shares with them.

Requests convert themselves (`to_params`, `to_prompts`) and responses build themselves from neutral
types, so the routes do no field mapping (vLLM's `to_sampling_params` idea). msgspec checks types and
ranges while decoding; what it cannot express (a field we do not implement) `check()` refuses by name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from gemmacli.errors import InvalidParamError
from gemmacli.runners import grammar
from gemmacli.server.schema.common import CompletionTokensDetails, Usage, new_id, now
from gemmacli.server.schema.limits import RequestLimits, TextBudget, check_count, check_stop
from gemmacli.server.schema.logprobs import CompletionLogprobs
from gemmacli.types import Completion, Delta, FinishReason, GenParams
from gemmacli.types import Usage as NeutralUsage

# Ranges as OpenAI (or, for its extensions, vLLM) documents them; msgspec rejects anything outside with
# "- at `$.field`". Every number has both ends bounded: JSON integers may be any size, and Python keeps them.
INT64 = 2**63 - 1
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]  # 0 would keep no token at all
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1)]
TokenCount = Annotated[int, Meta(ge=1, le=2**31 - 1)]  # the context check caps it further, per model
Choices = Annotated[int, Meta(ge=1, le=128)]  # OpenAI's range for n
Seed = Annotated[int, Meta(ge=-INT64 - 1, le=INT64)]
TopK = Annotated[int, Meta(ge=-1, le=1_000_000)]  # -1 and 0 both mean "off" (vLLM uses -1); above the vocab = off
RepetitionPenalty = Annotated[float, Meta(gt=0.0, le=100.0)]  # vLLM: > 0; 1 is off
TokenId = Annotated[str, Meta(pattern=r"^[0-9]{1,9}$")]
LogitBias = Annotated[dict[TokenId, Annotated[float, Meta(ge=-100.0, le=100.0)]], Meta(max_length=1024)]
User = Annotated[str, Meta(max_length=512)]


class StreamOptions(Struct):
    include_usage: bool = False


class JsonSchemaFormat(Struct):
    name: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")] = "response"  # OpenAI's rule for the name
    schema: Any = UNSET  # absent: any JSON object
    description: str | None = None
    strict: bool | None = None  # honoured either way: the output always validates


class ResponseFormat(Struct):
    """OpenAI's structured outputs: decoding is constrained by the grammar of the schema (runners/grammar.py)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def grammar(self) -> str | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return grammar.json_object("response_format")
        if self.json_schema is None:
            unsupported("response_format.json_schema", "response_format of type json_schema needs json_schema")
        if self.json_schema.schema is UNSET:
            return grammar.json_object("response_format")
        return grammar.json_schema(self.json_schema.schema, "response_format.json_schema.schema")


class GenerationRequest(Struct, kw_only=True):
    """The fields both text endpoints share. Unset sampling fields stay None: the model's defaults apply."""

    # Accepted and ignored: they change nothing about the tokens we produce (or are bookkeeping).
    IGNORED: ClassVar[tuple[str, ...]] = (
        "user",
        "metadata",
        "store",
        "service_tier",
        "prediction",
        "stream_options.include_obfuscation",
    )

    model: str
    max_tokens: TokenCount | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: Probability | None = None
    repetition_penalty: RepetitionPenalty | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop: str | list[str] | None = None
    seed: Seed | None = None
    n: Choices | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logit_bias: LogitBias | None = None
    response_format: ResponseFormat | None = None
    user: User | None = None

    def check(self) -> None:
        """Refuse, by name, every field set to something we would otherwise silently not honour."""

    def check_limits(self, limits: RequestLimits) -> TextBudget:
        """The server's configured limits; returns the text budget so subclasses add their own texts to it."""
        if self.choices > limits.max_n:
            unsupported("n", f"n is {self.n}; this server gives at most {limits.max_n} choices per prompt (--max-n)")
        check_stop(self.stop, limits)
        return TextBudget(limits)

    def to_params(self) -> GenParams:
        self.check()
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=0 if self.top_k == -1 else self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop=tuple(s for s in stop if s),  # an empty stop string would end every generation at once
            seed=self.seed,
            logit_bias=tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items()),
            grammar=self.response_format.grammar() if self.response_format else None,
        )

    @property
    def choices(self) -> int:
        """Choices per prompt (OpenAI's n)."""
        return self.n or 1

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def unsupported(param: str, message: str) -> None:
    raise InvalidParamError(message, param=param)


def finish_reason(reason: FinishReason | None) -> str | None:
    """The runner reports "cancelled" only when the client is gone or timed out; OpenAI has no such value,
    and "length" (the text was cut short) is the truthful one of its own."""
    return "length" if reason == "cancelled" else reason


def wire_usage(usage: NeutralUsage) -> Usage:
    details = CompletionTokensDetails(usage.reasoning_tokens) if usage.reasoning_tokens else None
    return Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, details)


# -- /v1/completions


TextPrompt = str | tuple[int, ...]  # a string to tokenize, or token ids fed as they are


class CompletionRequest(GenerationRequest, kw_only=True):
    prompt: str | list[str | int | list[int]]
    max_tokens: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None  # 0 only with echo: the prompt alone
    echo: bool | None = False
    suffix: str | None = None
    best_of: Annotated[int, Meta(ge=1, le=20)] | None = None  # OpenAI's range
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None  # OpenAI's range

    def check_limits(self, limits: RequestLimits) -> TextBudget:
        budget = super().check_limits(limits)
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        check_count(prompts, limits.max_inputs, "prompt", "prompts")
        if prompts and isinstance(prompts[0], int):  # one token-id list: its ids are the text
            prompts = [prompts]
        for i, prompt in enumerate(prompts):
            size = len(prompt) if isinstance(prompt, str | list) else 1  # a mix of kinds is to_prompts()'s to refuse
            budget.add(size, "prompt" if len(prompts) == 1 else f"prompt[{i}]")
        return budget

    def check(self) -> None:
        super().check()
        if self.max_tokens == 0 and not self.echo:
            unsupported("max_tokens", "max_tokens must be at least 1 (0 only with echo: true, for the prompt alone)")
        if self.suffix:
            unsupported("suffix", "suffix (fill in the middle) is not supported")
        if self.best_of not in (None, self.choices):
            unsupported("best_of", "best_of must equal n: choosing the best of more candidates is not supported")

    def to_params(self) -> GenParams:
        return replace(super().to_params(), logprobs=self.logprobs, echo=bool(self.echo))

    def to_prompts(self) -> list[TextPrompt]:
        """The four shapes OpenAI accepts: a string, strings, token ids, lists of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise InvalidParamError("prompt must not be an empty list", param="prompt")
        if all(isinstance(x, str) for x in p):
            return list(p)
        if all(isinstance(x, int) for x in p):
            return [tuple(p)]
        if all(isinstance(x, list) for x in p):
            if not all(p):
                raise InvalidParamError("prompt token id lists must not be empty", param="prompt")
            return [tuple(ids) for ids in p]
        raise InvalidParamError(
            "prompt must be a string, a list of strings, a list of token ids or a list of token id lists",
            param="prompt",
        )


class CompletionChoice(Struct):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class TextCompletion(Struct, kw_only=True):
    id: str
    object: str = "text_completion"  # streamed chunks too, as OpenAI sends them
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | UnsetType | None = UNSET  # absent on stream chunks unless include_usage asked for it
    system_fingerprint: None = None

    @classmethod
    def build(
        cls, model: str, completions: list[Completion], usage: NeutralUsage, logprobs: bool = False
    ) -> TextCompletion:
        choices = [
            CompletionChoice(
                i, c.text, finish_reason(c.finish_reason), CompletionLogprobs.build(c.logprobs) if logprobs else None
            )
            for i, c in enumerate(completions)
        ]
        return cls(id=new_id("cmpl"), created=now(), model=model, choices=choices, usage=wire_usage(usage))


class CompletionChunks:
    """Turns deltas into stream chunks; every chunk shares one id and created time, as OpenAI's do."""

    def __init__(self, model: str, include_usage: bool, logprobs: bool = False):
        self.logprobs = logprobs
        self.offsets: dict[int, int] = {}  # characters each choice has streamed, for text_offset
        self.id = new_id("cmpl")
        self.created = now()
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, choices: list[CompletionChoice], usage: Any = None) -> TextCompletion:
        return TextCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage if self.include_usage else UNSET,
        )

    def opening(self) -> list[TextCompletion]:
        return []

    def on_delta(self, index: int, delta: Delta) -> list[TextCompletion]:
        logprobs = None
        if self.logprobs:
            logprobs = CompletionLogprobs.build(delta.logprobs, self.offsets.get(index, 0))
            self.offsets[index] = self.offsets.get(index, 0) + sum(len(e.text) for e in delta.logprobs)
        # The last choice chunk carries the finish reason (and whatever text the stop matcher held back).
        choice = CompletionChoice(index, delta.text, finish_reason(delta.finish_reason), logprobs)
        return [self._chunk([choice])]

    def closing(self, usage: NeutralUsage) -> list[TextCompletion]:
        return [self._chunk([], wire_usage(usage))] if self.include_usage else []
