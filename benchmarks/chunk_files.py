"""What one chunk file per sample costs at Kinetics scale, against Zarr v3 sharding (issue 15, item 4).

A flowstore Zarr store keeps each sample of each big array in its own chunk file: a Kinetics-400
store (300,000 clips x middle_frame, frames, flow) holds 900,000 of them. This writes that
layout with zarr-python itself (the same codecs, one whole chunk per sample, the three arrays of
a sample written together as a build worker writes them) and, beside it, the same data as

- flat keys: the same chunks with the key separator "." (`c.17.0.0.0.0`, one file in the array's
  folder) instead of "/" (`c/17/0/0/0/0`, a folder per sample and dimension);
- sharded: `shards=(K, ...)`, one chunk per sample inside shards of K consecutive samples, each
  shard written whole by one writer (one `setitem` of K samples).

Local disk: write time (wall and CPU), inodes (counted by a walk of the tree, and the
filesystem's `df -i` delta, which other tenants of a shared disk move too), `du -s`, bytes of
the files themselves, the time of the walk and of `du` (what listing every chunk costs), one
random batch read back (checked against what was written), and `rm -rf`.
Object storage: the same layouts written into a moto S3 server on 127.0.0.1, every HTTP request
counted by method at the server (a WSGI wrapper around moto's app): PUTs and seconds per 1,000
samples, the LIST requests to list every chunk, and the GETs of one random batch.
Race: two threads each write a different sample of one shard at the same moment with a plain
zarr write; a sharded write of part of a shard reads, merges and rewrites the whole shard, so
one writer's sample can vanish. Counted over `--race-trials`, with an unsharded control.

    python benchmarks/chunk_files.py --samples 10000                  # local, all layouts
    python benchmarks/chunk_files.py --samples 300000 --layouts nested --no-s3 --no-race  # 900,000 files
    python benchmarks/chunk_files.py --samples 300 --size 224 --no-s3 --no-race  # real bytes

`--size`/`--steps` set the per-sample shapes (Kinetics: 224 and 16; the file-count runs use a
small size so that the per-file cost shows apart from the bytes). Data are a smooth pattern
plus noise, so the codecs compress them somewhat, as they do real frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from flowstore.datasets import get_dataset
from flowstore.params import VideoParams
from flowstore.store._zarr import _COMPRESSORS  # flowstore's codec presets, as a build writes them

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refusing_bad_input  # noqa: E402  (shared by the benchmarks)

#: Distinct generated samples; sample i holds pool[i % POOL], so a read can be checked.
POOL = 8


@dataclass(frozen=True)
class Layout:
    """How the chunks of a per-sample array are laid out in the store."""

    name: str
    shard: int | None = None  # samples per shard; None: one chunk file per sample
    separator: str = "/"  # the chunk key separator ("/" is zarr's default and flowstore's)

    @property
    def samples_per_write(self) -> int:
        return self.shard or 1


def layouts(shards: list[int]) -> list[Layout]:
    return ([Layout("nested (today)"), Layout("flat keys", separator=".")]
            + [Layout(f"sharded K={k}", shard=k) for k in shards])


def sample_specs(size: int, steps: int, flow_dtype: str) -> list[Any]:
    """The per-sample arrays of a video store (`middle_frame`, `frames`, `flow`), as flowstore
    declares them."""
    return get_dataset("tvhi").specs(VideoParams(size=size, steps=steps, flow_dtype=flow_dtype))


def make_pool(specs: list[Any], seed: int = 0) -> dict[str, np.ndarray]:
    """POOL samples per array: a smooth gradient plus noise (compressible, like real pixels)."""
    rng = np.random.default_rng(seed)
    pool = {}
    for spec in specs:
        shape = (POOL, *spec.sample_shape)
        ramp = np.linspace(0, 1, int(np.prod(spec.sample_shape[-3:-1]))).reshape(spec.sample_shape[-3:-1])
        ramp = ramp[..., np.newaxis]
        noise = rng.normal(0, 0.05, shape)
        values = ramp + noise + rng.uniform(0, 1, (POOL,) + (1,) * len(spec.sample_shape))
        if spec.dtype == "uint8":
            pool[spec.name] = np.clip(values * 200, 0, 255).astype(np.uint8)
        else:
            pool[spec.name] = (values * 4 - 2).astype(spec.dtype)
    return pool


def block(pool: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Samples start..stop-1 of one array, as written: sample i is pool[i % POOL]."""
    if stop - start == 1:
        return pool[start % POOL][np.newaxis]
    return pool[np.arange(start, stop) % POOL]


def create_arrays(store: Any, layout: Layout, specs: list[Any], num_samples: int) -> list[zarr.Array]:
    """The per-sample arrays in `store` (a path or a zarr store), one chunk per sample, with the
    layout's sharding and key separator and flowstore's codecs."""
    group = zarr.open_group(store, mode="w-", zarr_format=3)
    for spec in specs:
        kwargs: dict[str, Any] = dict(
            shape=(num_samples, *spec.sample_shape), dtype=spec.dtype, chunks=(1, *spec.sample_shape),
            fill_value=0, compressors=_COMPRESSORS[spec.codec](),
            chunk_key_encoding={"name": "default", "separator": layout.separator})
        if layout.shard:
            kwargs["shards"] = (layout.shard, *spec.sample_shape)
        group.create_array(spec.name, **kwargs)
    # each chunk is written whole and once: no comparison with the fill value (as flowstore's handles)
    with zarr.config.set({"array.write_empty_chunks": True}):
        return [group[spec.name] for spec in specs]


def write_units(arrays: list[zarr.Array], pool: dict[str, np.ndarray], num_samples: int,
                per_write: int, progress: str | None = None) -> tuple[float, float]:
    """Write samples 0..num_samples-1, `per_write` at a time (1: a sample; K: a whole shard),
    the arrays of one unit in one call to zarr's event loop, as `ZarrStore.write_sample` does.
    Returns (wall, CPU) seconds of the writes alone (making the data is not timed)."""
    wall = cpu = 0.0
    units = math.ceil(num_samples / per_write)
    report_every = max(units // 10, 1)
    for unit in range(units):
        start, stop = unit * per_write, min((unit + 1) * per_write, num_samples)
        values = [block(pool[a.basename], start, stop) for a in arrays]

        async def write_all() -> None:
            await asyncio.gather(*(a.async_array.setitem(slice(start, stop), v)
                                   for a, v in zip(arrays, values)))

        t0, c0 = time.perf_counter(), time.process_time()
        sync(write_all())
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if progress and (unit + 1) % report_every == 0:
            print(f"  {progress}: {stop}/{num_samples} samples, {wall:.1f} s", file=sys.stderr, flush=True)
    return wall, cpu


def read_batch(arrays: list[zarr.Array], pool: dict[str, np.ndarray], indices: np.ndarray) -> float:
    """Seconds to read the samples `indices` of every array one by one (a random batch), each
    checked against what was written."""
    t0 = time.perf_counter()
    got = [[a[int(i)] for a in arrays] for i in indices]
    seconds = time.perf_counter() - t0
    for i, row in zip(indices, got):
        for a, value in zip(arrays, row):
            if not np.array_equal(value, pool[a.basename][int(i) % POOL]):
                raise AssertionError(f"{a.basename}[{i}] read back wrong")
    return seconds


def walk(root: Path) -> dict[str, int]:
    """Files, folders and bytes (apparent and allocated) under `root`."""
    files = folders = size = allocated = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    folders += 1
                    allocated += st.st_blocks * 512
                    stack.append(Path(entry.path))
                else:
                    files += 1
                    size += st.st_size
                    allocated += st.st_blocks * 512
    return {"files": files, "folders": folders, "bytes": size, "allocated": allocated}


def used_inodes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_files - st.f_ffree


def measure_local(root: Path, layout: Layout, specs: list[Any], pool: dict[str, np.ndarray],
                  num_samples: int, batch: int, seed: int) -> dict[str, Any]:
    path = root / f"{layout.name.split()[0]}-{layout.shard or 1}.zarr"
    inodes_before = used_inodes(root)
    arrays = create_arrays(str(path), layout, specs, num_samples)
    wall, cpu = write_units(arrays, pool, num_samples, layout.samples_per_write, progress=layout.name)
    inodes_after = used_inodes(root)
    indices = np.random.default_rng(seed).choice(num_samples, size=min(batch, num_samples), replace=False)
    read = read_batch(arrays, pool, indices)
    t0 = time.perf_counter()
    tree = walk(path)
    walk_s = time.perf_counter() - t0
    du_out, du_s, du_cpu = timed_command(["du", "-s", "--block-size=1", str(path)])
    _, rm_s, rm_cpu = timed_command(["rm", "-rf", str(path)])
    return {"layout": layout.name, "samples": num_samples, "write_s": wall, "write_cpu_s": cpu,
            "inodes": tree["files"] + tree["folders"] + 1, "df_i_delta": inodes_after - inodes_before,
            **tree, "du": int(du_out.split()[0]), "walk_s": walk_s, "du_s": du_s, "du_cpu_s": du_cpu,
            "read_batch": len(indices), "read_s": read, "rm_s": rm_s, "rm_cpu_s": rm_cpu}


def timed_command(command: list[str]) -> tuple[str, float, float]:
    """(stdout, wall seconds, CPU seconds) of a command. Its CPU time (user + sys, mostly the
    kernel's work on the folders and inodes) says what it costs on a loaded machine, where its
    wall time also measures the wait for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ---------------------------------------------------------------------------------------------
# Object storage: moto with every request counted at the server


class CountingS3Server:
    """A moto S3 server on 127.0.0.1 whose WSGI app counts every request it serves, by kind:
    PUT, GET (an object), LIST (a GET of the bucket), HEAD, POST, DELETE. Counting at the
    server sees the requests a client really sent, retries and multipart parts included."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                                   create_backend_app)
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        moto_app = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict, start_response: Any) -> Any:
            self._count(environ)
            return moto_app(environ, start_response)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._server = make_server("127.0.0.1", port, app, threaded=True,
                                   request_handler=MotoRequestHandler)
        self.endpoint = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _count(self, environ: dict) -> None:
        method = environ["REQUEST_METHOD"]
        is_bucket = environ.get("PATH_INFO", "/").strip("/").count("/") == 0  # path-style: /bucket
        kind = "LIST" if method == "GET" and is_bucket else method
        with self._lock:
            self.counts[kind] += 1

    def take(self) -> Counter[str]:
        """The counts since the last call, and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def __enter__(self) -> "CountingS3Server":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._thread.join()

    def storage_options(self) -> dict[str, Any]:
        return {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": self.endpoint,
                                                                    "region_name": "us-east-1"}}

    def make_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket=name)


def measure_s3(server: CountingS3Server, layout: Layout, specs: list[Any], pool: dict[str, np.ndarray],
               num_samples: int, batch: int, seed: int) -> dict[str, Any]:
    from zarr.storage import FsspecStore

    url = f"s3://bench/{layout.name.split()[0]}-{layout.shard or 1}.zarr"
    store = FsspecStore.from_url(url, storage_options=server.storage_options())
    arrays = create_arrays(store, layout, specs, num_samples)
    server.take()  # the metadata documents are not the samples' cost
    wall, cpu = write_units(arrays, pool, num_samples, layout.samples_per_write)
    written = server.take()
    t0 = time.perf_counter()
    keys = sync(_list_all(store))
    list_s = time.perf_counter() - t0
    listed = server.take()
    indices = np.random.default_rng(seed).choice(num_samples, size=min(batch, num_samples), replace=False)
    read = read_batch(arrays, pool, indices)
    reads = server.take()
    per_k = 1000 / num_samples
    return {"layout": layout.name, "samples": num_samples, "write_s": wall, "write_cpu_s": cpu,
            "requests_written": dict(written), "puts": written["PUT"],
            "puts_per_1000": written["PUT"] * per_k, "write_s_per_1000": wall * per_k,
            "objects": len(keys), "list_requests": listed["LIST"], "list_s": list_s,
            "read_batch": len(indices), "read_gets": reads["GET"], "read_requests": dict(reads),
            "read_s": read}


async def _list_all(store: Any) -> list[str]:
    return [key async for key in store.list()]


# ---------------------------------------------------------------------------------------------
# Two writers, one shard


def race(root: Path, specs: list[Any], pool: dict[str, np.ndarray], trials: int,
         shard: int | None) -> dict[str, Any]:
    """Two threads write samples 0 and 1 of one array at the same moment (a barrier releases
    both), each with a plain `array[i] = value`; then both samples are read back. With
    `shard`, both samples lie in one shard; without, each is its own chunk file (the control).
    Returns how many trials lost a sample."""
    spec = specs[-1]  # flow: the largest chunk, the longest window between read and rewrite
    layout = Layout("race", shard=shard)
    lost = 0
    for trial in range(trials):
        (array,) = create_arrays(str(root / f"race-{shard}-{trial}.zarr"), layout, [spec], 2 * (shard or 1))
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def writer(index: int) -> None:
            try:
                barrier.wait()
                array[index] = pool[spec.name][index]
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        back = array[0:2]
        if not all(np.array_equal(back[i], pool[spec.name][i]) for i in (0, 1)):
            lost += 1
        shutil.rmtree(root / f"race-{shard}-{trial}.zarr")
    return {"shard": shard, "trials": trials, "lost": lost}


# ---------------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def print_local(rows: list[dict[str, Any]]) -> None:
    print("| layout | samples | files | folders | inodes (walk) | df -i delta | write s | write CPU s "
          "| ms/sample | du -s MiB | file bytes MiB | walk s | du s (CPU) | read batch ms | rm -rf s (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layout']} | {r['samples']:,} | {r['files']:,} | {r['folders']:,} | {r['inodes']:,} "
              f"| {r['df_i_delta']:,} | {r['write_s']:.1f} | {r['write_cpu_s']:.1f} "
              f"| {1000 * r['write_s'] / r['samples']:.2f} | {mib(r['du'])} | {mib(r['bytes'])} "
              f"| {r['walk_s']:.2f} | {r['du_s']:.2f} ({r['du_cpu_s']:.2f}) "
              f"| {1000 * r['read_s']:.0f} ({r['read_batch']}) | {r['rm_s']:.2f} ({r['rm_cpu_s']:.2f}) |")


def print_s3(rows: list[dict[str, Any]]) -> None:
    print("| layout | samples | PUTs | PUTs / 1,000 samples | write s / 1,000 samples | objects "
          "| LIST requests to list all | GETs for a random batch (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layout']} | {r['samples']:,} | {r['puts']:,} | {r['puts_per_1000']:,.0f} "
              f"| {r['write_s_per_1000']:.1f} | {r['objects']:,} | {r['list_requests']} "
              f"| {r['read_gets']} for {r['read_batch']} samples ({1000 * r['read_s']:.0f}) |")


@refusing_bad_input
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000, help="samples on local disk (x3 arrays)")
    parser.add_argument("--s3-samples", type=int, default=1000, help="samples written to moto")
    parser.add_argument("--size", type=int, default=16, help="frame size S (Kinetics: 224)")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T")
    parser.add_argument("--flow-dtype", default="float16")
    parser.add_argument("--shard-samples", type=int, nargs="+", default=[32], metavar="K",
                        help="samples per shard of the sharded layouts")
    parser.add_argument("--layouts", nargs="+", default=None,
                        help="only these layouts (by first word: nested, flat, sharded)")
    parser.add_argument("--batch", type=int, default=64, help="samples in the random batch read")
    parser.add_argument("--race-trials", type=int, default=20)
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-race", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="folder on the disk to measure")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.samples < 1 or args.s3_samples < 1 or min(args.shard_samples) < 1:
        parser.error("--samples, --s3-samples and --shard-samples must be >= 1")

    known = {lay.name.split()[0] for lay in layouts(args.shard_samples)}
    if args.layouts and not set(args.layouts) <= known:
        parser.error(f"--layouts: expected some of {', '.join(sorted(known))}, got {' '.join(args.layouts)}")

    specs = sample_specs(args.size, args.steps, args.flow_dtype)
    pool = make_pool(specs, args.seed)
    raw = sum(pool[s.name][0].nbytes for s in specs)
    chosen = [lay for lay in layouts(args.shard_samples)
              if args.layouts is None or lay.name.split()[0] in args.layouts]
    print(f"# Chunk files: {' + '.join(f'{s.name} {s.sample_shape} {s.dtype}' for s in specs)}; "
          f"{raw / 1024:,.1f} KiB a sample before compression")
    print(header(__file__, argv))
    print(f"- load average {os.getloadavg()[0]:.2f}, zarr {zarr.__version__}\n")
    results: dict[str, Any] = {"sample_bytes": raw, "local": [], "s3": [], "race": []}
    if args.workdir is not None:  # made if absent, as every benchmark's --workdir
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=args.workdir, prefix="chunk-files-"))
    try:
        if not args.no_local:
            free = shutil.disk_usage(workdir).free
            print(f"local disk: {workdir} ({free / 2**30:.1f} GiB free, "
                  f"{os.statvfs(workdir).f_ffree:,} inodes free)\n")
            for layout in chosen:
                results["local"].append(measure_local(workdir, layout, specs, pool, args.samples,
                                                      args.batch, args.seed))
                # each layout's figures as soon as they exist: a Kinetics-sized run takes hours
                print(f"  {json.dumps(results['local'][-1])}", file=sys.stderr, flush=True)
            print_local(results["local"])
            print()
        if not args.no_s3:
            with CountingS3Server() as server:
                server.make_bucket("bench")
                for layout in chosen:
                    results["s3"].append(measure_s3(server, layout, specs, pool, args.s3_samples,
                                                    args.batch, args.seed))
            print("moto S3 on 127.0.0.1 (every request counted at the server):\n")
            print_s3(results["s3"])
            print()
        if not args.no_race:
            shard = args.shard_samples[0]
            for size in (shard, None):
                results["race"].append(race(workdir, specs, pool, args.race_trials, size))
            print("two threads writing samples 0 and 1 at once, plain `array[i] = value`:\n")
            for r in results["race"]:
                what = f"one shard of K={r['shard']}" if r["shard"] else "one chunk file each (control)"
                print(f"- {what}: a sample lost in {r['lost']} of {r['trials']} trials")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
