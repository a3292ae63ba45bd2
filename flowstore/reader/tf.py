"""`tf.data` adapter: a split as a dataset of `(features, label)` batches.

The pipeline is `positions -> shuffle (seeded, a new order every epoch) -> batch -> parallel
map(Split.read, one tf.numpy_function call per batch) -> prefetch`. Given an `epoch` (a number,
or a `tf.Variable` a training loop sets as each epoch begins), the positions are instead that
epoch's order as `Split.batches` and the Keras `PyDataset` give it, and each batch is augmented
by its own (seed, epoch, batch) stream: what an epoch reads no longer depends on how many
iterators were made of the dataset before it (Keras makes two an epoch), so a training that
goes on from a stop at epoch k reads what an unstopped one reads (`trainers.resume`). Only the
split's positions are held in memory; a batch's samples are read when the pipeline asks for it,
into buffers that TensorFlow wraps without a copy (they are 64-byte aligned), so an epoch's
memory does not grow with the split (benchmarks/train_memory.py). Batches keep the reader's
types (uint8 pixels, float16 flow unless asked otherwise): a model casts them in its own graph,
on the accelerator.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import traceback
import weakref
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np
import tensorflow as tf

from flowstore.errors import FlowstoreError, raised_with
from flowstore.reader.batches import batch_rng, epoch_order, seed_entropy, whole_number
from flowstore.reader.dataset import LABEL

if TYPE_CHECKING:
    from flowstore.reader.dataset import Augmentation, Split


#: TensorFlow takes an op seed modulo this (`random_seed._truncate_seed`).
_TF_SEED_MODULUS = 2**31 - 1


def _tf_op_seeds(seed: int) -> tuple[int, int]:
    """The op seeds of a seed's shuffle and augmentation draws, when no `epoch` is given.

    TensorFlow takes an op seed modulo 2**31 - 1, so seeds s and s + 2**31 - 1, passed as they
    are, read the same orders and flips. Seeds below that keep the op seeds they have always
    had (seed, seed + 1); a larger one's are drawn from its numpy seed sequence (as
    `Split.batches` seeds it), so no larger seed aliases a smaller one but by a 2**-31 chance."""
    if seed + 1 < _TF_SEED_MODULUS:
        return seed, seed + 1
    words = np.random.SeedSequence(seed_entropy(seed)).generate_state(2)
    return int(words[0]) % _TF_SEED_MODULUS, int(words[1]) % _TF_SEED_MODULUS


def to_tf_dataset(split: "Split", batch_size: int, *, shuffle: bool = False, seed: int = 0,
                  augment: "bool | Augmentation | None" = None,
                  parallel_reads: int | None = None,
                  epoch: "int | tf.Variable | None" = None) -> tf.data.Dataset:
    """`(features, label)` batches of `split`: `features` is the array of a one-feature split,
    else a dict keyed like the split's features (Keras matches it to named inputs).

    Args:
        batch_size: samples per batch (the last one may be smaller).
        shuffle: a new seeded order every epoch.
        seed: seed of the order and of the augmentation.
        augment: True (random horizontal flips, `Split.augmentation`) or a function of
            (batch, numpy Generator); each batch gets a generator of its own.
        parallel_reads: batches read at once (or `tf.data.AUTOTUNE`); None lets tf.data tune
            it where the store reads in parallel (`Store.concurrent_reads`) and reads one at a
            time where it does not (compressed HDF5), while the previous batch trains.
        epoch: None: a new order (and augmentation) for each iterator made of the dataset.
            A number, or an integer `tf.Variable` (read as each iterator is made: set it before
            an epoch's iterator): that epoch's order and augmentation, seeded by (seed, epoch).
    """
    batch_size = whole_number("batch_size", batch_size, 1)
    whole_number("seed", seed, 0)  # (refused here, not in TensorFlow's words)
    if epoch is not None and not isinstance(epoch, tf.Variable):
        epoch = tf.constant(whole_number("epoch", epoch, 0), tf.int64)
    elif epoch is not None and not epoch.dtype.is_integer:
        raise TypeError(f"epoch: a tf.Variable of an integer dtype, got {epoch.dtype.name}")
    augment_fn = split.augmentation(augment)
    keys = tuple(split.features)
    # What a batch looks like once augmented (a crop changes its shape): one sample's worth.
    # (and its labels: a mixup's are soft, float (B, classes), where TensorFlow failed in its
    # own words against a hard-coded int64)
    probe = None
    if augment_fn is not None and len(split):
        probe = augment_fn(split.read([0]), batch_rng(seed, 0, 0))
        if not isinstance(probe, Mapping) or any(key not in probe for key in (*keys, LABEL)):
            raise TypeError(f"augment must return the batch it is given (a dict of "
                            f"{', '.join(keys)} and {LABEL}), got {type(probe).__name__}")
    shapes = {key: (probe[key].shape[1:] if probe is not None else split.shapes[key])
              for key in keys}
    label_shape = np.shape(probe[LABEL])[1:] if probe is not None else ()
    dtypes = [tf.as_dtype(probe[key].dtype if probe is not None else split.dtypes[key])
              for key in keys]
    dtypes.append(tf.as_dtype(np.asarray(probe[LABEL]).dtype) if probe is not None
                  else tf.int64)

    # TensorFlow keeps `read` for the life of the process (tf.numpy_function ties it to the
    # outermost graph: in eager mode the default graph, which never goes), and with it
    # whatever it holds: the split through `held`, emptied once the dataset returned, every
    # dataset made of it and every iterator of them are gone (`weakref.finalize` below). Held
    # as a closure, every pipeline's split and store stayed: an HDF5 file and its lock two
    # descriptors a pipeline made, and builds refused while one was open.
    held = [split]

    def read(positions: np.ndarray, stream: np.ndarray) -> list[np.ndarray]:
        if not held:  # (nothing reads a pipeline no one holds: flowstore's bug if it does)
            raise RuntimeError("a to_tf_dataset pipeline read after its dataset was collected")
        try:
            batch = held[0].read(positions)
        except FlowstoreError as exc:
            record_read_error(exc)
            raise
        if augment_fn is not None:  # (stream: a random seed, or the batch's (epoch, index))
            rng = (np.random.default_rng(int(stream[0]) % 2 ** 63) if epoch is None
                   else batch_rng(seed, int(stream[0]), int(stream[1])))
            batch = augment_fn(batch, rng)
        return [batch[key] for key in keys] + [batch[LABEL]]

    size = len(split)
    if epoch is None:
        order_seed, augmentation_seed = _tf_op_seeds(seed)
        ds = tf.data.Dataset.range(size)
        if shuffle and size > 1:
            # The whole position list fits the buffer (a few bytes per sample): a full shuffle.
            ds = ds.shuffle(size, seed=order_seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        if augment_fn is not None:
            seeds = tf.data.Dataset.random(seed=augmentation_seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip(ds, seeds.map(lambda value: tf.stack([value, 0])))
    else:
        def order(number: np.int64) -> np.ndarray:
            return epoch_order(size, shuffle=shuffle, seed=seed, epoch=int(number))

        def epoch_batches(number: tf.Tensor) -> tf.data.Dataset:
            positions = tf.numpy_function(order, [number], tf.int64, stateful=False)
            batches = tf.data.Dataset.from_tensor_slices(tf.ensure_shape(positions, (size,)))
            return batches.batch(batch_size).enumerate().map(
                lambda index, batch: (batch, tf.stack([number, index])))

        # (the epoch read as an iterator is made: a Variable's value then, not at tracing)
        # (an int32 Variable, `tf.Variable(0)`'s dtype, failed inside TensorFlow's graph:
        # any integer one is taken as int64)
        ds = tf.data.Dataset.from_tensors(0).map(lambda _: tf.cast(epoch, tf.int64))
        # (a flat_map's length is unknown to tf.data: said, as Keras reads an epoch of unknown
        # length until it runs out, and warns that it ran out)
        ds = ds.flat_map(epoch_batches).apply(
            tf.data.experimental.assert_cardinality(-(-size // batch_size)))

    # One map function, however the batch is augmented: every new iterator (each epoch)
    # instantiates and optimizes each function of the pipeline again (benchmarks/README.md,
    # "Issue 13", "Session 12").
    def read_batch(positions: tf.Tensor, stream: tf.Tensor | None = None):
        if stream is None:
            stream = tf.zeros(2, tf.int64)
        values = tf.numpy_function(read, [positions, stream], Tout=dtypes, stateful=False)
        features = {}
        for key, value in zip(keys, values, strict=False):
            value.set_shape((None, *shapes[key]))
            features[key] = value
        label = values[-1]
        label.set_shape((None, *label_shape))
        return (features[keys[0]] if len(keys) == 1 else features), label

    if parallel_reads is None:
        parallel_reads = tf.data.AUTOTUNE if split.source.store.concurrent_reads else 1
    elif not (type(parallel_reads) is int and parallel_reads == tf.data.AUTOTUNE):
        # (0 failed in TensorFlow's words, inside a function node; 2.0 as an EagerTensor)
        parallel_reads = whole_number("parallel_reads (or tf.data.AUTOTUNE)", parallel_reads, 1)
    # deterministic=True keeps a seed's order reproducible even with parallel reads.
    ds = ds.map(read_batch, num_parallel_calls=parallel_reads, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    # (a derived dataset holds its input; an iterator its own. Not at exit: a pipeline still
    # in use then reads ahead until TensorFlow stops it. Not where a function is traced, a
    # `flat_map`'s or a `tf.function`'s: the dataset object lives only while it is traced, and
    # the graph reads long after; the split is held for good there, as before)
    if tf.executing_eagerly():
        weakref.finalize(ds, held.clear).atexit = False
    return ds


#: The last FlowstoreErrors met by the reads of `to_tf_dataset` pipelines (any thread), each
#: with its serial number, for `store_errors_raised`: TensorFlow hands them on only as text
#: inside its own op error. Bounded: a notebook's failed runs added to it for good.
_READ_ERRORS: collections.deque[tuple[int, FlowstoreError]] = collections.deque(maxlen=64)
_READ_SERIALS = itertools.count(1)


def record_read_error(error: FlowstoreError) -> None:
    """Keep `error` for `store_errors_raised`, without what its frames held: the traceback says
    where the read failed, but its frames' variables held the batch's buffers (megabytes a
    batch) as long as the record kept it."""
    for link in raised_with(error):
        traceback.clear_frames(link.__traceback__)  # (frames still running are left as they are)
    _READ_ERRORS.append((next(_READ_SERIALS), error))


@contextlib.contextmanager
def store_errors_raised() -> Iterator[None]:
    """Inside, TensorFlow calls on `to_tf_dataset` pipelines (`model.fit`, `evaluate`,
    `predict`, iteration) raise a store's error met by a read (a damaged or partly copied
    store, one removed mid-run) as the FlowstoreError it is, which a command line prints as
    one line, not as TensorFlow's op error carrying the read's traceback as text."""
    recorded = list(_READ_ERRORS)
    seen = recorded[-1][0] if recorded else 0
    try:
        yield
    except tf.errors.OpError as exc:
        # The read whose error stopped TensorFlow: its text is in the op error. Reads ahead
        # (parallel reads, prefetch) may have met others since, of other samples, and an op
        # error of no read (memory) is raised as it is, whatever those reads met.
        said = str(exc)
        stopped = next((error for serial, error in list(_READ_ERRORS)
                        if serial > seen and str(error) in said), None)
        if stopped is not None:
            raise stopped from None
        raise
