"""ICL onset times at K = inf (paper Fig. 6b, A4): the median t_ICL (iterations) is linear
in N (:func:`onset_times`, ``onset_times_linear``), and the spread of log t_ICL is the
push-forward of the seeds' beta0 spread (``onset_times_shape``)."""

from __future__ import annotations

import math

import numpy as np

from icl_kinetics.validate import fits
from icl_kinetics.validate.core import Estimate, Verdict, seed_summaries


#: onset_times_linear's decision bands: "holds" needs R^2 >= R2_HOLDS and the quadratic term's
#: p >= P_HOLDS (a testable p: >= 4 values of N); "does not hold" needs R^2 < R2_FAILS or
#: p < P_FAILS; between them "inconclusive" (docs/validation.md)
R2_HOLDS, R2_FAILS, P_HOLDS, P_FAILS = 0.95, 0.8, 0.05, 0.01
#: onset_times_shape's KS bands (with the sd interval; see :func:`_onset_shape`)
KS_HOLDS, KS_FAILS = 0.05, 0.01


def linearity_verdict(lf: fits.LinearFit) -> tuple[str, str]:
    """The verdict on a linear fit of medians against N, with its reason: the bands
    :data:`R2_HOLDS`, :data:`R2_FAILS`, :data:`P_HOLDS`, :data:`P_FAILS`.  A NaN p (fewer than
    4 points) is never a pass: the verdict is then "inconclusive" unless R^2 alone fails."""
    p = lf.linearity
    if lf.r2 < R2_FAILS or (np.isfinite(p) and p < P_FAILS):
        return "does not hold", (f"R^2 = {lf.r2:.3f} < {R2_FAILS}" if lf.r2 < R2_FAILS else
                                 f"a significant quadratic term (p = {p:.2g} < {P_FAILS})")
    if not np.isfinite(p):
        return "inconclusive", "the quadratic term cannot be tested (its p is NaN with fewer than 4 values of N)"
    if lf.r2 >= R2_HOLDS and p >= P_HOLDS:
        return "holds", f"R^2 = {lf.r2:.3f} >= {R2_HOLDS} and no quadratic term (p = {p:.2g} >= {P_HOLDS})"
    return "inconclusive", (f"R^2 = {lf.r2:.3f}, quadratic-term p = {p:.2g}: between holding (R^2 >= {R2_HOLDS}, "
                            f"p >= {P_HOLDS}) and failing (R^2 < {R2_FAILS} or p < {P_FAILS}); add seeds or N")


def line_fit(x, y) -> fits.LinearFit:
    """:func:`fits.linear_fit` with its slope interval by Student t below
    ``fits.MIN_BOOTSTRAP_POINTS`` points (a bootstrap over a handful of points is too narrow)."""
    import dataclasses

    boot = len(x) >= fits.MIN_BOOTSTRAP_POINTS
    lf = fits.linear_fit(x, y, n_boot=1000 if boot else 0, seed=0)
    return lf if boot else dataclasses.replace(lf, slope_ci=fits.slope_t_interval(x, y))


def onset_times(table, rung: str = "transformer") -> list[Verdict]:
    """t_ICL at K = inf (fresh items): the median (Kaplan-Meier, censoring explicit) is
    linear in N; and the spread of log t_ICL matches the spread of the seeds' effective
    beta0 (signal regime: log t = const - beta0, so log-normal with sd = sd(beta0)).
    Each below its minimum (``requirements``) is "inconclusive: needs ..."; a table
    without K = inf runs of an ICL model skips both."""
    from icl_kinetics.validate.requirements import lacks_onset_times_linear, lacks_onset_times_shape

    seeds = [s for s in seed_summaries(table) if s.infinite_k and s.icl_model]
    if not seeds:
        why = "needs ICL-model runs at K = inf (fresh items)"
        return [Verdict.skipped("onset_times_linear", rung, why), Verdict.skipped("onset_times_shape", rung, why)]
    Ns = sorted({s.N for s in seeds})
    med = {}
    for N in Ns:
        sn = [s for s in seeds if s.N == N]
        med[N] = fits.censored_quantile([s.time for s in sn], [s.observed for s in sn], 0.5)
    return [_onset_linear(seeds, Ns, med, rung, lacks_onset_times_linear(seeds)),
            _onset_shape(seeds, Ns, med, rung, lacks_onset_times_shape(seeds))]


def _onset_linear(seeds, Ns, med, rung, lacks) -> Verdict:
    """``onset_times_linear``: a linear fit of the Kaplan-Meier medians against N (the N with
    enough seeds and an uncensored median)."""
    from icl_kinetics.validate.requirements import MIN_SEEDS_ONSET, inconclusive

    name = "onset_times_linear"
    fdata = {"N": Ns, "samples": {N: [(s.time, s.observed) for s in seeds if s.N == N] for N in Ns},
             "median": {N: med[N].value for N in Ns}}
    medians = {str(N): med[N].to_dict() for N in Ns}
    if lacks:
        return inconclusive(name, rung, lacks, predicted="median t_ICL linear in N",
                            measured="medians at " + ", ".join(f"N = {N:g}" for N in Ns if med[N].value is not None),
                            details={"medians": medians}, figure_data=fdata)
    ok = [N for N in Ns if med[N].value is not None and sum(s.N == N for s in seeds) >= MIN_SEEDS_ONSET]
    lf = line_fit(ok, [med[N].value for N in ok])
    verdict, why = linearity_verdict(lf)
    return Verdict(prediction=name, rung=rung, predicted="median t_ICL = a N + b",
                   measured=f"slope {lf.slope:.3g} per token [{lf.slope_ci[0]:.3g}, {lf.slope_ci[1]:.3g}], "
                            f"intercept {lf.intercept:.3g}",
                   metric=f"R^2 = {lf.r2:.3f}; quadratic-term p = {lf.linearity:.3g}",
                   verdict=verdict, reason=f"linear fit of the Kaplan-Meier medians at {len(ok)} values of N: {why}",
                   details={"fit": lf.to_dict(), "medians": medians}, figure_data={**fdata, "fit": lf.to_dict()})


def _pooled_sd_within(values: np.ndarray, groups: np.ndarray, Ns) -> float:
    """The sd of ``values`` around each group's own mean, pooled over the groups (NaN values
    left out): a shift of the mean with N does not count as spread."""
    ok = np.isfinite(values)
    dev = np.concatenate([values[ok & (groups == N)] - values[ok & (groups == N)].mean() for N in Ns
                          if (ok & (groups == N)).any()])
    n_groups = sum(1 for N in Ns if (ok & (groups == N)).any())
    return float(math.sqrt(np.sum(dev**2) / max(dev.size - n_groups, 1)))


def _onset_slope(b_obs: np.ndarray, resid: np.ndarray) -> tuple:
    """Spearman (rho, p) of beta0_eff against the log t_ICL residuals, and the per-seed slope
    d log t_ICL / d beta0_eff with its 95 % bootstrap CI (NaN with < 5 seeds or no spread)."""
    from scipy.stats import spearmanr

    ok = np.isfinite(b_obs)
    rho, rho_p = spearmanr(b_obs[ok], resid[ok]) if ok.sum() >= 5 else (math.nan, math.nan)
    slope = Estimate(math.nan, (math.nan, math.nan))
    if ok.sum() >= 5 and np.ptp(b_obs[ok]) > 0:
        lf = fits.linear_fit(b_obs[ok], resid[ok], n_boot=1000, seed=0)
        slope = Estimate(lf.slope, tuple(lf.slope_ci))
    return rho, rho_p, slope


def _onset_shape(seeds, Ns, med, rung, lacks) -> Verdict:
    """``onset_times_shape``: log t_ICL about each N's median against Normal(0, sd(beta0_eff)).
    "holds" needs KS p > :data:`KS_HOLDS` and the predicted sd inside the measured sd's 95%
    interval; "does not hold" needs KS p < :data:`KS_FAILS` or the predicted sd outside that
    interval; between them "inconclusive"."""
    from scipy.stats import norm

    from icl_kinetics.validate.requirements import inconclusive

    name = "onset_times_shape"
    b0 = np.array([s.beta0 for s in seeds])
    obs = [s for s in seeds if s.observed and med[s.N].value]
    if not np.isfinite(b0).any():
        return Verdict.skipped(name, rung, "needs the effective beta column at iteration 0")
    if lacks or len(obs) < 2:
        return inconclusive(name, rung, lacks or ["acquiring seeds at N whose median is not censored"])
    sd_b0 = _pooled_sd_within(b0, np.array([s.N for s in seeds]), Ns)
    resid = np.array([math.log(s.t_icl / med[s.N].value) for s in obs])
    ks = fits.ks_compare(resid, lambda x: norm.cdf(x, scale=max(sd_b0, 1e-9)))
    sd_r = float(np.std(resid, ddof=1))
    # the spread itself: 95% chi-square interval of the residuals' sd (Normal residuals);
    # with a few dozen seeds the KS test alone has little power against a wrong scale
    sd_ci = fits.sd_interval(resid)
    spread_ok = sd_ci[0] <= sd_b0 <= sd_ci[1]
    # the per-seed slope d log t_ICL / d beta0_eff (theory: -1 in the signal regime, -2 in the
    # noise regime): how the effective beta's scale maps onto the reduced model's beta
    rho, rho_p, slope = _onset_slope(np.array([s.beta0 for s in obs]), resid)
    return Verdict(
        prediction=name, rung=rung,
        predicted=f"log t_ICL - log median ~ Normal(0, sd(beta0_eff) = {sd_b0:.3f}) (sd within each N, pooled)",
        measured=f"sd of log t_ICL residuals = {sd_r:.3f} [{sd_ci[0]:.3f}, {sd_ci[1]:.3f}] (n = {len(resid)})",
        metric=f"KS D = {ks.statistic:.3f}, p = {ks.pvalue:.3g}; predicted sd "
               f"{'inside' if spread_ok else 'outside'} the 95% interval of the measured sd",
        verdict=("holds" if ks.pvalue > KS_HOLDS and spread_ok else
                 "does not hold" if ks.pvalue < KS_FAILS or not spread_ok else "inconclusive"),
        reason=f"holds when KS p > {KS_HOLDS} and the predicted sd lies in the measured sd's 95% (chi-square) "
               f"interval, does not hold when KS p < {KS_FAILS} or it lies outside; signal-regime theory "
               "(t ~ e^-beta0) with the seeds' effective beta0 spread; censored seeds "
               "are left out of the residuals, which shortens the measured right tail. Per seed, Spearman "
               f"rho(beta0_eff, log t_ICL residual) = {rho:.2f} (p = {rho_p:.2g}); the theory expects it "
               f"negative (larger beta0, earlier onset). Slope d log t_ICL / d beta0_eff = {slope.value:.2f} "
               f"[{slope.ci[0]:.2f}, {slope.ci[1]:.2f}] (theory: -1 signal regime, -2 noise regime)",
        details={"sd_beta0_eff": sd_b0, "sd_log_t": sd_r, "sd_log_t_ci": sd_ci, "ks": ks.to_dict(),
                 "spearman_beta0_vs_resid": float(rho), "spearman_p": float(rho_p),
                 "slope_log_t_vs_beta0": slope.value, "slope_ci": slope.ci},
        figure_data={"resid": resid.tolist(), "sd_beta0": sd_b0})


def p_icl_spreads(onset_verdicts) -> dict:
    """From :func:`onset_times`' verdicts on K = inf runs, the threshold spreads that
    :func:`icl_kinetics.validate.p_icl.p_icl_from_k_star` takes: ``log_threshold_sd``
    (sd of log t_ICL within N and its CI) and ``onset_slope`` (d log t_ICL / d beta0_eff
    and its CI), each an :class:`Estimate`; {} when the shape check did not run."""
    shape = next((v for v in onset_verdicts if v.prediction == "onset_times_shape" and "sd_log_t" in v.details), None)
    if shape is None:
        return {}
    d = shape.details
    return {"log_threshold_sd": Estimate(d["sd_log_t"], tuple(d["sd_log_t_ci"])),
            "onset_slope": Estimate(d["slope_log_t_vs_beta0"], tuple(d["slope_ci"]))}
