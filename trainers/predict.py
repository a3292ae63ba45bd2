"""A trained run's predictions on a split of a store: `trainers predict` and the report's
confusion matrices.

A run's model scores any store that holds the arrays it reads at the shapes it reads: its own
store's test split (what `trainers report --html/--out` draws), another split of it, or another
store built with the same parameters from other clips (`flowstore build ... --source NEW`). A
clip is scored as the run scored its test split: a segment- or frame-views run by the mean of
its views' logits. Classes are matched by name, so a store of other (or fewer) classes is
scored too: its samples of a class the run never learnt are predicted but count in no
accuracy.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from flowstore.params import FLOW_METHODS
from flowstore.reader import ALL
from trainers.errors import ModelConfigError, ReportOutputError
from trainers.recipes import Recipe
from trainers.runs import RunRecord, require_run
from trainers.samples import SPLITS, StoreSamples, open_samples

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
        true_classes: each sample's class name as the store names it.
    """

    classes: tuple[str, ...]
    ids: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray
    true_classes: np.ndarray

    @property
    def known(self) -> np.ndarray:
        """Which samples are of a class the run knows (those an accuracy counts)."""
        return self.labels >= 0

    @property
    def correct(self) -> int:
        return int((self.predicted == self.labels)[self.known].sum())

    @property
    def accuracy(self) -> float | None:
        """Correct predictions over the samples of classes the run knows; None if none is."""
        known = int(self.known.sum())
        return self.correct / known if known else None

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
        """One row per sample: `id`, `label` (the store's class name), `predicted`, then the
        probability of each of the run's classes (`p_CLASS`)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "label", "predicted", *(f"p_{name}" for name in self.classes)])
        for k in range(self.ids.size):
            writer.writerow([self.ids[k], self.true_classes[k], self.classes[self.predicted[k]],
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
    #: How the store's extraction differs from that of the store the run trained on
    #: ("flow_bound 8.0, not 20.0"); empty when it does not.
    differences: tuple[str, ...]

    def summary(self) -> str:
        """One line: what was predicted from what, and the accuracy where there is one."""
        predictions = self.predictions
        own = (" (the run's own)" if self.fingerprint == self.run.fingerprint
               else f" (the run's: {self.run.fingerprint[:8]})")
        line = (f"{self.run.path.name}: {predictions.ids.size} {self.split} sample(s) of "
                f"{self.store}, store {self.fingerprint[:8]}{own}: ")
        unknown = sorted(set(predictions.true_classes[~predictions.known].tolist()))
        accuracy = predictions.accuracy
        if accuracy is None:
            line += "no accuracy (no sample is of a class the run knows)"
        else:
            line += (f"accuracy {accuracy:.4f} ({predictions.correct} of "
                     f"{int(predictions.known.sum())})")
        if unknown:
            line += (f"; {int((~predictions.known).sum())} sample(s) of class(es) the run does "
                     f"not know ({', '.join(map(repr, unknown))}) predicted, not counted")
        return line


def run_recipe(record: RunRecord) -> Recipe:
    """The recipe a run recorded, its unrecorded fields at their defaults."""
    try:
        return Recipe.from_record(record.metrics.get("recipe") or {})
    except (TypeError, ModelConfigError) as exc:
        raise ModelConfigError(f"run {str(record.path)!r} records no usable recipe "
                               f"({exc})") from None


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
    recipe = run_recipe(record)
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
    recipe = run_recipe(record)
    samples.require(split)
    from trainers.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    from flowstore.reader.tf import store_errors_raised
    from trainers.data import ClipViews, InputOptions, make_dataset
    from trainers.models import load_trained

    model = load_trained(record.model_file)
    _check_shapes(record, samples, recipe, model)
    views = ClipViews.of(samples, recipe.segment_views)
    dataset = make_dataset(samples, split, InputOptions(
        PREDICT_BATCH if views is None else max(1, PREDICT_BATCH // views.count),
        augment=views.every_view if views is not None else False))
    with store_errors_raised():
        if views is None:
            logits = np.asarray(keras.ops.convert_to_numpy(model.predict(dataset, verbose=0)),
                                dtype=np.float64)
        else:
            logits = views.clip_logits(model, dataset)[0].astype(np.float64)
    classes = run_classes(record, logits.shape[-1])
    rows = samples.split(split)
    store_classes = samples.info.classes or tuple(str(k) for k in range(samples.num_classes))
    true_classes = np.array([store_classes[label] for label in rows.labels], dtype=object)
    position = {name: k for k, name in enumerate(classes)}
    labels = np.array([position.get(name, -1) for name in true_classes], dtype=np.int64)
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return SplitPredictions(classes=classes, ids=np.asarray(rows.ids), labels=labels,
                            predicted=np.argmax(logits, axis=-1).astype(np.int64),
                            probabilities=probabilities.astype(np.float32),
                            true_classes=true_classes)


def run_classes(record: RunRecord, count: int) -> tuple[str, ...]:
    """The class names of the run's outputs: its store's classes, or their numbers where the
    run recorded none of the model's `count`."""
    recorded = tuple(str(name) for name in record.store.get("classes") or ())
    return recorded if len(recorded) == count else tuple(str(k) for k in range(count))


def _check_shapes(record: RunRecord, samples: StoreSamples, recipe: Recipe, model) -> None:
    """Refuse, in one line, a store whose samples are not of the shapes the model reads (its
    frame side or flow steps), before Keras fails deep inside `predict`."""
    wanted = {tensor.name: tuple(tensor.shape[1:]) for tensor in model.inputs}
    given = samples.input_shapes(recipe)
    for name, shape in given.items():
        if name in wanted and tuple(wanted[name]) != tuple(shape):
            raise ModelConfigError(
                f"store {str(samples.store.path)!r} gives {record.model}'s {name!r} input "
                f"samples of shape {tuple(shape)}; run {record.path.name!r} reads "
                f"{tuple(wanted[name])} (build the store with the run's --size and --steps)")


def extraction_differences(record: RunRecord, samples: StoreSamples) -> tuple[str, ...]:
    """How the store's extraction parameters differ from those of the run's store, as
    "resize 'center-crop', not 'unset'" phrases: samples the model reads extracted otherwise
    (another flow algorithm, resize or decoder) are not what it learnt from, though they have
    its shapes. A model that reads no flow is not told of the flow's parameters."""
    ran, here = record.store.get("params") or {}, samples.info.params
    return tuple(f"{key} {here.get(key, 'unset')!r}, not {ran.get(key, 'unset')!r}"
                 for key in dict.fromkeys([*ran, *here])
                 if ran.get(key) != here.get(key)
                 and (samples.entry.reads_flow or not _describes_flow(key)))


def _describes_flow(param: str) -> bool:
    """Whether a store parameter is one of the flow's (its encoding, or an algorithm's
    settings), which a model reading frames alone does not see."""
    return param.startswith("flow") or param in FLOW_METHODS


def predict_run(run: str | Path, store: str | Path | None = None,
                split: str = "test") -> RunPredictions:
    """Predict the `done` samples of `split` of `store` (default: the store the run trained
    on, where `metrics.json` says it was) with the run at `run`.

    Raises:
        ModelConfigError: `run` is not a finished run directory, `split` not a split name,
            the store's samples are not of the shapes the model reads, or the store cannot
            give the run's views.
        DamagedRunError: the run's `model.keras` is damaged.
        NoSamplesError, WrongDatasetError, UnknownModelError, flowstore.errors.StoreError:
            as `open_run_samples` and `predict_samples`.
    """
    record = require_run(run, "run")
    if split not in (*SPLITS, ALL):
        raise ModelConfigError(f"--split must be one of {', '.join((*SPLITS, ALL))}, got "
                               f"{split!r}")
    location = store if store is not None else record.store.get("path")
    if not location:
        raise ModelConfigError(f"run {str(record.path)!r} records no store path; name one "
                               f"with --store")
    samples = open_run_samples(record, location)
    try:
        predictions = predict_samples(record, samples, split)
        return RunPredictions(run=record, store=str(location),
                              fingerprint=samples.info.fingerprint, split=split,
                              predictions=predictions,
                              differences=extraction_differences(record, samples))
    finally:
        samples.store.close()


def check_csv_output(out: str | Path) -> None:
    """Refuse a predictions file that cannot be written before the model predicts (minutes on
    a large split), as `trainers report` checks its outputs.

    Raises:
        ReportOutputError: it cannot be written.
    """
    from trainers.html_report import check_output

    check_output(Path(out), "the predictions", folder=False)


def write_csv(predictions: SplitPredictions, out: str | Path) -> Path:
    """Write `predictions.csv_text()` to `out` whole or not at all (a temporary file renamed
    over it), so a failure leaves no half-written file and an earlier one as it was.

    Raises:
        ReportOutputError: the file cannot be written.
    """
    out = Path(out)
    text = predictions.csv_text()
    try:
        handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.",
                                             suffix=".partial")
    except OSError as exc:
        raise ReportOutputError(f"cannot write {str(out)!r} "
                                f"({exc.strerror or exc})") from None
    try:
        with os.fdopen(handle, "w", newline="") as file:
            file.write(text)
        os.replace(temporary, out)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ReportOutputError(f"cannot write {str(out)!r} "
                                f"({exc.strerror or exc})") from None
    return out


__all__: Sequence[str] = ["PREDICT_BATCH", "RunPredictions", "SplitPredictions",
                          "check_csv_output", "open_run_samples", "predict_run",
                          "predict_samples", "write_csv"]
