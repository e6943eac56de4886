"""Progress of training: a live bar per epoch on a terminal, and one summary line per epoch always."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.live = enabled and sys.stderr.isatty()

    def batches(self, loader: Iterable, title: str, describe) -> Iterator:
        """Yield from `loader`, showing `describe()` (loss, accuracy, cost, λ) beside the bar."""
        if not self.live:
            yield from loader
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(title, total=len(loader), status="")
            for batch in loader:
                yield batch
                bar.update(task, advance=1, status=describe())

    def line(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, markup=False)  # messages may hold [brackets]
