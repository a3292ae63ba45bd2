"""What a build costs per sample as the number of samples grows (issue 15, item 5).

A videofolder source of N tiny clips (16 x 16 pixels, a few frames each, so extraction is cheap
and what grows with N shows) is built like `flowstore build videofolder --size 16 --steps 2
--workers 2` (through the Python API, in a fresh process each time), then measured:

- coordinator CPU per sample: the CPU time of the thread that ran `flowstore.build.build`
  (`BuildResult.coordinator_cpu_seconds`: planning, the store, submitting and collecting,
  the ledger), apart from extraction on the worker threads; and the whole process's CPU;
- wall time per sample of that build;
- root metadata bytes (the store's root `zarr.json`, which every attribute update rewrites);
- peak RSS of the build process (`wait4`'s ru_maxrss);
- open-store time: `flowstore.open` and `len(split("train"))` in a fresh process;
- resume time of a store 99% done: a store built with `--max-per-split` at 99% of its training
  split (70% of the samples; val and test whole, so 99.3% done), then the same build command
  without it (what a user runs after an interruption); the pending samples are extracted too.

The source's clips are hard links to a handful of distinct tiny clips, so writing 100,000 of
them takes seconds; every sample is still decoded, extracted and written on its own.

Target (the issue's): each per-sample figure, and the open and resume times, within 1.2x
between 10,000 and 100,000 samples.

`--s3` (issue 15, item 6) builds into an s3:// store on a moto S3 server that this script
starts in a process of its own, wrapped in a WSGI middleware that counts the requests it
serves by kind (PUT, GET, HEAD, LIST, DELETE): the server's count is the one that sees every
process (the coordinator's and each cluster worker's). The table then adds the requests per
sample of the full build; the root metadata bytes are the size of the root `zarr.json` object.
With `--cluster --workers 4 --s3`: a LocalCluster of 4 worker processes writing to S3.

Usage:  python benchmarks/build_scale.py --samples 1000 10000 100000 [--workers 2]
                                          [--cluster] [--s3] [--workdir DIR] [--json FILE]
Prints a markdown table; `--json` also writes the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refusing_bad_input  # noqa: E402  (shared by the benchmarks)


CLASSES = 10
DISTINCT_CLIPS = 8
FRAMES = 6
SIDE = 16

def write_source(root: Path, samples: int) -> Path:
    """SOURCE/<class>/clip_NNNNNN.avi: `samples` clips over CLASSES classes, each a hard link
    to one of DISTINCT_CLIPS tiny MJPG clips of moving noise."""
    import cv2

    originals = root / "originals"
    originals.mkdir(parents=True)
    rng = np.random.default_rng(0)
    clips = []
    for k in range(DISTINCT_CLIPS):
        path = originals / f"clip{k}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (SIDE, SIDE))
        texture = rng.integers(0, 256, (SIDE * 2, SIDE * 2, 3), dtype=np.uint8)
        for t in range(FRAMES):
            writer.write(np.ascontiguousarray(texture[t:t + SIDE, k:k + SIDE]))
        writer.release()
        clips.append(path)
    source = root / "source"
    for c in range(CLASSES):
        (source / f"class_{c:02d}").mkdir(parents=True)
    for i in range(samples):
        os.link(clips[i % DISTINCT_CLIPS], source / f"class_{i % CLASSES:02d}" / f"clip_{i:06d}.avi")
    return source


def run_with_rusage(args: list[str], stdout=subprocess.DEVNULL) -> dict[str, float]:
    """Run a command and read its own rusage (not its siblings') through wait4."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(args, stdout=stdout, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"command failed ({process.returncode}): {' '.join(args)}\n"
                             f"{err.read()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024}


def root_metadata_bytes(store: Path | str) -> int:
    """Bytes of the root metadata object a coordinator rewrites (Zarr v3: zarr.json)."""
    if isinstance(store, str):  # an s3:// URL
        import fsspec

        fs, root = fsspec.core.url_to_fs(store)
        return int(fs.size(f"{root}/zarr.json"))
    return (store / "zarr.json").stat().st_size


#: A moto S3 server behind a WSGI middleware that counts the requests it serves by kind;
#: `GET /__requests__` answers the counts so far and the server's own CPU seconds (JSON).
#: Prints its port, then serves.
MOTO_SCRIPT = """
import json, logging, threading, time
from collections import Counter
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
counts, lock = Counter(), threading.Lock()
app = DomainDispatcherApplication(create_backend_app)

def kind(environ):
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/").strip("/")
    query = environ.get("QUERY_STRING", "")
    if "/" not in path:  # the bucket itself (path-style: a 127.0.0.1 endpoint)
        return "LIST" if method == "GET" else f"{method} bucket"
    if "uploadId" in query or "uploads" in query:
        return f"{method} multipart"
    return method

def counted(environ, start_response):
    if environ.get("PATH_INFO") == "/__requests__":
        with lock:
            body = json.dumps({"requests": counts, "cpu_s": time.process_time()}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    with lock:
        counts[kind(environ)] += 1
    return app(environ, start_response)

server = make_server("127.0.0.1", 0, counted, threaded=True, request_handler=MotoRequestHandler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class CountingS3:
    """The moto S3 server of `--s3` (its own process) with a bucket `scale`; the AWS
    environment variables that point flowstore at it are set in this process, so the build
    processes and the cluster's workers started after it inherit them."""

    BUCKET = "scale"

    def __enter__(self) -> "CountingS3":
        self.process = subprocess.Popen([sys.executable, "-c", MOTO_SCRIPT],
                                        stdout=subprocess.PIPE, text=True)
        port = int(self.process.stdout.readline())
        self.endpoint = f"http://127.0.0.1:{port}"
        os.environ.update({"AWS_ACCESS_KEY_ID": "scale", "AWS_SECRET_ACCESS_KEY": "scale",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint})
        import boto3

        boto3.client("s3").create_bucket(Bucket=self.BUCKET)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait()

    def counts(self) -> tuple[dict[str, int], float]:
        """Requests served so far, by kind, and the server process's CPU seconds so far (what
        the stand-in for S3 took of this machine's cores, beside the build)."""
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}/__requests__") as answer:
            served = json.loads(answer.read())
        return served["requests"], served["cpu_s"]

    def url(self, key: str) -> str:
        return f"s3://{self.BUCKET}/{key}"

    def remove(self, url: str) -> None:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)


OPEN_SCRIPT = """
import sys, time
start = time.perf_counter()
import flowstore
dataset = flowstore.open(sys.argv[1])
n = len(dataset.split("train"))
print(time.perf_counter() - start, n)
"""

BUILD_SCRIPT = """
import json, sys
from pathlib import Path
from flowstore.build import BuildConfig, build
from flowstore.malloc_tuning import BUILD_MMAP_THRESHOLD, keep_freed_memory
from flowstore.params import VideoParams
keep_freed_memory(BUILD_MMAP_THRESHOLD)  # as `flowstore build` does
source, store, workers, scheduler, cap = sys.argv[1:6]
# on a cluster its workers run the tasks (their number is set where it is started, `measure`):
# BuildConfig refuses workers with a scheduler
result = build(BuildConfig(
    dataset="videofolder", source=Path(source), store=store if "://" in store else Path(store),
    params=VideoParams(size=16, steps=2), workers=None if scheduler else int(workers),
    scheduler=scheduler or None,
    options={"val_fraction": "0.1", "test_fraction": "0.2", "seed": "0"}, progress=False,
    max_per_split=int(cap) if cap else None))
assert result.ok, result
cpu = getattr(result, "coordinator_cpu_seconds", float("nan"))  # older flowstore: none
print(json.dumps({"computed": result.computed, "coordinator_cpu_s": cpu}))
"""


def build_measured(source: Path, store: Path | str, workers: int, scheduler: str | None = None,
                   max_per_split: int | None = None) -> dict[str, float]:
    """One `flowstore.build` in a fresh process: its rusage, and the coordinator thread's CPU
    seconds as the build reports them (`BuildResult.coordinator_cpu_seconds`)."""
    with tempfile.NamedTemporaryFile("w+") as out:
        usage = run_with_rusage([sys.executable, "-c", BUILD_SCRIPT, str(source), str(store),
                                 str(workers), scheduler or "", str(max_per_split or "")],
                                stdout=out)
        out.seek(0)
        usage.update(json.loads(out.read().strip().splitlines()[-1]))
    return usage


def open_seconds(store: Path | str) -> float:
    """Seconds to import flowstore, open the store and count its training split, in a fresh
    process (the import is in it: what a training script pays; its share is constant)."""
    out = subprocess.run([sys.executable, "-c", OPEN_SCRIPT, str(store)], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0])


def measure(samples: int, workers: int, workdir: Path, cluster: bool,
            s3: CountingS3 | None = None) -> dict[str, float]:
    root = workdir / f"n{samples}"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    source = write_source(root, samples)
    source_s = time.perf_counter() - t0
    full: Path | str = root / "full.zarr"
    partial: Path | str = root / "partial.zarr"
    if s3 is not None:
        full, partial = s3.url(f"n{samples}/full.zarr"), s3.url(f"n{samples}/partial.zarr")
        s3.remove(full), s3.remove(partial)
    if cluster:
        from dask.distributed import LocalCluster

        # (the dashboard on a free port: on the default 8787, taken by another cluster's, Dask
        # warned and moved, which pytest's warnings-as-errors made a failed smoke test)
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as local:
            return _measure_builds(samples, workers, local.scheduler_address, source, full,
                                   partial, source_s, root, s3)
    return _measure_builds(samples, workers, None, source, full, partial, source_s, root, s3)


def _measure_builds(samples: int, workers: int, scheduler: str | None, source: Path,
                    full: Path | str, partial: Path | str, source_s: float, root: Path,
                    s3: CountingS3 | None) -> dict[str, float]:
    before, server_cpu = s3.counts() if s3 else ({}, 0.0)
    build = build_measured(source, full, workers, scheduler)
    if s3:
        after, server_cpu_after = s3.counts()
        requests = {kind: count - before.get(kind, 0) for kind, count in after.items()
                    if count > before.get(kind, 0)}
        server_cpu = server_cpu_after - server_cpu
    # 99% done: the train split capped at 99% of its samples (val and test whole), then the
    # build a user reruns after an interruption.
    train = len(_open(full).split("train"))
    build_measured(source, partial, workers, scheduler, max_per_split=train * 99 // 100)
    pending = train - train * 99 // 100
    resume = build_measured(source, partial, workers, scheduler)
    row = {
        "samples": samples,
        "source_s": source_s,
        "build_wall_s": build["wall_s"],
        "wall_ms_per_sample": 1000 * build["wall_s"] / samples,
        "process_cpu_ms_per_sample": 1000 * build["cpu_s"] / samples,
        "coordinator_cpu_ms_per_sample": 1000 * build["coordinator_cpu_s"] / samples,
        "build_rss_mb": build["rss_mb"],
        "root_metadata_bytes": root_metadata_bytes(full),
        "open_s": open_seconds(full),
        "resume_pending": pending,
        "resume_wall_s": resume["wall_s"],
        "resume_cpu_s": resume["cpu_s"],
        "resume_coordinator_cpu_s": resume["coordinator_cpu_s"],
    }
    if s3:
        row["requests"] = requests
        row["s3_server_cpu_ms_per_sample"] = 1000 * server_cpu / samples
        row["requests_per_sample"] = {kind: count / samples for kind, count in requests.items()}
        s3.remove(full), s3.remove(partial)
    shutil.rmtree(root, ignore_errors=True)
    return row


def _open(store: Path):
    import flowstore

    return flowstore.open(str(store))


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cluster", action="store_true",
                        help="build on a LocalCluster of --workers single-threaded processes "
                             "instead of the default threads")
    parser.add_argument("--s3", action="store_true",
                        help="build into an s3:// store on a moto server this script starts, "
                             "counting the requests it serves")
    args = parser.parse_args(argv)
    print(header(__file__, argv) + "\n")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="build-scale-"))
    with CountingS3() if args.s3 else contextlib.nullcontext() as s3:
        run_all(args, workdir, s3)


def run_all(args: argparse.Namespace, workdir: Path, s3: CountingS3 | None) -> None:
    rows = []
    requests = (" | requests per sample (by kind) | S3 server CPU ms/sample |" if s3 else " |")
    print("| samples | build wall (s) | wall ms/sample | coordinator CPU ms/sample | process "
          "CPU ms/sample | build peak RSS (MB) | root metadata (bytes) | open (s) | resume at "
          "99%: wall s, coordinator CPU s (pending)" + requests)
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if s3 else ""))
    for samples in args.samples:
        row = measure(samples, args.workers, workdir, args.cluster, s3)
        rows.append(row)
        kinds = ""
        if s3:
            kinds = " " + ", ".join(f"{kind} {count:.2f}" for kind, count in
                                    sorted(row["requests_per_sample"].items(),
                                           key=lambda item: -item[1]))
            kinds += f" | {row['s3_server_cpu_ms_per_sample']:.1f} |"
        print(f"| {samples:,} | {row['build_wall_s']:.1f} | {row['wall_ms_per_sample']:.2f} | "
              f"{row['coordinator_cpu_ms_per_sample']:.2f} | "
              f"{row['process_cpu_ms_per_sample']:.2f} | {row['build_rss_mb']:.0f} | "
              f"{row['root_metadata_bytes']:,} | {row['open_s']:.2f} | "
              f"{row['resume_wall_s']:.1f}, {row['resume_coordinator_cpu_s']:.2f} "
              f"({row['resume_pending']}) |{kinds}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
