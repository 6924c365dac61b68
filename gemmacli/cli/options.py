"""Option types shared by the commands, defined once (the huggingface_hub CLI pattern)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class DType(StrEnum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


def model_opt(default: str, task: str) -> object:
    return typer.Option(
        "--model",
        "-m",
        help=f"{task} model: catalog alias, Hub repo id, s3:// or gs:// URL, local folder or GGUF.",
        envvar=f"GEMMACLI_{task.upper()}_MODEL",
        show_default=True,
    )


DeviceOpt = Annotated[
    str, typer.Option("--device", "-d", help="auto, cpu, cuda, cuda:N or mps.", envvar="GEMMACLI_DEVICE")
]
DTypeOpt = Annotated[
    DType,
    typer.Option("--dtype", help="Weights dtype; auto = bf16 where the hardware has it.", envvar="GEMMACLI_DTYPE"),
]
MultiGpuOpt = Annotated[
    bool, typer.Option("--multi-gpu", help="Shard the model across all visible GPUs (device_map=auto).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text or a table.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]
CatalogOpt = Annotated[
    Path | None,
    typer.Option("--catalog", help="Extra catalog entries (TOML).", envvar="GEMMACLI_CATALOG", show_default=False),
]
