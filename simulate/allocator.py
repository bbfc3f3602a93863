"""Keep glibc's malloc from handing large blocks back to the kernel on every iteration.

Training at K -> infinity draws fresh items for every sequence: a few MB of new
tensors per seed and iteration.  With glibc's defaults such blocks are served by
``mmap`` and returned by ``munmap`` (or the heap top is trimmed) as soon as they are
freed, so every iteration page-faults its buffers in again: on the project's CPU
machine a K = inf transformer run spent 43 % of its time in the kernel (8.9 s of
20.6 s; ``benchmarks/bench_allocator.py``).  Raising the mmap threshold to its
maximum and disabling trimming keeps freed memory in the process for reuse.  Peak
memory is about the same (the same buffers are needed at once; ``bench_allocator.py``
reports the children's max RSS); the numbers are unchanged (only where memory comes
from changes).

The settings are process-wide and stay for the life of the process (a notebook that
calls ``train`` keeps them): freed memory is kept for reuse rather than returned to
the kernel, so the process's resident size stays at its peak.  Set
``ICL_KINETICS_MALLOC=default`` to leave glibc's settings alone (the benchmark does
this for its baseline).  Other platforms: a no-op.
"""

from __future__ import annotations

import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest allowed mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
_MMAP_MAX = 32 * 1024 * 1024
_TRIM = 1 << 30

_done = False


def tune_malloc() -> bool:
    """Apply the settings once per process; returns whether they are in effect."""
    global _done
    if _done:
        return True
    if os.environ.get("ICL_KINETICS_MALLOC", "") == "default":
        return False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM) == 1
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        ok = False
    _done = ok
    return ok
