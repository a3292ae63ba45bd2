"""Peak memory of one training epoch: streamed from the store vs. the split loaded whole.

The trainers read one sample (one chunk per array) at a time through `tf.data`, so the memory of
a training epoch should not grow with the number of videos. The baseline beside it is what a
naive loader does (and what the report's scripts did): read the split's arrays whole into numpy
and hand them to `tf.data.Dataset.from_tensor_slices`.

Each measurement runs in a fresh Python process (peak RSS is a per-process high-water mark),
trains `tvhi_flow` for one epoch on a synthetic TV-HI store, and reports `ru_maxrss`.

    python benchmarks/train_memory.py                       # 50 vs 200 videos, 64 px, 16 steps
    python benchmarks/train_memory.py --videos 50 200 400 --size 96 --backend h5

Measured on the 2-core CPU machine (zarr, 64 px, 16 steps, batch 2; about 2.5 minutes):

    | videos | streamed peak RSS | in-memory baseline peak RSS |
    |---|---|---|
    | 50  |   992 MB |  1038 MB |
    | 200 |  1059 MB |  1245 MB |

Streamed runs of 100 and 400 videos peaked at 1018 and 1025 MB: the streamed figure is flat
within run-to-run noise (a few tens of MB from TensorFlow's allocator), while the baseline grows
with the split (here about 2x the split's float32 flow, which it holds in numpy and in tf.data).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refuse, refusing_bad_input  # noqa: E402  (shared)



def child(store: str, mode: str, batch_size: int) -> None:
    """Train one epoch of tvhi_flow on `store` and print peak RSS as JSON."""
    import keras
    import numpy as np
    import tensorflow as tf

    from flowstore.store import open_store
    from trainers.data import InputOptions, make_dataset
    from trainers.models import build_tvhi_flow
    from trainers.samples import StoreSamples

    keras.utils.set_random_seed(0)
    with open_store(store) as opened:
        samples = StoreSamples(opened, "tvhi_flow")
        train = samples.indices("train")
        if mode == "streamed":
            ds = make_dataset(samples, "train", InputOptions(batch_size=batch_size, shuffle=True))
        else:  # baseline: the whole split in memory
            flow = opened.read("flow")[train].astype(np.float32)
            ds = tf.data.Dataset.from_tensor_slices((flow, samples.labels[train]))
            ds = ds.shuffle(len(train), seed=0).batch(batch_size).prefetch(tf.data.AUTOTUNE)
        model = build_tvhi_flow(input_shape=samples.sample_shapes["flow"])
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        started = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_rss_mb": peak_mb, "epoch_seconds": seconds, "videos": int(len(train))}))


def measure(store: Path, mode: str, batch_size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(store), mode,
                          "--batch-size", str(batch_size)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[50, 200],
                        help="training videos per store, a quarter a class (at least 4; the "
                             "table gives the count built) [50 200]")
    parser.add_argument("--size", type=int, default=64, help="frame side S [64]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--batch-size", type=int, default=2, help="training batch [2]")
    parser.add_argument("--backend", choices=["zarr", "h5"], default="zarr")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.batch_size)
        return
    if min(args.videos) < 4:
        refuse(f"--videos {min(args.videos)}: a store needs a training video of each of TV-HI's "
               f"4 classes, so at least 4")

    from trainers.testing import make_tiny_store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for videos in args.videos:
            store = make_tiny_store(Path(tmp) / f"tvhi{videos}.{args.backend}", size=args.size,
                                    steps=args.steps, per_class=(videos // 4, 0, 0))
            streamed = measure(store, "streamed", args.batch_size)
            whole = measure(store, "in_memory", args.batch_size)
            built = streamed["videos"]  # (a quarter a class: 50 asked is 48 built)
            flow_mb = built * args.steps * args.size ** 2 * 2 * 4 / 2**20
            rows.append((built, flow_mb, streamed, whole))
            print(f"{built} videos done", file=sys.stderr)
    print(header(__file__, argv))
    print(f"- tvhi_flow, one epoch, {args.size} px, {args.steps} steps, batch {args.batch_size}, "
          f"{args.backend} store\n")
    print("| videos | split's flow as float32 (MB) | streamed peak RSS (MB) | epoch (s) "
          "| in-memory baseline peak RSS (MB) | epoch (s) |")
    print("|---|---|---|---|---|---|")
    for videos, flow_mb, s, w in rows:
        print(f"| {videos} | {flow_mb:.0f} | {s['peak_rss_mb']:.0f} | {s['epoch_seconds']:.1f} "
              f"| {w['peak_rss_mb']:.0f} | {w['epoch_seconds']:.1f} |")
    if len(rows) >= 2:
        (v0, _, s0, w0), (v1, _, s1, w1) = rows[0], rows[-1]
        print(f"\ngrowth from {v0} to {v1} videos: streamed "
              f"{s1['peak_rss_mb'] - s0['peak_rss_mb']:+.0f} MB, in-memory "
              f"{w1['peak_rss_mb'] - w0['peak_rss_mb']:+.0f} MB")


if __name__ == "__main__":
    main()
