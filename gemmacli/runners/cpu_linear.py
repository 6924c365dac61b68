"""Linear layers whose weights are laid out once for oneDNN, for decoding on CPU.

A decode step multiplies a handful of rows by every weight matrix. `F.linear` hands the BLAS a
transposed weight, and at a few rows it repacks the whole matrix on every call, which costs more than
the arithmetic. Reordering each weight once into oneDNN's blocked layout removes that. Measured on a
2-core AVX-512 VM, Gemma 3 270M, float32, one decode step: 178 -> 111 ms at 8 sequences, 410 -> 260 ms
at 32; 8 rows through the 262k x 640 output projection: 128 ms (F.linear) -> 43 ms.
"""

from __future__ import annotations

import torch

DTYPES = (torch.float32, torch.bfloat16)
_BATCH_HINT = 8  # rows the layout is tuned for; any row count works


class PackedLinear(torch.nn.Module):
    """Drop-in for a CPU nn.Linear, computing with a reordered copy of its weight."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), _BATCH_HINT)
        self.register_buffer("packed", packed, persistent=False)  # counted with the model's memory
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def packable(module: torch.nn.Module) -> bool:
    """A plain CPU Linear in float32/bfloat16 that nothing else manages (accelerate hooks, int8 subclasses)."""
    if type(module) is not torch.nn.Linear or hasattr(module, "_hf_hook"):
        return False
    weight = module.weight
    return (
        weight.device.type == "cpu"
        and weight.dtype in DTYPES
        and (module.bias is None or module.bias.dtype == weight.dtype)
    )


def pack_linears(model: torch.nn.Module) -> int:
    """Swap every packable Linear of `model` for a PackedLinear; returns how many were swapped.

    Weights shared with an embedding (Gemma ties its output projection to them) stay where they are and
    the packed copy comes on top: for Gemma 3 270M in float32, 671 MB more.
    """
    if not torch.backends.mkldnn.is_available():
        return 0
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if packable(child):
                setattr(parent, name, PackedLinear(child))
                swapped += 1
    return swapped
