"""PyTorch adapter: a split is a map-style dataset as it is; this module only spares torch the
copies it would make of each batch.

`DataLoader(split, batch_size=8)` asks the split for a batch's positions at once
(`Split.__getitems__`), which reads them into one buffer per feature and hands back the rows.

- **No stacking copy.** torch's `default_collate` would stack those rows into a new tensor: a
  second copy of every byte, on torch's intra-op threads, which held the 0-worker DataLoader to
  half the ceiling per core (`benchmarks/reader.py`). `adapt_process` adds an entry to
  `default_collate_fn_map` (torch's documented way to extend it) for `BatchSample`: when a
  collate gets every row of one batch in order, the batch's buffers become the tensors (no
  copy). Any other list of samples (a custom sampler mixing reads, a subset of rows) is
  collated as before.
- **No shared-memory copy, and no fresh pages, in worker processes.** A worker hands a batch to
  the main process through shared memory: torch copies each tensor into a new shared-memory
  segment, and the kernel faults in and zeroes every page of it, then frees it when the main
  process drops the batch. That held the 2-worker DataLoader to a third of the ceiling per core,
  half of the workers' CPU in the kernel (benchmarks/README.md, "Issue 13"). In a worker,
  `adapt_process` makes the process's batch buffers a `SharedBufferPool`: the split reads
  straight into shared-memory segments, which torch then passes on as they are, and a segment
  is reused once the main process has dropped every tensor of it. The main process says so
  through a byte per segment in shared memory (`lent`): each batch arrives as a `LentBatch`,
  whose unpickling, in the main process, records a weak reference to each segment's storage
  and clears the bytes of the segments whose storage has died since (`_received`). A batch the
  main process keeps is never written over; it only keeps its segments out of the pool.
  A loader that takes whole batches from the split (`DataLoader(split, batch_size=None,
  sampler=BatchSampler(...))`: `split[positions]`, then torch's `default_convert`) gets the
  same: in a worker `split[positions]` is a `LentBatch` of numpy arrays over its segments
  (`read_to_lend`), and whatever wraps that memory is sent as the segment.
- **Nothing else through shared memory.** torch hands every tensor over as a shared-memory
  segment, and with its default sharing strategy (`file_descriptor`) each one costs the main
  process a connection to the worker to receive its file descriptor: about half of what
  carrying a batch over cost (benchmarks/README.md, "Issue 13"). So a batch's small tensors
  (`label`) travel by value, and the `lent` bytes only until the main process has them: its
  first batch from a worker keeps them (`_LENDERS`) and says so in their last byte.

The result is what default collate makes of plain samples: features and `label` as tensors of
the same dtypes and shapes, `id` as a list of strings, and in the main process a plain dict.
"""

from __future__ import annotations

import os
import threading
import uuid
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from flowstore.reader import buffers
from flowstore.reader.dataset import ID, BatchSample


def collate_batch_samples(samples: list[BatchSample], *,
                          collate_fn_map: dict[Any, Callable] | None = None) -> Any:
    """The batch the samples were read in, as tensors, when they are all of its rows in order;
    otherwise default collate of the samples as plain dicts."""
    batch = samples[0].batch
    whole = len(samples) == len(batch[ID]) and all(
        sample.batch is batch and sample.row == row for row, sample in enumerate(samples))
    if not whole:
        return collate([dict(sample) for sample in samples], collate_fn_map=collate_fn_map)
    pool = buffers.process_pool()
    if isinstance(pool, SharedBufferPool):
        return pool.lend_batch(batch)
    return {key: _uncopied(key, value) for key, value in batch.items()}


def read_to_lend(split: Any, positions: Any) -> dict[str, Any]:
    """`split.read(positions)`; in a DataLoader worker, read into shared memory and returned as
    a `LentBatch` of the same numpy arrays, so that a loader taking whole batches from the split
    (`DataLoader(split, batch_size=None, sampler=BatchSampler(...))`, whose `default_convert`
    wraps them as tensors over the same memory) sends the segments on uncopied."""
    adapt_process()
    batch = split.read(positions)
    pool = buffers.process_pool()
    if isinstance(pool, SharedBufferPool):
        return pool.lend_batch(batch, as_tensors=False)
    return batch


def _uncopied(key: str, value: np.ndarray) -> Any:
    """A batch's value as default collate would make it, on the same memory: ids as a list of
    strings, arrays as tensors."""
    return list(value) if key == ID else torch.from_numpy(value)


def adapt_process() -> None:
    """Teach `default_collate` (and any collate built on `default_collate_fn_map`) about
    `BatchSample`, and in a DataLoader worker put this process's batch buffers in shared memory
    (when `shared_memory_works`); idempotent, and cheap enough to call for every batch."""
    default_collate_fn_map.setdefault(BatchSample, collate_batch_samples)
    if (get_worker_info() is not None
            and not isinstance(buffers.process_pool(), SharedBufferPool)
            and shared_memory_works()):
        buffers.use_pool(SharedBufferPool())


@lru_cache(maxsize=None)
def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


class SharedBufferPool(buffers.BufferPool):
    """A DataLoader worker's batch buffers: shared-memory segments, lent to the main process.

    A segment is free when nothing in this process refers to it (as in any `BufferPool`) and
    its byte in `lent` is 0: set when a batch of it is handed to the main process, cleared by
    the main process once it has dropped that batch's tensors.

    A collate that calls default collate and repackages its batch (`lambda b:
    tuple(default_collate(b).values())`) hides the batch from `_received`, so its segments never
    come back. So lending stops when `UNSENT_LENDS` batches were lent and none left this process
    as a `LentBatch`; torch then copies batches as it always did. And beyond `max_lent_bytes`
    of lent segments the oldest are forgotten, whatever the reason: this process drops them,
    the main process keeps them as long as it uses them (as it does torch's own), and their
    slots are never given out again, since the main process may still clear them. Beyond `slots`
    segments, buffers are plain memory, which torch copies as before.
    """

    #: Batches lent before a pool that has sent none concludes that its collate repackages
    #: them: more than a DataLoader reads ahead (its `prefetch_factor`, 2 by default).
    UNSENT_LENDS = 8

    def __init__(self, slots: int = 1 << 16, max_lent_bytes: int = 1 << 30,
                 max_free_bytes: int = 512 << 20) -> None:
        super().__init__(max_free_bytes)
        self.max_lent_bytes = max_lent_bytes
        self.lends = self.sends = 0
        # One byte per slot, and one more (`KNOWN`), set by the main process once it keeps them.
        self.lent = torch.zeros(slots + 1, dtype=torch.uint8).share_memory_()
        self.lender = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._lent_bytes = self.lent.numpy()  # the same memory, read without torch's dispatch
        self._segments: dict[int, tuple[torch.Tensor, int]] = {}  # id(raw) -> (tensor, slot)
        self._free_slots = list(range(slots - 1, -1, -1))

    def _allocate(self, size: int) -> np.ndarray:
        if not self._free_slots:
            return super()._allocate(size)
        segment = torch.empty(size, dtype=torch.uint8).share_memory_()
        raw = segment.numpy()
        self._segments[id(raw)] = (segment, self._free_slots.pop())
        return raw

    def _lent(self, raw: np.ndarray) -> bool:
        segment = self._segments.get(id(raw))
        return segment is not None and bool(self._lent_bytes[segment[1]])

    def _forget(self, raw: np.ndarray) -> None:
        segment = self._segments.pop(id(raw), None)
        if segment is not None:
            self._free_slots.append(segment[1])

    @property
    def lending(self) -> bool:
        """Whether batches still go out as their segments (see the class)."""
        return self.sends > 0 or self.lends < self.UNSENT_LENDS

    def lend_batch(self, batch: dict[str, Any], *, as_tensors: bool = True) -> "LentBatch":
        """The batch to hand to the main process, each feature read into a segment marked lent
        until the main process drops it. With `as_tensors` its values are what default collate
        makes (the features being the segments themselves); without, they stay the batch's
        numpy arrays, which torch's `default_convert` wraps as tensors over the same memory
        (`DataLoader(split, batch_size=None, ...)`): either way the segment is what is sent."""
        segments = {}
        for key, value in batch.items():
            segment = (self._segments.get(id(value.base))
                       if self.lending and key != ID and value.flags.c_contiguous else None)
            if segment is not None:
                tensor, slot = segment
                offset = value.ctypes.data - tensor.data_ptr()
                view = tensor[offset:offset + value.nbytes].view(_torch_dtype(value.dtype))
                segments[key] = (view.view(value.shape), slot)
                self._lent_bytes[slot] = 1
        out = LentBatch(batch if not as_tensors else {
            key: segments[key][0] if key in segments else _uncopied(key, value)
            for key, value in batch.items()})
        out.lent, out.lender, out.segments = self.lent, self.lender, segments
        self.lends += 1
        self._forget_unreturned(0 if not self.lending else self.max_lent_bytes)
        return out

    def _forget_unreturned(self, keep: int) -> None:
        """Drop the oldest lent segments beyond `keep` bytes, retiring their slots."""
        with self._lock:
            lent = [raw for raw in self._buffers if self._lent(raw)]
            excess = sum(raw.size for raw in lent) - keep
            if excess <= 0:
                return
            dropped = set()
            for raw in lent:
                if excess <= 0:
                    break
                excess -= raw.size
                dropped.add(id(raw))
                del self._segments[id(raw)]  # the slot is not given back
            self._buffers = [raw for raw in self._buffers if id(raw) not in dropped]


#: The last byte of a pool's `lent`: set once a main process keeps them (`_LENDERS`).
KNOWN = -1
#: Tensors up to this size travel by value: cheaper than a shared-memory segment of their own.
BY_VALUE_BYTES = 64 << 10


class LentBatch(dict):
    """A worker's batch on its way to the main process; unpickled there as a plain dict whose
    segments the main process hands back once it drops them (`_received`). A value still over
    its segment's memory (the segment's view itself, its numpy array, or a tensor wrapping
    that) is sent as the segment; a value replaced by other memory is sent as it is. A shallow
    copy is still lent; unpickled in the process that lent it (a deep copy, say) it hands
    nothing back."""

    __slots__ = ("lent", "lender", "segments")

    def __copy__(self) -> "LentBatch":
        copied = LentBatch(self)
        copied.lent, copied.lender = self.lent, self.lender
        copied.segments = dict(self.segments)
        return copied

    @property
    def slots(self) -> dict[str, int]:
        """The lent slot of each feature read into a segment."""
        return {key: slot for key, (_, slot) in self.segments.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        pool = buffers.process_pool()
        if isinstance(pool, SharedBufferPool):
            pool.sends += 1
        values, slots, small = dict(self), {}, []
        for key, value in self.items():
            view, slot = self.segments.get(key, (None, None))
            if view is not None and _over(value, view):
                values[key], slots[key] = view, slot
            elif (isinstance(value, torch.Tensor) and value.nbytes <= BY_VALUE_BYTES
                  and not value.is_shared()):
                values[key] = value.numpy()
                small.append(key)
        lent = None if self.lent[KNOWN] else self.lent  # the main process has them already
        return _received, (values, small, lent, self.lender, slots, os.getpid())


def _over(value: Any, view: torch.Tensor) -> bool:
    """Whether `value` (a tensor or numpy array) is `view`'s memory, as `view` reads it."""
    if value is view:
        return True
    if isinstance(value, torch.Tensor):
        address, dtype, contiguous = value.data_ptr(), value.dtype, value.is_contiguous()
    elif isinstance(value, np.ndarray):
        address, contiguous = value.ctypes.data, value.flags.c_contiguous
        dtype = _torch_dtype(value.dtype)
    else:
        return False
    return (contiguous and address == view.data_ptr() and dtype == view.dtype
            and tuple(value.shape) == tuple(view.shape))


#: In the main process: (weak reference to a received segment's storage, its worker's `lent`, its
#: slot), for every segment not yet handed back.
_BORROWED: list[tuple[Any, torch.Tensor, int]] = []
_BORROWED_LOCK = threading.Lock()  # the pin-memory thread unpickles batches too
#: In the main process: each worker pool's `lent` (by `SharedBufferPool.lender`), and its pid.
_LENDERS: dict[str, tuple[int, torch.Tensor]] = {}


def _received(batch: dict[str, Any], small: list[str], lent: torch.Tensor | None, lender: str,
              slots: dict[str, int], pid: int) -> dict[str, Any]:
    """Unpickling a `LentBatch` in the main process: hand back the segments whose tensors all
    died since the last batch, and remember this batch's. In the lending process itself the
    segments stay lent: this process's tensors dying says nothing of the main process's (nor
    where no `lent` is known: a batch sent on by its worker to a third process)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    for key in small:
        batch[key] = torch.from_numpy(batch[key])
    if pid == os.getpid():
        return batch
    with _BORROWED_LOCK:
        still = []
        for storage, owner, slot in _BORROWED:
            if storage.expired():
                owner[slot] = 0
            else:
                still.append((storage, owner, slot))
        lent = _known_lent(lender, lent, pid, still)
        if lent is not None:
            still += [(StorageWeakRef(batch[key].untyped_storage()), lent, slot)
                      for key, slot in slots.items()]
        _BORROWED[:] = still
    return batch


def _known_lent(lender: str, lent: torch.Tensor | None, pid: int,
                borrowed: list[tuple[Any, torch.Tensor, int]]) -> torch.Tensor | None:
    """The `lent` bytes of `lender`'s pool: kept from its first batch on (the worker then sends
    none), and let go once its worker is gone and no segment of it is `borrowed` any more."""
    if lender in _LENDERS:
        return _LENDERS[lender][1]
    if lent is None:
        return None
    in_use = {id(owner) for _, owner, _ in borrowed}
    for name, (owner_pid, owner) in list(_LENDERS.items()):
        if id(owner) not in in_use and not _alive(owner_pid):
            del _LENDERS[name]
    _LENDERS[lender] = (pid, lent)
    lent[KNOWN] = 1
    return lent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


@lru_cache(maxsize=None)
def shared_memory_works() -> bool:
    """Whether this torch behaves as `SharedBufferPool` and `_received` assume, checked once
    per process: a tensor moved to shared memory reports its storage shared and keeps its
    memory, views of it are views, and `StorageWeakRef` (torch.multiprocessing.reductions, not
    a documented API; torch's sharing cache uses it) sees a storage die only when its last
    tensor, or numpy view of one, is gone. If not, workers keep plain buffers and torch copies
    them, as it always did."""
    try:
        from torch.multiprocessing.reductions import StorageWeakRef

        segment = torch.empty(64, dtype=torch.uint8).share_memory_()
        raw = segment.numpy()
        view = segment[8:16].view(torch.float16)
        same_memory = (raw.ctypes.data == segment.data_ptr()
                       and view.data_ptr() == segment.data_ptr() + 8
                       and segment.untyped_storage().is_shared())
        storage = StorageWeakRef(segment.untyped_storage())
        alive = [not storage.expired()]
        del segment
        alive.append(not storage.expired())  # the float16 view and the numpy view keep it
        del view
        alive.append(not storage.expired())  # the numpy view keeps it
        del raw
        return same_memory and all(alive) and storage.expired()
    except Exception:  # noqa: BLE001 (any failure means: do not rely on it)
        return False
