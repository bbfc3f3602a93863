"""Benchmark the theory commands (issue 3, acceptance 3).

Measures, in one run:
  * `threshold` for 5 values of N and `onset` with 1e5 samples per N (3 N), both
    in-process (after imports) and end to end through the console script (a fresh
    Python process, imports included);
  * side by side, the tabulated universal escape function against the reference it
    replaces (a direct solve_ivp of the reduced ODE per sample), as a ratio.

Run: .venv/bin/python benchmarks/bench_theory.py [--json]
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def best_of(f, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from icl_kinetics.theory import OnsetDistribution, escape_time, k_star
    from icl_kinetics.theory.closed_form import escape_time_reference

    Ns5 = np.array([50, 100, 150, 200, 250])
    res = {}
    res["threshold_inprocess_s"] = best_of(lambda: k_star(Ns5, 0.0, 0.2, 0.7))
    res["threshold_noise_inprocess_s"] = best_of(lambda: k_star(Ns5, 0.0, 0.2, 0.7, c2=0.5))

    def onset():
        for N in (50, 100, 200):
            d = OnsetDistribution(N=N, lr=0.1, beta0_mean=0.0, beta0_std=1.0)
            x = d.sample(100_000, seed=N)
            np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
            d.quantile(np.array([0.05, 0.25, 0.5, 0.75, 0.95]))

    res["onset_3N_1e5_inprocess_s"] = best_of(onset)
    cli = [sys.executable, "-m", "icl_kinetics.cli"]
    res["threshold_cli_s"] = best_of(lambda: subprocess.run(
        cli + ["threshold", "--N", "50", "100", "150", "200", "250", "--nu", "0.7", "--amplitude", "0.2",
               "--json"], check=True, capture_output=True), 3)
    res["onset_cli_s"] = best_of(lambda: subprocess.run(
        cli + ["onset", "--N", "50", "100", "200", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1",
               "--samples", "100000", "--json"], check=True, capture_output=True), 3)

    # side by side: table lookup vs per-sample solve_ivp (the naive reference)
    b = np.random.default_rng(0).normal(0, 1, 20)
    t_ref = best_of(lambda: [escape_time_reference(x) for x in b], 1) / b.size
    bb = np.random.default_rng(1).normal(0, 1, 100_000)
    t_fast = best_of(lambda: escape_time(bb)) / bb.size
    res["escape_time_per_sample_reference_s"] = t_ref
    res["escape_time_per_sample_table_s"] = t_fast
    res["escape_time_speedup"] = t_ref / t_fast
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"threshold, 5 N (in-process):            {res['threshold_inprocess_s'] * 1e3:8.2f} ms")
        print(f"threshold, 5 N, with noise (in-process): {res['threshold_noise_inprocess_s'] * 1e3:8.2f} ms")
        print(f"onset, 3 N x 1e5 samples (in-process):  {res['onset_3N_1e5_inprocess_s'] * 1e3:8.2f} ms")
        print(f"threshold via CLI (fresh process):       {res['threshold_cli_s']:8.3f} s")
        print(f"onset via CLI (fresh process):           {res['onset_cli_s']:8.3f} s")
        print(f"escape time per sample: solve_ivp reference {t_ref * 1e3:.2f} ms, "
              f"table {t_fast * 1e9:.0f} ns -> speedup {res['escape_time_speedup']:.3g}x")


if __name__ == "__main__":
    main()
