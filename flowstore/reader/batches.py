"""Plain numpy batches, for JAX, a hand-written loop, or any framework without an adapter.

The epoch order and the augmentation seeds are functions of (seed, epoch, batch), never of a
shared random stream, so an epoch reads the same batches whether it runs in one process or is
split over workers (`flowstore.reader.keras`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    from flowstore.reader.dataset import Augmentation, Split


def whole_number(name: str, value: object, minimum: int) -> int:
    """`value` as an int of at least `minimum`, or a one-line error naming it: given 8.0 or
    None, a batch size or seed failed only at the first batch, deep in numpy or Keras."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def seed_entropy(*values: int) -> list[int]:
    """Whole numbers as the entropy of numpy's seed sequence, one tuple never another's.

    Numbers below 2**32 are taken as they are, one 32-bit word each (the orders and
    augmentations every seed below 2**32 has always had). A seed sequence splits a larger
    number into words and pads short entropy with zeros, so [2**32 + 5, 0] was [5, 1]: seed
    2**32 + 5's first epoch was seed 5's second. Where any number is that large, each is given
    as its count of words, then its words: no tuple's words begin another's, and at five words
    or more such entropy is never a short (zero-padded) one."""
    if all(value < 2**32 for value in values):
        return list(values)
    words: list[int] = []
    for value in values:
        own = [value & 0xFFFFFFFF]
        while value := value >> 32:
            own.append(value & 0xFFFFFFFF)
        words += [len(own), *own]
    return words


def epoch_order(size: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """Positions of one epoch: in order, or a permutation seeded by (seed, epoch)."""
    entropy = seed_entropy(whole_number("seed", seed, 0), whole_number("epoch", epoch, 0))
    if not shuffle:
        return np.arange(size, dtype=np.int64)
    return np.random.default_rng(entropy).permutation(size).astype(np.int64)


#: What tells a batch's augmentation stream from its epoch's order: a seed sequence pads its
#: entropy with zeros, so [seed, epoch, 0] (batch 0) was the order's [seed, epoch] again.
_AUGMENTATION_STREAM = 1


def batch_rng(seed: int, epoch: int, batch: int) -> np.random.Generator:
    """The generator that augments batch `batch` of epoch `epoch` (a stream of its own, not
    the epoch order's)."""
    return np.random.default_rng(seed_entropy(
        whole_number("seed", seed, 0), whole_number("epoch", epoch, 0), _AUGMENTATION_STREAM,
        whole_number("batch", batch, 0)))


def epoch_batches(split: "Split", batch_size: int, *, shuffle: bool = False, seed: int = 0,
                  epoch: int = 0, augment: "bool | Augmentation | None" = None,
                  drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """The batches of one epoch of `split`: dicts of its features, `label` and `id`. Bad
    arguments are refused here, when it is called, not at the first batch drawn."""
    batch_size = whole_number("batch_size", batch_size, 1)
    augment_fn = split.augmentation(augment)
    order = epoch_order(len(split), shuffle=shuffle, seed=seed, epoch=epoch)
    stop = len(order) - len(order) % batch_size if drop_remainder else len(order)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for number, start in enumerate(range(0, stop, batch_size)):
            batch = split.read(order[start:start + batch_size])
            yield augment_fn(batch, batch_rng(seed, epoch, number)) if augment_fn else batch

    return batches()
