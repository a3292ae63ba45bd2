"""Seeded augmentations of numpy batches that any framework can call.

Each takes a batch (a dict of `(B, ..., H, W, C)` features plus `label` and `id`) and a
`numpy.random.Generator`, and returns the augmented batch; the adapters give every batch its
own generator seeded by (seed, epoch, batch), so an augmented epoch is reproducible.
Image-like features are the arrays of four or more axes; all of a sample's are transformed
together (a frame and its flow stay aligned).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from flowstore.reader.dataset import ID, LABEL, Augmentation, aligned_empty


def _image_keys(batch: dict[str, np.ndarray]) -> list[str]:
    return [key for key, value in batch.items()
            if key not in (LABEL, ID) and np.ndim(value) >= 4]


def horizontal_flip(batch: dict[str, np.ndarray], rng: np.random.Generator, *,
                    motion: Sequence[str] = (), p: float = 0.5) -> dict[str, np.ndarray]:
    """Mirror a random `p` of the samples left-right, every image-like feature together.

    Mirroring a motion field is not enough: a motion to the right becomes one to the left, so
    the horizontal component dx (channel 0) of the features named in `motion` changes sign;
    dy is unchanged. The batch's buffers are flipped in place.
    """
    keys = _image_keys(batch)
    size = len(batch[keys[0]]) if keys else 0
    flips = np.flatnonzero(rng.random(size) < p)
    for key in keys:
        value = batch[key]
        for row in flips.tolist():
            np.copyto(value[row], value[row][..., ::-1, :].copy())
            if key in motion:
                value[row][..., 0] *= -1
    return batch


def random_crop(batch: dict[str, np.ndarray], rng: np.random.Generator, *,
                size: int | tuple[int, int]) -> dict[str, np.ndarray]:
    """A random `size` (side, or (height, width)) window of each sample, the same window in all
    of its image-like features (which must share their height and width)."""
    height, width = (size, size) if isinstance(size, int) else size
    keys = _image_keys(batch)
    if not keys:
        return batch
    spatial = {batch[key].shape[-3:-1] for key in keys}
    if len(spatial) != 1:
        raise ValueError(f"features of different sizes cannot be cropped together: {spatial}")
    (full_h, full_w), = spatial
    if not (0 < height <= full_h and 0 < width <= full_w):
        raise ValueError(f"crop {height}x{width} does not fit {full_h}x{full_w}")
    count = len(batch[keys[0]])
    tops = rng.integers(0, full_h - height + 1, size=count)
    lefts = rng.integers(0, full_w - width + 1, size=count)
    out = dict(batch)
    for key in keys:
        value = batch[key]
        crop = aligned_empty((*value.shape[:-3], height, width, value.shape[-1]), value.dtype)
        for row, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist())):
            crop[row] = value[row][..., top:top + height, left:left + width, :]
        out[key] = crop
    return out


def compose(*augmentations: Augmentation) -> Augmentation:
    """Several augmentations in order, each drawing from the same batch generator."""
    def apply(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        for augmentation in augmentations:
            batch = augmentation(batch, rng)
        return batch
    return apply
