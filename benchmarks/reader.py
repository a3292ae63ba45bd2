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
The same ceilings writing each sample into its row of a preallocated batch instead ("batch
buffers", on 1 and T threads) are what any reader must deliver: where a chunk is only a
page-cache copy (uncompressed stores) the sample-sized buffer stays in the CPU cache and the
batch does not, and T threads writing batches share the memory bus where T threads rewriting
cache-resident buffers do not. Each reader is held against the issue's ceiling (the verdict)
and, in a second figure measured in the same rounds, against the batch-buffer ceiling on the
same threads: how much of the gap any reader delivering batches would have.

Readers, all reading the two-stream inputs (`middle_frame`, `flow`) of the train split, batch 8
(`--batch-size`: every reader pays something a batch, which larger batches spread thinner):
- `split[batch]`: `split.read(positions)` over the split in order, one thread;
- `to_tf_dataset`: `split.to_tf_dataset(8, shuffle=True)`, epoch after epoch (tf.data's threads);
- DataLoader 0 / 2 workers: `torch.utils.data.DataLoader(split, batch_size=8, shuffle=True,
  num_workers=W)` (2 workers: persistent, so worker start-up is not timed; their CPU counted);
  torch's collate stacks the samples again (one more copy of every byte);
- batched DataLoader: `DataLoader(split, batch_size=None, sampler=BatchSampler(RandomSampler(
  split), 8, False), num_workers=W)`: each batch is `split[positions]`, no collate copy (in a
  worker, read into the same shared segments as the DataLoader's, lent as they are);
- DataLoader 2 workers, no reads: the 2-worker DataLoader over a split whose batches are left
  unread (`UnreadSplit`): what carrying batches from the workers costs by itself. Its "% of
  the ceiling" is a bound, not a score: with transport at t times the ceiling's rate per core,
  no 2-worker DataLoader that also reads can pass 1 / (1 + 1/t) of the ceiling per core.
- to_tf_dataset, no reads: `to_tf_dataset` over the same unread split: what tf.data's own
  machinery costs a batch (shuffle, batch, the `tf.numpy_function` call, prefetch, the Python
  iterator handing out the tensors, a new iterator each epoch). A bound in the same way: no
  `to_tf_dataset` that also reads can pass 1 / (1 + 1/t) of the ceiling per core.

"% of ceiling per core" = (samples/s / cores the reader used) / (samples/s / cores the ceiling
used), against the 1-thread ceiling for one-thread readers and the T-thread ceiling for the
others. The cores used are CPU seconds / wall seconds of this process and its children; the
CPU other processes used meanwhile is reported too, since the machine may be shared.

An epoch is the train split (36 clips, 4-5 batches, with the defaults), or with
`--epoch-repeat N` the split's positions N times over: the same chunk files, in epochs as long
as a split N times larger. Every reader pays something per epoch (`to_tf_dataset` instantiates
and optimizes its map function for each new iterator, about 8% of its CPU on 4-5-batch epochs;
a DataLoader restarts its workers' queues), which a real split's epochs of hundreds of batches
spread thin, and the tiny epochs do not.

Each reader runs in a fresh process (`--cell`), in rounds, each round right after its ceiling in
that process, and the % is the median of the rounds' ratios: a VM's speed drifts by a fifth
within minutes, and a reader measured after another inherits its threads (torch's OpenMP pool
spins on after a collate and cost `to_tf_dataset` a fifth of its rate when they shared a
process).

    python benchmarks/reader.py                                  # 224 px, 16 steps, 40 clips
    python benchmarks/reader.py --size 112 --videos-per-class 10 --min-seconds 0.5 --rounds 3
    python benchmarks/reader.py --workdir /tmp/rb --videos-per-class 20 --epoch-repeat 10
    python benchmarks/reader.py --workdir /tmp/rb --videos-per-class 20 --epoch-repeat 10 \
        --batch-size 32 --store zarr,none --store h5,none
    python benchmarks/reader.py --workdir /tmp/rb --videos-per-class 20 --alignment-probe
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import (_busy_jiffies, header, refusing_bad_input,  # noqa: E402
                           prepare_source, wait_for_quiet)
from input_pipeline import disk_bytes, prepare_stores  # noqa: E402

import numpy as np  # noqa: E402

FEATURES = ("middle_frame", "flow")
#: Samples a batch (`--batch-size`): every reader's, and the batch-buffer ceilings'.
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
            scratch = aligned(largest, np.uint8)

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


def aligned(shape, dtype) -> np.ndarray:
    """A new uninitialized array starting on a 64-byte boundary, as the reader's batch buffers
    do (`flowstore.reader.buffers`). A large numpy array starts 16 bytes past a page (malloc
    maps it, with a 16-byte header), and on this AMD EPYC VM the kernel copied a chunk file
    (which starts on a page) about 4 times slower into a buffer 8-24 bytes past a page than
    into one on it, or 32 or more past it (`--alignment-probe`): the ceiling was fast or slow
    by where its buffers fell (benchmarks/README.md, Session 52)."""
    from flowstore.reader.buffers import BufferPool

    return BufferPool().empty(shape if isinstance(shape, tuple) else (shape,), dtype)


def ceiling_pass(path: Path, indices: np.ndarray, threads: int, pool: ThreadPoolExecutor,
                 into_batch: bool = False, batch: int = BATCH):
    """The ceiling: each thread reads its samples into one sample-sized buffer per feature, or
    with `into_batch` into the rows of one preallocated batch, as a reader must deliver them
    (a sample-sized buffer stays in the CPU cache; a batch does not). Each thread's buffers
    are made once and reused pass after pass, as the reader's pooled batch buffers are: a new
    batch each pass faulted its pages in again (a 108 MB batch at 32 samples: about a quarter
    of the batch-buffer ceiling's time; benchmarks/README.md, Session 52)."""
    reader, layout, _keep = ceiling_reads(path, indices)
    lead = (batch,) if into_batch else ()
    parts = [(reader(), {name: aligned(lead + shape, dtype) for name, (shape, dtype)
                         in layout.items()}) for _ in range(threads)]

    def work(part: int) -> int:
        read, outs = parts[part]
        mine = range(part, len(indices), threads)
        for row, k in enumerate(mine):
            for name in FEATURES:
                read(name, k, outs[name][row % batch] if into_batch else outs[name])
        return len(mine)

    def one_pass() -> int:
        return sum(pool.map(work, range(threads)))
    one_pass.keep = _keep  # the HDF5 file stays open while the pass is used
    return one_pass


def alignment_probe(path: Path, offsets=(0, 8, 16, 24, 32, 40, 56, 64, 2048, 2064),
                    seconds: float = 0.5) -> dict[int, float]:
    """GiB/s of one thread reading the uncompressed Zarr store's `flow` chunk files (one
    `os.preadv` each, as the ceiling and the reader do) into one buffer that starts `offset`
    bytes past a 4096-byte boundary: what the ceiling's figures hang on where its buffers
    fall (`aligned`)."""
    import flowstore

    split = flowstore.open(path).split("train", features=("flow",))
    reader, layout, _keep = ceiling_reads(path, split.indices)
    read = reader()
    shape, dtype = layout["flow"]
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = aligned(nbytes + 8192, np.uint8)
    page = -raw.ctypes.data % 4096
    rates = {}
    for offset in offsets:
        out = raw[page + offset:page + offset + nbytes].view(dtype).reshape(shape)
        for k in range(len(split.indices)):
            read("flow", k, out)  # warm: page cache, the buffer's pages
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            for k in range(len(split.indices)):
                read("flow", k, out)
            done += len(split.indices)
        rates[offset] = done * nbytes / (time.perf_counter() - start) / 2 ** 30
    return rates


# -- the readers ------------------------------------------------------------------------------------


def loop_pass(split, batch: int):
    def one_pass() -> int:
        for start in range(0, len(split), batch):
            split.read(np.arange(start, min(start + batch, len(split))))
        return len(split)
    return one_pass


def tf_pass(split, batch: int):
    ds = split.to_tf_dataset(batch, shuffle=True)

    def one_pass() -> int:
        return sum(int(y.shape[0]) for _, y in ds)
    return one_pass


def dataloader_pass(split, workers: int, batch: int, batched: bool = False):
    """`DataLoader(split, batch_size=batch, shuffle=True)`, or with `batched`, whole batches as
    the split reads them (`batch_size=None`, a `BatchSampler`): no collate copy."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    if batched:
        loader = DataLoader(split, batch_size=None, num_workers=workers,
                            sampler=BatchSampler(RandomSampler(split), batch, drop_last=False),
                            persistent_workers=workers > 0)
    else:
        loader = DataLoader(split, batch_size=batch, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0)

    def one_pass() -> int:
        return sum(len(batch["id"]) for batch in loader)
    one_pass.loader = loader
    return one_pass


# -- one cell: a reader against its ceiling, interleaved, in a process of its own ---------------------


TRANSPORT = "DataLoader 2 workers, no reads"
TF_MACHINERY = "to_tf_dataset, no reads"
READERS = ("split[batch] loop", "to_tf_dataset", "DataLoader 0 workers", "DataLoader 2 workers",
           "batched DataLoader 0 workers", "batched DataLoader 2 workers", TRANSPORT,
           TF_MACHINERY)
#: Which ceiling each reader is held against: one thread, or T threads.
AGAINST = {"split[batch] loop": 1, "DataLoader 0 workers": 1, "to_tf_dataset": None,
           "DataLoader 2 workers": None, "batched DataLoader 0 workers": 1,
           "batched DataLoader 2 workers": None, TRANSPORT: None, TF_MACHINERY: None}
CEILINGS = ("ceiling, 1 thread", "ceiling, T threads", "ceiling, 1 thread, batch buffers",
            "ceiling, T threads, batch buffers")


def reader_pass(name: str, split, batch: int):
    if name == TRANSPORT:
        return dataloader_pass(unread(split), 2, batch)
    if name == TF_MACHINERY:
        return tf_pass(unread(split), batch)
    if name == "split[batch] loop":
        return loop_pass(split, batch)
    if name == "to_tf_dataset":
        return tf_pass(split, batch)
    workers = 2 if "2 workers" in name else 0
    return dataloader_pass(split, workers, batch, batched=name.startswith("batched"))


def repeated(split, times: int, kind: type | None = None):
    """`split` with its positions `times` over, end to end: epochs `times` as long, of the same
    samples (a copy made through the split's pickled state, its location and selection), as a
    `kind` of split (default: the split's own class)."""
    state = split.__getstate__()
    state["indices"] = np.tile(state["indices"], times)
    kind = kind or type(split)
    longer = kind.__new__(kind)
    longer.__setstate__(state)
    return longer


def unread(split):
    """`split` as an `UnreadSplit`: the same samples, batches left unread (the no-read bounds)."""
    return repeated(split, 1, _unread_split_class())


def _unread_split_class():
    from flowstore.reader.buffers import aligned_empty
    from flowstore.reader.dataset import ID, LABEL, Split

    class UnreadSplit(Split):
        """A split whose batches are its buffers as they come from the pool, nothing read into
        them: a DataLoader over it pays only for carrying batches from its workers (indices
        out, buffers lent, batches unpickled and handed back), the transport any read adds to;
        `to_tf_dataset` over it, only for tf.data's own work a batch."""

        def read(self, positions):
            positions = np.asarray(positions, dtype=np.int64).reshape(-1)
            batch = {key: aligned_empty((positions.size, *self.shapes[key]), self.dtypes[key])
                     for key in self.features}
            batch[LABEL], batch[ID] = self.labels[positions], self.ids[positions]
            return batch

    return UnreadSplit


def measure_cell(path: Path, what: str, rounds: int, seconds: float,
                 epoch_repeat: int = 1, batch: int = BATCH) -> dict:
    """`what` (a reader, or "ceilings") in this process, `rounds` times, each time right after
    the ceiling it is held against, so that both see the same machine: a shared VM's speed
    drifts by 20% within minutes, which side-by-side cells measured a minute apart cannot tell
    from a difference between readers. Each figure is the median over the rounds."""
    import flowstore

    threads = len(os.sched_getaffinity(0))
    pool = ThreadPoolExecutor(threads)
    split = flowstore.open(path).split("train", features=FEATURES)
    if epoch_repeat > 1:
        split = repeated(split, epoch_repeat)
    passes = {}
    if what == "ceilings":
        passes["ceiling, 1 thread"] = (ceiling_pass(path, split.indices, 1, pool), False)
        passes["ceiling, T threads"] = (ceiling_pass(path, split.indices, threads, pool), False)
        passes["ceiling, 1 thread, batch buffers"] = (
            ceiling_pass(path, split.indices, 1, pool, into_batch=True, batch=batch), False)
        passes["ceiling, T threads, batch buffers"] = (
            ceiling_pass(path, split.indices, threads, pool, into_batch=True, batch=batch), False)
    else:
        ceiling_threads = AGAINST[what] or threads
        passes["ceiling"] = (ceiling_pass(path, split.indices, ceiling_threads, pool), False)
        passes["batch buffers"] = (ceiling_pass(path, split.indices, ceiling_threads, pool,
                                                into_batch=True, batch=batch), False)
        passes[what] = (reader_pass(what, split, batch), "2 workers" in what)
    for one_pass, _ in passes.values():
        one_pass()  # warm-up: page cache, thread pools, tf.data's tracing, worker start-up
    runs: dict[str, list[Measured]] = {name: [] for name in passes}
    for _ in range(rounds):
        for name, (one_pass, children) in passes.items():
            runs[name].append(timed(one_pass, seconds, children))
    cell = {name: {"rate": _median([m.rate for m in ms]), "cores": _median([m.cores for m in ms]),
                   "others": max(m.others / m.wall for m in ms)} for name, ms in runs.items()}
    if what != "ceilings":
        for against, key in (("ceiling", "ratio"), ("batch buffers", "batch_ratio")):
            ratios = [(r.rate / r.cores) / (c.rate / c.cores)
                      for r, c in zip(runs[what], runs[against], strict=True)]
            cell[what][key] = _median(ratios)
            cell[what][f"{key}_range"] = (min(ratios), max(ratios))
    return cell


def _median(values: list[float]) -> float:
    return float(np.median(values))


def run_cell(path: Path, what: str, args) -> dict:
    """`measure_cell` in a fresh Python process: no reader inherits another's threads (torch's
    OpenMP pool spins on after a collate), heap or imports."""
    import json
    import subprocess

    command = [sys.executable, __file__, "--cell", str(path), what, "--rounds", str(args.rounds),
               "--min-seconds", str(args.min_seconds), "--epoch-repeat", str(args.epoch_repeat),
               "--batch-size", str(args.batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} on {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@refusing_bad_input
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/flowstore-bench/reader"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--videos-per-class", type=int, default=10,
                        help="synthetic clips per class (2 of 5 in set 2: about 40%% train)")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="length of one round of one reader")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds per cell, each reader right after its ceiling")
    parser.add_argument("--epoch-repeat", type=int, default=1, metavar="N",
                        help="an epoch visits the train split N times over (epochs N times "
                             "as long, the same samples)")
    parser.add_argument("--batch-size", type=int, default=BATCH, metavar="N",
                        help="samples a batch, of every reader and the batch-buffer ceilings")
    parser.add_argument("--store", action="append", metavar="BACKEND,COMPRESSION",
                        choices=("zarr,default", "zarr,none", "h5,default", "h5,none"),
                        help="measure only these stores (repeatable; default: all four)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each store, wait up to SECONDS for other load to drop")
    parser.add_argument("--alignment-probe", action="store_true",
                        help="only measure how fast the uncompressed Zarr store's chunks are "
                             "read into buffers at other offsets from a page boundary")
    parser.add_argument("--cell", nargs=2, metavar=("STORE", "READER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epoch_repeat < 1:
        parser.error("--epoch-repeat must be >= 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.cell:  # the child process of `run_cell`
        import json

        print(json.dumps(measure_cell(Path(args.cell[0]), args.cell[1], args.rounds,
                                      args.min_seconds, args.epoch_repeat, args.batch_size)))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    source = prepare_source(args.workdir, args.videos_per_class, args.seed)
    stores = prepare_stores(args.workdir, source, args.size, args.steps, ["zarr", "h5"])
    if args.alignment_probe:
        rates = alignment_probe(stores[("zarr", "none")])
        print("\n".join([header(__file__), "", "| buffer offset from a page (bytes) | GiB/s |",
                          "|---|---|", *(f"| {offset} | {rate:.1f} |"
                                         for offset, rate in rates.items())]))
        return
    started = time.perf_counter()
    results: dict[tuple[str, str], dict[str, dict]] = {}
    if args.store:
        stores = {key: path for key, path in stores.items()
                  if f"{key[0]},{key[1].split()[0]}" in args.store}
    for key, path in stores.items():
        if args.wait_quiet:
            wait_for_quiet(args.wait_quiet)
        row = results.setdefault(key, {})
        row.update(run_cell(path, "ceilings", args))
        for reader in READERS:
            row[reader] = run_cell(path, reader, args)[reader]
        print(f"{path.name}: done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    import flowstore

    train = len(flowstore.open(next(iter(stores.values()))).split("train"))
    print(report(args, stores, results, train, time.perf_counter() - started))


def report(args, stores, results, train: int, seconds: float) -> str:
    threads = len(os.sched_getaffinity(0))
    columns = [c.replace("T threads", f"{threads} threads") for c in CEILINGS] + list(READERS)
    lines = [
        "## Reader vs ceiling", "",
        header(__file__),
        f"- {seconds:.0f} s of measuring", "",
        f"Data: synthetic TV-HI built with `flowstore build` at {args.size} px, {args.steps} "
        f"steps, float16 flow; train split of {train} clips"
        + (f", an epoch {args.epoch_repeat} times over it ({train * args.epoch_repeat} samples)"
           if args.epoch_repeat > 1 else "") + f"; features {', '.join(FEATURES)}; "
        f"batch {args.batch_size}; T = {threads} threads. Each cell ran in a fresh process, "
        f"{args.rounds} rounds of at least {args.min_seconds:g} s, each right after its ceiling "
        f"in the same process; figures are medians over the rounds.", "",
        "samples/s (cores used); for readers, % of the ceiling per core, median "
        "(lowest-highest round), then [% of the batch-buffer ceiling on the same threads]:", "",
        "| store | " + " | ".join(columns) + " | others' CPU |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for (backend, compression), row in results.items():
        cells = []
        for column in (*CEILINGS, *READERS):
            m = row[column]
            text = f"{m['rate']:.0f} ({m['cores']:.2f})"
            if "ratio" in m:
                low, high = m["ratio_range"]
                text += f"; {100 * m['ratio']:.0f}% ({100 * low:.0f}-{100 * high:.0f})"
            if "batch_ratio" in m:
                text += f" [{100 * m['batch_ratio']:.0f}%]"
            cells.append(text)
        others = max(m["others"] for m in row.values())
        size_mib = disk_bytes(stores[(backend, compression)]) / 2 ** 20
        lines.append(f"| {backend}, {compression} ({size_mib:.0f} MiB) | " + " | ".join(cells)
                     + f" | up to {others:.2f} cores |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
