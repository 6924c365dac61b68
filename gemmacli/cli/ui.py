"""Terminal output: progress and messages on stderr, results on stdout; NO_COLOR is honoured by rich."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console

stderr = Console(stderr=True, highlight=False, soft_wrap=True)  # soft_wrap: an error stays on one line
stdout = Console(highlight=False, soft_wrap=True)  # tables only: rich would expand tabs in plain results


def error(message: str) -> None:
    """One `error: ...` line on stderr; the message is escaped, so `gemmacli[demo]` is not taken as markup."""
    from rich.markup import escape

    stderr.print(f"[red]error:[/] {escape(message)}")


def emit(text: str, end: str = "\n") -> None:
    """A result on stdout exactly as given (JSON, TSV, streamed text), flushed so pipes see it at once."""
    sys.stdout.write(text + end)
    sys.stdout.flush()


class Reporter:
    """The `report` callback the model layer calls with each step of a long load, import or download.

    Steps show on one pulsing bar; `tqdm_class` makes Hub downloads draw their byte bars in the same display.
    """

    def __init__(self, progress=None, task=None, tqdm_class=None):
        self.progress = progress
        self.task = task
        self.tqdm_class = tqdm_class

    def __call__(self, step: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"{step}…")
        elif self.progress is not None:  # not a terminal (CI logs): one line per step
            stderr.print(f"{step}…")


@contextlib.contextmanager
def reporting(title: str, *, quiet: bool = False) -> Iterator[Reporter]:
    """Progress for the block on stderr; removed when it ends so only results stay on screen."""
    if quiet:
        yield Reporter()
        return
    from gemmacli.progress import progress_bars

    with progress_bars(stderr) as tqdm_class:
        progress = tqdm_class.progress
        if not stderr.is_terminal:
            yield Reporter(progress, None, tqdm_class)
            return
        task = progress.add_task(f"{title}…", total=None)
        progress.start()
        try:
            yield Reporter(progress, task, tqdm_class)
        finally:
            progress.update(task, visible=False)
