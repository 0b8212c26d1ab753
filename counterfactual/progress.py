"""Progress reporting on stderr: a rich bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["console", "stdout_console", "track", "PIPE_WIDTH"]

T = TypeVar("T")

PIPE_WIDTH = 1000
"""Columns of a table written to a pipe or a file: wide enough that no cell is cut (a terminal
uses its own width and wraps)."""

console = Console(stderr=True, highlight=False, soft_wrap=True)
"""Messages on stderr; lines are never wrapped or cut (a terminal wraps them itself)."""


def stdout_console() -> Console:
    """A console for tables on stdout: the terminal's width on a terminal, else
    :data:`PIPE_WIDTH` columns, so a pipe, a log or a file gets every cell whole."""
    screen = Console(highlight=False)
    return screen if screen.is_terminal else Console(highlight=False, width=PIPE_WIDTH)


def track(items: Iterable[T], description: str, total: int | None = None,
          quiet: bool = False) -> Iterator[T]:
    """Yield ``items`` while showing progress on stderr.

    On a terminal: a rich progress bar. Without one (CI, pipes, logs): a line every ~10 %.
    ``quiet`` shows nothing.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if quiet:
        yield from items
        return
    if console.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
        return
    start, step = time.perf_counter(), max(1, (total or 10) // 10)
    for done, item in enumerate(items, start=1):
        yield item
        if done % step == 0 or done == total:
            of = f"/{total}" if total else ""
            console.print(f"{description}: {done}{of} ({time.perf_counter() - start:.1f} s)")
