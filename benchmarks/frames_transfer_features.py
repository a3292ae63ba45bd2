"""Why the transferred TV-HI frame model sits at chance: what its frozen Stanford-40 features hold.

The frame model (`build_tvhi_frames`) is the conv part of a Stanford-40 run, frozen, up to its
Flatten (512 features at 224 px), under a new head Dense 30 -> Dropout -> Dense 30 -> Dropout
-> Dense 4. A test loss of ln 4 = 1.386 means its logits hardly vary between clips. This
script tells the possible causes apart on a store's `train` and `val` middle frames (never
`test`: nothing here may choose anything by the test split):

1. bugs: the frozen part of each `--frames` run equals the base run's weights; the frozen
   features are the same in training and inference mode (the base's BatchNorm layers keep
   the base's statistics); each store's pixel range and channel means (`--control-store`).
2. dead or constant units: per base layer, the share of channels that are zero on every frame,
   the share of zero activations and the mean.
3. class information: how well the classes separate in the frozen features, by repeated k-fold
   cross-validation over train + val (nearest class centroid, and an L2 logistic regression on
   standardised features), beside honest baselines: the same probes on the features of a freshly
   initialised (untrained) base, on 16 x 16 mean pixels, on the base's features with BatchNorm
   statistics recomputed on these frames (AdaBN, for a Stanford-40 / TV-HI statistics
   mismatch), and on the frozen features with the labels shuffled (`--permutations` shuffles:
   the chance level of this probe on this data, mean and 95th percentile). `--control-store`
   runs the same probes on as many images of the same number of the base's own classes from
   that Stanford-40 store's `val`/`test` splits: a positive control that the probe finds class
   information where the base learnt some.
4. each `--frames` run's head: dead units, spread across clips of each head layer, how far its
   biases moved from their initial 0, its logits' mean loss, and which classes it predicts.
5. `--head-lr`: the frame model's own head (its layers, freshly initialised) trained alone on
   the cached frozen features (no augmentation: the features are what the model sees), batch 2,
   Adam at each learning rate, k-fold over train + val: training loss and accuracy after the
   last epoch, held-out accuracy and loss after the last epoch and at the epoch of lowest
   held-out loss (optimistic: a run picks its epoch on val the same way).
6. `--tuned-cv`: the whole frame model trained as `trainers run frames --recipe tuned` trains
   it (the `frames` row of `TUNED_RECIPES`: augmentation, AdamW, label smoothing, warm-up and
   cosine decay, its epochs, batch 2), k-fold over train + val, with the base frozen (the
   report's transfer) and fine-tuned (`fine_tune_base`: the convolutions train too, their
   BatchNorm statistics stay the base's): held-out accuracy and loss after the last epoch,
   where the schedule has run out. This is how the tuned recipe chose between the two: on 100
   clips instead of the 10 of `val`. With `--frame-views`, two more rows: the same, but trained
   on a random one of each clip's stored frames (`frames`, T a clip) every epoch and a held-out
   clip scored by the mean of its T frames' logits (the two-stream paper's spatial stream: one
   random frame a video in training, frames averaged at test): the same number of steps as
   the middle-frame rows, over up to T times as many distinct frames.

    python benchmarks/frames_transfer_features.py --store tvhi.zarr \\
        --base runs/stanford40-... --frames runs/frames-... --control-store s40_224.zarr \\
        --head-lr 1e-4 --head-lr 1e-3 --head-lr 1e-2 --tuned-cv --frame-views
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refuse, refusing_bad_input  # noqa: E402  (shared)

Probe = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]

#: L2 weight of the logistic-regression probe on standardised features (fixed, not tuned).
PROBE_L2 = 0.1
HEAD_LAYERS = ("head_dense_0", "head_dense_1", "logits")


def read_split_frames(samples, splits: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The model inputs (one array) and labels of the done samples of `splits`."""
    indices = np.concatenate([samples.indices(split) for split in splits])
    images = np.stack([samples.read_sample(int(i))[0] for i in indices])
    return images, samples.labels[indices]


def standardised(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, spread = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / spread, (other - mean) / spread


def centroid_probe(train: np.ndarray, labels: np.ndarray, held: np.ndarray,
                   classes: int) -> np.ndarray:
    """Nearest class mean in standardised features."""
    a, b = standardised(train, held)
    centres = np.stack([a[labels == k].mean(0) if np.any(labels == k)
                        else np.full(a.shape[1], np.inf) for k in range(classes)])
    return ((b[:, None] - centres[None]) ** 2).sum(-1).argmin(1)


def logistic_probe(train: np.ndarray, labels: np.ndarray, held: np.ndarray, classes: int,
                   *, l2: float = PROBE_L2, steps: int = 300, rate: float = 0.5) -> np.ndarray:
    """Multinomial logistic regression, full-batch gradient descent on standardised features."""
    a, b = standardised(train, held)
    weights = np.zeros((a.shape[1], classes))
    bias = np.zeros(classes)
    targets = np.eye(classes)[labels]
    for _ in range(steps):
        z = a @ weights + bias
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        grad = (p - targets) / len(a)
        weights -= rate * (a.T @ grad + l2 * weights)
        bias -= rate * grad.sum(0)
    return (b @ weights + bias).argmax(1)


def folds(count: int, k: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(count), k)


def cv_accuracy(features: np.ndarray, labels: np.ndarray, probe: Probe, classes: int, *,
                k: int, repeats: int) -> float:
    """Mean held-out accuracy of `probe` over `repeats` seeded k-fold partitions."""
    scores = []
    everything = np.arange(len(features))
    for repeat in range(repeats):
        hits = 0
        for held in folds(len(features), k, repeat):
            train = np.setdiff1d(everything, held)
            hits += int((probe(features[train], labels[train], features[held], classes)
                         == labels[held]).sum())
        scores.append(hits / len(features))
    return float(np.mean(scores))


def variance_ratio(features: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Between-class variance of the class means over the mean within-class variance (summed
    over features): about (classes - 1) / n for features that carry no class information."""
    present = [k for k in range(classes) if np.any(labels == k)]
    between = np.stack([features[labels == k].mean(0) for k in present]).var(0).sum()
    within = np.mean([features[labels == k].var(0).sum() for k in present])
    return float(between / within) if within > 0 else math.nan


@dataclass
class ProbeRow:
    name: str
    dims: int
    ratio: float
    centroid: float
    logistic: float


def probe_row(name: str, features: np.ndarray, labels: np.ndarray, classes: int, *, k: int,
              repeats: int) -> ProbeRow:
    flat = features.reshape(len(features), -1).astype(np.float64)
    return ProbeRow(name, flat.shape[1], variance_ratio(flat, labels, classes),
                    cv_accuracy(flat, labels, centroid_probe, classes, k=k, repeats=repeats),
                    cv_accuracy(flat, labels, logistic_probe, classes, k=k, repeats=repeats))


def mean_pixels(images: np.ndarray, side: int = 16) -> np.ndarray:
    """Images averaged down to about side x side (whole blocks; the remainder cut off)."""
    n, height, width, channels = images.shape
    bh, bw = height // side, width // side
    cut = images[:, :bh * side, :bw * side]
    return cut.reshape(n, side, bh, side, bw, channels).mean((2, 4))


def layer_stats(model, images: np.ndarray,
                names: Sequence[str]) -> list[tuple[str, float, float, float]]:
    """(layer, share of channels zero on every image, share of zero activations, mean)."""
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    outputs = probe.predict([images], batch_size=16, verbose=0)
    rows = []
    for name, out in zip(names, outputs):
        flat = out.reshape(-1, out.shape[-1])
        rows.append((name, float(np.mean(flat.max(0) <= 0)), float(np.mean(flat == 0)),
                     float(flat.mean())))
    return rows


def head_outputs(frames_model, features: np.ndarray) -> list[np.ndarray]:
    """The outputs of the frame model's head layers (inference mode: dropout off) on features."""
    import keras

    outputs, x = [], features
    for name in HEAD_LAYERS:
        x = keras.ops.convert_to_numpy(frames_model.get_layer(name)(x))
        outputs.append(x)
    return outputs


def softmax_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def head_cv(base, features: np.ndarray, labels: np.ndarray, classes: int, rate: float, *,
            epochs: int, k: int, seed: int) -> dict[str, float]:
    """The frame model's head trained alone on cached frozen features, k-fold (see module)."""
    import keras

    from trainers.models import build_tvhi_frames

    everything = np.arange(len(features))
    rows = []
    for fold, held in enumerate(folds(len(features), k, seed)):
        train = np.setdiff1d(everything, held)
        keras.utils.set_random_seed(seed + fold)
        frames = build_tvhi_frames(input_shape=tuple(base.input_shape[1:]), num_classes=classes,
                                   base=base)
        inputs = keras.Input(shape=features.shape[1:])
        x = inputs
        for name in ("head_dense_0", "head_dropout_0", "head_dense_1", "head_dropout_1",
                     "logits"):
            x = frames.get_layer(name)(x)
        head = keras.Model(inputs, x)
        head.compile(optimizer=keras.optimizers.Adam(rate),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"])
        history = head.fit(features[train], labels[train], batch_size=2, epochs=epochs,
                           verbose=0, shuffle=True,
                           validation_data=(features[held], labels[held])).history
        best = int(np.argmin(history["val_loss"]))
        rows.append((history["loss"][-1], history["accuracy"][-1], history["val_accuracy"][-1],
                     history["val_loss"][-1], history["val_accuracy"][best],
                     history["val_loss"][best]))
    mean = np.mean(rows, axis=0)
    return dict(zip(("train_loss", "train_acc", "held_acc", "held_loss", "best_acc",
                     "best_loss"), map(float, mean)))


def read_split_clip_frames(store: str, splits: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every stored frame of each done sample of `splits` (`(N, T, S, S, 3)`, `frames`) and
    its label, in the order of `read_split_frames`."""
    import flowstore

    dataset = flowstore.open(store)
    batches = []
    for name in splits:
        split = dataset.split(name, features=("frames",))
        batches.append(split[list(range(len(split)))])
    return (np.concatenate([batch["frames"] for batch in batches]),
            np.concatenate([batch["label"] for batch in batches]))


def tuned_cv(base_file: Path, images: np.ndarray, labels: np.ndarray, classes: int, *,
             fine_tune: bool, k: int, seed: int, epochs: int | None,
             clip_frames: np.ndarray | None = None) -> dict:
    """The frame model under its tuned recipe, k-fold over train + val (see module, 6.):
    on the middle frames `images`, or with `clip_frames` (every stored frame of each clip) on a
    random frame of each clip per epoch, a held-out clip scored by its frames' mean logits."""
    import dataclasses

    import keras

    from trainers.data import recipe_augmentation
    from trainers.fit import compiled
    from trainers.models import build_tvhi_frames, fine_tune_transferred
    from trainers.recipes import TUNED_RECIPES

    recipe = dataclasses.replace(TUNED_RECIPES["frames"], fine_tune_base=fine_tune)
    recipe = recipe.override(epochs=epochs)
    augmentation = recipe_augmentation(recipe, motion=())

    class Batches(keras.utils.PyDataset):
        """Shuffled, augmented batches of the training folds, as the tf.data input makes them."""

        def __init__(self, chosen: np.ndarray, rng: np.random.Generator) -> None:
            super().__init__()
            self.chosen, self.rng = chosen, rng
            self.order = rng.permutation(chosen)

        def __len__(self) -> int:
            return math.ceil(len(self.chosen) / recipe.batch_size)

        def __getitem__(self, i: int):
            rows = np.sort(self.order[i * recipe.batch_size:(i + 1) * recipe.batch_size])
            if clip_frames is None:
                frames = images[rows].copy()
            else:  # one random stored frame of each clip
                frames = clip_frames[rows, self.rng.integers(0, clip_frames.shape[1], len(rows))]
            # uint8, as the store holds them and trainers' input augments them: these float32
            # copies of 0..255 were taken by colour_jitter for floats in [0, 1] and clipped
            # there, so every training batch before session 56 was near black (the held-out
            # folds, unaugmented, were not), and the figures of section 6 measured that
            batch = {"frame": frames.astype(np.uint8), "label": labels[rows]}
            if augmentation is not None:
                batch = augmentation(batch, self.rng)
            return batch["frame"].astype(np.float32), batch["label"]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(self.chosen)

    everything = np.arange(len(labels))
    rows = []
    for fold, held in enumerate(folds(len(labels), k, seed)):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed + fold)
        base = keras.saving.load_model(base_file, compile=False)
        model = build_tvhi_frames(input_shape=images.shape[1:], num_classes=classes, base=base)
        if fine_tune:
            fine_tune_transferred(model)
        compiled(model, recipe, "float32")
        schedule = keras.callbacks.LearningRateScheduler(
            lambda epoch, rate: recipe.learning_rate_at(epoch))
        model.fit(Batches(np.setdiff1d(everything, held), np.random.default_rng(seed + fold)),
                  epochs=recipe.epochs, verbose=0, callbacks=[schedule])
        if clip_frames is None:
            loss, accuracy = model.evaluate(images[held], labels[held], verbose=0)
        else:  # each clip by the mean logits of its frames, under the compiled loss
            steps = clip_frames.shape[1]
            logits = model.predict(clip_frames[held].reshape(-1, *clip_frames.shape[2:]),
                                   batch_size=32, verbose=0)
            logits = logits.reshape(len(held), steps, -1).mean(axis=1)
            loss = keras.ops.convert_to_numpy(model.loss(labels[held], logits))
            accuracy = np.mean(logits.argmax(axis=1) == labels[held])
        rows.append((float(accuracy), float(loss)))
    accuracy, loss = np.mean(rows, axis=0)
    return {"held_acc": float(accuracy), "held_loss": float(loss),
            "per_fold": [row[0] for row in rows]}


def control_images(store: str, count: int,
                   per_class: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`per_class` images of each of the first `count` classes of a Stanford-40 store's val and
    test splits (images the base did not train on), labels renumbered 0..count-1."""
    from trainers.samples import open_samples

    samples = open_samples(store, "image")
    try:
        indices = np.concatenate([samples.indices(split) for split in ("val", "test")])
        chosen = []
        for k in range(count):
            chosen.extend(indices[samples.labels[indices] == k][:per_class].tolist())
        chosen = np.array(chosen)
        images = np.stack([samples.read_sample(int(i))[0] for i in chosen])
        return images, samples.labels[chosen].astype(np.int64), list(samples.info.classes[:count])
    finally:
        samples.store.close()


@refusing_bad_input
def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="a store with middle_frame (TV-HI)")
    parser.add_argument("--base", required=True, help="the image (Stanford-40) run directory")
    parser.add_argument("--frames", action="append", default=[],
                        help="a frames run transferred from --base (repeatable)")
    parser.add_argument("--control-store", help="the Stanford-40 store --base trained on")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="k-fold partitions averaged")
    parser.add_argument("--permutations", type=int, default=20,
                        help="label shuffles for the probe's chance level")
    parser.add_argument("--head-lr", type=float, action="append", default=[],
                        help="train the head alone at this learning rate (repeatable)")
    parser.add_argument("--head-epochs", type=int, default=20)
    parser.add_argument("--head-folds", type=int, default=5)
    parser.add_argument("--tuned-cv", action="store_true",
                        help="6.: the tuned recipe's frame model, base frozen vs fine-tuned")
    parser.add_argument("--tuned-folds", type=int, default=5)
    parser.add_argument("--tuned-epochs", type=int, help="instead of the recipe's (a quick try)")
    parser.add_argument("--frame-views", action="store_true",
                        help="6.: also train on a random stored frame of each clip per epoch, "
                             "scored by the mean of its frames' logits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    from trainers.runs import read_run
    from trainers.samples import open_samples

    # the inputs before TensorFlow starts (seconds) and anything is printed: a wrong store
    # (missing, or without middle_frame: open_samples) or run is one line
    runs = {path: read_run(path) for path in [args.base, *args.frames]}
    for option, path in [("--base", args.base), *(("--frames", path) for path in args.frames)]:
        if runs[path] is None:
            refuse(f"{option} {path!r} is not a finished run directory")
    if args.control_store:  # (read at step 4, minutes in)
        open_samples(args.control_store, "image").store.close()
    samples = open_samples(args.store, "frames")
    try:
        images, labels = read_split_frames(samples, ("train", "val"))
        classes = samples.num_classes
        class_names = list(samples.info.classes)
    finally:
        samples.store.close()
    labels = labels.astype(np.int64)

    import keras

    from trainers.models import (FEATURES_LAYER, STANFORD40_CONVS, build_stanford40,
                                 build_tvhi_frames, feature_extractor)
    from trainers.fit import recalibrate_batch_norm

    print(header(__file__, None if argv is None else list(argv)) + "\n")
    base_record = runs[args.base]
    base = keras.saving.load_model(base_record.model_file, compile=False)
    extractor = feature_extractor(base)
    features = extractor.predict([images], batch_size=16, verbose=0)
    results: dict = {"samples": len(labels), "classes": class_names}

    # 1. bugs
    print(f"## 1. Checks ({len(labels)} train + val frames of {args.store}, "
          f"classes {', '.join(class_names)}: {np.bincount(labels, minlength=classes).tolist()})\n")
    # The frame model's own frozen part, as training calls it: its BatchNorm layers must
    # normalise with the base's statistics and leave them as they are.
    frozen = build_tvhi_frames(input_shape=tuple(base.input_shape[1:]), num_classes=classes,
                               base=base).get_layer("stanford40_features")
    statistics = [w.copy() for w in extractor.get_weights()]
    trained_mode = keras.ops.convert_to_numpy(frozen([images[:16]], training=True))
    same_mode = float(np.abs(trained_mode - features[:16]).max())
    kept = all(np.array_equal(a, b) for a, b in zip(statistics, extractor.get_weights()))
    print(f"- frozen features, training vs inference mode: max difference {same_mode:.2g}; "
          f"the base's weights and BatchNorm statistics unchanged by a training-mode call: "
          f"{kept}")
    frames_models = []
    for path in args.frames:
        record = runs[path]
        model = keras.saving.load_model(record.model_file, compile=False)
        weights = model.get_layer("stanford40_features").get_weights()
        equal = len(weights) == len(extractor.get_weights()) and all(
            np.array_equal(a, b) for a, b in zip(weights, extractor.get_weights()))
        print(f"- {Path(path).name}: frozen part equal to the base's weights: {equal}; "
              f"test accuracy {record.metrics.get('test', {}).get('accuracy')}, "
              f"test loss {record.metrics.get('test', {}).get('loss')}")
        frames_models.append((Path(path).name, model, equal))
    stores = [("frames", images)]
    control = None
    if args.control_store:
        control = control_images(args.control_store, classes, math.ceil(len(labels) / classes))
        stores.append(("control images", control[0]))
    for name, pixels in stores:
        print(f"- {name}: pixel range {pixels.min():.0f}..{pixels.max():.0f}, channel means "
              f"{', '.join(f'{m:.1f}' for m in pixels.mean((0, 1, 2)))}")
    results["mode_difference"] = same_mode
    results["statistics_kept"] = kept

    # 2. dead or constant units
    names = [f"conv_{i}" for i in range(len(STANFORD40_CONVS))] + [FEATURES_LAYER]
    print("\n## 2. Base layers on the frames (inference mode)\n")
    print("| layer | channels zero on every frame | zero activations | mean |")
    print("|---|---|---|---|")
    results["layers"] = {}
    for name, dead, zeros, mean in layer_stats(base, images, names):
        print(f"| {name} | {dead:.3f} | {zeros:.3f} | {mean:.3f} |")
        results["layers"][name] = {"dead": dead, "zeros": zeros, "mean": mean}

    # 3. class information
    k, repeats = args.folds, args.repeats
    keras.utils.set_random_seed(args.seed)
    untrained = feature_extractor(build_stanford40(input_shape=tuple(base.input_shape[1:])))
    rows = [probe_row("frozen features (trained base)", features, labels, classes, k=k,
                      repeats=repeats),
            probe_row("untrained base's features", untrained.predict([images], batch_size=16,
                                                                     verbose=0),
                      labels, classes, k=k, repeats=repeats),
            probe_row("16 x 16 mean pixels", mean_pixels(images), labels, classes, k=k,
                      repeats=repeats)]
    # BatchNorm statistics of TV-HI instead of Stanford-40 (AdaBN: Li et al. 2016), on a
    # second copy of the base so that every other figure uses the base as it was saved.
    adapted = feature_extractor(keras.saving.load_model(base_record.model_file, compile=False))
    recalibrate_batch_norm(adapted, [([images[i:i + 8]], None)
                                     for i in range(0, len(images), 8)])
    rows.append(probe_row("frozen features, BatchNorm statistics of these frames (AdaBN)",
                          adapted.predict([images], batch_size=16, verbose=0),
                          labels, classes, k=k, repeats=repeats))
    if control is not None:
        rows.append(probe_row(f"control: base features of {len(control[1])} Stanford-40 "
                              f"val/test images, {classes} classes",
                              extractor.predict([control[0]], batch_size=16, verbose=0),
                              control[1], classes, k=k, repeats=repeats))
    rng = np.random.default_rng(args.seed)
    null = [cv_accuracy(features.astype(np.float64), rng.permutation(labels), logistic_probe,
                        classes, k=k, repeats=1) for _ in range(args.permutations)]
    print(f"\n## 3. Class information ({k}-fold cross-validation over train + val, mean of "
          f"{repeats} partitions; logistic regression L2 {PROBE_L2}; chance "
          f"{1 / classes:.2f})\n")
    print("| features | dims | between / within class variance | nearest centroid | "
          "logistic regression |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.name} | {row.dims} | {row.ratio:.4f} | {row.centroid:.2f} | "
              f"{row.logistic:.2f} |")
    if null:
        print(f"| frozen features, labels shuffled ({len(null)} shuffles): mean, 95th "
              f"percentile | 512 | | | {np.mean(null):.2f}, {np.percentile(null, 95):.2f} |")
    results["probes"] = [row.__dict__ for row in rows]
    results["null"] = null

    # 4. the frames runs' heads
    if frames_models:
        print("\n## 4. The frames runs' heads on the train + val frames (inference mode)\n")
        print("| run | layer | dead units | mean | spread across clips (std, mean over units) | "
              "mean abs bias (0 at the start) |")
        print("|---|---|---|---|---|---|")
    results["runs"] = {}
    for name, model, equal in frames_models:
        outputs = head_outputs(model, features)
        for layer, out in zip(HEAD_LAYERS, outputs):
            bias = keras.ops.convert_to_numpy(model.get_layer(layer).bias)
            print(f"| {name} | {layer} | {int((out.max(0) <= 0).sum())}/{out.shape[1]} | "
                  f"{out.mean():.3f} | {out.std(0).mean():.3f} | {np.abs(bias).mean():.4f} |")
        logits = outputs[-1]
        loss = softmax_loss(logits, labels)
        predicted = np.bincount(logits.argmax(1), minlength=classes).tolist()
        print(f"| {name} | predictions | loss {loss:.4f} (ln {classes} = "
              f"{math.log(classes):.4f}), accuracy {np.mean(logits.argmax(1) == labels):.2f} | "
              f"predicted per class {predicted} | | |")
        results["runs"][name] = {"base_weights": equal, "loss": loss, "predicted": predicted,
                                 "logit_spread": float(logits.std(0).mean())}

    # 5. the head alone, per learning rate
    if args.head_lr:
        print(f"\n## 5. The head alone on the frozen features, Adam, batch 2, "
              f"{args.head_epochs} epochs, {args.head_folds}-fold over train + val\n")
        print("| learning rate | train loss (last epoch) | train acc | held-out acc (last) | "
              "held-out loss (last) | held-out acc (best epoch) | held-out loss (best epoch) |")
        print("|---|---|---|---|---|---|---|")
        results["head"] = {}
        for rate in args.head_lr:
            row = head_cv(base, features, labels, classes, rate, epochs=args.head_epochs,
                          k=args.head_folds, seed=args.seed)
            print(f"| {rate:g} | {row['train_loss']:.3f} | {row['train_acc']:.2f} | "
                  f"{row['held_acc']:.2f} | {row['held_loss']:.3f} | {row['best_acc']:.2f} | "
                  f"{row['best_loss']:.3f} |", flush=True)
            results["head"][rate] = row

    # 6. the whole frame model under its tuned recipe, base frozen or fine-tuned
    if args.tuned_cv:
        print(f"\n## 6. The frame model under its tuned recipe, {args.tuned_folds}-fold over "
              f"train + val (held-out scores after the last epoch)\n")
        print("| base | held-out acc | held-out loss | held-out acc per fold |")
        print("|---|---|---|---|")
        results["tuned"] = {}
        clip_frames = None
        if args.frame_views:
            clip_frames, clip_labels = read_split_clip_frames(args.store, ("train", "val"))
            if not np.array_equal(clip_labels, labels):  # the same clips, in the same order
                raise RuntimeError("frames and middle frames of the store disagree in order")
        for views in ((None, clip_frames) if args.frame_views else (None,)):
            for fine_tune in (False, True):
                row = tuned_cv(base_record.model_file, images, labels, classes,
                               fine_tune=fine_tune, k=args.tuned_folds, seed=args.seed,
                               epochs=args.tuned_epochs, clip_frames=views)
                name = "fine-tuned (fine_tune_base)" if fine_tune else "frozen (the report's)"
                if views is not None:
                    name += f", frame views ({views.shape[1]} frames a clip)"
                print(f"| {name} | {row['held_acc']:.2f} | {row['held_loss']:.3f} | "
                      f"{', '.join(f'{a:.2f}' for a in row['per_fold'])} |", flush=True)
                results["tuned"][(fine_tune, views is not None)] = row
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    main()
