"""Benchmark: torch's OpenMP threads on a shared machine (issue 10).

    python benchmarks/bench_threads.py [--quick] [--end-to-end] [--repeats R] [--wait-quiet S] [--json]

Float32 matmul throughput (GFLOP/s, C = A @ B with ``torch.mm``) in four
configurations, each in a fresh subprocess (libgomp reads OMP_WAIT_POLICY and
GOMP_SPINCOUNT once, when it loads, i.e. at ``import torch``):

  * ``1 thread``               one intra-op thread
  * ``2 thr default``          two threads, neither variable set: libgomp's default, a
                               waiting thread spins 300000 times (about 3 ms, by
                               libgomp's own estimate) before it sleeps
  * ``2 thr PASSIVE``          OMP_WAIT_POLICY=PASSIVE: a waiting thread sleeps at once
  * ``2 thr SPINCOUNT=10000``  GOMP_SPINCOUNT=10000: it spins 10000 times (about
                               0.1 ms), then sleeps

each under three conditions:

  * ``idle``       nothing started beside it (other users' load is measured, see below)
  * ``hog``        two busy-loop Python processes at nice 19 in their own session, as
                   another terminal's or user's jobs are.  Where the kernel groups
                   processes by session (CONFIG_SCHED_AUTOGROUP, on by default in most
                   distributions), nice orders processes only within a session, so these
                   take their fair share whatever their nice value.
  * ``hog, same session``  the same two processes in this benchmark's session, where
                   nice 19 does make them yield.

The hogs are started for each condition and killed after it; they end by themselves
when the benchmark's process ends, or after HOG_LIMIT_S seconds (plus the --wait-quiet
allowance) in any case.  Shapes:

  * 12800 x 65 @ 65 x 512   128 sequences x 100 tokens of 65 dims through a 512-wide layer
  * 128 x 512 @ 512 x 512   one seed's MLP hidden layer at batch 128 (the engine's shape)
  * 512 x 512 @ 512 x 512

Each child runs every shape for SECONDS seconds (quick: QUICK_SECONDS) after a warm-up;
the children do not import icl_kinetics.  The tables give the median over ``--repeats``;
the ratios beside them are of figures measured in this run.  ``others`` is the CPU
load (in CPUs) of processes this benchmark did not start, during each measurement:
machine-wide busy time (/proc/stat) less the child's and the hogs' own CPU time.  Where
it is not near 0, other load has disturbed the figures; ``--wait-quiet S`` waits up to S
seconds before each measurement until that load is below 0.1 CPU.

``--end-to-end`` also times two commands of the console script (END_TO_END), wall
seconds of a fresh process, in the same four configurations and three conditions:
``train`` for one seed (the paper's transformer, N = 19, width 128, K = 1024, 300
iterations) and ``minimal`` at finite K with the MLP (8 seeds, 300 iterations; the
simulator's general path, one group on all threads).  The thread count is set with
OMP_NUM_THREADS; every child gets ``ICL_KINETICS_OMP=default`` and only the
configuration's variables, so that icl_kinetics' own default does not interfere.

Linux only (it reads /proc).  Time on a 2-core machine, per repeat: about 80 s
(--quick: 45 s), plus about 5 min for --end-to-end (the hog slows those runs down).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SHAPES = [(12800, 65, 512), (128, 512, 512), (512, 512, 512)]
SECONDS, QUICK_SECONDS = 1.5, 0.5
HOG_LIMIT_S = 300
CONDITIONS = [  # (name, hog processes, in their own session)
    ("idle", 0, False),
    ("hog", 2, True),
    ("hog, same session", 2, False),
]
CLEAN = {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None, "ICL_KINETICS_OMP": "default"}
CONFIGS = [  # (name, threads, environment changes over CLEAN; None removes the variable)
    ("1 thread", 1, {}),
    ("2 thr default", 2, {}),
    ("2 thr PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("2 thr SPINCOUNT=10000", 2, {"GOMP_SPINCOUNT": "10000"}),
]
END_TO_END = {  # name: console-script arguments (OUT: a scratch folder)
    "train, 1 seed": ["train", "--model", "transformer", "--N", "19", "--width", "128", "--K", "1024",
                      "--seeds", "1", "--iterations", "300", "--eval-every", "100", "--quiet", "--json",
                      "--no-resume", "--out", "OUT"],
    "minimal, K = 1000, MLP": ["minimal", "--N", "100", "--K", "1000", "--width", "128", "--seeds", "8",
                               "--iterations", "300", "--early-stop", "none", "--quiet", "--json"],
}

CHILD = r"""
import json, os, sys, time
import torch
threads, seconds, shapes = json.loads(sys.argv[1])
torch.set_num_threads(threads)
out = []
for m, k, n in shapes:
    a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    for _ in range(3):
        torch.mm(a, b, out=c)
    count, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=c)
        count += 1
        t = time.perf_counter()
        if t - t0 >= seconds:
            break
    out.append(2 * m * k * n * count / (t - t0) / 1e9)
print(json.dumps({"gflops": out, "threads": torch.get_num_threads(),
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                  "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}))
"""

HOG = """import os, time
os.nice(19)
parent, end = os.getppid(), time.time() + {limit}
while time.time() < end and os.getppid() == parent:  # ends with the benchmark, or after limit s
    pass
"""
TICK = os.sysconf("SC_CLK_TCK")


def _env(changes: dict) -> dict:
    env = dict(os.environ)
    for k, v in {**CLEAN, **changes}.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def _busy_s() -> float:
    """CPU seconds the whole machine has been busy (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TICK


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read().rsplit(")", 1)[1].split()
        return (int(s[11]) + int(s[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


class Hog:
    """``n`` busy-loop processes at nice 19 while the block runs."""

    def __init__(self, n: int, own_session: bool, limit_s: float = HOG_LIMIT_S):
        self.n, self.own_session, self.limit_s, self.procs = n, own_session, limit_s, []

    def __enter__(self):
        code = HOG.format(limit=self.limit_s)
        self.procs = [subprocess.Popen([sys.executable, "-c", code], start_new_session=self.own_session)
                      for _ in range(self.n)]
        if self.procs:
            time.sleep(0.5)  # let them start spinning
        return self

    def cpu_s(self) -> float:
        return sum(_proc_cpu_s(p.pid) for p in self.procs)

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def wait_quiet(hog: Hog, limit_s: float, below: float = 0.1) -> float:
    """Wait until others' load (busy CPUs less the hogs', over 2 s) is below ``below``, at
    most ``limit_s`` seconds; return the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        b0, h0 = _busy_s(), hog.cpu_s()
        time.sleep(2.0)
        if (_busy_s() - b0 - (hog.cpu_s() - h0)) / 2.0 < below:
            break
    return time.perf_counter() - t0


def measured(cmd: list, env: dict, hog: Hog) -> tuple[str, float, float]:
    """Run ``cmd``; return its stdout, its wall seconds and the others' load (CPUs)."""
    b0, h0, t0 = _busy_s(), hog.cpu_s(), time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    others = (_busy_s() - b0 - (hog.cpu_s() - h0) - ru.ru_utime - ru.ru_stime) / wall
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed with exit code {proc.returncode}")
    return out, wall, max(0.0, others)


def _median(runs: list, key: str, **match):
    xs = [r[key] for r in runs if all(r[k] == v for k, v in match.items())]
    if isinstance(xs[0], list):
        return [statistics.median(x[i] for x in xs) for i in range(len(xs[0]))]
    return statistics.median(xs)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s per shape instead of {SECONDS}")
    ap.add_argument("--end-to-end", action="store_true", help="also time `icl-kinetics train` and `minimal`")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each measurement, wait up to S seconds until others' load is below 0.1 CPU")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    seconds = QUICK_SECONDS if a.quick else SECONDS
    conds = [c for c, _, _ in CONDITIONS]
    names = [n for n, _, _ in CONFIGS]
    cmds = list(END_TO_END) if a.end_to_end else []
    res = {"cpu_count": os.cpu_count(), "shapes": SHAPES, "seconds_per_shape": seconds, "repeats": a.repeats,
           "runs": [], "end_to_end_runs": []}
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench_threads_")
    hog_limit = HOG_LIMIT_S + a.wait_quiet * len(CONFIGS) * (1 + len(cmds))
    try:
        for rep in range(a.repeats):
            for cond, n_hogs, own in CONDITIONS:
                with Hog(n_hogs, own, hog_limit) as hog:
                    for name, threads, changes in CONFIGS:
                        env = _env({**changes, "OMP_NUM_THREADS": str(threads)})
                        waited = wait_quiet(hog, a.wait_quiet) if a.wait_quiet else 0.0
                        out, _, others = measured([sys.executable, "-c", CHILD, json.dumps([threads, seconds, SHAPES])],
                                                  env, hog)
                        r = {"config": name, "condition": cond, "repeat": rep, **json.loads(out), "others": others,
                             "waited_s": waited}
                        res["runs"].append(r)
                        if not a.json:
                            print(f"  {cond:18s} {name:22s}" + "".join(f"{g:8.1f}" for g in r["gflops"])
                                  + f" GFLOP/s  others {others:.2f}", flush=True)
                    for cmd in cmds:
                        for name, threads, changes in CONFIGS:
                            env = _env({**changes, "OMP_NUM_THREADS": str(threads)})
                            argv_ = [os.path.join(tmp.name, "out") if x == "OUT" else x for x in END_TO_END[cmd]]
                            waited = wait_quiet(hog, a.wait_quiet) if a.wait_quiet else 0.0
                            _, wall, others = measured([sys.executable, "-m", "icl_kinetics.cli", *argv_], env, hog)
                            res["end_to_end_runs"].append({"command": cmd, "config": name, "condition": cond,
                                                           "repeat": rep, "wall_s": wall, "others": others,
                                                           "waited_s": waited})
                            if not a.json:
                                print(f"  {cond:18s} {name:22s} {cmd}: {wall:6.2f} s  others {others:.2f}",
                                      flush=True)
    finally:
        tmp.cleanup()
    res["benchmark_wall_s"] = time.perf_counter() - t_start
    g = {(n, c): _median(res["runs"], "gflops", config=n, condition=c) for n in names for c in conds}
    res["gflops_median"] = {f"{n} | {c}": v for (n, c), v in g.items()}
    pairs = [(n, names[0]) for n in names[1:]] + [(n, names[1]) for n in names[2:]]
    res["ratios"] = {c: {f"{p} / {q}": [x / y for x, y in zip(g[(p, c)], g[(q, c)])] for p, q in pairs}
                     for c in conds}
    e = {(cmd, n, c): _median(res["end_to_end_runs"], "wall_s", command=cmd, config=n, condition=c)
         for cmd in cmds for n in names for c in conds}
    if cmds:
        res["end_to_end_commands"] = {k: "icl-kinetics " + " ".join(v) for k, v in END_TO_END.items()}
        res["end_to_end_wall_s_median"] = {f"{cmd} | {n} | {c}": v for (cmd, n, c), v in e.items()}
    if a.json:
        print(json.dumps(res, indent=2))
        return res

    print(f"\nfloat32 matmul, GFLOP/s (median of {a.repeats}), {os.cpu_count()} CPUs, {seconds} s per shape")
    print(" " * 62 + "".join(f"{m}x{k} @ {k}x{n}".rjust(20) for m, k, n in SHAPES) + "    others")
    for c in conds:
        for n in names:
            print(f"{c:18s} {n:43s}" + "".join(f"{x:20.1f}" for x in g[(n, c)])
                  + f"{_median(res['runs'], 'others', config=n, condition=c):10.2f}")
    print("ratios (same run)")
    for c in conds:
        for k, v in res["ratios"][c].items():
            print(f"{c:18s} {k:43s}" + "".join(f"{x:20.2f}" for x in v))
    for cmd in cmds:
        print(f"\n{res['end_to_end_commands'][cmd]}\nwall s (median of {a.repeats}); ratios of wall times")
        print(" " * 20 + "".join(n.rjust(24) for n in names) + "    others")
        for c in conds:
            oth = _median(res["end_to_end_runs"], "others", command=cmd, condition=c)
            print(f"{c:20s}" + "".join(f"{e[(cmd, n, c)]:24.2f}" for n in names) + f"{oth:10.2f}")
        for p, q in pairs:
            print(f"{p + ' / ' + q:44s}"
                  + "".join(f"{c}: {e[(cmd, p, c)] / e[(cmd, q, c)]:.2f}".rjust(28) for c in conds))
    print(f"benchmark wall time {res['benchmark_wall_s']:.0f} s")
    return res


if __name__ == "__main__":
    main()
