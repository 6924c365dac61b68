"""What every runner is: the small protocol the model layer, the server and the CLI rely on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from gemmacli.types import GenParams, Task

if TYPE_CHECKING:
    from gemmacli.device import Placement


@dataclass(frozen=True)
class Memory:
    """Where a loaded model's weights are, read from the weights themselves."""

    device: str
    dtype: str
    placement: str  # "single", "auto" (accelerate placed it on one device) or a device map: "cuda:0×20, cpu×6"
    bytes: int  # parameters and buffers (packed copies of weights included)


class Runner(Protocol):
    """One loaded model doing one task. Not thread-safe: one caller at a time."""

    task: ClassVar[Task]
    cpu_bf16: ClassVar[bool]  # whether `--dtype auto` may pick bfloat16 on a CPU with bf16 instructions
    name: str

    @classmethod
    def detects(cls, config: dict, folder: Path) -> bool:
        """Whether a Hugging Face folder (its config.json as `config`) holds a model for this task."""
        ...

    @classmethod
    def load(cls, path: Path, placement: Placement, *, name: str, defaults: GenParams = GenParams()) -> Runner: ...

    def warm_up(self) -> None:
        """One tiny request, so that the first user does not pay for lazy initialisation."""
        ...

    def memory(self) -> Memory: ...

    def close(self) -> None:
        """Drop the weights: once nothing else holds the runner, its memory can go back to the system."""
        ...


def module_memory(module: Any, placement: Placement | None) -> Memory:
    """Device, dtype, layer placement and bytes of a torch module's parameters and buffers."""
    if module is None:
        return Memory("none", "none", "single", 0)
    tensors = [*module.parameters(), *module.buffers()]
    first = next(iter(module.parameters()), None)
    return Memory(
        device=str(first.device) if first is not None else "unknown",
        dtype=str(first.dtype).removeprefix("torch.") if first is not None else "unknown",
        placement=_summarize(getattr(module, "hf_device_map", None), placement),
        bytes=sum(t.numel() * t.element_size() for t in tensors),
    )


def _summarize(device_map: dict | None, placement: Placement | None) -> str:
    """Accelerate's module -> device map as counts per device ("cuda:0×20, cpu×6"); "auto" (with its caps)
    when accelerate placed it all on one device; "single" when we did."""
    if not device_map:
        if placement is None or not placement.device_map_auto:
            return "single"
        caps = ", ".join(f"{d}={size}" for d, size in placement.max_memory)
        return "auto" + (f" (max {caps})" if caps else "") + (", int8" if placement.load_in_8bit else "")
    counts: dict[str, int] = {}
    for where in device_map.values():
        name = f"cuda:{where}" if isinstance(where, int) else str(where)
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name}×{n}" for name, n in counts.items())


ENCODERS = (("image", "vision_config"), ("audio", "audio_config"))  # what a model reads beside text, by config key


def encoder_modalities(config: Mapping[str, Any]) -> tuple[str, ...]:
    """What a model takes in, from its config's keys (config.json, or vars() of a loaded config): text, and
    images and audio where it has their encoders."""
    return ("text", *(kind for kind, key in ENCODERS if config.get(key)))
