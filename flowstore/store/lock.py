"""One writer per store: an advisory lock on a small file beside the store.

`fcntl.flock` is released by the kernel when its holder exits, however it exits, so a lock left
by a killed build is simply free again: no PID guessing, no race in taking over a stale lock.
The file holds the holder's pid, host and start time so that a refused build can say who holds
it. The lock file sits beside the store (not inside it) so that `--overwrite`, which deletes the
store, never deletes a lock that someone holds. It is never unlinked, for the same reason
(but for one a reader made beside a file that proved to be no store: `remove_made_lock_file`).
Local filesystems only: flock over NFS is not reliable. A file system that gives no locks at
all (`flock` fails otherwise than "held": an NFS mount without its lock service, some FUSE
mounts) takes no build (`writer_lock` refuses, as no second build could be kept out); its
readers then read without one, as no build can hold one there, and work locks are not held.

Readers of an HDF5 store take the same lock shared (`reader_lock`), for as long as they hold
the file open: HDF5 does not support reading a file that another process writes (only its SWMR
mode does, which needs the latest file format; see `_hdf5`), so a reader is refused while a
build runs and a build is refused while a reader has the file open. Zarr readers take no lock:
each chunk and metadata file is replaced atomically, so they read while a build appends.

A work lock (`work_lock`) is the other kind: on work that two processes may
set out to do at once where the second can wait and take the first's result (trainers: a
prerequisite run that two chains need). It waits rather than refuses, and its file goes when the
work ends, so that it leaves nothing behind; a process that takes it checks that the file it
locked is still the one at its path (the holder before it may have removed it meanwhile).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from flowstore.errors import StoreError
from flowstore.leftovers import process_gone
from flowstore.store import NAME_MAX, capabilities, name_within, store_exists


#: Lock files whose writer lock this process holds (its own build may look at its store, e.g.
#: `--overwrite` checks that what it deletes is a store).
_HELD: set[Path] = set()


def lock_path(store: str | Path) -> Path:
    """The lock file beside the store, by its real path: two spellings of one store (a symlink
    to it, or to a folder above it) must meet at one lock, or both would build it at once.
    (`os.path.realpath`, not `Path.resolve`: a symlink loop is a path that holds no store,
    not a RuntimeError.)"""
    store = Path(os.path.realpath(store))
    # (a store name of 250-255 bytes, which the system takes, could not be locked, "File name
    # too long", before a digest stood for it; no such store was ever locked by its name)
    return store.with_name(f".{name_within(store.name, NAME_MAX - len('..lock'))}.lock")


@contextlib.contextmanager
def writer_lock(store: str | Path) -> Iterator[None]:
    """Hold the store's writer lock for the duration of the block.

    Raises:
        StoreError: another live process holds it (the message names that process).
    """
    if not capabilities(store).writer_lock:
        # Object stores have no lock primitive that fsspec exposes: one builder per URL store
        # is the user's promise (README, "Object storage").
        yield
        return
    path = lock_path(store)
    if not path.parent.is_dir():
        raise StoreError(f"the folder of store {str(store)!r} does not exist")
    store_exists(store)  # (raises for a name the system refuses: no lock file made for it)
    fd, writable = _open_lock_file(path, store)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if not isinstance(exc, BlockingIOError):  # (no lock at all: the module's note)
                raise StoreError(f"cannot lock store {str(store)!r} ({exc.strerror or exc}): "
                                 f"its file system gives no file locks (an NFS mount without "
                                 f"its lock service?), and flowstore builds no store that a "
                                 f"second build could write at once; build it on a local "
                                 f"disk, then copy it there") from None
            if _only_readers(fd):
                raise StoreError(f"store {str(store)!r} is open for reading (flowstore inspect "
                                 f"or verify, or a trainer); an HDF5 store cannot be written "
                                 f"while it is read: run the command again when they end") from None
            holder = _describe(_holder(fd))
            raise StoreError(f"store {str(store)!r} is being written by another flowstore "
                             f"process ({holder}); wait for it to finish or stop it") from None
        try:  # (who holds it, for the refusal of another build)
            if writable:
                _record_holder(fd)
        except OSError as exc:  # a full disk: said of the store, not as a bare "[Errno 28]"
            raise StoreError(f"cannot write the lock file beside store {str(store)!r}: "
                             f"{exc.strerror} ({str(path)!r})") from None
        held = Path(os.path.realpath(path))
        _HELD.add(held)
        try:
            yield
        finally:
            _HELD.discard(held)
            if writable:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock_file(path: Path, store: str | Path) -> tuple[int, bool]:
    """The lock file's descriptor, and whether the holder's record can be written in it.

    Made with mode 0o666 less the umask, as the store's own files are: in a folder a group
    shares (umask 002), another member can resume the build. A lock file made by someone else
    that this user may not write (an older flowstore made them 0o644) is opened read-only:
    `flock` works on that too; only the holder's record is not written. So is one on a
    read-only file system (a store mounted read-only: a build that finds nothing to do ends
    as it would elsewhere; one that has samples to extract is refused in its own words).
    """
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except OSError as exc:
        error = exc.strerror
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and os.path.lexists(path):
            try:
                return os.open(path, os.O_RDONLY), False
            except OSError:
                pass
    doing = "open" if os.path.lexists(path) else "create"
    raise StoreError(f"cannot {doing} the lock file beside store {str(store)!r}: "
                     f"{error} ({str(path)!r})") from None


def reader_lock(store: str | Path) -> int | None:
    """Take the store's lock shared, for a reader that must not read while a build writes.

    Returns the descriptor that holds it (give it to `release_reader_lock` when the store is
    closed), or None when no lock was needed: this process's own build holds the store, or
    there is no lock file and none can be made (a folder no build can write to either).

    Raises:
        StoreError: a build holds the store (the message names it).
    """
    path = lock_path(store)
    if Path(os.path.realpath(path)) in _HELD:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o666)  # (`_open_lock_file`:
        _MADE[fd] = path                                                  # why 0o666)
    except OSError:  # (there already, or a folder no build can write to either)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if not isinstance(exc, BlockingIOError):  # a file system with no locks: no build
            remove_made_lock_file(fd)             # holds one there (`writer_lock` refuses)
            release_reader_lock(fd)
            return None
        holder = _describe(_holder(fd))
        release_reader_lock(fd)
        raise StoreError(f"store {str(store)!r} is being written by a flowstore build "
                         f"({holder}); an HDF5 store cannot be read while it is written: "
                         f"try again when the build ends") from None
    return fd


#: The lock files `reader_lock` made, by the descriptor that holds each: one made beside a
#: file that proves to be no store goes again (`remove_made_lock_file`).
_MADE: dict[int, Path] = {}


def remove_made_lock_file(fd: int | None) -> None:
    """Remove the lock file that `reader_lock` made for `fd`, if it did, before the lock is
    released: `flowstore inspect notes.h5` left a `.notes.h5.lock` beside a file that is no
    store (found by review). A lock file stays beside a store, however (the module's
    docstring: why); only one that this reader made, still at its path, goes."""
    path = _MADE.pop(fd, None) if fd is not None else None
    if path is None:
        return
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
            os.unlink(path)


def release_reader_lock(fd: int | None) -> None:
    if fd is not None:
        _MADE.pop(fd, None)
        os.close(fd)  # closing the descriptor releases its flock


@contextlib.contextmanager
def work_lock(path: Path, *, on_wait: Callable[[str], None] | None) -> Iterator[bool]:
    """Hold the work lock `path` alone for the block. With `on_wait`, first wait for as long
    as another process holds it (`on_wait` is told who, "pid 12 on host, since ...", once,
    before the wait): for work whose result this process can take once another has done it
    (trainers: a prerequisite run). Without, never wait: where another holds it, the block
    runs without it (for work done anew whoever else does the same: the run a command was
    asked for). Yields whether it is held. The file (and its folder, where missing) is made,
    and removed when the block ends: made by this process, an empty folder goes too.

    Raises:
        OSError: the file cannot be made.
    """
    fd, made = _take(path, on_wait)
    if fd is None:
        yield False
        return
    try:
        try:
            _record_holder(fd)
        except OSError:
            pass  # (a full disk: the lock holds all the same, only who holds it goes untold)
        yield True
    finally:
        _remove(path, made)  # (still holding it: a process waiting for it looks again)
        os.close(fd)


def _take(path: Path, on_wait: Callable[[str], None] | None) -> tuple[int | None, list[Path]]:
    """A descriptor of `path` locked alone: after waiting (telling `on_wait` who holds it), or
    None at once where it is held otherwise and there is no `on_wait`; and the folders made for
    it, deepest first. A lock taken on a file since removed from its path (its holder's work
    ended while this one waited) is let go, and the file at the path now taken instead."""
    told = False
    while True:
        made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # (`_open_lock_file`: 0o666)
        except FileNotFoundError:
            continue  # its folder removed by the holder before, just now: made again
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if not isinstance(exc, BlockingIOError):  # a file system with no locks: the
                    os.close(fd)                          # work is done without one
                    _remove(path, made)
                    return None, []
                if on_wait is None:
                    os.close(fd)
                    return None, []
                if not told:
                    on_wait(_describe(_holder(fd)))
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_at(fd, path):
                return fd, made
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _still_at(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _remove(path: Path, folders: list[Path]) -> None:
    """Remove a work lock's file and the folders made for it, as far as the system lets: a
    file left (a file system gone read-only, an I/O error) is a lock free again once its
    descriptor closes, and its removal failing replaced what the work raised (a run's "cannot
    write ... (Read-only file system)" became an internal error; found by review)."""
    with contextlib.suppress(OSError):
        path.unlink()
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (another's lock, or a run written there), or gone already


def _record_holder(fd: int) -> None:
    """Write who holds the lock (pid, host, since) into its file, for whoever it refuses or
    keeps waiting."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)


def _only_readers(fd: int) -> bool:
    """After LOCK_EX failed: whether the holders are readers only (a shared lock is granted)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _holder(fd: int) -> bytes:
    """The holder's record; a build that has just taken the lock writes it a moment later."""
    for _ in range(20):
        raw = os.pread(fd, 4096, 0)
        if raw:
            return raw
        time.sleep(0.01)
    return b""


def held_by_a_live_process(path: Path) -> bool:
    """Whether the work lock file `path` records a holder (`_record_holder`) that may still
    run: a live process of this host, or one of another host (which cannot be told). A file
    not there, or without a record, holds nothing: `work_lock` removes its file when its work
    ends, so one left behind is a killed holder's."""
    try:
        holder = json.loads(path.read_bytes())
        return holder["host"] != socket.gethostname() or not process_gone(int(holder["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "holder unknown"
