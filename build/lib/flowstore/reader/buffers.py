"""Batch buffers: 64-byte aligned, and reused once nothing refers to them any more.

A batch of the two-stream inputs at 224 px is about 27 MB. Allocated fresh each time, its pages
are faulted in and zeroed by the kernel on first write, which cost a `tf.data` pipeline about a
fifth of its CPU (62-70% of the ceiling per core, 80-82% with freed memory kept;
benchmarks/README.md, "Issue 13"): tf.data frees a batch on another thread, later, and glibc
hands the memory back to the kernel or to another arena instead of to the next batch. A plain
loop that drops each batch before reading the next was spared this only because malloc happened
to return the same block.

So `aligned_empty` draws from a pool of raw buffers. A buffer is free when nothing but the pool
refers to it: every numpy view of it, however derived, holds a reference to it (numpy keeps the
array that owns the memory as the base of all its views), and so does anything that wraps the
memory without copying (a TensorFlow tensor made by `tf.numpy_function`, `torch.from_numpy`, a
memoryview). The pool keeps free buffers up to `max_free_bytes`; beyond that they are released.

A subclass may keep its buffers elsewhere and lend them out of the process (`_allocate`,
`_lent`, `_forget`): a DataLoader worker's pool keeps them in shared memory, and a buffer the
main process still uses is not free (`flowstore.reader.torch`). `use_pool` makes such a pool the
process's.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

#: TensorFlow wraps a numpy array's memory without copying it when it is aligned to this many
#: bytes (Eigen's alignment); numpy's own allocations are only 16-byte aligned.
TF_ALIGNMENT = 64


def _free_refcount() -> int:
    """What `sys.getrefcount` says of a buffer held only by the pool's list, seen from the
    loop in `BufferPool.empty` (measured, so that it holds on any CPython)."""
    probe = [np.empty(1, np.uint8)]
    for raw in probe:
        return sys.getrefcount(raw)
    raise AssertionError("unreachable")


class BufferPool:
    """Raw buffers handed out as aligned arrays and taken back when no array uses them.

    Args:
        max_free_bytes: free buffers kept for reuse at most; more are released to malloc.
    """

    _FREE = _free_refcount()

    def __init__(self, max_free_bytes: int = 512 << 20) -> None:
        self.max_free_bytes = max_free_bytes
        self._buffers: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: str | np.dtype) -> np.ndarray:
        """An uninitialized C-contiguous array whose data starts on a `TF_ALIGNMENT` boundary."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = nbytes + TF_ALIGNMENT
        with self._lock:
            raw = self._take(size)
        offset = -raw.ctypes.data % TF_ALIGNMENT
        return raw[offset:offset + nbytes].view(dtype).reshape(shape)

    def _take(self, size: int) -> np.ndarray:
        free_bytes, chosen = 0, None
        for raw in self._buffers:  # a plain loop: no iterator object holds `raw`
            if sys.getrefcount(raw) == self._FREE and not self._lent(raw):
                if chosen is None and raw.size == size:
                    chosen = raw
                else:
                    free_bytes += raw.size
        if chosen is None:
            chosen = self._allocate(size)
            self._buffers.append(chosen)
        if free_bytes > self.max_free_bytes:
            self._release(free_bytes - self.max_free_bytes, keep=chosen)
        return chosen

    def _release(self, excess: int, keep: np.ndarray) -> None:
        """Drop free buffers, oldest first, until `excess` bytes are gone."""
        kept: list[np.ndarray] = []
        for raw in self._buffers:
            if (excess > 0 and raw is not keep and sys.getrefcount(raw) == self._FREE
                    and not self._lent(raw)):
                excess -= raw.size
                self._forget(raw)
                continue
            kept.append(raw)
        self._buffers = kept

    def _allocate(self, size: int) -> np.ndarray:
        """A new raw buffer of `size` bytes."""
        return np.empty(size, np.uint8)

    def _lent(self, raw: np.ndarray) -> bool:
        """Whether another process may still read `raw` (no reference here shows it)."""
        return False

    def _forget(self, raw: np.ndarray) -> None:
        """`raw` leaves the pool."""

    @property
    def held_bytes(self) -> int:
        """Bytes of every buffer the pool holds, in use or free."""
        with self._lock:
            return sum(raw.size for raw in self._buffers)


#: The process's pool: every batch the reader makes, whatever its split.
BATCH_BUFFERS = BufferPool()


def use_pool(pool: BufferPool) -> None:
    """Make `pool` the one every batch of this process is read into from now on."""
    global BATCH_BUFFERS
    BATCH_BUFFERS = pool


def process_pool() -> BufferPool:
    """The pool this process reads its batches into."""
    return BATCH_BUFFERS


def aligned_empty(shape: tuple[int, ...], dtype: str | np.dtype) -> np.ndarray:
    """An uninitialized array whose data starts on a `TF_ALIGNMENT` boundary, from the pool."""
    return BATCH_BUFFERS.empty(shape, dtype)
