"""OpenMP's wait policy, set before torch is first imported.

Imports nothing but :mod:`os`: ``icl_kinetics/__init__.py`` calls
:func:`configure_openmp` first thing, so that it runs before any layer imports torch.
"""

from __future__ import annotations

import os

#: ``ICL_KINETICS_OMP=default`` leaves OpenMP's wait policy at the runtime's default
OPT_OUT = "ICL_KINETICS_OMP"
#: the variables that set how long a waiting OpenMP thread spins; a user's value is kept
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def configure_openmp() -> bool:
    """Make torch's waiting OpenMP threads sleep at once: ``OMP_WAIT_POLICY=PASSIVE``.

    Why: torch's Linux wheels parallelize through GNU OpenMP (libgomp). By default a
    libgomp thread that runs out of work spins 300000 times (about 3 ms by libgomp's own
    estimate) before it sleeps, as if every core were its own. On a shared machine it is
    not: the thread it waits for may be descheduled for someone else's process, and the
    spinning thread burns the core that thread needs. ``benchmarks/bench_threads.py``
    measured this on a 2-core machine (the project's sandbox, 2026-12-01, medians of 3;
    tables in docs/performance.md, "Threads on a shared machine"). Beside two nice-19
    busy loops started from another session, a two-thread float32 matmul of the engine's
    shape (128 x 512 @ 512 x 512) ran at 29.7 GFLOP/s with libgomp's default, against
    42.0 GFLOP/s with ``OMP_WAIT_POLICY=PASSIVE`` (99.4 on one thread); a one-seed
    ``train`` took 11.7 s against 5.0 s, and the minimal simulator at finite K with the
    MLP 63.6 s against 21.9 s. The price on an idle machine: 3.6 s against 2.6 s, and
    9.8 s against 7.2 s.

    Every path that runs torch with two or more intra-op threads is exposed: a
    one-seed ``train``, the minimal simulator at finite K or with the MLP, the naive
    reference of ``bench engine``.  The engine's default path (one worker per core,
    each with one intra-op thread) does not wait on OpenMP threads and is unaffected.

    libgomp reads the variable once, when it is loaded (at ``import torch``), so this
    must run before torch is first imported; it then holds in this process and in
    every process started from it (sweep workers inherit the environment).  If torch
    was already imported, only child processes see the change.

    Never overrides: an ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` already in the
    environment (even ``OMP_WAIT_POLICY=ACTIVE``) is kept, and ``ICL_KINETICS_OMP=default``
    leaves both unset.

    Returns:
        True if this call set ``OMP_WAIT_POLICY``.
    """
    if os.environ.get(OPT_OUT, "").strip().lower() == "default":
        return False
    if any(k in os.environ for k in USER_SETTINGS):
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True
