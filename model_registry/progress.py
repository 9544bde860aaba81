"""Byte-progress bars on stderr (rich), or nothing when progress is off."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn


@contextlib.contextmanager
def byte_progress(enabled: bool, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n_bytes)` callback that drives a transient progress bar."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
