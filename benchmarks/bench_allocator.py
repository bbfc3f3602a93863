"""Benchmark: glibc malloc tuning (``simulate/allocator.py``) on a K = inf training run.

    python benchmarks/bench_allocator.py [--repeats 2] [--json]

Runs the same training command in fresh subprocesses, alternating glibc's default
malloc settings (``ICL_KINETICS_MALLOC=default``) and the project's, and prints wall,
user and system seconds and the max resident size of each, the speed-up (default wall / tuned wall, best of the
repeats) and whether the two metrics.csv files are identical byte for byte.

The run is the small ``fig6b`` shape at N = 39: the paper's transformer, K = inf,
width 128, batch 128, 8 seeds in one engine worker, 300 iterations, evaluation every 100.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CMD = ["train", "--model", "transformer", "--K", "inf", "--N", "39", "--width", "128", "--lr", "0.05",
       "--seeds", "8", "--iterations", "300", "--eval-every", "100", "--early-stop", "none", "--workers", "1",
       "--json"]


def one(mode: str, out: Path) -> dict:
    """One run in a fresh subprocess: wall, user and system seconds and max RSS (MB), from
    the child's own rusage (os.wait4)."""
    env = dict(os.environ, ICL_KINETICS_MALLOC=mode)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "icl_kinetics.cli", *CMD, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} run failed with exit code {proc.returncode}")
    return {"mode": mode, "wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "max_rss_mb": ru.ru_maxrss / 1024}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_alloc_"))
    rows = []
    try:
        for r in range(a.repeats):
            for mode in ("default", "tuned"):
                rows.append(one(mode, tmp / f"{mode}{r}"))
                if not a.json:
                    x = rows[-1]
                    print(f"{mode:8s} wall {x['wall_s']:6.2f} s  user {x['user_s']:6.2f} s  sys {x['sys_s']:6.2f} s  "
                          f"max RSS {x['max_rss_mb']:6.0f} MB")
        identical = all((tmp / f"default{r}" / "metrics.csv").read_bytes() == (tmp / f"tuned{r}" / "metrics.csv")
                        .read_bytes() for r in range(a.repeats))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {m: min(x["wall_s"] for x in rows if x["mode"] == m) for m in ("default", "tuned")}
    res = {"command": "icl-kinetics " + " ".join(CMD), "runs": rows, "best_wall_s": best,
           "speedup": best["default"] / best["tuned"], "metrics_identical": identical}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"speed-up (best default / best tuned wall): {res['speedup']:.2f}x; "
              f"metrics identical: {identical}")
    return res


if __name__ == "__main__":
    main()
