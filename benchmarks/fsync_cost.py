"""What `flowstore build --fsync` adds per sample, apart from extraction.

A whole build on a shared machine cannot show it: extraction's CPU time dominates and its
wall time moves with the load. So this re-writes the samples of an existing store into fresh
stores of both backends, once as a build writes them (`write_sample`) and once with
`durable=True` (each sample's chunks and folder entries fsynced, as `--fsync` does), and
times the writes alone; then it times one ledger write as `--fsync` makes it (checksums,
fsync, `done` and attributes, fsync; the coordinator makes one a second).

    python benchmarks/fsync_cost.py STORE.zarr [--samples 200] [--workdir DIR]

The work folder must be on the disk to measure (not tmpfs, where fsync does nothing). Prints the
command, machine and date, then a table: one row per backend and write mode.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flowstore.datasets import get_dataset
from flowstore.params import from_dict
from flowstore.store import create_store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refusing_bad_input  # noqa: E402  (shared by the benchmarks)


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a built store to copy samples from")
    parser.add_argument("--samples", type=int, default=200,
                        help="rewrite the store's first N samples [200]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the fresh stores go (on the disk to measure) [the system's "
                             "temporary folder]")
    args = parser.parse_args(argv)

    with open_store(args.store) as source:
        attrs = source.attrs
        dataset = get_dataset(attrs["dataset"])
        specs = dataset.specs(from_dict(dataset.params_type, attrs["params"]))
        count = min(args.samples, source.num_samples)
        columns = {name: source.read(name) for name in ("id", "label", "split")}
        checksums = source.read("checksum")
        samples = [{spec.name: source.read(spec.name, i) for spec in specs} for i in range(count)]
    mib = sum(a.nbytes for a in samples[0].values()) / 2**20
    print(header(__file__, argv))
    print(f"- {count} samples of {args.store} ({mib:.2f} MiB each, before compression)\n")
    print("| backend | durable | write wall (s) | ms a sample | write CPU (s) "
          "| one durable ledger write (ms) |")
    print("|---|---|---:|---:|---:|---:|")
    if args.workdir is not None:  # made if absent, as every benchmark's --workdir
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=args.workdir, prefix="fsync-cost-"))
    try:
        for suffix in (".zarr", ".h5"):
            for durable in (False, True):
                path = workdir / f"s-{int(durable)}{suffix}"
                store = create_store(path, attrs=attrs, specs=specs, columns=columns,
                                     num_samples=len(columns["id"]))
                start, cpu = time.perf_counter(), time.process_time()
                for index, arrays in enumerate(samples):
                    store.write_sample(index, arrays, durable=durable)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                store.sync_columns()  # the first one also makes the new store's layout durable
                ledger = time.perf_counter()  # then one durable ledger write, as a build makes
                written = range(count)  # (every sample written here changed since the last one)
                store.write_changed("checksum", checksums, written)
                store.sync_columns()
                store.write_changed("done", np.ones(len(columns["id"]), bool), written)
                store.flush()
                store.sync_columns()
                ledger = time.perf_counter() - ledger
                store.close()
                print(f"| {'Zarr' if suffix == '.zarr' else 'HDF5'} | {'yes' if durable else 'no'} "
                      f"| {wall:.3f} | {1000 * wall / count:.1f} | {cpu:.3f} "
                      f"| {1000 * ledger:.1f} |", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
