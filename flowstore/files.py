"""Files flowstore and the trainers write for a reader (`flowstore show`'s pictures, `trainers
report --html/--out`, `trainers predict --out`): whole or not at all."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from flowstore.errors import FlowstoreError


def write_whole(path: Path, content: str | bytes, what: str | None = None, *,
                error: Callable[[str], Exception] = FlowstoreError,
                replace_links: bool = False) -> Path:
    """Write `content` (text as UTF-8, or bytes as they are) to `path` through a temporary file
    renamed over it, so that a failure (a full disk, `ulimit -f`, Ctrl-C) leaves no half-written
    file and an earlier one as it was. The file gets the mode a plain write would give it: an
    earlier file's, else the umask's. Where `path` is not a plain file (a link, `/dev/stdout`, a
    pipe) or is one of several names of one file (a hard link) it is written through, as a plain
    write does: renaming over it would replace the link or the device, or part the name from
    the file's others. With `replace_links`, for a file of the caller's own name in a folder it
    writes (a report's figures), whatever is at `path` is replaced instead: writing through a
    link there wrote over whatever it pointed at (another run's curves, a store's metadata).

    Raises:
        `error` ("cannot write WHAT to PATH: why", or "cannot write PATH: why" without `what`):
        it cannot be written.
    """
    def refused(why: str) -> Exception:
        return error(f"cannot write {what + ' to ' if what else ''}{str(path)!r}: {why}")

    try:
        existing = path.lstat()
    except OSError:
        existing = None
    data = content.encode("utf-8") if isinstance(content, str) else content
    plain = existing is not None and stat.S_ISREG(existing.st_mode) and existing.st_nlink == 1
    if existing is not None and not plain and not replace_links:
        try:
            with open(path, "wb") as file:
                file.write(data)
        except OSError as exc:
            raise refused(exc.strerror or str(exc)) from None
        return path
    if plain and not os.access(path, os.W_OK):  # a plain write is refused
        raise refused(os.strerror(errno.EACCES))
    mode = stat.S_IMODE(existing.st_mode) if plain else 0o666 & ~_umask()
    try:
        # (the name cut: a file name of up to 255 bytes is legal, and its temporary one, 18
        # bytes longer, was refused as "File name too long")
        stem = os.fsdecode(os.fsencode(path.name)[:200])  # (bytes, as the system counts)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.",
                                             suffix=".partial")
    except OSError as exc:
        raise refused(exc.strerror or str(exc)) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise refused(exc.strerror or str(exc)) from None
        raise
    return path


def file_size_limit() -> int | None:
    """The largest file this process may write (`ulimit -f`, RLIMIT_FSIZE), None if unlimited."""
    try:
        import resource
    except ImportError:  # (not on Windows)
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


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
