"""The samples of a store that a model may train on, through the public reader.

Trainers reach data only through `flowstore.reader`: this module checks that a store holds
what a model needs and names the model's inputs (`Split` features keyed by input name). It
imports no TensorFlow, so a wrong `--store` is reported before TensorFlow's slow start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xxhash

from flowstore.errors import DamagedStoreError
from flowstore.manifest import NO_CLASS
from flowstore.reader import ALL, TF_ALIGNMENT, Split, StoreDataset, aligned_empty
from flowstore.store import Store, failures as read_failures, open_store
from trainers.catalogue import FRAMES, MIDDLE_FRAME, ModelEntry, get_model
from trainers.errors import ModelConfigError, NoSamplesError, WrongDatasetError
from trainers.recipes import Recipe
from trainers.runs import DoneSamples

__all__ = ["SPLITS", "TF_ALIGNMENT", "StoreInfo", "StoreSamples", "aligned_empty",
           "NotBuilt", "check_split", "open_samples"]

SPLITS = ("train", "val", "test")


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
        model: the model name (or alias) the samples feed; any store holding the arrays it
            reads will do, whatever its dataset.
        frame_views: whether the middle-frame inputs read `frames` (`for_recipe`).
        reader: the store as another model of the same command read it (`for_model`): its
            columns (`done` among them) read once for every run of a chain.

    Raises:
        WrongDatasetError: the store lacks an array the model reads.
        flowstore.errors.StoreError: the store declares an encoding it does not hold, or is
            damaged as `flowstore verify` says (`check_dataset_arrays`).
    """

    def __init__(self, store: Store, model: str, *, frame_views: bool = False,
                 reader: StoreDataset | None = None) -> None:
        from flowstore.verify import check_dataset_arrays, damage_of  # (only when run)

        self.store = store
        self.entry: ModelEntry = get_model(model)
        self.model = self.entry.name
        #: Whether the middle-frame inputs read the per-step `frames` (a `frame_views` recipe).
        self.frame_views = frame_views
        self.inputs = self.entry.inputs_for(frame_views)  # input name -> the array it reads
        # a store `flowstore verify` refuses (parameters that are not its dataset's, an array of
        # another shape or type) is refused in verify's words before anything trains on it: it
        # trained to the end, then the run was not written; a lost array is said below, for
        # the models that read it
        check_dataset_arrays(store, store.path, allow_missing=True)
        dataset = str(store.attrs.get("dataset"))
        present = set(store.array_names())
        missing = [name for name in dict.fromkeys(self.inputs.values()) if name not in present]
        if missing:
            raise WrongDatasetError(
                f"store {str(store.path)!r} (dataset {dataset!r}) lacks the "
                f"array{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} that "
                f"model {self.model!r} reads" + (" under frame views" if frame_views else "")
                + damage_of(store))
        self.reader = reader if reader is not None else StoreDataset(store)
        self.info = StoreInfo(path=self.reader.location, dataset=dataset,
                              fingerprint=self.reader.fingerprint, classes=self.reader.classes,
                              params=self.reader.params)
        self.labels = self.reader.labels.astype(np.int32)
        self.sample_shapes = {name: self.reader.features[array]
                              for name, array in self.inputs.items()}

    def for_recipe(self, recipe: Recipe) -> "StoreSamples":
        """These samples as `recipe` reads them: under `frame_views`, the same store's samples
        with the middle-frame inputs read from `frames` (checked by `check_recipe` first)."""
        self.check_recipe(recipe)
        if recipe.frame_views == self.frame_views:
            return self
        return StoreSamples(self.store, self.model, frame_views=recipe.frame_views,
                            reader=self.reader)

    def for_model(self, model: str) -> "StoreSamples":
        """The same store's samples for another model of the chain, read as these are: the
        `done` samples these hold, not those of a build that appended since (a Zarr store can
        be read while a build resumes). The prerequisites a two-stream command trained read
        `done` again, and its streams trained on more samples than the fused model, unsaid."""
        return StoreSamples(self.store, model, reader=self.reader)

    @property
    def frame_view_keys(self) -> tuple[str, ...]:
        """The inputs that read one frame of `frames` at a time (none without frame views)."""
        if not self.frame_views:
            return ()
        return tuple(name for name, array in self.entry.inputs.items() if array == MIDDLE_FRAME)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes) or int(self.labels.max(initial=0)) + 1

    @property
    def segments(self) -> int | None:
        """K of a store built with `--sampling segments`, else None."""
        return self.reader.segments

    def check_recipe(self, recipe: Recipe) -> None:
        """Refuse a recipe this store cannot feed: `segment_views` needs a segments store,
        `frame_views` a model that reads a middle frame and a store that holds `frames`."""
        if recipe.segment_views and self.segments is None:
            raise ModelConfigError(
                f"segment views need a store built with --sampling segments; "
                f"{str(self.store.path)!r} has "
                f"{self.info.params.get('sampling', 'linspace')} sampling")
        if recipe.frame_views and not self.entry.reads_frame:
            raise ModelConfigError(f"frame views: {self.model} reads "
                                   f"{', '.join(self.entry.arrays)}, no middle frame")
        if recipe.frame_views and FRAMES not in self.store.array_names():
            raise ModelConfigError(f"frame views need the store's per-step {FRAMES!r}; "
                                   f"{str(self.store.path)!r} holds none")

    def input_shapes(self, recipe: Recipe) -> dict[str, tuple[int, ...]]:
        """The model's per-sample input shapes under `recipe`: the stored shapes, but one
        segment of each per-step input under segment views, and one frame of `frames` under
        frame views."""
        samples = self.for_recipe(recipe)
        shapes = dict(samples.sample_shapes)
        for name in samples.frame_view_keys:
            shapes[name] = shapes[name][1:]
        if not recipe.segment_views:
            return shapes
        segmented = set(self.split("train").segmented_keys)
        return {name: ((shape[0] // self.segments, *shape[1:]) if name in segmented else shape)
                for name, shape in shapes.items()}

    def split(self, split: str) -> Split:
        """The model's inputs (keyed by input name) of the `done` samples of `split`."""
        return self.reader.split(split, features=dict(self.inputs))

    def indices(self, split: str) -> np.ndarray:
        """Store indices of the `done` samples of `split` (or of all, `ALL`), in store
        (manifest) order."""
        check_split(split)
        # (a standard split the store has no rows of is an empty split of the reader's)
        return self.split(split).indices

    def done_counts(self) -> dict[str, int]:
        """`done` samples per split (`SPLITS`): what a run records it trained on, and what a
        run found in the runs directory must have trained on to be reused."""
        return {split: int(self.indices(split).size) for split in SPLITS}

    def done_samples(self) -> DoneSamples:
        """Which samples are `done`, split by split: their counts, a digest of their
        positions in the store and the digest of the store's id, label and split columns
        (positions are the same clips only where those are), which a run records and a run
        found in the runs directory must match to be reused."""
        digest = xxhash.xxh64()
        for split in SPLITS:
            digest.update(f"{split}\n".encode())
            digest.update(self.indices(split).astype("<i8").tobytes())
        return DoneSamples(self.done_counts(), digest.hexdigest(), self.reader.columns_digest)

    def not_built(self, split: str) -> "NotBuilt":
        """How many samples of `split` (every split: `ALL`) are not `done`, and why: what a run
        trains on or predicts leaves them out, and says so. The failure column is read only
        when a sample is missing, and a damaged one leaves why unknown (inspect names it):
        the model needs nothing from it."""
        reader = self.reader
        wanted = (np.ones(reader.done.size, dtype=bool) if split == ALL
                  else reader.splits == split)
        missing = reader.ids[wanted & ~reader.done].tolist()
        if not missing:
            return NotBuilt(0, 0)
        try:
            reasons = read_failures(self.store)
        except DamagedStoreError:
            return NotBuilt(0, 0, unknown=len(missing))
        failed = sum(1 for sample in missing if sample in reasons)
        return NotBuilt(failed, len(missing) - failed)

    def require(self, split: str) -> np.ndarray:
        """Like `indices`, but a split without finished samples is an error that says so."""
        found = self.indices(split)
        if found.size == 0:
            listed = (f"{self.reader.splits.size} in the store" if split == ALL
                      else f"{int((self.reader.splits == split).sum())} in the split")
            raise NoSamplesError(f"store {str(self.store.path)!r} has no finished {split!r} "
                                 f"sample ({listed}, none marked done)")
        return found

    def require_classes(self) -> None:
        """Refuse to train on a store whose samples are of no class (a `clips` or `images`
        store, built to be predicted): its labels are `NO_CLASS`, nothing a model can learn
        from (a loss would fail on them, or worse, a hand-made loop read them as a class)."""
        if not self.info.classes and self.labels.size and (self.labels == NO_CLASS).all():
            raise WrongDatasetError(
                f"store {str(self.store.path)!r} (dataset {self.info.dataset!r}) holds samples "
                f"of no class, to predict with a trained run (trainers predict RUN --store "
                f"{str(self.store.path)}), not to train on")

    def read_sample(self, index: int) -> tuple[np.ndarray, ...]:
        """The model inputs of sample `index` as float32 arrays (flow in pixels), in
        `inputs` order; each one chunk, `store.read(name, index)`."""
        return tuple(self.reader.encodings[array].decode(self.store.read(array, int(index)),
                                                         np.dtype(np.float32))
                     for array in self.inputs.values())


class NotBuilt(NamedTuple):
    """Samples not `done` (`StoreSamples.not_built`): failed, not yet extracted, and those
    whose reason cannot be read (the store's failure column is damaged)."""

    failed: int
    pending: int
    unknown: int = 0

    @property
    def total(self) -> int:
        return self.failed + self.pending + self.unknown

    def why(self) -> str:
        """Why, and what to do: "1 failed (flowstore inspect names them), 2 not yet extracted
        (flowstore build resumes them)"."""
        return ", ".join(part for part in (
            f"{self.failed} failed (flowstore inspect names them)" if self.failed else "",
            f"{self.pending} not yet extracted (flowstore build resumes them)"
            if self.pending else "",
            f"{self.unknown} for a reason the store's damaged failure column hides (flowstore "
            f"inspect)" if self.unknown else "") if part)


def check_split(split: str) -> None:
    """Refuse a split name the trainers do not know (`SPLITS`, or `ALL`: every sample).

    Raises:
        ModelConfigError: it is none of them.
    """
    if split not in (*SPLITS, ALL):
        raise ModelConfigError(f"--split must be one of {', '.join((*SPLITS, ALL))}, got "
                               f"{split!r}")


def open_samples(path: str | Path, model: str, *, frame_views: bool = False) -> StoreSamples:
    """Open the store at `path` read-only and check it against `model` (reading `frames` for
    its middle-frame inputs when `frame_views`).

    The caller closes `samples.store` (or uses it as a context manager).

    Raises:
        flowstore.errors.StoreError: the path is missing or not a store.
        WrongDatasetError: the store does not hold what `model` reads.
    """
    get_model(model)  # an unknown model name fails before the store is touched
    store = open_store(path, mode="r")
    try:
        return StoreSamples(store, model, frame_views=frame_views)
    except BaseException:
        store.close()
        raise
