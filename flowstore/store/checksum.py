"""Per-sample checksums: a digest of the exact arrays a task wrote for one sample.

Computed by the extraction task from the arrays it is about to write, recorded by the
coordinator next to `done`, and recomputed by `flowstore verify` from what the store returns.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np


def sample_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """blake2b over each array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.data)
    return digest.hexdigest()
