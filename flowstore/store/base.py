"""The one store interface that every backend implements.

A store is a flat set of arrays whose axis 0 is the sample (in manifest order), plus JSON-like
root attributes. This layer knows nothing of video, OpenCV or Dask: the build hands it arrays.

Concurrency rule (DESIGN.md): per-sample arrays are chunked one sample per chunk, so parallel
writers never share a chunk; the small columns (`id`, `label`, `split`) are written once at
creation, and `done` is written only by the build's coordinator after a sample's arrays are
complete.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from flowstore.errors import StoreError

#: dtype marker for variable-length UTF-8 string arrays.
STRING = "str"


#: Compression presets, chosen per array by measurement (benchmarks/store_bytes.py):
#: bit-shuffled LZ4 for pixels and float flow: within 5-12% of zstd's size, but 3-5x faster to
#: write and about 2x faster to read, and a store is written once and read every epoch; plain
#: zstd for quantized (uint8) flow, which is small and compresses 3x.
CODECS = ("shuffled-lz4", "zstd")


@dataclass(frozen=True)
class ArraySpec:
    """One per-sample array: its per-sample shape, dtype (`STRING` for text) and codec preset."""

    name: str
    sample_shape: tuple[int, ...]
    dtype: str
    codec: str = "shuffled-lz4"

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {self.codec!r}")


@dataclass(frozen=True)
class ArrayInfo:
    """What `inspect` reports of one array."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    nbytes: int
    nbytes_stored: int

    @property
    def ratio(self) -> float:
        """Compression ratio: logical bytes over bytes on disk (0 when nothing is written)."""
        return self.nbytes / self.nbytes_stored if self.nbytes_stored else 0.0


class Store(abc.ABC):
    """A flowstore store opened for reading (mode "r") or writing (mode "r+")."""

    path: Path
    mode: str
    #: Whether reads from several threads at once run in parallel (decoding outside the GIL).
    #: A reader uses it to choose how many reads to keep in flight.
    concurrent_reads: bool = True

    # -- reading -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def attrs(self) -> dict[str, Any]:
        """A copy of the root attributes."""

    @abc.abstractmethod
    def array_names(self) -> list[str]:
        """Names of the arrays in the store."""

    @abc.abstractmethod
    def read(self, name: str, index: Any = slice(None)) -> np.ndarray:
        """`array[index]` as numpy; text comes back as a numpy ``str`` array."""

    def read_into(self, name: str, index: int, out: np.ndarray) -> None:
        """Read sample `index` of a numeric array into `out` (its shape and dtype).

        Backends decode straight into `out`, so a reader that batches samples (the trainers)
        fills a buffer it chose, aligned for TensorFlow to use without a copy.
        """
        out[...] = self.read(name, index)

    @abc.abstractmethod
    def info(self, name: str) -> ArrayInfo:
        """Shape, dtype, chunks and bytes of one array."""

    def layout(self, name: str) -> tuple[tuple[int, ...], str]:
        """Shape and dtype (`STRING` for text) of one array, without `info`'s stored-byte count
        (on Zarr a listing of every chunk: seconds on a large store, a reader opening it needs
        only the shapes)."""
        info = self.info(name)
        return info.shape, info.dtype

    @property
    def num_samples(self) -> int:
        return int(self.info("id").shape[0])

    # -- writing -----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Refuse a write to a store opened read-only, alike on both backends (zarr would raise
        a ValueError and h5py an OSError, each in its own words).

        Raises:
            StoreError: the store was opened with mode "r".
        """
        if self.mode == "r":
            raise StoreError(f"store {str(self.path)!r} is open read-only (mode 'r'); "
                             "open it with mode 'r+' to write")

    @abc.abstractmethod
    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        """`array[index] = value`. Callers keep to one writer per chunk."""

    def sample_layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(per-sample shape, dtype) of a per-sample array, as this handle sees it."""
        info = self.info(name)
        return tuple(info.shape[1:]), np.dtype(info.dtype)

    def check_sample(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Refuse a sample whose arrays are not of the store's per-sample shape and dtype.

        zarr casts another dtype silently and writes a wrong-shaped chunk without complaint, and
        the checksum, computed from the arrays in memory, would still match what was meant: so
        a writer with a wrong idea of the store (a stale handle) is caught here, not by verify.

        Raises:
            StoreError: an array's shape or dtype differs from the store's.
        """
        for name, value in arrays.items():
            shape, dtype = self.sample_layout(name)
            if tuple(np.shape(value)) != shape or np.asarray(value).dtype != dtype:
                raise StoreError(f"sample {index}: array {name!r} is {np.asarray(value).dtype} "
                                 f"{tuple(np.shape(value))} but the store holds {dtype} {shape} "
                                 f"per sample; nothing of it was written")

    def write_sample(self, index: int, arrays: Mapping[str, np.ndarray], *,
                     durable: bool = False) -> None:
        """Write every array of one sample; raises if any of it failed (`check_sample` first:
        nothing is written of a sample of the wrong layout).

        With `durable`, the sample's bytes are on stable storage when this returns
        (`sync_sample`); otherwise they are handed to the operating system, which survives a
        killed process but not a power cut.
        """
        self.check_sample(index, arrays)
        for name, value in arrays.items():
            self.write(name, index, value)
        self.flush()
        if durable:
            self.sync_sample(index, list(arrays))

    @abc.abstractmethod
    def sync_sample(self, index: int, names: Sequence[str]) -> None:
        """fsync the chunks of sample `index` of arrays `names`, and their directory entries."""

    @abc.abstractmethod
    def sync_columns(self) -> None:
        """fsync the small columns (`done`, `checksum`, ...), the metadata and root attributes,
        and the store's own entry in its folder: what a reader needs to trust `done`."""

    @abc.abstractmethod
    def update_attrs(self, values: Mapping[str, Any]) -> None:
        """Merge `values` into the root attributes."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every write so far durable (a no-op where each write already is)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store; further calls are errors."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, mode={self.mode!r})"


def check_columns(num_samples: int, columns: Mapping[str, Sequence[Any]]) -> None:
    """Every column given at creation has one value per sample."""
    for name, values in columns.items():
        if len(values) != num_samples:
            raise ValueError(f"column {name!r} has {len(values)} values for {num_samples} samples")


def fsync_path(path: str | Path) -> None:
    """fsync one file or directory by path (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_exactly(fd: int, offset: int, out: np.ndarray, what: str) -> None:
    """Fill C-contiguous `out` with the bytes at `offset` of file `fd`.

    For chunks stored as plain bytes: `os.preadv` releases the GIL while the kernel copies, so
    reads from several threads (the trainers' tf.data readers) run in parallel, where a library
    read holds the GIL throughout (h5py) or copies the chunk twice under it (zarr).
    """
    got = os.preadv(fd, [memoryview(out).cast("B")], offset)
    if got != out.nbytes:
        raise OSError(f"short read of {what}: {got} of {out.nbytes} bytes (file truncated?)")
