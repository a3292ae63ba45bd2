"""A trained run's predictions on a split of a store: `trainers predict` and the report's
confusion matrices.

A run's model scores any store that holds the arrays it reads at the shapes it reads: its own
store's test split (what `trainers report --html/--out` draws), another split of it, or another
store built with the same parameters from other clips (`flowstore build ... --source NEW`; new
clips of no class: `flowstore build clips`, predicted with no accuracy to report). A
clip is scored as the run scored its test split: a segment- or frame-views run by the mean of
its views' logits. Classes are matched by name, so a store of other (or fewer) classes is
scored too: its samples of a class the run never learnt are predicted but count in no
accuracy.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from flowstore.console import some_named
from flowstore.manifest import NO_CLASS
from flowstore.params import (FLOW_METHOD, FLOW_METHODS, NOT_RECORDED, recorded_value,
                              shown_value)
from flowstore.reader import ALL
from flowstore.store import is_url, store_exists
from trainers.catalogue import FLOW, FRAMES, recipe_of
from trainers.errors import ModelConfigError
from trainers.outputs import check_output, refuse_inside_a_run_or_store, write_whole
from trainers.recipes import Recipe
from trainers.runs import RunRecord, require_run
from trainers.samples import NotBuilt, StoreSamples, check_split, open_samples

#: The class name a sample of no class (`NO_CLASS`) has in predictions: none.
NO_CLASS_NAME = ""
#: The k of the top-k accuracy `trainers predict` also prints, for stores of more classes.
TOP_K = 5
#: Store parameters that say which steps of a clip a sample holds.
STEP_PARAMS = ("steps", "sampling", "segments", "stack")

#: Rows a prediction batch holds (inference only: memory, not results, depends on it). A
#: views run's clips are a row per view, so its batches hold fewer clips: 8 clips of a
#: frame-views two-stream run (16 views) would be 128 flow stacks in one batch.
PREDICT_BATCH = 8


@dataclass(frozen=True)
class SplitPredictions:
    """A run's model's predictions on a split of a store, in store (manifest) order.

    Attributes:
        classes: the run's classes, which `predicted` and `labels` index.
        ids: each sample's id.
        labels: each sample's true class as an index into `classes`; -1 where the store's
            class is not one of the run's.
        predicted: the class of the highest probability.
        probabilities: `(samples, classes)` softmax of the (views' mean) logits.
        true_classes: each sample's class name as the store names it (`NO_CLASS_NAME`, empty,
            for a sample of no class: a `clips` or `images` store).
        splits: each sample's split in the store.
    """

    classes: tuple[str, ...]
    ids: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray
    true_classes: np.ndarray
    splits: np.ndarray

    @property
    def known(self) -> np.ndarray:
        """Which samples are of a class the run knows (those an accuracy counts)."""
        return self.labels >= 0

    @property
    def unlabelled(self) -> np.ndarray:
        """Which samples are of no class (a `clips` or `images` store), so in no accuracy."""
        return self.true_classes == NO_CLASS_NAME

    @property
    def correct(self) -> int:
        return int((self.predicted == self.labels)[self.known].sum())

    @property
    def accuracy(self) -> float | None:
        """Correct predictions over the samples of classes the run knows; None if none is."""
        known = int(self.known.sum())
        return self.correct / known if known else None

    def top_k_accuracy(self, k: int) -> float | None:
        """The share of the samples of known classes whose class is among the `k` most
        probable (UCF101's and Kinetics' top-5); None if no sample is of a known class."""
        known = self.known
        if not known.any():
            return None
        top = np.argsort(-self.probabilities[known], axis=1, kind="stable")[:, :k]
        return float((top == self.labels[known, None]).any(axis=1).mean())

    @property
    def confusion(self) -> np.ndarray:
        """(C, C) counts over the samples of known classes: row = true, column = predicted."""
        count, known = len(self.classes), self.known
        return np.bincount(self.labels[known] * count + self.predicted[known],
                           minlength=count * count).reshape(count, count)

    @property
    def misclassified(self) -> np.ndarray:
        """Positions (in the split) of the samples of known classes predicted wrong, taking
        the true classes in turn: the first wrong one of each class, then the second of
        each, ..."""
        wrong = np.flatnonzero(self.known & (self.labels != self.predicted))
        labels = self.labels[wrong]
        rank = np.array([int((labels[:k] == label).sum()) for k, label in enumerate(labels)],
                        dtype=np.int64)
        return wrong[np.lexsort((labels, rank))]

    def csv_text(self) -> str:
        """One row per sample: `id`, `split`, `label` (the store's class name), `predicted`,
        then the probability of each of the run's classes (`p_CLASS`)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "split", "label", "predicted",
                         *(f"p_{name}" for name in self.classes)])
        for k in range(self.ids.size):
            writer.writerow([self.ids[k], self.splits[k], self.true_classes[k],
                             self.classes[self.predicted[k]],
                             *(f"{p:.6f}" for p in self.probabilities[k])])
        return out.getvalue()


@dataclass(frozen=True)
class RunPredictions:
    """What `trainers predict` computed: the predictions and what they were made from."""

    run: RunRecord
    store: str
    fingerprint: str
    split: str
    predictions: SplitPredictions
    #: How the store's extraction differs, in what the model reads, from that of the store
    #: the run trained on ("resize 'center-crop', not 'stretch'"); empty when it does not.
    differences: tuple[str, ...]
    #: The split's samples that are not built, so not predicted: a user predicting new clips
    #: learns that some are missing from the CSV, and why.
    not_built: NotBuilt = NotBuilt(0, 0)
    #: Whether the store holds as many `done` samples as when the run trained, but others
    #: (`RunRecord.as_many_but_others`: repaired or failed since).
    other_samples: bool = False
    #: Whether the store is the one at the place the run records (no `--store` given).
    recorded_place: bool = False

    @property
    def own_store(self) -> bool:
        return bool(self.run.fingerprint) and self.fingerprint == self.run.fingerprint

    @property
    def replaced_store(self) -> str | None:
        """A warning where the store at the place the run records is another than it trained
        on (rebuilt there since): its accuracy is not the run's, which the README says the
        default prediction prints, and only the summary's "(the run's: ...)" said so."""
        if not self.recorded_place or self.own_store or not self.run.fingerprint:
            return None
        return (f"the store at {self.store} (fingerprint {self.fingerprint[:8]}) is not the one "
                f"the run trained on ({self.run.fingerprint[:8]}): rebuilt there since; this "
                f"accuracy is not the run's")

    def summary(self) -> str:
        """One line: what was predicted from what, and the accuracy where there is one (and,
        on the run's own store, whether it is the accuracy the run recorded)."""
        predictions = self.predictions
        which = (f"{predictions.ids.size} sample(s) of all splits" if self.split == ALL
                 else f"{predictions.ids.size} {self.split} sample(s)")
        own = ("the run's own" if self.own_store else
               f"the run's: {self.run.fingerprint[:8]}" if self.run.fingerprint else
               "the run records no store fingerprint")
        line = (f"{self.run.path.name}: {which} of {self.store}, store "
                f"{self.fingerprint[:8]} ({own}): ")
        unlabelled = int(predictions.unlabelled.sum())
        other = ~predictions.known & ~predictions.unlabelled
        unknown = sorted(set(predictions.true_classes[other].tolist()))
        accuracy = predictions.accuracy
        if accuracy is None and unlabelled == predictions.ids.size:
            line += "no accuracy (its samples are of no class: predictions only)"
        elif accuracy is None:
            line += "no accuracy (no sample is of a class the run knows)"
        else:
            line += (f"accuracy {accuracy:.4f} ({predictions.correct} of "
                     f"{int(predictions.known.sum())})")
            if len(predictions.classes) > TOP_K:
                line += f", top-{TOP_K} {predictions.top_k_accuracy(TOP_K):.4f}"
        if unknown:
            line += (f"; {int(other.sum())} sample(s) of {len(unknown)} class(es) the run "
                     f"does not know ({some_named(unknown)}) predicted, not counted")
        counts = self.run.samples or {}
        trained_on = (sum(counts.values()) if self.split == ALL and counts
                      else counts.get(self.split))
        if self.own_store and trained_on is not None and trained_on != predictions.ids.size:
            line += (f"; the store held {trained_on} finished "
                     f"{'' if self.split == ALL else self.split + ' '}sample(s) when the "
                     f"run trained (built further, or samples unmarked, since), so this is not "
                     f"the accuracy it recorded")
        elif self.own_store and self.other_samples:
            line += ("; the store's finished samples are not all those it held when the run "
                     "trained (as many, but others: repaired or failed since), so this may not "
                     "be the accuracy it recorded")
        if self.not_built.total:
            line += (f"; {self.not_built.total} sample(s) not built, so not predicted: "
                     f"{self.not_built.why()}")
        return line


def run_views(record: RunRecord) -> Recipe:
    """How the run viewed a clip (its recipe's `frame_views` and `segment_views`, unrecorded
    read as off), as its model's catalogue recipe with those two fields: all that predicting
    needs of a recipe, so that a run recording only part of one (an older or a hand-made
    `metrics.json`) predicts too.

    Raises:
        ModelConfigError: both are on, or either is not a bool.
        UnknownModelError: the run's model is not in this catalogue.
    """
    recorded = record.metrics.get("recipe") or {}
    flags = {name: recorded.get(name, False) for name in ("frame_views", "segment_views")}
    try:
        return dataclasses.replace(recipe_of(record.model), **flags)
    except ModelConfigError as exc:
        raise ModelConfigError(f"run {str(record.path)!r} records a recipe that cannot view "
                               f"its clips ({exc})") from None


def open_run_samples(record: RunRecord, location: str | Path) -> StoreSamples:
    """The store at `location` opened for `record`'s model as the run read its store (its
    frame views), checked to hold what the run's recipe views (a segments store for a
    segment-views run). The caller closes `samples.store`.

    Raises:
        flowstore.errors.StoreError: the path is missing or not a store.
        WrongDatasetError: the store lacks an array the model reads.
        ModelConfigError: the store cannot give the run's views.
        UnknownModelError: the run is of a model not in this catalogue.
    """
    recipe = run_views(record)
    samples = open_samples(location, record.model, frame_views=recipe.frame_views)
    try:
        samples.check_recipe(recipe)
    except BaseException:
        samples.store.close()
        raise
    return samples


def predict_samples(record: RunRecord, samples: StoreSamples, split: str) -> SplitPredictions:
    """Load the run's model and predict the `done` samples of `split` in inference mode.

    Raises:
        DamagedRunError: the run's `model.keras` is damaged.
        ModelConfigError: the store's samples are not of the shapes the model reads.
        NoSamplesError: the split has no finished sample.
        flowstore.errors.StoreError: a sample cannot be read.
    """
    recipe = run_views(record)
    samples.require(split)
    from trainers.quiet import start_keras_quietly

    start_keras_quietly()
    import keras

    from trainers.backend import store_errors_raised
    from trainers.data import ClipViews, InputOptions, make_dataset
    from trainers.fit import StopWhenAsked, stop_if_asked
    from trainers.models import load_trained

    model = load_trained(record.model_file)
    _check_shapes(record, samples, recipe, model)
    views = ClipViews.of(samples, recipe.segment_views)
    dataset = make_dataset(samples, split, InputOptions(
        PREDICT_BATCH if views is None else max(1, PREDICT_BATCH // views.count),
        augment=views.every_view if views is not None else False))
    with store_errors_raised():
        if views is None:
            logits = np.asarray(keras.ops.convert_to_numpy(
                model.predict(dataset, verbose=0, callbacks=[StopWhenAsked()])), dtype=np.float64)
        else:
            logits = views.clip_logits(model, dataset)[0].astype(np.float64)
    stop_if_asked()  # (one Keras swallowed in the last batch's logs)
    rows = samples.split(split)
    _check_finite(logits, rows.ids, split)
    store_classes = samples.info.classes or tuple(str(k) for k in range(samples.num_classes))
    classes = run_classes(record, logits.shape[-1], store_classes)
    true_classes = np.array([NO_CLASS_NAME if label == NO_CLASS else store_classes[label]
                             for label in rows.labels], dtype=object)
    position = {name: k for k, name in enumerate(classes)}
    labels = np.array([-1 if label == NO_CLASS else position.get(name, -1)
                       for label, name in zip(rows.labels, true_classes)], dtype=np.int64)
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return SplitPredictions(classes=classes, ids=np.asarray(rows.ids), labels=labels,
                            predicted=np.argmax(logits, axis=-1).astype(np.int64),
                            probabilities=probabilities.astype(np.float32),
                            true_classes=true_classes,
                            splits=np.asarray(samples.reader.splits[rows.indices]))


def _check_finite(logits: np.ndarray, ids: Sequence[str], split: str) -> None:
    """Refuse outputs that are not all finite: the argmax of a NaN row is class 0, written as
    the prediction and counted correct where that was the sample's class, and on another
    Keras backend the same input gave finite nonsense instead (found by review). A finished
    run's weights are finite (`BestEpoch`), so the sample's stored values are not.

    Raises:
        ModelConfigError: some sample's outputs are NaN or infinite.
    """
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=-1))
    if len(bad):
        raise ModelConfigError(f"the model's outputs for {len(bad)} sample(s) of split "
                               f"{split!r} are not finite (e.g. {str(ids[bad[0]])!r}): their "
                               f"stored values are not (NaN or infinite), which no flowstore "
                               f"build writes; `flowstore verify` names samples whose bytes "
                               f"changed")


def run_classes(record: RunRecord, count: int, store_classes: Sequence[str]) -> tuple[str, ...]:
    """The class names of the run's `count` outputs: those its `metrics.json` records; where it
    records none (a hand-made one), the store's if it has as many, as the run's own store has;
    else their numbers."""
    recorded = tuple(str(name) for name in record.store.get("classes") or ())
    if len(recorded) == count:
        return recorded
    return tuple(store_classes) if len(store_classes) == count else tuple(map(str, range(count)))


def _check_shapes(record: RunRecord, samples: StoreSamples, recipe: Recipe, model) -> None:
    """Refuse, in one line, a store whose samples are not of the shapes the model reads (its
    frame side or flow steps), before Keras fails deep inside `predict`."""
    wanted = {tensor.name: tuple(tensor.shape[1:]) for tensor in model.inputs}
    given = samples.input_shapes(recipe)
    if set(wanted) != set(given):
        raise ModelConfigError(
            f"run {str(record.path)!r}: its model.keras reads the input(s) "
            f"{', '.join(map(repr, sorted(wanted)))}, its metrics.json's model "
            f"{record.model!r} is fed {', '.join(map(repr, sorted(given)))} (the two files "
            f"disagree: a run directory edited or put together by hand?)")
    for name, shape in given.items():
        if tuple(wanted[name]) != tuple(shape):
            raise ModelConfigError(
                f"store {str(samples.store.path)!r} gives {record.model}'s {name!r} input "
                f"samples of shape {tuple(shape)}; run {record.path.name!r} reads "
                f"{tuple(wanted[name])} (build the store with the run's --size and --steps)")


def extraction_differences(record: RunRecord, samples: StoreSamples) -> tuple[str, ...]:
    """How the store's extraction differs from that of the run's store in what the model
    reads, as "resize 'center-crop', not 'stretch'" phrases (a parameter a store leaves out read
    as its default, `UNRECORDED_DEFAULTS`): samples extracted otherwise (another flow
    algorithm, resize or decoder) are not what the model learnt from, though they have its
    shapes. A model reading no flow is not told of the flow's parameters, one reading no
    per-step array (`frames`, `flow`) not of the steps and their sampling (the middle frame is
    the clip's, whatever they are), and `flow_bound` counts only where a store holds uint8
    flow (the only encoding that uses it)."""
    ran, here = record.store.get("params") or {}, samples.info.params
    arrays = set(samples.inputs.values())
    reads_flow, reads_steps = FLOW in arrays, bool(arrays & {FLOW, FRAMES})
    quantized = "uint8" in (ran.get("flow_dtype"), here.get("flow_dtype"))

    value = recorded_value
    methods_differ = value(ran, FLOW_METHOD) != value(here, FLOW_METHOD)

    def seen(key: str) -> bool:
        if key in FLOW_METHODS and methods_differ:  # said once, as flow_method
            return False
        if param_of_flow(key):
            return reads_flow and (key != "flow_bound" or quantized)
        return reads_steps or key not in STEP_PARAMS

    keys = dict.fromkeys([*ran, *here, *([FLOW_METHOD] if methods_differ else [])])
    def difference(key: str) -> str:
        if value(here, key) == NOT_RECORDED:
            return f"{key} not recorded, {shown_value(ran, key)} in the run's store"
        if value(ran, key) == NOT_RECORDED:
            return f"{key} {shown_value(here, key)}, not recorded in the run's store"
        return f"{key} {shown_value(here, key)}, not {shown_value(ran, key)}"

    return tuple(difference(key) for key in keys
                 if seen(key) and value(ran, key) != value(here, key))


def param_of_flow(param: str) -> bool:
    """Whether a store parameter is one of the flow's (its encoding, or an algorithm's
    settings)."""
    return param.startswith("flow") or param in FLOW_METHODS


def predict_run(run: str | Path, store: str | Path | None = None, split: str = "test", *,
                out: str | Path | None = None) -> RunPredictions:
    """Predict the `done` samples of `split` of `store` (default: the store the run trained
    on, where `metrics.json` says it was) with the run at `run`; `out`, the predictions file
    the caller will write, is checked once the store is open, before the model loads
    (`check_csv_output`).

    Raises:
        ModelConfigError: `run` is not a finished run directory, `split` not a split name,
            the store's samples are not of the shapes the model reads, or the store cannot
            give the run's views.
        ReportOutputError: `out` cannot be written, or is the store or lies in it or the run.
        DamagedRunError: the run's `model.keras` is damaged.
        NoSamplesError, WrongDatasetError, UnknownModelError, flowstore.errors.StoreError:
            as `open_run_samples` and `predict_samples`.
    """
    record = require_run(run, "run")
    check_split(split)
    location = store if store is not None else record.store.get("path")
    if store is None and not location:
        raise ModelConfigError(f"run {str(record.path)!r} records no store path; name one "
                               f"with --store")
    if store is None and not is_url(location) and not store_exists(location):
        # (said only "no store at PATH": a path the user never typed, and no way on)
        raise ModelConfigError(f"run {str(record.path)!r} was trained on the store at "
                               f"{location!r}, which is not there now; name it with --store")
    samples = open_run_samples(record, location)
    try:
        if out is not None:  # (after the store opens: a refusal made no folder)
            check_csv_output(out)
        not_built = samples.not_built(split)  # (before minutes of predicting)
        predictions = predict_samples(record, samples, split)
        other_samples = record.as_many_but_others(samples.done_samples())
        return RunPredictions(run=record, store=str(location),
                              fingerprint=samples.info.fingerprint, split=split,
                              predictions=predictions,
                              differences=extraction_differences(record, samples),
                              not_built=not_built,
                              other_samples=other_samples, recorded_place=store is None)
    finally:
        samples.store.close()


def check_csv_output(out: str | Path) -> None:
    """Refuse a predictions file that cannot be written, or would be written over a store or
    a run directory or into one (the store it predicts, the run it predicts with, or any
    other), before the model predicts (minutes on a large split).

    Raises:
        ReportOutputError: it cannot be written, or is one of those.
    """
    refuse_inside_a_run_or_store("--out", Path(out), "the predictions")
    check_output(Path(out), "the predictions", folder=False)


def write_csv(predictions: SplitPredictions, out: str | Path) -> Path:
    """Write `predictions.csv_text()` to `out`, whole or not at all (`write_whole`).

    Raises:
        ReportOutputError: the file cannot be written.
    """
    return write_whole(Path(out), predictions.csv_text(), "the predictions")


__all__: Sequence[str] = ["PREDICT_BATCH", "RunPredictions", "SplitPredictions",
                          "check_csv_output", "open_run_samples", "predict_run",
                          "predict_samples", "run_views", "write_csv"]
