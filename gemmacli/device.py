"""Device and dtype choice, shared by every loader.

torch is imported inside functions so that `gemmacli --help` stays fast.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gemmacli.errors import InvalidParamError

if TYPE_CHECKING:
    import torch

DeviceName = str  # auto | cpu | cuda | cuda:N | mps
DTypeName = Literal["auto", "bfloat16", "float16", "float32"]
DTYPE_NAMES = ("auto", "bfloat16", "float16", "float32")


def set_threads(threads: int) -> None:
    """Cap torch's CPU threads (0: torch's default, one per core). On a shared host, fewer threads than cores
    avoid fighting other processes for them: a thread that loses its core stalls every step of the others."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Placement:
    """Where and how a model is loaded: the one thing loaders need to know about hardware."""

    device: str = "cpu"
    dtype_name: str = "float32"
    device_map_auto: bool = False  # let accelerate place the layers (several GPUs, --max-memory, 8-bit)
    max_memory: tuple[tuple[int | str, str], ...] = ()  # accelerate's cap per device: ((0, "20GiB"), ("cpu", "64GiB"))
    load_in_8bit: bool = False  # bitsandbytes int8 weights

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name)

    def from_pretrained_kwargs(self) -> dict:
        # safetensors only and no repository code: loading a model must never run code that came with it.
        kwargs: dict = {
            "dtype": self.dtype,
            "attn_implementation": attention_implementation(self),
            "use_safetensors": True,
            "trust_remote_code": False,
        }
        if self.device_map_auto:
            kwargs["device_map"] = "auto"
        if self.max_memory:
            kwargs["max_memory"] = dict(self.max_memory)
        if self.load_in_8bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        return kwargs


def resolve_device(name: DeviceName = "auto") -> str:
    """Turn `auto` into the best device present, and check that an explicit one exists."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if name == "cpu":
        return name
    if name == "mps":
        if not _mps_available():
            raise InvalidParamError("device 'mps' asked, but this torch build has no MPS support", param="device")
        return name
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InvalidParamError(
                f"device {name!r} asked, but torch sees no CUDA GPU (torch {torch.__version__})", param="device"
            )
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise InvalidParamError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible", param="device"
            )
        return name
    raise InvalidParamError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps", param="device")


def resolve_dtype(name: str, device: str, *, cpu_bf16: bool = True) -> str:
    """`auto` picks bf16 where the hardware runs it natively, fp16 on older GPUs, fp32 otherwise.

    `cpu_bf16=False` keeps small encoders (embeddings, Whisper) in fp32 on CPU, where bf16 buys little.
    """
    if name not in DTYPE_NAMES:
        raise InvalidParamError(f"unknown dtype {name!r}: use {', '.join(DTYPE_NAMES)}", param="dtype")
    if name != "auto":
        return name
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    # On CPUs with AVX512-BF16 or AMX, bf16 matmuls run about twice as fast as fp32.
    return "bfloat16" if cpu_bf16 and cpu_has_native_bf16() else "float32"


def placement(
    device: str = "auto",
    dtype: str = "auto",
    *,
    multi_gpu: bool = False,
    cpu_bf16: bool = True,
    max_memory: tuple = (),
    load_in_8bit: bool = False,
) -> Placement:
    """Resolve user-facing device/dtype strings into a Placement."""
    resolved = resolve_device(device)
    if multi_gpu and not resolved.startswith("cuda"):
        raise InvalidParamError("--multi-gpu needs CUDA GPUs", param="device")
    dtype_name = resolve_dtype(dtype, resolved, cpu_bf16=cpu_bf16)
    # A memory cap or int8 weights only work when accelerate places the layers itself.
    auto = multi_gpu or bool(max_memory) or load_in_8bit
    return Placement(resolved, dtype_name, auto, tuple(max_memory), load_in_8bit)


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: stay on the safe side
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def attention_implementation(where: Placement) -> str:
    """flash-attention 2 on CUDA in half precision when it is installed, else PyTorch SDPA."""
    if where.device.startswith("cuda") and where.dtype_name in ("bfloat16", "float16"):
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available():
            return "flash_attention_2"
    return "sdpa"


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
