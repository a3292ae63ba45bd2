"""Turning one source item (a video file, an image file) into arrays; knows nothing of storage."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def not_a_file(path: Path, what: str) -> str | None:
    """Why the source file `path` of a sample cannot be read as one, in a failure's words
    ("video file is missing: clip.avi", "... is a broken link", "... is a symlink loop"), or
    None where it is a file: a folder-scanned source lists a broken link or a loop named like a
    clip as a sample, which fails saying which it is."""
    if path.is_file():
        return None
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"{what} file is a symlink loop: {path.name}"
            return f"{what} file is missing (a broken link to {os.readlink(path)!r}): {path.name}"
    if path.exists():
        return f"{what} file is not a regular file: {path.name}"
    return f"{what} file is missing: {path.name}"
