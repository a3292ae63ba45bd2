"""Files the trainers write for a reader (`trainers report --html/--out`, `trainers predict
--out`): checked to be writable before minutes of predicting, and written whole or not at all.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

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


def write_whole(path: Path, content: str | bytes, what: str) -> Path:
    """Write `content` (text as UTF-8, or bytes as they are) to `path` through a temporary file
    renamed over it, so that a failure (a full disk, Ctrl-C) leaves no half-written file and an
    earlier one as it was. The file gets the mode a plain write would give it: an earlier
    file's, else the umask's. Where `path` is not a plain file (a link, `/dev/stdout`, a pipe)
    or is one of several names of one file (a hard link) it is written through, as a plain
    write does: renaming over it would replace the link or the device, or part the name from
    the file's others.

    Raises:
        ReportOutputError: it cannot be written.
    """
    try:
        existing = path.lstat()
    except OSError:
        existing = None
    data = content.encode("utf-8") if isinstance(content, str) else content
    if existing is not None and (not stat.S_ISREG(existing.st_mode) or existing.st_nlink > 1):
        try:
            with open(path, "wb") as file:
                file.write(data)
        except OSError as exc:
            raise ReportOutputError(f"cannot write {what} to {str(path)!r}: "
                                    f"{exc.strerror or exc}") from None
        return path
    if existing is not None and not os.access(path, os.W_OK):  # a plain write is refused
        raise ReportOutputError(f"cannot write {what} to {str(path)!r}: "
                                f"{os.strerror(errno.EACCES)}")
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~_umask()
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".partial")
    except OSError as exc:
        raise ReportOutputError(f"cannot write {what} to {str(path)!r}: "
                                f"{exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ReportOutputError(f"cannot write {what} to {str(path)!r}: "
                                    f"{exc.strerror or exc}") from None
        raise
    return path


def _umask() -> int:
    """The process's umask: from /proc where Linux shows it, else read by setting it and
    setting it back at once (which another thread could see in between)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
