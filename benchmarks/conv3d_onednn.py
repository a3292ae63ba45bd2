"""Whether TensorFlow's oneDNN kernels compute the flow model's first Conv3D right, by flow steps.

Why: on TensorFlow 2.21 (CPU), the backward pass of a "same" Conv3D of kernel 7 and stride 2 (the
flow model's first, `trainers.models.FLOW_CONVS[0]`) corrupted the heap on 5 flow steps (the
process aborted) and gave filter gradients off by orders of magnitude on 7, silently; the flow
model now pads explicitly (`trainers.models._same_padding`). This script says, for each number
of flow steps asked, side by side in one run, how far oneDNN's output, input gradient and filter
gradient are from TensorFlow's reference kernels (`TF_ENABLE_ONEDNN_OPTS=0`, the ceiling of
correctness) for the "same" convolution (the baseline: what the model did) and for the explicitly
padded one (what it does). Each configuration runs in a subprocess of its own, since the
environment variable is read when TensorFlow starts and a heap corruption ends the process.

    python benchmarks/conv3d_onednn.py                          # steps 1-18 at 32 px, ~5 min
    python benchmarks/conv3d_onednn.py --steps 5 7 --side 64

Results are in benchmarks/README.md ("The flow model's first Conv3D on a CPU").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refusing_bad_input  # noqa: E402  (shared by the benchmarks)


REPO = Path(__file__).resolve().parents[1]

#: One configuration: conv3d of kernel 7, stride 2, "same" or explicitly padded, on
#: (2, steps, side, side, 2) input and 16 filters; its output and both gradients saved.
_CHILD = """
import sys
import numpy as np
import tensorflow as tf
from trainers.models import FLOW_CONVS, _same_padding

steps, side, explicit, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
_, kernel, stride = FLOW_CONVS[0]
x = tf.constant(np.random.default_rng(0).normal(size=(2, steps, side, side, 2)).astype("float32"))
w = tf.Variable(np.random.default_rng(1).normal(size=(kernel,) * 3 + (2, 16)).astype("float32"))
with tf.GradientTape() as tape:
    tape.watch(x)
    if explicit:
        pads = [[0, 0], *map(list, _same_padding((steps, side, side), kernel, stride)), [0, 0]]
        y = tf.nn.conv3d(tf.pad(x, pads), w, [1, stride, stride, stride, 1], "VALID")
    else:
        y = tf.nn.conv3d(x, w, [1, stride, stride, stride, 1], "SAME")
    loss = tf.reduce_sum(y * y)
dx, dw = tape.gradient(loss, [x, w])
np.savez(out, y=y.numpy(), dx=dx.numpy(), dw=dw.numpy())
"""


def _run(steps: int, side: int, explicit: bool, onednn: bool, folder: Path) -> dict | int:
    """The saved arrays of one configuration, or the child's exit code where it died."""
    out = folder / f"{steps}-{side}-{int(explicit)}-{int(onednn)}.npz"
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0",
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(steps), str(side),
                           "1" if explicit else "0", str(out)], env=env, capture_output=True)
    if done.returncode != 0:
        return done.returncode
    return dict(np.load(out))


def relative_errors(found: dict | int, reference: dict) -> str:
    """The largest error of each array relative to the reference's largest value, or how the
    child died (a negative code: the signal)."""
    if isinstance(found, int):
        return f"died ({found})"
    errors = (float(np.abs(found[key] - reference[key]).max())
              / max(float(np.abs(reference[key]).max()), 1e-30) for key in ("y", "dx", "dw"))
    return " / ".join(f"{error:.0e}" for error in errors)


@refusing_bad_input
def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=list(range(1, 19)))
    parser.add_argument("--side", type=int, default=32)
    args = parser.parse_args(argv)
    print(header(__file__, argv) + "\n")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for steps in args.steps:
            reference = _run(steps, args.side, False, False, Path(folder))
            if isinstance(reference, int):
                raise SystemExit(f"the reference kernels died on {steps} steps ({reference})")
            same = relative_errors(_run(steps, args.side, False, True, Path(folder)), reference)
            padded = relative_errors(_run(steps, args.side, True, True, Path(folder)), reference)
            rows.append((steps, args.side, same, padded))
    print("first flow Conv3D (kernel 7, stride 2, 16 filters, batch 2), oneDNN against "
          "TensorFlow's reference kernels: largest error / largest reference value of the "
          "output / input gradient / filter gradient\n")
    print("| flow steps | side | \"same\" (what the model did) | explicit padding (what it does) |")
    print("|---|---|---|---|")
    for steps, side, same, padded in rows:
        print(f"| {steps} | {side} | {same} | {padded} |")
    return rows


if __name__ == "__main__":
    main()
