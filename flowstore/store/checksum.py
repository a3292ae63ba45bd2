"""Per-sample checksums: a digest of the exact arrays a task wrote for one sample.

Computed by the extraction task from the arrays it is about to write, recorded by the
coordinator next to `done`, and recomputed by `flowstore verify` from what the store returns.

A recorded checksum names its algorithm ("xxh3_128:<hex>"). XXH3-128 hashes a 224 x 224 x 16
sample in 0.2 ms where blake2b took 7 ms (about 3 % of a 2-core build's time on the real clips);
it guards against torn, damaged and hand-edited chunks, not against an adversary. Stores written
before the prefix existed hold bare blake2b hex digests, which still verify.

Source files get a digest of their bytes too (`file_digest`), recorded for every done sample so
that `flowstore build --check-source` can tell a clip replaced by another of the same size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np
import xxhash

ALGORITHM = "xxh3_128"
_ALGORITHMS = {
    ALGORITHM: xxhash.xxh3_128,
    "blake2b": lambda: hashlib.blake2b(digest_size=16),  # unprefixed: stores before the prefix
}


def sample_digest(arrays: Mapping[str, np.ndarray], algorithm: str = ALGORITHM) -> str:
    """"ALGORITHM:hex" over each array's name, dtype, shape and bytes, in name order."""
    digest = _ALGORITHMS[algorithm]()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.data)
    return f"{algorithm}:{digest.hexdigest()}" if algorithm != "blake2b" else digest.hexdigest()


def matches(arrays: Mapping[str, np.ndarray], recorded: str) -> bool:
    """Whether `arrays` give the `recorded` checksum, whichever algorithm recorded it.

    Raises:
        ValueError: `recorded` names an algorithm this flowstore does not know.
    """
    algorithm = recorded.partition(":")[0] if ":" in recorded else "blake2b"
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"checksum by an unknown algorithm {algorithm!r} "
                         f"(written by a newer flowstore?)")
    return sample_digest(arrays, algorithm) == recorded


#: Bytes read at a time by `file_digest`: large enough that the per-call cost vanishes.
_FILE_BLOCK = 1 << 20


def file_digest(path: str | Path) -> str:
    """"xxh3_128:hex" of a file's bytes, read in blocks (a clip never sits in memory twice).

    Raises:
        OSError: the file cannot be read.
    """
    digest = xxhash.xxh3_128()
    block = bytearray(_FILE_BLOCK)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(block):
            digest.update(view[:count])
    return f"{ALGORITHM}:{digest.hexdigest()}"
