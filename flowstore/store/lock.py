"""One writer per store: an advisory lock on a small file beside the store.

`fcntl.flock` is released by the kernel when its holder exits, however it exits, so a lock left
by a killed build is simply free again: no PID guessing, no race in taking over a stale lock.
The file holds the holder's pid, host and start time so that a refused build can say who holds
it. The lock file sits beside the store (not inside it) so that `--overwrite`, which deletes the
store, never deletes a lock that someone holds. It is never unlinked, for the same reason.
Local filesystems only: flock over NFS is not reliable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from flowstore.errors import StoreError
from flowstore.store import is_url


def lock_path(store: str | Path) -> Path:
    store = Path(store)
    return store.with_name(f".{store.name}.lock")


@contextlib.contextmanager
def writer_lock(store: str | Path) -> Iterator[None]:
    """Hold the store's writer lock for the duration of the block.

    Raises:
        StoreError: another live process holds it (the message names that process).
    """
    if is_url(store):
        # Object stores have no lock primitive that fsspec exposes: one builder per URL store
        # is the user's promise (README, "Object storage").
        yield
        return
    path = lock_path(store)
    if not path.parent.is_dir():
        raise StoreError(f"the folder of store {str(store)!r} does not exist")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot create the lock file beside store {str(store)!r}: "
                         f"{exc.strerror} ({str(path)!r})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            raise StoreError(f"store {str(store)!r} is being written by another flowstore "
                             f"process ({holder}); wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "holder unknown"
