"""Progress on stderr, built in one place: a counting bar (count, %, rate, ETA) for any long job,
and :class:`EpochBar` for a training or evaluation phase (adds the running loss and images/s)."""

from __future__ import annotations

import time
from typing import Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed else "", style="progress.data.speed")


def show_progress(enabled: bool = True) -> bool:
    """Bars only on a terminal: in logs and captured output they would be noise, not progress."""
    return enabled and Console(stderr=True).is_terminal


def progress_bar(enabled: bool = True, *, transient: bool = False, console: Optional[Console] = None) -> Progress:
    """The toolkit's progress bar on stderr (count, %, rate, ETA); silent when ``enabled`` is False.

    Args:
        enabled: show it (pass ``show_progress(...)`` to show it on a terminal only).
        transient: remove the bar when done (the command prints its own summary line).
        console: where to draw it (default: a stderr console).
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
        transient=transient,
    )


class EpochBar:
    """A transient bar over the images of one phase; silent when ``enabled`` is False (ranks > 0)."""

    def __init__(self, console: Console, description: str, total: int, enabled: bool = True):
        # Off when stderr is not a terminal (logs, CI): the per-epoch summary line says it all.
        self.enabled = enabled and console.is_terminal
        self.start = time.perf_counter()
        self.seen = 0
        self._progress: Optional[Progress] = None
        if self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} img/s"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total, loss="-", rate="-")

    def __enter__(self) -> "EpochBar":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, images: int, loss: Optional[float] = None) -> None:
        self.seen += images
        if self._progress is None:
            return
        fields = {"rate": f"{self.images_per_second:.1f}"}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        self._progress.update(self._task, advance=images, **fields)

    @property
    def images_per_second(self) -> float:
        return self.seen / max(time.perf_counter() - self.start, 1e-9)
