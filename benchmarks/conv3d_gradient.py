"""Time the gradient of the flow model's first Conv3D by input shape, with and without XLA.

Why: on a 2-core AMD EPYC without AVX-512 the test suite's flow runs took three times as long
as on an Intel Xeon, and one training step of the flow model at 32 px and 4 flow steps took
longer than one at 224 px and 16. There TensorFlow runs without its oneDNN kernels (it turns
them on by itself only with AVX-512), and its Eigen kernel for the filter gradient of a 3D
convolution takes, on small batches, an algorithm whose cost grows with every voxel of the
batch; `trainers` now ask for oneDNN (`trainers.backend.use_onednn_kernels`). `--onednn on`
or `off` picks the kernels measured, one setting a run.

This measures it for the flow model's first convolution (`trainers.models.FLOW_CONVS[0]`:
128 filters, kernel 7, stride 2, on 2 flow channels), one gradient step at a time, side by side
in one run:

- **TensorFlow's default** (what `trainers run` does on a CPU: Keras leaves XLA off there);
- **XLA** (`jit_compile=True`), which compiles the same step to its own convolution code;
- a **reference rate**: the default path's cost per batch voxel at the largest shape asked,
  which the report's sizes (224 px, 16 steps) are trained at, as the rate a smaller problem
  could reach if its cost were proportional to its size;
- **explicit padding**: what the flow model computes now (`trainers.models._same_padding`:
  `ZeroPadding3D` then a "valid" convolution, the same values), beside the "same"
  convolution it replaced, whose oneDNN backward pass breaks on 5 and 7 flow steps: the cost
  of that workaround.

    python benchmarks/conv3d_gradient.py                  # the default grid, about 5 minutes
    python benchmarks/conv3d_gradient.py --shape 4x32x32 --batch 2 --repeats 1
    python benchmarks/conv3d_gradient.py --onednn off     # TensorFlow's choice without AVX-512
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refusing_bad_input  # noqa: E402  (shared by the benchmarks)


#: (steps, side, side) shapes and batch sizes: the tests' old and new stores, the README demo's,
#: and the report's.
DEFAULT_CASES = (((4, 32, 32), 2), ((2, 16, 16), 2), ((16, 64, 64), 1), ((16, 64, 64), 2),
                 ((16, 224, 224), 2))


def step_seconds(shape: tuple[int, int, int], batch: int, jit: bool, repeats: int,
                 explicit: bool = False) -> float:
    """Median seconds of one gradient step (filter and bias) of the first flow Conv3D: with
    `padding="same"`, or (`explicit`) as the flow model pads, `ZeroPadding3D` first."""
    import keras
    import tensorflow as tf

    from trainers.models import FLOW_CONVS, _same_padding

    filters, kernel, stride = FLOW_CONVS[0]
    pad = (keras.layers.ZeroPadding3D(_same_padding(shape, kernel, stride)) if explicit
           else None)
    layer = keras.layers.Conv3D(filters, kernel, strides=stride,
                                padding="valid" if explicit else "same")
    x = tf.constant(np.random.default_rng(0).random((batch, *shape, 2), np.float32))
    layer.build(pad.compute_output_shape(x.shape) if explicit else x.shape)

    @tf.function(jit_compile=jit)
    def gradient(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(pad(x) if explicit else x))
        return tape.gradient(loss, layer.trainable_weights)

    gradient(x)  # traced (and compiled) once, not timed
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        gradient(x)
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def _shape(text: str) -> tuple[int, int, int]:
    steps, height, width = (int(part) for part in text.lower().split("x"))
    return steps, height, width


def _onednn_setting() -> str:
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if setting is None:
        return "TensorFlow's own choice (on with AVX-512, off without; TF_ENABLE_ONEDNN_OPTS unset)"
    return f"TF_ENABLE_ONEDNN_OPTS={setting}"


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=_shape, action="append",
                        help="STEPSxHEIGHTxWIDTH; repeat with --batch (default: a grid)")
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--onednn", choices=("on", "off"),
                        help="TensorFlow's oneDNN kernels on (what `trainers` ask for) or off "
                             "(TensorFlow's own choice on a CPU without AVX-512); default: as "
                             "TF_ENABLE_ONEDNN_OPTS says, else TensorFlow's own choice")
    args = parser.parse_args(argv)
    if args.onednn:  # read by TensorFlow at its import, which comes later (`step_seconds`)
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    # read now: importing `trainers` (after TensorFlow, in `step_seconds`) sets the variable
    # where it was unset, which would then misname TensorFlow's own choice
    onednn = _onednn_setting()
    if args.shape:
        batches = args.batch or [2] * len(args.shape)
        if len(batches) != len(args.shape):
            parser.error("give one --batch per --shape")
        cases = tuple(zip(args.shape, batches))
    else:
        cases = DEFAULT_CASES
    print(header(__file__, argv) + "\n")
    rows = []
    for shape, batch in cases:
        default = step_seconds(shape, batch, jit=False, repeats=args.repeats)
        xla = step_seconds(shape, batch, jit=True, repeats=args.repeats)
        explicit = step_seconds(shape, batch, jit=False, repeats=args.repeats, explicit=True)
        rows.append((shape, batch, batch * int(np.prod(shape)), default, xla, explicit))
    *_, reference_voxels, reference_seconds, _, _ = max(rows, key=lambda row: row[2])
    per_voxel = reference_seconds / reference_voxels
    print(f"first flow Conv3D (128 filters, kernel 7, stride 2), one gradient step, median of "
          f"{args.repeats}; reference rate {per_voxel * 1e6:.2f} us per batch voxel (the "
          f"default path at the largest case); oneDNN kernels: {onednn}\n")
    print("| flow steps x side x side | batch | batch voxels | TensorFlow default (s) | "
          "XLA (s) | at the reference rate (s) | default / reference | explicit padding, "
          "the model's (s) | explicit / default |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, batch, voxels, default, xla, explicit in rows:
        reference = voxels * per_voxel
        print(f"| {'x'.join(map(str, shape))} | {batch} | {voxels:,} | {default:.3f} | "
              f"{xla:.3f} | {reference:.4f} | {default / reference:.0f}x | {explicit:.3f} | "
              f"{explicit / default:.2f} |")


if __name__ == "__main__":
    main()
