"""Training step time of the report's four models: fed from a store, and from memory (ceiling).

Issue 16 asks, when a GPU is lent, for the step times of the real-data runs; a CPU session says
what its runs cost instead (docs/real-data.md). This script measures the one figure both
need on any machine and any Keras 3 backend: the wall time of one training step of each
catalogue model at the report's sizes (224 px, 16 flow steps: `--size`, `--flow-steps`) and
its recipe's batch size,

- **from the store**: `model.fit` on the public reader's Keras `PyDataset`
  (`Split.to_keras_dataset`, reading threads beside the step), time between the ends of
  successive steps after a warm-up: what a training epoch costs a step;
- **ceiling**: the same `model.fit` loop on one batch held in memory, handed out at every step:
  every cost of a step (the host-to-device copy included) but reading it from the store;
  measured before and after the store's run, the faster of the two.

Their ratio, ceiling / store step time (1.00: reading costs a step nothing), says whether
the reader keeps the device fed. Each row also gives the samples/s and
what an epoch of the real training split costs at that step time (TV-HI: 90 clips; Stanford-40:
3,600 images), training steps only. `--ceiling-batch 32` adds a ceiling row at a larger batch
(what a bigger batch would buy; no recipe uses one).

The stores are synthetic (`flowstore synth` then `flowstore build`, cached in `--workdir`):
step time depends on the shapes, not on the pixels. The same script runs on the trainers'
backend (TensorFlow) and on the others (`KERAS_BACKEND=torch` where TensorFlow is not
installed, as on the lent GPU machines).

    python benchmarks/train_step_time.py --workdir /tmp/steps             # all four models
    KERAS_BACKEND=torch python benchmarks/train_step_time.py --workdir /tmp/steps --steps 50

Results are in benchmarks/README.md ("Issue 16: training step time, CPU and GPU").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refusing_bad_input  # noqa: E402  (shared by the benchmarks)


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: model -> (store, real training split size): TV-HI's train split (the report's 100 training
#: clips less the 10 validation ones), Stanford-40's train.txt less its 400 validation images.
MODELS = {"image": ("stanford40", 3600), "frames": ("tvhi", 90), "flow": ("tvhi", 90),
          "two_stream": ("tvhi", 90)}


def synthetic_store(workdir: Path, dataset: str, size: int, steps: int, per_class: int,
                    workers: int) -> Path:
    """Build (once) a small synthetic store of `dataset` in `workdir`: `size` px frames,
    `steps` flow steps, `per_class` clips (or training images) a class."""
    store = workdir / f"{dataset}_{size}px_{steps}steps_{per_class}.zarr"
    if store.exists():
        return store
    source = workdir / f"src_{dataset}"
    synth = (["--videos-per-class", str(per_class), "--negatives", "0"] if dataset == "tvhi"
             else ["--train-per-class", str(per_class), "--test-per-class", "1"])
    flowstore = [sys.executable, "-m", "flowstore"]
    if not source.exists():
        subprocess.run([*flowstore, "synth", dataset, str(source), *synth], check=True,
                       stdout=subprocess.DEVNULL)
    steps_option = ["--steps", str(steps)] if dataset == "tvhi" else []  # (images: no flow)
    subprocess.run([*flowstore, "build", dataset, "--source", str(source), "--store", str(store),
                    "--size", str(size), *steps_option, "--workers", str(workers)],
                   check=True, stdout=subprocess.DEVNULL)
    return store


def synchronize() -> None:
    """Wait for the device's queued work, so that a step's time is its own (torch on a GPU
    queues a step's kernels and returns before they ran)."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def step_clock():
    """A Keras callback that records when each training step ends (a function, so that Keras is
    imported after `KERAS_BACKEND` is read, not when this module is)."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch, logs=None) -> None:
            if logs and "loss" in logs:
                float(logs["loss"])  # waits for the step on every backend (JAX: async)
            synchronize()
            self.ends.append(time.perf_counter())

    return StepClock()


def compiled(name: str, size: int, steps: int):
    """The catalogue model `name` built fresh for `size` px frames and `steps` flow steps,
    compiled as the trainers compile it (Adam at its recipe's rate; the loss on integer labels
    costs the same as theirs on one-hot ones)."""
    import keras

    from trainers.catalogue import recipe_of
    from trainers.models import build_default

    model = build_default(name, size=size, steps=steps, num_classes=40 if name == "image" else 4)
    model.compile(optimizer=keras.optimizers.Adam(recipe_of(name).learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def timed_fit(model, dataset, warmup: int, steps: int) -> float:
    """Median seconds per step of `model.fit` on `dataset`, after `warmup` steps."""
    epochs = -(-(warmup + steps + 1) // len(dataset))
    clock = step_clock()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[clock])
    return float(np.median(np.diff(clock.ends[warmup:])))


def from_store(model, split, batch_size: int, warmup: int, steps: int, workers: int) -> float:
    """Seconds per step of `model.fit` reading `split` through the Keras adapter."""
    dataset = split.to_keras_dataset(batch_size, shuffle=True, workers=workers,
                                     max_queue_size=2 * workers)
    return timed_fit(model, dataset, warmup, steps)


def from_memory(model, split, batch_size: int, warmup: int, steps: int) -> float:
    """Seconds per step of the same `model.fit` loop on one batch held in memory, handed out
    again and again: every cost of a step but reading it."""
    import keras

    batch = split.read(np.arange(batch_size) % len(split))
    held = split.model_inputs(batch), batch["label"]

    class HeldBatch(keras.utils.PyDataset):
        def __len__(self) -> int:
            return max(len(split) // batch_size, 1)

        def __getitem__(self, index: int):
            return held

    return timed_fit(model, HeldBatch(), warmup, steps)


def device_name() -> str:
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return device.device_kind
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return gpus[0].name
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def peak_device_mb() -> float | None:
    """The process's peak device memory so far (GPU only): each row's figure includes the
    rows before it."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()  # (None on a CPU)
        if stats and "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**20
    return None


def measure(name: str, store: Path, batch_size: int, args: argparse.Namespace) -> list[dict]:
    import keras

    import flowstore
    from trainers.catalogue import get_model

    keras.utils.set_random_seed(0)
    real_split = MODELS[name][1]
    model = compiled(name, args.size, args.flow_steps)
    with flowstore.open(str(store)) as data:
        split = data.split("train", features=dict(get_model(name).inputs))
        # the ceiling before and after: the faster of the two, so that a cost the first fits
        # pay after their warm-up steps (allocator growth, a retrace) never counts against the
        # reader
        before = from_memory(model, split, batch_size, args.warmup, args.steps)
        fed = from_store(model, split, batch_size, args.warmup, args.steps, args.reader_workers)
        ceiling = min(before, from_memory(model, split, batch_size, args.warmup, args.steps))
        bigger = {extra: from_memory(model, split, extra, args.warmup, args.steps)
                  for extra in args.ceiling_batch}
    rows = [{"model": name, "batch": batch_size, "store_ms": 1e3 * fed, "ceiling_ms": 1e3 * ceiling,
             "of_ceiling": ceiling / fed, "samples_per_s": batch_size / fed,
             "epoch_s": -(-real_split // batch_size) * fed, "peak_device_mb": peak_device_mb()}]
    for extra, big in bigger.items():
        rows.append({"model": name, "batch": extra, "store_ms": None, "ceiling_ms": 1e3 * big,
                     "of_ceiling": None, "samples_per_s": extra / big,
                     "epoch_s": -(-real_split // extra) * big, "peak_device_mb": peak_device_mb()})
    return rows


def table(rows: list[dict]) -> str:
    def cell(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    # of_ceiling = ceiling / store time: the share of the ceiling's speed reached from the store
    lines = ["| model | batch | from store, ms/step | ceiling, ms/step | ceiling / store "
             "| samples/s | real train epoch, s | peak device MiB so far |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['batch']} | {cell(row['store_ms'], '.1f')} "
                     f"| {cell(row['ceiling_ms'], '.1f')} | {cell(row['of_ceiling'], '.2f')} "
                     f"| {cell(row['samples_per_s'], '.1f')} | {cell(row['epoch_s'], '.1f')} "
                     f"| {cell(row['peak_device_mb'], '.0f')} |")
    return "\n".join(lines)


@refusing_bad_input
def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--size", type=int, default=224, help="frame side in pixels")
    parser.add_argument("--flow-steps", type=int, default=16, help="flow steps per clip")
    parser.add_argument("--per-class", type=int, default=10,
                        help="synthetic clips (images) per class")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (tracing)")
    parser.add_argument("--ceiling-batch", type=int, nargs="*", default=[],
                        help="extra batch sizes measured from memory only")
    parser.add_argument("--reader-workers", type=int, default=4,
                        help="PyDataset reading threads")
    parser.add_argument("--build-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    import keras

    from trainers.catalogue import recipe_of

    args.workdir.mkdir(parents=True, exist_ok=True)
    stores = {dataset: synthetic_store(args.workdir, dataset, args.size, args.flow_steps,
                                       args.per_class, args.build_workers)
              for dataset in sorted({MODELS[name][0] for name in args.models})}
    print(header(__file__, argv))
    print(f"- keras {keras.__version__}, backend {keras.backend.backend()}, on {device_name()}\n",
          flush=True)
    rows = []
    for name in args.models:
        started = time.perf_counter()
        rows += measure(name, stores[MODELS[name][0]], recipe_of(name).batch_size, args)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"device": device_name(), "backend":
                                         keras.backend.backend(), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
