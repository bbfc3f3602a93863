"""What the machine can hold: refuse a job whose memory cannot fit, before it starts.

Every entry point that allocates in proportion to a user's sizes (samples, seeds,
batch, K, N) estimates its peak bytes and calls :func:`require_memory`, so that
``--samples 1e9`` is a one-line :class:`~icl_kinetics.errors.ParameterError` naming the
parameter and the estimate, not a ``MemoryError`` minutes later.
"""

from __future__ import annotations

import os

from icl_kinetics.errors import ParameterError

__all__ = ["available_memory", "format_bytes", "is_memory_refusal", "require_memory"]


def is_memory_refusal(e: BaseException) -> bool:
    """True for the ParameterError :func:`require_memory` raises (the machine may have room
    later: a sweep keeps such a run pending rather than failed)."""
    return isinstance(e, ParameterError) and getattr(e, "kind", "") == "memory"


def available_memory() -> int:
    """Bytes this process may still allocate: ``MemAvailable`` of /proc/meminfo (Linux), else
    physical memory from ``sysconf``; capped by a cgroup memory limit when one is set."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
            avail = 1 << 62
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(p) as f:
                v = f.read().strip()
            if v.isdigit() and int(v) < avail:
                avail = int(v)
        except OSError:
            continue
    return int(avail)


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style text for a byte count."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def require_memory(name: str, value, need_bytes: float, what: str = "this job") -> None:
    """Raise :class:`ParameterError` naming ``name=value`` if ``need_bytes`` (an estimate of
    the peak allocation) exceeds the memory available now.

    Args:
        name: the parameter that sets the size (a CLI flag or API argument name).
        value: its value, as given.
        need_bytes: estimated peak bytes.
        what: what would allocate them (for the message).
    """
    have = available_memory()
    if not need_bytes < have:  # also catches inf / nan estimates
        e = ParameterError(name, value, f"small enough to fit in memory: {what} would allocate about "
                           f"{format_bytes(need_bytes)}, and {format_bytes(have)} is available")
        e.kind = "memory"
        raise e
