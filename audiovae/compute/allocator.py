"""Keep freed memory for reuse instead of handing it back to the kernel after every step.

glibc's malloc serves blocks above its mmap threshold (128 KB at start, raised as such blocks are freed) with
fresh mappings and returns them on free, and gives the top of its heap back once more than the trim threshold
is free there. A training step of music-frames makes and frees tensors of 4 MB (16 x 513 x 128 floats) dozens of
times, so every step the kernel mapped and zeroed them again: about 5,400 page faults and 9 ms of system time a
step at one thread, a tenth of the step (docs/benchmarks.md, round 15). With the thresholds fixed at 32 MB and
256 MB the heap keeps its blocks: 60-70 faults a step and no system time. Blocks above 32 MB (whole sounds of a
long batch) still come and go as mappings.
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its moving threshold (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit)
TRIM_THRESHOLD = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; True when they are set. A no-op (False) on other C libraries
    (macOS, Windows, musl), whose allocators keep memory on their own terms."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on; musl's is a stub
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
