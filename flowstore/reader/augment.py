"""Seeded augmentations of numpy batches that any framework can call.

Each takes a batch (a dict of `(B, ..., H, W, C)` features plus `label` and `id`) and a
`numpy.random.Generator`, and returns the augmented batch; the adapters give every batch its
own generator, seeded from their `seed`, so an augmented epoch is reproducible: `batches` and
`to_keras_dataset` by (seed, epoch, batch), `to_tf_dataset` from tf.data's own stream of seeds
drawn from `seed` (so the same seed augments otherwise there). `horizontal_flip`,
`random_resized_crop` and `colour_jitter` write into the batch's own arrays, which the reader
made for it, and return that batch: a copy of every batch would add a copy as large as the
read itself; a caller who keeps the batch copies it first. `random_crop`, which
changes the arrays' shape, makes new ones.
Image-like features are the arrays of four or more axes; all of a sample's are transformed
together (a frame and its flow stay aligned). For stores built with `--sampling segments`,
`random_segment` (training) and `segment_views` (scoring; not random) choose which of a clip's K
segments a model sees; `random_frame` and `frame_views` do the same for single frames of a
clip's per-step `frames`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from flowstore.reader.buffers import aligned_empty
from flowstore.reader.dataset import ID, LABEL, Augmentation


def _image_keys(batch: dict[str, np.ndarray]) -> list[str]:
    return [key for key, value in batch.items()
            if key not in (LABEL, ID) and np.ndim(value) >= 4]


def _names(motion: Sequence[str] | str) -> tuple[str, ...]:
    """`motion` as feature names: one name given alone is that name, not its letters (`"flow"`
    was matched by substring: a feature `"f"` had its dx negated, and `"flow_u"` did not)."""
    if motion is None:  # (was "'NoneType' object is not iterable")
        raise TypeError("motion names the batch's motion fields (split.motion_keys), or () "
                        "for none; got None")
    return (motion,) if isinstance(motion, str) else tuple(motion)


def _generator(rng: object) -> np.random.Generator:
    """`rng`, checked to be numpy's Generator: an int, None or `random.Random` failed deep
    inside with an AttributeError, and a legacy `RandomState` passed some augmentations and
    not others."""
    if not isinstance(rng, np.random.Generator):
        kind = type(rng)
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {kind.__module__}.{kind.__qualname__}")
    return rng


def _checked(batch: dict[str, np.ndarray], names: Sequence[str] | str = (),
             argument: str = "motion") -> tuple[str, ...]:
    """`names` (the `argument` given, `_names`), each checked to be a feature of `batch`, and
    `batch` checked to be a batch of numpy arrays: a name the batch lacks (a renamed feature, a
    typo) left a flow mirrored with its dx kept, or whole clips repeated as "segments"; one
    sample (`split[i]`, whose label has no axis) had its T steps taken for T samples, each
    flipped or cropped apart, its middle frame left alone; a DataLoader's batch of torch
    tensors failed deep inside numpy or OpenCV ("step must be greater than zero").

    Raises:
        TypeError: naming a value that is not a numpy array.
        ValueError: naming the missing feature, or saying a batch is wanted.
    """
    label = batch.get(LABEL)
    if label is not None and np.ndim(label) == 0:  # (a batch's may be soft: (B, classes))
        raise ValueError("augmentations take a batch (split[[i, j]], split.read(...), "
                         "split.batches(...)), not one sample (split[i])")
    for key, value in batch.items():
        if key != ID and not isinstance(value, np.ndarray):  # (ids may be any sequence)
            kind = type(value)
            raise TypeError(f"augmentations take numpy batches, and {key!r} is a "
                            f"{kind.__module__}.{kind.__qualname__}: augment the split's numpy "
                            f"batch (split[[i, j]], split.batches(...); in a torch DataLoader, "
                            f"its collate_fn with batch_size=None and a BatchSampler) before it "
                            f"becomes tensors")
    names = _names(names)
    missing = [name for name in names if name not in batch]
    if missing:
        features = ", ".join(key for key in batch if key not in (LABEL, ID))
        raise ValueError(f"{argument} names {', '.join(map(repr, missing))}, not a feature of "
                         f"the batch (it has {features or 'none'})")
    return names


def _per_step(batch: dict[str, np.ndarray], keys: Sequence[str] | str) -> tuple[str, ...]:
    """`keys` (`_checked`), each checked to be a per-step feature `(B, T, H, W, C)`: a single
    image (`middle_frame`, Stanford-40's `image`) has no time axis, and its rows were taken for
    steps (one pixel row per image, or B x H strips of rows as "views").

    Raises:
        ValueError: naming the feature that has no time axis.
    """
    keys = _checked(batch, keys, "keys")
    for key in keys:
        if np.ndim(batch[key]) != 5:
            raise ValueError(f"keys names {key!r}, of shape {batch[key].shape[1:]} a sample, "
                             f"which has no time axis: segments and frame views take per-step "
                             f"features (time, height, width, channels: frames, flow)")
    return keys


def _is_real(value: object) -> bool:
    """Whether `value` is a finite real number (not a bool, a string, a pair, NaN or inf); a
    0-d numpy array is its number (`np.array(0.5)`, as numpy computes a p)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and math.isfinite(value))


def _number(name: str, value: object, low: float, high: float) -> float:
    """`value` as a float in [low, high], or a ValueError naming argument `name` (a string, a
    pair or NaN failed inside numpy, a p of 2 flipped every sample without a word)."""
    if not _is_real(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _segments(segments: object) -> int:
    """`segments` as K, a positive integer: a store built without `--sampling segments` has
    `source.segments` None, which failed as "'<' not supported between NoneType and int"."""
    if (isinstance(segments, (bool, np.bool_)) or not isinstance(segments, (int, np.integer))
            or segments < 1):
        raise ValueError(f"segments must be a positive integer, the K of a store built with "
                         f"--sampling segments (split.source.segments, None for any other "
                         f"store), got {segments!r}")
    return int(segments)


def horizontal_flip(batch: dict[str, np.ndarray], rng: np.random.Generator, *,
                    motion: Sequence[str], p: float = 0.5) -> dict[str, np.ndarray]:
    """Mirror a random `p` of the samples left-right, every image-like feature together.

    Mirroring a motion field is not enough: a motion to the right becomes one to the left, so
    the horizontal component dx (channel 0) of the features named in `motion` changes sign;
    dy is unchanged. `motion` has no default (`split.motion_keys` names a store's; `()` for
    pictures only): a forgotten one would mirror flow without negating dx, a silently wrong
    motion. The batch's buffers are flipped in place.
    """
    motion, rng = _checked(batch, motion), _generator(rng)
    p = _number("p", p, 0, 1)
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


def _shared_frame_size(batch: dict[str, np.ndarray]) -> tuple[list[str], tuple[int, int]]:
    """The batch's image-like features and the (height, width) they share ((0, 0) when there is
    none): a window cut or a resize must be the same in all of a sample's features."""
    keys = _image_keys(batch)
    if not keys:
        return keys, (0, 0)
    spatial = {batch[key].shape[-3:-1] for key in keys}
    if len(spatial) != 1:
        raise ValueError(f"features of different sizes cannot be cropped together: {spatial}")
    (height, width), = spatial
    return keys, (height, width)


def random_crop(batch: dict[str, np.ndarray], rng: np.random.Generator, *,
                size: int | tuple[int, int]) -> dict[str, np.ndarray]:
    """A random `size` (side, or (height, width)) window of each sample, the same window in all
    of its image-like features (which must share their height and width)."""
    _checked(batch)
    rng = _generator(rng)
    sides = (size, size) if isinstance(size, (int, np.integer)) else size
    if (not isinstance(sides, (tuple, list)) or len(sides) != 2
            or not all(isinstance(side, (int, np.integer)) for side in sides)):
        raise ValueError(f"size must be an integer side or (height, width), got {size!r}")
    height, width = map(int, sides)
    keys, (full_h, full_w) = _shared_frame_size(batch)
    if not keys:
        return batch
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


def random_resized_crop(batch: dict[str, np.ndarray], rng: np.random.Generator, *,
                        motion: Sequence[str],
                        scale: tuple[float, float] = (1.0, 1.15)) -> dict[str, np.ndarray]:
    """Scale jitter and a random crop at once, the same for all of a sample's image-like
    features, so the batch keeps its shape (a model's input size is fixed).

    Each sample is resized by a factor drawn from `scale` (>= 1: up, then cropped back) and a
    random window of the original size is cut out. A motion field resized by f describes a motion
    f times as large, so the features named in `motion` have (dx, dy) multiplied by the factor
    each axis was actually resized by; a crop only moves the origin, which motion ignores.
    `motion` has no default, as for `horizontal_flip`.
    """
    import cv2

    motion, rng = _checked(batch, motion), _generator(rng)
    if (np.ndim(scale) != 1 or len(scale) != 2
            or not all(map(_is_real, scale)) or not 1.0 <= scale[0] <= scale[1]):
        # (a single factor, 1.2, failed as "cannot unpack non-iterable float object")
        raise ValueError(f"scale must be a range (low, high) of factors, 1 <= low <= high, "
                         f"got {scale!r}")
    low, high = map(float, scale)
    keys, (height, width) = _shared_frame_size(batch)
    if not keys:
        return batch
    count = len(batch[keys[0]])
    factors = rng.uniform(low, high, size=count)
    unit = rng.random((count, 2))  # where the window sits, as a fraction of the slack
    for row in range(count):
        big_h = max(height, int(round(height * factors[row])))
        big_w = max(width, int(round(width * factors[row])))
        top = int(unit[row, 0] * (big_h - height + 1)) if big_h > height else 0
        left = int(unit[row, 1] * (big_w - width + 1)) if big_w > width else 0
        for key in keys:
            sample = batch[key][row]
            planes = sample.reshape(-1, height, width, sample.shape[-1])
            for plane in planes:  # each frame or flow step: a view into the batch's buffer
                resized = cv2.resize(plane.astype(np.float32), (big_w, big_h),
                                     interpolation=cv2.INTER_LINEAR)
                resized = resized.reshape(big_h, big_w, -1)[top:top + height, left:left + width]
                if key in motion:
                    resized[..., 0] *= big_w / width
                    resized[..., 1] *= big_h / height
                if np.issubdtype(plane.dtype, np.integer):
                    resized = np.clip(np.rint(resized), 0, np.iinfo(plane.dtype).max)
                plane[...] = resized
    return batch


def colour_jitter(batch: dict[str, np.ndarray], rng: np.random.Generator, *,
                  strength: float = 0.2, motion: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Random brightness, contrast and saturation, each a factor in [1 - strength,
    1 + strength] per sample, applied to the pixel features (every frame of a sample alike).

    Motion fields (`motion`) are measurements of displacement, not colours: they are never
    touched, nor is any feature without 3 colour channels. Pixels are integers (their dtype's
    range: uint8 0..255, as a store holds frames) or floats in [0, 1].

    Raises:
        ValueError: a float pixel feature holds values above 1.
    """
    motion, rng = _checked(batch, motion), _generator(rng)
    strength = _number("strength", strength, 0, 1)
    keys = [key for key in _image_keys(batch)
            if key not in motion and batch[key].shape[-1] == 3]
    if not keys:
        return batch
    for key in keys:  # (float pixels of 0..255, cast from uint8, were clipped to 0..1)
        value = batch[key]
        if not np.issubdtype(value.dtype, np.integer) and value.size and value.max() > 1:
            raise ValueError(f"colour_jitter takes float pixels in [0, 1] (or integer ones), "
                             f"and {key!r} reaches {float(value.max()):g}: divide by 255, or "
                             f"jitter the uint8 batch")
    count = len(batch[keys[0]])
    factors = rng.uniform(1 - strength, 1 + strength, size=(count, 3))
    for key in keys:
        value = batch[key]
        top = float(np.iinfo(value.dtype).max) if np.issubdtype(value.dtype, np.integer) else 1.0
        for row in range(count):
            brightness, contrast, saturation = factors[row]
            pixels = value[row].astype(np.float32) * brightness
            pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
            grey = pixels.mean(axis=-1, keepdims=True)
            pixels = (pixels - grey) * saturation + grey
            pixels = np.clip(pixels, 0, top)
            value[row] = np.rint(pixels) if np.issubdtype(value.dtype, np.integer) else pixels
    return batch


def _segment_length(batch: dict[str, np.ndarray], key: str, segments: int) -> int:
    steps = batch[key].shape[1]
    if steps % segments:
        raise ValueError(f"feature {key!r} has {steps} steps, not a multiple of {segments} "
                         f"segments")
    return steps // segments


def random_segment(batch: dict[str, np.ndarray], rng: np.random.Generator, *, segments: int,
                   keys: Sequence[str]) -> dict[str, np.ndarray]:
    """One random segment of each sample: TSN-style temporal jitter for a store built with
    `--sampling segments` (`Split.segmented_keys`, each `(B, K*n, ...)`, segment-major).

    Each of the `keys` becomes `(B, n, ...)`, its steps of one segment drawn per sample, the
    same segment in all of a sample's keys (segment k of `frames` is the centre frame of the
    flows of segment k of `flow`); other features stay as they are. A model trained on it
    sees a different part of each clip from epoch to epoch, with the input of one segment;
    `segment_views` scores all K at test time.
    """
    keys, rng = _per_step(batch, keys), _generator(rng)
    segments = _segments(segments)
    if not keys:
        return batch
    lengths = {key: _segment_length(batch, key, segments) for key in keys}
    count = len(batch[keys[0]])
    chosen = rng.integers(0, segments, size=count)
    out = dict(batch)
    for key in keys:
        value = batch[key]
        length = lengths[key]
        picked = aligned_empty((count, length, *value.shape[2:]), value.dtype)
        for row, k in enumerate(chosen.tolist()):
            picked[row] = value[row, k * length:(k + 1) * length]
        out[key] = picked
    return out


def segment_views(batch: dict[str, np.ndarray], *, segments: int,
                  keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Every segment of each sample as a view of its own: B samples become B x K rows, sample
    b's segment k at row b*K + k, the `keys` cut to one segment each (`(B*K, n, ...)`, a
    reshape, no copy) and every other value (a middle frame, `label`, `id`) repeated K times.

    Scoring a clip by the mean of its K views' outputs (reshape to `(B, K, classes)`) is TSN's
    segmental consensus at test time, the counterpart of training on `random_segment`.
    """
    keys = _per_step(batch, keys)
    segments = _segments(segments)
    if not keys:
        return batch
    count = len(batch[LABEL]) if LABEL in batch else len(batch[keys[0]])
    out = {}
    for key, value in batch.items():
        if key in keys:
            length = _segment_length(batch, key, segments)
            out[key] = value.reshape(count * segments, length, *value.shape[2:])
        else:
            out[key] = np.repeat(value, segments, axis=0)
    return out


def random_frame(batch: dict[str, np.ndarray], rng: np.random.Generator, *,
                 keys: Sequence[str]) -> dict[str, np.ndarray]:
    """One random step of each sample's per-step `keys` (`(B, T, H, W, C)`, e.g. `frames`) as
    a single image (`(B, H, W, C)`), the same step in all of a sample's keys; other features
    stay as they are. A single-frame model trained on it sees a clip's T frames, one a
    step, instead of only its middle frame: the spatial stream's sampling in the two-stream
    paper and TSN (one frame from each of T segments). `frame_views` scores all T.
    """
    keys = _per_step(batch, keys)
    if not keys:
        return batch
    out = random_segment(batch, rng, segments=batch[keys[0]].shape[1], keys=keys)
    return {key: (value[:, 0] if key in keys else value) for key, value in out.items()}


def frame_views(batch: dict[str, np.ndarray], *, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Every step of the per-step `keys` as a single image of its own: B samples become B x T
    rows, sample b's step t at row b*T + t (`(B*T, H, W, C)`, a reshape, no copy), every
    other value repeated T times; the scoring counterpart of `random_frame`."""
    keys = _per_step(batch, keys)
    if not keys:
        return batch
    out = segment_views(batch, segments=batch[keys[0]].shape[1], keys=keys)
    return {key: (value[:, 0] if key in keys else value) for key, value in out.items()}
