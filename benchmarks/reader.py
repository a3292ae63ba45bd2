"""The public reader (`flowstore.open`) against an honest ceiling, side by side in one run.

Issue 13 asks how close every way of reading a store comes to the most a reader could do on the
same machine: the ceiling reads the same chunk files, one `os.preadv` each (into a preallocated
buffer), and decompresses each with the same codec's decompress call into a preallocated output
buffer, in the simplest loop there is, on the same number of threads. Target: every reader at
>= 90% of the ceiling per core it uses.

Ceiling, per store (the chunk files' paths, offsets and sizes are looked up before timing):
- Zarr: `os.open` + one `os.preadv` of the chunk file + `numcodecs.blosc.decompress(src, out)`
  (Blosc, the default preset) or nothing more (uncompressed: the preadv lands in `out`).
- HDF5 uncompressed: one `os.preadv` at the chunk's offset (`get_chunk_info`) into `out`.
- HDF5 compressed (LZF + byte shuffle, HDF5 filters with no decompressor outside libhdf5): the
  nearest there is, h5py's `read_direct` of the one-sample chunk into a preallocated `out`
  (libhdf5 reads the chunk and runs its filters); h5py holds the GIL, so more threads do not help.
With T threads the samples are dealt round-robin to T threads, each with its own buffers.

Readers, all reading the two-stream inputs (`middle_frame`, `flow`) of the train split, batch 8:
- `split[batch]`: `split.read(positions)` over the split in order, one thread;
- `to_tf_dataset`: `split.to_tf_dataset(8, shuffle=True)`, epoch after epoch (tf.data's threads);
- DataLoader 0 / 2 workers: `torch.utils.data.DataLoader(split, batch_size=8, shuffle=True,
  num_workers=W)` (2 workers: persistent, so worker start-up is not timed; their CPU counted);
  torch's collate stacks the samples again (one more copy of every byte);
- batched DataLoader: `DataLoader(split, batch_size=None, sampler=BatchSampler(RandomSampler(
  split), 8, False), num_workers=W)`: each batch is `split[positions]`, no collate copy (with
  workers, torch still copies each batch into shared memory to hand it to the main process).

"% of ceiling per core" = (samples/s / cores the reader used) / (samples/s / cores the ceiling
used), against the 1-thread ceiling for one-thread readers and the T-thread ceiling for the
others. The cores used are CPU seconds / wall seconds of this process and its children; the
CPU other processes used meanwhile is reported too, since the machine may be shared.

    python benchmarks/reader.py                                  # 224 px, 16 steps, 40 clips
    python benchmarks/reader.py --size 112 --videos-per-class 10 --min-seconds 1
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import (_busy_jiffies, command_line, machine_line,  # noqa: E402
                           prepare_source, wait_for_quiet)
from input_pipeline import disk_bytes, prepare_stores  # noqa: E402

import numpy as np  # noqa: E402

FEATURES = ("middle_frame", "flow")
BATCH = 8


@dataclass
class Measured:
    samples: int
    wall: float
    cpu: float
    others: float

    @property
    def rate(self) -> float:
        return self.samples / self.wall

    @property
    def cores(self) -> float:
        return self.cpu / self.wall


def _cpu_seconds(children: bool) -> float:
    total = time.process_time()
    if children:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def timed(one_pass, min_seconds: float, children: bool = False) -> Measured:
    """Run `one_pass()` (returns the samples it delivered) until `min_seconds` have passed."""
    one_pass()  # warm-up: page cache, thread pools, tf.data's tracing, worker start-up
    tick = os.sysconf("SC_CLK_TCK")
    busy, cpu, start, samples = _busy_jiffies(), _cpu_seconds(children), time.perf_counter(), 0
    while True:
        samples += one_pass()
        wall = time.perf_counter() - start
        if wall >= min_seconds:
            break
    cpu = _cpu_seconds(children) - cpu
    others = max(0.0, (_busy_jiffies() - busy) / tick - cpu)
    return Measured(samples, wall, cpu, others)


# -- the ceiling ------------------------------------------------------------------------------------


def ceiling_reads(path: Path, indices: np.ndarray):
    """Per sample, per feature: a function that reads its chunk into a given `out` buffer, and
    the buffers' shapes and dtypes. Everything that can be looked up beforehand is."""
    if path.suffix == ".zarr":
        import numcodecs
        import zarr
        from zarr.codecs import BloscCodec

        group = zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=False)
        arrays = {name: group[name] for name in FEATURES}
        layout = {name: (arr.shape[1:], arr.dtype) for name, arr in arrays.items()}
        files = {name: [os.path.join(path, name, arr.metadata.encode_chunk_key(
            (int(i),) + (0,) * (arr.ndim - 1))) for i in indices] for name, arr in arrays.items()}
        compressed = {name: isinstance(arr.metadata.codecs[-1], BloscCodec)
                      for name, arr in arrays.items()}
        sizes = {name: [os.stat(f).st_size for f in files[name]] for name in FEATURES}
        largest = max(max(s) for s in sizes.values())

        def reader():
            scratch = np.empty(largest, np.uint8)

            def read(name, k, out):
                fd = os.open(files[name][k], os.O_RDONLY)
                try:
                    if compressed[name]:
                        src = scratch[:sizes[name][k]]
                        os.preadv(fd, [src], 0)
                        numcodecs.blosc.decompress(src, out)
                    else:
                        os.preadv(fd, [memoryview(out).cast("B")], 0)
                finally:
                    os.close(fd)
            return read
        return reader, layout, None

    import h5py

    f = h5py.File(path, "r", locking=False)
    datasets = {name: f[name] for name in FEATURES}
    layout = {name: (ds.shape[1:], ds.dtype) for name, ds in datasets.items()}
    filtered = any(ds.id.get_create_plist().get_nfilters() for ds in datasets.values())
    if filtered:
        def reader():
            def read(name, k, out):
                datasets[name].read_direct(out, np.s_[int(indices[k])])
            return read
        return reader, layout, f
    offsets = {name: [ds.id.get_chunk_info_by_coord((int(i),) + (0,) * (ds.ndim - 1)).byte_offset
                      for i in indices] for name, ds in datasets.items()}
    fd = os.open(path, os.O_RDONLY)

    def reader():
        def read(name, k, out):
            os.preadv(fd, [memoryview(out).cast("B")], offsets[name][k])
        return read
    return reader, layout, f


def ceiling_pass(path: Path, indices: np.ndarray, threads: int, pool: ThreadPoolExecutor):
    reader, layout, _keep = ceiling_reads(path, indices)

    def work(part: int) -> int:
        read = reader()
        outs = {name: np.empty(shape, dtype) for name, (shape, dtype) in layout.items()}
        for k in range(part, len(indices), threads):
            for name in FEATURES:
                read(name, k, outs[name])
        return len(range(part, len(indices), threads))

    def one_pass() -> int:
        return sum(pool.map(work, range(threads)))
    one_pass.keep = _keep  # the HDF5 file stays open while the pass is used
    return one_pass


# -- the readers ------------------------------------------------------------------------------------


def loop_pass(split):
    def one_pass() -> int:
        for start in range(0, len(split), BATCH):
            split.read(np.arange(start, min(start + BATCH, len(split))))
        return len(split)
    return one_pass


def tf_pass(split):
    ds = split.to_tf_dataset(BATCH, shuffle=True)

    def one_pass() -> int:
        return sum(int(y.shape[0]) for _, y in ds)
    return one_pass


def dataloader_pass(split, workers: int, batched: bool = False):
    """`DataLoader(split, batch_size=8, shuffle=True)`, or with `batched`, whole batches as the
    split reads them (`batch_size=None`, a `BatchSampler`): no collate copy."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    if batched:
        loader = DataLoader(split, batch_size=None, num_workers=workers,
                            sampler=BatchSampler(RandomSampler(split), BATCH, drop_last=False),
                            persistent_workers=workers > 0)
    else:
        loader = DataLoader(split, batch_size=BATCH, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0)

    def one_pass() -> int:
        return sum(len(batch["id"]) for batch in loader)
    one_pass.loader = loader
    return one_pass


# -- the run ----------------------------------------------------------------------------------------


COLUMNS = ("ceiling, 1 thread", "ceiling, {T} threads", "split[batch] loop", "to_tf_dataset",
           "DataLoader 0 workers", "DataLoader 2 workers", "batched DataLoader 0 workers",
           "batched DataLoader 2 workers")
#: Which ceiling each reader is held against: one thread, or T threads.
AGAINST = {"split[batch] loop": 0, "DataLoader 0 workers": 0, "to_tf_dataset": 1,
           "DataLoader 2 workers": 1, "batched DataLoader 0 workers": 0,
           "batched DataLoader 2 workers": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/flowstore-bench/reader"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--videos-per-class", type=int, default=10,
                        help="synthetic clips per class (2 of 5 in set 2: about 40%% train)")
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each store, wait up to SECONDS for other load to drop")
    args = parser.parse_args()

    import flowstore

    args.workdir.mkdir(parents=True, exist_ok=True)
    source = prepare_source(args.workdir, args.videos_per_class, args.seed)
    stores = prepare_stores(args.workdir, source, args.size, args.steps, ["zarr", "h5"])
    threads = len(os.sched_getaffinity(0))
    pool = ThreadPoolExecutor(threads)
    started = time.perf_counter()
    results: dict[tuple[str, str], dict[str, Measured]] = {}
    splits = {}
    for key, path in stores.items():
        if args.wait_quiet:
            wait_for_quiet(args.wait_quiet)
        ds = flowstore.open(path)
        split = ds.split("train", features=FEATURES)
        splits[key] = split
        row = results.setdefault(key, {})
        row[COLUMNS[0]] = timed(ceiling_pass(path, split.indices, 1, pool), args.min_seconds)
        row[COLUMNS[1]] = timed(ceiling_pass(path, split.indices, threads, pool),
                                args.min_seconds)
        row["split[batch] loop"] = timed(loop_pass(split), args.min_seconds)
        for batched in (False, True):
            prefix = "batched " if batched else ""
            row[f"{prefix}DataLoader 0 workers"] = timed(dataloader_pass(split, 0, batched),
                                                         args.min_seconds)
            two = dataloader_pass(split, 2, batched)
            row[f"{prefix}DataLoader 2 workers"] = timed(two, args.min_seconds, children=True)
            del two.loader  # ends the workers
        print(f"{path.name}: done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    for key, split in splits.items():  # TensorFlow last: the DataLoader forks before it starts
        results[key]["to_tf_dataset"] = timed(tf_pass(split), args.min_seconds)
    print(report(args, stores, results, threads, splits, time.perf_counter() - started))


def report(args, stores, results, threads, splits, seconds) -> str:
    first = next(iter(splits.values()))
    lines = [
        f"## Reader vs ceiling ({_dt.date.today().isoformat()})", "",
        f"Machine: {machine_line()}.",
        f"Command: `{command_line()}` ({seconds:.0f} s of measuring).",
        f"Data: synthetic TV-HI built with `flowstore build` at {args.size} px, {args.steps} "
        f"steps, float16 flow; train split of {len(first)} clips; features "
        f"{', '.join(FEATURES)}; batch {BATCH}; T = {threads} threads; each figure at least "
        f"{args.min_seconds:g} s after a warm-up pass.", "",
        "samples/s (cores used; % of the ceiling per core):", "",
        "| store | " + " | ".join(c.format(T=threads) for c in COLUMNS) + " | others' CPU |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for (backend, compression), row in results.items():
        cells = []
        ceilings = (row[COLUMNS[0]], row[COLUMNS[1]])
        for column in COLUMNS:
            m = row[column]
            text = f"{m.rate:.0f} ({m.cores:.2f})"
            if column in AGAINST:
                ceiling = ceilings[AGAINST[column]]
                text += f"; {100 * (m.rate / m.cores) / (ceiling.rate / ceiling.cores):.0f}%"
            cells.append(text)
        others = max(m.others / m.wall for m in row.values())
        size_mib = disk_bytes(stores[(backend, compression)]) / 2 ** 20
        lines.append(f"| {backend}, {compression} ({size_mib:.0f} MiB) | " + " | ".join(cells)
                     + f" | up to {others:.2f} cores |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
