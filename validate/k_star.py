"""The task-diversity threshold K* (items): measured from sigmoid fits of the seeds' final
ICL accuracy (or of the head's escape) against log10 K; predicted from the memorizing
MLP's c1(t) (rung 2, :func:`k_star_from_c1`); and its scaling K* ~ N^(1/nu) (paper Fig.
6a, :func:`k_star_scaling`)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from icl_kinetics.validate import fits
from icl_kinetics.validate.core import SeedSummary, Verdict, seed_summaries
from icl_kinetics.validate.memorization import i_k_table


#: k_star_scaling's tolerance: "holds" needs the measured slope's interval inside the predicted
#: interval widened by +- SLOPE_TOLERANCE x 1/nu, "does not hold" needs it wholly outside
SLOPE_TOLERANCE = 0.25


class KStar(NamedTuple):
    """A measured K* (items) and its interval (:func:`measured_k_star_interval`)."""

    k_star: float
    lo: float
    hi: float


def fit_k_star(log10_k, y, n_boot: int = 200) -> fits.SigmoidFit:
    """:func:`fits.sigmoid_fit` of ``y`` against log10 K (seed 0), with too few points turned
    into a NaN fit carrying the reason."""
    from icl_kinetics.errors import ParameterError

    try:
        return fits.sigmoid_fit(log10_k, y, n_boot=n_boot, seed=0)
    except ParameterError as e:
        nan = math.nan
        return fits.SigmoidFit(a=nan, b=nan, c=nan, d=nan, k_star=nan, k_star_ci=(nan, nan), r2=nan, n=len(log10_k),
                               n_boot=0, n_boot_ok=0, reason=str(e))


def measured_k_star(seeds: list[SeedSummary], n_boot: int = 200) -> fits.SigmoidFit:
    """Sigmoid fit of final ICL accuracy against log10 K, one point per seed."""
    return fit_k_star([math.log10(s.K) for s in seeds], [s.final_icl_acc for s in seeds], n_boot)


def measured_k_star_interval(fit: fits.SigmoidFit, Ks) -> tuple[float, float]:
    """The measured K* interval (items): the fit's bootstrap CI, widened to the two grid
    values of K around the fitted K*.  When every seed agrees at each K the transition is
    sharp and the bootstrap CI collapses, but the data only place K* between neighbouring
    grid points."""
    if not np.isfinite(fit.k_star):
        return (math.nan, math.nan)
    g = np.unique(np.asarray(Ks, float))
    below, above = g[g <= fit.k_star], g[g >= fit.k_star]
    lo = min(fit.k_star_ci[0], below.max()) if below.size else fit.k_star_ci[0]
    hi = max(fit.k_star_ci[1], above.min()) if above.size else fit.k_star_ci[1]
    return (float(lo), float(hi))


def _finite_k_icl_seeds(table) -> list[SeedSummary]:
    return [s for s in seed_summaries(table) if s.icl_model and s.finite_k]


# ----------------------------------------------------------------------------- rung 2: K* from c1
def k_star_from_c1(mlp_table, icl_table, model: str = "minimal") -> list[Verdict]:
    """Rung 2: K* predicted from the memorizing MLP's measured c1(t), beside K* measured
    from the runs of the minimal model with that MLP, for each N.

    Prediction (made without looking at which runs acquired ICL): a seed escapes iff
    I_K(T) / N > tau*(beta0), the escape time of the reduced ODEs in reduced time
    (``theory.escape_time``).  tau* is bracketed between the noise-free closed form
    (c2 = 0: sqrt(pi/2) e^-beta0) and the exact value with c2 = 1/2 (the untrained MLP's
    value); beta0 is the runs' initial beta.  K* is where the measured I_K(T), interpolated
    in log-log between the measured K, crosses N tau*.

    Measured K*: when the table has the head's parameters (columns ``w`` and ``beta``, as
    the minimal model logs them) a seed *escaped* iff at its last evaluation the head has
    escaped (``theory.head_escaped``: w > 0 and beta > beta_c(N), the large-D beta at which
    ICL accuracy reaches 0.95): the theory's own event.  K* is the midpoint of a sigmoid
    fit of that indicator against log10 K.  The K* from final ICL accuracy is reported
    beside it: the memorizing MLP adds its own logit on novel items, which can hold the ICL
    accuracy below 0.95 after the head has escaped.
    """
    from icl_kinetics.validate.requirements import MIN_MLP_K, kstar_lacks, inconclusive

    name, rung = "k_star_from_c1", "minimal model + MLP"
    ik = i_k_table(mlp_table) if mlp_table is not None and "c1" in mlp_table else {"K": []}
    if not ik["K"]:
        return [Verdict.skipped(name, rung, "needs standalone-MLP runs (model = mlp) with c1 and lr")]
    seeds = [s for s in seed_summaries(icl_table) if s.model == model and s.finite_k]
    if not seeds:
        return [Verdict.skipped(name, rung, f"needs runs of model '{model}' at finite K (the minimal model, whose "
                                "beta0 is the theory's; a transformer's K* is checked by k_star_scaling)")]
    if len(ik["K"]) < MIN_MLP_K:
        return [inconclusive(name, rung, [f"MLP runs with c1 at >= {MIN_MLP_K} K (has {len(ik['K'])})"])]
    per = kstar_lacks(seeds)
    return [inconclusive(name, f"{rung}, N = {N:g}", per[N]) if per[N] else
            _k_star_from_c1_at(ik, [s for s in seeds if s.N == N], N, rung) for N in sorted(per)]


def widened_interval(lo: float, hi: float, Ks) -> tuple[float, float]:
    """An interval (items) widened by one more grid value of K on each side (or by the
    grid's ratio where it ends): K* is resolved only to the grid, so a miss by less than
    one grid step is no evidence against the prediction."""
    g = np.unique(np.asarray(Ks, float))
    r = float(np.exp(np.median(np.diff(np.log(g))))) if g.size > 1 else 2.0
    below, above = g[g < lo], g[g > hi]
    return (float(below.max()) if below.size else lo / r, float(above.min()) if above.size else hi * r)


def _predicted_k_star(ik: dict, N: float, beta0: float) -> tuple[list, list]:
    """(tau* for c2 = 0 and 1/2, sorted; the K* where the measured I_K(T), interpolated in
    log-log, crosses N tau*: NaN outside the measured range)."""
    from icl_kinetics.theory import C2_DEFAULT, escape_time

    lk, li = np.log(ik["K"]), np.log(np.maximum(ik["i_k"], 1e-300))
    taus = sorted([float(escape_time(beta0, c2=0.0)), float(escape_time(beta0, c2=C2_DEFAULT))])
    pred = []
    for tau in taus:
        target = math.log(N * tau)
        if target < li.min() or target > li.max():
            pred.append(math.nan)
        else:  # I_K(T) increases with K: interpolate log K at log I = target
            order = np.argsort(li)
            pred.append(float(np.exp(np.interp(target, li[order], lk[order]))))
    return taus, pred


def _k_star_from_c1_at(ik: dict, sn: list, N: float, rung: str) -> Verdict:
    """:func:`k_star_from_c1` at one N (``sn``: its seeds)."""
    from icl_kinetics.theory import icl_threshold_beta

    b0 = float(np.nanmean([s.beta0 for s in sn])) if any(np.isfinite(s.beta0) for s in sn) else 0.0
    taus, pred = _predicted_k_star(ik, N, b0)
    fit_acc = measured_k_star(sn)
    has_head = all(s.has_head() for s in sn)
    if has_head:
        ys = [float(s.head_escaped()) for s in sn]
        fit = fit_k_star([math.log10(s.K) for s in sn], ys)
        observable = f"head escaped (w > 0, beta > beta_c = {icl_threshold_beta(int(N)):.2f})"
    else:
        ys, fit, observable = [s.final_icl_acc for s in sn], fit_acc, "final ICL accuracy"
    any_pred = np.isfinite(pred).any()
    lo_p, hi_p = (np.nanmin(pred), np.nanmax(pred)) if any_pred else (math.nan, math.nan)
    mlo, mhi = measured_k_star_interval(fit, [s.K for s in sn])
    if not np.isfinite(lo_p) or not np.isfinite(fit.k_star):
        verdict, reason = "inconclusive", ("N tau* lies outside the measured I_K(T) range" if not np.isfinite(lo_p)
                                           else f"no K* measured: {fit.reason}")
    else:
        overlap = lo_p <= mhi and hi_p >= mlo
        wlo, whi = widened_interval(mlo, mhi, [s.K for s in sn])
        far = hi_p < wlo or lo_p > whi
        verdict = "holds" if overlap else ("does not hold" if far else "inconclusive")
        reason = (f"predicted K* in [{lo_p:.0f}, {hi_p:.0f}] (tau* from c2 = 0 to 1/2, beta0 = {b0:.2f}); "
                  f"measured from {observable}: {fit.k_star:.0f} [{mlo:.0f}, {mhi:.0f}]: the intervals "
                  f"{'overlap' if overlap else 'do not overlap'}"
                  + ("" if overlap else f", and the prediction {'misses' if far else 'lies within'} the measured "
                     f"interval widened by one K grid step ([{wlo:.0f}, {whi:.0f}]; does not hold only beyond it)"))
        if has_head:
            reason += (f". From final ICL accuracy instead: K* = {fit_acc.k_star:.0f} "
                       f"[{fit_acc.k_star_ci[0]:.0f}, {fit_acc.k_star_ci[1]:.0f}] (the MLP's logit on novel items "
                       "lowers the accuracy of seeds whose head escaped)")
    return Verdict(
        prediction="k_star_from_c1", rung=f"{rung}, N = {N:g}", predicted=f"{lo_p:.0f} - {hi_p:.0f}",
        measured=f"{fit.k_star:.0f} [{mlo:.0f}, {mhi:.0f}]",
        metric="interval overlap (prediction vs measured: 95% bootstrap CI widened to the K grid)",
        verdict=verdict, reason=reason,
        details={"N": N, "beta0": b0, "tau_star": taus, "predicted_k_star": pred, "measured": fit.to_dict(),
                 "observable": observable, "measured_from_accuracy": fit_acc.to_dict()},
        figure_data={"N": N, "seeds": [(s.K, y) for s, y in zip(sn, ys)],
                     "fit": {**fit.to_dict(), "k_star_ci": [mlo, mhi]}, "predicted": pred, "observable": observable})


# ----------------------------------------------------------------------------- K* against N
def k_star_scaling(table, nu: float | None = None, nu_ci=None, rung: str = "transformer") -> Verdict:
    """K* against N: per-N sigmoid fits of final ICL accuracy against log10 K, then a
    power law K* ~ N^slope; predicted slope 1/nu (nu measured from the MLP runs when given,
    else the paper's 0.7, flagged as not measured here)."""
    from icl_kinetics.validate.requirements import MIN_N_KSTAR, kstar_lacks, inconclusive

    name = "k_star_scaling"
    seeds = _finite_k_icl_seeds(table)
    if not seeds:
        return Verdict.skipped(name, rung, "needs ICL-model runs at finite K")
    lacks = kstar_lacks(seeds)
    Ns = [N for N, v in lacks.items() if not v]
    if len(Ns) < MIN_N_KSTAR:
        return inconclusive(name, rung, [f">= {MIN_N_KSTAR} values of N meeting the K* minimum (has {len(Ns)})"]
                            + [x for v in lacks.values() for x in v])
    per, interval = {}, {}
    for N in Ns:
        sn = [s for s in seeds if s.N == N]
        per[N] = measured_k_star(sn)
        interval[N] = measured_k_star_interval(per[N], [s.K for s in sn])
    good = [N for N in Ns if np.isfinite(per[N].k_star) and not per[N].reason]
    assumed = nu is None
    nu_v = 0.7 if nu is None else nu
    pred = 1.0 / nu_v
    pred_ci = (1 / nu_ci[1], 1 / nu_ci[0]) if nu_ci else (pred, pred)
    details = {"k_star": {str(N): {**per[N].to_dict(), "interval": interval[N]} for N in Ns}, "nu": nu_v,
               "nu_assumed": assumed}
    fdata = {"N": Ns, "fits": {N: {**per[N].to_dict(), "k_star_ci": interval[N]} for N in Ns}, "predicted_slope": pred}
    if len(good) < 2:
        return Verdict(prediction=name, rung=rung, predicted=f"slope 1/nu = {pred:.2f}",
                       measured="K* not measured at >= 2 N", verdict="inconclusive",
                       reason="; ".join(f"N = {N:g}: {per[N].reason or 'ok'}" for N in Ns), details=details,
                       figure_data=fdata)
    slope, slope_ci, r2 = slope_with_interval(good, [per[N].k_star for N in good], [interval[N] for N in good])
    tol = SLOPE_TOLERANCE * pred
    band = (pred_ci[0] - tol, pred_ci[1] + tol)
    inside = band[0] <= slope_ci[0] and slope_ci[1] <= band[1]
    outside = slope_ci[1] < band[0] or slope_ci[0] > band[1]
    verdict = "holds" if inside else ("does not hold" if outside else "inconclusive")
    reason = (f"measured slope {slope:.2f} [{slope_ci[0]:.2f}, {slope_ci[1]:.2f}] vs predicted 1/nu = {pred:.2f}"
              + (f" [{pred_ci[0]:.2f}, {pred_ci[1]:.2f}]" if nu_ci else "")
              + (" (nu = 0.7 is the paper's value, not measured here)" if assumed else " (nu measured from the MLP runs)")
              + f"; the tolerance band (predicted +- {SLOPE_TOLERANCE:g} x 1/nu) is [{band[0]:.2f}, {band[1]:.2f}]: "
              + ("the measured interval lies inside it" if inside else "the measured interval lies outside it"
                 if outside else "the measured interval straddles its edge (too wide to decide: K* is resolved only "
                 "to the K grid; refine the grid, add seeds or N values)"))
    details.update(slope=slope, slope_ci=slope_ci, r2=r2, band=band)
    fdata.update(slope=slope)
    return Verdict(prediction=name, rung=rung, predicted=f"d log K*/d log N = {pred:.2f}",
                   measured=f"{slope:.2f} [{slope_ci[0]:.2f}, {slope_ci[1]:.2f}]",
                   metric="measured interval against the tolerance band", verdict=verdict, reason=reason,
                   details=details, figure_data=fdata)


def slope_with_interval(Ns, k_stars, intervals) -> tuple[float, tuple, float]:
    """The log-log slope of K* against N from the point estimates, its 95 % range by
    propagating each N's K* interval (log-uniform draws within it, seed 0: with a handful
    of N a bootstrap over points says little), and the fit's R^2."""
    lx = np.log(np.asarray(Ns, float))
    ly = np.log(k_stars)
    slope = float(np.polyfit(lx, ly, 1)[0])
    r2 = float(1 - np.sum((ly - np.polyval(np.polyfit(lx, ly, 1), lx)) ** 2) / max(np.sum((ly - ly.mean()) ** 2), 1e-300))
    rng = np.random.default_rng(0)
    lo_i = np.log([iv[0] for iv in intervals])
    hi_i = np.log([iv[1] for iv in intervals])
    draws = rng.uniform(lo_i, hi_i, size=(2000, len(Ns)))
    sl = np.polyfit(lx, draws.T, 1)[0]
    return slope, (float(np.percentile(sl, 2.5)), float(np.percentile(sl, 97.5))), r2


def k_star_at_horizon(table, horizon: float, n_boot: int = 200) -> dict:
    """K*(N) as the midpoint of a sigmoid fit, against log10 K, of the indicator "acquired
    ICL (accuracy > 0.95) by iteration ``horizon``", one point per seed; returns
    {N: :class:`KStar`} with the interval of :func:`measured_k_star_interval`, leaving out N whose
    fit failed or whose K* lies outside the K grid.  Used to predict P(ICL) of runs with
    another iteration cap than the K* sweep: I_K(T) grows with T, so K* depends on it.
    ``n_boot``: the fit's bootstrap resamples (:func:`fit_k_star`)."""
    seeds = _finite_k_icl_seeds(table)
    out = {}
    for N in sorted({s.N for s in seeds}):
        sn = [s for s in seeds if s.N == N]
        y = [float(s.observed and s.t_icl <= horizon) for s in sn]
        fit = fit_k_star([math.log10(s.K) for s in sn], y, n_boot)
        if np.isfinite(fit.k_star) and not fit.reason:
            out[N] = KStar(fit.k_star, *measured_k_star_interval(fit, [s.K for s in sn]))
    return out


# ----------------------------------------------------------------------------- figure data
def sigmoid_panels(table, k_star_details: dict) -> dict:
    """Paper Fig. A7's data: per N, every finite-K seed's K and final ICL accuracy, with the
    sigmoid fit that :func:`k_star_scaling` made there (its ``details["k_star"]``).  Returns
    {N: {"K": [...], "acc": [...], "fit": {...}}}."""
    seeds = [s for s in seed_summaries(table) if s.finite_k]
    panels = {}
    for N in sorted({s.N for s in seeds}):
        sn = [s for s in seeds if s.N == N]
        panels[N] = {"K": [s.K for s in sn], "acc": [s.final_icl_acc for s in sn], "fit": k_star_details[str(N)]}
    return panels


def final_accuracy_by_k(table) -> dict:
    """Paper Figs. 2b, 2c's data: per finite K (items, increasing), every seed's final ICL
    and IWL accuracy.  Returns {K: {"icl_acc": [...], "iwl_acc": [...]}}."""
    seeds = [s for s in seed_summaries(table) if s.finite_k]
    return {K: {"icl_acc": [s.final_icl_acc for s in seeds if s.K == K],
                "iwl_acc": [s.final_iwl_acc for s in seeds if s.K == K]} for K in sorted({s.K for s in seeds})}
