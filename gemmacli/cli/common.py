"""What several commands share: loading a runner with progress, reading text inputs."""

from __future__ import annotations

import sys

from gemmacli.cli.ui import reporting
from gemmacli.errors import GemmacliError
from gemmacli.types import Task


def quiet_libraries() -> None:
    """transformers' own bars and advice would interleave with ours; our progress says the same."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # library bars; ours are rich and do not use tqdm
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_runner(model: str, task: Task, *, device: str, dtype: str, multi_gpu: bool = False, quiet: bool = False):
    from gemmacli.models.loader import LoadOptions, ModelLoader

    quiet_libraries()
    options = LoadOptions(device=device, dtype=str(dtype), multi_gpu=multi_gpu)
    with reporting(f"loading {model}", quiet=quiet) as report:
        return ModelLoader().load(model, task=task, options=options, report=report)


def read_prompt(prompt: str) -> str:
    """`-` means standard input, so prompts can be piped in."""
    if prompt != "-":
        return prompt
    if sys.stdin.isatty():
        raise GemmacliError("prompt '-' reads standard input, but nothing is piped in")
    text = sys.stdin.read()
    if not text.strip():
        raise GemmacliError("standard input is empty")
    return text
