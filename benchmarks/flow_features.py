"""A baseline for the flow model: how much class information hand-made flow descriptors hold.

The flow CNN (`build_tvhi_flow`, 7.9 M weights) learns from 90 training clips. This script puts
beside it the classical answer to the same question: histograms of optical flow (HOF: per
cell of a `--grid` x `--grid` grid, the flow's orientations in `--bins` bins weighted by its
magnitude, averaged over the steps, log-scaled) and motion boundary histograms (MBH, Dalal et
al. 2006: the same histograms of the spatial gradients of dx and of dy, blind to any motion
that is the same at every pixel), read by the linear probe of
`benchmarks/frames_transfer_features.py` (L2 logistic regression on standardised features,
nearest class centroid beside it). Rows:

- HOF of the flow as stored;
- HOF after mean flow subtraction (each step minus its mean over the frame, what
  `trainers run --subtract-mean-flow` puts in the model: a camera pan drops out);
- MBH;
- the mean flow magnitude per step (the crudest motion feature, a floor);
- HOF with the labels shuffled (`--permutations`): this probe's chance level on this data.

Scores are repeated k-fold cross-validation over `train` + `val`, which nothing else uses to
choose by; `--test` also fits each probe on train + val and scores the `test` split, a baseline
figure to print beside the CNN runs' test accuracy (nothing is chosen by it).

    python benchmarks/flow_features.py --store tvhi.zarr --test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refuse, refusing_bad_input  # noqa: E402  (shared)
from frames_transfer_features import (centroid_probe, cv_accuracy,  # noqa: E402
                                      logistic_probe)

import flowstore  # noqa: E402

Descriptor = Callable[[np.ndarray], np.ndarray]


def subtract_mean_flow(flow: np.ndarray) -> np.ndarray:
    """Each step minus its mean displacement over the frame (`trainers.models.SubtractMeanFlow`
    in numpy)."""
    return flow - flow.mean(axis=(-3, -2), keepdims=True)


def histograms(vectors: np.ndarray, *, grid: int, bins: int) -> np.ndarray:
    """Per clip, the magnitude-weighted orientation histogram of `vectors` (N, T, H, W, 2) in
    each cell of a grid x grid partition of the frame, averaged over pixels and steps,
    log1p-scaled: (N, grid * grid * bins)."""
    count, steps, height, width, _ = vectors.shape
    magnitude = np.hypot(vectors[..., 0], vectors[..., 1])
    orientation = np.arctan2(vectors[..., 1], vectors[..., 0])
    bin_of = np.floor((orientation + np.pi) / (2 * np.pi) * bins).astype(np.int64) % bins
    rows, cols = np.arange(height) * grid // height, np.arange(width) * grid // width
    cell = (rows[:, None] * grid + cols[None, :])[None, None]  # (1, 1, H, W)
    slot = (cell * bins + bin_of) + grid * grid * bins * np.arange(count)[:, None, None, None]
    sums = np.bincount(slot.ravel(), weights=magnitude.ravel(),
                       minlength=count * grid * grid * bins)
    pixels = np.bincount(cell.ravel(), minlength=grid * grid) * steps  # per cell
    return np.log1p(sums.reshape(count, grid * grid, bins) / pixels[None, :, None]).reshape(
        count, -1)


def hof(grid: int, bins: int, *, centred: bool = False) -> Descriptor:
    def describe(flow: np.ndarray) -> np.ndarray:
        return histograms(subtract_mean_flow(flow) if centred else flow, grid=grid, bins=bins)
    return describe


def mbh(grid: int, bins: int) -> Descriptor:
    """Histograms of the spatial gradients (d/dx, d/dy) of each flow component, dx's then dy's."""
    def describe(flow: np.ndarray) -> np.ndarray:
        parts = []
        for component in (flow[..., 0], flow[..., 1]):
            gradient = np.stack([np.gradient(component, axis=-1),
                                 np.gradient(component, axis=-2)], axis=-1)
            parts.append(histograms(gradient, grid=grid, bins=bins))
        return np.concatenate(parts, axis=1)
    return describe


def mean_magnitude(flow: np.ndarray) -> np.ndarray:
    return np.hypot(flow[..., 0], flow[..., 1]).mean(axis=(-2, -1))


def describe_split(split, descriptors: dict[str, Descriptor], *,
                   batch: int = 8) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every descriptor of every sample of `split` (flow in float32 pixels), read `batch`
    clips at a time so that memory stays at a few batches of flow, and the labels."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in descriptors}
    labels = []
    for start in range(0, len(split), batch):
        values = split[list(range(start, min(start + batch, len(split))))]
        flow = np.asarray(values["flow"], dtype=np.float32)
        for name, describe in descriptors.items():
            out[name].append(describe(flow))
        labels.append(np.asarray(values["label"]))
    return {name: np.concatenate(parts) for name, parts in out.items()}, np.concatenate(labels)


def held_out_accuracy(probe, train: np.ndarray, labels: np.ndarray, held: np.ndarray,
                      held_labels: np.ndarray, classes: int) -> float:
    return float((probe(train, labels, held, classes) == held_labels).mean())


@refusing_bad_input
def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="a video store with flow")
    parser.add_argument("--grid", type=int, default=3)
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--k", type=int, default=10, help="folds over train + val")
    parser.add_argument("--repeats", type=int, default=5, help="seeded k-fold partitions")
    parser.add_argument("--permutations", type=int, default=20,
                        help="label shuffles for the chance row")
    parser.add_argument("--test", action="store_true",
                        help="also fit on train + val and score the test split (reported only)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    store = flowstore.open(args.store)
    if "flow" not in store.features:  # (the reader's own refusal is a ValueError: a traceback)
        refuse(f"store {args.store!r} ({store.dataset}) has no flow (it has "
               f"{', '.join(store.features)}): the descriptors are made from a video store's flow")
    classes = len(store.classes)
    descriptors = {
        "HOF": hof(args.grid, args.bins),
        "HOF, mean flow subtracted": hof(args.grid, args.bins, centred=True),
        "MBH": mbh(args.grid, args.bins),
        "mean flow magnitude per step": mean_magnitude,
    }
    fitted = [store.split(name, features=("flow",), float_dtype="float32")
              for name in ("train", "val")]
    parts = [describe_split(split, descriptors) for split in fitted]
    features = {name: np.concatenate([part[0][name] for part in parts]) for name in descriptors}
    labels = np.concatenate([part[1] for part in parts])
    tested = None
    if args.test:
        tested = describe_split(store.split("test", features=("flow",), float_dtype="float32"),
                                descriptors)
    k = min(args.k, len(labels))
    print(header(__file__, None if argv is None else list(argv)))
    print(f"store {args.store} ({store.dataset}, fingerprint {store.fingerprint[:8]}): "
          f"{len(labels)} train + val clips, {classes} classes; {k}-fold x {args.repeats}; "
          f"grid {args.grid}, {args.bins} bins")
    columns = "| descriptor | dims | centroid, CV | logistic, CV |"
    rule = "|---|---|---|---|"
    if tested is not None:
        columns += f" logistic, test ({len(tested[1])} clips) |"
        rule += "---|"
    print(columns)
    print(rule)
    results: dict = {"rows": {}}
    for name, values in features.items():
        row = {"dims": values.shape[1],
               "centroid": cv_accuracy(values, labels, centroid_probe, classes, k=k,
                                       repeats=args.repeats),
               "logistic": cv_accuracy(values, labels, logistic_probe, classes, k=k,
                                       repeats=args.repeats)}
        line = f"| {name} | {row['dims']} | {row['centroid']:.2f} | {row['logistic']:.2f} |"
        if tested is not None:
            row["test"] = held_out_accuracy(logistic_probe, values, labels, tested[0][name],
                                            tested[1], classes)
            line += f" {row['test']:.2f} |"
        results["rows"][name] = row
        print(line)
    rng = np.random.default_rng(0)
    shuffled = [cv_accuracy(features["HOF"], rng.permutation(labels), logistic_probe, classes,
                            k=k, repeats=1) for _ in range(args.permutations)]
    results["chance"] = {"mean": float(np.mean(shuffled)),
                         "p95": float(np.percentile(shuffled, 95))}
    print(f"HOF with the labels shuffled ({args.permutations} shuffles), logistic CV: mean "
          f"{results['chance']['mean']:.2f}, 95th percentile {results['chance']['p95']:.2f}; "
          f"the majority class: {np.bincount(labels).max() / len(labels):.2f}")
    print(f"{time.perf_counter() - started:.0f} s")
    return results


if __name__ == "__main__":
    main()
