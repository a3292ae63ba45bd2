"""CPU time of one `Store.read_into` of one sample, against the same chunk file read by hand.

What the reader spends per chunk beyond the copy itself: `split[batch]` on an uncompressed
store, where the ceiling (benchmarks/reader.py) is one `os.open` + `os.preadv` + `os.close`
per chunk, is only as close to it as this per-read overhead is small. The hand read here is that
ceiling's loop, with the chunk paths looked up beforehand; both read the same samples into the
same buffer, the best of `--repeats` passes of `--reads` reads each.

    python benchmarks/read_into_overhead.py STORE.zarr [--array middle_frame] [--reads 3000]

Prints the command, machine and date, then a table: microseconds of CPU per read each way,
and the ratio. A compressed array, or an HDF5 store, is refused (error, exit code 2): the hand
read copies a chunk file's bytes as they are, which is the sample only when it is uncompressed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import header, refuse, refusing_bad_input  # noqa: E402  (shared)


class Unmeasurable(Exception):
    """A store or array this comparison means nothing on (why, in one line)."""


def best_cpu_per_call(call, count: int, repeats: int) -> float:
    """The least CPU seconds per call over `repeats` passes of `count` calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for k in range(count):
            call(k)
        best = min(best, (time.process_time() - started) / count)
    return best


def measure(store_path: str, array: str, reads: int, repeats: int) -> dict[str, float]:
    """CPU microseconds per read: flowstore's `read_into` and the hand read of the same chunk."""
    from flowstore.store import open_store

    with open_store(store_path) as store:
        if not hasattr(store, "chunk_path"):
            raise Unmeasurable(f"{store_path}: not a local Zarr store (the hand read opens its "
                               f"chunk files)")
        if array not in store.array_names():
            raise Unmeasurable(f"{store_path}: no array {array!r} (it has "
                               f"{', '.join(store.array_names())})")
        shape, dtype = store.sample_layout(array)
        out = np.empty(shape, dtype)
        samples = store.info(array).shape[0]
        paths = [str(store.chunk_path(array, i)) for i in range(samples)]
        for path in paths:  # an uncompressed chunk file is the sample's bytes, no more, no less
            size = os.path.getsize(path) if os.path.isfile(path) else None
            if size != out.nbytes:
                raise Unmeasurable(
                    f"{store_path}: {array} is compressed or not all written ({path} holds "
                    f"{'no file' if size is None else f'{size} bytes'}, a sample is "
                    f"{out.nbytes}): this compares reads of an uncompressed store only")
        view = memoryview(out).cast("B")

        def by_hand(k: int) -> None:
            fd = os.open(paths[k % samples], os.O_RDONLY)
            try:
                os.preadv(fd, [view], 0)
            finally:
                os.close(fd)

        for i in range(samples):  # warm: the page cache, and the reader's checked first read
            store.read_into(array, i, out)
        flowstore_read = best_cpu_per_call(lambda k: store.read_into(array, k % samples, out),
                                           reads, repeats)
        hand = best_cpu_per_call(by_hand, reads, repeats)
    return {"read_into_us": 1e6 * flowstore_read, "by_hand_us": 1e6 * hand,
            "bytes": float(out.nbytes)}


@refusing_bad_input
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="an uncompressed local .zarr store (e.g. benchmarks/"
                                      "reader.py's tvhi-224px-16t-uncompressed.zarr)")
    parser.add_argument("--array", default="middle_frame")
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        got = measure(args.store, args.array, args.reads, args.repeats)
    except Unmeasurable as error:
        refuse(str(error))
    print(header(__file__))
    print(f"- store: {args.store}, best of {args.repeats} passes of {args.reads} reads\n")
    print("| array | bytes a chunk | read_into, us CPU a read | by hand, us CPU a read "
          "| read_into's rate, of the hand read's |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {args.array} | {int(got['bytes'])} | {got['read_into_us']:.1f} | "
          f"{got['by_hand_us']:.1f} | {got['by_hand_us'] / got['read_into_us']:.0%} |")


if __name__ == "__main__":
    main()
