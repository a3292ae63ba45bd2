"""One writer per store: a second build refuses at once; a killed holder's lock is free again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowstore.errors import StoreError
from flowstore.store import failures, open_store
from flowstore.store.lock import lock_path, writer_lock
from flowstore.synth.tvhi import SynthTVHIConfig, write_synthetic_tvhi
from tests.conftest import assert_one_line_error, flowstore_cli


@pytest.mark.parametrize("spelling", ["same", "symlink", "folder-symlink", "dot-dot"])
def test_second_holder_is_refused_with_the_holders_pid(tmp_path, spelling):
    """However the second writer spells the store's path (a symlink to the store or to a folder
    above it: before, each spelling had its own lock and two builds ran at once)."""
    (tmp_path / "data").mkdir()
    store = tmp_path / "data" / "s.zarr"
    other = {"same": store, "symlink": tmp_path / "alias.zarr",
             "folder-symlink": tmp_path / "linked" / "s.zarr",
             "dot-dot": tmp_path / "data" / ".." / "data" / "s.zarr"}[spelling]
    store.mkdir()
    (tmp_path / "alias.zarr").symlink_to(store)
    (tmp_path / "linked").symlink_to(tmp_path / "data")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from flowstore.store.lock import writer_lock\n"
                               f"with writer_lock({str(store)!r}):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=rf"another flowstore process \(pid {holder.pid} on "):
            with writer_lock(other):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with writer_lock(store):  # the kernel released the dead holder's lock: taken over safely
        assert lock_path(store).read_text().startswith("{")


def _slow_source(tmp_path):
    return write_synthetic_tvhi(tmp_path / "src", SynthTVHIConfig(
        videos_per_class=6, negatives=0, min_frames=60, max_frames=90, resolution=(320, 240)))


def test_two_concurrent_builds_one_builds_the_other_refuses(tmp_path):
    source = _slow_source(tmp_path)
    store = tmp_path / "s.zarr"
    args = ["build", "tvhi", "--source", str(source), "--store", str(store), "--size", "96",
            "--steps", "16", "--workers", "1", "-q"]
    first = subprocess.Popen([sys.executable, "-m", "flowstore", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (lock_path(store).exists() and lock_path(store).read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = flowstore_cli(*args)
    line = assert_one_line_error(second)
    assert f"pid {first.pid}" in line and "being written by another flowstore process" in line
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "24 computed" in out
    with open_store(store) as s:  # the refused build did not disturb the store
        assert s.read("done").all() and failures(s) == {}
        assert np.abs(s.read("flow").astype(np.float32)).sum() > 0


def test_the_lock_file_follows_the_umask_and_a_read_only_one_still_locks(tmp_path,
                                                                         monkeypatch):
    """The lock file was made 0o644 whatever the umask: in a folder a group shares (umask
    002) only the first builder could ever resume the store ("cannot open the lock file:
    Permission denied"); a lock file this user may not write is opened read-only now (flock
    works on it; only the holder's record is not written)."""
    import fcntl
    import os

    import flowstore.store.lock as lock

    store = tmp_path / "s.zarr"
    store.mkdir()
    old = os.umask(0o002)
    try:
        with writer_lock(store):
            pass
    finally:
        os.umask(old)
    assert lock_path(store).stat().st_mode & 0o777 == 0o664

    opened = os.open

    def not_writable(path, flags, *mode):
        if Path(path) == lock_path(store) and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path, flags, *mode)

    monkeypatch.setattr(lock.os, "open", not_writable)
    with writer_lock(store):
        other = opened(lock_path(store), os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # held: another build is refused
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)


def test_a_work_lock_whose_file_cannot_be_removed_lets_the_work_say_what_failed(tmp_path,
                                                                                 monkeypatch):
    """The runs folder gone read-only mid-run: removing the lock file failed in the block's
    `finally`, and that error replaced the run's own one-line "cannot write the flow run"
    (an internal error, traceback and all; found by review). The lock is let go all the same
    (its descriptor closed): another process takes it."""
    import errno

    from flowstore.store.lock import work_lock

    path = tmp_path / "flow.lock"
    unlink = Path.unlink

    def read_only(self, *args, **kwargs):
        if self == path:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(RuntimeError, match="the work's own error"):
        with work_lock(path, on_wait=None) as held:
            assert held
            raise RuntimeError("the work's own error")
    assert path.exists()  # (left, as the system would not remove it)
    with work_lock(path, on_wait=None) as held:
        assert held  # (free again: its holder's descriptor was closed)


def test_a_work_lock_waits_for_its_holder_then_holds_the_file_at_its_path(tmp_path):
    """A work lock waits (told who holds it) rather than refuse, and leaves no file once its
    work ends. The holder removes the file as it lets go, so a waiter wakes holding a file no
    longer at the path; taken as it is, a third process would make a new file there and hold
    it at the same time: the waiter takes the file now at the path instead."""
    import threading

    from flowstore.store.lock import work_lock

    path = tmp_path / "locks" / "flow.lock"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from pathlib import Path\n"
                               "from flowstore.store.lock import work_lock\n"
                               f"with work_lock(Path({str(path)!r}), on_wait=print):\n"
                               "    print('held', flush=True); sys.stdin.readline()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    told: list[str] = []
    inside, leave = threading.Event(), threading.Event()

    def waiter() -> None:
        with work_lock(path, on_wait=told.append):
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=waiter)
    try:
        assert holder.stdout.readline().strip() == "held"
        with work_lock(path, on_wait=None) as held:
            assert held is False  # (held by another, and not waited for)
        thread.start()
        for _ in range(200):
            if told:
                break
            time.sleep(0.05)
        assert told and told[0].startswith(f"pid {holder.pid} on ") and not inside.is_set()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0 and inside.wait(30)
        with work_lock(path, on_wait=None) as held:
            assert held is False  # the waiter holds the file at the path, not a removed one
    finally:
        leave.set()
        holder.kill()
        holder.communicate()
    thread.join(30)
    assert not path.exists() and not path.parent.exists()  # (the folder it made, empty)


def test_a_work_lock_a_killed_holder_left_is_taken_and_one_not_waited_for_is_not_held(
        tmp_path):
    from flowstore.store.lock import work_lock

    path = tmp_path / "flow.lock"
    killed = subprocess.Popen([sys.executable, "-c",
                               "import time; from pathlib import Path\n"
                               "from flowstore.store.lock import work_lock\n"
                               f"with work_lock(Path({str(path)!r}), on_wait=print):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "held"
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    assert path.exists()  # (a killed holder removes nothing)
    with work_lock(path, on_wait=pytest.fail) as held:
        assert held and path.exists()
        with work_lock(path, on_wait=None) as second:
            assert second is False
        assert path.exists()  # (removed by its holder only)
    assert not path.exists()


def test_a_read_of_a_file_that_is_no_store_leaves_no_lock_file_beside_it(tmp_path):
    """`flowstore inspect notes.h5` (an HDF5 file of another program, or no HDF5 at all) left a
    hidden `.notes.h5.lock` beside it, made by the HDF5 reader's shared lock (found by review);
    one beside a real store, or one there before, stays (the lock module: why)."""
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["a"] = [1, 2]
    (tmp_path / "text.h5").write_text("not HDF5\n")
    for name, said in (("other.h5", "is not a flowstore store"),
                       ("text.h5", "is not a readable flowstore store")):
        assert said in assert_one_line_error(flowstore_cli("inspect", tmp_path / name))
        assert not lock_path(tmp_path / name).exists(), name
    lock_path(other).write_text("")  # there before: not this reader's to remove
    assert_one_line_error(flowstore_cli("inspect", other))
    assert lock_path(other).exists()
    with h5py.File(tmp_path / "half.h5", "w") as f:  # a store whose making stopped: kept
        f.attrs["flowstore.creating"] = "true"  # (attributes are JSON text)
    assert "--overwrite deletes it" in assert_one_line_error(
        flowstore_cli("inspect", tmp_path / "half.h5"))
    assert lock_path(tmp_path / "half.h5").exists()


_NO_FILE_LOCKS = """
import errno, sys
import flowstore.store.lock as lock

def flock(fd, operation):  # (as an NFS mount without its lock service answers)
    raise OSError(errno.ENOLCK, "No locks available")

lock.fcntl.flock = flock
from flowstore.cli import main
sys.argv = ["flowstore", *sys.argv[1:]]
main()
"""


def test_a_file_system_without_locks_takes_no_build_and_its_stores_are_read(
        tmp_path, tiny_tvhi_source, monkeypatch):
    """`flock` failing otherwise than "held" (ENOLCK: NFS without its lock service; some FUSE
    mounts) was "error: [Errno 37] No locks available" from a build, and `inspect` of an HDF5
    store an internal error, traceback and all; a trainers' work lock refused the run (found by
    review). A build is refused, saying why; readers read without a lock, which no build can
    hold there; a work lock is not held, and leaves nothing."""
    import errno

    import flowstore.store.lock as lock

    store = tmp_path / "s.h5"
    build = ["build", "tvhi", "--source", str(tiny_tvhi_source), "--store", str(store),
             "--size", "16", "--steps", "2", "-q"]
    assert flowstore_cli(*build).returncode == 0

    def no_locks(*args):
        return subprocess.run([sys.executable, "-c", _NO_FILE_LOCKS, *args],
                              capture_output=True, text=True, timeout=120)

    for name in ("t.h5", "t.zarr"):
        refused = no_locks(*build[:5], str(tmp_path / name), *build[6:])
        assert assert_one_line_error(refused).startswith(
            f"error: cannot lock store {str(tmp_path / name)!r} (No locks available): its file "
            f"system gives no file locks"), refused.stderr
        assert not (tmp_path / name).exists()
    for command in ("inspect", "verify"):
        read = no_locks(command, str(store))
        assert read.returncode == 0 and read.stderr == "", (command, read.stderr)

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", flock)
    work = tmp_path / "runs" / ".training-x.lock"
    for on_wait in (None, print):
        with lock.work_lock(work, on_wait=on_wait) as held:
            assert held is False
        assert not (tmp_path / "runs").exists()
    fresh = tmp_path / "fresh.h5"
    fresh.write_bytes(b"")
    assert lock.reader_lock(fresh) is None and not lock_path(fresh).exists()
