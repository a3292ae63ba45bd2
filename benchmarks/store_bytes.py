"""Store bytes per sample for each flow encoding, and the codec comparison behind the presets.

Builds the same real TV-HI clips three times (flow float32, float16, uint8) and reports bytes
on disk per sample for each array; then re-encodes the float16 and uint8 flow and the frames
with candidate codecs (ratio, write and read speed) to show why each array got its preset.

    python benchmarks/store_bytes.py [--clips-per-split 7] [--size 224] [--workdir DIR]

Without `--workdir` the stores go in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from flowstore.build import BuildConfig, build
from flowstore.flow_encoding import encode_flow
from flowstore.params import VideoParams
from flowstore.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workers import (check_source, header, refusing_bad_input,  # noqa: E402  (shared)
                           workdir_or_temporary)


REAL_TVHI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tvhi"
CODECS = {
    "blosc lz4 5 + bitshuffle (preset: pixels, float flow)": lambda: [
        BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    "zstd level 0 (zarr default; preset: uint8 flow)": lambda: [ZstdCodec(level=0)],
    "zstd level 3": lambda: [ZstdCodec(level=3)],
    "blosc zstd 3 + bitshuffle": lambda: [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")],
    "blosc zstd 5 + byte shuffle": lambda: [BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")],
    "blosc lz4 5 + byte shuffle": lambda: [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
}


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f}"


@refusing_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-split", type=int, default=7,
                        help="build the first N clips of each split [7]")
    parser.add_argument("--size", type=int, default=224, help="frame side S [224]")
    parser.add_argument("--steps", type=int, default=16, help="flow steps T [16]")
    parser.add_argument("--source", type=Path, default=REAL_TVHI,
                        help=f"TV-HI source folder [{REAL_TVHI}]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the stores here [a temporary folder, removed at the end]")
    args = parser.parse_args(argv)
    check_source(args.source)
    with workdir_or_temporary(args.workdir, "store-bytes-") as workdir:
        measure(args, workdir)


def measure(args: argparse.Namespace, workdir: Path) -> None:
    """Build the stores in `workdir` and print both tables."""
    print(header(__file__))
    print(f"- source: {args.source}, {args.clips_per_split} clips a split, S={args.size}, "
          f"T={args.steps}\n")
    print("| flow encoding | samples | flow MiB/sample | frames MiB/sample | middle MiB/sample | "
          "total MiB/sample | flow vs float32 |")
    print("|---|---|---|---|---|---|---|")
    flows: dict[str, np.ndarray] = {}
    frames = None
    float32_flow = None
    for dtype in ("float32", "float16", "uint8"):
        path = workdir / f"{dtype}.zarr"
        build(BuildConfig(dataset="tvhi", source=args.source, store=path, progress=False,
                          params=VideoParams(size=args.size, steps=args.steps, flow_dtype=dtype),
                          max_per_split=args.clips_per_split))
        with open_store(path) as store:
            done = np.flatnonzero(store.read("done"))
            n = len(done)
            per = {name: store.storage_size(name) / n for name in ("flow", "frames", "middle_frame")}
            flows[dtype] = np.stack([store.read("flow", int(i)) for i in done[:8]])
            if frames is None:
                frames = np.stack([store.read("frames", int(i)) for i in done[:8]])
        float32_flow = float32_flow or per["flow"]
        print(f"| {dtype} | {n} | {_mib(per['flow'])} | {_mib(per['frames'])} | "
              f"{_mib(per['middle_frame'])} | {_mib(sum(per.values()))} | "
              f"{per['flow'] / float32_flow:.2f} |")

    print("\n| array | codec | ratio | write MB/s | read MB/s |")
    print("|---|---|---|---|---|")
    for label, data in (("flow float16", flows["float16"]),
                        ("flow uint8", encode_flow(flows["float32"], "uint8", 20.0)),
                        ("frames uint8", frames)):
        for name, make in CODECS.items():
            array = zarr.create_array(store={}, shape=data.shape, chunks=(1, *data.shape[1:]),
                                      dtype=data.dtype, compressors=make())
            started = time.perf_counter()
            array[:] = data
            write = time.perf_counter() - started
            started = time.perf_counter()
            array[:]
            read = time.perf_counter() - started
            print(f"| {label} | {name} | {data.nbytes / array.nbytes_stored():.2f} | "
                  f"{data.nbytes / write / 1e6:.0f} | {data.nbytes / read / 1e6:.0f} |")


if __name__ == "__main__":
    main()
