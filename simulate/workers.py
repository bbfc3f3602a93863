"""Running seed groups in worker threads while a progress bar follows a shared counter."""

from __future__ import annotations

import threading
from typing import Callable, Sequence


def run_in_threads(fns: Sequence[Callable[[], None]], counter: list, bar=None, poll: float = 0.25) -> None:
    """Call every function in ``fns``, each in its own thread, and return when all are done.

    ``counter[0]`` is advanced by the workers (seed-iterations done); ``bar`` (a tqdm
    bar or None) is updated from it every ``poll`` seconds.  A single function with no
    bar runs inline.  Exceptions are the workers' business (they record them).
    """
    if len(fns) == 1 and bar is None:
        fns[0]()
        return
    start = counter[0]
    ths = [threading.Thread(target=f) for f in fns]
    for th in ths:
        th.start()
    last = start
    while any(th.is_alive() for th in ths):
        for th in ths:
            th.join(timeout=poll)
        if bar is not None:
            c = counter[0]
            bar.update(c - last)
            last = c
    if bar is not None:
        bar.update(counter[0] - last)
