"""A faster output projection for batched decoding on CPU, with the same weights and results.

Gemma's output projection is 262k x hidden: at a handful of rows, `F.linear(x, W)` (x @ W.T) makes
the BLAS repack all of W on every call, which costs more than the arithmetic. `W @ x.T` streams W
once as it lies in memory. Measured on a 2-core AVX-512 VM, Gemma 3 270M, float32: 1.6x faster at
8 rows, 2.2x at 32; a single row (GEMV) and prefill-sized inputs are left to F.linear.
"""

from __future__ import annotations

import torch

ROWS = range(2, 65)  # where the transposed product wins; outside it, F.linear


class TallLinear(torch.nn.Module):
    """Drop-in for the bias-free output nn.Linear; shares its weight (tied to the embeddings in Gemma)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.weight = linear.weight
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] not in ROWS:
            return torch.nn.functional.linear(x, self.weight)
        logits = torch.mm(self.weight, rows.t()).t().contiguous()  # rows are read one by one when sampling
        return logits.reshape(*x.shape[:-1], self.out_features)


def use_tall_lm_head(model) -> bool:
    """Swap the model's output projection for TallLinear when it runs on CPU; True when swapped."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None or head.weight.device.type != "cpu":
        return False
    model.set_output_embeddings(TallLinear(head))
    return True
