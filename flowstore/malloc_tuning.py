"""Keep freed memory in the process instead of handing it back to the kernel after every clip.

A build allocates and frees a few MB per sample over and over (decoded frames, float32 flow,
codec buffers). With glibc's defaults those blocks are mmap'ed or trimmed back to the kernel
when freed, so the next sample touches fresh pages: about 9,000 page faults and 30 ms of kernel
time per real TV-HI clip, 12% of the Farneback work itself. Raising the mmap threshold to its
maximum and never trimming keeps them in the heap: 5 ms per clip. The process then holds its
peak working set until it exits, which for a build is flat in the number of clips
(benchmarks/build_memory.py). `trainers run` calls it too: every batch is read into a fresh
buffer that TensorFlow then owns (trainers/data.py), and with the defaults each one (25 MiB
for 8 flow samples at 224 px) came from fresh pages, about 7 ms of page faults per batch. Only
those two commands call this; a library user's process keeps its own malloc settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc caps M_MMAP_THRESHOLD at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
_MMAP_THRESHOLD_MAX = 32 << 20
_TRIM_NEVER = (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Tune glibc malloc for a build; False (and nothing changed) where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1 and ok
