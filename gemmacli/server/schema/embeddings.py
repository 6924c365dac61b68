"""OpenAI's /v1/embeddings wire types: the request turns itself into texts, the response builds itself from Embeddings.

`input` takes every shape OpenAI's API takes: a string, a list of strings, a list of token ids or a list of
token-id lists. Token ids must come from the served model's own tokenizer (not tiktoken): they are decoded back
to text with it, special tokens dropped, and embedded like that text, so a client that tokenized the text itself
gets the same vector as for the text. Inputs longer than the model's window are refused with a 400, as OpenAI
does, unless the request sends `"truncate": true` (Text Embeddings Inference's name) or the server runs with
--embed-truncate: then they are cut to the window, as sentence-transformers does, and `usage` counts the
tokens really embedded.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from gemmacli.errors import InvalidParamError
from gemmacli.server.schema.limits import RequestLimits, TextBudget, check_count

if TYPE_CHECKING:
    import numpy as np

    from gemmacli.types import Embeddings

# msgspec allows one array type per union, so the list's items are a union and texts() refuses a mix of kinds.
Input = str | list[str | int | list[int]]
_INPUT_DOC = "A string, a list of strings, a list of token ids or a list of token-id lists (the model's own ids)."


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: Annotated[Input, msgspec.Meta(description=_INPUT_DOC)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: (
        Annotated[int, msgspec.Meta(ge=1, le=65_536, description="Keep the first N dimensions, renormalised.")] | None
    ) = None
    truncate: Annotated[bool, msgspec.Meta(description="Cut inputs longer than the model's window.")] | None = None
    user: Annotated[str, msgspec.Meta(max_length=512)] | None = None  # accepted for compatibility, not used

    def __post_init__(self) -> None:
        # Runs while Litestar decodes the body, so a malformed input is refused before the request queues.
        _check_shape(self.items)

    def check_limits(self, limits: RequestLimits) -> None:
        """Inputs per request and characters (or token ids) per input and in all, before any work is queued."""
        items = self.items
        check_count(items, limits.max_inputs, "input", "inputs")
        budget = TextBudget(limits)
        for i, item in enumerate(items):
            budget.add(len(item), "input" if len(items) == 1 else f"input[{i}]")

    def fit(self, result: Embeddings, max_tokens: int, model: str, truncate_default: bool) -> Embeddings:
        """400 for an input longer than the model's window unless truncation was asked for; else usage
        counts the tokens really embedded (the runner reports each input's full length)."""
        truncate = truncate_default if self.truncate is None else self.truncate
        longest = max(range(len(result.token_counts)), key=result.token_counts.__getitem__)
        if not truncate and result.token_counts[longest] > max_tokens:
            param = "input" if len(result.token_counts) == 1 else f"input[{longest}]"
            raise InvalidParamError(
                f"{param} is {result.token_counts[longest]:,} tokens; {model} reads at most {max_tokens:,}. "
                'Shorten it, or send "truncate": true to embed its first tokens only',
                param=param,
            )
        return replace(result, token_counts=tuple(min(n, max_tokens) for n in result.token_counts))

    @property
    def items(self) -> list[Any]:
        """The input as a list: one text, or one token-id list, becomes a list of one."""
        if isinstance(self.input, str) or (self.input and all(isinstance(i, int) for i in self.input)):
            return [self.input]
        return list(self.input)

    @property
    def token_ids(self) -> bool:
        """True when the input is token ids, which only the model's tokenizer turns back into text."""
        return not isinstance(self.items[0], str)  # never empty and never mixed: __post_init__ checked

    def texts(self, tokenizer: Any) -> list[str]:
        """The texts to embed. Token ids are decoded with `tokenizer`: call this on the inference thread."""
        return [item if isinstance(item, str) else _decode(item, tokenizer) for item in self.items]


def _check_shape(items: list[Any]) -> None:
    if not items:
        raise InvalidParamError("input must not be empty", param="input")
    if len({type(item) for item in items}) > 1:
        raise InvalidParamError(
            "input mixes strings and token ids: send a string, a list of strings, a list of token ids "
            "or a list of token-id lists",
            param="input",
        )
    if any(len(item) == 0 for item in items):
        raise InvalidParamError("input must not contain an empty string or an empty token list", param="input")


def _decode(ids: list[int], tokenizer: Any) -> str:
    vocab = len(tokenizer)
    bad = next((i for i in ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise InvalidParamError(
            f"token id {bad} is outside this model's vocabulary (0 to {vocab - 1}); send the model's own token ids",
            param="input",
        )
    # Special tokens are dropped: embedding the text adds the model's own [CLS]/[SEP] again.
    return tokenizer.decode(ids, skip_special_tokens=True)


class EmbeddingObject(msgspec.Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32 bytes


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage

    @classmethod
    def build(cls, model: str, result: Embeddings, encoding_format: str) -> EmbeddingResponse:
        encode = _base64 if encoding_format == "base64" else _floats
        return cls(
            data=[EmbeddingObject(index=i, embedding=encode(v)) for i, v in enumerate(result.vectors)],
            model=model,
            usage=EmbeddingUsage(prompt_tokens=result.total_tokens, total_tokens=result.total_tokens),
        )


def _floats(vector: np.ndarray) -> list[float]:
    return vector.tolist()  # the float32 values as Python floats, exactly what `gemmacli embed` prints


def _base64(vector: np.ndarray) -> str:
    # What the openai client decodes with np.frombuffer(..., dtype="float32"): 4 bytes a value, little-endian.
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
