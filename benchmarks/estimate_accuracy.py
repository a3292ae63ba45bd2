"""How close `flowstore estimate` comes to the real build of the 200 TV-HI clips.

In one run, on the same source (the real clips of /work/shared/data/tvhi by default):

1. `flowstore.estimate.estimate` with its defaults (20 items, seed 0) and the build options
   below: predicted store size per flow encoding, CPU seconds, and their 95% intervals;
2. the real build, once per flow encoding (`flowstore build tvhi --source SRC --store X.zarr
   --flow-dtype E --workers W --quiet`, a subprocess): its store's bytes on disk (apparent size
   of every file, what the estimate counts) and its CPU seconds (user + sys of the child).

The table gives each prediction, its interval, the real value, the error and whether the
interval holds it. The build's CPU seconds include the interpreter's start-up and the
coordinator (manifest, ledger writes), which the estimate leaves out: it predicts the tasks.
Wall time is printed but is not comparable on a shared machine (other processes take cores).

    python benchmarks/estimate_accuracy.py --workdir /tmp/est       # 3 builds: several minutes

The stores are built one at a time in a fresh folder `estimate-accuracy-*` under --workdir
(created if absent), which the run removes at its end; nothing else there is touched.
    python benchmarks/estimate_accuracy.py --encodings float16      # one build
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_workers import flowstore_command, header, refusing_bad_input, run_timed  # noqa: E402

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tvhi"
if not DEFAULT_SOURCE.is_dir():
    DEFAULT_SOURCE = Path("/work/shared/data/tvhi")


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    from flowstore.estimate import estimate
    from flowstore.params import FLOW_DTYPES, VideoParams
    from flowstore.store.base import tree_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/flowstore-estimate-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--encodings", nargs="+", default=list(FLOW_DTYPES), choices=FLOW_DTYPES)
    args = parser.parse_args(argv)

    params = VideoParams(size=args.size, steps=args.steps, flow_dtype=args.encodings[0])
    started = time.perf_counter()
    predicted = estimate("tvhi", args.source, params, sample_size=args.sample,
                         workers=args.workers, progress=False)
    estimate_seconds = time.perf_counter() - started
    # The stores go in a fresh folder of this run's own under --workdir, the only thing it
    # removes: --workdir may be shared with other files.
    args.workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="estimate-accuracy-", dir=args.workdir))
    real = {}
    try:
        for encoding in args.encodings:
            store = run_dir / f"tvhi-{encoding}.zarr"
            command = [*flowstore_command(), "build", "tvhi", "--source", str(args.source),
                       "--store", str(store), "--size", str(args.size), "--steps",
                       str(args.steps), "--flow-dtype", encoding, "--workers", str(args.workers),
                       "--quiet"]
            done, timed = run_timed(command)
            if done.returncode != 0:
                sys.exit(f"build failed ({done.returncode}): {done.stderr}")
            real[encoding] = (tree_bytes(store), timed)
            shutil.rmtree(store)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    mib = 1 << 20
    print(header(__file__, sys.argv[1:] if argv is None else argv))
    print(f"- source: {args.source} ({predicted.items} clips, S={args.size}, T={args.steps}, "
          f"--workers {args.workers}); estimate: {len(predicted.sampled)} clips measured, "
          f"seed 0, {estimate_seconds:.1f} s wall")
    print()
    print("| quantity | predicted | 95% interval | real build | error | in interval |")
    print("|---|---:|---:|---:|---:|:---:|")
    for encoding in args.encodings:
        interval, (size, _timed) = predicted.store_bytes[encoding], real[encoding]
        print(f"| store size, {encoding} flow (MiB) | {interval.value / mib:.1f} | "
              f"{interval.low / mib:.1f} - {interval.high / mib:.1f} | {size / mib:.1f} | "
              f"{(interval.value - size) / size:+.1%} | "
              f"{'yes' if interval.low <= size <= interval.high else 'no'} |")
    cpu = predicted.cpu_hours.scaled(3600)
    real_cpu = real[args.encodings[0]][1].cpu
    print(f"| CPU s, {args.encodings[0]} build (tasks vs whole process) | {cpu.value:.1f} | "
          f"{cpu.low:.1f} - {cpu.high:.1f} | {real_cpu:.1f} | "
          f"{(cpu.value - real_cpu) / real_cpu:+.1%} | "
          f"{'yes' if cpu.low <= real_cpu <= cpu.high else 'no'} |")
    timed = real[args.encodings[0]][1]
    print(f"| wall s, {args.encodings[0]} build (not comparable: shared machine) | "
          f"{predicted.wall_seconds.value:.1f} | {predicted.wall_seconds.low:.1f} - "
          f"{predicted.wall_seconds.high:.1f} | {timed.wall:.1f} (others used "
          f"{timed.others_cores:.2f} cores) | | |")
    for encoding in args.encodings[1:]:
        print(f"- real build with {encoding} flow: {real[encoding][1].cpu:.1f} CPU s, "
              f"{real[encoding][1].wall:.1f} s wall")


if __name__ == "__main__":
    main()
