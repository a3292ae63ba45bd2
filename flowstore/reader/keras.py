"""Keras 3 adapter: a split as a `keras.utils.PyDataset`, so `model.fit` reads a store on any
Keras backend (JAX, PyTorch, TensorFlow) without tf.data.

Batch `i` of epoch `e` is the same whichever worker reads it: the order and the augmentation
are seeded by (seed, e, i) (`flowstore.reader.batches`). With `workers > 1` Keras reads batches
in threads, which the store's GIL-free reads let run in parallel.

Which epoch is which follows `on_epoch_begin`, which Keras calls once at the start of each
epoch: the n-th call starts epoch n - 1. Keras also calls `on_epoch_end` once before training
starts (when `fit` makes its epoch iterator), so counting `on_epoch_end` calls made `fit`'s
epoch e read epoch e + 1's order; and with `workers > 1` it starts its reading threads before
`on_epoch_begin`, so `on_epoch_end` already sets the epoch the next `on_epoch_begin` starts.
A loop of one's own calls `on_epoch_begin` at each epoch's start, as Keras does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras

from flowstore.reader.batches import batch_rng, epoch_order
from flowstore.reader.dataset import LABEL

if TYPE_CHECKING:
    import numpy as np

    from flowstore.reader.dataset import Augmentation, Split


class SplitPyDataset(keras.utils.PyDataset):
    """`(features, label)` batches of a split, a new seeded order every epoch when shuffling.

    `features` is the array of a one-feature split, else a dict keyed like its features.
    Extra keyword arguments (`workers`, `use_multiprocessing`, `max_queue_size`) go to
    `keras.utils.PyDataset`.
    """

    def __init__(self, split: "Split", batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 augment: "bool | Augmentation | None" = None, **options: Any) -> None:
        super().__init__(**options)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.augment = split.augmentation(augment)
        self._epochs_begun = 0
        self._start_epoch(0)

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        epoch, order = self._state
        positions = order[index * self.batch_size:(index + 1) * self.batch_size]
        batch = self.split.read(positions)
        if self.augment is not None:
            batch = self.augment(batch, batch_rng(self.seed, epoch, index))
        return self.split.model_inputs(batch), batch[LABEL]

    def on_epoch_begin(self) -> None:
        self._start_epoch(self._epochs_begun)
        self._epochs_begun += 1

    def on_epoch_end(self) -> None:
        self._start_epoch(self._epochs_begun)  # (the epoch the next on_epoch_begin starts)

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
