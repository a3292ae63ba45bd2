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
- **Each segment through shared memory once.** torch hands every tensor over as a
  shared-memory segment, and with its default sharing strategy (`file_descriptor`) each one
  costs the main process a connection to the worker to receive its file descriptor: about half
  of what carrying a batch over cost (benchmarks/README.md, "Issue 13"). So a batch's small
  tensors (`label`) travel by value; the pool's shared state (`lent`, `mapped`) only until the
  main process has it (its first batch from a worker keeps it, `_LENDERS`, and says so in the
  last byte of `lent`); and a feature's segment only the first time: the main process keeps a
  mapping of each segment it receives and says so in `mapped`, and later batches read into
  that segment only name it (`_Named`). The main process gives each batch tensors over its
  mapping with storages of their own (`_Lender.borrow`), so their death still says the batch
  was dropped. The price: the main process holds the segments of a worker until that worker
  is gone and the next DataLoader's workers send their first batch.

The result is what default collate makes of plain samples: features and `label` as tensors of
the same dtypes and shapes, `id` as a list of strings, and in the main process a plain dict.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing.util
import os
import threading
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from flowstore.leftovers import process_gone
from flowstore.reader import buffers
from flowstore.reader.dataset import ID, BatchSample


def collate_batch_samples(samples: list[BatchSample], *,
                          collate_fn_map: dict[Any, Callable] | None = None) -> Any:
    """The batch the samples were read in, as tensors, when they are all of its rows in order,
    as read; otherwise default collate of the samples as plain dicts."""
    batch = samples[0].batch
    whole = len(samples) == len(batch[ID]) and all(
        sample.batch is batch and sample.row == row and sample.as_read()
        for row, sample in enumerate(samples))
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
    worker = get_worker_info()
    if (worker is not None
            and not isinstance(buffers.process_pool(), SharedBufferPool)
            and descriptors_to_lend(worker.num_workers)
            and shared_memory_works()):
        pool = SharedBufferPool()
        buffers.use_pool(pool)
        # (at the worker's exit: with torch's `file_system` sharing a segment is a file in
        # /dev/shm, removed once every process that mapped it has let it go, which a process
        # leaving by multiprocessing's exit never did for its own; each DataLoader's workers
        # left theirs until the main process ended, about 3 MB an epoch at 32 px; found by
        # review. Run by multiprocessing, as a DataLoader worker ends.)
        multiprocessing.util.Finalize(pool, pool.release, exitpriority=0)


#: Open files to allow a process before lending, and more for each DataLoader worker.
LENDING_BASE_FILES, LENDING_FILES_PER_WORKER = 64, 48


def descriptors_to_lend(num_workers: int) -> bool:
    """Whether the open-file limit leaves room for workers to lend their segments.

    Lending costs file descriptors: the main process keeps a mapping of every segment a worker
    has sent (one per feature per batch in flight, about 15 per worker with three features),
    until the next DataLoader's workers send their first batch, and each worker it forks
    inherits them. Under `ulimit -n 64` (some clusters' jobs) two lending workers failed at the
    second epoch (a bare `EOFError`, or a hang, their queue feeders printing "Too many open
    files" in a loop), where torch's own copies worked at 40. Below `LENDING_BASE_FILES +
    LENDING_FILES_PER_WORKER * num_workers` open files (160 for 2 workers, 1,024, the usual
    limit, allows 20) workers keep plain buffers and torch copies them, slower but within the
    limit."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (soft == resource.RLIM_INFINITY
            or soft >= LENDING_BASE_FILES + LENDING_FILES_PER_WORKER * num_workers)


@lru_cache(maxsize=None)
def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


class SharedBufferPool(buffers.BufferPool):
    """A DataLoader worker's batch buffers: shared-memory segments, lent to the main process.

    A segment is free when nothing in this process refers to it (as in any `BufferPool`) and
    its byte in `lent` is 0: set when a batch of it is handed to the main process, cleared by
    the main process once it has dropped that batch's tensors. Each segment has a number, new
    for every segment the pool allocates; the main process writes into `mapped` the number of
    each slot's segment it has kept a mapping of, and from then on a batch names that segment
    instead of sending it (`LentBatch.__reduce__`).

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
        # Per slot, the number of the segment the main process has a mapping of (0: none).
        self.mapped = torch.zeros(slots, dtype=torch.int64).share_memory_()
        self.lender = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._lent_bytes = self.lent.numpy()  # the same memory, read without torch's dispatch
        # id(raw) -> (segment, slot, number)
        self._segments: dict[int, tuple[torch.Tensor, int, int]] = {}
        self._free_slots = list(range(slots - 1, -1, -1))
        self._numbers = itertools.count(1)
        #: Slots whose segment left in a batch since it was last lent (`LentBatch.__reduce__`).
        self.sent_slots: set[int] = set()

    def _allocate(self, size: int) -> np.ndarray:
        if not self._free_slots:
            return super()._allocate(size)
        segment = torch.empty(size, dtype=torch.uint8).share_memory_()
        raw = segment.numpy()
        self._segments[id(raw)] = (segment, self._free_slots.pop(), next(self._numbers))
        return raw

    def _lent(self, raw: np.ndarray) -> bool:
        segment = self._segments.get(id(raw))
        return segment is not None and bool(self._lent_bytes[segment[1]])

    def _forget(self, raw: np.ndarray) -> None:
        segment = self._segments.pop(id(raw), None)
        if segment is not None:
            self._free_slots.append(segment[1])

    def release(self) -> None:
        """Let go of every segment and of the shared state (a batch still referring to a
        segment keeps that one)."""
        with self._lock:
            self._segments.clear()
            self._buffers = []
        self.lent = self.mapped = self._lent_bytes = None

    def segment(self, slot: int, number: int) -> torch.Tensor | None:
        """The segment `number` in `slot`, while this pool still has it."""
        for segment, its_slot, its_number in list(self._segments.values()):
            if its_slot == slot and its_number == number:
                return segment
        return None

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
                tensor, slot, number = segment
                offset = value.ctypes.data - tensor.data_ptr()
                view = tensor[offset:offset + value.nbytes].view(_torch_dtype(value.dtype))
                segments[key] = _Segment(view.view(value.shape), slot, number, offset)
                self._lent_bytes[slot] = 1
                self.sent_slots.discard(slot)
        out = LentBatch(batch if not as_tensors else {
            key: segments[key].view if key in segments else _uncopied(key, value)
            for key, value in batch.items()})
        out.lent, out.mapped, out.lender, out.segments = (self.lent, self.mapped, self.lender,
                                                          segments)
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


class _Segment(NamedTuple):
    """Where a lent feature lies: its view of the segment, the segment's slot and number, and
    the view's first byte in the segment."""
    view: torch.Tensor
    slot: int
    number: int
    offset: int


class _Named(NamedTuple):
    """A lent feature sent by name: its segment is already mapped in the main process."""
    dtype: torch.dtype
    shape: tuple[int, ...]


#: The last byte of a pool's `lent`: set once a main process keeps them (`_LENDERS`).
KNOWN = -1
#: Tensors up to this size travel by value: cheaper than a shared-memory segment of their own.
BY_VALUE_BYTES = 64 << 10


class LentBatch(dict):
    """A worker's batch on its way to the main process; unpickled there as a plain dict whose
    segments the main process hands back once it drops them (`_received`). A value still over
    its segment's memory (the segment's view itself, its numpy array, or a tensor wrapping
    that) is sent as the segment, or only named once the main process has the segment mapped,
    and arrives as it left (a numpy array as one); a tensor made from a segment's memory
    otherwise (a collate's permute, slice or flatten) is sent as a copy, since the segment
    goes back to the pool; a value replaced by other memory is sent as it is. A shallow copy
    is still lent; unpickled in the process that lent it (a deep copy, say) it hands nothing
    back."""

    __slots__ = ("lent", "mapped", "lender", "segments")

    def __copy__(self) -> "LentBatch":
        copied = LentBatch(self)
        copied.lent, copied.mapped, copied.lender = self.lent, self.mapped, self.lender
        copied.segments = dict(self.segments)
        return copied

    @property
    def slots(self) -> dict[str, int]:
        """The lent slot of each feature read into a segment."""
        return {key: segment.slot for key, segment in self.segments.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        pool = buffers.process_pool()
        if isinstance(pool, SharedBufferPool):
            pool.sends += 1
        lender = pool if isinstance(pool, SharedBufferPool) and pool.lender == self.lender else None
        values, where, small = dict(self), {}, []
        lent_memory = {segment.view.untyped_storage().data_ptr()
                       for segment in self.segments.values()}
        for key, value in self.items():
            segment = self.segments.get(key)
            if segment is not None and _over(value, segment.view):
                where[key] = (segment.slot, segment.number, segment.offset,
                              isinstance(value, np.ndarray))
                values[key] = (_Named(segment.view.dtype, tuple(segment.view.shape))
                               if int(self.mapped[segment.slot]) == segment.number
                               else segment.view)
            elif not isinstance(value, torch.Tensor):
                continue  # (numpy pickles its bytes: a view of a segment arrives as a copy)
            elif value.untyped_storage().data_ptr() in lent_memory:
                # torch would send the segment's memory itself, which this pool hands out
                # again for later batches while the main process still reads it
                values[key] = value.clone()
            elif value.nbytes <= BY_VALUE_BYTES and not value.is_shared():
                try:
                    values[key] = value.numpy()
                except (TypeError, RuntimeError):  # (bfloat16; requires grad): torch sends it
                    continue
                small.append(key)
        # A segment that does not leave (its value replaced, or deleted) is handed back here,
        # where this process's own references to it decide, or it stayed lent for good (one
        # more a batch, up to `max_lent_bytes`); unless a copy of this batch sent it already.
        # One that leaves is lent again: a copy sent before without it handed it back.
        sent = {slot for slot, *_ in where.values()}
        for segment in self.segments.values():
            if segment.slot in sent:
                self.lent[segment.slot] = 1
                if lender is not None:
                    lender.sent_slots.add(segment.slot)
            elif lender is not None and segment.slot not in lender.sent_slots:
                self.lent[segment.slot] = 0
        # The pool's shared state, until the main process has it.
        shared = None if self.lent[KNOWN] else (self.lent, self.mapped)
        return _received, (values, small, shared, self.lender, where, os.getpid())


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


@dataclass
class _Lender:
    """In the main process, what it keeps of one worker's pool: the pool's `lent` and `mapped`,
    the worker's pid, and a mapping of each slot's segment it has received (slot -> (number,
    the segment's bytes)), which later batches only name."""
    pid: int
    lent: torch.Tensor
    mapped: torch.Tensor
    segments: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)

    def borrow(self, value: torch.Tensor | _Named, slot: int, number: int,
               offset: int) -> torch.Tensor:
        """A lent feature as a tensor over the kept mapping of its segment (kept now if
        `value` is the segment itself), with a storage of its own, whose death says that the
        main process has dropped the feature."""
        memory = self.segments.get(slot)
        if isinstance(value, torch.Tensor):
            if memory is None or memory[0] != number:
                storage = value.untyped_storage()
                whole = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),))
                memory = self.segments[slot] = number, whole.numpy()
                self.mapped[slot] = number
            dtype, shape = value.dtype, tuple(value.shape)
        else:
            if memory is None or memory[0] != number:
                raise RuntimeError(f"a DataLoader worker named shared-memory segment {number} "
                                   f"(slot {slot}) that this process has no mapping of")
            dtype, shape = value
        return _over_memory(memory[1], offset, dtype, shape)


def _over_memory(memory: np.ndarray, offset: int, dtype: torch.dtype,
                 shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of `dtype` and `shape` over `memory` from byte `offset` on, with a storage of
    its own (not `memory`'s)."""
    nbytes = math.prod(shape) * dtype.itemsize
    return torch.from_numpy(memory[offset:offset + nbytes]).view(dtype).view(shape)


#: In the main process: (weak reference to a received segment's storage, its worker's `lent`, its
#: slot), for every segment not yet handed back.
_BORROWED: list[tuple[Any, torch.Tensor, int]] = []
_BORROWED_LOCK = threading.Lock()  # the pin-memory thread unpickles batches too
#: In the main process: each worker pool's state (by `SharedBufferPool.lender`).
_LENDERS: dict[str, _Lender] = {}


def _received(batch: dict[str, Any], small: list[str],
              shared: tuple[torch.Tensor, torch.Tensor] | None, lender: str,
              where: dict[str, tuple[int, int, int, bool]], pid: int) -> dict[str, Any]:
    """Unpickling a `LentBatch` in the main process: hand back the segments whose tensors all
    died since the last batch, and remember this batch's. In the lending process itself the
    segments stay lent: this process's tensors dying says nothing of the main process's (nor
    where no `lent` is known: a batch sent on by its worker to a third process)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    for key in small:
        batch[key] = torch.from_numpy(batch[key])
    if pid == os.getpid():
        return _in_lender(batch, where)
    with _BORROWED_LOCK:
        still = []
        for storage, owner, slot in _BORROWED:
            if storage.expired():
                owner[slot] = 0
            else:
                still.append((storage, owner, slot))
        known = _known_lender(lender, shared, pid)
        for key, (slot, number, offset, as_numpy) in where.items():
            if known is None:
                if isinstance(batch[key], _Named):
                    raise RuntimeError("a batch that names its DataLoader worker's shared "
                                       "memory reached a process other than the DataLoader's")
                batch[key] = batch[key].numpy() if as_numpy else batch[key]
                continue
            borrowed = known.borrow(batch[key], slot, number, offset)
            still.append((StorageWeakRef(borrowed.untyped_storage()), known.lent, slot))
            # (a numpy array of it keeps the tensor, so its storage dies with the array)
            batch[key] = borrowed.numpy() if as_numpy else borrowed
        _BORROWED[:] = still
    return batch


def _in_lender(batch: dict[str, Any],
               where: dict[str, tuple[int, int, int, bool]]) -> dict[str, Any]:
    """A batch unpickled in the worker that lent it: named features are views of its segments."""
    pool = buffers.process_pool()
    for key, (slot, number, offset, as_numpy) in where.items():
        value = batch[key]
        if isinstance(value, _Named):
            segment = pool.segment(slot, number) if isinstance(pool, SharedBufferPool) else None
            if segment is None:
                raise RuntimeError(f"a DataLoader worker's batch names shared-memory segment "
                                   f"{number} (slot {slot}), which its pool no longer has")
            value = _over_memory(segment.numpy(), offset, *value)
        batch[key] = value.numpy() if as_numpy else value
    return batch


def _known_lender(lender: str, shared: tuple[torch.Tensor, torch.Tensor] | None,
                  pid: int) -> _Lender | None:
    """What the main process keeps of `lender`'s pool: kept from its first batch on (the worker
    then sends its shared state no more), and let go, mappings and all, once its worker is gone
    (checked when another worker sends its first batch: the next DataLoader's). A tensor still
    alive keeps only its own segment's mapping (its memory is a view of it): kept until none
    of the pool's segments was borrowed any more, the pool's every mapping stayed, one small
    tensor kept an epoch (a loss not taken `.item()`) held about 14 descriptors more an epoch,
    which ran out under `ulimit -n 256` at the 17th (found by review)."""
    if lender in _LENDERS:
        return _LENDERS[lender]
    if shared is None:
        return None
    for name, known in list(_LENDERS.items()):
        if process_gone(known.pid):
            del _LENDERS[name]
    lent, mapped = shared
    known = _LENDERS[lender] = _Lender(pid, lent, mapped)
    lent[KNOWN] = 1
    return known


@lru_cache(maxsize=None)
def shared_memory_works() -> bool:
    """Whether this torch behaves as `SharedBufferPool` and `_received` assume, checked once
    per process: a tensor moved to shared memory reports its storage shared and keeps its
    memory, views of it are views, `StorageWeakRef` (torch.multiprocessing.reductions, not
    a documented API; torch's sharing cache uses it) sees a storage die only when its last
    tensor, or numpy view of one, is gone, and a tensor made over a kept mapping of the segment
    has a storage of its own, which dies with it while the mapping lives on. If not, workers
    keep plain buffers and torch copies them, as it always did."""
    try:
        from torch.multiprocessing.reductions import StorageWeakRef

        segment = torch.empty(64, dtype=torch.uint8).share_memory_()
        raw = segment.numpy()
        view = segment[8:16].view(torch.float16)
        same_memory = (raw.ctypes.data == segment.data_ptr()
                       and view.data_ptr() == segment.data_ptr() + 8
                       and segment.untyped_storage().is_shared())
        kept = torch.empty(0, dtype=torch.uint8).set_(segment.untyped_storage(), 0, (64,))
        borrowed = _over_memory(kept.numpy(), 8, torch.float16, (4,))
        own = StorageWeakRef(borrowed.untyped_storage())
        same_memory = same_memory and borrowed.data_ptr() == segment.data_ptr() + 8
        alive = [not own.expired()]
        del borrowed
        owns = own.expired()
        del kept
        storage = StorageWeakRef(segment.untyped_storage())
        alive.append(not storage.expired())
        del segment
        alive.append(not storage.expired())  # the float16 view and the numpy view keep it
        del view
        alive.append(not storage.expired())  # the numpy view keeps it
        del raw
        return same_memory and owns and all(alive) and storage.expired()
    except Exception:  # noqa: BLE001 (any failure means: do not rely on it)
        return False
