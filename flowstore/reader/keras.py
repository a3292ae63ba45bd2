"""Keras 3 adapter: a split as a `keras.utils.PyDataset`, so `model.fit` reads a store on any
Keras backend (JAX, PyTorch, TensorFlow) without tf.data.

Batch `i` of epoch `e` is the same whichever thread reads it: the order and the augmentation
are seeded by (seed, e, i) (`flowstore.reader.batches`). With `workers >= 1`, that many threads
of this class read the next batches ahead of the training loop (the store's GIL-free reads run
in parallel); Keras itself reads the dataset one batch at a time in its own loop.

Why not Keras' own reading threads (its `workers` > 1): they keep batches read ahead but not
yet taken in a queue that outlives an interrupted pass, and hand them out first in the next
one. `fit` on a model whose loss and metrics are not built yet takes one batch to build them
and then starts the epoch again, so every epoch after began with the previous pass's leftover
batches and ended before its own last ones: 7 of 24 samples seen twice an epoch and 7 never.
Read-ahead here is keyed by (epoch, batch), so a pass started again reads what it asks for.

Which epoch is which: a pass that has handed out every batch ends its epoch at the next
`on_epoch_end` or `on_epoch_begin`, and the next pass reads the next epoch's order; a pass
read over several of Keras' epochs (`steps_per_epoch` below `len()`) ends when its last batch
has been handed out. Counting
the calls instead was wrong on some backend whichever call was counted: Keras calls
`on_epoch_end` once before training on TensorFlow, and on JAX and PyTorch wraps the one batch
that builds the model in a begin-end pair of its own. A loop of one's own calls
`on_epoch_begin` (or `on_epoch_end`) once an epoch, as Keras does.
"""

from __future__ import annotations

import math
import operator
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import keras
import numpy as np

from flowstore.reader.batches import batch_rng, epoch_order, whole_number
from flowstore.reader.dataset import LABEL

if TYPE_CHECKING:
    import numpy as np

    from flowstore.reader.dataset import Augmentation, Split


class SplitPyDataset(keras.utils.PyDataset):
    """`(features, label)` batches of a split, a new seeded order every epoch when shuffling.

    `features` is the array of a one-feature split, else a dict keyed like its features.

    Args:
        workers: threads reading batches ahead of the loop that asks for them (0: none,
            each batch is read when asked; Keras' own reading threads are not used, see the
            module's docstring).
        max_queue_size: batches read ahead (default: `workers`).
        use_multiprocessing: refused: the store's reads need no process of their own.
    """

    def __init__(self, split: "Split", batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 augment: "bool | Augmentation | None" = None, workers: int = 0,
                 max_queue_size: int | None = None, use_multiprocessing: bool = False) -> None:
        super().__init__()  # (Keras reads it in its own loop, one batch at a time)
        batch_size = whole_number("batch_size", batch_size, 1)
        whole_number("seed", seed, 0)  # (refused here, not at the first batch inside `fit`)
        if use_multiprocessing:
            raise ValueError("use_multiprocessing: a split reads without the GIL, so threads "
                             "read it in parallel; give workers=N threads instead")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.augment = split.augmentation(augment)
        self.reading_threads = whole_number("workers", workers, 0)  # (-1 was 0, 2.5 was 2)
        queue = (self.reading_threads if max_queue_size is None  # (-3 was 1, 2.5 a TypeError)
                 else whole_number("max_queue_size", max_queue_size, 1))
        self.read_ahead = 0 if self.reading_threads == 0 else queue
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple[int, int], Future] = {}
        self._lock = threading.Lock()
        self._served: set[int] = set()  # the batches this pass has handed out
        self._start_epoch(0)

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __getitem__(self, index: int):
        if isinstance(index, (bool, np.bool_)) or not hasattr(index, "__index__"):
            raise TypeError(f"a batch is indexed by an integer, got {type(index).__name__}")
        index = operator.index(index)  # (a float reached a slice: Python's own words)
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        epoch, order = self._state
        with self._lock:
            ahead = self._ahead.pop((epoch, index), None)
            self._served.add(index)
        self._read_ahead_from(epoch, order, index + 1)
        return ahead.result() if ahead is not None else self._read(epoch, order, index)

    def on_epoch_begin(self) -> None:
        self._end_pass()

    def on_epoch_end(self) -> None:
        self._end_pass()

    def set_epoch(self, epoch: int) -> None:
        """Read `epoch`'s order from now on, as a new pass (like PyTorch's
        `DistributedSampler.set_epoch`): for a loop that reads part of an epoch, where a pass
        that is not whole does not move on."""
        epoch = whole_number("epoch", epoch, 0)  # (1.9 was epoch 1, as `batches` refuses it)
        with self._lock:
            self._served = set()
        self._start_epoch(epoch)

    def _end_pass(self) -> None:
        """Once every batch of the pass has been handed out, the next epoch: its order, and its
        first batches read ahead (while the model is validated). Until then the pass goes on,
        across Keras' epochs: `fit(steps_per_epoch=N)` with N below `len(self)` reads a pass
        over several of them (forgetting what was served at each call kept every pass in epoch
        0's order and flips)."""
        with self._lock:
            whole = len(self._served) >= len(self)
            if whole:
                self._served = set()
        if whole:
            self._start_epoch(self.epoch + 1)

    @property
    def epoch(self) -> int:
        return self._state[0]

    @property
    def _order(self) -> "np.ndarray":
        return self._state[1]

    def _start_epoch(self, epoch: int) -> None:
        # one assignment: a reading thread sees an epoch with its own order, never another's
        self._state = (epoch, epoch_order(len(self.split), shuffle=self.shuffle, seed=self.seed,
                                          epoch=epoch))
        self._read_ahead_from(*self._state, 0)

    def _read(self, epoch: int, order: "np.ndarray", index: int):
        positions = order[index * self.batch_size:(index + 1) * self.batch_size]
        batch = self.split.read(positions)
        if self.augment is not None:
            batch = self.augment(batch, batch_rng(self.seed, epoch, index))
        return self.split.model_inputs(batch), batch[LABEL]

    def _read_ahead_from(self, epoch: int, order: "np.ndarray", first: int) -> None:
        """Start reading batches `first`... of `epoch` (as many as `read_ahead`), and forget
        those of other epochs (a pass that was started again, or ended)."""
        if not self.read_ahead:
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.reading_threads,
                                                thread_name_prefix="flowstore-read")
            for key in [key for key in self._ahead if key[0] != epoch]:
                self._ahead.pop(key).cancel()
            for index in range(first, min(first + self.read_ahead, len(self))):
                if (epoch, index) not in self._ahead:
                    self._ahead[epoch, index] = self._pool.submit(self._read, epoch, order,
                                                                  index)
