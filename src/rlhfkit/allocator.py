"""Keep freed memory inside the process (glibc malloc), so big tensors are not mapped and zeroed every step.

Why: glibc hands every allocation above its mmap threshold (at most 32 MB) to the kernel with `mmap` and
returns it with `munmap` when freed. A training step allocates and frees the same large tensors again and
again (the `tiny` model's pretraining logits: 8,192 x 4,096 floats = 134 MB), so each step page-faults and
the kernel zeroes that memory anew: about a million page faults per 8 steps. Raising the mmap threshold and
the trim threshold keeps those blocks in malloc's heap for the next step: a pipeline-shaped pretraining step
went from 1,097 to 980 ms (11%, 1 thread, AMD EPYC Zen 4, same run), with page faults down from 1.07M to
0.33M and peak memory 5-10% higher (freed memory is reused, not returned to the system).

`rlhfkit`'s command line calls `keep_freed_memory()` once at start; a Python program that runs stages
itself can call it too. `RLHFKIT_SYSTEM_MALLOC=1` leaves malloc as it is. Other C libraries (musl, macOS,
Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_LIMIT = 1 << 30  # 1 GiB: larger blocks are rare enough to keep going to the kernel


def keep_freed_memory() -> bool:
    """Tune glibc malloc as described above; True when it took effect."""
    if sys.platform != "linux" or os.environ.get("RLHFKIT_SYSTEM_MALLOC"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    # Older glibc refuses an mmap threshold above 32 MB; then no allocation is mapped separately at all.
    mapped_rarely = mallopt(_M_MMAP_THRESHOLD, _LIMIT) or mallopt(_M_MMAP_MAX, 0)
    return bool(mapped_rarely and mallopt(_M_TRIM_THRESHOLD, _LIMIT))
