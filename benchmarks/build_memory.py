"""Peak memory of `flowstore build tvhi` at two (or more) dataset sizes; it should be flat.

A build holds one clip's frames and flow per worker thread and writes each sample's chunks
straight to the store, so its peak memory should not grow with the number of clips. This script
builds synthetic TV-HI sources of different sizes (same clip lengths and resolutions, flowstore's
own generator) through the real user path, the `flowstore` CLI in a subprocess, and measures:

- peak RSS of the whole process tree: psutil polls the build and all its descendants every
  `--interval` seconds and sums their RSS (a short spike between two polls can be missed);
- `ru_maxrss` of the children (`getrusage(RUSAGE_CHILDREN)`): the kernel's high-water mark of
  the largest single descendant, exact but per process, as a cross-check.

Each build is started from a small wrapper process (this script with `--child`), so that
`RUSAGE_CHILDREN` covers that one build only.

    python benchmarks/build_memory.py                          # 10 and 40 clips/class, S=224
    python benchmarks/build_memory.py --videos-per-class 10 40 80 --repeats 2 --workdir /tmp/bm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Machine description, busy-CPU accounting and the CLI path are build_workers.py's.
from build_workers import (_busy_jiffies, flowstore_command, header, prepare_source,  # noqa: E402
                          refusing_bad_input, source_summary, wait_for_quiet,
                          workdir_or_temporary)


def child(interval: float, command: list[str]) -> None:
    """Run `command`, poll its process tree's RSS, print one JSON line with what was seen."""
    import psutil

    tick = os.sysconf("SC_CLK_TCK")
    busy = _busy_jiffies()
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak_tree = peak_main = 0
    peak_at = 0.0
    most_processes = 1
    polls = 0
    timeline = []  # (seconds, tree MB) every ~1 s
    next_mark = 0.0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        tree = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            tree += rss
            if p.pid == root.pid:
                peak_main = max(peak_main, rss)
        polls += 1
        most_processes = max(most_processes, len(procs))
        now = time.perf_counter() - start
        if tree > peak_tree:
            peak_tree, peak_at = tree, now
        if now >= next_mark:
            timeline.append((round(now, 1), round(tree / 2**20)))
            next_mark += 1.0
        time.sleep(interval)
    output = proc.communicate()[0]
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, (_busy_jiffies() - busy) / tick - cpu)
    print(json.dumps({
        "returncode": proc.returncode, "output": output[-2000:], "wall": wall, "cpu": cpu,
        "others_cores": others / wall, "peak_tree_mb": peak_tree / 2**20,
        "peak_main_mb": peak_main / 2**20, "peak_at": peak_at,
        "children_maxrss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "processes": most_processes, "polls": polls, "timeline": timeline,
    }))


def measure(source: Path, store: Path, args: argparse.Namespace) -> dict:
    if store.exists():
        shutil.rmtree(store) if store.is_dir() else store.unlink()
    command = [*flowstore_command(), "build", "tvhi", "--source", str(source), "--store",
               str(store), "--workers", str(args.workers), "--size", str(args.size),
               "--steps", str(args.steps), "--quiet"]
    done = subprocess.run([sys.executable, __file__, "--interval", str(args.interval),
                           "--child", *command], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measuring wrapper failed:\n{done.stdout}{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["returncode"] != 0:
        raise SystemExit(f"build failed ({result['returncode']}): {' '.join(command)}\n"
                         f"{result['output']}")
    return result


def quarter_medians(timeline: list[list[float]]) -> list[float]:
    """Median tree RSS (MB) in each quarter of a run, from its once-a-second samples.

    The first 5% (interpreter and Dask start-up) is left out. A build that keeps something per
    clip shows a rising series; the peak alone also rises with run length, since a longer run
    has more chances to catch a rare spike (two long clips decoded at once).
    """
    values = [mb for _, mb in timeline]
    n = len(values)
    out = []
    for a, b in ((0.05, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)):
        part = values[int(n * a):max(int(n * b), int(n * a) + 1)]
        out.append(statistics.median(part) if part else float("nan"))
    return out


def report(results: dict[int, list[dict]], sources: dict[int, Path],
           args: argparse.Namespace) -> str:
    sizes = list(results)
    suffix = ".h5" if args.backend == "h5" else ".zarr"
    lines = [
        "## Peak memory of `flowstore build tvhi` vs number of clips",
        "",
        header(__file__),
        "- sources: " + "; ".join(f"{v}/class: {source_summary(sources[v])}" for v in sizes),
        f"- each run: `flowstore build tvhi --source SRC --store STORE{suffix} --workers "
        f"{args.workers} --size {args.size} --steps {args.steps} --quiet` on a fresh store; "
        f"RSS of the process tree polled every {args.interval * 1000:.0f} ms (psutil, summed "
        f"over the build and its descendants); median of {args.repeats}",
        "",
        "| clips | peak RSS, process tree (MB) | ru_maxrss of children (MB) | median RSS by "
        "quarter of the run (MB) | seconds (wall) | clips/s | CPU s | processes "
        "| other processes (cores busy) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for v in sizes:
        rs = results[v]
        med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
        clips = 4 * v
        quarters = [statistics.median(q) for q in zip(*(quarter_medians(r["timeline"])
                                                          for r in rs))]
        lines.append(f"| {clips} ({v}/class) | {med('peak_tree_mb'):.0f} | "
                     f"{med('children_maxrss_mb'):.0f} | "
                     f"{', '.join(f'{q:.0f}' for q in quarters)} | {med('wall'):.1f} | "
                     f"{clips / med('wall'):.2f} | {med('cpu'):.1f} | "
                     f"{max(r['processes'] for r in rs)} | "
                     f"{max(r['others_cores'] for r in rs):.2f} |")
    if len(sizes) >= 2:
        first, last = sizes[0], sizes[-1]
        a = statistics.median(r["peak_tree_mb"] for r in results[first])
        b = statistics.median(r["peak_tree_mb"] for r in results[last])
        ca = statistics.median(r["children_maxrss_mb"] for r in results[first])
        cb = statistics.median(r["children_maxrss_mb"] for r in results[last])
        lines += ["", f"From {4 * first} to {4 * last} clips ({last / first:.3g}x): peak RSS "
                      f"{b - a:+.0f} MB ({100 * (b - a) / a:+.1f}%), ru_maxrss {cb - ca:+.0f} MB "
                      f"({100 * (cb - ca) / ca:+.1f}%); {(b - a) / (4 * (last - first)):+.2f} MB "
                      f"per extra clip."]
    lines += ["", "Every run: peak tree MB / ru_maxrss MB / wall s / when the peak came / "
                  "median tree RSS by quarter of the run (sampled once a second, MB):", ""]
    for v in sizes:
        lines.append(f"- {4 * v} clips: " + "; ".join(
            f"{r['peak_tree_mb']:.0f} / {r['children_maxrss_mb']:.0f} / {r['wall']:.1f} s / "
            f"at {r['peak_at']:.1f} s / "
            + ", ".join(f"{q:.0f}" for q in quarter_medians(r["timeline"]))
            for r in results[v]))
    busiest = max(r["others_cores"] for rs in results.values() for r in rs)
    if busiest > 0.1:
        lines += ["", f"Note: other processes kept up to {busiest:.2f} cores busy during a run; "
                      f"this changes the seconds, hardly the memory."]
    return "\n".join(lines)


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:  # the measuring wrapper around one build
        at = argv.index("--child")
        wrapper = argparse.ArgumentParser()
        wrapper.add_argument("--interval", type=float, default=0.05)
        child(wrapper.parse_args(argv[:at]).interval, argv[at + 1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos-per-class", type=int, nargs="+", default=[10, 40],
                        help="synthetic source sizes, clips per class (4 classes; at least 2) "
                             "[10 40]")
    parser.add_argument("--size", type=int, default=224, help="frame side S [224]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--workers", type=int, default=2, help="build --workers [2]")
    parser.add_argument("--backend", choices=["zarr", "h5"], default="zarr")
    parser.add_argument("--repeats", type=int, default=1, help="builds per size [1]")
    parser.add_argument("--interval", type=float, default=0.05,
                        help="RSS polling interval in seconds [0.05]")
    parser.add_argument("--seed", type=int, default=0, help="synthetic source seed [0]")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each build, wait up to SECONDS for other load to fall "
                             "under 0.25 cores [0]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the sources here (reused across runs) "
                             "[a temporary folder, removed at the end]")
    args = parser.parse_args(argv)

    with workdir_or_temporary(args.workdir, "flowstore-bench-memory-") as workdir:
        sources = {v: prepare_source(workdir, v, args.seed) for v in args.videos_per_class}
        store = workdir / ("memory.h5" if args.backend == "h5" else "memory.zarr")
        results: dict[int, list[dict]] = {v: [] for v in args.videos_per_class}
        for _ in range(args.repeats):
            for v in args.videos_per_class:
                if args.wait_quiet:
                    wait_for_quiet(args.wait_quiet)
                r = measure(sources[v], store, args)
                results[v].append(r)
                print(f"{4 * v} clips: peak tree {r['peak_tree_mb']:.0f} MB, ru_maxrss "
                      f"{r['children_maxrss_mb']:.0f} MB, {r['wall']:.1f}s, "
                      f"others {r['others_cores']:.2f} cores", file=sys.stderr, flush=True)
        if store.exists():
            shutil.rmtree(store) if store.is_dir() else store.unlink()
        if args.workdir is not None:  # every run's once-a-second RSS timeline, for a closer look
            (workdir / "build_memory-runs.json").write_text(json.dumps(
                {str(4 * v): [{k: r[k] for k in r if k != "output"} for r in rs]
                 for v, rs in results.items()}, indent=1))
        print(report(results, sources, args))


if __name__ == "__main__":
    main()
