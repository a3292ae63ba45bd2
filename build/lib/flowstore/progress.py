"""Progress bars: one place that decides whether a long command shows one.

A bar is drawn only when asked for (no `--quiet`) and when stderr is a terminal. A bar written
into a log file or a pipe is a stream of carriage returns and half-lines ("37%|###"), which is
what CI logs and `2>file` captures would otherwise hold; there, the command's own final summary
line is the only report.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable


def shows_progress(requested: bool = True) -> bool:
    """Whether a bar is drawn: requested, and stderr is a terminal."""
    stream = sys.stderr
    return bool(requested and stream is not None and hasattr(stream, "isatty") and stream.isatty())


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **options: Any):
    """A tqdm bar (on stderr) that is disabled unless `shows_progress(enabled)`."""
    from tqdm import tqdm

    options.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not shows_progress(enabled), **options)
