"""The samples of a store that a model may train on, read one at a time.

This is the trainers' only door to data: it goes through `flowstore.store`'s reader, checks that
the store holds what the model needs, and reads one sample (one chunk per array) per call. It
imports no TensorFlow, so a wrong `--store` is reported before TensorFlow's slow start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowstore.flow_encoding import decode_flow
from flowstore.store import Store, is_url, open_store
from trainers.errors import NoSamplesError, WrongDatasetError
from trainers.tasks import Task, get_task

SPLITS = ("train", "val", "test")

#: TensorFlow wraps a numpy array's memory without copying it when it is aligned to this many
#: bytes (Eigen's alignment); numpy's own allocations are only 16-byte aligned.
TF_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: str | np.dtype) -> np.ndarray:
    """An uninitialized array whose data starts on a `TF_ALIGNMENT` boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + TF_ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % TF_ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)

#: Image-like arrays are stored uint8 and fed as uint8 0..255 (the model casts and rescales).
IMAGE_ARRAYS = ("image", "middle_frame", "frames")


@dataclass(frozen=True)
class StoreInfo:
    """What a run records about the store it trained on."""

    path: str
    dataset: str
    fingerprint: str
    classes: tuple[str, ...]
    params: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.params.get("size", 224))

    @property
    def steps(self) -> int | None:
        steps = self.params.get("steps")
        return None if steps is None else int(steps)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "dataset": self.dataset, "fingerprint": self.fingerprint,
                "classes": list(self.classes), "params": self.params}


class StoreSamples:
    """Finished samples of an open store, per split, for one model.

    Args:
        store: a store opened read-only with `flowstore.store.open_store`.
        model: the model name the samples feed; checks the store's dataset and arrays.

    Raises:
        WrongDatasetError: the store holds another dataset, or lacks an array the model reads.
    """

    def __init__(self, store: Store, model: str) -> None:
        self.store = store
        self.model = model
        self.task: Task = get_task(model)
        attrs = store.attrs
        dataset = attrs.get("dataset")
        if dataset != self.task.dataset:
            raise WrongDatasetError(
                f"store {str(store.path)!r} holds dataset {dataset!r}, but model {model!r} "
                f"trains on a {self.task.dataset!r} store "
                f"(build one with `flowstore build {self.task.dataset}`)"
            )
        missing = [name for name in self.task.arrays if name not in store.array_names()]
        if missing:
            raise WrongDatasetError(f"store {str(store.path)!r} has no array "
                                    f"{', '.join(map(repr, missing))} that model {model!r} reads")
        self.info = StoreInfo(
            path=store.path if is_url(store.path) else str(Path(store.path).resolve()),
            dataset=str(dataset),
            fingerprint=str(attrs.get("fingerprint", "")),
            classes=tuple(attrs.get("classes", ())),
            params=dict(attrs.get("params", {})),
        )
        # The small per-sample columns are read whole (a few bytes per sample); the big arrays
        # are only ever read one sample at a time (`read_batch`, `read_sample`).
        self.labels = store.read("label").astype(np.int32)
        self._split = store.read("split")
        self._done = store.read("done").astype(bool)
        # one `info` per array: on Zarr it also sums the stored bytes (a listing of the chunks)
        infos = {array: store.info(array) for array in self.task.arrays}
        self.sample_shapes = {input_name: tuple(infos[array].shape[1:])
                              for input_name, array in self.task.inputs.items()}
        #: The stored dtype of each model input, in `task.inputs` order.
        self.stored_dtypes = tuple(infos[array].dtype for array in self.task.arrays)
        self._flow_decoder = _flow_decoder(self.info.params)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes) or int(self.labels.max(initial=0)) + 1

    def indices(self, split: str) -> np.ndarray:
        """Store indices of the `done` samples of `split`, in store (manifest) order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return np.flatnonzero((self._split == split) & self._done).astype(np.int64)

    def require(self, split: str) -> np.ndarray:
        """Like `indices`, but a split without finished samples is an error that says so."""
        found = self.indices(split)
        if found.size == 0:
            raise NoSamplesError(
                f"store {self.info.path!r} has no finished {split!r} sample "
                f"({int((self._split == split).sum())} in the split, none marked done)"
            )
        return found

    def read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """The model inputs of several samples as stored (uint8 pixels, float16/uint8 flow),
        stacked, in `task.inputs` order: what the tf.data pipeline reads.

        Each sample is one chunk per array, decoded by the store straight into its row of a
        fresh 64-byte-aligned batch buffer, which TensorFlow then uses in place: no copy into
        a tensor and no batching copy, where reading samples one by one cost two copies of
        every byte (the first under the GIL). Nothing is widened here: converting to float32 in
        numpy held the pipeline to about a third of a bare read; the models cast their inputs
        instead (`trainers.data.model_input`).
        """
        rows = [int(i) for i in np.asarray(indices).reshape(-1)]
        batches = []
        for (name, array), dtype in zip(self.task.inputs.items(), self.stored_dtypes,
                                        strict=True):
            batch = aligned_empty((len(rows), *self.sample_shapes[name]), dtype)
            for row, index in enumerate(rows):
                self.store.read_into(array, index, batch[row])
            batches.append(batch)
        return tuple(batches)

    def read_sample(self, index: int) -> tuple[np.ndarray, ...]:
        """The model inputs of one sample as float32 arrays, in `task.inputs` order.

        Each array is read as `store.read(name, index)` with an int index: one chunk, never the
        whole array.
        """
        index = int(index)
        out = []
        for array in self.task.arrays:
            value = self.store.read(array, index)
            if array == "flow":
                value = self._flow_decoder(value)
            out.append(np.asarray(value, dtype=np.float32))
        return tuple(out)


def _flow_decoder(params: dict[str, Any]):
    """Map stored flow (float16, float32 or uint8-quantized) back to float32 pixels."""
    if params.get("flow_dtype") == "uint8" and "flow_bound" not in params:
        raise WrongDatasetError("store has uint8 flow but no 'flow_bound' parameter to "
                                "map it back to pixels")
    return lambda value: decode_flow(value, params)


def open_samples(path: str | Path, model: str) -> StoreSamples:
    """Open the store at `path` read-only and check it against `model`.

    The caller closes `samples.store` (or uses it as a context manager).

    Raises:
        flowstore.errors.StoreError: the path is missing or not a store.
        WrongDatasetError: the store does not hold what `model` reads.
    """
    get_task(model)  # an unknown model name fails before the store is touched
    store = open_store(path, mode="r")
    try:
        return StoreSamples(store, model)
    except BaseException:
        store.close()
        raise
