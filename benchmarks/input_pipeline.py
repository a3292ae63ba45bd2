"""Training input throughput: `trainers`' tf.data pipeline against a bare read of the same arrays.

Issue 5 asks how fast the training input pipeline (samples/s delivered as tf.data batches, frame
and flow) is next to a bare sequential read of the same arrays through the store's reader, for
both backends, compressed and uncompressed; the target is at least 80% of the bare read.

One synthetic TV-HI source (flowstore's own generator) is built once into a `.zarr` and a `.h5`
store with `flowstore build` (the default compression presets). flowstore has no "uncompressed"
option, so the script writes an uncompressed copy of each with plain zarr (`compressors=None`) and
plain h5py (no filter): same arrays, same one-sample chunks, same root attributes, so
`open_store` and the trainers accept them. All four stores are cached in `--workdir`.

For each store and model it measures, interleaved and `--repeats` times (median):

- bare: `store.read(array, i)` for each array the model reads, over the train indices in order
  (after one warm-up pass, so both sides read from the page cache);
- pipeline: `make_dataset(open_samples(store, model), "train", InputOptions(batch_size=8,
  shuffle=True))`, iterated epoch after epoch (after one warm-up epoch): the real training input.

Each measurement runs for at least `--min-seconds` (whole passes/epochs). Beside the samples/s,
the script reports the CPU the process used (cores busy) and how many cores other processes kept
busy meanwhile (/proc/stat), since the machine is shared.

Beside them it times the reader as it was before commit 8b00925 ("before"): `tf.py_function`
around `StoreSamples.read_sample`, which converted every array to float32 in numpy. The pipeline
now reads a whole batch per `tf.numpy_function` call, each sample decoded straight into an
aligned batch buffer that TensorFlow uses without a copy, and hands it on unwidened (uint8
pixels, float16 flow; the model casts them as the first step of its graph); the "before" column
keeps that change measurable (`make_dataset_before` below).

The bare read goes through the backend library (zarr, h5py). Since session 3 the pipeline's
reads do not: `Store.read_into` decodes a local store's chunks itself (os.preadv for plain
bytes, numcodecs for Blosc/Zstd) without holding the GIL, so tf.data's parallel reads use both
cores; `--profile` shows those reads alone in one thread ("read_batch loop").

`--profile` adds, for every store, the steps in between: `StoreSamples.read_sample` in a plain
loop (bare read + numpy decode to float32), the reader's `Split.read` in a plain loop, the
pipeline with one read at a time, and the
pipeline casting to float32 inside tf.data (what it did from 8b00925 until the models took
narrow inputs); and, once, tf.data with no store at all (the ceiling of any pipeline of this
shape on the machine).

    python benchmarks/input_pipeline.py                          # 224 px, 16 steps, 90 train clips
    python benchmarks/input_pipeline.py --profile --workdir /tmp/bench/input
    python benchmarks/input_pipeline.py --size 112 --videos-per-class 60 --models two_stream
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Machine description, busy-CPU accounting and the CLI path are build_workers.py's.
from build_workers import (_busy_jiffies, flowstore_command, header, prepare_source,  # noqa: E402
                          refusing_bad_input, wait_for_quiet, workdir_or_temporary)

import numpy as np  # noqa: E402

BACKENDS = {"zarr": ".zarr", "h5": ".h5"}
MODELS = ("two_stream", "tvhi_flow")


# -- stores -----------------------------------------------------------------------------------


def build_store(source: Path, store: Path, size: int, steps: int) -> None:
    """`flowstore build tvhi` into `store` (skipped when a finished one is there)."""
    if store.exists():
        return
    command = [*flowstore_command(), "build", "tvhi", "--source", str(source), "--store",
               str(store), "--size", str(size), "--steps", str(steps), "--workers", "2",
               "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        if store.is_dir():
            shutil.rmtree(store, ignore_errors=True)
        else:
            store.unlink(missing_ok=True)
        raise SystemExit(f"build failed ({done.returncode}): {' '.join(command)}\n"
                         f"{done.stdout}{done.stderr}")
    print(f"built {store.name} in {time.perf_counter() - started:.0f}s", file=sys.stderr)


def copy_zarr_uncompressed(src: Path, dst: Path) -> None:
    """The same Zarr v3 group with every array rewritten with `compressors=None`."""
    import zarr

    if dst.exists():
        return
    staging = dst.with_name(dst.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    group = zarr.open_group(str(src), mode="r", zarr_format=3, use_consolidated=False)
    out = zarr.open_group(str(staging), mode="w", zarr_format=3)
    for name, arr in group.arrays():
        text = arr.dtype.kind in "OTU"
        new = out.create_array(name, shape=arr.shape, chunks=arr.chunks,
                               dtype=str if text else arr.dtype, compressors=None,
                               **({} if text else {"fill_value": arr.fill_value}))
        if arr.ndim > 1:  # one sample (one chunk) at a time
            for i in range(arr.shape[0]):
                new[i] = arr[i]
        else:
            new[:] = arr[:]
    out.attrs.update(group.attrs.asdict())  # includes "flowstore.format"
    os.replace(staging, dst)


def copy_h5_uncompressed(src: Path, dst: Path) -> None:
    """The same HDF5 file with every dataset rewritten without a filter (same chunks)."""
    import h5py

    if dst.exists():
        return
    staging = dst.with_name(dst.name + ".partial")
    staging.unlink(missing_ok=True)
    with h5py.File(src, "r") as f, h5py.File(staging, "w") as out:
        for name, ds in f.items():
            if h5py.check_string_dtype(ds.dtype) or ds.chunks is None:
                out.create_dataset(name, data=ds[()], dtype=ds.dtype)
                continue
            new = out.create_dataset(name, shape=ds.shape, dtype=ds.dtype, chunks=ds.chunks,
                                     fillvalue=ds.fillvalue)
            for i in range(ds.shape[0]):
                new[i] = ds[i]
        for key, value in f.attrs.items():  # JSON text, as flowstore writes them
            out.attrs[key] = value
    os.replace(staging, dst)


def prepare_stores(workdir: Path, source: Path, size: int, steps: int,
                   backends: list[str]) -> dict[tuple[str, str], Path]:
    stores = {}
    for backend in backends:
        suffix = BACKENDS[backend]
        compressed = workdir / f"tvhi-{size}px-{steps}t-compressed{suffix}"
        plain = workdir / f"tvhi-{size}px-{steps}t-uncompressed{suffix}"
        build_store(source, compressed, size, steps)
        started = time.perf_counter()
        (copy_zarr_uncompressed if backend == "zarr" else copy_h5_uncompressed)(compressed, plain)
        print(f"{plain.name} ready ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
        stores[(backend, "default presets")] = compressed
        stores[(backend, "none")] = plain
    return stores


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- timing -----------------------------------------------------------------------------------


@dataclass
class Measured:
    samples: int
    wall: float
    cpu: float  # CPU seconds of this process (all its threads)
    others: float  # CPU seconds of every other process meanwhile

    @property
    def rate(self) -> float:
        return self.samples / self.wall

    @property
    def cores(self) -> float:
        return self.cpu / self.wall

    @property
    def others_cores(self) -> float:
        return self.others / self.wall


def timed_passes(one_pass, min_seconds: float) -> Measured:
    """Run `one_pass()` (returns samples delivered) until `min_seconds` have passed."""
    tick = os.sysconf("SC_CLK_TCK")
    busy = _busy_jiffies()
    cpu = time.process_time()
    start = time.perf_counter()
    samples = 0
    while True:
        samples += one_pass()
        wall = time.perf_counter() - start
        if wall >= min_seconds:
            break
    cpu = time.process_time() - cpu
    busy = (_busy_jiffies() - busy) / tick
    return Measured(samples, wall, cpu, max(0.0, busy - cpu))


def bare_pass(store, arrays: tuple[str, ...], indices: np.ndarray):
    def one_pass() -> int:
        for i in indices:
            for name in arrays:
                store.read(name, int(i))
        return len(indices)
    return one_pass


def read_batch_pass(samples, indices: np.ndarray, batch_size: int):
    """The reader's `Split.read` over the train split in order, in one thread: the pipeline's
    reads (flowstore's own chunk decoders, `Store.read_into`) without tf.data."""
    split = samples.split("train")
    assert np.array_equal(split.indices, indices)

    def one_pass() -> int:
        for start in range(0, len(indices), batch_size):
            split.read(np.arange(start, min(start + batch_size, len(indices))))
        return len(indices)
    return one_pass


def read_sample_pass(samples, indices: np.ndarray):
    def one_pass() -> int:
        for i in indices:
            samples.read_sample(int(i))
        return len(indices)
    return one_pass


def dataset_pass(ds):
    def one_pass() -> int:
        n = 0
        for _, labels in ds:
            n += int(labels.shape[0])
        return n
    return one_pass


def make_dataset_before(samples, split: str, options):
    """`trainers.data.make_dataset` as it was before commit 8b00925, for comparison.

    The reader was `tf.py_function(samples.read_sample)`: it returned float32 arrays, converted
    in numpy under the GIL (float16 to float32 costs numpy about 3 ns a value here, 10 ns on the
    synthetic flow, whose values are mostly float16 subnormals).
    """
    import tensorflow as tf

    AUTOTUNE = tf.data.AUTOTUNE

    names = tuple(samples.inputs)
    labels = tf.constant(samples.labels)
    indices = samples.indices(split)
    ds = tf.data.Dataset.from_tensor_slices(indices)
    if options.shuffle:
        ds = ds.shuffle(indices.size, seed=options.seed, reshuffle_each_iteration=True)

    def read(index):
        values = tf.py_function(samples.read_sample, [index], Tout=[tf.float32] * len(names))
        inputs = {}
        for name, value in zip(names, values, strict=True):
            value.set_shape(samples.sample_shapes[name])
            inputs[name] = value
        label = tf.gather(labels, index)
        return (inputs if len(names) > 1 else inputs[names[0]]), label

    parallel = options.parallel_reads or AUTOTUNE
    ds = ds.map(read, num_parallel_calls=parallel, deterministic=True)
    return ds.batch(options.batch_size).prefetch(AUTOTUNE)


def make_dataset_float32(samples, split: str, options):
    """`trainers.data.make_dataset`, but every input cast to float32 inside tf.data (8b00925;
    since the reader, after its prefetch)."""
    import tensorflow as tf

    import trainers.data as data

    def widen(inputs, label):
        return tf.nest.map_structure(lambda value: tf.cast(value, tf.float32), inputs), label

    return data.make_dataset(samples, split, options).map(widen)


@dataclass
class Row:
    backend: str
    compression: str
    model: str
    on_disk: int
    train: int
    bare: list[Measured]
    pipeline: list[Measured]
    before: list[Measured]
    extra: dict[str, list[Measured]]


def median_rate(ms: list[Measured]) -> float:
    return statistics.median(m.rate for m in ms)


def median_of(ms: list[Measured], attr: str) -> float:
    return statistics.median(getattr(m, attr) for m in ms)


PROFILE_READ_SAMPLE = "read_sample loop (bare + numpy float32 decode)"
PROFILE_READ_BATCH = "read_batch loop (the pipeline's reads, one thread, no tf.data)"


def tf_data_floor(args: argparse.Namespace, n: int) -> dict[str, Measured]:
    """tf.data with no store at all: a numpy_function returns one cached float16 flow sample.

    The most any pipeline of this shape (one numpy_function per sample, batch, prefetch) can
    deliver on this machine, with float16 batches and with the float32 cast in the graph.
    """
    import tensorflow as tf

    AUTOTUNE = tf.data.AUTOTUNE

    sample = np.full((args.steps, args.size, args.size, 2), 0.5, dtype=np.float16)

    def dataset(cast: bool):
        ds = tf.data.Dataset.range(n).shuffle(n).map(
            lambda i: (tf.ensure_shape(tf.numpy_function(lambda _: sample, [i], tf.float16,
                                                         stateful=False), sample.shape), i),
            num_parallel_calls=AUTOTUNE, deterministic=True)
        if cast:
            ds = ds.map(lambda v, i: (tf.cast(v, tf.float32), i))
        return ds.batch(args.batch_size).prefetch(AUTOTUNE)

    out = {}
    for name, cast in (("float16 batches", False), ("float32 batches (cast in graph)", True)):
        fn = dataset_pass(dataset(cast))
        fn()
        out[name] = [timed_passes(fn, args.min_seconds) for _ in range(args.repeats)]
    return out


def measure_store(path: Path, model: str, args: argparse.Namespace) -> tuple:
    from trainers.data import InputOptions, make_dataset
    from trainers.samples import open_samples

    samples = open_samples(path, model)
    try:
        indices = samples.indices("train")
        arrays = tuple(samples.inputs.values())
        options = InputOptions(batch_size=args.batch_size, shuffle=True)
        bare = bare_pass(samples.store, arrays, indices)
        ds = make_dataset(samples, "train", options)
        pipeline = dataset_pass(ds)
        bare()  # warm-up: page cache, array handles
        pipeline()  # warm-up epoch: tracing, autotune, thread pools
        before = dataset_pass(make_dataset_before(samples, "train", options))
        before()  # warm-up
        variants = {}
        if args.profile:
            variants[PROFILE_READ_SAMPLE] = read_sample_pass(samples, indices)
            variants[PROFILE_READ_BATCH] = read_batch_pass(samples, indices, args.batch_size)
            one = make_dataset(samples, "train", InputOptions(batch_size=args.batch_size,
                                                              shuffle=True, parallel_reads=1))
            variants["pipeline, parallel_reads=1"] = dataset_pass(one)
            variants["pipeline, float32 batches"] = dataset_pass(
                make_dataset_float32(samples, "train", options))
            for fn in variants.values():
                fn()  # warm-up
        results_bare, results_pipe, results_before = [], [], []
        results_extra: dict[str, list[Measured]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            if args.wait_quiet:
                wait_for_quiet(args.wait_quiet)
            results_bare.append(timed_passes(bare, args.min_seconds))
            results_pipe.append(timed_passes(pipeline, args.min_seconds))
            results_before.append(timed_passes(before, args.min_seconds))
            for name, fn in variants.items():
                results_extra[name].append(timed_passes(fn, args.min_seconds))
        return len(indices), results_bare, results_pipe, results_before, results_extra
    finally:
        samples.store.close()


# -- report -----------------------------------------------------------------------------------


def ratio_cell(rate: float, bare: float) -> str:
    mark = "**" if rate / bare < 0.8 else ""
    return f"{mark}{100 * rate / bare:.0f}%{mark}"


def report(rows: list[Row], args: argparse.Namespace, source: Path,
           floor: dict[str, list[Measured]] | None) -> str:
    import tensorflow as tf

    lines = [
        "## Training input pipeline vs bare read (synthetic TV-HI)",
        "",
        header(__file__),
        f"- stores: `flowstore build tvhi --source {source.name} --size {args.size} --steps "
        f"{args.steps} --workers 2` (compression: the default presets: zarr blosc LZ4 + "
        f"bitshuffle for pixels and flow; h5 lzf, flow byte-shuffled), plus uncompressed copies "
        f"(plain zarr `compressors=None` / h5py, same chunks and attributes); flow float16",
        f"- bare: `store.read(array, i)` for the model's arrays over the {rows[0].train} train "
        f"indices in order; pipeline: `make_dataset(open_samples(store, model), \"train\", "
        f"InputOptions(batch_size={args.batch_size}, shuffle=True))`, iterated; both after one "
        f"warm-up pass (page cache warm); each measurement >= {args.min_seconds:g} s of whole "
        f"passes; median of {args.repeats}, interleaved bare/pipeline",
        f"- TensorFlow {tf.__version__}, parallel_reads AUTOTUNE, prefetch AUTOTUNE",
        "- pipeline: one `tf.numpy_function` per batch reads each sample's chunks straight into "
        "a 64-byte-aligned batch buffer (`flowstore.reader` `Split.read`) that TensorFlow uses "
        "without a copy, and the batches keep the stored dtypes (uint8 pixels, float16 flow; "
        "the model casts to float32 in its own graph); before: "
        "`tf.py_function(read_sample)` per sample, float32 conversion in numpy, tf.data "
        "batching (the reader until 8b00925)",
        "",
        "| backend | compression | model (arrays) | store on disk | bare samples/s | "
        "pipeline samples/s | pipeline / bare | before samples/s | before / bare "
        "| CPU cores: bare, pipeline, before | other processes (cores busy) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        arrays = "middle_frame + flow" if r.model == "two_stream" else "flow"
        bare, pipe, prop = median_rate(r.bare), median_rate(r.pipeline), median_rate(r.before)
        others = max(m.others_cores for m in r.bare + r.pipeline + r.before)
        lines.append(
            f"| {r.backend} | {r.compression} | {r.model} ({arrays}) | "
            f"{r.on_disk / 2**20:.0f} MiB | {bare:.1f} | {pipe:.1f} | {ratio_cell(pipe, bare)} | "
            f"{prop:.1f} | {ratio_cell(prop, bare)} | {median_of(r.bare, 'cores'):.2f}, "
            f"{median_of(r.pipeline, 'cores'):.2f}, {median_of(r.before, 'cores'):.2f} | "
            f"{others:.2f} |")
    if any(r.extra for r in rows):
        names = list(rows[0].extra)
        lines += ["", "Profile: the same stores, samples/s of the steps between bare and pipeline "
                      "(% of bare in brackets):", "",
                  "| backend | compression | model | bare | " + " | ".join(names)
                  + " | pipeline |",
                  "|---|---|---|---:|" + "---:|" * len(names) + "---:|"]
        for r in rows:
            bare = median_rate(r.bare)
            cells = [f"{median_rate(r.extra[n]):.1f} ({100 * median_rate(r.extra[n]) / bare:.0f}%)"
                     for n in names]
            lines.append(f"| {r.backend} | {r.compression} | {r.model} | {bare:.1f} | "
                         + " | ".join(cells) + f" | {median_rate(r.pipeline):.1f} "
                         f"({100 * median_rate(r.pipeline) / bare:.0f}%) |")
    if floor:
        lines += ["", "tf.data alone (no store: a numpy_function returns one cached float16 flow "
                      f"sample of {args.steps}x{args.size}x{args.size}x2; batch "
                      f"{args.batch_size}, prefetch): "
                  + "; ".join(f"{name} {median_rate(ms):.0f} samples/s "
                              f"({median_of(ms, 'cores'):.2f} cores)"
                              for name, ms in floor.items())]
    lines += ["", "Every measurement (samples/s; wall s):", "",
              "| backend | compression | model | bare | pipeline | before |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.backend} | {r.compression} | {r.model} | " + " | ".join(
            ", ".join(f"{m.rate:.1f} ({m.wall:.1f}s, others {m.others_cores:.2f})" for m in ms)
            for ms in (r.bare, r.pipeline, r.before)) + " |")
    busiest = max(m.others_cores for r in rows for m in r.bare + r.pipeline + r.before)
    if busiest > 0.1:
        lines += ["", f"Note: other processes kept up to {busiest:.2f} cores busy during a "
                      f"measurement; rates are only as clean as the machine was."]
    return "\n".join(lines)


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    from flowstore.malloc_tuning import keep_freed_memory

    keep_freed_memory()  # as `trainers run` does, for both the bare read and the pipeline
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="frame side S [224]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--videos-per-class", type=int, default=50,
                        help="synthetic clips per class; train = 90%% of half of them [50: 90]")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=8, help="pipeline batch size [8]")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per side [3]")
    parser.add_argument("--min-seconds", type=float, default=4.0,
                        help="each measurement runs whole passes for at least this long [4]")
    parser.add_argument("--profile", action="store_true",
                        help="also time read_sample alone, parallel_reads=1 and tf.data alone")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each measurement, wait up to SECONDS for other load to "
                             "fall under 0.25 cores [0]")
    parser.add_argument("--seed", type=int, default=0, help="synthetic source seed [0]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the source and the four stores here (reused) "
                             "[a temporary folder, removed at the end]")
    args = parser.parse_args(argv)

    with workdir_or_temporary(args.workdir, "flowstore-bench-input-") as workdir:
        source = prepare_source(workdir, args.videos_per_class, args.seed)
        stores = prepare_stores(workdir, source, args.size, args.steps, args.backends)
        rows = []
        for (backend, compression), path in stores.items():
            for model in args.models:
                train, bare, pipe, before, extra = measure_store(path, model, args)
                rows.append(Row(backend, compression, model, disk_bytes(path), train, bare,
                                pipe, before, extra))
                print(f"{backend} {compression} {model}: bare {median_rate(bare):.1f}/s, "
                      f"pipeline {median_rate(pipe):.1f}/s, before "
                      f"{median_rate(before):.1f}/s", file=sys.stderr, flush=True)
        floor = tf_data_floor(args, rows[0].train) if args.profile else None
        print(report(rows, args, source, floor))


if __name__ == "__main__":
    main()
