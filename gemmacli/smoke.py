"""`gemmacli smoke`: does torch see the GPU, do its kernels compute right, does a real model generate?

Each check is a small function returning a `Check`; `run_smoke` strings them together and the CLI only
renders. A check that raises becomes a failed row, so one broken driver cannot hide the other results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gemmacli.device import cpu_has_native_bf16, resolve_device
from gemmacli.errors import GemmacliError
from gemmacli.models.defaults import DEFAULT_CHAT_MODEL
from gemmacli.types import GenParams

if TYPE_CHECKING:
    from gemmacli.runners.chat import ChatRunner

    LoadChat = Callable[[str, str], ChatRunner]  # (model name, device) -> a loaded chat runner

GEN_PROMPT = "Monday, Tuesday,"
GEN_TOKENS = 8
MATMUL_SIZE = 256
# Largest allowed max|device - cpu_fp32| / max|cpu_fp32|: inputs are rounded to the dtype, so the error
# grows with its mantissa; float32 allows for TF32 tensor cores on GPUs.
MATMUL_TOLERANCE = {"float32": 5e-3, "float16": 5e-3, "bfloat16": 2e-2}
GIB = 1024**3


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str
    values: dict[str, object] = field(default_factory=dict)  # numbers for --json (tokens_per_s, free_bytes...)

    @property
    def status(self) -> str:
        return "skip" if self.ok is None else "pass" if self.ok else "fail"


@dataclass(frozen=True)
class SmokeReport:
    requested: str  # what --device said
    device: str | None  # the device tested; None when there is none (no GPU, or the asked one is missing)
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def to_json(self) -> dict:
        rows = [{"name": c.name, "status": c.status, "ok": c.ok, "detail": c.detail, **c.values} for c in self.checks]
        return {"requested": self.requested, "device": self.device, "ok": self.ok, "checks": rows}


def run_smoke(requested: str = "auto", model: str = DEFAULT_CHAT_MODEL, load: LoadChat | None = None) -> SmokeReport:
    """Every check in order; those that need a device are skipped when there is none to test."""
    try:
        device, accelerator = find_device(requested)
    except Exception as exc:  # a broken CUDA install can raise from torch.cuda itself
        device, accelerator = None, failure("accelerator", exc)
    checks = [guarded("torch build", torch_build), accelerator]
    if device is None:
        checks += [Check(name, None, "skipped: no device to test") for name in ("memory", "bf16", "matmul", "generate")]
        return SmokeReport(requested, None, tuple(checks))
    checks += memory_checks(device)
    checks.append(guarded("bf16", lambda: bf16_support(device)))
    checks += [guarded(f"matmul {dtype}", lambda d=dtype: matmul(device, d)) for dtype in ("float32", half(device))]
    checks.append(guarded("generate", lambda: generation(device, model, load or _default_load)))
    return SmokeReport(requested, device, tuple(checks))


def guarded(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; an exception becomes a failed row named `name`."""
    try:
        return check()
    except Exception as exc:  # driver errors, out of memory, a missing model: all belong in the table
        return failure(name, exc)


def failure(name: str, exc: Exception) -> Check:
    message = exc.message if isinstance(exc, GemmacliError) else f"{type(exc).__name__}: {exc}"
    return Check(name, False, message)


# -- the checks


def torch_build() -> Check:
    import torch

    if torch.version.cuda:
        build = f"CUDA {torch.version.cuda} build"
    elif getattr(torch.version, "hip", None):
        build = f"ROCm (HIP {torch.version.hip}) build"
    else:
        build = "CPU-only build (no CUDA/ROCm)"
    return Check("torch build", True, f"torch {torch.__version__}, {build}", {"cuda_version": torch.version.cuda})


def find_device(requested: str) -> tuple[str | None, Check]:
    """The device to test and the row saying what was found; `auto` without a GPU tests nothing."""
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    seen = f"CUDA devices: {cuda}, MPS: {'yes' if mps_available() else 'no'}"
    if not torch.version.cuda and not getattr(torch.version, "hip", None):
        seen += f"; torch {torch.__version__} is a CPU-only build"
    if (requested or "auto").strip().lower() == "auto":
        device = resolve_device("auto")
        if device == "cpu":
            hint = "`gemmacli smoke --device cpu` checks the CPU path instead"
            return None, Check("accelerator", False, f"no GPU found (CPU only). {seen}. {hint}")
        return device, Check("accelerator", True, f"{device} ({seen})")
    try:
        device = resolve_device(requested)
    except GemmacliError as exc:
        return None, Check("accelerator", False, exc.message)
    what = "the CPU, as asked" if device == "cpu" else device
    return device, Check("accelerator", True, f"{what} ({seen})")


def memory_checks(device: str) -> list[Check]:
    """One row per GPU with its name and free/total memory (every visible GPU on `cuda`), or the RAM on CPU."""
    import torch

    if device == "cpu":
        return [guarded("memory cpu", cpu_memory)]
    if device == "mps":
        return [guarded("memory mps", mps_memory)]
    indices = range(torch.cuda.device_count()) if device == "cuda" else [int(device.partition(":")[2])]
    return [guarded(f"memory cuda:{i}", lambda i=i: cuda_memory(i)) for i in indices]


def cuda_memory(index: int) -> Check:
    import torch

    free, total = torch.cuda.mem_get_info(index)
    name = torch.cuda.get_device_name(index)
    detail = f"{name}: {free / GIB:.1f} GiB free of {total / GIB:.1f} GiB"
    return Check(f"memory cuda:{index}", True, detail, {"free_bytes": free, "total_bytes": total})


def cpu_memory() -> Check:
    total, free = _meminfo()
    detail = f"{os.cpu_count()} cores; {free / GIB:.1f} GiB available of {total / GIB:.1f} GiB RAM"
    return Check("memory cpu", True, detail, {"free_bytes": free, "total_bytes": total})


def mps_memory() -> Check:
    import torch

    limit = torch.mps.recommended_max_memory()
    used = torch.mps.driver_allocated_memory()
    return Check("memory mps", True, f"Apple GPU: {used / GIB:.1f} GiB in use, {limit / GIB:.1f} GiB recommended")


def bf16_support(device: str) -> Check:
    """Informational: tells which dtype `--dtype auto` will pick; bf16 missing is not a failure."""
    import torch

    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return Check("bf16", True, "supported: --dtype auto loads bfloat16")
        return Check("bf16", True, "not supported by this GPU (pre-Ampere): --dtype auto loads float16")
    if device == "mps":
        return Check("bf16", True, "--dtype auto loads float16 on Apple GPUs")
    if cpu_has_native_bf16():
        return Check("bf16", True, "native (avx512_bf16/amx_bf16): --dtype auto loads chat models in bfloat16")
    return Check("bf16", True, "no avx512_bf16/amx_bf16: bf16 runs emulated (slow); --dtype auto loads float32")


def half(device: str) -> str:
    """The half-precision dtype worth checking: the one `--dtype auto` would use, or bf16 on CPU."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return "float16"
    return "float16" if device == "mps" else "bfloat16"


def matmul(device: str, dtype_name: str) -> Check:
    """A (256, 256) @ (256, 256) product in `dtype` on the device, compared with fp32 on the CPU."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator) for _ in range(2))
    dtype = getattr(torch, dtype_name)
    started = time.perf_counter()
    out = (a.to(device, dtype) @ b.to(device, dtype)).float().cpu()  # .cpu() waits for the device
    elapsed_ms = (time.perf_counter() - started) * 1000
    expected = a @ b
    error = float((out - expected).abs().max() / expected.abs().max())
    tolerance = MATMUL_TOLERANCE[dtype_name]
    ok = error <= tolerance  # False on NaN too
    detail = f"relative error {error:.1e} (limit {tolerance:.0e}), {elapsed_ms:.1f} ms including transfers"
    return Check(f"matmul {dtype_name}", ok, detail, {"relative_error": error})


def generation(device: str, model: str, load: LoadChat) -> Check:
    """Load the model and greedily complete a short prompt; a warm-up token first, so tok/s is not set-up time."""
    started = time.perf_counter()
    runner = load(model, device)
    load_s = time.perf_counter() - started
    runner.complete_text(GEN_PROMPT, GenParams(max_tokens=1, temperature=0.0))
    started = time.perf_counter()
    done = runner.complete_text(GEN_PROMPT, GenParams(max_tokens=GEN_TOKENS, temperature=0.0))
    elapsed = time.perf_counter() - started
    tokens = done.usage.completion_tokens
    rate = tokens / elapsed if elapsed > 0 else 0.0
    where = f"{runner.name} on {runner.placement.device} ({runner.placement.dtype_name})"
    detail = f"{where}: {tokens} tokens, {rate:.1f} tok/s (loaded in {load_s:.1f} s): {GEN_PROMPT!r} -> {done.text!r}"
    ok = tokens > 0 and bool(done.text.strip())
    return Check("generate", ok, detail, {"tokens": tokens, "tokens_per_s": rate, "load_s": load_s})


# -- helpers


def mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _default_load(model: str, device: str) -> ChatRunner:
    from gemmacli.models.loader import LoadOptions, ModelLoader

    return ModelLoader().load(model, task="chat", options=LoadOptions(device=device), report=lambda _: None)


def _meminfo() -> tuple[int, int]:
    """(total, available) bytes of RAM; /proc/meminfo knows what is reclaimable, sysconf is the fallback."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        return int(fields["MemTotal"].split()[0]) * 1024, int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
