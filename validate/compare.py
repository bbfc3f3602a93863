"""Comparisons of the theory's predictions with trained models.

First comparison (rung 1 of the validation ladder): the minimal model without its
MLP (phi = 0), trained by SGD, against the reduced theory's t_ICL.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from icl_kinetics.errors import positive_float, positive_int
from icl_kinetics.io import write_csv, write_json, atomic_write_text
from icl_kinetics.theory import icl_threshold_beta, solve_flow, t_icl


def regime_of(beta0: float, c2: float = 0.5) -> str:
    """Which closed form is within 5 % of the exact escape time (docs/theory.md §3):
    gamma = c2 e^-beta0 < 0.3 -> "signal", gamma > 10 -> "noise", else "crossover" (use the exact T*)."""
    g = c2 * math.exp(-beta0)
    return "signal" if g < 0.3 else ("noise" if g > 10.0 else "crossover")


def theory_onset(N: int, beta0: float, lr: float) -> dict:
    """The theory's t_ICL (iterations) for the minimal model without MLP, K -> infinity.

    ``exact``: reduced ODE with the context-label noise, stopped at the beta where the
    large-D ICL accuracy reaches 0.95 (the simulation's criterion); ``full_flow``: the
    exact data-averaged gradient flow (large D); ``signal`` / ``noise``: the two
    closed-form regimes (blow-up times).
    """
    bc = icl_threshold_beta(N)
    return {
        "theory_exact": float(t_icl(N, beta0, lr, beta_c=bc)),
        "theory_full_flow": solve_flow(N, beta0, lr, stage="full").t_icl,
        "theory_signal": float(t_icl(N, beta0, lr, regime="signal")),
        "theory_noise": float(t_icl(N, beta0, lr, regime="noise")),
        "regime": regime_of(beta0),
    }


def censored_median(t, cap=None):
    """Median of onset times with never-acquired seeds (None/NaN) counted as +inf.

    Returns None when half or more of the seeds never acquired (the median is then
    only bounded below by the cap, and no number is claimed).
    """
    x = np.array([np.inf if (v is None or not np.isfinite(v)) else v for v in t], float)
    if np.sum(np.isfinite(x)) <= x.size / 2:
        return None
    return float(np.median(x))


def compare_minimal_onset(Ns=(50, 100, 200), beta0s=(-2.0, -1.0, 0.0, 1.0), lr: float = 0.1,
                          seeds: int = 8, seed: int = 0, out="out/compare", plot=None,
                          progress: bool = True, cap_factor: float = 4.0) -> dict:
    """Train the minimal model (no MLP, K -> infinity) for every N x beta0 and compare
    the median t_ICL with the theory.  Writes ``summary.csv``, ``seeds.csv``,
    ``table.md``, ``summary.json`` and a figure into ``out`` (atomic writes).

    Each N is one vectorized run with ``seeds`` seeds per beta0; the iteration cap is
    ``cap_factor`` times the largest predicted t_ICL, so a seed that never acquires
    is reported as censored, never as the cap.
    """
    from icl_kinetics.simulate.minimal import MinimalConfig, run_minimal
    from icl_kinetics.validate.figures import onset_comparison_figure, save

    lr = positive_float("lr", lr)
    seeds = positive_int("seeds", seeds)
    out = Path(out)
    rows, seed_rows, theory_rows = [], [], []
    t_start = time.perf_counter()
    for N in Ns:
        N = positive_int("N", N)
        preds = {b: theory_onset(N, b, lr) for b in beta0s}
        cap = int(cap_factor * max(p["theory_exact"] for p in preds.values())) + 100
        cap = int(math.ceil(cap / 10.0) * 10)
        betas = [float(b) for b in beta0s for _ in range(seeds)]
        cfg = MinimalConfig(N=N, beta0=tuple(betas), lr=lr, seeds=len(betas), seed=seed + 1000 * N,
                            max_iterations=cap)
        res = run_minimal(cfg, progress=progress)
        for i, (b, t) in enumerate(zip(betas, res.t_icl)):
            seed_rows.append({"N": N, "beta0": b, "seed": i, "t_icl": t, "max_iterations": cap})
        for b in beta0s:
            ts = [t for bb, t in zip(betas, res.t_icl) if bb == b]
            med = censored_median(ts)
            p = preds[b]
            rows.append({"N": N, "beta0": float(b), "seeds": seeds,
                         "acquired": int(sum(t is not None for t in ts)), "max_iterations": cap,
                         "median_t_icl": med, **p,
                         "rel_err_exact": None if med is None else med / p["theory_exact"] - 1,
                         "rel_err_full_flow": None if (med is None or p["theory_full_flow"] is None)
                         else med / p["theory_full_flow"] - 1})
        grid = np.linspace(min(beta0s) - 0.4, max(beta0s) + 0.4, 60)
        bc = icl_threshold_beta(N)
        for model, kw in (("exact", {"beta_c": bc}), ("signal", {"regime": "signal"}),
                          ("noise", {"regime": "noise"})):
            for b, t in zip(grid, t_icl(N, grid, lr, **kw)):
                theory_rows.append({"N": N, "beta0": float(b), "t_icl": float(t), "model": model})
    wall = time.perf_counter() - t_start
    out.mkdir(parents=True, exist_ok=True)
    result = {"lr": lr, "seeds": seeds, "seed": seed, "N": list(Ns), "beta0": list(beta0s),
              "batch_size": 128, "D": 63, "eval_size": 2000, "eval_every": 10, "acc_threshold": 0.95,
              "rows": rows, "wall_seconds": wall, "units": "iterations",
              "table_csv": write_csv(out / "summary.csv", rows)}
    write_csv(out / "seeds.csv", seed_rows)
    atomic_write_text(out / "table.md", format_onset_table(rows) + "\n")
    fig = onset_comparison_figure(seed_rows, theory_rows)
    result["plot"] = save(fig, plot or out / "onset_vs_theory.png")
    write_json(out / "summary.json", result)
    return result


def format_onset_table(rows) -> str:
    """Markdown table of measured vs predicted median t_ICL."""
    def f(v, fmt="{:.0f}"):
        return "n/a" if v is None else fmt.format(v)

    lines = ["| N | beta0 | acquired | median t_ICL (SGD) | theory (exact) | rel. err | full flow | "
             "signal formula | noise formula | regime |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['N']} | {r['beta0']:g} | {r['acquired']}/{r['seeds']} | {f(r['median_t_icl'])} | "
                     f"{f(r['theory_exact'])} | {f(r['rel_err_exact'], '{:+.1%}')} | "
                     f"{f(r['theory_full_flow'])} | {f(r['theory_signal'])} | {f(r['theory_noise'])} | "
                     f"{r['regime']} |")
    return "\n".join(lines)
