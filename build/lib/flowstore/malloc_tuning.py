"""Keep freed memory in the process instead of handing it back to the kernel after every clip.

A build allocates and frees a few MB per sample over and over (decoded frames, float32 flow,
codec buffers). With glibc's defaults those blocks are mmap'ed or trimmed back to the kernel
when freed, so the next sample touches fresh pages: about 9,000 page faults and 30 ms of kernel
time per real TV-HI clip, 12% of the Farneback work itself. Raising the mmap threshold and never
trimming keeps them in the heap: 5 ms per clip. The process then holds its peak working set
until it exits. `trainers run` calls it too: every batch is read into a fresh buffer that
TensorFlow then owns (trainers/data.py), and with the defaults each one (25 MiB for 8 flow
samples at 224 px) came from fresh pages, about 7 ms of page faults per batch. Only those two
commands call this; a library user's process keeps its own malloc settings.

The threshold differs. Training keeps glibc's maximum, 32 MiB, so a whole batch is reused. A
build uses 1 MiB (BUILD_MMAP_THRESHOLD): with heap blocks of up to 32 MiB (or 4 MiB) among the
long-lived small ones, freed holes stopped fitting what came next and a build's held-but-free
heap grew with every sample, about 0.17 KB a sample (30,000 tiny clips, `mallinfo2`: live bytes
flat, free bytes +4.3 MB; +1.8 MB at 1 MiB), so its peak RSS was not flat in the number of
clips (benchmarks/build_scale.py). On 70 real TV-HI clips at 224 px, 1 MiB took about 1,070
more page faults a clip than 32 MiB (about 1 ms of kernel time; user time the same) and 25 MB
off the build's peak RSS (217 against 240 MB).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc caps M_MMAP_THRESHOLD at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD_MAX = 32 << 20
#: A build's threshold (module docstring).
BUILD_MMAP_THRESHOLD = 1 << 20
_TRIM_NEVER = (1 << 31) - 1


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_MAX) -> bool:
    """Never trim the heap, and serve blocks below `mmap_threshold` bytes from it; False (and
    nothing changed) where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1 and ok
