"""Peak memory of `flowstore build` vs the source's resolution, 360p to 4K; it should be flat.

A worker resizes each frame it keeps as soon as it is decoded (flowstore.extraction.video), so
what it holds follows the output size S, not the source: one full-resolution frame plus the
resized ones. Before that, a worker kept every candidate frame (~48 at T=16) at full resolution
until the clip's last frame, about 1.2 GB for a 4K clip. This script measures it through the
real user path: it writes one `videofolder` source per resolution (same clips, same length,
MJPG, written frame by frame with cv2.VideoWriter), builds each with the `flowstore` CLI in a
subprocess, and reports the peak RSS of the build's process tree (polled, and the kernel's
ru_maxrss), using build_memory.py's measuring wrapper.

`--baseline ROOT` measures a second flowstore tree side by side (its code put first on
PYTHONPATH, the same console script and interpreter), e.g. the commit before this change:

    mkdir /tmp/flowstore-before && git archive 0ae7ab9 flowstore | tar -x -C /tmp/flowstore-before
    python benchmarks/build_memory_resolution.py --baseline /tmp/flowstore-before
    python benchmarks/build_memory_resolution.py --heights 360 2160 --frames 60 --workers 2
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

import build_memory  # noqa: E402  (its --child wrapper measures one build)
from build_workers import (flowstore_command, header, refuse, refusing_bad_input,  # noqa: E402
                           workdir_or_temporary)

HERE = Path(__file__).resolve().parents[1]
#: Source heights and their 16:9 widths.
WIDTHS = {360: 640, 480: 854, 720: 1280, 1080: 1920, 1440: 2560, 2160: 3840}
CLASSES = ("left", "right")


def write_clip(path: Path, width: int, height: int, n_frames: int, direction: int,
               seed: int) -> None:
    """A smooth random texture sliding 2 px a frame, MJPG, written one frame at a time (the
    generator never holds more than two frames, even at 4K)."""
    import numpy as np

    from flowstore.extraction._cv import cv2

    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    texture = np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC),
                      0, 255).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write MJPG video {path}")
    try:
        for t in range(n_frames):
            writer.write(np.roll(texture, (t, 2 * t * direction), axis=(0, 1)))
    finally:
        writer.release()


def prepare_source(workdir: Path, height: int, args: argparse.Namespace) -> Path:
    """SOURCE/<class>/clip_K.avi at one resolution; a later run with the same options reuses it."""
    width = WIDTHS[height]
    source = workdir / f"src-{height}p-{args.frames}f-{args.clips_per_class}per-class"
    marker = source / ".complete"
    if marker.is_file():
        return source
    if source.exists():
        shutil.rmtree(source)
    start = time.perf_counter()
    for c, name in enumerate(CLASSES):
        (source / name).mkdir(parents=True)
        for k in range(args.clips_per_class):
            write_clip(source / name / f"clip_{k}.avi", width, height, args.frames,
                       1 if c == 0 else -1, seed=1000 * c + k)
    marker.write_text("")
    print(f"wrote {len(CLASSES) * args.clips_per_class} clips of {width}x{height} to {source} "
          f"in {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    return source


def code_version(root: Path) -> str:
    """'abc1234' (+ ' with local changes') of a flowstore checkout, or its path."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "flowstore"], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(root)
    return head + (" with local changes to flowstore/" if dirty else "")


def measure(code: Path, source: Path, store: Path, args: argparse.Namespace) -> dict:
    """One build of `source` with the flowstore code at `code`, through build_memory's wrapper."""
    if store.exists():
        shutil.rmtree(store)
    command = [*flowstore_command(), "build", "videofolder", "--source", str(source),
               "--store", str(store), "--workers", str(args.workers), "--size",
               str(args.size), "--steps", str(args.steps), "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(code), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, build_memory.__file__, "--interval",
                           str(args.interval), "--child", *command],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"measuring wrapper failed:\n{done.stdout}{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["returncode"] != 0:
        raise SystemExit(f"build failed ({result['returncode']}) with {code}: "
                         f"{' '.join(command)}\n{result['output']}")
    shutil.rmtree(store)
    return result


def report(results: dict[str, dict[int, list[dict]]], codes: dict[str, Path],
           args: argparse.Namespace) -> str:
    labels = list(results)
    lines = [
        "## Peak memory of `flowstore build` vs source resolution",
        "",
        header(__file__),
        "- code: " + "; ".join(f"{label}: {codes[label]}" + (
            "" if code_version(codes[label]) == str(codes[label])
            else f" ({code_version(codes[label])})") for label in labels),
        f"- sources: {len(CLASSES)} classes x {args.clips_per_class} clips, {args.frames} frames "
        f"each, MJPG, a sliding texture; one source per resolution",
        f"- each run: `flowstore build videofolder --source SRC --store STORE.zarr --workers "
        f"{args.workers} --size {args.size} --steps {args.steps} --quiet` on a fresh store; "
        f"peak RSS of the process tree polled every {args.interval * 1000:.0f} ms; "
        f"ru_maxrss of the build process in brackets; median of {args.repeats}",
        "",
        "| source | one BGR frame (MB) | "
        + " | ".join(f"{label}: peak RSS (MB) [ru_maxrss]" for label in labels) + " | "
        + " | ".join(f"{label}: CPU s (wall s)" for label in labels) + " |",
        "|---|---:|" + "---:|" * (2 * len(labels)),
    ]
    for height in args.heights:
        width = WIDTHS[height]
        row = [f"{width}x{height} ({height}p)", f"{width * height * 3 / 2**20:.1f}"]
        med = lambda label, key: statistics.median(  # noqa: E731
            r[key] for r in results[label][height])
        row += [f"{med(label, 'peak_tree_mb'):.0f} [{med(label, 'children_maxrss_mb'):.0f}]"
                for label in labels]
        row += [f"{med(label, 'cpu'):.1f} ({med(label, 'wall'):.1f})" for label in labels]
        lines.append("| " + " | ".join(row) + " |")
    lo, hi = args.heights[0], args.heights[-1]
    lines.append("")
    for label in labels:
        a = statistics.median(r["peak_tree_mb"] for r in results[label][lo])
        b = statistics.median(r["peak_tree_mb"] for r in results[label][hi])
        lines.append(f"- {label}: {lo}p -> {hi}p peak RSS {a:.0f} -> {b:.0f} MB "
                     f"({b - a:+.0f} MB, x{b / a:.2f})")
    busiest = max(r["others_cores"] for by in results.values() for rs in by.values()
                  for r in rs)
    if busiest > 0.1:
        lines += ["", f"Note: other processes kept up to {busiest:.2f} cores busy during a run; "
                      f"this changes the wall seconds, hardly the memory or the CPU seconds."]
    return "\n".join(lines)


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heights", type=int, nargs="+", default=[360, 720, 1080, 2160],
                        choices=sorted(WIDTHS), help="source heights, 16:9 [360 720 1080 2160]")
    parser.add_argument("--frames", type=int, default=80, help="frames per clip [80]")
    parser.add_argument("--clips-per-class", type=int, default=2,
                        help=f"clips per class ({len(CLASSES)} classes) [2]")
    parser.add_argument("--size", type=int, default=224, help="frame side S [224]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--workers", type=int, default=1, help="build --workers [1]")
    parser.add_argument("--repeats", type=int, default=1, help="builds per resolution [1]")
    parser.add_argument("--interval", type=float, default=0.05,
                        help="RSS polling interval in seconds [0.05]")
    parser.add_argument("--baseline", type=Path, default=None, metavar="ROOT",
                        help="also measure the flowstore checkout at ROOT (e.g. an older "
                             "commit), side by side")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the sources here (reused across runs) "
                             "[a temporary folder, removed at the end]")
    args = parser.parse_args(argv)
    args.heights = sorted(set(args.heights))

    codes = {"this checkout": HERE}
    if args.baseline is not None:
        if not (args.baseline / "flowstore" / "__init__.py").is_file():
            refuse(f"--baseline {args.baseline} is not a flowstore checkout")
        codes = {"baseline": args.baseline.resolve(), **codes}
    with workdir_or_temporary(args.workdir, "flowstore-bench-resolution-") as workdir:
        sources = {h: prepare_source(workdir, h, args) for h in args.heights}
        results: dict[str, dict[int, list[dict]]] = {
            label: {h: [] for h in args.heights} for label in codes}
        for _ in range(args.repeats):
            for height in args.heights:
                for label, code in codes.items():  # interleaved: both see the same load
                    r = measure(code, sources[height], workdir / "store.zarr", args)
                    results[label][height].append(r)
                    print(f"{height}p {label}: peak tree {r['peak_tree_mb']:.0f} MB, ru_maxrss "
                          f"{r['children_maxrss_mb']:.0f} MB, {r['cpu']:.1f} CPU s, "
                          f"{r['wall']:.1f}s, "
                          f"others {r['others_cores']:.2f} cores", file=sys.stderr, flush=True)
        print(report(results, codes, args))


if __name__ == "__main__":
    main()
