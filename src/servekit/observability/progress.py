"""Progress bars for long work (``servekit archive``, ``assets push`` and
``fetch``, loading models at start), drawn with rich on stderr only when
stderr is a terminal and rich is installed (the ``progress`` extra); anywhere
else (a pipe, a log file, CI) nothing is written. ``SERVEKIT_PROGRESS=0``
turns them off on a terminal too.

    with progress.bar("Writing iris.mar", total=size, unit="bytes") as advance:
        for file in files:
            ...
            advance(file_size)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

Advance = Callable[[float], None]
Unit = Literal["bytes", "files", "models"]


def nothing(amount: float) -> None:
    """An ``advance`` that does nothing."""
    return None


def wanted(stream: Any = None) -> bool:
    """Whether bars are drawn: stderr (or ``stream``) is a terminal, rich is
    installed and ``SERVEKIT_PROGRESS`` is not 0."""
    if os.environ.get("SERVEKIT_PROGRESS", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):  # closed or not a file
        return False
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def bar(description: str, total: float | None, *, unit: Unit = "files", stream: Any = None) -> Iterator[Advance]:
    """A bar on stderr while the block runs; yields ``advance(amount)``. When
    bars are not wanted (see :func:`wanted`) it draws nothing and ``advance``
    does nothing."""
    if not wanted(stream):
        yield nothing
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(file=sys.stderr if stream is None else stream)
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        columns += [MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def advance(amount: float) -> None:
            progress.advance(task, amount)

        yield advance


class CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now: log lines written while a bar
    is drawn go through rich (which redirects stderr then) and appear above the
    bar rather than through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


__all__ = ["Advance", "CurrentStderr", "bar", "nothing", "wanted"]
