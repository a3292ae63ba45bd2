"""The framework-neutral reader: a store's finished samples, per split, as numpy batches.

`flowstore.open(path_or_url)` gives a `StoreDataset`; `dataset.split("train")` gives a `Split`,
a random-access sequence of the split's `done` samples. Everything a training loop needs goes
through `Split.read`: one batch of samples read into one 64-byte-aligned buffer per feature,
each sample one chunk per array, decoded by the store without holding the GIL
(`Store.read_into`), and decoded from its stored encoding (`flowstore.reader.encoding`). The
framework adapters (`tf`, `keras`, `batches`, and PyTorch, which takes a split as it is) only
choose the order and hand the batches on.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import sys
import threading
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from flowstore.errors import FlowstoreError, MissingChunkError, StoreError, missing_chunk
from flowstore.manifest import SPLITS
from flowstore.reader.buffers import aligned_empty
from flowstore.reader.encoding import FLOAT_DTYPES, Encoding, declared_encodings
from flowstore.store import STRING, Store, check_array_shapes, is_url, open_store
from flowstore.store.base import DAMAGE_ERRORS, done_revision_of, unreadable_part
from flowstore.store.checksum import check_manifest_columns

#: Keys of a batch that are not features.
LABEL, ID = "label", "id"
#: The name of the "split" of every done sample of a store, whatever its split (`split(ALL)`).
ALL = "all"

#: An augmentation: a batch and a seeded generator in, a batch out (`flowstore.reader.augment`).
Augmentation = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]


class BatchSample(dict):
    """One sample of a batch read at once (`Split.__getitems__`): a dict of its values (views
    into the batch's buffers) that also knows the batch and its row in it, so that a collate
    function handed every row of the batch, in order, can pass the batch on instead of stacking
    the rows into a copy of it (`flowstore.reader.torch`)."""

    __slots__ = ("batch", "row", "_as_read")

    def __init__(self, batch: dict[str, np.ndarray], row: int) -> None:
        super().__init__((key, value[row]) for key, value in batch.items())
        self.batch, self.row = batch, row
        self._as_read = tuple(self.values())

    def as_read(self) -> bool:
        """Whether the sample still holds the values it was read with: one that a collate
        function or a wrapping dataset changed (a value replaced, added or removed) is a sample
        of its own, which the batch no longer stands for. (A value changed in place is changed
        in the batch too: the values are views into it.)"""
        return len(self) == len(self._as_read) and all(
            value is read for value, read in zip(self.values(), self._as_read))

    def __copy__(self) -> dict[str, Any]:  # a copy is a plain sample, tied to no batch
        return dict(self)

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:  # pickled: the sample alone
        return dict, (dict(self),)


class StoreDataset:
    """A store opened read-only: its description, and its splits.

    Attributes:
        location: the store's path (absolute) or URL; what a `Split` pickles.
        dataset, classes, params, fingerprint: the store's root attributes.
        features: the per-sample arrays it holds (name -> per-sample shape).
        encodings: how each feature is stored (name -> `Encoding`).
    """

    def __init__(self, store: Store, *, owns_store: bool = False) -> None:
        self.store = store
        self._owns_store = owns_store
        #: Set by `close`: a split made from this dataset reopens the store for itself then.
        self.closed = False
        #: Reads in flight (`begin_read`); `close` lets go of the store when the last ends.
        self._reads = 0
        self._reads_lock = threading.Lock()
        self.location = store.path if is_url(store.path) else str(Path(store.path).resolve())
        attrs = store.attrs
        self.dataset = str(attrs.get("dataset", ""))
        self.classes = tuple(attrs.get("classes", ()))
        self.params = dict(attrs.get("params", {}))
        self.fingerprint = str(attrs.get("fingerprint", ""))
        #: Which store this is, beyond its location: the id a build gives a store it creates
        #: (a rebuild, `--overwrite`, gives another) and its fingerprint (`Split.source`).
        self.identity = (str(attrs.get("store_id", "")), self.fingerprint)
        #: The store's `done_revision` when `done` was read (read before it: a repair that
        #: unmarks samples in between is seen by the next read, `Split._check_same_store`).
        self.done_revision = done_revision_of(attrs)
        #: K of a store built with `--sampling segments` (TSN), else None: its per-step
        #: features (`Split.segmented_keys`) hold K segments one after the other.
        self.segments: int | None = (int(self.params["segments"])
                                     if self.params.get("sampling") == "segments" else None)
        # each array its dataset's parameters give of the shape and type they give, as verify
        # checks them (the leading axis alone let a `frames` declared (200, 10**6, 32, 32, 3)
        # through, a 6 GB batch buffer a sample, and float64 frames; found by review); arrays
        # of a user's own, and the stores of a dataset this release does not know, by their
        # leading axis (one entry a sample)
        from flowstore.datasets import dataset_names
        from flowstore.verify import dataset_specs  # (the build's modules: when opened)

        names = store.array_names()
        specs = (dataset_specs(attrs, store.path) if self.dataset in dataset_names() else ())
        check_array_shapes(store, [spec for spec in specs if spec.name in names], store.path)
        layouts = {name: store.layout(name) for name in names}
        self.features = {name: shape[1:] for name, (shape, dtype) in layouts.items()
                         if len(shape) > 1 and dtype != STRING}
        self.encodings: dict[str, Encoding] = declared_encodings(
            self.params, {name: layouts[name][1] for name in self.features}, store.path)
        # The small per-sample columns are read whole (a few bytes per sample); the features
        # only ever one sample (one chunk) at a time.
        self.labels = store.read("label").astype(np.int64)
        self.ids = store.read("id")
        self.splits = store.read("split")
        self.done = store.read("done").astype(bool)
        #: `flowstore.store.checksum.columns_digest` of its classes and id, label and split
        #: columns: which samples it holds, and in which split, beyond the fingerprint (a
        #: dataset's own split files enter that by name and size only).
        self.columns_digest = check_manifest_columns(attrs, self.ids, self.labels,
                                                     self.splits, store.path)

    @classmethod
    def open(cls, location: str | os.PathLike) -> "StoreDataset":
        """Open the store at a path or URL read-only (`flowstore.open`).

        Raises:
            TypeError: `location` is not a str or an os.PathLike (None, a number and bytes
                failed inside pathlib, naming neither the argument nor what it takes).
            flowstore.errors.StoreError: missing, not a store, or a store of another format.
        """
        if not isinstance(location, (str, os.PathLike)):
            raise TypeError(f"flowstore.open takes a store's path or URL (a str or "
                            f"os.PathLike), got {type(location).__name__} {location!r:.60}")
        if location == "":  # (an unset variable: `Path("")`, said "got '.'")
            raise StoreError("flowstore.open was given an empty path")
        store = open_store(location, mode="r")
        try:
            return cls(store, owns_store=True)
        except BaseException:
            store.close()
            raise

    def __reduce__(self) -> tuple:
        """A copy (`copy.copy`, `copy.deepcopy`) or a pickle of a dataset is its store opened
        again at its location, as a split pickles: a shallow copy shared this one's store, and
        closing it closed the store under this one (whose reads of a healthy HDF5 store then
        failed as damage; found by review)."""
        return (StoreDataset.open, (self.location,))

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.splits.tolist()))

    def split(self, name: str, features: Sequence[str] | Mapping[str, str] | None = None, *,
              float_dtype: str | None = None) -> "Split":
        """The `done` samples of split `name`, in store (manifest) order.

        Args:
            name: "train", "val", "test" (whatever the store's `split` column holds), or
                "all" (`ALL`): every done sample, whatever its split (to score or extract
                features from a whole store, such as new clips of one folder).
            features: the arrays to read (default: all), or a mapping key -> array to name
                them in the batches (e.g. `{"frame": "middle_frame", "flow": "flow"}`).
            float_dtype: "float16" or "float32" for float and decoded (quantized) features;
                None keeps stored floats as stored and decodes quantized ones to float16.
        """
        return Split(self, name, features, float_dtype)

    def close(self) -> None:
        """No read starts on it after this (a split reopens the store for itself); the store
        is let go of when the reads in flight end. Keras' and tf.data's reading threads read
        ahead: a `with` block left while they did closed the handles under them, and a healthy
        store's reads failed as damage ("... --repair")."""
        with self._reads_lock:
            self.closed = True
            idle = self._reads == 0
        if idle:
            self._let_go()

    def begin_read(self) -> bool:
        """Count a read in flight, which keeps the store open until `end_read`; False where
        the dataset is closed (the reader reopens the store: `Split.source`)."""
        with self._reads_lock:
            if self.closed:
                return False
            self._reads += 1
            return True

    def end_read(self) -> None:
        with self._reads_lock:
            self._reads -= 1
            idle = self.closed and self._reads == 0
        if idle:
            self._let_go()

    def _let_go(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> "StoreDataset":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"StoreDataset({self.location!r}, dataset={self.dataset!r}, "
                f"features={list(self.features)})")


def _float_dtype_name(float_dtype: Any) -> str | None:
    """`float_dtype` as one of `FLOAT_DTYPES` ("float32", `np.float32` and `np.dtype("float32")`
    alike), or None."""
    if float_dtype is None:
        return None
    try:
        name = np.dtype(float_dtype).name
    except TypeError:
        name = None
    if name not in FLOAT_DTYPES:
        raise ValueError(f"float_dtype must be one of {FLOAT_DTYPES} or None, "
                         f"got {float_dtype!r}")
    return name


class Split:
    """The `done` samples of one split: a random-access sequence of numpy samples.

    `split[i]` is one sample (a dict of its features, `label` and `id`); `split[[i, j, ...]]`
    (or a slice, or an array of positions) is one batch, each feature stacked in one aligned
    buffer. A split is a PyTorch map-style dataset as it is: `__getitems__` reads a DataLoader's
    batch at once, and a split pickles as its store's location and its selection, reopening
    the store in the process (or forked child) that reads it.
    """

    def __init__(self, source: StoreDataset, name: str,
                 features: Sequence[str] | Mapping[str, str] | None, float_dtype: str | None
                 ) -> None:
        # a standard split with no rows (a split file without val) is empty, as is one with
        # rows but none done; any other name is a typo
        if name != ALL and name not in source.split_names and name not in SPLITS:
            raise ValueError(f"store {source.location!r} has no split {name!r} "
                             f"(it has {', '.join(source.split_names) or 'none'}; "
                             f"{ALL!r} is every sample)")
        if name == ALL and ALL in source.split_names:  # (a hand-edited `split` column)
            raise ValueError(f"store {source.location!r} holds a split named {ALL!r}, which "
                             f"here means every sample: the store is damaged")
        if features is None:
            features = tuple(source.features)
        elif isinstance(features, str):  # one feature, not the letters of its name
            features = (features,)
        pairs = (list(features.items()) if isinstance(features, Mapping)
                 else [(f, f) for f in features]
                 if isinstance(features, (Sequence, AbstractSet)) else None)
        if pairs is None or not all(isinstance(n, str) for pair in pairs for n in pair):
            raise TypeError(f"features must be feature names (a name, a list of them, or a "
                            f"dict of new name -> feature), got {features!r:.60}")
        mapping = dict(pairs)
        if not mapping:
            raise ValueError("features must name at least one array (None: all of them)")
        unknown = [array for array in mapping.values() if array not in source.features]
        if unknown:
            from flowstore.verify import damage_of

            raise ValueError(f"store {source.location!r} has no feature {unknown[0]!r} "
                             f"(it has {', '.join(source.features)})" + damage_of(source.store))
        if LABEL in mapping or ID in mapping:
            raise ValueError(f"features must be named, and not {LABEL!r} or {ID!r}")
        float_dtype = _float_dtype_name(float_dtype)
        self.name = name
        self.features: dict[str, str] = mapping
        self.float_dtype = float_dtype
        chosen = source.done if name == ALL else (source.splits == name) & source.done
        self.indices = np.flatnonzero(chosen).astype(np.int64)
        self._location, self._identity = source.location, source.identity
        self._reopened = False  # True once `source` reopened the store for this split alone
        self._reopen_lock = threading.Lock()  # (reading threads that find it closed at once)
        self._attach(source)

    #: What a split learns from its open store (`_attach`): an unpickled split has none of it
    #: until first asked (`__getattr__`), so that unpickling never opens the store.
    _ATTACHED = frozenset({"labels", "ids", "shapes", "encodings", "dtypes"})

    def _attach(self, source: StoreDataset) -> None:
        self._source = source
        self._pid = os.getpid()
        #: The store's `done` as last read, and the `done_revision` it was read at: read again
        #: when a build changes the revision (`_check_same_store`).
        self._done_now, self._done_revision = source.done, source.done_revision
        self.labels = source.labels[self.indices]
        self.ids = source.ids[self.indices]
        self.shapes = {key: source.features[array] for key, array in self.features.items()}
        self.encodings = {key: source.encodings[array] for key, array in self.features.items()}
        self.dtypes = {key: encoding.output_dtype(self.float_dtype)
                       for key, encoding in self.encodings.items()}

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set: an unpickled split's store-derived ones.
        if name in Split._ATTACHED and "_location" in self.__dict__:
            self.source  # noqa: B018 (attaches)
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- what the store says ---------------------------------------------------------------------
    @property
    def location(self) -> str:
        return self._location

    @property
    def source(self) -> StoreDataset:
        """The open store, reopened after the split was unpickled or its process forked (a
        store's handles, zarr's event loop thread or an HDF5 file, do not cross a fork), or
        after the dataset it came from was closed (a split outlives its `with` block, on either
        backend, as an unpickled one does)."""
        with self._reopen_lock:
            if self._source is None or self._pid != os.getpid() or self._source.closed:
                self._reopen()
            return self._source

    def _reopen(self) -> None:
        reopened = StoreDataset.open(self._location)
        try:
            self._check_reopened(reopened)
        except BaseException:
            reopened.close()
            raise
        self._attach(reopened)
        self._reopened = True

    def _check_reopened(self, reopened: StoreDataset) -> None:
        """Refuse a store that is no longer the one the split was made from, or no longer
        holds what it reads: an array, or a sample done (a `verify --repair` that could not
        mend a sample unmarks it, its damaged bytes left: a split made before, reopened in each
        epoch's DataLoader workers, read them on under the sample's label, without a word)."""
        same_id = reopened.identity[0] == self._identity[0] != ""
        if reopened.identity != self._identity and not same_id:
            # its positions are rows of the store it was made from: of another store, they
            # are other samples, of other splits and labels, read without a word. (A build
            # writing into the same store, its id kept, holds the same rows: a repair's source
            # file it could not read changes the fingerprint, and is told below as a sample no
            # longer done.)
            raise StoreError(f"store {self._location!r} is not the one split {self.name!r} was "
                             f"made from (it was rebuilt or replaced since: store id "
                             f"{reopened.identity[0][:8] or 'none'}, fingerprint "
                             f"{reopened.identity[1][:8] or 'none'}; the split's "
                             f"{self._identity[0][:8] or 'none'}, "
                             f"{self._identity[1][:8] or 'none'}); make the split again")
        lost = [array for array in self.features.values() if array not in reopened.features]
        if lost:
            # (a partial copy, a sync under way: `_attach` failed as a bare KeyError)
            arrays, them = ("arrays", "them") if len(lost) > 1 else ("array", "it")
            raise StoreError(f"store {self._location!r} lacks the {arrays} "
                             f"{', '.join(map(repr, lost))} that split {self.name!r} reads "
                             f"(it had {them} when the split was made); `flowstore verify` "
                             f"says what else it lacks")
        self._refuse_undone(reopened, self.indices, reopened.done)

    def _refuse_undone(self, source: StoreDataset, indices: np.ndarray, done: np.ndarray) -> None:
        """Refuse to read the samples of `indices` (store rows) that `done` no longer marks."""
        undone = indices[~done[indices]]
        if undone.size:
            raise StoreError(f"store {self._location!r} no longer has {undone.size} sample(s) "
                             f"of split {self.name!r} done (e.g. "
                             f"{str(source.ids[undone[0]])!r}: a repair under way, or one "
                             f"that could not mend it; `flowstore inspect` says why); make the "
                             f"split again")

    def close(self) -> None:
        """Close the store this split reopened for itself (read after its dataset's `with`
        block, or unpickled): an HDF5 store keeps builds out while it is open, until the split
        is collected otherwise (after its `to_tf_dataset` pipelines, every dataset made of
        them and their iterators). A store the split shares with its dataset is the dataset's
        to close. Read again, the split reopens it."""
        if self._reopened and self._source is not None:
            self._source.close()
        self._source, self._reopened = None, False

    def __enter__(self) -> "Split":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def motion_keys(self) -> tuple[str, ...]:
        """Keys of the features whose encoding the store declares: motion fields (dx, dy)."""
        return tuple(key for key, encoding in self.encodings.items() if encoding.declared)

    @property
    def segmented_keys(self) -> tuple[str, ...]:
        """Keys of the per-step features (time, height, width, channels: `frames`, `flow`) of a
        store built with `--sampling segments`, which hold its K segments one after the other
        (segment-major, `flowstore.extraction.sampling`); () for any other store."""
        if self.source.segments is None:
            return ()
        return tuple(key for key, shape in self.shapes.items() if len(shape) == 4)

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.indices.size)

    def read(self, positions: Iterable[int] | np.ndarray) -> dict[str, np.ndarray]:
        """One batch: the samples at `positions` of this split (in that order), each feature
        in one 64-byte-aligned buffer of its own (TensorFlow and torch use it without a copy;
        `flowstore.reader.buffers` reuses it once nothing refers to it),
        `label` (int64) and `id` (str)."""
        positions = self._positions(positions)
        indices = self.indices[positions]
        source = self._source_for_reading()
        try:
            self._check_same_store(source, indices)
            batch: dict[str, np.ndarray] = {}
            for key, array in self.features.items():
                encoding, dtype, shape = self.encodings[key], self.dtypes[key], self.shapes[key]
                out = aligned_empty((indices.size, *shape), dtype)
                if dtype == encoding.stored:
                    for row, index in enumerate(indices.tolist()):
                        self._read_sample(source, array, index, out[row])
                else:  # each sample as stored into a scratch buffer, then decoded into its row
                    scratch = np.empty(shape, encoding.stored)
                    table = encoding.lookup_table(dtype) if encoding.quantized else None
                    for row, index in enumerate(indices.tolist()):
                        self._read_sample(source, array, index, scratch)
                        if table is not None:
                            np.take(table, scratch, out=out[row])
                        else:
                            out[row] = scratch
                batch[key] = out
        finally:
            source.end_read()
        batch[LABEL] = self.labels[positions]
        batch[ID] = self.ids[positions]
        return batch

    def _source_for_reading(self) -> StoreDataset:
        """`source`, its read counted (`StoreDataset.begin_read`), so that a `close` of it
        from another thread (a `with` block left while tf.data or Keras read ahead) waits for
        this read to end; one closed in between is reopened."""
        while True:
            source = self.source
            if source.begin_read():
                return source

    def _check_same_store(self, source: StoreDataset, indices: np.ndarray, *,
                          fresh: bool = False) -> None:
        """Refuse to read a store rebuilt or replaced since the split was made, where its open
        handles would read the new store's chunks at the old store's positions (other samples,
        read without a word: a Zarr store's chunks are files or objects opened by name). A
        resumed build or a repair writes into the same store (`Store.root_now`; `fresh`: look
        now, where a URL store is otherwise looked at every few seconds); a repair takes back
        the `done` flags of the samples it rewrites, and of those it could not mend, which the
        split then refuses to read (`indices`: the store rows about to be read). Where the
        store's `done_revision` says so, `done` is read again (a small column), else not."""
        now = source.store.root_now(fresh=fresh)
        if now is None:
            return
        if now.store_id != self._identity[0]:
            raise StoreError(f"store {self._location!r} was rebuilt, replaced or deleted since "
                             f"split {self.name!r} was made; open it again and make the split "
                             f"again (a command reading it, such as `trainers run`: run it "
                             f"again)")
        if now.done_revision != self._done_revision:
            # (the revision read before `done`: a repair that moves on in between is seen by
            # the next read)
            done = source.store.read("done").astype(bool)
            self._done_now, self._done_revision = done, now.done_revision
        self._refuse_undone(source, indices, self._done_now)

    def _read_sample(self, source: StoreDataset, array: str, index: int,
                     out: np.ndarray) -> None:
        """Store sample `index` of `array` of `source` into `out`; a chunk that cannot be read
        is one line naming the sample (`unreadable_part`), not a codec's traceback."""
        store = source.store
        try:
            store.read_into(array, index, out)
        except (FlowstoreError, *DAMAGE_ERRORS) as exc:
            # a store rebuilt or deleted under the split (its chunks gone, or of other shapes)
            # reads as damage: said as what it is, not sent to --repair (a URL store's last
            # look may be seconds old)
            self._check_same_store(source, np.array([index]), fresh=True)
            if isinstance(exc, MissingChunkError) and exc.index is not None:
                # (the store knows positions: named by the sample's id)
                raise missing_chunk(exc.store, array, index, str(source.ids[index])) from None
            if isinstance(exc, FlowstoreError):
                raise
            raise unreadable_part(store.path, f"sample {str(source.ids[index])!r} of "
                                              f"{array!r}", exc, sample=True) from exc

    def _positions(self, positions: Iterable[int] | np.ndarray) -> np.ndarray:
        """`positions` as int64 positions of this split: integers (negative ones count from the
        end), or a boolean mask with one entry per sample. Anything else (floats, strings,
        an integer that no int64 holds, a mapping, bytes) is refused: read as positions it
        would read other samples than asked, silently (a dict's keys, a bytearray's bytes), and
        so is a set: its order, the batch's, is the hash table's, not the one it was written in."""
        if isinstance(positions, (Mapping, bytes, bytearray, memoryview)):
            raise TypeError(f"positions must be integers or a boolean mask, got "
                            f"{type(positions).__name__} {positions!r:.60}")
        if isinstance(positions, AbstractSet):
            raise TypeError(f"positions must be in an order (a list, an array), got a "
                            f"{type(positions).__name__}, whose order is its hash table's: "
                            f"sorted({positions!r:.40}) reads them in order")
        if not isinstance(positions, (np.ndarray, Sequence)):
            try:
                positions = list(positions)  # a generator, an iterator (map, filter)
            except TypeError:
                raise TypeError(f"positions must be integers or a boolean mask, got "
                                f"{positions!r:.60}") from None
        try:
            array = np.asarray(positions)
        except ValueError:  # (numpy's words: "setting an array element with a sequence")
            raise IndexError(f"positions of split {self.name!r} must be one-dimensional, got "
                             f"rows of other lengths ({positions!r:.60})") from None
        if array.dtype.kind in "iu" and not isinstance(positions, np.ndarray) and any(
                isinstance(p, (bool, np.bool_)) or getattr(p, "dtype", None) == bool
                or str(getattr(p, "dtype", "")) == "torch.bool" for p in positions):
            # ([True, 0] is int64 to numpy: True read as position 1)
            raise TypeError(f"positions must be integers or a boolean mask, not both "
                            f"({positions!r:.60})")
        if array.dtype == bool:
            if array.shape != (len(self),):
                raise IndexError(f"a boolean mask of split {self.name!r} has one entry per "
                                 f"sample ({len(self)}), got shape {array.shape}")
            return np.flatnonzero(array)
        if array.ndim > 1:  # no batch (it was flattened into one); a 0-d array is one position
            raise IndexError(f"positions of split {self.name!r} must be one-dimensional, got "
                             f"shape {array.shape}")  # ([[]] too, which read as no position)
        if array.size == 0 and (array.dtype.kind in "iu" or not isinstance(positions, np.ndarray)):
            return np.zeros(0, np.int64)  # ([] is float64 to numpy; an empty float array is not)
        if array.dtype.kind not in "iu":
            raise TypeError(f"positions must be integers or a boolean mask, got "
                            f"{array.dtype} ({positions!r:.60})")
        array = array.reshape(-1)
        outside = array[(array < -len(self)) | (array >= len(self))]
        if outside.size:
            raise IndexError(self._out_of_range(outside[0]))
        return array.astype(np.int64)

    def _out_of_range(self, position: Any) -> str:
        return f"position {position} is out of range for split {self.name!r} of {len(self)} samples"

    def __getitem__(self, item: int | slice | Sequence[int] | np.ndarray) -> dict[str, Any]:
        if isinstance(item, (bool, np.bool_)) or (isinstance(item, np.ndarray) and item.ndim == 0
                                                   and item.dtype == bool):
            raise TypeError("a split is indexed by position, not by a bool")
        if isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iu":
            item = int(item)  # as numpy does: a 0-d integer array is a scalar index
        elif (getattr(item, "ndim", None) == 0 and not isinstance(item, np.generic)
              and "bool" not in str(getattr(item, "dtype", ""))):
            # another library's 0-d integer (a torch tensor: `DataLoader(split,
            # batch_size=None, sampler=torch.randperm(n))` hands those); a float is refused
            with contextlib.suppress(TypeError):
                item = operator.index(item)
        if isinstance(item, (int, np.integer)):
            if not -len(self) <= item < len(self):
                raise IndexError(self._out_of_range(item))
            batch = self.read([item])
            return {key: value[0] for key, value in batch.items()}
        if isinstance(item, slice):
            item = range(*item.indices(len(self)))
        if "torch" in sys.modules:  # maybe a DataLoader worker taking whole batches
            from flowstore.reader.torch import read_to_lend

            return read_to_lend(self, item)
        return self.read(item)

    def __getitems__(self, positions: Sequence[int]) -> list[BatchSample]:
        """A DataLoader batch, read as one batch and handed back as the list of samples torch's
        collate function expects (views into the batch buffers). Where torch is loaded, its
        default collate learns to hand such a list on as the batch it came from, uncopied, and
        a DataLoader worker reads into shared memory that torch passes on as it is
        (`flowstore.reader.torch`)."""
        if "torch" in sys.modules:
            from flowstore.reader.torch import adapt_process

            adapt_process()
        batch = self.read(positions)
        return [BatchSample(batch, row) for row in range(len(batch[ID]))]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for position in range(len(self)):
            yield self[position]

    # -- pickling: the location and the selection, never the open store --------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"location": self._location, "identity": self._identity, "name": self.name,
                "features": self.features, "float_dtype": self.float_dtype,
                "indices": self.indices}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self.features = state["name"], state["features"]
        self.float_dtype, self.indices = state["float_dtype"], state["indices"]
        self._location, self._source, self._pid = state["location"], None, -1
        self._reopened = False
        self._reopen_lock = threading.Lock()
        self._identity = tuple(state["identity"])

    # -- adapters --------------------------------------------------------------------------------
    def augmentation(self, augment: bool | Augmentation | None) -> Augmentation | None:
        """`augment` as a function: True means the trainers' default, a random horizontal flip
        of every image-like feature of a sample together, motion fields with dx negated."""
        if augment is True:
            from flowstore.reader.augment import horizontal_flip

            # a partial, not a closure: it pickles, as Keras' worker processes need under spawn
            return functools.partial(horizontal_flip, motion=self.motion_keys)
        if augment is None or augment is False:
            return None
        if not callable(augment):
            raise TypeError(f"augment must be True, None or a function of (batch, numpy "
                            f"Generator), got {augment!r}")
        return augment

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                augment: bool | Augmentation | None = None,
                drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """One epoch of numpy batches (`flowstore.reader.batches`)."""
        from flowstore.reader.batches import epoch_batches

        return epoch_batches(self, batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                             augment=augment, drop_remainder=drop_remainder)

    def to_tf_dataset(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                      augment: bool | Augmentation | None = None,
                      parallel_reads: int | None = None, epoch: Any = None):
        """A `tf.data.Dataset` of `(features, label)` batches (`flowstore.reader.tf`)."""
        with _framework_needed("tensorflow", "to_tf_dataset",
                               "pip install tensorflow (or 'flowstore[train]')"):
            from flowstore.reader.tf import to_tf_dataset

        return to_tf_dataset(self, batch_size, shuffle=shuffle, seed=seed, augment=augment,
                             parallel_reads=parallel_reads, epoch=epoch)

    def to_keras_dataset(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                         augment: bool | Augmentation | None = None, **pydataset_options: Any):
        """A Keras 3 `PyDataset` of `(features, label)` batches, for any Keras backend
        (`flowstore.reader.keras`)."""
        with _framework_needed("keras", "to_keras_dataset",
                               "pip install keras and a backend (or 'flowstore[train]')"):
            from flowstore.reader.keras import SplitPyDataset

        return SplitPyDataset(self, batch_size, shuffle=shuffle, seed=seed, augment=augment,
                              **pydataset_options)

    def model_inputs(self, batch: Mapping[str, np.ndarray]) -> Any:
        """What a Keras model takes from a batch: the one feature's array, or the dict of
        features when there are several (matched to the model's named inputs)."""
        if len(self.features) == 1:
            return batch[next(iter(self.features))]
        return {key: batch[key] for key in self.features}

    def __repr__(self) -> str:
        return (f"Split({self._location!r}, {self.name!r}, {len(self)} samples, "
                f"features={self.features})")


@contextlib.contextmanager
def _framework_needed(framework: str, method: str, install: str) -> Iterator[None]:
    """An adapter's framework missing, said as such: "No module named 'tensorflow'" from inside
    flowstore read like a fault of flowstore's install (`pip install flowstore` brings no
    framework; found by review). Still a ModuleNotFoundError of `framework`, for code that
    catches it; any other missing module is raised as it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name != framework:
            raise
        raise ModuleNotFoundError(f"split.{method} needs {framework}, which is not installed "
                                  f"here: {install}", name=framework) from None
