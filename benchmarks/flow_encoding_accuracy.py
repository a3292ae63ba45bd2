"""Does uint8 flow cost accuracy? The report's two-stream chain on float16 vs uint8 flow.

Issue 5: uint8 flow (clipped to +-`flow_bound` px and quantized to 256 levels, as MMAction2 and
denseflow store it) halves the flow's bytes again; it is only worth it if the two-stream model
trained on it stays within 2 points of test accuracy of the float16 store's.

The default synthetic TV-HI source (`flowstore build tvhi --synthetic`, 50 clips per class:
90 train, 10 val, 100 test) is built twice at the same size, once per `--flow-dtype`; then the
user's command `trainers run two_stream --store STORE --runs-dir RUNS` trains the whole chain
(tvhi_frames, tvhi_flow, two_stream, the report's recipes) on each. Both builds read the same
cached source, and `middle_frame` is the same in both stores, so only the flow differs.
The table gives the flow's bytes per sample (`flowstore inspect --json`) and each model's test
accuracy and loss from the runs' `metrics.json`.

About 13 minutes on 2 quiet cores at `--size 64`. Stores and runs are kept in `--workdir`; a
second call reuses finished runs (`--retrain` trains again). `--seeds 0 1 2` repeats the
training with other seeds, each in its own runs folder (one clip of the 100 test clips is
1 point, so a single seed's difference is noisy).

    python benchmarks/flow_encoding_accuracy.py --workdir /tmp/bench/enc
    python benchmarks/flow_encoding_accuracy.py --seeds 0 1 2 --workdir /tmp/bench/enc
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Machine description, busy-CPU accounting and the CLI paths are build_workers.py's.
from build_workers import (_busy_jiffies, command_line, flowstore_command,  # noqa: E402
                           machine_line)

ENCODINGS = ("float16", "uint8")
MODELS = ("tvhi_frames", "tvhi_flow", "two_stream")


def trainers_command() -> list[str]:
    beside = Path(sys.executable).with_name("trainers")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("trainers")
    return [found] if found else [sys.executable, "-m", "trainers"]


def run_logged(command: list[str], log) -> tuple[float, float]:
    """Run `command` with TF quiet; its output goes to `log`. Returns (wall s, others' cores)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tick = os.sysconf("SC_CLK_TCK")
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = _busy_jiffies()
    started = time.perf_counter()
    print(f"$ {' '.join(command)}", file=log, flush=True)
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    others = max(0.0, (_busy_jiffies() - busy) / tick - cpu) / wall
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}; see {log.name}")
    return wall, others


def inspect(store: Path) -> dict:
    out = subprocess.run([*flowstore_command(), "inspect", str(store), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def finished_runs(runs_dir: Path, fingerprint: str, seed: int) -> dict[str, dict]:
    """The latest metrics.json per model in `runs_dir` for this store fingerprint and seed."""
    found: dict[str, dict] = {}
    if not runs_dir.is_dir():
        return found
    for metrics_file in sorted(runs_dir.glob("*/metrics.json")):
        if metrics_file.parent.name.startswith("."):
            continue
        metrics = json.loads(metrics_file.read_text())
        if (metrics.get("store", {}).get("fingerprint") != fingerprint
                or metrics.get("seed") != seed):
            continue
        model = metrics.get("model")
        if model not in found or metrics.get("created", "") > found[model].get("created", ""):
            found[model] = {**metrics, "_dir": metrics_file.parent.name}
    return found


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="frame side S [64, the demo's]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--flow-bound", type=float, default=None,
                        help="uint8 clip bound in px [flowstore's default, 20]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="training seeds; each trains both chains [0]")
    parser.add_argument("--retrain", action="store_true",
                        help="train again even if --workdir holds finished runs")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep stores, runs and the log here "
                             "[a temporary folder, removed at the end]")
    args = parser.parse_args(argv)

    temporary = None
    if args.workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="flowstore-bench-encoding-")
        workdir = Path(temporary.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "flow_encoding_accuracy.log"
    try:
        with open(log_path, "a") as log:
            print(f"logging commands to {log_path}", file=sys.stderr)
            stores, infos, timings = {}, {}, {}
            for encoding in ENCODINGS:
                store = workdir / f"synthetic-{args.size}px-{encoding}.zarr"
                command = [*flowstore_command(), "build", "tvhi", "--synthetic", "--store",
                           str(store), "--size", str(args.size), "--steps", str(args.steps),
                           "--flow-dtype", encoding, "--quiet"]
                if args.flow_bound is not None and encoding == "uint8":
                    command += ["--flow-bound", str(args.flow_bound)]
                wall, others = run_logged(command, log)
                print(f"{encoding}: store ready ({wall:.0f}s)", file=sys.stderr, flush=True)
                stores[encoding], infos[encoding] = store, inspect(store)
            metrics: dict[tuple[str, int], dict[str, dict]] = {}
            for seed in args.seeds:
                for encoding in ENCODINGS:
                    # one folder per seed: prerequisites are found by store fingerprint, not by seed
                    runs_dir = workdir / f"runs-{encoding}-seed{seed}"
                    fingerprint = infos[encoding]["fingerprint"]
                    have = finished_runs(runs_dir, fingerprint, seed)
                    if args.retrain or not set(MODELS) <= have.keys():
                        command = [*trainers_command(), "run", "two_stream", "--store",
                                   str(stores[encoding]), "--runs-dir", str(runs_dir),
                                   "--seed", str(seed)]
                        if args.retrain:
                            command.append("--retrain")
                        wall, others = run_logged(command, log)
                        timings[(encoding, seed)] = (wall, others)
                        print(f"{encoding} seed {seed}: chain trained in {wall:.0f}s "
                              f"(others {others:.2f} cores)", file=sys.stderr, flush=True)
                        have = finished_runs(runs_dir, fingerprint, seed)
                    missing = set(MODELS) - have.keys()
                    if missing:
                        raise SystemExit(f"no finished {', '.join(sorted(missing))} run in "
                                         f"{runs_dir} for {encoding}, seed {seed}")
                    metrics[(encoding, seed)] = have
        print(report(args, infos, metrics, timings))
    finally:
        if temporary is not None:
            temporary.cleanup()


def flow_bytes_per_sample(info: dict) -> float:
    flow = next(a for a in info["arrays"] if a["name"] == "flow")
    return flow["bytes_stored"] / max(info["done"], 1)


def report(args: argparse.Namespace, infos: dict[str, dict],
           metrics: dict[tuple[str, int], dict[str, dict]],
           timings: dict[tuple[str, int], tuple[float, float]]) -> str:
    seeds = args.seeds
    base_bytes = flow_bytes_per_sample(infos["float16"])
    params = infos["uint8"]["params"]
    lines = [
        "## Flow encoding vs accuracy: float16 and uint8 flow, the report's two-stream chain",
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine_line()}",
        f"- date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- stores: `flowstore build tvhi --synthetic --store S.zarr --size {args.size} --steps "
        f"{args.steps} --flow-dtype {{float16,uint8}}` (default synthetic source, "
        f"{infos['float16']['done']} samples: "
        + ", ".join(f"{k} {v}" for k, v in sorted(infos["float16"]["done_per_split"].items()))
        + f"; uint8 bound +-{params.get('flow_bound')} px)",
        "- runs: `trainers run two_stream --store S.zarr --runs-dir R --seed N` (trains "
        "tvhi_frames and tvhi_flow first; the report's recipes); test accuracy and loss from "
        "each run's metrics.json (best-val-loss epoch restored)",
        "",
        "| encoding | seed | flow bytes/sample | flow vs float16 | frames acc | frames loss | "
        "flow acc | flow loss | two-stream acc | two-stream loss | chain wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed in seeds:
        for encoding in ENCODINGS:
            m = metrics[(encoding, seed)]
            per = flow_bytes_per_sample(infos[encoding])
            cells = []
            for model in MODELS:
                test = m[model].get("test") or {}
                cells += [fmt(test.get("accuracy"), ".2f"), fmt(test.get("loss"), ".3f")]
            wall = timings.get((encoding, seed))
            lines.append(f"| {encoding} | {seed} | {per / 1024:.1f} KiB | "
                         f"{per / base_bytes:.2f}x | "
                         + " | ".join(cells) + f" | {'' if wall is None else f'{wall[0]:.0f}'} |")
    diffs = []
    for seed in seeds:
        acc = {e: metrics[(e, seed)]["two_stream"]["test"]["accuracy"] for e in ENCODINGS}
        diffs.append(100 * (acc["uint8"] - acc["float16"]))
    mean = statistics.mean(diffs)
    lines += ["", "Two-stream test accuracy, uint8 minus float16: "
              + ", ".join(f"seed {s}: {d:+.0f} points" for s, d in zip(seeds, diffs))
              + (f"; mean {mean:+.1f} points" if len(diffs) > 1 else "")
              + f". Target, within 2 points (|difference| <= 2): "
              f"**{'met' if abs(mean) <= 2 else 'not met'}**; uint8 no more than 2 points "
              f"worse: **{'met' if mean >= -2 else 'not met'}**. One test clip is "
              f"{100 / max(infos['float16']['done_per_split'].get('test', 100), 1):.0f} "
              f"point(s)."]
    lines += ["", "Run directories: " + "; ".join(
        f"{e} seed {s}: " + ", ".join(metrics[(e, s)][m]["_dir"] for m in MODELS)
        for s in seeds for e in ENCODINGS)]
    busiest = max((o for _, o in timings.values()), default=0.0)
    if busiest > 0.1:
        lines += ["", f"Note: other processes kept up to {busiest:.2f} cores busy during a "
                      f"chain; that changes the seconds, not the accuracies."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
