"""Runners: one class per task, behind the protocol in base.py, listed once in RUNNERS.

Loading, warm-up, task detection, /admin/stats and `gemmacli ps` all go through this table. A new task
is a runner module, a row here, a wire schema and a route.
"""

from __future__ import annotations

from pathlib import Path

from gemmacli.errors import GemmacliError
from gemmacli.runners.base import Memory, Runner
from gemmacli.runners.chat import ChatRunner
from gemmacli.runners.embed import EmbedRunner
from gemmacli.runners.transcribe import TranscribeRunner
from gemmacli.types import Task

# Also the order in which task detection asks them: sentence-transformers folders and Whisper are told
# apart first, as a Gemma embedding model or Whisper's *ForConditionalGeneration would look like chat.
RUNNERS: dict[Task, type[Runner]] = {
    "embed": EmbedRunner,
    "transcribe": TranscribeRunner,
    "chat": ChatRunner,
}

__all__ = ["RUNNERS", "Memory", "Runner", "detect", "runner_class"]


def runner_class(task: str) -> type[Runner]:
    """The runner of `task`; an unknown task is an error, never a fallback."""
    try:
        return RUNNERS[task]
    except KeyError:
        raise GemmacliError(f"unknown task {task!r}: gemmacli runs {', '.join(RUNNERS)}") from None


def detect(config: dict, folder: Path) -> Task | None:
    """The task of a Hugging Face folder whose config.json is `config`; None when no runner takes it."""
    return next((task for task, runner in RUNNERS.items() if runner.detects(config, folder)), None)
