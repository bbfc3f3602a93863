"""Near K*, the seeds split into those that acquire ICL and those that do not (paper Fig.
6c, :func:`bimodality`), and the fraction that acquires is P(ICL | K, N) (``theory.p_icl``):
predicted from the MLP's c1 on the minimal model (:func:`p_icl_from_c1`), or from K*(N),
nu and the spread of the seeds' thresholds on the transformer (:func:`p_icl_from_k_star`)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from icl_kinetics.validate import fits
from icl_kinetics.validate.core import Estimate, Verdict, by_point, seed_summaries
from icl_kinetics.validate.k_star import KStar
from icl_kinetics.validate.memorization import i_k_table


# ----------------------------------------------------------------------------- bimodality
#: bimodality's band around Sarle's 5/9: "holds" above 5/9 + BC_BAND, "does not hold" below
#: 5/9 - BC_BAND, "inconclusive" between (one seed moves the coefficient by a few hundredths at 12-16 seeds)
BC_BAND = 0.05
#: P(ICL): "does not hold" needs the prediction outside the measured fraction's 99% Wilson
#: interval; "holds" needs it to overlap the 95% one; between them "inconclusive"
REJECT_CONFIDENCE = 0.99
def bimodality(table, rung: str = "transformer") -> list[Verdict]:
    """Near K*, outcomes split: each seed either acquires ICL or does not, and which one
    depends on its own beta0 (theory: a seed escapes iff beta0 > beta0_c(I_K, N)).

    Per finite (N, K) with >= ``requirements.MIN_SEEDS_BIMODAL`` (12) seeds: the fraction acquiring (t_ICL observed) with a 95%
    Wilson interval, Sarle's bimodality coefficient of the final ICL accuracies (> 5/9
    suggests two modes), and, when the table has the effective beta at iteration 0, a
    one-sided Mann-Whitney test that acquiring seeds started with larger beta0.

    The minimal model logs its head: "acquired" is then the theory's own event
    (``theory.head_escaped``: w > 0, beta > beta_c at the last evaluation), since its MLP's
    logit on novel items can hold the accuracy down, and the coefficient is taken on the
    final betas."""
    from icl_kinetics.validate.requirements import MIN_SEEDS_BIMODAL, inconclusive

    seeds = [s for s in seed_summaries(table) if s.finite_k and s.icl_model]
    if not seeds:
        return [Verdict.skipped("bimodality", rung, "needs ICL-model runs at finite K")]
    pts = by_point(seeds)
    out = [_bimodality_at(N, K, sn, rung) for (N, K), sn in sorted(pts.items()) if len(sn) >= MIN_SEEDS_BIMODAL]
    return out or [inconclusive("bimodality", rung, [f">= {MIN_SEEDS_BIMODAL} seeds at one finite (N, K) (has at "
                                                     f"most {max(len(v) for v in pts.values())})"])]


def _beta0_test(sn, acquired) -> tuple[float | None, str]:
    """One-sided Mann-Whitney p that the acquiring seeds started with larger beta0_eff (None
    with < 3 seeds on either side), and the sentence that says so ('' when not run)."""
    from scipy.stats import mannwhitneyu

    b_yes = [s.beta0 for s, a in zip(sn, acquired) if a and np.isfinite(s.beta0)]
    b_no = [s.beta0 for s, a in zip(sn, acquired) if not a and np.isfinite(s.beta0)]
    if len(b_yes) < 3 or len(b_no) < 3:
        return None, ""
    p = float(mannwhitneyu(b_yes, b_no, alternative="greater").pvalue)
    return p, (f"; acquiring seeds' beta0_eff is larger (one-sided Mann-Whitney p = {p:.3g})" if p < 0.05 else
               f"; no evidence that acquiring seeds started with larger beta0_eff (p = {p:.3g})")


def _bimodality_at(N: float, K: float, sn: list, rung: str) -> Verdict:
    """:func:`bimodality` at one (N, K) (``sn``: its seeds)."""
    head = all(s.model == "minimal" and np.isfinite(s.final("w")) for s in sn)
    acquired = [s.head_escaped() for s in sn] if head else [s.observed for s in sn]
    n, k = len(sn), sum(acquired)
    lo, hi = fits.wilson_interval(k, n)
    acc = [s.final("beta") for s in sn] if head else [s.final_icl_acc for s in sn]
    coef = fits.bimodality_coefficient(acc) if np.ptp(acc) > 0 else math.nan
    details = {"N": N, "K": K, "n": n, "acquired": k, "fraction_ci": (lo, hi), "bimodality_coefficient": coef}
    split = lo > 0.02 and hi < 0.98
    mw_p, mech = _beta0_test(sn, acquired)
    if mw_p is not None:
        details["beta0_mannwhitney_p"] = mw_p
    if not split:
        verdict, reason = "inconclusive", (f"{k} of {n} seeds acquired ICL: this K is not near K* "
                                           "(the fraction's interval touches 0 or 1)")
    else:
        holds = bool(np.isfinite(coef) and coef > 5 / 9 + BC_BAND)
        fails = bool(not np.isfinite(coef) or coef < 5 / 9 - BC_BAND)
        verdict = "holds" if holds else ("does not hold" if fails else "inconclusive")
        what = "final betas" if head else "final ICL accuracies"
        reason = (f"{k} of {n} seeds {'escaped (w > 0, beta > beta_c)' if head else 'acquired ICL'} "
                  f"(95% interval {lo:.2f}-{hi:.2f}); {what} "
                  + ("are bimodal" if holds else "are not bimodal" if fails else "are between")
                  + f" (coefficient {coef:.2f} vs 5/9 +- {BC_BAND:g})") + mech
    return Verdict(prediction="bimodality", rung=f"{rung}, N = {N:g}, K = {K:g}",
                   predicted="seeds split into ICL and no-ICL; larger beta0 acquires",
                   measured=f"{k}/{n} acquired, bimodality coefficient {coef:.2f}",
                   metric="Wilson interval of the fraction; Sarle's coefficient > 5/9; Mann-Whitney on beta0_eff",
                   verdict=verdict, reason=reason, details=details,
                   figure_data={"acc": acc, "observed": acquired, "N": N, "K": K,
                                "xlabel": "final beta" if head else "final ICL accuracy"})


# ----------------------------------------------------------------------------- P(ICL) from c1
def _fraction_verdict(pred, k: int, n: int, overlap: bool) -> tuple[str, str]:
    """The verdict on a predicted range of a fraction against k of n seeds: "holds" when it
    overlaps the 95% Wilson interval, "does not hold" only when it misses the wider
    :data:`REJECT_CONFIDENCE` one, "inconclusive" between (with the words that say so)."""
    if overlap:
        return "holds", ""
    lo, hi = fits.wilson_interval(k, n, REJECT_CONFIDENCE)
    if pred[0] <= hi and pred[1] >= lo:
        return "inconclusive", (f", but lies in its {REJECT_CONFIDENCE:.0%} interval [{lo:.2f}, {hi:.2f}]: too close "
                                "to reject")
    return "does not hold", f", and its {REJECT_CONFIDENCE:.0%} interval [{lo:.2f}, {hi:.2f}] too"


def p_icl_from_c1(mlp_table, icl_table, beta0_mean: float = 0.0, beta0_std: float = 1.0,
                  rung: str = "minimal model + MLP") -> list[Verdict]:
    """P(ICL | K, N) across seeds (theory.p_icl): with beta0 ~ Normal(mean, std) across seeds
    and I_K(T) measured on the MLP alone, a seed escapes iff beta0 > beta0_c(I_K / N), so
    the escaping fraction is Phi((mean - beta0_c) / std).  Bracketed between c2 = 0 and 1/2
    as for K*.  Measured: the fraction whose head escaped (``theory.head_escaped``: w > 0,
    beta > beta_c), with a 95% Wilson interval."""
    from icl_kinetics.validate.requirements import MIN_MLP_K, MIN_SEEDS_POINT, inconclusive

    ik = i_k_table(mlp_table) if mlp_table is not None and "c1" in mlp_table else {"K": []}
    if not ik["K"]:
        return [Verdict.skipped("p_icl", rung, "needs standalone-MLP runs (model = mlp) with c1 and lr")]
    seeds = [s for s in seed_summaries(icl_table) if s.model == "minimal" and s.finite_k]
    if not seeds:
        return [Verdict.skipped("p_icl", rung, "needs runs of the minimal model at finite K")]
    if len(ik["K"]) < MIN_MLP_K:
        return [inconclusive("p_icl", rung, [f"MLP runs with c1 at >= {MIN_MLP_K} K (has {len(ik['K'])})"])]
    lk, li = np.log(ik["K"]), np.log(np.maximum(ik["i_k"], 1e-300))
    out = []
    for (N, K), sn in sorted(by_point(seeds).items()):
        if len(sn) < MIN_SEEDS_POINT or not (lk.min() <= math.log(K) <= lk.max()):
            continue
        ik_at = float(np.exp(np.interp(math.log(K), lk, li)))
        out.append(_p_icl_from_c1_at(N, K, sn, ik_at, beta0_mean, beta0_std, rung))
    return out or [inconclusive("p_icl", rung, [f">= {MIN_SEEDS_POINT} seeds at one (N, K) inside the MLP runs' K "
                                                f"range [{ik['K'][0]:g}, {ik['K'][-1]:g}]"])]


def _p_icl_from_c1_at(N, K, sn, ik_at: float, beta0_mean: float, beta0_std: float, rung: str) -> Verdict:
    from icl_kinetics.theory import p_icl

    pred = sorted(float(p_icl(ik_at, int(N), beta0_mean, beta0_std, c2=c2)) for c2 in (0.0, 0.5))
    esc = [s.head_escaped() for s in sn]
    n, k = len(esc), sum(esc)
    lo, hi = fits.wilson_interval(k, n)
    overlap = pred[0] <= hi and pred[1] >= lo
    verdict, band = _fraction_verdict(pred, k, n, overlap)
    return Verdict(prediction="p_icl", rung=f"{rung}, N = {N:g}, K = {K:g}", predicted=f"{pred[0]:.2f} - {pred[1]:.2f}",
                   measured=f"{k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}]", metric="prediction vs 95% Wilson interval",
                   verdict=verdict,
                   reason=f"I_K(T) = {ik_at:.1f} from the MLP alone; beta0 ~ Normal({beta0_mean:g}, {beta0_std:g}^2) "
                          f"(the runs' initialization); the predicted fraction "
                          f"{'lies in' if overlap else 'misses'} the measured interval" + band,
                   details={"i_k": ik_at, "predicted": pred, "measured": [k, n], "interval": [lo, hi]})


# ----------------------------------------------------------------------------- P(ICL) from K*
class ThresholdSpread(NamedTuple):
    """One measure of sd(log theta), the spread of the seeds' thresholds: the estimate, the
    values its predicted range spans, and what it rests on."""

    sd: float
    sds: list
    basis: str


class PIclForm(NamedTuple):
    """P(ICL) predicted with one :class:`ThresholdSpread`: the range, the point prediction
    (from the estimates) and what it rests on."""

    predicted: tuple
    point: float
    basis: str


def _measured(m) -> Estimate | None:
    """(value, (lo, hi)) as an :class:`Estimate` when all three are finite numbers, else None."""
    if m is None or not np.all(np.isfinite([m[0], *m[1]])):
        return None
    return Estimate(m[0], tuple(m[1]))


def p_icl_from_k_star(table, k_star: dict, nu: float, nu_ci=None, rung: str = "transformer",
                      onset_slope=None, log_threshold_sd=None) -> list[Verdict]:
    """P(ICL | K, N) for a model whose I_K -> escape map is not measured directly (the
    transformer): from K*(N) measured on other runs, nu measured on the MLP alone and the
    spread of the seeds' thresholds.

    Theory: a seed escapes iff its I_K(T) ~ A K^nu exceeds its threshold theta
    (docs/theory.md §4), K* being where half the seeds escape.  With log theta ~ Normal
    across seeds,

        P(ICL | K, N) = Phi(nu ln(K / K*(N)) / sd(log theta)).

    Three measures of sd(log theta), best first; the first available decides the verdict,
    and the others are reported in the reason and details (``forms``):

    * **threshold spread** (``log_threshold_sd``): at K = inf, c1 = 1/2, so t_ICL = 2 theta
      / lr and sd(log theta) = sd(log t_ICL) within N, measured on the K = inf runs
      (``onset_times_shape``'s ``sd_log_t`` and its CI).  No effective beta is needed.
    * **beta_eff calibrated** (``onset_slope``, s = d log t_ICL / d beta0_eff per seed at
      K = inf): theta ~ e^{-m a beta0_eff} with beta0 = a beta0_eff, so s = -m a and
      sd(log theta) = |s| sd(beta0_eff).  It keeps only the spread that beta0_eff explains.
    * **beta_eff uncalibrated**: beta0_eff taken on the reduced model's scale, sd(log theta)
      = m sd(beta0_eff), m = 1 (signal regime) or 2 (noise regime).

    Each predicted range spans K*'s interval, nu's CI and the sd's CI (or m).  Measured:
    the fraction of seeds that acquired ICL (t_ICL observed), with a 95% Wilson interval.
    "holds" when they overlap, "does not hold" when they do not, and "inconclusive" when
    they overlap but the predicted range is wider than 0.8, since it then tests nothing.

    Args:
        table: runs at finite K (with the effective beta at iteration 0, ``beta``, for the
            beta_eff forms).
        k_star: {N: (k_star, lo, hi)} (items) measured elsewhere at the same iteration
            horizon (:func:`icl_kinetics.validate.k_star.k_star_at_horizon`).
        nu, nu_ci: the memorization exponent and its CI (from ``memorization_law``).
        onset_slope: (s, (lo, hi)) measured at K = inf on the same model, or None.
        log_threshold_sd: (sd, (lo, hi)) of log t_ICL within N at K = inf, or None.
    """
    from icl_kinetics.validate.requirements import MIN_SEEDS_POINT, inconclusive

    slope, spread = _measured(onset_slope), _measured(log_threshold_sd)
    slope = slope if slope is not None and max(slope.value, *slope.ci) < 0 else None
    spread = spread if spread is not None and min(spread.value, *spread.ci) > 0 else None
    seeds = [s for s in seed_summaries(table) if s.icl_model and s.finite_k]
    if not seeds:
        return [Verdict.skipped("p_icl", rung, "needs ICL-model runs at finite K")]
    out = []
    for (N, K), sn in sorted(by_point(seeds).items()):
        ks = k_star.get(N)
        if len(sn) < MIN_SEEDS_POINT or ks is None or not np.all(np.isfinite(ks)):
            continue
        out.append(_p_icl_at(N, K, sn, KStar(*ks), nu, nu_ci, rung, spread, slope))
    if out:
        return out
    if not any(np.all(np.isfinite(k_star[s.N])) for s in seeds if s.N in k_star):
        return [Verdict.skipped("p_icl", rung, "needs K*(N) measured at the N of these runs (K* measured at N = "
                                f"{', '.join(f'{N:g}' for N in sorted(k_star)) or 'none'})")]
    return [inconclusive("p_icl", rung, [f">= {MIN_SEEDS_POINT} seeds at one finite (N, K) whose N has K*(N) measured"])]


def _threshold_spreads(sn, spread: Estimate | None, slope: Estimate | None) -> tuple[dict, float]:
    """The available measures of sd(log theta), best first ({name: ThresholdSpread}), and
    the seeds' sd(beta0_eff) (NaN with < 5 finite)."""
    b0 = np.array([s.beta0 for s in sn], float)
    sd_b = float(np.nanstd(b0, ddof=1)) if np.isfinite(b0).sum() >= 5 else math.nan
    forms = {}
    if spread is not None:
        g, (lo, hi) = spread
        forms["threshold spread"] = ThresholdSpread(g, [g, lo, hi], f"sd(log t_ICL) at K = inf = {g:.3f} [{lo:.3f}, "
                                                    f"{hi:.3f}], seeds censored there left out, which biases it low")
    if sd_b > 0:
        if slope is not None:
            sl = [abs(slope.value), *(abs(x) for x in slope.ci)]
            forms["beta_eff calibrated"] = ThresholdSpread(
                sl[0] * sd_b, [x * sd_b for x in sl],
                f"|d log t / d beta0_eff| = {sl[0]:.2f} [{min(sl[1:]):.2f}, {max(sl[1:]):.2f}] x sd(beta0_eff) = "
                f"{sd_b:.3f}")
        forms["beta_eff uncalibrated"] = ThresholdSpread(sd_b, [sd_b, 2 * sd_b],
                                                         f"m x sd(beta0_eff) = {sd_b:.3f}, m = 1 or 2")
    return forms, sd_b


def _p_icl_at(N, K, sn, ks: KStar, nu, nu_ci, rung, spread, slope) -> Verdict:
    """:func:`p_icl_from_k_star` at one (N, K) (``sn``: its seeds)."""
    from scipy.stats import norm

    where = f"{rung}, N = {N:g}, K = {K:g}"
    forms, sd_b = _threshold_spreads(sn, spread, slope)
    if not forms:
        return Verdict.skipped("p_icl", where, "needs the K = inf onset spread, or seeds whose beta0_eff vary")
    nus = [nu] if not nu_ci else [nu_ci[0], nu, nu_ci[1]]
    res = {}
    for name, f in forms.items():
        cand = [float(norm.cdf(v * math.log(K / kk) / g)) for v in nus for g in f.sds for kk in ks]
        res[name] = PIclForm((min(cand), max(cand)), float(norm.cdf(nu * math.log(K / ks.k_star) / f.sd)), f.basis)
    primary = next(iter(res))
    pred, point, what = res[primary]
    n, k = len(sn), sum(s.observed for s in sn)
    lo, hi = fits.wilson_interval(k, n)
    overlap = pred[0] <= hi and pred[1] >= lo
    informative = pred[1] - pred[0] < 0.8
    verdict, band = _fraction_verdict(pred, k, n, overlap)
    verdict = verdict if informative or not overlap else "inconclusive"
    reason = (f"K*(N = {N:g}) = {ks.k_star:.0f} [{ks.lo:.0f}, {ks.hi:.0f}] from the K* sweep at this horizon, "
              f"nu = {nu:.2f}" + (f" [{nu_ci[0]:.2f}, {nu_ci[1]:.2f}]" if nu_ci else "")
              + f"; {primary}: {what}; point prediction {point:.2f} (estimates); the predicted range "
              f"{'overlaps' if overlap else 'misses'} the measured interval" + band)
    others = [f"{name} ({r.basis}): {r.predicted[0]:.2f} - {r.predicted[1]:.2f} (point {r.point:.2f})"
              for name, r in res.items() if name != primary]
    if others:
        reason += ". Other forms: " + "; ".join(others)
    if not informative and overlap:
        reason = ("the predicted range is wider than 0.8 (K* is known only to within its interval, and a narrow "
                  "threshold spread makes P(ICL) steep in K): nothing is tested. ") + reason
    return Verdict(prediction="p_icl", rung=where, predicted=f"{pred[0]:.2f} - {pred[1]:.2f} (point {point:.2f})",
                   measured=f"{k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}]", metric="prediction vs 95% Wilson interval",
                   verdict=verdict, reason=reason,
                   details={"predicted": pred, "point": point, "measured": [k, n], "interval": [lo, hi],
                            "k_star": list(ks), "nu": nu, "sd_beta0_eff": sd_b, "form": primary,
                            "forms": {name: {"predicted": r.predicted, "point": r.point, "basis": r.basis}
                                      for name, r in res.items()}})
