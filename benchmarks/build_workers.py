"""How `flowstore build tvhi` scales from `--workers 1` to `--workers 2` (or any list of counts).

One synthetic TV-HI source (flowstore's own generator, TV-like resolutions) is written once;
then the real user path, the `flowstore` CLI in a subprocess, builds a fresh store from it for
each worker count, interleaved (1, 2, 1, 2, ...), and the median wall time per count is reported
as a markdown table with the machine, the date and the exact command line.

The machine this project runs on is shared, so next to each run's wall time the script records
the CPU seconds the build used (user + sys of the child) and the CPU seconds that *other*
processes used meanwhile (from /proc/stat): a speedup measured while others were busy is not a
property of flowstore, and the table says so.

`--profile N` adds a single-threaded breakdown of where one clip's seconds go (decode, colour
conversion, resize, Farneback, float16 cast, store write), measured as process CPU time, which
contention does not inflate.

    python benchmarks/build_workers.py                       # 30 clips/class, 2 repeats
    python benchmarks/build_workers.py --videos-per-class 20 --repeats 3 --profile 40
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NoReturn, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# -- machine and contention -------------------------------------------------------------------


def machine_line() -> str:
    """'N cores (affinity), CPU model, RAM, OS': the machine a number was measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from flowstore.parallel import usable_cores

    cores = usable_cores()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cores} cores (nproc), {model}, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def _busy_jiffies() -> int:
    """Jiffies the whole machine spent busy (not idle, not waiting on I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)


def wait_for_quiet(max_seconds: float, threshold: float = 0.25) -> float:
    """Wait (at most `max_seconds`) until the machine's other load drops below `threshold` cores.

    Returns the load last seen. On a shared machine this keeps runs away from other people's
    test suites; the load measured during the run itself is reported either way.
    """
    tick = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + max_seconds
    while True:
        before = _busy_jiffies()
        time.sleep(2.0)
        load = (_busy_jiffies() - before) / tick / 2.0
        if load < threshold or time.monotonic() >= deadline:
            return load


def _renice(nice: int) -> None:
    """In the child before exec: its own session, hence its own scheduler autogroup, at `nice`.

    With CONFIG_SCHED_AUTOGROUP (on here: /proc/sys/kernel/sched_autogroup_enabled), a plain
    nice value only ranks processes within one session; against other sessions' processes it
    is the autogroup's nice that counts.
    """
    os.setsid()
    try:
        Path("/proc/self/autogroup").write_text(str(nice))
    except OSError:
        pass
    os.setpriority(os.PRIO_PROCESS, 0, nice)


@dataclass
class Timed:
    wall: float  # seconds
    cpu: float  # CPU seconds of the measured child processes (user + sys)
    others: float  # CPU seconds every other process on the machine used meanwhile

    @property
    def others_cores(self) -> float:
        """Average number of cores other processes kept busy during the measurement."""
        return self.others / self.wall if self.wall else 0.0


def run_timed(command: list[str], nice: int = 0) -> tuple[subprocess.CompletedProcess, Timed]:
    """Run `command` to completion; its wall time, its CPU time and everyone else's CPU time.

    `nice` < 0 (root only) raises the child's scheduling priority, so that other people's
    processes on a shared machine take less of the cores it is being timed on.
    """
    tick = os.sysconf("SC_CLK_TCK")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = _busy_jiffies()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          preexec_fn=(lambda: _renice(nice)) if nice else None)
    wall = time.perf_counter() - start
    busy = (_busy_jiffies() - busy) / tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return done, Timed(wall=wall, cpu=cpu, others=max(0.0, busy - cpu))


def flowstore_command() -> list[str]:
    """The `flowstore` console script of this interpreter's environment (what users type)."""
    beside = Path(sys.executable).with_name("flowstore")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("flowstore")
    return [found] if found else [sys.executable, "-m", "flowstore"]


def command_line(script: str | None = None, argv: list[str] | None = None) -> str:
    """The command that ran this benchmark: this process's own, or, when a benchmark's `main`
    is called with an argv (as the smoke tests do), `python benchmarks/SCRIPT ARGV`, which is
    what a reader would type to measure again (sys.argv is then pytest's)."""
    if argv is None:
        return shlex.join([Path(sys.executable).name, *sys.argv])
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *argv])


def header(script: str, argv: list[str] | None = None) -> str:
    """The command, machine and date lines every benchmark prints (benchmarks/README.md
    promises them): a pasted table must say how, where and when it was measured."""
    return "\n".join([f"- command: `{command_line(script, argv)}`",
                      f"- machine: {machine_line()}",
                      f"- date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}"])


@contextlib.contextmanager
def workdir_or_temporary(workdir: Path | None, prefix: str) -> Iterator[Path]:
    """`--workdir`, made if absent and kept; without it a temporary folder removed at the end
    (benchmarks/README.md's common options: a benchmark leaves nothing behind unless asked)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as temporary:
        yield Path(temporary)


def refuse(message: str) -> NoReturn:
    """Stop on a size or input the benchmark cannot measure: one `error:` line, exit code 2
    (the project's bad-input contract), never a traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def refusing_bad_input(main: Callable[P, R]) -> Callable[P, R]:
    """A benchmark's entry point (`main`), with what flowstore or trainers refuse on purpose
    (a `FlowstoreError`: a store or source path that is missing or of the wrong kind, a run
    that is not one) refused as the CLIs refuse it: one `error:` line, exit code 2
    (benchmarks/README.md). Only those: any other exception is a bug and keeps its traceback."""
    from flowstore.errors import FlowstoreError

    @functools.wraps(main)
    def entry_point(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return main(*args, **kwargs)
        except FlowstoreError as error:
            refuse(str(error))

    return entry_point


def check_source(source: Path) -> None:
    """A `--source` folder checked before any work, by flowstore's own check (an existing,
    non-empty folder; `refusing_bad_input` refuses what it raises): a wrong path is one line,
    not a header, a temporary folder and a failed child build first."""
    from flowstore.datasets.base import Dataset

    Dataset.check_source_folder(source)


# -- the measurement --------------------------------------------------------------------------
_BUILD_SECONDS = re.compile(r"in ([0-9.]+)s \(fingerprint")


@dataclass
class Run:
    workers: int
    timed: Timed
    build_seconds: float | None  # what flowstore itself reports (no interpreter start-up)


def build_once(source: Path, store: Path, workers: int, size: int, steps: int,
               nice: int = 0) -> Run:
    if store.exists():
        shutil.rmtree(store)
    command = [*flowstore_command(), "build", "tvhi", "--source", str(source), "--store",
               str(store), "--workers", str(workers), "--size", str(size), "--steps", str(steps),
               "--quiet"]
    done, timed = run_timed(command, nice)
    if done.returncode != 0:
        raise SystemExit(f"build failed ({done.returncode}): {shlex.join(command)}\n"
                         f"{done.stdout}{done.stderr}")
    match = _BUILD_SECONDS.search(done.stdout)
    return Run(workers, timed, float(match.group(1)) if match else None)


def prepare_source(workdir: Path, videos_per_class: int, seed: int) -> Path:
    """Write the synthetic source once; a later run with the same options reuses it."""
    from flowstore.errors import ParameterError
    from flowstore.synth.tvhi import SynthTVHIConfig, write_synthetic_tvhi

    try:  # the generator's own limits (2 clips a class at least: one per TV-HI set)
        config = SynthTVHIConfig(videos_per_class=videos_per_class, negatives=0, seed=seed)
    except ParameterError as error:
        refuse(f"--videos-per-class {videos_per_class}: {error}")
    source = workdir / f"synth-tvhi-{videos_per_class}per-class-seed{seed}"
    if (source / "readme.txt").is_file():
        return source
    start = time.perf_counter()
    write_synthetic_tvhi(source, config)
    print(f"wrote {4 * videos_per_class} synthetic clips to {source} in "
          f"{time.perf_counter() - start:.0f}s", file=sys.stderr)
    return source


def source_summary(source: Path) -> str:
    """'N clips, F frames, resolutions ...' of a TV-HI source (read with OpenCV)."""
    from flowstore.extraction._cv import cv2

    clips = sorted(p for p in source.glob("*.avi") if not p.name.startswith("negative"))
    frames, sizes = 0, set()
    for path in clips:
        capture = cv2.VideoCapture(str(path))
        frames += int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        sizes.add(f"{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x"
                  f"{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}")
        capture.release()
    return (f"{len(clips)} clips, {frames} frames (container count), "
            f"resolutions {', '.join(sorted(sizes))}")


def report(runs: list[Run], clips: int, args: argparse.Namespace, source: Path) -> str:
    counts = list(dict.fromkeys(r.workers for r in runs))
    median = {w: statistics.median(r.timed.wall for r in runs if r.workers == w) for w in counts}
    base = median[counts[0]]
    lines = [
        f"## flowstore build tvhi: --workers {' vs '.join(map(str, counts))}",
        "",
        header(__file__),
        f"- source: synthetic TV-HI ({source_summary(source)})",
        f"- each run: `flowstore build tvhi --source SRC --store STORE.zarr --workers W "
        f"--size {args.size} --steps {args.steps} --quiet` on a fresh store; "
        f"order {', '.join(str(r.workers) for r in runs)}; median of {args.repeats}"
        + (f"; builds run at niceness {args.nice}" if args.nice else ""),
        "",
        "| workers | seconds (median wall) | clips/s | speedup | build s (flowstore's own) "
        "| CPU s | CPU util | other processes (cores busy) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in counts:
        mine = [r for r in runs if r.workers == w]
        build_s = [r.build_seconds for r in mine if r.build_seconds is not None]
        cpu = statistics.median(r.timed.cpu for r in mine)
        lines.append(
            f"| {w} | {median[w]:.1f} | {clips / median[w]:.2f} | {base / median[w]:.2f}x | "
            f"{statistics.median(build_s):.1f} | {cpu:.1f} | {cpu / median[w]:.2f} | "
            f"{statistics.median(r.timed.others_cores for r in mine):.2f} |"
            if build_s else f"| {w} | {median[w]:.1f} | | | | | | |")
    lines += ["", "Every run, in order:", "",
              "| # | workers | wall s | build s | CPU s | other processes (cores busy) |",
              "|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r.workers} | {r.timed.wall:.1f} | {r.build_seconds or 0:.1f} | "
                     f"{r.timed.cpu:.1f} | {r.timed.others_cores:.2f} |")
    busiest = max(r.timed.others_cores for r in runs)
    if busiest > 0.1:
        lines += ["", f"Note: other processes kept up to {busiest:.2f} cores busy during a run; "
                      f"wall times and the speedup are only as clean as the machine was."]
    return "\n".join(lines)


# -- the single-threaded profile ---------------------------------------------------------------


def profile(source: Path, limit: int, size: int, steps: int, workdir: Path) -> str:
    """Where the CPU seconds of a one-worker build go, phase by phase, on `limit` clips.

    Mirrors `flowstore.extraction.video.extract_video` step by step (same frame selection, same
    helpers) and writes through flowstore's own store layer, so each phase is the real cost.
    Timed with process CPU time: zarr's codec threads and FFmpeg's decoder threads are counted,
    and other processes on the machine are not.
    """
    import numpy as np
    import zarr

    from flowstore.datasets import get_dataset
    from flowstore.extraction import video
    from flowstore.extraction._cv import cv2
    from flowstore.params import VideoParams
    from flowstore.store import create_store

    params = VideoParams(size=size, steps=steps)
    clips = sorted(p for p in source.glob("*.avi") if not p.name.startswith("negative"))[:limit]
    store_path = workdir / "profile.zarr"
    if store_path.exists():
        shutil.rmtree(store_path)
    specs = get_dataset("tvhi").specs(params)
    store = create_store(store_path, attrs={}, specs=specs,
                         columns={"id": np.array([p.stem for p in clips], dtype=str)},
                         num_samples=len(clips))  # (label and split: left at their fill)
    phases: dict[str, float] = {}
    counts = {"decoded": 0, "converted": 0, "needed": 0}

    def timed(name: str, fn, *a, **k):
        start = time.process_time()
        value = fn(*a, **k)
        phases[name] = phases.get(name, 0.0) + time.process_time() - start
        return value

    total = time.process_time()
    for index, path in enumerate(clips):
        capture = timed("open + container header", cv2.VideoCapture, str(path))
        keep = video._candidate_frames(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), params)
        kept, n = {}, 0
        while timed("decode (grab: demux + codec)", capture.grab):
            if n in keep:
                _, frame = timed("retrieve (YUV to BGR)", capture.retrieve)
                kept[n] = timed("resize INTER_AREA + BGR2RGB", video.resize_rgb, frame, size)
            n += 1
        capture.release()
        needed = video.frames_needed(n, params)
        if needed - kept.keys():  # the second pass extract_video would make
            raise SystemExit(f"{path.name}: hint missed frames; profile does not model pass 2")
        counts["decoded"] += n
        counts["converted"] += len(kept)
        counts["needed"] += len(needed)
        starts = video.flow_positions(n, steps)
        flow = np.empty((steps, size, size, 2), dtype=params.flow_dtype)
        for k, t in enumerate(starts):
            f32 = timed("Farneback x T (+ RGB2GRAY)", video.optical_flow, kept[int(t)],
                        kept[int(t) + 1], params.flow)
            timed(f"cast flow to {params.flow_dtype}", flow.__setitem__, k, f32)
        frames = np.stack([kept[int(t)] for t in starts])
        timed("store write middle_frame + frames", lambda: (
            store.write("middle_frame", index, kept[n // 2]), store.write("frames", index, frames)))
        timed("store write flow", store.write, "flow", index, flow)
    total = time.process_time() - total
    store.close()
    n_clips = len(clips)
    lines = [
        f"## Where a one-worker build's CPU goes ({n_clips} clips of {source.name}, "
        f"S={size}, T={steps})",
        "",
        header(__file__),
        f"- per clip: {counts['decoded'] / n_clips:.1f} frames decoded, "
        f"{counts['converted'] / n_clips:.1f} converted + resized, "
        f"{counts['needed'] / n_clips:.1f} actually needed",
        f"- OpenCV threads {cv2.getNumThreads()}; FFmpeg decoder threads per capture "
        f"{_ffmpeg_threads(clips[0])}; zarr threading.max_workers "
        f"{zarr.config.get('threading.max_workers')}, async.concurrency "
        f"{zarr.config.get('async.concurrency')}",
        "",
        "| phase | CPU s | ms/clip | share |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds:.2f} | {1000 * seconds / n_clips:.1f} | "
                     f"{100 * seconds / total:.1f}% |")
    rest = total - sum(phases.values())
    lines.append(f"| (Python glue, rest) | {rest:.2f} | {1000 * rest / n_clips:.1f} | "
                 f"{100 * rest / total:.1f}% |")
    lines.append(f"| **total** | {total:.2f} | {1000 * total / n_clips:.1f} | 100% |")
    return "\n".join(lines)


def _ffmpeg_threads(path: Path) -> str:
    from flowstore.extraction._cv import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return f"{capture.get(cv2.CAP_PROP_N_THREADS):.0f}"
    finally:
        capture.release()


# -- main -------------------------------------------------------------------------------------


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="frame side S [224]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--videos-per-class", type=int, default=30,
                        help="synthetic clips per class (4 classes; at least 2) [30]")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count [2]")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts to compare, the first is the baseline [1 2]")
    parser.add_argument("--seed", type=int, default=0, help="synthetic source seed [0]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the source and stores here (reused across runs) "
                             "[a temporary folder, removed at the end]")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile a single-threaded build of the first N clips")
    parser.add_argument("--profile-source", type=Path, default=None, metavar="DIR",
                        help="profile the clips of this TV-HI folder instead of the synthetic "
                             "source (e.g. the real clips in ../shared/data/tvhi)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each run, wait up to SECONDS for other processes to go "
                             "below 0.25 busy cores (shared machines) [0: don't wait]")
    parser.add_argument("--nice", type=int, default=0,
                        help="run each build at this niceness; negative (root only) shields it "
                             "from other processes on a shared machine [0]")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip the worker comparison (e.g. only --profile)")
    args = parser.parse_args(argv)
    if args.profile_source is not None:
        check_source(args.profile_source)

    with workdir_or_temporary(args.workdir, "flowstore-bench-workers-") as workdir:
        source = None
        if not args.no_scaling or args.profile_source is None:
            source = prepare_source(workdir, args.videos_per_class, args.seed)
        if not args.no_scaling:
            store = workdir / "bench.zarr"
            runs = []
            for repeat in range(args.repeats):
                for workers in args.workers:
                    if args.wait_quiet:
                        wait_for_quiet(args.wait_quiet)
                    run = build_once(source, store, workers, args.size, args.steps, args.nice)
                    print(f"run {len(runs) + 1}: workers={workers} wall={run.timed.wall:.1f}s "
                          f"cpu={run.timed.cpu:.1f}s others={run.timed.others_cores:.2f} cores",
                          file=sys.stderr, flush=True)
                    runs.append(run)
            shutil.rmtree(store, ignore_errors=True)
            print(report(runs, 4 * args.videos_per_class, args, source))
        if args.profile:
            print()
            print(profile(args.profile_source or source, args.profile, args.size, args.steps,
                          workdir))
            shutil.rmtree(workdir / "profile.zarr", ignore_errors=True)


if __name__ == "__main__":
    main()
