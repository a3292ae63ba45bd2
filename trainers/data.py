"""`tf.data` input streamed from a store, one batch at a time, one chunk per sample and array.

The pipeline is `range of sample indices -> shuffle (seeded, new order every epoch) -> batch
-> parallel map(read the batch's samples, one chunk each) -> [flip] -> prefetch`. Only the
sample indices of a split are held in memory; the pixels of a sample are read when the
pipeline asks for its batch, so a training epoch's memory does not grow with the number of
videos (see `benchmarks/train_memory.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from flowstore.flow_encoding import uint8_step_centre
from trainers.samples import StoreSamples

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class InputOptions:
    """How one split is streamed.

    Attributes:
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: visit the samples in a new seeded order every epoch (training only).
        augment: random horizontal flips (training only).
        seed: seed of the shuffle order and of the flips.
        parallel_reads: batches read concurrently; `None` lets tf.data tune it where the
            store reads concurrently (Zarr; uncompressed HDF5, read outside h5py), and reads
            one batch at a time where it does not (compressed HDF5), while the previous batch
            trains.
    """

    batch_size: int = 1
    shuffle: bool = False
    augment: bool = False
    seed: int = 0
    parallel_reads: int | None = None


def flip_image(image: tf.Tensor) -> tf.Tensor:
    """Mirror an (..., H, W, C) image left-right."""
    return tf.reverse(image, axis=[-2])


def flip_flow(flow: tf.Tensor) -> tf.Tensor:
    """Mirror (..., H, W, 2) optical flow left-right.

    Mirroring the picture is not enough: a motion to the right becomes a motion to the left, so
    the horizontal component dx (channel 0) changes sign; dy is unchanged.
    """
    mirrored = tf.reverse(flow, axis=[-2])
    return mirrored * tf.constant([-1.0, 1.0], dtype=mirrored.dtype)


def flip_inputs(inputs: dict[str, tf.Tensor], arrays: dict[str, str]) -> dict[str, tf.Tensor]:
    """Flip every input of one sample together, so frame and flow stay consistent."""
    return {name: flip_flow(value) if arrays[name] == "flow" else flip_image(value)
            for name, value in inputs.items()}


def model_input(value: tf.Tensor, array: str, params: dict) -> tf.Tensor:
    """A stored input as the model takes it, never wider than it has to be.

    Pixels stay uint8 and float flow keeps its stored dtype: the model casts its inputs to
    float32 as the first step of its own graph (Keras converts every input to its `Input`
    dtype), on the accelerator when there is one. Widening here instead doubles (flow) or
    quadruples (pixels) the bytes every later step copies: batching, prefetching and the
    host-to-device transfer; on an uncompressed store tf.data's copies then cost more than the
    reads. Quantized uint8 flow is mapped back to pixels with the store's bound (the graph twin
    of `flowstore.flow_encoding.decode_flow`) in float32 and kept as float16, whose rounding
    (< 0.008 px within +-20 px) is 5% of one quantization step.
    """
    if array == "flow" and params.get("flow_dtype") == "uint8":
        step, centre = uint8_step_centre(params)
        return tf.cast((tf.cast(value, tf.float32) - centre) * step, tf.float16)
    return value


def flip_where(flips: tf.Tensor, inputs: dict[str, tf.Tensor],
               arrays: dict[str, str]) -> dict[str, tf.Tensor]:
    """Flip the samples of a batch whose `flips` entry is true (frame and flow together)."""
    flipped = flip_inputs(inputs, arrays)
    out = {}
    for name, value in inputs.items():
        mask = tf.reshape(flips, tf.concat([[-1], tf.ones([tf.rank(value) - 1], tf.int32)], 0))
        out[name] = tf.where(mask, flipped[name], value)
    return out


def index_dataset(samples: StoreSamples, split: str, options: InputOptions) -> tf.data.Dataset:
    """`(sample index, flip?)` pairs of the `done` samples of `split`, in this epoch's order:
    a new seeded order every epoch when shuffling, a seeded coin per sample when augmenting."""
    indices = samples.indices(split)
    ds = tf.data.Dataset.from_tensor_slices(indices)
    if options.shuffle and indices.size > 1:
        # The whole index list fits the buffer (it is a few bytes per sample): a full shuffle.
        ds = ds.shuffle(indices.size, seed=options.seed, reshuffle_each_iteration=True)
    if options.augment:
        coins = tf.data.Dataset.random(seed=options.seed + 1, rerandomize_each_iteration=True)
        return tf.data.Dataset.zip(ds, coins.map(lambda r: r % 2 == 0))
    return ds.map(lambda i: (i, tf.constant(False)))


def make_dataset(samples: StoreSamples, split: str, options: InputOptions) -> tf.data.Dataset:
    """A dataset of `(inputs, label)` batches of the `done` samples of `split`.

    `inputs` is one tensor for single-input models and a dict keyed by input name
    (`{"frame": ..., "flow": ...}`) for the two-stream model: uint8 pixels and float16 (or
    stored float32) flow in pixels, which the models cast to float32 themselves
    (`model_input`).
    """
    names = tuple(samples.task.inputs)
    arrays = dict(samples.task.inputs)
    labels = tf.constant(samples.labels)

    ds = index_dataset(samples, split, options)
    # Batch the indices, then read each batch with one call (`StoreSamples.read_batch`): the
    # samples land in one aligned buffer that becomes the batch tensor without a copy.
    ds = ds.batch(options.batch_size)

    dtypes = [tf.as_dtype(dtype) for dtype in samples.stored_dtypes]
    params = samples.info.params

    def read(batch: tf.Tensor, flips: tf.Tensor):
        values = tf.numpy_function(samples.read_batch, [batch], Tout=dtypes, stateful=False)
        inputs = {}
        for name, value in zip(names, values, strict=True):
            value.set_shape((None, *samples.sample_shapes[name]))
            inputs[name] = model_input(value, arrays[name], params)
        if options.augment:
            inputs = flip_where(flips, inputs, arrays)
        label = tf.gather(labels, batch)
        return (inputs if len(names) > 1 else inputs[names[0]]), label

    parallel = options.parallel_reads or (AUTOTUNE if samples.store.concurrent_reads else 1)
    # deterministic=True keeps a seed's order reproducible even with parallel reads.
    ds = ds.map(read, num_parallel_calls=parallel, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def class_counts(samples: StoreSamples, split: str) -> np.ndarray:
    """How many done samples of each class `split` holds (for logs and sanity checks)."""
    return np.bincount(samples.labels[samples.indices(split)], minlength=samples.num_classes)
