"""The memorization law (paper Fig. 5): the integrated residual error of a standalone MLP,
I_K(T) = lr * integral_0^T c1 dt (learning-rate time), grows as A K^nu; and the MLP's
coefficients c1, c2, c3 against iterations (paper Figs. A2, A3)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from icl_kinetics.validate import fits
from icl_kinetics.validate.core import Estimate, Verdict, columns, i_k, seed_summaries

#: c1 at the end of a run below which I_K(T) is taken as I_K(inf) (the rest of the integral
#: is then at most c1(T) times the remaining time, and c1 keeps falling)
MEMORIZED_C1 = 0.05


def memorized(c1_final) -> list[int]:
    """The positions of the K memorized by the end of their runs: mean final c1 below
    :data:`MEMORIZED_C1`.  Only these K enter a fit of the memorization law I_K = A K^nu
    (:func:`memorization_law`, ``icl-kinetics threshold --c1-table``): for the others I_K(T)
    is still rising (~ c1 * lr * T) and says more about T than about K.  NaN is never
    memorized."""
    return [i for i, c in enumerate(c1_final) if c < MEMORIZED_C1]


def i_k_table(table) -> dict:
    """Per K (items): the mean I_K(T) (learning-rate time) over the seeds of the memorization
    (``model == 'mlp'``) runs with a learning rate, its seed spread, T (iterations: the
    longest run) and the mean final c1.  Returns {"K": [...], "i_k": [...], "i_k_sd": [...],
    "T": [...], "c1_final": [...]}, K increasing."""
    byk = defaultdict(list)
    for s in seed_summaries(table):
        if s.model == "mlp" and np.isfinite(s.lr):
            byk[s.K].append(s)
    Ks = sorted(k for k in byk if np.isfinite(k))
    values = {k: [i_k(s) for s in byk[k]] for k in Ks}
    return {"K": Ks, "i_k": [float(np.nanmean(values[k])) for k in Ks],
            "i_k_sd": [float(np.nanstd(values[k])) for k in Ks],
            "T": [float(np.max([s.cap for s in byk[k]])) for k in Ks],
            "c1_final": [float(np.nanmean([s.final("c1") for s in byk[k]])) for k in Ks]}


#: memorization_law's decision bands: "holds" needs log-log R^2 >= R2_HOLDS and nu known to
#: +-NU_HALF_WIDTH (its 95% t interval); "does not hold" needs R^2 < R2_FAILS; between them
#: the verdict is "inconclusive" (docs/validation.md)
R2_HOLDS, R2_FAILS, NU_HALF_WIDTH = 0.95, 0.85, 0.2


def memorization_law(table, paper_nu: float = 0.7) -> Verdict:
    """I_K(T) ~ A K^nu (paper Fig. 5): a power-law fit of the integrated residual error of
    standalone-MLP runs against K.

    The integration window is each run's whole length T (iterations; reported).  With the
    logistic loss c1 never reaches 0 exactly and I_K(t) grows without bound, but once the
    K items are memorized c1 decays fast and I_K(t) flattens; the paper's I_K(inf) is its
    plateau.  So only K whose c1(T) < MEMORIZED_C1 enter the fit: for the others I_K(T) is
    still rising (~ c1 * lr * T) and says more about T than about K.

    nu's 95% interval is the Student-t interval of the log-log slope below
    ``fits.MIN_BOOTSTRAP_POINTS`` memorized K (a bootstrap over 3 to 7 points is far too
    narrow), the bootstrap over points at or above it.  Below
    ``requirements.MIN_MEMORIZED_K`` memorized K the verdict is "inconclusive: needs ...";
    a table without MLP runs is skipped.  Verdict bands: :data:`R2_HOLDS`,
    :data:`R2_FAILS`, :data:`NU_HALF_WIDTH`.
    """
    from icl_kinetics.validate.requirements import MIN_MEMORIZED_K, inconclusive

    name, rung = "memorization_law", "MLP alone"
    if "model" not in table or "c1" not in table:
        return Verdict.skipped(name, rung, "needs columns model ('mlp' rows) and c1")
    ik = i_k_table(table)
    if not ik["K"]:
        return Verdict.skipped(name, rung, "needs standalone-MLP runs (model = mlp) at finite K with lr and c1; "
                               "this table has none")
    mem = memorized(ik["c1_final"])
    predicted = f"I_K = A K^nu (paper: nu ~ {paper_nu})"
    if len(mem) < MIN_MEMORIZED_K:
        return inconclusive(name, rung, [f">= {MIN_MEMORIZED_K} K memorized within the runs (c1(T) < {MEMORIZED_C1});"
                                         f" has {len(mem)} of {len(ik['K'])} K: run longer or add K"],
                            predicted=predicted, measured=f"{len(mem)} of {len(ik['K'])} K memorized",
                            details={"i_k": ik}, figure_data={"i_k": ik} if len(ik["K"]) >= 1 else {})
    xs, ys = [ik["K"][i] for i in mem], [ik["i_k"][i] for i in mem]
    boot = len(mem) >= fits.MIN_BOOTSTRAP_POINTS
    fit = fits.power_law_fit(xs, ys, n_boot=1000 if boot else 0, seed=0)
    if not boot:
        (p_lo, p_hi), (a_lo, a_hi) = fits.line_t_intervals(np.log(xs), np.log(ys))
        fit = dataclasses.replace(fit, exponent_ci=(p_lo, p_hi), amplitude_ci=(float(np.exp(a_lo)), float(np.exp(a_hi))))
    lo, hi = fit.exponent_ci
    how = "bootstrap over K" if boot else f"Student t, {len(mem) - 2} dof"
    half = (hi - lo) / 2
    if fit.r2 >= R2_HOLDS and half <= NU_HALF_WIDTH:
        verdict = "holds"
        reason = (f"a power law fits I_K(T) (log-log R^2 = {fit.r2:.3f} >= {R2_HOLDS}); nu = {fit.exponent:.2f} "
                  f"[{lo:.2f}, {hi:.2f}] ({how}), the paper's nu = {paper_nu} is "
                  f"{'inside' if lo <= paper_nu <= hi else 'outside'} this CI")
    elif fit.r2 < R2_FAILS:
        verdict = "does not hold"
        reason = f"log-log R^2 = {fit.r2:.3f} < {R2_FAILS}: I_K(T) is not a power law of K over this range"
    else:
        verdict = "inconclusive"
        reason = (f"log-log R^2 = {fit.r2:.3f}, nu = {fit.exponent:.2f} [{lo:.2f}, {hi:.2f}] ({how}): holding needs "
                  f"R^2 >= {R2_HOLDS} and nu within +-{NU_HALF_WIDTH}, failing needs R^2 < {R2_FAILS}: add K or "
                  "seeds")
    return Verdict(prediction=name, rung=rung, predicted=predicted,
                   measured=f"nu = {fit.exponent:.3f} [{lo:.3f}, {hi:.3f}], A = {fit.amplitude:.3g}",
                   metric=f"log-log R^2 = {fit.r2:.3f}, {len(mem)} memorized K",
                   verdict=verdict,
                   reason=reason + f"; fitted on the {len(mem)} K with c1(T) < {MEMORIZED_C1}",
                   details={"fit": {**fit.to_dict(), "ci_method": how}, "T_iterations": ik["T"],
                            "K_fitted": [ik["K"][i] for i in mem]},
                   figure_data={"i_k": ik, "fit": fit.to_dict(), "fitted": mem})


def measured_nu(memorization_verdict: Verdict | None) -> Estimate | None:
    """nu and its 95 % CI from a :func:`memorization_law` verdict that holds; None otherwise
    (the K* slope then falls back to the paper's nu, and says so)."""
    v = memorization_verdict
    if v is None or v.verdict != "holds":
        return None
    return Estimate(v.details["fit"]["exponent"], tuple(v.details["fit"]["exponent_ci"]))


def _mean_curve(c: dict, m: np.ndarray, key: str, positive_t: bool = False):
    """Mean over seeds of column ``key`` at each iteration, over the rows ``m``."""
    it = c["iteration"][m].astype(float)
    v = c[key][m].astype(float)
    ts = np.unique(it[it > 0]) if positive_t else np.unique(it)
    return ts, np.array([np.nanmean(v[it == t]) for t in ts])


def coefficient_curves(table) -> list[dict]:
    """Paper Fig. A2's data: per K (items), the mean over seeds of c1, 1 - c2 and c3 at each
    iteration.  ``table``: tidy columns with K, iteration, c1, c2, c3.  Returns one dict per K
    (increasing): {"K", "iteration", "c1", "1 - c2", "c3"}."""
    c = columns(table)
    out = []
    for K in sorted({float(k) for k in c["K"]}):
        m = c["K"].astype(float) == K
        curve = {"K": K}
        for key in ("c1", "c2", "c3"):
            ts, mean = _mean_curve(c, m, key)
            curve["iteration"] = ts
            curve["1 - c2" if key == "c2" else key] = 1 - mean if key == "c2" else mean
        out.append(curve)
    return out


def c1_tails(table, tail_below: float = 0.1) -> list[dict]:
    """Paper Fig. A3's data: per K (items), the mean over seeds of c1 at each iteration > 0,
    and a power law c1 ~ A t^-p (:func:`fits.power_law_fit`) fitted to the tail where the
    mean c1 < ``tail_below`` (needs >= 3 such points with >= 2 distinct iterations).
    Returns one dict per K: {"K", "iteration", "c1", "tail" (bool mask), "fit" (a
    :class:`fits.PowerLawFit` or None)}."""
    c = columns(table)
    out = []
    for K in sorted({float(k) for k in c["K"]}):
        ts, mean = _mean_curve(c, c["K"].astype(float) == K, "c1", positive_t=True)
        tail = (mean < tail_below) & (mean > 0)
        fit = fits.power_law_fit(ts[tail], mean[tail], n_boot=0) if tail.sum() >= 3 else None
        out.append({"K": K, "iteration": ts, "c1": mean, "tail": tail, "fit": fit})
    return out
