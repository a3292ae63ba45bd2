"""Why the Stanford-40 CNN learns nothing at the report's learning rate: its Dense_0 units die.

Trains `build_stanford40` on a Stanford-40 store's training split (batch 8, seeded shuffle, Adam,
the same steps `trainers run` takes) at each given learning rate, and every few steps measures
on a fixed batch of 64 training images, with batch statistics (training mode) so that unsettled
moving statistics play no part:

- dead Dense_0: the fraction of the 80 Dense_0 units whose ReLU is zero on all 64 images
  (a dead unit passes no gradient, so it never comes back);
- dead conv_k: the same for each conv layer's channels;
- the mean training loss of the last 50 steps (ln 40 = 3.689 is a constant output).

Prints a markdown table per learning rate, with the command line, machine and date.

    python benchmarks/stanford40_dead_units.py --store s40_64.zarr --lr 1e-3 --lr 1e-4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refusing_bad_input  # noqa: E402  (shared by the benchmarks)


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="a Stanford-40 store (any --size)")
    parser.add_argument("--lr", type=float, action="append", help="learning rate (repeatable)")
    parser.add_argument("--steps", type=int, default=450, help="training steps (450: an epoch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rates = args.lr or [1e-3, 1e-4]

    from trainers.samples import open_samples

    # the store before TensorFlow starts (seconds): a wrong one (missing, not Stanford-40) is
    # one line at once
    samples = open_samples(args.store, "stanford40")

    import keras

    from trainers.data import InputOptions, make_dataset
    from trainers.models import STANFORD40_CONVS, build_stanford40

    train = samples.split("train")  # the model's inputs (here "image") as stored: uint8
    probe_positions = np.arange(len(train))[:: max(1, len(train) // 64)][:64]
    probe_images = train.read(probe_positions)["image"]
    checkpoints = {s for s in (1, 10, 30, 100, 200, 300) if s < args.steps} | {args.steps}
    print(header(__file__, argv) + "\n")
    for lr in rates:
        keras.utils.set_random_seed(args.seed)
        model = build_stanford40(input_shape=samples.sample_shapes["image"],
                                 num_classes=samples.num_classes)
        model.compile(optimizer=keras.optimizers.Adam(lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        names = [f"conv_{i}" for i in range(len(STANFORD40_CONVS))] + ["dense_0"]
        probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
        data = make_dataset(samples, "train", InputOptions(batch_size=8, shuffle=True,
                                                           seed=args.seed)).repeat()
        print(f"learning rate {lr:g}\n")
        print("| step | loss (last 50 steps) | " + " | ".join(f"dead {n}" for n in names) + " |")
        print("|---" * (len(names) + 2) + "|")
        losses: list[float] = []
        started = time.perf_counter()
        for step, (images, labels) in enumerate(data.take(args.steps), start=1):
            losses.append(float(model.train_on_batch(images, labels)))
            if step in checkpoints:
                outputs = probe([probe_images], training=True)
                dead = [float(np.mean(keras.ops.convert_to_numpy(o).reshape(-1, o.shape[-1])
                                      .max(axis=0) <= 0)) for o in outputs]
                print(f"| {step} | {np.mean(losses[-50:]):.3f} | "
                      + " | ".join(f"{d:.2f}" for d in dead) + " |", flush=True)
        print(f"\n({time.perf_counter() - started:.0f} s)\n")


if __name__ == "__main__":
    main()
