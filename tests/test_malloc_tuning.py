"""The build and training commands tune glibc malloc; elsewhere it is a no-op, never an error."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


def test_keep_freed_memory_takes_effect_on_glibc_and_never_fails():
    # a child process: the setting is process-wide and must not leak into the test run
    done = subprocess.run([sys.executable, "-c", "from flowstore.malloc_tuning import "
                           "keep_freed_memory as k; print(k()); print(k())"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    want = "True" if platform.libc_ver()[0] == "glibc" else "False"
    assert done.stdout.split() == [want, want]  # and calling it twice is harmless


MMAPPED_SCRIPT = """
import ctypes, sys
from flowstore.malloc_tuning import keep_freed_memory
keep_freed_memory(int(sys.argv[1]))
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))  # glibc's default would now raise its threshold to 8 MiB
before = libc.mallinfo2().hblkhd
block = libc.malloc(2 << 20)
print(libc.mallinfo2().hblkhd - before >= 2 << 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("threshold, mapped", [("BUILD_MMAP_THRESHOLD", "True"),
                                                ("MMAP_THRESHOLD_MAX", "False")])
def test_a_build_maps_blocks_over_one_mib_and_training_keeps_them_in_the_heap(threshold, mapped):
    # A build's heap fragmented with blocks of up to 32 MiB in it (flowstore/malloc_tuning.py);
    # training wants its 25 MiB batches reused from the heap.
    from flowstore import malloc_tuning

    done = subprocess.run([sys.executable, "-c", MMAPPED_SCRIPT,
                           str(getattr(malloc_tuning, threshold))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [mapped]
