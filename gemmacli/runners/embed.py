"""EmbedRunner: sentence embeddings, pooled and normalised the way each model's own config says."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from gemmacli.device import Placement
from gemmacli.errors import InvalidParamError
from gemmacli.runners.base import Memory, module_memory
from gemmacli.types import Embeddings, GenParams

if TYPE_CHECKING:
    import numpy as np


class EmbedRunner:
    """Wraps a sentence-transformers model: its modules.json carries pooling and normalisation.

    A plain transformers encoder without modules.json gets mean pooling, which is what
    sentence-transformers falls back to as well.
    """

    task: ClassVar = "embed"
    cpu_bf16: ClassVar = False  # small encoders: bf16 buys little on a CPU
    ENCODERS: ClassVar = ("bert", "xlm-roberta", "mpnet", "nomic_bert")

    def __init__(self, model, *, name: str, placement: Placement):
        self.model = model
        self.name = name
        self.placement = placement
        self.tokenizer = model.tokenizer
        self.dimensions = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length or self.tokenizer.model_max_length)

    @classmethod
    def detects(cls, config: dict, folder: Path) -> bool:
        """sentence-transformers' modules.json, or a bare encoder (Gemma's own bare models are chat models)."""
        model_type, architectures = config.get("model_type", ""), " ".join(config.get("architectures") or [])
        if (folder / "modules.json").is_file() or model_type in cls.ENCODERS:
            return True
        generates = any(kind in architectures for kind in ("CausalLM", "ConditionalGeneration", "SpeechSeq2Seq"))
        return architectures.endswith("Model") and not generates and not model_type.startswith(("gemma", "whisper"))

    @classmethod
    def load(cls, path: Path, placement: Placement, *, name: str, defaults: GenParams = GenParams()) -> EmbedRunner:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            str(path),
            device=placement.device,
            local_files_only=True,
            trust_remote_code=False,
            model_kwargs={"dtype": placement.dtype, "attn_implementation": "sdpa", "use_safetensors": True},
        )
        return cls(model.eval(), name=name, placement=placement)

    def warm_up(self) -> None:
        self.embed(["warm-up"])

    def memory(self) -> Memory:
        return module_memory(self.model, self.placement)

    def close(self) -> None:
        self.model = self.tokenizer = None

    def embed(self, texts: Sequence[str], *, dimensions: int | None = None, batch_size: int = 32) -> Embeddings:
        """Unit-norm vectors (N, D); with `dimensions`, cut to the first D and renormalised (Matryoshka style).

        An input longer than `max_tokens` is embedded from its first `max_tokens` tokens, as sentence-transformers
        does; its token count is still its full length, so callers can refuse it (the server does, like OpenAI).
        """
        import numpy as np

        if not texts:
            raise InvalidParamError("input must not be empty", param="input")
        check_dimensions(dimensions, self.dimensions, self.name)
        vectors = self.model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False
        ).astype(np.float32)
        return Embeddings(truncate(vectors, dimensions), self.count_tokens(texts))

    def count_tokens(self, texts: Sequence[str]) -> tuple[int, ...]:
        """Each input's full length in tokens, special tokens included; above `max_tokens` means it is cut."""
        lengths = self.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return tuple(len(ids) for ids in lengths["input_ids"])


def truncate(vectors: np.ndarray, dimensions: int | None = None) -> np.ndarray:
    """(N, D) -> (N, dimensions): keep the first `dimensions` values and renormalise to unit length.

    Matryoshka-style cutting; the server embeds a batch once at full size and cuts per request with this.
    """
    import numpy as np

    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def check_dimensions(dimensions: int | None, available: int, model: str) -> None:
    """Refuse a `dimensions` the model cannot give, before any work is queued for it."""
    if dimensions is not None and not 1 <= dimensions <= available:
        raise InvalidParamError(
            f"dimensions must be between 1 and {available} for {model}, got {dimensions}", param="dimensions"
        )
