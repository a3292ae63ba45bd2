"""Does uint8 flow cost accuracy? The report's two-stream chain on float16 vs uint8 flow.

Issue 5: uint8 flow (clipped to +-`flow_bound` px and quantized to 255 bins, as MMAction2 and
denseflow store it) halves the flow's bytes again; it is only worth it if the two-stream model
trained on it stays within 2 points of test accuracy of the float16 store's.

The default synthetic TV-HI source (`flowstore build tvhi --synthetic`, 50 clips per class:
90 train, 10 val, 100 test) is built twice at the same size, once per `--flow-dtype`; then the
user's command `trainers run two_stream --store STORE --runs-dir RUNS` trains the whole chain
(tvhi_frames, tvhi_flow, two_stream, the report's recipes) on each. Both builds read the same
cached source, and `middle_frame` is the same in both stores, so only the flow differs.
The table gives the flow's bytes per sample (`flowstore inspect --json`) and each model's test
accuracy and loss from the runs' `metrics.json`.

About 7 minutes per seed on 2 quiet cores at `--size 64` (two chains of about 3.5 minutes).
Stores and runs are kept in `--workdir`; a second call reuses finished runs (`--retrain` trains
again). `--seeds 0 1 2` repeats the training with other seeds, each in its own runs folder (one
clip of the 100 test clips is 1 point, and seed to seed the chain's accuracy moves by far more
than 2 points). `--cross-eval` then tests every trained flow and two-stream model on the other
store's test flow too (same weights: the cost of the encoding alone, free of training noise), and
`--cross-eval-bounds 5` adds uint8 stores with other bounds to that comparison.

    python benchmarks/flow_encoding_accuracy.py --workdir /tmp/bench/enc
    python benchmarks/flow_encoding_accuracy.py --seeds 0 1 2 --workdir /tmp/bench/enc
    python benchmarks/flow_encoding_accuracy.py --seeds 0 1 2 --cross-eval --cross-eval-bounds 5

`--source DIR` builds from a TV-HI source folder instead of the default synthetic one, and
`--epochs N` trains each model N epochs instead of its recipe's: with a tiny source, a run
that only checks the script works (the tests' smoke run), not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Machine description, busy-CPU accounting and the CLI paths are build_workers.py's.
from build_workers import (_busy_jiffies, check_source, flowstore_command, header,  # noqa: E402
                          refusing_bad_input, workdir_or_temporary)
from trainers.catalogue import canonical_name  # noqa: E402

ENCODINGS = ("float16", "uint8")
#: 97.5% quantiles of Student's t by degrees of freedom (two-sided 95% intervals).
T_975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
         10: 2.23, 11: 2.20, 12: 2.18, 14: 2.14, 19: 2.09, 29: 2.05}
MODELS = ("frames", "flow", "two_stream")


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
    out = subprocess.run([*flowstore_command(), "inspect", str(store), "--json", "--bytes"],
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
        model = canonical_name(str(metrics.get("model")))  # runs recorded as tvhi_flow too
        if model not in found or metrics.get("created", "") > found[model].get("created", ""):
            found[model] = {**metrics, "_dir": metrics_file.parent.name}
    return found


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="frame side S [64, the demo's]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--flow-bound", type=float, default=None,
                        help="uint8 clip bound in px [flowstore's default, 20]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="training seeds; each trains both chains [0]")
    parser.add_argument("--cross-eval", action="store_true",
                        help="also test every trained tvhi_flow and two_stream model on the "
                             "test split of each store (same weights, other flow encoding)")
    parser.add_argument("--cross-eval-bounds", type=float, nargs="*", default=[],
                        metavar="PX", help="with --cross-eval: also build uint8 stores with "
                                           "these bounds and test on them (no training)")
    parser.add_argument("--source", type=Path, default=None, metavar="DIR",
                        help="build from this TV-HI source folder [the default synthetic "
                             "source, `--synthetic`]")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="train each model N epochs [the recipe's]")
    parser.add_argument("--retrain", action="store_true",
                        help="train again even if --workdir holds finished runs")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep stores, runs and the log here "
                             "[a temporary folder, removed at the end]")
    args = parser.parse_args(argv)
    if args.source is not None:
        check_source(args.source)

    with workdir_or_temporary(args.workdir, "flowstore-bench-encoding-") as workdir:
        log_path = workdir / "flow_encoding_accuracy.log"
        with open(log_path, "a") as log:
            print(f"logging commands to {log_path}", file=sys.stderr)
            stores, infos, timings = {}, {}, {}
            for encoding in ENCODINGS:
                bound = args.flow_bound if encoding == "uint8" else None
                stores[encoding], infos[encoding] = build_store(args, encoding, bound, workdir,
                                                                log)
            extra = {}  # cross-evaluation only: uint8 stores with other bounds
            if args.cross_eval:
                for bound in args.cross_eval_bounds:
                    extra[f"uint8 +-{bound:g} px"] = build_store(args, "uint8", bound, workdir,
                                                                 log)
            metrics: dict[tuple[str, int], dict[str, dict]] = {}
            for seed in args.seeds:
                for encoding in ENCODINGS:
                    # one folder per seed: prerequisites are found by store fingerprint, not by seed
                    runs_dir = workdir / runs_folder(args, encoding, seed)
                    fingerprint = infos[encoding]["fingerprint"]
                    have = finished_runs(runs_dir, fingerprint, seed)
                    if args.retrain or not set(MODELS) <= have.keys():
                        command = [*trainers_command(), "run", "two_stream", "--store",
                                   str(stores[encoding]), "--runs-dir", str(runs_dir),
                                   "--seed", str(seed)]
                        if args.epochs is not None:
                            command += ["--epochs", str(args.epochs)]
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
        text = report(args, infos, metrics, timings)
        if args.cross_eval:
            bound = infos["uint8"]["params"].get("flow_bound")
            tests = {"float16": stores["float16"], f"uint8 +-{bound:g} px": stores["uint8"],
                     **{name: store for name, (store, _) in extra.items()}}
            sizes = {"float16": flow_bytes_per_sample(infos["float16"]),
                     f"uint8 +-{bound:g} px": flow_bytes_per_sample(infos["uint8"]),
                     **{name: flow_bytes_per_sample(info) for name, (_, info) in extra.items()}}
            text += "\n\n" + cross_eval(args, tests, metrics, workdir, sizes)
        print(text)


def runs_folder(args: argparse.Namespace, encoding: str, seed: int) -> str:
    bound = f"-bound{args.flow_bound:g}" if encoding == "uint8" and args.flow_bound else ""
    # (runs of other epochs are other runs: a folder of their own, never reused for these)
    epochs = "" if args.epochs is None else f"-epochs{args.epochs}"
    return f"runs-{encoding}{bound}{epochs}-seed{seed}"


def build_store(args: argparse.Namespace, encoding: str, bound: float | None, workdir: Path,
                log) -> tuple[Path, dict]:
    """`flowstore build tvhi` (--synthetic or --source) with this flow encoding (a no-op when it
    exists)."""
    origin = "synthetic" if args.source is None else f"source-{args.source.name}"
    name = f"{origin}-{args.size}px-{encoding}" + ("" if bound is None else f"-bound{bound:g}")
    store = workdir / f"{name}.zarr"
    command = [*flowstore_command(), "build", "tvhi", *source_options(args), "--store",
               str(store), "--size", str(args.size), "--steps", str(args.steps),
               "--flow-dtype", encoding, "--quiet"]
    if bound is not None:
        command += ["--flow-bound", str(bound)]
    wall, _ = run_logged(command, log)
    print(f"{store.name}: ready ({wall:.0f}s)", file=sys.stderr, flush=True)
    return store, inspect(store)


def source_options(args: argparse.Namespace) -> list[str]:
    """`flowstore build tvhi`'s source options: --source DIR, or the default synthetic one."""
    return ["--synthetic"] if args.source is None else ["--source", str(args.source)]


def cross_eval(args: argparse.Namespace, tests: dict[str, Path],
               metrics: dict[tuple[str, int], dict[str, dict]], workdir: Path,
               sizes: dict[str, float]) -> str:
    """Each trained flow and two-stream model, tested on every store's test split.

    The weights stay fixed, so the change from the store it was trained on to another store is
    what the flow encoding alone costs that model, free of training noise (seed to seed, the
    chain's test accuracy moves by tens of points on 90 training clips).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from trainers.data import InputOptions, make_dataset
    from trainers.samples import open_samples

    names = list(tests)
    lines = ["### Same weights, other flow encoding (test split of each store)", "",
             "| trained on | seed | model | " + " | ".join(f"test on {n}: acc (loss)"
                                                     for n in names) + " |",
             "|---|---:|---|" + "---:|" * len(names)]
    changes: dict[str, list[float]] = {n: [] for n in names}
    for (encoding, seed), runs in sorted(metrics.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for model_name in ("flow", "two_stream"):
            model = keras.saving.load_model(workdir / runs_folder(args, encoding, seed)
                                            / runs[model_name]["_dir"] / "model.keras",
                                            compile=False)
            model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
            cells, accs = [], {}
            for name, path in tests.items():
                samples = open_samples(path, model_name)
                try:
                    result = model.evaluate(make_dataset(samples, "test", InputOptions(
                        batch_size=8)), verbose=0, return_dict=True)
                finally:
                    samples.store.close()
                accs[name] = result["accuracy"]
                cells.append(f"{result['accuracy']:.2f} ({result['loss']:.3f})")
            if encoding == "float16" and model_name == "two_stream":
                for name in names:
                    changes[name].append(100 * (accs[name] - accs["float16"]))
            lines.append(f"| {encoding} | {seed} | {model_name} | " + " | ".join(cells) + " |")
    lines += ["", "float16-trained two-stream models, test accuracy change when the same test "
                  "clips' flow comes from another store: " + "; ".join(
                      f"{n}: " + ", ".join(f"{c:+.0f}" for c in changes[n])
                      + f" points (mean {statistics.mean(changes[n]):+.1f})"
                      for n in names[1:]),
              "", "Flow bytes per sample: " + ", ".join(f"{n} {b / 1024:.1f} KiB"
                                                        for n, b in sizes.items())]
    return "\n".join(lines)


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
        header(__file__),
        f"- stores: `flowstore build tvhi {' '.join(source_options(args))} --store S.zarr --size "
        f"{args.size} --steps {args.steps} --flow-dtype {{float16,uint8}}` ("
        + ("default synthetic source" if args.source is None else str(args.source)) + ", "
        f"{infos['float16']['done']} samples: "
        + ", ".join(f"{k} {v}" for k, v in sorted(infos["float16"]["done_per_split"].items()))
        + f"; uint8 bound +-{params.get('flow_bound')} px)",
        "- runs: `trainers run two_stream --store S.zarr --runs-dir R --seed N"
        + ("" if args.epochs is None else f" --epochs {args.epochs}") + "` (trains "
        "tvhi_frames and tvhi_flow first; the report's recipes); test accuracy and loss from "
        "each run's metrics.json (best-val-loss epoch restored)",
        "",
        "| encoding | seed | flow bytes/sample | flow vs float16 | frames acc | frames loss | "
        "flow acc | flow loss | two-stream acc | two-stream loss | training s (3 models) |",
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
            train_s = sum(float(m[model].get("train_seconds") or 0) for model in MODELS)
            lines.append(f"| {encoding} | {seed} | {per / 1024:.1f} KiB | "
                         f"{per / base_bytes:.2f}x | " + " | ".join(cells) + f" | {train_s:.0f} |")
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
    if len(diffs) > 2:
        # seeds pair the chains (same seed: same frames model, order and flips), so the
        # spread that matters is that of the per-seed differences
        half = T_975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / len(diffs) ** 0.5
        f16 = [100 * metrics[("float16", s)]["two_stream"]["test"]["accuracy"] for s in seeds]
        lines += ["", f"Over {len(diffs)} paired seeds: mean difference {mean:+.1f} points, 95% "
                  f"interval {mean - half:+.1f} to {mean + half:+.1f} (t, {len(diffs) - 1} degrees "
                  f"of freedom); float16 alone ranges {min(f16):.0f}-{max(f16):.0f}% over these "
                  f"seeds (sd {statistics.stdev(f16):.1f} points). "
                  + ("The interval lies within +-2 points." if -2 <= mean - half and
                     mean + half <= 2 else "The interval does not lie within +-2 points: "
                     "these seeds cannot show a difference that small either way."
                     if mean - half < 0 < mean + half else
                     "The interval excludes 0: the encoding changes the retrained accuracy.")]
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
