"""Out of memory during a request: recognise it whatever raised it, and hand the memory back.

The inference thread runs on after a failure, so the next request must find the memory free again:
the failed job's tensors go with its batch and its traceback (whose frames hold the activations).
"""

from __future__ import annotations

import gc
import sys

_OOM_TEXT = ("out of memory", "MPS backend out of memory")  # CUDA/MPS errors that arrive as a plain RuntimeError


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only loaded models raise torch's errors: never import it here
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _OOM_TEXT)


def release_memory(exc: BaseException) -> None:
    """Drop the frames `exc` keeps alive, then let the allocator return what they held."""
    exc.__traceback__ = None
    exc.__context__ = exc.__cause__ = None
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()
