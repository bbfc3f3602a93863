"""Equalized contexts (exactly N/2 context labels of each kind; paper Fig. 6e) against
i.i.d. ones: the theory puts a saddle at beta = 0 there, so fewer seeds acquire ICL."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from icl_kinetics.validate import fits
from icl_kinetics.validate.core import Verdict, seed_summaries

ARMS = ("iid", "equalized")


class Count(NamedTuple):
    """Seeds that acquired ICL, of n."""

    acquired: int
    n: int


def _k50(frac: dict) -> float:
    """The K (items) at which half of the seeds acquire ({K: fraction}), by log-linear
    interpolation between grid values; 0 when the smallest K already reaches 1/2, inf when
    no K does."""
    ks = list(frac)
    f = [frac[K] for K in ks]
    for i in range(1, len(ks)):
        if f[i - 1] < 0.5 <= f[i]:
            t = (0.5 - f[i - 1]) / (f[i] - f[i - 1])
            return float(np.exp(np.log(ks[i - 1]) + t * (np.log(ks[i]) - np.log(ks[i - 1]))))
    return 0.0 if f and f[0] >= 0.5 else math.inf


def equalized_contexts(table, rung: str = "transformer") -> Verdict:
    """Equalized contexts (exactly N/2 labels of each kind) remove the label-imbalance drive
    on w: the reduced flow has a saddle at beta = 0 (docs/theory.md section 7), so ICL is
    harder: over the same K grid, fewer seeds acquire it, and the K at which half of the
    seeds acquire (K_50) is larger.

    Measured: per arm and K, the fraction of seeds that acquired ICL (t_ICL observed);
    a one-sided Fisher exact test on the pooled counts over the K where either arm
    acquired; K_50 per arm by log-linear interpolation (beyond the grid when never reached)."""
    from scipy.stats import fisher_exact

    from icl_kinetics.validate.requirements import MIN_SEEDS_ARM, inconclusive

    name = "equalized_contexts"
    seeds = [s for s in seed_summaries(table) if s.finite_k and s.contexts in ARMS]
    arms = {c: [s for s in seeds if s.contexts == c] for c in ARMS}
    if not arms["iid"] or not arms["equalized"]:
        return Verdict.skipped(name, rung, "needs finite-K runs with both contexts = iid and equalized")
    Ks = sorted({s.K for s in seeds})
    frac = {c: {K: float(np.mean([s.observed for s in v if s.K == K])) for K in Ks if any(s.K == K for s in v)}
            for c, v in arms.items()}
    counts = {c: {K: Count(sum(s.observed for s in v if s.K == K), sum(s.K == K for s in v)) for K in Ks}
              for c, v in arms.items()}
    active = [K for K in Ks if counts["iid"][K].acquired + counts["equalized"][K].acquired > 0]
    a_i, n_i = sum(counts["iid"][K].acquired for K in active), sum(counts["iid"][K].n for K in active)
    a_e, n_e = (sum(counts["equalized"][K].acquired for K in active), sum(counts["equalized"][K].n for K in active))
    k50_i, k50_e = _k50(frac["iid"]), _k50(frac["equalized"])
    predicted = "fewer equalized seeds acquire ICL; K_50 larger"
    details = {"fraction": {c: {str(K): v for K, v in frac[c].items()} for c in frac}, "k50_iid": k50_i,
               "k50_equalized": k50_e, "pooled": {"iid": [a_i, n_i], "equalized": [a_e, n_e]}}
    if not active:
        return Verdict(prediction=name, rung=rung, predicted=predicted, measured="no seed acquired ICL in either arm",
                       verdict="inconclusive", reason="no acquisition to compare", details=details)
    if min(n_i, n_e) < MIN_SEEDS_ARM:
        return inconclusive(name, rung, [f">= {MIN_SEEDS_ARM} seeds per arm over the K where either arm acquired "
                                         f"(has iid {n_i}, equalized {n_e})"], predicted=predicted,
                            measured=f"acquired: iid {a_i}/{n_i}, equalized {a_e}/{n_e}", details=details)
    table2x2 = [[a_e, n_e - a_e], [a_i, n_i - a_i]]
    p_harder = float(fisher_exact(table2x2, alternative="less").pvalue)
    p_easier = float(fisher_exact(table2x2, alternative="greater").pvalue)
    details.update(fisher_p_harder=p_harder, fisher_p_easier=p_easier)
    fmt = (lambda k: "beyond the grid" if not np.isfinite(k) else f"{k:.0f}")
    if p_harder < 0.01:
        verdict, reason = "holds", "equalized contexts acquire ICL less often over the same K"
    elif p_easier < 0.01:
        verdict, reason = "does not hold", "equalized contexts acquire ICL more often"
    else:
        verdict, reason = "inconclusive", "no significant difference between the arms"
    b_eq = [s.beta0 for s in arms["equalized"] if s.model == "minimal" and np.isfinite(s.beta0)]
    if b_eq:  # beta0 is the reduced model's own: the saddle at beta = 0 bounds the equalized arm
        ceiling = float(np.mean([b > 0 for b in b_eq]))
        details["theory_ceiling_equalized"] = ceiling
        reason += (f"; the theory bounds the equalized fraction by P(beta0 > 0) = {ceiling:.2f} (the saddle at "
                   f"beta = 0), measured {a_e}/{n_e}")
    return Verdict(prediction=name, rung=rung, predicted=predicted,
                   measured=f"acquired: iid {a_i}/{n_i}, equalized {a_e}/{n_e} (over K with any acquisition); "
                            f"K_50 iid {fmt(k50_i)}, equalized {fmt(k50_e)}",
                   metric=f"one-sided Fisher exact p = {min(p_harder, p_easier):.2g}", verdict=verdict, reason=reason,
                   details=details)


def acquisition_by_k(table) -> dict:
    """Paper Fig. 6e's data: per arm ('iid', 'equalized') and K (items, increasing), the
    seeds, how many acquired ICL (accuracy above 0.95 at some evaluation), the fraction
    with its 95 % Wilson interval, and the mean final ICL accuracy.  Returns {arm: [{"K",
    "n", "acquired", "fraction", "ci", "mean_final_icl_acc"}, ...]} for the arms present."""
    seeds = seed_summaries(table)
    out = {}
    for ctx in ARMS:
        sc = [s for s in seeds if s.contexts == ctx]
        rows = []
        for K in sorted({s.K for s in sc}):
            sk = [s for s in sc if s.K == K]
            n, a = len(sk), sum(s.observed for s in sk)
            rows.append({"K": K, "n": n, "acquired": a, "fraction": a / n, "ci": fits.wilson_interval(a, n),
                         "mean_final_icl_acc": float(np.mean([s.final_icl_acc for s in sk]))})
        if rows:
            out[ctx] = rows
    return out
