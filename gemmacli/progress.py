"""tqdm-shaped progress bars drawn by rich, so huggingface_hub downloads look like the rest of gemmacli.

snapshot_download(tqdm_class=...) builds three bars from the class: the file count ("Fetching N files"),
and two byte bars ("Downloading bytes", "Reconstructing...") that every file's download feeds, so the
bytes go through rich too. It uses: the constructor keywords (desc, total, initial, unit, unit_scale,
bar_format), `with`, update(), close(), refresh(), the `total` and `n` attributes, set_description[_str]()
and, for Xet downloads, set_postfix_str() and format_dict. Progress goes to stderr; results stay on stdout.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TransferSpeedColumn,
)
from rich.text import Text


class _AmountColumn(ProgressColumn):
    """'1.2/3.4 MB 5.0 MB/s' for byte bars, '3/7' for counts: huggingface_hub mixes both in one display."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._speed = TransferSpeedColumn()
        self._count = MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") != "B":
            return self._count.render(task)
        if task.finished_speed or task.speed:  # a '?' would stay forever on fast or cached downloads
            return Text.assemble(self._bytes.render(task), " ", self._speed.render(task))
        return self._bytes.render(task)


class RichTqdm:
    """The part of tqdm's interface huggingface_hub uses, drawn as one task of a shared rich Progress."""

    progress: Progress  # set on each subclass by rich_tqdm_class: all bars of one download share one display

    def __init__(
        self,
        iterable: Any = None,
        desc: str | None = None,
        total: float | None = None,
        *,
        initial: float = 0,
        unit: str = "it",
        disable: bool = False,
        **_ignored: Any,  # unit_scale, bar_format, position, leave...: rich decides how bars look
    ) -> None:
        self.iterable = iterable
        self.desc = desc or ""
        self.n = initial
        self.disable = disable
        if total is None and hasattr(iterable, "__len__"):  # tqdm(list_of_things) knows its length, like tqdm
            total = len(iterable)
        self._total = total
        self._task = None
        self._lock = threading.Lock()  # the byte bars are updated by every download thread at once
        if not disable:
            self.progress.start()  # idempotent; the first bar opens the live display
            # A total of 0 means "not known yet" in huggingface_hub; rich would call such a task finished.
            self._task = self.progress.add_task(self.desc, total=total or None, completed=initial, unit=unit)

    @property
    def total(self) -> float | None:
        return self._total

    @total.setter
    def total(self, value: float | None) -> None:  # snapshot_download grows byte totals as files start
        self._total = value
        self._set(total=value or None)

    def update(self, n: float | None = 1) -> None:
        with self._lock:
            self.n += n or 0
            self._set(completed=self.n)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""
        self._set(description=self.desc)

    set_description_str = set_description

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass  # the speed column already shows the rate

    @property
    def format_dict(self) -> dict[str, Any]:
        task = next((t for t in self.progress.tasks if t.id == self._task), None)
        return {"n": self.n, "total": self._total, "rate": task.speed if task else None}

    def refresh(self) -> None:
        pass  # rich redraws on its own thread

    def close(self) -> None:
        # A bar closed without a total (size never announced) is done: fill it rather than leave it pulsing.
        if self._task is not None and not self._total:
            self._set(total=self.n or None, visible=self.n > 0)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> RichTqdm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set(self, **fields: Any) -> None:
        if self._task is not None:
            self.progress.update(self._task, **fields)


def rich_tqdm_class(console: Console) -> type[RichTqdm]:
    """A tqdm class whose bars share one rich display on `console`; call `.progress.stop()` when done."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), _AmountColumn(), console=console, transient=False
    )
    return type("RichTqdm", (RichTqdm,), {"progress": progress})


@contextlib.contextmanager
def progress_bars(console: Console | None = None) -> Iterator[type[RichTqdm]]:
    """`with progress_bars() as bars: hub.download(repo, tqdm_class=bars)`: bars on stderr, closed at the end.

    The display is settled and stopped here because snapshot_download never closes its byte bars.
    """
    bars = rich_tqdm_class(console or Console(stderr=True))
    try:
        yield bars
    finally:
        if bars.progress.live.is_started:  # stopping a display that never started still prints a newline
            _settle(bars.progress)
            bars.progress.stop()


def _settle(progress: Progress) -> None:
    """Fill the bars that never learnt their total, hide those that never moved (files already cached)."""
    for task in progress.tasks:
        if task.total is None:
            progress.update(task.id, total=task.completed or None, visible=task.completed > 0)
