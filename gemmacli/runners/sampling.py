"""Choosing the next token from logits, cheaply on a 262k vocabulary.

Greedy is a plain argmax. Sampling applies top-k first so that top-p sorts k survivors instead of
the whole vocabulary; min-p needs no sort at all. Penalties and logit bias are logits stages that run
before the sampler (see stages.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gemmacli.errors import InvalidParamError
from gemmacli.types import GenParams

GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingConfig:
    """A request's sampling fields, checked once: every stage of the pipeline reads its settings here."""

    temperature: float
    top_k: int  # 0 = off
    top_p: float  # 1.0 = off
    min_p: float  # 0.0 = off
    repetition_penalty: float  # 1.0 = off; HF semantics, over prompt and output
    frequency_penalty: float  # 0.0 = off; OpenAI semantics, over output only
    presence_penalty: float
    seed: int | None

    @classmethod
    def from_params(cls, p: GenParams) -> SamplingConfig:
        checks = [
            ("temperature", p.temperature, 0.0, 100.0),
            ("top_p", p.top_p, 0.0, 1.0),
            ("min_p", p.min_p, 0.0, 1.0),
            ("repetition_penalty", p.repetition_penalty, 0.01, 100.0),
            ("frequency_penalty", p.frequency_penalty, -2.0, 2.0),
            ("presence_penalty", p.presence_penalty, -2.0, 2.0),
        ]
        for name, value, low, high in checks:
            if value is None or not low <= value <= high:
                raise InvalidParamError(f"{name} must be between {low:g} and {high:g}, got {value}", param=name)
        if p.top_k is None or p.top_k < 0:
            raise InvalidParamError(f"top_k must be 0 (off) or a positive integer, got {p.top_k}", param="top_k")
        return cls(
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p or 1.0,
            min_p=p.min_p,
            repetition_penalty=p.repetition_penalty,
            frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty,
            seed=p.seed,
        )

    @property
    def greedy(self) -> bool:
        # Below 1e-5 (vLLM's cut too), logits / temperature overflows float32: the limit is argmax anyway.
        return self.temperature < GREEDY_BELOW or self.top_k == 1

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


class Sampler:
    """Picks one token per step for one sequence, with its own seeded generator."""

    def __init__(self, config: SamplingConfig, device: torch.device):
        self.config = config
        self.generator = None
        if config.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def __call__(self, logits: torch.Tensor) -> int:
        """logits: (V,) float32 for the last position -> the chosen token id."""
        c = self.config
        if c.greedy:
            return int(logits.argmax())
        logits = logits / c.temperature
        if c.top_k or c.top_p < 1.0:
            k = c.top_k or logits.numel()
            values, indices = torch.topk(logits, min(k, logits.numel()))  # sorted, descending
            values = _top_p(values, c.top_p)
        else:
            values, indices = logits, None
        probs = torch.softmax(values, dim=-1)
        if c.min_p > 0.0:
            probs = torch.where(probs < c.min_p * probs.max(), 0.0, probs)
        choice = int(torch.multinomial(probs, 1, generator=self.generator))
        return int(indices[choice]) if indices is not None else choice


def _top_p(sorted_logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask the tail of descending logits beyond cumulative probability top_p (always keeps the first)."""
    if top_p >= 1.0:
        return sorted_logits
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p
    drop[0] = False  # a top_p below float32's smallest number (5e-324) compares as 0 and would drop it too
    return sorted_logits.masked_fill(drop, float("-inf"))
