"""Input for the trainers: the public reader's `Split.to_tf_dataset` on TensorFlow, its Keras
`PyDataset` (`Split.to_keras_dataset`) on JAX or PyTorch (`trainers.backend`), per model.

The pipelines themselves (seeded shuffle, batches read into aligned buffers, flips, reads
ahead) are `flowstore.reader.tf` and `flowstore.reader.keras`; this module only says which
split, batch size and augmentation a run uses. A training pipeline reads epoch e's order and
augmentation, seeded by (seed, e), on either (`EpochNumber` tells tf.data which epoch Keras
trains), so a run that goes on from a stop reads what an unstopped one reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import keras
import numpy as np

from flowstore.reader import (colour_jitter, compose, frame_views, horizontal_flip,
                              random_frame, random_resized_crop, random_segment, segment_views)
from flowstore.reader.dataset import Augmentation
from trainers.backend import uses_tf_data
from trainers.errors import ModelConfigError
from trainers.recipes import Recipe
from trainers.samples import StoreSamples

#: Reading threads of a `PyDataset` (its `workers`) where the store reads in parallel: they
#: read the next batches while the accelerator trains on this one; more than a few only wait.
PYDATASET_WORKERS = 4

#: What `make_dataset` gives: a `tf.data.Dataset` or a `keras.utils.PyDataset`; both are what
#: `model.fit`, `evaluate` and `predict` take, and iterate as `(inputs, label)` batches.
Batches = Iterable


@dataclass(frozen=True)
class InputOptions:
    """How one split is streamed.

    Attributes:
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: visit the samples in a new seeded order every epoch (training only).
        augment: random horizontal flips, frame and flow together (training only), or an
            augmentation function (`recipe_augmentation`).
        seed: seed of the shuffle order and of the flips.
        parallel_reads: batches read concurrently; `None` lets the reader choose
            (`flowstore.reader.tf.to_tf_dataset`; `PYDATASET_WORKERS` threads on a
            `PyDataset` where the store reads in parallel, one where it does not).
        epoch: on TensorFlow, the `EpochNumber.variable` that says which epoch a shuffled
            pipeline reads (None: a new order for each iterator); a `PyDataset` counts its
            own passes.
    """

    batch_size: int = 1
    shuffle: bool = False
    augment: bool | Augmentation = False
    seed: int = 0
    parallel_reads: int | None = None
    epoch: Any = None


def make_dataset(samples: StoreSamples, split: str, options: InputOptions) -> Batches:
    """A dataset of `(inputs, label)` batches of the `done` samples of `split`, for the
    backend Keras runs on (`trainers.backend.uses_tf_data`).

    `inputs` is one tensor for single-input models and a dict keyed by input name
    (`{"frame": ..., "flow": ...}`) for the two-stream model: uint8 pixels and float16 (or
    stored float32) flow in pixels, which the models cast to float32 themselves.
    """
    rows = samples.split(split)
    if uses_tf_data():
        return rows.to_tf_dataset(options.batch_size, shuffle=options.shuffle, seed=options.seed,
                                  augment=options.augment, parallel_reads=options.parallel_reads,
                                  epoch=options.epoch)
    workers = options.parallel_reads
    if workers is None:  # a store read one batch at a time still gets one thread ahead
        workers = (min(PYDATASET_WORKERS, os.cpu_count() or 1)
                   if rows.source.store.concurrent_reads else 1)
    return rows.to_keras_dataset(options.batch_size, shuffle=options.shuffle, seed=options.seed,
                                 augment=options.augment, workers=workers)


class EpochNumber(keras.callbacks.Callback):
    """Tells the training pipelines which epoch Keras trains, as it begins (first in the list,
    before any callback reads a batch): on TensorFlow a tf.data pipeline otherwise draws a new
    order for each iterator made of it, and Keras makes two an epoch, so that a `fit` going on
    from epoch k (`initial_epoch`) would read other epochs than an unstopped one. A `PyDataset`
    counts whole passes itself, and is only told where a run goes on from (`go_on_from`)."""

    def __init__(self) -> None:
        super().__init__()
        self.variable = None
        if uses_tf_data():
            import tensorflow as tf

            self.variable = tf.Variable(0, dtype=tf.int64, trainable=False)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.variable is not None:
            self.variable.assign(epoch)

    @staticmethod
    def go_on_from(epoch: int, train: Batches, calibration: "FirstBatches | None") -> None:
        """Start a `PyDataset`'s passes (the training split's, the BatchNorm calibration's)
        at `epoch` (counted from 0), where a run goes on from a stop (`trainers.resume`)."""
        if uses_tf_data() or not epoch:
            return
        train.set_epoch(epoch)
        if calibration is not None:
            calibration.skip_epochs(epoch)


class FirstBatches:
    """The first `count` batches of a new epoch of `dataset` each time it is iterated (the
    BatchNorm recalibration's training subset: a shuffled split gives a new subset each time).
    """

    def __init__(self, dataset: Batches, count: int) -> None:
        self.dataset, self.count = dataset, count
        self._epochs = 0

    def __iter__(self) -> Iterator:
        if uses_tf_data():  # each iterator of a tf.data pipeline is a new epoch
            return iter(self.dataset.take(self.count))
        return self._pydataset_batches()

    def skip_epochs(self, epochs: int) -> None:
        """Begin at epoch `epochs` of a `PyDataset` (a tf.data pipeline is told its epoch:
        `EpochNumber`)."""
        self._epochs += epochs

    def _pydataset_batches(self) -> Iterator:
        self.dataset.set_epoch(self._epochs)  # a new epoch: its own seeded order
        self._epochs += 1
        for index in range(min(self.count, len(self.dataset))):
            yield self.dataset[index]


def recipe_augmentation(recipe: Recipe, motion: Sequence[str], *,
                        flip: bool = False) -> Augmentation | None:
    """The augmentation `recipe` trains with (`flip` adds flips, `trainers run --augment`), in
    the order flip, resized crop, colour jitter, every image-like input of a sample together
    and the `motion` inputs (flow) treated as motion: dx negated when flipped, vectors scaled
    when resized, colours never jittered. `None` when the recipe augments nothing."""
    steps: list[Augmentation] = []
    motion = tuple(motion)
    if flip or recipe.flip:
        steps.append(lambda batch, rng: horizontal_flip(batch, rng, motion=motion))
    if recipe.scale_jitter > 1:
        steps.append(lambda batch, rng: random_resized_crop(
            batch, rng, scale=(1.0, recipe.scale_jitter), motion=motion))
    if recipe.colour_jitter > 0:
        steps.append(lambda batch, rng: colour_jitter(batch, rng, strength=recipe.colour_jitter,
                                                      motion=motion))
    return compose(*steps) if steps else None


@dataclass(frozen=True)
class ClipViews:
    """How a run sees each clip as several views of it, over the model's inputs `keys`: in
    training one random view per clip (`random_view`); when scored (validation, test, the
    report's predictions) every view of a clip as a row of its own (`every_view`), the clip's
    logits the mean of its views' (`clip_logits`: TSN's consensus). Under a `segment_views`
    recipe the views are the `count` segments of a segments store, each a stack of steps;
    under a `frame_views` recipe (`single`) they are the `count` steps of `frames`, each fed to
    the model as one frame (`random_frame`, `frame_views`)."""

    count: int
    keys: tuple[str, ...]
    single: bool = False

    @classmethod
    def of(cls, samples: StoreSamples, segment_views: bool) -> "ClipViews | None":
        """The views of `samples` when they read frame views (`StoreSamples.for_recipe`) or
        when `segment_views` (a recipe's field), else None."""
        if samples.frame_views:
            keys = samples.frame_view_keys
            return cls(int(samples.sample_shapes[keys[0]][0]), keys, single=True)
        if not segment_views:
            return None
        keys = samples.split("train").segmented_keys
        if not keys:
            raise ModelConfigError(f"segment views: {samples.model} reads no per-step array "
                                   f"of a segments store")
        return cls(int(samples.segments), keys)

    def random_view(self, batch: dict, rng: np.random.Generator) -> dict:
        if self.single:
            return random_frame(batch, rng, keys=self.keys)
        return random_segment(batch, rng, segments=self.count, keys=self.keys)

    def every_view(self, batch: dict, rng: np.random.Generator | None = None) -> dict:
        if self.single:
            return frame_views(batch, keys=self.keys)
        return segment_views(batch, segments=self.count, keys=self.keys)

    def random_then(self, augmentation: Augmentation | None) -> Augmentation:
        """One random view, then `augmentation` on it (cheaper than augmenting all of them)."""
        if augmentation is None:
            return self.random_view
        return compose(self.random_view, augmentation)

    def clip_logits(self, model: Any, dataset: Batches) -> tuple[np.ndarray, np.ndarray]:
        """Each clip's mean logits over its views (float32, `(clips, classes)`) and its label,
        from `dataset`'s batches of `every_view` rows, in the dataset's order."""
        import keras

        clips, labels = [], []
        for inputs, label in dataset:
            logits = keras.ops.convert_to_numpy(
                keras.ops.cast(model(inputs, training=False), "float32"))
            clips.append(logits.reshape(-1, self.count, logits.shape[-1]).mean(axis=1))
            labels.append(keras.ops.convert_to_numpy(label)[::self.count])
        return np.concatenate(clips), np.concatenate(labels)
