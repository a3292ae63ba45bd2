"""Throughput of `flowstore build tvhi` on the real TV-HI clips, beside a baseline and a limit.

In one run, on the same clips (the 200 class clips of /work/shared/data/tvhi by default):

(a) flowstore: `flowstore build tvhi --source ... --workers W` (the CLI in a subprocess, default
    S=224, T=16, fresh store): total seconds, clips/s, and the store's size on disk
    (`flowstore inspect --json`, `bytes_stored`).
(b) seed-style baseline: what the source report's notebook did, in one process with OpenCV's
    default settings: for each clip decode every frame, convert and resize every frame to S x S,
    compute Farneback for EVERY consecutive pair, then keep the T flows at the flow positions,
    and save the middle frame, the T frames and the T flows (float32, as Farneback returns
    them) as `.npy` files.
(c) limit: per clip, the CPU seconds of only the work the contract needs (decode every frame,
    convert + resize only the needed frames, Farneback of exactly the T pairs), single-threaded,
    summed over the clips and divided by W: the wall time W perfectly used cores would need with
    no store, no scheduler and no start-up.

Wall times are taken next to the CPU seconds that other processes used meanwhile (the machine
is shared; see benchmarks/README.md).

    python benchmarks/build_throughput.py               # all 200 clips, several minutes
    python benchmarks/build_throughput.py --limit 20    # quick try
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tvhi"

# Machine description, busy-CPU accounting and timed subprocesses are build_workers.py's.
from build_workers import (check_source, flowstore_command, header, refuse,  # noqa: E402
                          refusing_bad_input, run_timed, Timed, wait_for_quiet, workdir_or_temporary)

def _checked(done: subprocess.CompletedProcess, command: list[str]) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(command)}\n"
                         f"{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return done


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- which clips ------------------------------------------------------------------------------


def select_source(source: Path, limit: int | None, workdir: Path) -> tuple[Path, list[str]]:
    """The source folder to build from and its clip ids, in manifest order.

    Without --limit that is the real folder itself (the 200 clips its readme lists). With
    --limit N, a folder of links to N clips, taken round-robin over class and set, and a readme
    that lists only them, so `flowstore build` sees exactly those N clips.
    """
    from flowstore.datasets.tvhi import CLASSES, README, TVHI, format_readme, parse_readme

    manifest = TVHI().manifest(source)
    ids = [row.id for row in manifest.rows]
    if limit is None or limit >= len(ids):
        return source, ids
    sets = parse_readme((source / README).read_text(errors="replace"))
    fewest = len(CLASSES) * len(sets)  # a TV-HI readme lists a clip of every class in every set
    if limit < fewest:
        refuse(f"--limit {limit}: the smallest TV-HI source lists a clip of each of its "
               f"{len(CLASSES)} classes in each of its {len(sets)} sets, so --limit must be at "
               f"least {fewest}")
    queues = [(number, c, list(sets[number][c])) for c in CLASSES for number in sorted(sets)]
    chosen: dict[int, dict[str, list[int]]] = {n: {c: [] for c in CLASSES} for n in sets}
    taken = 0
    while taken < limit and any(q for _, _, q in queues):
        for number, c, queue in queues:
            if queue and taken < limit:
                chosen[number][c].append(queue.pop(0))
                taken += 1
    limited = workdir / f"tvhi-first-{limit}"
    if limited.exists():
        shutil.rmtree(limited)
    limited.mkdir(parents=True)
    for number in chosen:
        for c in CLASSES:
            for i in chosen[number][c]:
                name = f"{c}_{i:04d}.avi"
                (limited / name).symlink_to((source / name).resolve())
    (limited / README).write_text(format_readme(chosen))
    manifest = TVHI().manifest(limited)
    return limited, [row.id for row in manifest.rows]


# -- (b) and (c) run in child processes, so each has its own OpenCV settings -------------------


def baseline_child(source: Path, ids: list[str], out: Path, size: int, steps: int) -> None:
    """Seed-style extraction in this process; prints a JSON line with the clip count."""
    import cv2  # plain OpenCV, default threads: what the seed's notebook ran with
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    for sample in ids:
        capture = cv2.VideoCapture(str(source / f"{sample}.avi"))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            frames.append(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA))
        capture.release()
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        flows = [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 5, 3, 5, 1.2, 0)
                 for a, b in zip(grey[:-1], grey[1:])]
        n = len(frames)
        starts = np.round(np.linspace(0, n - 2, steps)).astype(np.int64)
        np.save(out / f"{sample}_middle.npy", frames[n // 2])
        np.save(out / f"{sample}_frames.npy", np.stack([frames[t] for t in starts]))
        np.save(out / f"{sample}_flow.npy", np.stack([flows[t] for t in starts]))
    print(json.dumps({"clips": len(ids), "opencv_threads": cv2.getNumThreads()}))


def limit_child(source: Path, ids: list[str], size: int, steps: int) -> None:
    """Per clip, CPU seconds of decode + needed conversions + T Farneback pairs, one thread."""
    from flowstore.extraction._cv import cv2  # cv2.setNumThreads(1): one core
    from flowstore.extraction.flow import optical_flow
    from flowstore.extraction.video import flow_positions, frames_needed, resize_rgb
    from flowstore.params import FarnebackParams, VideoParams

    params = FarnebackParams()
    per_clip = {}
    for sample in ids:
        path = str(source / f"{sample}.avi")
        capture = cv2.VideoCapture(path)  # untimed pass: n, so that only needed frames convert
        n = 0
        while capture.grab():
            n += 1
        capture.release()
        needed = frames_needed(n, VideoParams(size=size, steps=steps))
        start = time.process_time()
        capture = cv2.VideoCapture(path)
        frames, i = {}, 0
        while capture.grab():
            if i in needed:
                frames[i] = resize_rgb(capture.retrieve()[1], size)
            i += 1
        capture.release()
        for t in flow_positions(n, steps):
            optical_flow(frames[int(t)], frames[int(t) + 1], params)
        per_clip[sample] = time.process_time() - start
    print(json.dumps({"per_clip_cpu": per_clip, "opencv_threads": cv2.getNumThreads()}))


# -- the three measurements -------------------------------------------------------------------


@dataclass
class Row:
    name: str
    how: str
    seconds: float
    timed: Timed | None
    bytes_on_disk: int | None = None
    note: str = ""


def measure_build(source: Path, store: Path, workers: int, size: int, steps: int,
                  clips: int, nice: int = 0) -> Row:
    if store.exists():
        shutil.rmtree(store)
    command = [*flowstore_command(), "build", "tvhi", "--source", str(source), "--store",
               str(store), "--workers", str(workers), "--size", str(size), "--steps", str(steps),
               "--quiet"]
    done, timed = run_timed(command, nice)
    _checked(done, command)
    match = re.search(r"in ([0-9.]+)s \(fingerprint", done.stdout)
    inspect = [*flowstore_command(), "inspect", str(store), "--json", "--bytes"]
    summary = json.loads(_checked(subprocess.run(inspect, capture_output=True, text=True),
                                  inspect).stdout)
    if summary["done"] != clips:
        raise SystemExit(f"store holds {summary['done']} done samples, expected {clips}: "
                         f"{summary['failures']}")
    own = f"; flowstore's own timer {float(match.group(1)):.1f}s" if match else ""
    return Row(f"(a) flowstore build, --workers {workers}",
               f"`flowstore build tvhi --source SRC --store STORE.zarr --workers {workers} "
               f"--size {size} --steps {steps} --quiet`", timed.wall, timed,
               summary["bytes_stored"],
               f"zarr, flow float16; du {_dir_bytes(store) / 2**20:.1f} MiB{own}")


def _self_command(mode: str, source: Path, ids_file: Path, args: argparse.Namespace,
                  extra: list[str] = ()) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), mode, "--source", str(source),
            "--ids", str(ids_file), "--size", str(args.size), "--steps", str(args.steps), *extra]


def measure_baseline(source: Path, ids_file: Path, out: Path, args: argparse.Namespace) -> Row:
    if out.exists():
        shutil.rmtree(out)
    command = _self_command("_baseline", source, ids_file, args, ["--out", str(out)])
    done, timed = run_timed(command, args.nice)
    info = json.loads(_checked(done, command).stdout.strip().splitlines()[-1])
    return Row("(b) seed-style baseline, 1 process",
               "decode all, resize all, Farneback on every consecutive pair, keep T, "
               "`.npy` per clip", timed.wall, timed, _dir_bytes(out),
               f"float32 flow + uint8 frames; OpenCV threads {info['opencv_threads']}")


def measure_limit(source: Path, ids_file: Path, args: argparse.Namespace) -> tuple[Row, Timed]:
    command = _self_command("_limit", source, ids_file, args)
    done, timed = run_timed(command, args.nice)
    info = json.loads(_checked(done, command).stdout.strip().splitlines()[-1])
    single = sum(info["per_clip_cpu"].values())
    return Row(f"(c) limit: {args.workers} perfectly used cores",
               f"sum over clips of single-core CPU s for decode + {args.steps} needed Farneback "
               f"pairs, / {args.workers}", single / args.workers, None, None,
               f"single-core sum {single:.1f} CPU s; OpenCV threads {info['opencv_threads']}"), timed


def report(rows: list[Row], clips: int, source: Path, args: argparse.Namespace) -> str:
    build = rows[0].seconds
    lines = [
        f"## flowstore build tvhi throughput on {clips} real TV-HI clips",
        "",
        header(__file__),
        f"- source: {source} (S={args.size}, T={args.steps})"
        + (f"; measurements run at niceness {args.nice}" if args.nice else ""),
        "",
        "| measurement | how | seconds | clips/s | time vs (a) | CPU s | other processes "
        "(cores busy) | on disk | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        cpu = f"{row.timed.cpu:.1f}" if row.timed else ""
        others = f"{row.timed.others_cores:.2f}" if row.timed else ""
        size = f"{row.bytes_on_disk / 2**20:.1f} MiB" if row.bytes_on_disk is not None else ""
        lines.append(f"| {row.name} | {row.how} | {row.seconds:.1f} | {clips / row.seconds:.2f} | "
                     f"{row.seconds / build:.2f}x | {cpu} | {others} | {size} | {row.note} |")
    busiest = max(r.timed.others_cores for r in rows if r.timed)
    if busiest > 0.1:
        lines += ["", f"Note: other processes kept up to {busiest:.2f} cores busy during a "
                      f"measurement; its wall time is only as clean as the machine was."]
    return "\n".join(lines)


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_baseline", "_limit"):
        child = argparse.ArgumentParser()
        for name in ("--source", "--ids", "--out"):
            child.add_argument(name, type=Path)
        child.add_argument("--size", type=int)
        child.add_argument("--steps", type=int)
        a = child.parse_args(argv[1:])
        ids = a.ids.read_text().split()
        if argv[0] == "_baseline":
            baseline_child(a.source, ids, a.out, a.size, a.steps)
        else:
            limit_child(a.source, ids, a.size, a.steps)
        return

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"TV-HI source folder [{DEFAULT_SOURCE}]")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="use only N clips (round-robin over class and set; at least 8, one "
                             "per class and set) [all 200]")
    parser.add_argument("--workers", type=int, default=2, help="flowstore --workers, and the "
                        "cores the limit divides by [2]")
    parser.add_argument("--size", type=int, default=224, help="frame side S [224]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each measurement, wait up to SECONDS for other processes "
                             "to go below 0.25 busy cores (shared machines) [0: don't wait]")
    parser.add_argument("--nice", type=int, default=0,
                        help="run each measurement at this niceness; negative (root only) "
                             "shields it from other processes on a shared machine [0]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the store and the baseline's .npy files here "
                             "[a temporary folder, removed at the end]")
    args = parser.parse_args(argv)
    check_source(args.source)

    with workdir_or_temporary(args.workdir, "flowstore-bench-throughput-") as workdir:
        source, ids = select_source(args.source, args.limit, workdir)
        ids_file = workdir / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")

        def log(message: str, wait: bool = True) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
            if wait and args.wait_quiet:
                wait_for_quiet(args.wait_quiet)

        log(f"(a) flowstore build of {len(ids)} clips, --workers {args.workers}")
        rows = [measure_build(source, workdir / "tvhi.zarr", args.workers, args.size,
                              args.steps, len(ids), args.nice)]
        log(f"    {rows[-1].seconds:.1f}s; (b) seed-style baseline")
        rows.append(measure_baseline(source, ids_file, workdir / "baseline-npy", args))
        log(f"    {rows[-1].seconds:.1f}s; (c) limit")
        limit_row, limit_timed = measure_limit(source, ids_file, args)
        rows.append(limit_row)
        log(f"    {limit_row.seconds:.1f}s (limit run's wall {limit_timed.wall:.1f}s, "
            f"others {limit_timed.others_cores:.2f} cores)", wait=False)
        print(report(rows, len(ids), args.source, args))


if __name__ == "__main__":
    main()
