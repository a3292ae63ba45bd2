"""Planning a build at full dataset scale, without decoding anything (issue 14, item 9).

Times `flowstore.build.plan` (split files read, manifest made, every listed clip's size looked
up, fingerprint hashed) and `open_planned` (the store created: every array, the id/label/split
columns) for

- UCF101: the real `ucfTrainTestlist/` (../shared/data/ucf101; 13,320 clips in fold 1's two
  lists) with an empty placeholder file for every listed clip in `UCF-101/<Class>/`, using the
  first 1/4, 1/2 and all of each class's lines in each list (at least one a class: a class
  with no sample is refused);
- Kinetics: a generated `annotations/train.csv` in the official format (400 classes) of 62,500,
  125,000 and 250,000 rows, plus the real val.csv as the test split (19,906 rows; a generated
  one when the real file is absent), with one empty placeholder clip (a source holding none of
  its clips is refused) and no others (every other size look-up is a failed stat, as for the
  holes of a real copy).

Usage:  python benchmarks/plan_scale.py [--backend zarr|h5] [--workdir DIR] [--data DIR]
                                         [--ucf-fractions F ...] [--kinetics-rows N ...]
Prints a markdown table: rows, wall seconds to plan and to create the store, the CPU seconds of
both and per row, and the time of one write of the build's ledger once every sample has a
recorded size and hash (a build writes only what changed since its last write: this is the
write of a ledger all of whose chunks changed). Linear growth shows as a steady CPU time per row (CPU time, because wall time
on a shared machine measures its other tenants too).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

from flowstore.build import BuildConfig, extraction_opencv, open_planned, plan
from flowstore.ledger import Ledger
from flowstore.params import VideoParams

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refuse, refusing_bad_input  # noqa: E402  (shared)


#: The real data beside the checkout (`--data` to point elsewhere).
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The UCF101 lists a plan copies from `--data`: the classes, then the lists it cuts.
UCF_LISTS = ("classInd.txt", "trainlist01.txt", "testlist01.txt")


def per_class(lines: list[bytes], fraction: float) -> list[bytes]:
    """The first `fraction` of each class's lines (at least one of each: flowstore refuses a
    class with no sample), in the list's order. A line's class is its clip's folder."""
    by_class: dict[bytes, list[bytes]] = {}
    for line in lines:
        if line.strip():
            by_class.setdefault(line.split()[0].split(b"/")[0], []).append(line)
    kept = {id(line) for group in by_class.values()
            for line in group[: max(1, int(round(len(group) * fraction)))]}
    return [line for line in lines if id(line) in kept]


def ucf_lists(data: Path) -> Path:
    """The real UCF101 split lists under `--data` (every plan copies them)."""
    return data / "ucf101" / "ucfTrainTestlist"


def ucf_source(root: Path, fraction: float, data: Path) -> Path:
    """UCF-101/ with empty placeholder clips and the real lists cut to `fraction` of each
    class's lines (at least one a class; classInd.txt whole), CRLF kept."""
    real_lists = ucf_lists(data)
    source = root / f"ucf-{fraction}"
    lists = source / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    shutil.copy(real_lists / "classInd.txt", lists)
    for name in UCF_LISTS[1:]:
        lines = (real_lists / name).read_bytes().splitlines(keepends=True)
        kept = per_class(lines, fraction)
        (lists / name).write_bytes(b"".join(kept))
        for line in kept:
            clip = source / "UCF-101" / line.split()[0].decode()
            clip.parent.mkdir(parents=True, exist_ok=True)
            clip.touch()
    return source


def kinetics_source(root: Path, rows: int, data: Path) -> Path:
    """annotations/train.csv of `rows` generated rows (official columns, quoted labels) and
    the real val.csv; no clips."""
    real_val = data / "kinetics400" / "annotations" / "val.csv"
    source = root / f"kinetics-{rows}"
    (source / "annotations").mkdir(parents=True)
    if real_val.is_file():
        shutil.copy(real_val, source / "annotations" / "val.csv")
        with open(real_val, newline="") as handle:
            labels = sorted({row["label"] for row in csv.DictReader(handle)})
    else:
        labels = [f"action number {k}" for k in range(400)]
        with open(source / "annotations" / "val.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("label", "youtube_id", "time_start", "time_end", "split", "is_cc"))
            for k in range(19906):
                writer.writerow((labels[k % 400], f"v{k:010d}", 0, 10, "val", 0))
    with open(source / "annotations" / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("label", "youtube_id", "time_start", "time_end", "split", "is_cc"))
        for k in range(rows):
            writer.writerow((labels[k % len(labels)], f"t{k:010d}", 10 * (k % 7),
                             10 * (k % 7) + 10, "train", 0))
    # one placeholder clip, row 0's: flowstore refuses a source that holds none of its clips
    # (a wrong --source); every other look-up is still a failed stat
    first = source / "train" / labels[0] / f"t{0:010d}_{0:06d}_{10:06d}.mp4"
    first.parent.mkdir(parents=True)
    first.touch()
    return source


def measure(dataset: str, source: Path, store: Path) -> tuple[int, float, float, float, float]:
    """(rows, seconds to plan, seconds to create the store, CPU seconds of both, seconds of
    one write of a full ledger: every sample with a recorded size and content hash)."""
    config = BuildConfig(dataset=dataset, source=source, store=store,
                         params=VideoParams(size=112, steps=16), progress=False)
    cpu, start = time.process_time(), time.perf_counter()
    planned = plan(config)
    planned_at = time.perf_counter()
    opened = open_planned(config, planned, extraction_opencv(None))  # (threads: this OpenCV)
    created_at, cpu_used = time.perf_counter(), time.process_time() - cpu
    ledger = Ledger.load(opened)
    for index in range(len(planned.manifest)):  # every sample changed: the costliest write
        ledger.record_source(index, 1, "xxh3_128:" + "0" * 32)
    written = time.perf_counter()
    ledger.write(opened)
    ledger_seconds = time.perf_counter() - written
    opened.close()
    return (len(planned.manifest), planned_at - start, created_at - planned_at, cpu_used,
            ledger_seconds)


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("zarr", "h5"), default="zarr")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where its fresh plan-scale-* folder goes (created if absent)")
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared real data")
    parser.add_argument("--ucf-fractions", type=float, nargs="*", default=[0.25, 0.5, 1.0],
                        help="the fractions of each UCF101 class's listed clips to plan")
    parser.add_argument("--kinetics-rows", type=int, nargs="*",
                        default=[62_500, 125_000, 250_000],
                        help="the generated Kinetics train.csv sizes to plan")
    args = parser.parse_args(argv)
    missing = [name for name in UCF_LISTS if not (ucf_lists(args.data) / name).is_file()]
    if missing:  # before any folder is made or line printed; the Kinetics lists are optional
        refuse(f"--data {args.data}: no {ucf_lists(args.data) / missing[0]} (the real UCF101 "
               f"split lists, which every plan of UCF101 copies)")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="plan-scale-", dir=args.workdir))
    print(header(__file__, argv) + "\n")
    try:
        print("| dataset | rows | plan (s) | create store (s) | CPU (s) | CPU per row (us) | "
              "ledger write (s) |")
        print("|---|---|---|---|---|---|---|")
        cases = [("ucf101", lambda f=f: ucf_source(root, f, args.data))
                 for f in args.ucf_fractions]
        cases += [("kinetics", lambda n=n: kinetics_source(root, n, args.data))
                  for n in args.kinetics_rows]
        measure("ucf101", ucf_source(root / "warm", 0.02, args.data),  # (its own folder)
                root / f"warm.{args.backend}")
        for number, (dataset, make) in enumerate(cases):  # (after a warm-up: imports, caches)
            source = make()
            rows, planning, creating, cpu, ledger = measure(
                dataset, source, root / f"store{number}.{args.backend}")
            print(f"| {dataset} | {rows:,} | {planning:.2f} | {creating:.2f} | {cpu:.2f} | "
                  f"{1e6 * cpu / rows:.0f} | {ledger:.2f} |", flush=True)
            shutil.rmtree(source)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
