"""Files the trainers write for a reader (`trainers report --html/--out`, `trainers predict
--out`): checked to be writable before minutes of predicting, and written whole or not at all.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from flowstore import files
from flowstore.store import enclosing_store
from trainers.errors import ReportOutputError
from trainers.runs import enclosing_run


def check_output(path: Path, what: str, *, folder: bool) -> None:
    """Refuse an output that cannot be written before any model predicts (on the real runs,
    minutes): the folder (`path`, or the file's) is made, and a temporary file made in it,
    since permissions do not tell (root passes them; a read-only mount does not).

    Raises:
        ReportOutputError: it cannot be written.
    """
    try:
        if not folder and path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        target = path if folder else path.parent
        target.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=target).close()
    except OSError as exc:
        raise ReportOutputError(f"cannot write {what} to {str(path)!r}: "
                                f"{exc.strerror or exc}") from None


def refuse_inside_a_run_or_store(flag: str, path: Path, what: str = "it") -> None:
    """Refuse an output `path` (given as `flag`) that is or lies inside a finished run
    directory, whose record it could replace, or a flowstore store, which `--overwrite` deletes
    with what it holds and `inspect --bytes` counts; `what` is the output, in the message.

    Raises:
        ReportOutputError: it is one of those.
    """
    run = enclosing_run(path)
    if run is not None:
        raise ReportOutputError(f"{flag} {str(path)!r} is the run directory {str(run)!r} or "
                                f"lies inside it; give {what} another path")
    store = enclosing_store(path)
    if store is not None:
        raise ReportOutputError(f"{flag} {str(path)!r} is the store {str(store)!r} or lies "
                                f"inside it; give {what} another path")


def write_whole(path: Path, content: str | bytes, what: str, *,
                replace_links: bool = False) -> Path:
    """`flowstore.files.write_whole`, refused as a report output (`ReportOutputError`)."""
    return files.write_whole(path, content, what, error=ReportOutputError,
                             replace_links=replace_links)


