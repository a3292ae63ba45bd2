"""Train one model on one store into a run directory (the Keras half of `trainers run`).

The best epoch is the one with the lowest validation loss (the report picks a "convergence"
epoch by eye, mostly from the loss curves; the minimum validation loss is the reproducible
version of that). Its weights are restored before the model is evaluated on the test split and
saved, so `model.keras`, the test numbers and Table 1's row all describe the same weights.
Before each validation the BatchNorm statistics are recomputed on training batches
(`RecalibrateBatchNorm`), so that validation, the choice of the best epoch and the test all
score the weights in inference mode with statistics that belong to them.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import keras
import numpy as np

from flowstore.command import stop_requested
from flowstore.progress import progress_bar, shows_progress
from flowstore.reader import ALL
from trainers.curves import curves_title, plot_curves
from trainers.backend import device_name
from trainers import resume
from trainers.data import (Batches, ClipViews, EpochNumber, FirstBatches, InputOptions,
                           make_dataset, recipe_augmentation)
from trainers.errors import (DamagedRunError, ModelConfigError, RunWriteError,
                             TrainingDivergedError)
from trainers.models import fine_tune_transferred, load_trained, parameter_counts
from trainers.recipes import Recipe
from trainers.report import chain_from_scratch
from trainers.runs import (CURVES_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, DoneSamples,
                           RunRecord, RunWriter, read_run, write_json)
from trainers.samples import StoreSamples

Echo = Callable[[str], None]


@dataclass(frozen=True)
class TrainOptions:
    """Run options that are not part of a model's recipe."""

    seed: int = 0
    augment: bool = False
    mixed_precision: bool = False
    #: Per-epoch lines and per-step progress (`trainers run --quiet` turns them off).
    progress: bool = True
    #: Where the run's resume points go (`trainers.resume`; None: none saved).
    resume_folder: Path | None = None
    #: Go on from a resume point found there (False: train from the first epoch, `--retrain`).
    resume: bool = True


def precision_policy(mixed_precision: bool, device: str) -> str:
    """The Keras dtype policy a run computes in.

    mixed_float16 is the GPU policy. TensorFlow has no float16 CPU kernel for MaxPool3D (the
    flow model's pooling), so on a CPU-only machine mixed precision uses mixed_bfloat16, which
    Keras recommends for CPUs anyway.
    """
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if device == "GPU" else "mixed_bfloat16"


def computed_as(mixed_precision: bool) -> dict[str, str]:
    """How a run trained here computes, as its `metrics.json` records it and a run to reuse
    must match (`trainers.runs.TRAINING_FIELDS`): the dtype policy `--mixed-precision` gives on
    this machine's device (float16 on a GPU, bfloat16 on a CPU: other weights, so a CPU run no
    longer stands in for a GPU one) and the Keras backend (whose seeded shuffles differ, so
    the same seed is another run on another backend)."""
    return {"dtype_policy": precision_policy(mixed_precision, device_name()),
            "keras_backend": keras.backend.backend()}


class BestEpoch(keras.callbacks.Callback):
    """Remember the epoch with the lowest `monitor` value and restore its weights at the end;
    of epochs tied at it, the first (the fewest updates, as Keras' own `ModelCheckpoint` with
    `save_best_only` keeps).

    An epoch whose weights are not all finite never wins: a diverged network (NaN weights, as
    bfloat16 training of the frame CNN on a CPU produced by its first epochs) can still report
    a finite loss, since TensorFlow's CPU ReLU and max-pool kernels turn NaN into a constant
    output, and would be restored and scored at chance as if it were a model.
    """

    def __init__(self, monitor: str | None) -> None:
        """`monitor`: the logged value whose lowest epoch wins; None: the last epoch wins (a
        run that has nothing to choose by that belongs to the weights it saves)."""
        super().__init__()
        self.monitor = monitor
        self.best_value = math.inf
        self.best_epoch: int | None = None  # 1-based
        self.best_logs: dict[str, float] = {}
        self._best_weights: list | None = None
        #: The first epoch (1-based) that would have won but whose weights were not finite.
        self.diverged_at: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        value = -float(epoch) if self.monitor is None else float(logs.get(self.monitor, math.nan))
        improved = value < self.best_value  # NaN never wins, but its weights are looked at
        if not (improved or math.isnan(value)):
            return
        weights = self.model.get_weights()
        # (every float kind: bfloat16, ml_dtypes' own, is numpy kind "V")
        if not all(np.isfinite(w).all() for w in weights if w.dtype.kind not in "biu"):
            self.diverged_at = self.diverged_at or epoch + 1
        elif improved:
            self.best_value = value
            self.best_epoch = epoch + 1
            self.best_logs = {k: float(v) for k, v in logs.items()}
            self._best_weights = weights

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)

    @property
    def best_weights(self) -> list | None:
        return self._best_weights

    def state(self) -> dict[str, Any]:
        """What it knows, but the best weights, as JSON (`trainers.resume`)."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch,
                "best_logs": self.best_logs, "diverged_at": self.diverged_at}

    def restore(self, state: dict[str, Any], weights: list | None) -> None:
        """Know again what `state()` and `best_weights` said, as a run goes on
        (`trainers.resume`)."""
        self.best_value = float(state["best_value"])
        self.best_epoch = state["best_epoch"]
        self.best_logs = {k: float(v) for k, v in state["best_logs"].items()}
        self.diverged_at = state["diverged_at"]
        self._best_weights = weights


#: Training samples the BatchNorm statistics are recomputed on before each validation (at most:
#: a smaller training split is used whole). 512 samples pin a channel's mean to within about
#: 5% of its spread; on Stanford-40 they are 64 forward passes against 450 training steps.
BN_RECALIBRATION_SAMPLES = 512


def trainable_batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNormalization layers of `model` (nested models included) that training updates.

    Frozen ones (a transferred stream) run in inference mode during training, so their
    statistics are the earlier run's and stay as they are.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += trainable_batch_norms(layer)
    return found


def recalibrate_batch_norm(model: keras.Model, batches: Iterable) -> int:
    """Set the moving statistics of `model`'s trainable BatchNorm layers to the population
    statistics of `batches`, leaving every other weight as it is.

    Why: Keras' moving averages (momentum 0.99) need a few hundred steps to forget their start
    and trail the weights they normalise for; with few steps per epoch (34 on a small store,
    450 on Stanford-40 while the weights still move fast) inference-mode outputs then use
    statistics of no network that ever existed, and the validation score -- hence the best
    epoch -- and the test score measure that instead of the model.

    How: a forward pass in training mode per batch (the layers below normalise with batch
    statistics, exactly as in training) with momentum 0, so that after each batch a layer's
    moving mean and variance are that batch's; these are accumulated as sums of x and x^2 and
    finally set to the mean and variance over all samples (and positions) seen. Dropout runs
    too but only adds noise after the layers it feeds, and nothing is trained.

    Args:
        model: the model; its trainable BatchNorm layers are updated.
        batches: `(inputs, label)` training batches, the training batch size.

    Returns:
        The number of samples the statistics were computed on (0: nothing changed).
    """
    norms = trainable_batch_norms(model)
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    sums = [np.zeros(layer.moving_mean.shape, np.float64) for layer in norms]
    squares = [np.zeros(layer.moving_mean.shape, np.float64) for layer in norms]
    seen = 0
    try:
        for layer in norms:
            layer.momentum = 0.0  # read on every call (eager), so a batch's stats replace them
        for inputs, _ in batches:
            model(inputs, training=True)
            count = int(keras.ops.shape(keras.tree.flatten(inputs)[0])[0])
            seen += count
            for layer, total, total_sq in zip(norms, sums, squares):
                mean = keras.ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
                var = keras.ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
                total += count * mean
                total_sq += count * (var + mean ** 2)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    if seen:
        for layer, total, total_sq in zip(norms, sums, squares):
            mean = total / seen
            layer.moving_mean.assign(mean.astype("float32"))
            layer.moving_variance.assign(np.maximum(total_sq / seen - mean ** 2, 0.0)
                                         .astype("float32"))
    return seen


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Recompute the BatchNorm statistics once per epoch, after training and before validation.

    Keras validates inside `fit` before `on_epoch_end`, announcing it with `on_test_begin`; the
    statistics are recomputed there, so validation scores the weights as `evaluate` on the test
    split will (inference mode, population statistics), and a snapshot taken in `on_epoch_end`
    (`BestEpoch`, listed after this) holds the statistics its validation score was measured
    with. Without a validation split it happens in `on_epoch_end`.

    Args:
        batches: returns a fresh iterable of training batches (a seeded shuffled subset).
    """

    def __init__(self, batches: Callable[[], Iterable]) -> None:
        super().__init__()
        self.batches = batches
        self._done = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._done = False

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._recalibrate()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._recalibrate()

    def _recalibrate(self) -> None:
        if not self._done:
            recalibrate_batch_norm(self.model, self.batches())
            self._done = True


class EpochLine(keras.callbacks.Callback):
    """One progress line per epoch (Keras' own bar is one line per batch on a non-TTY)."""

    def __init__(self, model_name: str, epochs: int, echo: Echo) -> None:
        super().__init__()
        self.model_name, self.epochs, self.echo = model_name, epochs, echo
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        parts = [f"{key} {logs[key]:.4f}" for key in
                 ("loss", "accuracy", "val_loss", "val_accuracy") if key in logs]
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.echo(f"{self.model_name} epoch {epoch + 1}/{self.epochs}: {', '.join(parts)}, "
                  f"lr {lr:.2g} ({time.perf_counter() - self._start:.1f}s)")


#: A training epoch of at least this many steps reports its steps when stderr is not a
#: terminal, one line per quarter of the epoch; shorter epochs take seconds and the epoch line
#: says enough. On a terminal every epoch has a bar.
STEP_LINES_MIN_STEPS = 20
STEP_LINES_PER_EPOCH = 4


class StepProgress(keras.callbacks.Callback):
    """The steps of each training epoch, so that an epoch of minutes is not silent.

    On a terminal: a bar on stderr per epoch (`flowstore.progress`), removed when the epoch ends
    and its `EpochLine` is printed. Otherwise (a log file, CI): a line at each quarter of an
    epoch of at least `STEP_LINES_MIN_STEPS` steps, and no bar (carriage returns make a log
    unreadable).
    """

    def __init__(self, model_name: str, epochs: int, steps: int, echo: Echo) -> None:
        super().__init__()
        self.model_name, self.epochs, self.steps, self.echo = model_name, epochs, steps, echo
        self.every = (math.ceil(steps / STEP_LINES_PER_EPOCH)
                      if steps >= STEP_LINES_MIN_STEPS else 0)
        self._bar: Any = None
        self._epoch = 0
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch, self._start = epoch + 1, time.perf_counter()
        if shows_progress():
            self._bar = progress_bar(total=self.steps, unit="step", leave=False,
                                     desc=f"{self.model_name} epoch {self._epoch}/{self.epochs}")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        done = batch + 1
        if self._bar is not None:
            self._bar.update(1)
        elif self.every and done % self.every == 0 and done < self.steps:
            loss = (logs or {}).get("loss")
            self.echo(f"{self.model_name} epoch {self._epoch}/{self.epochs}: step "
                      f"{done}/{self.steps}" + ("" if loss is None else f", loss {loss:.4f}")
                      + f" ({time.perf_counter() - self._start:.1f}s)")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class StopWhenAsked(keras.callbacks.Callback):
    """Raise again a Ctrl-C or SIGTERM that Keras swallowed (`flowstore.command.
    stop_requested`): at the end of each batch and epoch of `fit`, `evaluate` and `predict`,
    so the command stops as on any other Ctrl-C (no run written; its resume point kept, listed
    after the saver so a finished epoch's point is saved first)."""

    def _stop_if_asked(self, *args: Any, **kwargs: Any) -> None:
        stop_if_asked()

    on_train_batch_end = on_test_batch_end = on_predict_batch_end = on_epoch_end = _stop_if_asked


def stop_if_asked() -> None:
    """A Ctrl-C or SIGTERM that reached the command, raised (again) here."""
    if stop_requested():
        raise KeyboardInterrupt


class ViewScores(keras.callbacks.Callback):
    """Validation under segment (or frame) views: each epoch's `val_loss` and `val_accuracy`
    are the clip scores of `clip_scores`, written into the epoch's logs, so `BestEpoch`, the
    history and the epoch line use them. List it after `RecalibrateBatchNorm` (which, with no
    Keras validation, recalibrates in `on_epoch_end`) and before `BestEpoch`."""

    def __init__(self, views: ClipViews, validation: Batches) -> None:
        super().__init__()
        self.views, self.validation = views, validation

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            scores = clip_scores(self.model, self.views, self.validation)
            logs["val_loss"], logs["val_accuracy"] = scores["loss"], scores["accuracy"]


def clip_scores(model: keras.Model, views: ClipViews,
                dataset: Batches) -> dict[str, float]:
    """The compiled loss and the accuracy of each clip scored by the mean of its views'
    logits (`ClipViews.clip_logits`), as `model.evaluate` scores single samples."""
    logits, labels = views.clip_logits(model, dataset)
    loss = float(keras.ops.convert_to_numpy(model.loss(labels, logits)))
    return {"loss": loss, "accuracy": float((logits.argmax(axis=-1) == labels).mean())}


def build_for_store(samples: StoreSamples, bases: dict[str, RunRecord | None],
                    recipe: Recipe) -> tuple[keras.Model, bool]:
    """The model to train, shaped for the store (one segment per per-step input under segment
    views) and its classes, started from the base runs.

    Returns:
        The model and whether its feature layers start from scratch (no base run).
    """
    models = {name: (load_trained(run.model_file) if run is not None else None)
              for name, run in bases.items()}
    model = samples.entry.factory(samples.input_shapes(recipe), samples.num_classes, models,
                                  recipe)
    return model, all(base is None for base in models.values())


@keras.saving.register_keras_serializable(package="trainers")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on logits against integer labels with label smoothing (Keras' sparse loss
    has no smoothing): the label is one-hot encoded and `smoothing` of it spread evenly."""

    def __init__(self, smoothing: float, name: str = "smoothed_sparse_crossentropy",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)),
                                   classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(labels, y_pred, from_logits=True,
                                                     label_smoothing=self.smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smoothing": self.smoothing}


def compiled(model: keras.Model, recipe: Recipe, policy: str) -> keras.Model:
    """Compile with the recipe's optimizer and loss: the report's Adam and sparse CE on logits,
    or AdamW (decoupled weight decay) and label smoothing where a tuned recipe asks."""
    average = dict(use_ema=True, ema_momentum=recipe.ema_momentum) if recipe.ema_momentum else {}
    if recipe.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate=recipe.learning_rate,
                                           weight_decay=recipe.weight_decay, **average)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=recipe.learning_rate, **average)
    if policy == "mixed_float16":  # float16 gradients underflow without loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    loss = (SmoothedSparseCrossentropy(recipe.label_smoothing) if recipe.label_smoothing
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # The accuracy metric as an object and the optimizer built here, not by name and at the
    # first step: on TensorFlow, Keras otherwise creates their variables while it traces the
    # training step, and a traced function that created variables is traced a second time.
    # That second trace cost 1-1.5 s of CPU a run (a fifth of a tiny run's time), and the
    # weights trained are the same either way.
    model.compile(optimizer=optimizer, loss=loss,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.optimizer.build(model.trainable_variables)
    return model


def train_model(model_name: str, samples: StoreSamples, recipe: Recipe, options: TrainOptions,
                runs_dir: str | os.PathLike, *, bases: dict[str, RunRecord | None] | None = None,
                echo: Echo = print) -> RunRecord:
    """Train `model_name` on `samples`' train split and write a finished run directory.

    Args:
        model_name: the model's catalogue name.
        samples: the store's samples for that model.
        recipe: optimizer, batch size, epochs, schedule.
        options: seed, augmentation, mixed precision.
        runs_dir: where the run directory goes.
        bases: runs this model starts from or freezes, by model name (its catalogue entry's
            `transfers_from`, each may be None, and `requires`).
        echo: where progress lines go.

    Returns:
        The record of the published run directory.
    """
    bases = bases or {}
    if recipe.fine_tune_base and not samples.entry.transfers_from:
        raise ModelConfigError(f"fine_tune_base: {model_name} transfers from no base model")
    samples = samples.for_recipe(recipe)  # checks the recipe against the store
    done = samples.done_samples()
    counts_per_split = dict(done.counts)
    samples.require("train")
    not_built = samples.not_built(ALL)
    if not_built.total:
        print(f"warning: {not_built.total} of {samples.reader.done.size} samples of the store "
              f"are not built ({not_built.why()}); {model_name} trains and is scored on the "
              f"{sum(counts_per_split.values())} that are", file=sys.stderr)
    if not counts_per_split["val"]:
        # The training loss is the last steps' weights', not the average's that an EMA run
        # would save: it keeps its last epoch, the average of the most steps.
        chooses = ("keeps its last epoch's averaged weights (the training loss is not theirs)"
                   if recipe.ema_momentum else "picks its best epoch by training loss")
        print(f"warning: no finished 'val' sample; {model_name} {chooses}", file=sys.stderr)

    keras.backend.clear_session()
    keras.utils.set_random_seed(options.seed)
    device = device_name()
    policy = precision_policy(options.mixed_precision, device)
    if policy == "mixed_bfloat16":
        print("warning: no GPU; --mixed-precision uses mixed_bfloat16 (float16 is a GPU's: "
              "Keras advises bfloat16 on CPUs, and TensorFlow has no float16 CPU kernel for "
              "3D pooling)", file=sys.stderr)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model, from_scratch = build_for_store(samples, bases, recipe)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    if recipe.fine_tune_base and not from_scratch:
        fine_tune_transferred(model)
    compiled(model, recipe, policy)
    counts = parameter_counts(model)
    echo(f"{model_name}: {counts_per_split['train']} train / {counts_per_split['val']} val / "
         f"{counts_per_split['test']} test samples, {counts['trainable']:,} trainable "
         f"parameters, {device}, {policy}")
    point = None
    if options.resume_folder is not None:
        if options.resume:
            point = resume.load(options.resume_folder)
        else:
            resume.discard(options.resume_folder)  # (--retrain: from the first epoch)
    best = BestEpoch("val_loss" if counts_per_split["val"]
                     else None if recipe.ema_momentum else "loss")
    if point is not None:
        try:
            best.restore(point.best, resume.restore(model, point))
        except (ValueError, KeyError, TypeError, OSError) as exc:  # (saved by another release)
            raise DamagedRunError(f"cannot go on from the resume point in "
                                  f"{str(point.folder)!r} ({exc}); delete it to train "
                                  f"{model_name} from the first epoch") from None
        echo(resume.going_on_line(model_name, point, recipe.epochs))
    first_epoch = point.epochs if point is not None else 0

    augmentation: Any = options.augment  # the report's recipes: flips or nothing, as always
    if recipe.augments:
        augmentation = recipe_augmentation(recipe, samples.split("train").motion_keys,
                                           flip=options.augment)
    # Segment (or frame) views: training and calibration batches are one random segment (frame)
    # per clip; validation and test batches every one of a clip, scored by their mean
    # (`ViewScores`).
    views = ClipViews.of(samples, recipe.segment_views)
    plain: Any = False
    if views is not None:
        plain = views.random_view
        augmentation = views.random_then(samples.split("train").augmentation(augmentation))

    epoch_number = EpochNumber()

    def stream(split: str, train: bool = False, seed: int = options.seed,
               augment: Any = augmentation) -> Batches:
        if not train:  # scored: plain samples, or every view of each clip
            augment = views.every_view if views is not None else False
        return make_dataset(samples, split, InputOptions(
            batch_size=recipe.batch_size, shuffle=train, augment=augment, seed=seed,
            epoch=epoch_number.variable if train else None))

    callbacks: list[keras.callbacks.Callback] = [epoch_number]
    if recipe.ema_momentum:
        # First in the list: the averaged weights are in the model before the BatchNorm
        # statistics are recomputed for validation, and at each epoch's end, where `BestEpoch`
        # snapshots them (the last step's weights come back at the next epoch's start).
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    calibration_samples, calibration = 0, None
    if trainable_batch_norms(model):
        # A seeded subset of the training split, in a new order (hence a new subset) each epoch.
        batches = math.ceil(BN_RECALIBRATION_SAMPLES / recipe.batch_size)
        # A tuned recipe's crops and colour jitter shift the statistics that inference (on
        # plain samples) should use, so its calibration batches are not augmented; flips alone
        # (the report's recipes with `--augment`) leave them as they are in expectation.
        calibration = FirstBatches(stream("train", train=True, seed=options.seed + 2,
                                          augment=plain if recipe.augments else augmentation),
                                   batches)
        callbacks.append(RecalibrateBatchNorm(lambda: calibration))
        calibration_samples = min(batches * recipe.batch_size, counts_per_split["train"])
    if recipe.scheduled:
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: recipe.learning_rate_at(epoch)))
    validation = stream("val") if counts_per_split["val"] else None
    if views is not None and validation is not None:
        # Keras' own validation would score single views: scored here instead, into the
        # epoch's logs before `BestEpoch` reads them (after the BatchNorm recalibration).
        callbacks.append(ViewScores(views, validation))
        validation = None
    callbacks.append(best)
    if options.progress:
        steps = math.ceil(counts_per_split["train"] / recipe.batch_size)
        callbacks += [StepProgress(model_name, recipe.epochs, steps, echo),
                      EpochLine(model_name, recipe.epochs, echo)]
    saver = None
    if options.resume_folder is not None:
        saver = resume.SaveResumePoints(options.resume_folder, best, point)
        callbacks.append(saver)
    callbacks.append(StopWhenAsked())
    train = stream("train", train=True)
    EpochNumber.go_on_from(first_epoch, train, calibration)
    started = time.perf_counter()
    fitted = model.fit(train, validation_data=validation, initial_epoch=first_epoch,
                       epochs=recipe.epochs, verbose=0, callbacks=callbacks,
                       shuffle=False)  # the dataset shuffles itself, seeded
    # (the saver's go on from the epochs trained before a stop, if any)
    history = dict(fitted.history) if saver is None else saver.history
    train_seconds = time.perf_counter() - started if saver is None else saver.train_seconds
    if best.best_epoch is None and best.diverged_at is not None:
        resume.discard(options.resume_folder)  # (going on would diverge again)
        hint = ("; --mixed-precision on a CPU computes in bfloat16: try without it"
                if policy == "mixed_bfloat16" else "; try a lower learning rate")
        raise TrainingDivergedError(
            f"{model_name} diverged: none of its {len(history.get('loss', []))} "
            f"epochs ended with finite weights (NaN or infinite from epoch {best.diverged_at})"
            f"{hint}; no {model_name} run was written")

    if best.best_epoch is None and best.monitor is not None:  # (finite weights, NaN scores)
        print(f"warning: no epoch of {model_name} scored a finite {best.monitor} (a sample of "
              f"the val split holds NaN or infinite values?): the last epoch is kept, as the "
              f"run records", file=sys.stderr)
    test: dict[str, Any] | None = None
    if counts_per_split["test"]:
        result = (model.evaluate(stream("test"), verbose=0, return_dict=True,
                                 callbacks=[StopWhenAsked()]) if views is None
                  else clip_scores(model, views, stream("test")))
        test = {"accuracy": float(result["accuracy"]), "loss": float(result["loss"]),
                "samples": counts_per_split["test"]}
        if views is not None:
            test["views"] = views.count
    else:
        print(f"warning: no finished 'test' sample; {model_name} is not evaluated",
              file=sys.stderr)

    metrics = {
        **run_identity(model_name, samples, recipe, options, bases, done),
        "device": device,
        "test": test,
        "params": counts,
        # BatchNorm statistics recomputed on this many training samples before each validation
        # (0: the model trains no BatchNorm layer).
        "bn_recalibration_samples": calibration_samples,
        "train_seconds": round(train_seconds, 3),
    }
    if point is not None:  # (the same weights as an unstopped run: said, not compared)
        metrics["resumed_at_epoch"] = point.epochs
    stop_if_asked()  # (one swallowed in the last logs `evaluate` made, after its last batch)
    record = write_run(runs_dir, model, history, best, metrics)
    resume.discard(options.resume_folder)
    return record


def run_identity(model_name: str, samples: StoreSamples, recipe: Recipe, options: TrainOptions,
                 bases: dict[str, RunRecord | None], done: DoneSamples) -> dict[str, Any]:
    """What a run's `metrics.json` says of what it is, apart from how it scored: its model,
    store and samples, training and bases; all that a later run asks of it to reuse it
    (`trainers.runs.find_run`) and the report groups it by."""
    return {
        "model": model_name,
        "store": samples.info.to_dict(),
        "recipe": recipe.to_dict(),
        "seed": options.seed,
        "augment": options.augment,
        "mixed_precision": options.mixed_precision,
        **computed_as(options.mixed_precision),
        "samples": dict(done.counts),
        "samples_digest": done.digest,
        "columns_digest": done.columns,
        # (what the report's tables say of it; `build_for_store`'s `from_scratch` says whether
        # this model's own feature layers started from nothing)
        "from_scratch": chain_from_scratch(model_name, bases),
        "bases": {name: (str(run.path.resolve()) if run is not None else None)
                  for name, run in bases.items()},
    }


def write_run(runs_dir: str | os.PathLike, model: keras.Model,
              history: dict[str, list[float]], best: BestEpoch,
              metrics: dict[str, Any]) -> RunRecord:
    """Save model, history, curves and metrics into a new run directory and publish it.

    The run is read back (`read_run`) before it is published: one that would not read as a
    run (metrics of types no run has: a flowstore bug, or a store's attributes of the wrong
    types recorded as they are) is never left in `runs_dir`, where `trainers report` and the
    prerequisite lookup skip it and its whole model stayed (the README promises nothing of a
    failed run is left).

    Raises:
        RunWriteError: the run cannot be written (a full disk); nothing of it is left.
        RuntimeError: it was written but does not read back as a run (an internal error);
            nothing of it is left.
    """
    try:
        published = _write_run(runs_dir, model, history, best, metrics)
    except OSError as exc:
        raise RunWriteError(f"cannot write the {metrics['model']} run into "
                            f"{str(runs_dir)!r} ({exc.strerror or exc}); no "
                            f"{metrics['model']} run was written") from exc
    record = read_run(published)
    if record is None:  # (read back before it was published: gone since, by another hand)
        raise RunWriteError(f"the {metrics['model']} run written to {str(published)!r} is "
                            f"gone or changed since it was written")
    return record


def _write_run(runs_dir: str | os.PathLike, model: keras.Model,
               history: dict[str, list[float]], best: BestEpoch,
               metrics: dict[str, Any]) -> Path:
    store = metrics["store"]
    with RunWriter(runs_dir, metrics["model"], store["fingerprint"]) as writer:
        model.save(writer.work / MODEL_FILE)
        epochs_run = len(history.get("loss", []))
        per_epoch = {key: [float(v) for v in values] for key, values in history.items()}
        per_epoch["epoch"] = list(range(1, epochs_run + 1))
        write_json(writer.work / HISTORY_FILE, per_epoch)
        best_epoch = best.best_epoch or epochs_run  # every epoch NaN: keep the last
        logs = best.best_logs or {k: v[-1] for k, v in per_epoch.items() if k != "epoch" and v}
        plot_curves(per_epoch, writer.work / CURVES_FILE, best_epoch=best_epoch,
                    title=curves_title(metrics))
        size = (writer.work / MODEL_FILE).stat().st_size
        write_json(writer.work / METRICS_FILE, {
            **metrics,
            "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "selection": (f"min {best.monitor}" if best.monitor and best.best_epoch
                          else f"last epoch (no finite {best.monitor})" if best.monitor
                          else "last epoch"),
            "best_epoch": best_epoch,
            "epochs_run": epochs_run,
            "best": {
                "train_accuracy": logs.get("accuracy"),
                "train_loss": logs.get("loss"),
                "val_accuracy": logs.get("val_accuracy"),
                "val_loss": logs.get("val_loss"),
            },
            "model_size_bytes": size,
            "model_size_gb": size / 1e9,
        })
        if read_run(writer.work) is None:  # (raised inside: the writer removes the folder)
            raise RuntimeError(f"the {metrics['model']} run does not read back as a run (its "
                               f"metrics.json is not of a run's types); no "
                               f"{metrics['model']} run was written")
        return writer.publish()
