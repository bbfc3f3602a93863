"""The scale ladder (issue 14): K*(N) measured at a horizon relative to each N's own K = inf
onset, K* predicted from the transformer's own in-situ c1(t), the local slopes d log K*/d log N
against 1/nu, and the drive ratio at onset; every analysis per (model, width) group, so that
each model kind of a sweep (the transformer, its ablations) gets its own rows.

Units: times in iterations; the drive I = lr * integral c1 dt in learning-rate time; N in
context tokens (the target not counted); K in items.

**The horizon rule** (:func:`relative_horizon`).  K*(N, T) is where half the seeds have
acquired ICL by the horizon T.  I_K(T) grows with T, so K* falls as T grows, and a fixed
horizon measures K* at a different *relative* time at each N: 8000 iterations is 7.0, 3.4
and 1.5 times the K = inf median onset at N = 9, 19, 39 (t_ICL ~ 141 N at width 128, lr 0.05).
The ladder measures K*(N) at T(N) = :data:`HORIZON_MULTIPLE` x the Kaplan-Meier median t_ICL
of the K = inf seeds at that N.  Why 3:

* the K = inf onset spread is small (sd of log t_ICL ~ 0.1), so 1.5 x the median is already
  beyond nearly every K = inf seed (4 sd): any multiple >= 1.5 sees the whole threshold
  distribution;
* finite-K onsets come later, because the drive grows at lr c1 < lr / 2.  With
  c1 = exp(-t / tau_K) / 2 a seed reaches the K = inf threshold lr t_inf / 2 by T = m t_inf
  iff tau_K (1 - exp(-m t_inf / tau_K)) >= t_inf, so K*(T) sits where tau_K / t_inf = x(m),
  the root of x (1 - exp(-m / x)) = 1: x = 1.71, 1.25, 1.06, 1.02 at m = 1.5, 2, 3, 4 (1 as
  m -> inf).  With tau_K ~ K^nu, K*(T) / K*(inf) = x^(1/nu) = 2.4, 1.45, 1.10, 1.03 at
  1/nu = 1.64: the theory's K*(T) converges as T grows once c1 has decayed;
* x depends on m alone, so a *fixed multiple* gives the same factor at every N and leaves
  the slope d log K*/d log N unbiased whatever m is; a fixed horizon does not (m = 7.0 to
  1.5 above: factors 1.0 to 2.5, a slope too steep by about 0.6 from N = 9 to 39 in this
  model).  m = 3 puts K* within 10 % of its T -> inf value (a quarter of a sqrt(2) step
  of the K grid), and an error of 1/6 in the median moves it by less than 10 %;
* the cost grows linearly with m (seeds that never acquire run to the cap); the
  ``scale_ladder`` preset caps its runs at 4 x 141 N iterations (or 8000, whichever is
  larger), which leaves room for a measured median up to 1/3 above the per-token law and
  for K* at the old fixed horizon, reported beside (:data:`FIXED_HORIZON`) to show its bias.

Runs log ICL accuracy over time, so a run capped later is cut back to any T; a seed that
never acquired and whose run ended before T has an unknown outcome at T, and K* at T is then
not measured (never guessed).

**The in-situ predictor** (:func:`predicted_k_star_in_situ`).  The threshold theta(N) is the
K = inf seeds' median drive at onset (:func:`icl_kinetics.validate.drive.k_inf_drives`, the
same number as ``drive_at_onset``'s).  Each finite-K seed's drive I(T) comes from its own
logged c1 rows (:func:`in_situ_drive`); after the seed's own ICL onset c1 is held at its value
at onset, so that ICL's own effect on c1 (the head answers the training sequences and the
MLP's residual error stops mattering) does not enter, and early-stopped seeds need no c1
after they stopped.  Predicted: a seed acquires by T iff I(T) >= theta(N); K* where the
predicted fraction crosses 1/2 (the sigmoid fit of the measured K*, :func:`fit_k_star`), with
a bootstrap over seeds (K = inf seeds for theta, finite-K seeds within each K) for its
interval.  That is the theory's independence claim put as a prediction: K* from memorization
kinetics alone.

**In-situ memorization against the MLP alone** (:func:`memorization_in_situ`).  The slope
1/nu takes nu from the standalone MLP.  Whether the MLP inside the transformer memorizes as
the standalone one does is measured directly: at each K of a point, the median I_K(T) of the
seeds that had not acquired ICL by T (pure memorization: no hold at onset) against the
standalone MLP's I_K(T) at the same T, interpolated in log K-log I between the MLP's K.  When
the MLP runs end before the point's horizon, the two are compared at the MLP runs' last
evaluation instead (the time used is reported).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from icl_kinetics.validate import fits
from icl_kinetics.validate.core import SeedSummary, Verdict, i_k, number, seed_summaries
from icl_kinetics.validate.k_star import (
    SLOPE_TOLERANCE, slope_with_interval, widened_interval, fit_k_star, k_star_at_horizon, measured_k_star_interval,
)

#: the horizon T(N) = HORIZON_MULTIPLE x the K = inf median t_ICL at N (module docstring)
HORIZON_MULTIPLE = 3.0
#: the old fixed horizon of fig6a and kstar_slope (iterations), reported beside to show its bias
FIXED_HORIZON = 8000.0
#: bootstrap resamples of the in-situ predicted K* and of the drive ratio
N_BOOT = 200

_NAN = math.nan


class Horizon(NamedTuple):
    """A relative horizon: ``horizon`` (iterations; NaN when the median is censored or there
    are no K = inf seeds), the K = inf ``median`` t_ICL (iterations), ``seeds`` and
    ``acquired`` (K = inf seeds counted)."""

    horizon: float
    median: float
    seeds: int
    acquired: int


class InSituKStar(NamedTuple):
    """K* (items) predicted from in-situ c1 at one N and horizon: ``k_star`` with its interval
    ``lo``, ``hi`` (the bootstrap's 95 % interval widened to the K grid; lo = 0 when every K is
    predicted to acquire, hi = inf when none is); ``theta`` (learning-rate time), the predicted
    ``fraction`` per K, the finite-K ``seeds`` used and those ``unknown`` (c1 rows ending before
    T), ``n_boot_ok`` of the resamples, and ``reason`` ("" when K* was fitted)."""

    k_star: float
    lo: float
    hi: float
    theta: float
    fraction: dict
    seeds: int
    unknown: int
    n_boot_ok: int
    reason: str


class LocalSlope(NamedTuple):
    """d log K*/d log N between ``N1`` and ``N2`` (context tokens): ``slope`` and its 95 % range
    (``lo``, ``hi``) from the two K* intervals (:func:`k_star.slope_with_interval`)."""

    N1: float
    N2: float
    slope: float
    lo: float
    hi: float


# ----------------------------------------------------------------------------- helpers
def width_of(seed: SeedSummary) -> float:
    """The seed's MLP width (the collected table's ``width`` column; NaN when the table has none)."""
    return number(seed.rows[0].get("width")) if seed.rows else _NAN


def group_of(seed: SeedSummary) -> tuple:
    """(model, width) of a seed: the ladder's unit of analysis (width NaN -> None)."""
    w = width_of(seed)
    return (seed.model, None if math.isnan(w) else w)


def group_label(group: tuple) -> str:
    """A (model, width) group in words, e.g. 'transformer, width 128'."""
    model, width = group
    name = model if model not in (None, "") else "ICL model"
    return name if width is None else f"{name}, width {width:g}"


def _table_of(seeds) -> dict:
    """A tidy table (dict of columns) of the rows of ``seeds`` (they come from one table: the
    same columns)."""
    rows = [r for s in seeds for r in s.rows]
    keys = list(dict.fromkeys(k for r in rows[:1] for k in r))
    return {k: [r.get(k) for r in rows] for k in keys}


def _horizon(inf: list, multiple: float) -> Horizon:
    if not inf:
        return Horizon(_NAN, _NAN, 0, 0)
    km = fits.censored_quantile([s.time for s in inf], [s.observed for s in inf], 0.5, n_boot=0)
    med = km.value if km.value is not None else _NAN
    return Horizon(multiple * med, med, len(inf), sum(s.observed for s in inf))


def relative_horizon(table_inf, N: float, multiple: float = HORIZON_MULTIPLE) -> float:
    """The horizon T(N) = ``multiple`` x the Kaplan-Meier median t_ICL (iterations) of the
    K = inf seeds at ``N`` (context tokens) in ``table_inf`` (ICL-model rows; a seed still
    without ICL at its last evaluation is censored there, as in ``onset_times`` and
    ``drive_at_onset``).  NaN when there is no K = inf seed at N or fewer than half acquired
    (the Kaplan-Meier distribution never reaches 1/2: the median is censored, no horizon).
    Why the default multiple 3: module docstring and docs/validation.md, "The scale ladder".

    Raises:
        ParameterError: ``N`` not a number > 0, ``multiple`` not a number > 0."""
    from icl_kinetics.errors import positive_float

    N = positive_float("N", N)
    multiple = positive_float("multiple", multiple)
    inf = [s for s in seed_summaries(table_inf) if s.icl_model and s.infinite_k and s.N == N]
    return _horizon(inf, multiple).horizon


def in_situ_drive(seed: SeedSummary, horizon: float) -> float:
    """A finite-K seed's drive I(T) = lr * integral_0^T c1 dt (learning-rate time) at
    T = ``horizon`` (iterations), from its own logged c1 rows: the trapezoid rule over its
    evaluations (:func:`icl_kinetics.validate.core.i_k`), c1 linear between evaluations; after
    the seed's own ICL onset c1 is held at its value at onset (ICL's own effect on c1 does not
    enter).  NaN when the c1 rows end before min(T, onset): a run that stopped without ICL
    before T, whose drive at T is unknown."""
    it, c1 = seed.series("iteration"), seed.series("c1")
    ok = np.isfinite(it) & np.isfinite(c1)
    it, c1 = it[ok], c1[ok]
    if it.size == 0 or not np.isfinite(seed.lr):
        return _NAN
    stop = min(horizon, seed.t_icl) if seed.observed else horizon
    if it[-1] < stop or it[0] > stop:
        return _NAN
    j = int(np.searchsorted(it, stop, side="right")) - 1  # the last evaluation at or before stop
    drive = i_k(seed, until=stop) if j >= 1 else 0.0
    if it[j] < stop:  # the piece from that evaluation to stop, c1 linear between evaluations
        drive += seed.lr * (stop - it[j]) * (c1[j] + float(np.interp(stop, it, c1))) / 2
    if seed.observed and seed.t_icl < horizon:  # held at its value at onset
        drive += seed.lr * float(np.interp(seed.t_icl, it, c1)) * (horizon - seed.t_icl)
    return float(drive)


def _bound(fraction: dict) -> tuple | None:
    """(lo, hi) of K* (items) when every K is on one side of 1/2: (0, min K) when all acquire,
    (max K, inf) when none does; None otherwise."""
    if not fraction:
        return None
    f = np.array(list(fraction.values()), float)
    if (f >= 0.5).all() and f.min() >= 0.9:
        return (0.0, float(min(fraction)))
    if (f < 0.5).all() and f.max() <= 0.1:
        return (float(max(fraction)), math.inf)
    return None


def _one_sided(fit, fraction: dict) -> tuple | None:
    """A one-sided K* interval (items) when the sigmoid's midpoint lies outside the K window
    (an extrapolation: (0, min K) below it, (max K, inf) above) or no transition is in the
    window (:func:`_bound`); None when neither says where K* is."""
    if fraction and np.isfinite(fit.k_star):
        return (0.0, float(min(fraction))) if fit.k_star < min(fraction) else (float(max(fraction)), math.inf)
    return _bound(fraction)


def _side(b) -> str:
    return "K* below the K window" if b[0] == 0 else "K* above the K window"


def _fractions(Ks, y) -> dict:
    Ks, y = np.asarray(Ks, float), np.asarray(y, float)
    return {float(K): float(y[Ks == K].mean()) for K in np.unique(Ks)}


# ----------------------------------------------------------------------------- the in-situ predictor
def _predict(fin: list, inf: list, horizon: float, n_boot: int, seed: int) -> InSituKStar:
    from icl_kinetics.validate.drive import k_inf_drives

    xi, theta = k_inf_drives(inf)
    drives = np.array([in_situ_drive(s, horizon) for s in fin], float)
    known = np.isfinite(drives)
    Ks, I = np.array([s.K for s in fin], float)[known], drives[known]
    unknown = int((~known).sum())
    if not np.isfinite(theta):
        return InSituKStar(_NAN, _NAN, _NAN, theta, {}, int(known.sum()), unknown, 0,
                           "no threshold: the K = inf median drive at onset is censored (or no K = inf seed)")
    if unknown:  # leaving them out would keep only the seeds that acquired early: a biased prediction
        return InSituKStar(_NAN, _NAN, _NAN, theta, {}, int(known.sum()), unknown, 0,
                           f"{unknown} of {len(fin)} finite-K seeds never acquired and their c1 rows end before "
                           f"T = {horizon:.0f}: their drive at T is unknown")
    if np.unique(Ks).size < 3:
        return InSituKStar(_NAN, _NAN, _NAN, theta, _fractions(Ks, I >= theta), int(known.sum()), unknown, 0,
                           "finite-K seeds with a known drive at T at fewer than 3 K")
    y = (I >= theta).astype(float)
    frac = _fractions(Ks, y)
    fit = fit_k_star(np.log10(Ks), y, n_boot=0)
    if not np.isfinite(fit.k_star) or fit.reason:
        bound = _one_sided(fit, frac)
        lo, hi = bound if bound else (_NAN, _NAN)
        why = f"predicted: {_side(bound)} ({fit.reason})" if bound else f"no K* fitted: {fit.reason}"
        return InSituKStar(_NAN, lo, hi, theta, frac, int(known.sum()), unknown, 0, why)
    rng = np.random.default_rng(seed)
    inf_i = np.array([v.i_k for v in xi], float)
    inf_obs = np.array([v.observed for v in xi], bool)
    by_k = [np.flatnonzero(Ks == K) for K in np.unique(Ks)]
    x = np.log10(Ks)
    bounds, p0 = fits.sigmoid_bounds(x), (fit.a, fit.b, fit.c, fit.d)
    boot = []
    for _ in range(n_boot):  # each resample refitted from the fit's parameters, as sigmoid_fit's own bootstrap
        ii = rng.integers(0, inf_i.size, inf_i.size)
        q = fits.censored_quantile(inf_i[ii], inf_obs[ii], 0.5, n_boot=0).value
        idx = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in by_k])
        if q is None:
            continue
        res = fits.fit_sigmoid_once(x[idx], (I[idx] >= q).astype(float), p0, bounds)
        if res is not None and x.min() <= res.params[1] <= x.max():
            boot.append(float(10.0 ** res.params[1]))
    ci = tuple(float(v) for v in np.percentile(boot, [2.5, 97.5])) if len(boot) >= max(1, n_boot // 2) \
        else (fit.k_star, fit.k_star)
    lo, hi = measured_k_star_interval(replace(fit, k_star_ci=ci), Ks)
    return InSituKStar(float(fit.k_star), lo, hi, theta, frac, int(known.sum()), unknown, len(boot), "")


def predicted_k_star_in_situ(table_finite, table_inf, N: float, horizon: float, n_boot: int = N_BOOT,
                             seed: int = 0) -> InSituKStar:
    """K*(N, T) (items) predicted from the transformer's own in-situ c1(t) (module docstring):
    each finite-K seed at ``N`` (context tokens) in ``table_finite`` acquires ICL by
    T = ``horizon`` (iterations) iff its drive :func:`in_situ_drive` reaches theta(N), the
    Kaplan-Meier median drive at onset of the K = inf seeds at N in ``table_inf``
    (learning-rate time); K* where the predicted fraction crosses 1/2 (:func:`fit_k_star`),
    its interval from ``n_boot`` resamples (``numpy.random.default_rng(seed)``) of the K = inf
    seeds and of the finite-K seeds within each K, widened to the K grid.  One model and width
    per table (the ladder groups them, :func:`ladder_checks`).

    Raises:
        ParameterError: ``N`` or ``horizon`` not a number > 0, ``n_boot`` not an integer >= 0."""
    from icl_kinetics.errors import positive_float, positive_int

    N = positive_float("N", N)
    horizon = positive_float("horizon", horizon)
    n_boot = positive_int("n_boot", n_boot, minimum=0)
    fin = [s for s in seed_summaries(table_finite) if s.icl_model and s.finite_k and s.N == N]
    inf = [s for s in seed_summaries(table_inf) if s.icl_model and s.infinite_k and s.N == N]
    return _predict(fin, inf, horizon, n_boot, seed)


def drive_ratio(fin: list, inf: list, n_boot: int = N_BOOT, seed: int = 0) -> tuple:
    """(ratio, (lo, hi), n): the median drive at onset (learning-rate time, c1 measured in situ)
    of the finite-K seeds that acquired ICL, over theta(N), the K = inf seeds' median drive at
    onset; its 95 % interval from ``n_boot`` resamples of both sets of seeds; n acquiring
    seeds.  The theory says 1.  Near K* the seeds that acquire are those with the lower
    thresholds, so this ratio is biased below 1 by selection; ``drive_at_onset``'s test 1
    (at the K where every seed acquired) is not, and gives the verdict."""
    from icl_kinetics.validate.drive import k_inf_drives

    xi, theta = k_inf_drives(inf)
    acq = np.array([i_k(s, until=s.t_icl) for s in fin if s.observed], float)
    acq = acq[np.isfinite(acq) & (acq > 0)]
    if acq.size == 0 or not np.isfinite(theta) or theta <= 0:
        return _NAN, (_NAN, _NAN), int(acq.size)
    rng = np.random.default_rng(seed)
    inf_i = np.array([v.i_k for v in xi], float)
    inf_obs = np.array([v.observed for v in xi], bool)
    boot = []
    for _ in range(n_boot):
        ii = rng.integers(0, inf_i.size, inf_i.size)
        q = fits.censored_quantile(inf_i[ii], inf_obs[ii], 0.5, n_boot=0).value
        if q is not None and q > 0:
            boot.append(float(np.median(acq[rng.integers(0, acq.size, acq.size)])) / q)
    ci = tuple(float(v) for v in np.percentile(boot, [2.5, 97.5])) if boot else (_NAN, _NAN)
    return float(np.median(acq)) / theta, ci, int(acq.size)


# ----------------------------------------------------------------------------- local slopes
def local_slopes(Ns, k_stars, intervals) -> list[LocalSlope]:
    """d log K*/d log N over each adjacent pair of ``Ns`` (context tokens, sorted here) with a
    K* (items; NaN or a non-positive value skips the pair), with the 95 % range that the two K*
    ``intervals`` [(lo, hi), ...] allow (log-uniform draws within each, seed 0:
    :func:`k_star.slope_with_interval`)."""
    order = np.argsort(np.asarray(Ns, float))
    pts = [(float(Ns[i]), float(k_stars[i]), tuple(map(float, intervals[i]))) for i in order]
    out = []
    for (n1, k1, i1), (n2, k2, i2) in zip(pts, pts[1:]):
        ok = all(np.isfinite(v) and v > 0 for v in (k1, k2, *i1, *i2)) and n2 > n1
        if not ok:
            continue
        s, (lo, hi), _ = slope_with_interval([n1, n2], [k1, k2], [i1, i2])
        out.append(LocalSlope(n1, n2, s, lo, hi))
    return out


def _band(inv_nu: float, inv_nu_ci) -> tuple:
    """k_star_scaling's tolerance band around 1/nu: its interval widened by SLOPE_TOLERANCE / nu."""
    tol = SLOPE_TOLERANCE * inv_nu
    return (inv_nu_ci[0] - tol, inv_nu_ci[1] + tol)


# ----------------------------------------------------------------------------- one point, one pair
def _k_star_at(fin: list, N: float, T: float, n_boot: int = N_BOOT) -> tuple:
    """(KStar or None, (lo, hi) bound or None, why) of K* measured at horizon T (iterations)
    from the finite-K seeds ``fin`` at N: :func:`k_star_at_horizon`; not measured when a seed
    that never acquired stopped before T (its outcome at T is unknown)."""
    if not fin or not np.isfinite(T):
        return None, None, "no horizon" if fin else "no finite-K seeds"
    short = [s for s in fin if not s.observed and s.cap < T]
    if short:
        return None, None, (f"{len(short)} of {len(fin)} seeds never acquired and stopped before T = {T:.0f} "
                            f"(at {min(s.cap for s in short):.0f} iterations): their outcome at T is unknown")
    ks = k_star_at_horizon(_table_of(fin), T, n_boot).get(N)
    if ks is not None:
        return ks, None, ""
    y = [float(s.observed and s.t_icl <= T) for s in fin]
    fit = fit_k_star([math.log10(s.K) for s in fin], y, n_boot=0)
    b = _one_sided(fit, _fractions([s.K for s in fin], y))
    if b is not None:
        return None, b, f"{_side(b)} ({fit.reason})"
    return None, None, f"no K* fitted: {fit.reason or 'the fit failed'}"


def _interval(ks, bound) -> list:
    """[K*, lo, hi] (items) of a measured K* or a one-sided bound ([NaN, lo, hi]); NaNs when none."""
    if ks is not None:
        return [float(ks.k_star), float(ks.lo), float(ks.hi)]
    if bound is not None:
        return [_NAN, float(bound[0]), float(bound[1])]
    return [_NAN, _NAN, _NAN]


def _fmt(iv) -> str:
    k, lo, hi = iv
    if np.isfinite(k):
        return f"{k:.0f} [{lo:.0f}, {hi:.0f}]"
    if lo == 0:
        return f"< {hi:.0f}"
    if np.isfinite(lo) and math.isinf(hi):
        return f"> {lo:.0f}"
    return "-"


def _point(group: tuple, N: float, sn: list, nu, multiple: float, fixed: float, n_boot: int,
           mlp: list = ()) -> Verdict:
    """``k_star_in_situ`` at one (group, N): K* at the relative horizon and at the fixed one,
    predicted from in-situ c1, the drive ratio, and the verdict."""
    from icl_kinetics.validate.requirements import in_situ_point_lacks, inconclusive

    label = group_label(group)
    rung = f"{label}, N = {N:g}"
    fin = [s for s in sn if s.finite_k]
    inf = [s for s in sn if s.infinite_k]
    hz = _horizon(inf, multiple)
    T = hz.horizon
    lacks = in_situ_point_lacks(N, fin, inf, where=f" ({label})")
    end_lacks = in_situ_point_lacks(N, fin, inf, where=f" ({label})", c1=False)
    # below the minimum nothing is fitted (K* needs the K = inf and K* minimums, the rest c1 too)
    below = "below the minimum"
    rel, rel_b, rel_why = _k_star_at(fin, N, T, n_boot) if not end_lacks else (None, None, below)
    fx, fx_b, fx_why = _k_star_at(fin, N, fixed, n_boot) if not end_lacks else (None, None, below)
    pred = _predict(fin, inf, T, n_boot, 0) if not lacks and np.isfinite(T) else None
    ratio, ratio_ci, n_acq = drive_ratio(fin, inf, n_boot) if not lacks else (_NAN, (_NAN, _NAN), 0)
    k_rel, k_fix = _interval(rel, rel_b), _interval(fx, fx_b)
    k_pred = [pred.k_star, pred.lo, pred.hi] if pred else [_NAN, _NAN, _NAN]
    inv_nu = [1 / nu.value, 1 / nu.ci[1], 1 / nu.ci[0]] if nu else None
    details = {"model": group[0], "width": group[1], "N": N, "multiple": multiple, "horizon": T,
               "k_inf_median_t_icl": hz.median, "k_inf_seeds": hz.seeds, "k_inf_acquired": hz.acquired,
               "finite_k_seeds": len(fin), "K": sorted({s.K for s in fin}),
               "k_star_relative": k_rel, "k_star_relative_note": rel_why,
               "fixed_horizon": fixed, "k_star_fixed": k_fix, "k_star_fixed_note": fx_why,
               "k_star_predicted": k_pred, "theta": pred.theta if pred else _NAN,
               "predicted_fraction": {f"{k:g}": v for k, v in (pred.fraction if pred else {}).items()},
               "predicted_note": pred.reason if pred else (below if lacks else "no horizon"),
               "seeds_unknown_at_T": pred.unknown if pred else 0, "n_boot_ok": pred.n_boot_ok if pred else 0,
               "drive_ratio": ratio, "drive_ratio_ci": list(ratio_ci), "drive_ratio_seeds": n_acq,
               "inv_nu": inv_nu, "memorization_in_situ": _memorization_point(fin, list(mlp), T)}
    fdata = {"group": label, "model": group[0], "width": group[1], "N": N, "horizon": T, "multiple": multiple,
             "k_rel": k_rel,
             "k_fixed": k_fix, "k_pred": k_pred, "drive_ratio": [ratio, *ratio_ci], "inv_nu": inv_nu}
    shown = {"predicted": f"{_fmt(k_pred)} (in-situ c1, T = {T:.0f} it)" if np.isfinite(T) else "-",
             "measured": f"{_fmt(k_rel)} at T; {_fmt(k_fix)} at {fixed:.0f} it"}
    details["slope_end_lacks"] = end_lacks
    if lacks:
        return inconclusive("k_star_in_situ", rung, lacks, details=details, figure_data=fdata, **shown)
    lo_p, hi_p = k_pred[1], k_pred[2]
    mlo, mhi = k_rel[1], k_rel[2]
    Ks = [s.K for s in fin]
    if not (np.isfinite(lo_p) and np.isfinite(mlo)):
        verdict = "inconclusive"
        reason = "; ".join(x for x in (f"measured: {rel_why}" if not np.isfinite(mlo) else "",
                                       f"predicted: {pred.reason}" if not np.isfinite(lo_p) else "") if x)
    else:
        overlap = lo_p <= mhi and hi_p >= mlo
        wlo, whi = widened_interval(mlo, mhi, Ks)
        far = hi_p < wlo or lo_p > whi
        verdict = "holds" if overlap else ("does not hold" if far else "inconclusive")
        reason = (f"predicted {_fmt(k_pred)}, measured {_fmt(k_rel)} at T: the intervals "
                  f"{'overlap' if overlap else 'do not overlap'}"
                  + ("" if overlap else f", and the prediction {'misses' if far else 'lies within'} the measured "
                     f"interval widened by one K grid step ([{wlo:.0f}, {whi:.0f}])"))
    reason += (f". Horizon T = {multiple:g} x the K = inf median t_ICL {hz.median:.0f} = {T:.0f} iterations "
               f"({hz.acquired} of {hz.seeds} K = inf seeds acquired); threshold theta = {details['theta']:.3g} "
               f"(K = inf median drive at onset). At the fixed {fixed:.0f} iterations: K* {_fmt(k_fix)}"
               + (f" ({fx_why})" if fx_why and not np.isfinite(k_fix[1]) else "")
               + (f". Drive ratio (median drive at onset of the {n_acq} acquiring finite-K seeds / theta): "
                  f"{ratio:.2f} [{ratio_ci[0]:.2f}, {ratio_ci[1]:.2f}]" if np.isfinite(ratio) else ""))
    return Verdict(prediction="k_star_in_situ", rung=rung, metric="interval overlap (95% bootstrap CIs widened to "
                   "the K grid; does not hold beyond one grid step)", verdict=verdict, reason=reason,
                   details=details, figure_data=fdata, **shown)


def _pair(group: tuple, a: Verdict, b: Verdict, nu) -> Verdict:
    """``k_star_local_slope`` between two adjacent N of a group (their k_star_in_situ verdicts)."""
    from icl_kinetics.validate.requirements import inconclusive

    da, db = a.details, b.details
    N1, N2 = da["N"], db["N"]
    rung = f"{group_label(group)}, N = {N1:g} -> {N2:g}"

    def slope(key):
        s = local_slopes([N1, N2], [da[key][0], db[key][0]], [da[key][1:], db[key][1:]])
        return s[0] if s else None

    rel, fx, pr = slope("k_star_relative"), slope("k_star_fixed"), slope("k_star_predicted")
    inv = (1 / nu.value, (1 / nu.ci[1], 1 / nu.ci[0])) if nu else None
    details = {"model": group[0], "width": group[1], "N1": N1, "N2": N2,
               "slope": list(rel)[2:] if rel else [_NAN, _NAN, _NAN],
               "slope_fixed": list(fx)[2:] if fx else [_NAN, _NAN, _NAN],
               "slope_predicted": list(pr)[2:] if pr else [_NAN, _NAN, _NAN],
               "inv_nu": [inv[0], *inv[1]] if inv else None}
    predicted = f"1/nu = {inv[0]:.2f} [{inv[1][0]:.2f}, {inv[1][1]:.2f}]" if inv else "1/nu (not measured)"
    measured = f"{rel.slope:.2f} [{rel.lo:.2f}, {rel.hi:.2f}]" if rel else "-"
    extra = ("" if not fx else f"; at the fixed {da['fixed_horizon']:.0f} it: {fx.slope:.2f} [{fx.lo:.2f}, "
             f"{fx.hi:.2f}]") + ("" if not pr else f"; predicted from in-situ c1: {pr.slope:.2f} [{pr.lo:.2f}, "
                                 f"{pr.hi:.2f}]")
    lacks = [x for d in (da, db) for x in d["slope_end_lacks"]]
    if not rel and not lacks:
        lacks.append(f"K* at the relative horizon at both N = {N1:g} and {N2:g} (" + "; ".join(
            f"N = {d['N']:g}: {d['k_star_relative_note'] or 'a one-sided bound only'}" for d in (da, db)
            if not np.isfinite(d["k_star_relative"][0])) + ")")
    if not inv:
        lacks.append(f"nu from memorization_law holding on MLP runs (model = mlp) at width "
                     f"{'?' if group[1] is None else f'{group[1]:g}'}")
    if lacks:
        return inconclusive("k_star_local_slope", rung, lacks, predicted=predicted, measured=measured + extra,
                            details=details, figure_data={})
    band = _band(inv[0], inv[1])
    inside = band[0] <= rel.lo and rel.hi <= band[1]
    outside = rel.hi < band[0] or rel.lo > band[1]
    verdict = "holds" if inside else ("does not hold" if outside else "inconclusive")
    details["band"] = list(band)
    reason = (f"d log K*/d log N = {rel.slope:.2f} [{rel.lo:.2f}, {rel.hi:.2f}] at the relative horizon{extra}; "
              f"1/nu = {inv[0]:.2f} (nu from the MLP at this width); tolerance band [{band[0]:.2f}, {band[1]:.2f}]: "
              + ("the measured interval lies inside it" if inside else "the measured interval lies outside it"
                 if outside else "the measured interval straddles its edge (too wide to decide)"))
    return Verdict(prediction="k_star_local_slope", rung=rung, predicted=predicted, measured=measured + extra,
                   metric="measured interval against 1/nu +- 0.25/nu", verdict=verdict, reason=reason,
                   details=details)


def _overall(group: tuple, pts: list, nu) -> list:
    """``k_star_local_slope`` over all N of a group with K* at the relative horizon (a power
    law through them, :func:`k_star.slope_with_interval`), when there are >= 3 such N; [] else."""
    good = [p.details for p in pts if np.isfinite(p.details["k_star_relative"][0]) and not p.details["slope_end_lacks"]]
    if len(good) < 3:
        return []
    Ns = [d["N"] for d in good]
    slope, (lo, hi), r2 = slope_with_interval(Ns, [d["k_star_relative"][0] for d in good],
                                               [d["k_star_relative"][1:] for d in good])
    rung = f"{group_label(group)}, N = {Ns[0]:g} ... {Ns[-1]:g} (all {len(Ns)} N)"
    details = {"model": group[0], "width": group[1], "N1": Ns[0], "N2": Ns[-1], "N": Ns, "all": True,
               "slope": [slope, lo, hi], "r2": r2, "slope_fixed": [_NAN] * 3, "slope_predicted": [_NAN] * 3,
               "inv_nu": None}
    measured = f"{slope:.2f} [{lo:.2f}, {hi:.2f}] (R^2 = {r2:.2f})"
    if not nu:
        from icl_kinetics.validate.requirements import inconclusive

        return [inconclusive("k_star_local_slope", rung, [
            f"nu from memorization_law holding on MLP runs (model = mlp) at width "
            f"{'?' if group[1] is None else f'{group[1]:g}'}"], predicted="1/nu (not measured)", measured=measured,
            details=details)]
    inv, inv_ci = 1 / nu.value, (1 / nu.ci[1], 1 / nu.ci[0])
    band = _band(inv, inv_ci)
    details.update(inv_nu=[inv, *inv_ci], band=list(band))
    inside, outside = band[0] <= lo and hi <= band[1], hi < band[0] or lo > band[1]
    verdict = "holds" if inside else ("does not hold" if outside else "inconclusive")
    return [Verdict(prediction="k_star_local_slope", rung=rung, predicted=f"1/nu = {inv:.2f} [{inv_ci[0]:.2f}, "
                    f"{inv_ci[1]:.2f}]", measured=measured, metric="measured interval against 1/nu +- 0.25/nu",
                    verdict=verdict, reason=f"a power law through K* at the relative horizon at N = "
                    f"{', '.join(f'{n:g}' for n in Ns)}: slope {slope:.2f} [{lo:.2f}, {hi:.2f}]; tolerance band "
                    f"[{band[0]:.2f}, {band[1]:.2f}]: " + ("inside" if inside else "outside" if outside else
                                                           "straddles its edge"), details=details)]


# ----------------------------------------------------------------------------- in-situ memorization
def memorization_in_situ(fin: list, mlp: list, horizon: float) -> dict:
    """The transformer's in-situ memorization against the standalone MLP's, at T = ``horizon``
    (iterations): per K (items) of the finite-K seeds ``fin`` (one model, width and N;
    :class:`SeedSummary`), the median drive I_K(T) = lr int_0^T c1 dt (learning-rate time) of
    the seeds that had not acquired ICL by T and whose c1 rows reach T, beside the median
    I_K(T) of the MLP seeds ``mlp`` (one width), interpolated linearly in (log K, log I)
    between the MLP's K (NaN outside their range, or when their rows end before T).

    Returns ``{"K": [...], "in_situ": [...], "seeds": [...], "mlp": [...], "ratio": [...]}``
    (ratio = in situ / MLP alone; K only where some seed had no ICL by T), or ``{}`` (also
    when ``horizon`` is NaN: no horizon, e.g. no K = inf onset).

    Raises:
        ParameterError: ``fin`` or ``mlp`` not sequences of :class:`SeedSummary`
            (:func:`seed_summaries` of a table), ``horizon`` not a number > 0 or NaN."""
    from icl_kinetics.errors import ParameterError, positive_float

    for name, seeds in (("fin", fin), ("mlp", mlp)):
        if isinstance(seeds, (str, bytes)) or not all(isinstance(x, SeedSummary) for x in seeds):
            raise ParameterError(name, seeds, "a sequence of SeedSummary (seed_summaries(table))")
    if isinstance(horizon, float) and math.isnan(horizon):
        return {}
    try:
        horizon = positive_float("horizon", horizon)
    except ParameterError:
        raise ParameterError("horizon", horizon, "a number > 0 (iterations), or NaN for no horizon") from None

    def drives(seeds) -> dict:  # {K: [I_K(T)]}; in_situ_drive holds nothing: no seed here had ICL by T
        out = defaultdict(list)
        for s in seeds:
            v = in_situ_drive(s, horizon)
            if np.isfinite(v) and v > 0:
                out[s.K].append(v)
        return out

    by_k = drives(s for s in fin if not (s.observed and s.t_icl <= horizon))
    if not by_k:
        return {}
    ms = drives(mlp)
    mk = np.array(sorted(ms), float)
    mi = np.array([np.median(ms[k]) for k in mk], float)
    Ks = sorted(by_k)
    ins = [float(np.median(by_k[k])) for k in Ks]
    alone = [float(np.exp(np.interp(math.log(k), np.log(mk), np.log(mi)))) if mk.size >= 2 and mk[0] <= k <= mk[-1]
             else _NAN for k in Ks]
    return {"K": [float(k) for k in Ks], "in_situ": ins, "seeds": [len(by_k[k]) for k in Ks], "mlp": alone,
            "ratio": [a / b if np.isfinite(b) else _NAN for a, b in zip(ins, alone)]}


def _memorization_point(fin: list, mlp: list, T: float) -> dict:
    """:func:`memorization_in_situ` at T, or at the MLP runs' last evaluation when they end
    before T (the ladder's MLP runs stop at 20000 iterations; N = 79's T is beyond), with the
    time compared as ``"T"`` (iterations)."""
    ends = [s.cap for s in mlp if np.isfinite(s.cap)]
    at = min(T, min(ends)) if ends and np.isfinite(T) else T
    m = memorization_in_situ(fin, mlp, at)
    return {**m, "T": at} if m else m


# ----------------------------------------------------------------------------- the whole ladder
def _mlp_at(mlp: list, width) -> list:
    """The MLP seeds at ``width`` (all of them when the table has no width; those without a
    width when none has this one)."""
    return [s for s in mlp if width is None or width_of(s) == width] or \
        ([s for s in mlp if math.isnan(width_of(s))] if width is not None else [])


def _nu_of(ms: list):
    """(nu Estimate or None, the memorization_law verdict or None) from MLP seeds of one width
    (:func:`_mlp_at`)."""
    from icl_kinetics.validate.memorization import measured_nu, memorization_law

    if not ms or not all(c in ms[0].rows[0] for c in ("c1", "lr", "K", "model")):
        return None, None
    v = memorization_law(_table_of(ms))
    return measured_nu(v), v


def _groups(seeds: list, expected) -> dict:
    """{(model, width): {N: [seeds]}}, with the expected (group, N) that have no seeds yet."""
    out = defaultdict(lambda: defaultdict(list))
    for s in seeds:
        if s.icl_model and np.isfinite(s.N) and (s.finite_k or s.infinite_k):
            out[group_of(s)][s.N].append(s)
    for g, Ns in (expected or {}).items():
        for N in Ns:
            out[g][float(N)]  # noqa: B018 (creates the empty entry)
    return out


def ladder_checks(table, expected: dict | None = None, *, multiple: float = HORIZON_MULTIPLE,
                  fixed_horizon: float = FIXED_HORIZON, n_boot: int = N_BOOT, full: bool = False) -> list[Verdict]:
    """The ladder's checks on a tidy table, per (model, width) group (width from the table's
    ``width`` column; one group per model without it): ``k_star_in_situ`` per N (K* at the
    relative horizon, at ``fixed_horizon``, predicted from in-situ c1, the drive ratio) and
    ``k_star_local_slope`` per adjacent pair of N (against 1/nu, nu from the MLP runs at the
    group's width) and over all its N with K* when there are >= 3.  ``expected`` ({(model,
    width): [N, ...]}, e.g. a preset's grid) adds the points without data yet, each
    "inconclusive: needs ...".  ``full`` (the preset report) adds ``memorization_law`` per MLP
    width and ``drive_at_onset`` per group.  ``n_boot``: bootstrap resamples of every K* fit and
    of the drive ratio.  Never raises on partial data: what cannot be measured is inconclusive,
    with the reason."""
    from icl_kinetics.errors import positive_float, positive_int

    multiple = positive_float("multiple", multiple)
    fixed_horizon = positive_float("fixed_horizon", fixed_horizon)
    n_boot = positive_int("n_boot", n_boot, minimum=0)
    seeds = seed_summaries(table)
    mlp = [s for s in seeds if not s.icl_model and s.finite_k]
    groups = _groups(seeds, expected)
    if not groups:  # never silently absent
        why = "needs ICL-model runs at finite K and at K = inf at a common N (of one model and width)"
        return [Verdict.skipped("k_star_in_situ", "ICL model", why), Verdict.skipped("k_star_local_slope", "ICL model",
                                                                                      why)]
    out, nus = [], {}
    for g in sorted(groups, key=lambda g: (str(g[0]), -1 if g[1] is None else g[1])):
        if g[1] not in nus:  # per width: its MLP seeds, and nu from them
            ms = _mlp_at(mlp, g[1])
            nus[g[1]] = (*_nu_of(ms), ms)
        nu, _, ms = nus[g[1]]
        pts = [_point(g, N, groups[g][N], nu, multiple, fixed_horizon, n_boot, ms) for N in sorted(groups[g])]
        out += pts + [_pair(g, a, b, nu) for a, b in zip(pts, pts[1:])] + _overall(g, pts, nu)
        if len(pts) < 2:  # no pair: say so, never silently absent
            from icl_kinetics.validate.requirements import inconclusive

            out.append(inconclusive("k_star_local_slope", group_label(g), [
                f"2 adjacent values of N (has {len(pts)}: N = {', '.join(f'{N:g}' for N in sorted(groups[g]))})"]))
        if full:
            out += _drive(g, groups[g])
    if full:
        mem = []
        for w, (_, v, _) in sorted(nus.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
            if v is not None:
                v.rung = "MLP alone" + ("" if w is None else f", width {w:g}")
                mem.append(v)
        out = mem + out
    return out


def _drive(group: tuple, by_n: dict) -> list:
    """``drive_at_onset`` on one group (its test 1 is the drive ratio's verdict)."""
    from icl_kinetics.validate.drive import drive_at_onset

    sn = [s for v in by_n.values() for s in v]
    fin, inf = [s for s in sn if s.finite_k], [s for s in sn if s.infinite_k]
    if not fin or not inf:
        return []
    return drive_at_onset(_table_of(fin), _table_of(inf), rung=group_label(group))


# ----------------------------------------------------------------------------- the summary
def summary(verdicts) -> dict:
    """The ladder's tidy summary from its verdicts: ``points`` (one row per (group, N): K* at
    the relative and the fixed horizon, predicted, the drive ratios, the verdicts) and
    ``slopes`` (one row per adjacent pair); {} when there is no ladder verdict."""
    drive = {v.rung: v for v in verdicts if v.prediction == "drive_at_onset"}
    points, slopes = [], []
    for v in verdicts:
        d = v.details
        if v.prediction == "k_star_in_situ" and "k_star_relative" in d:
            dv = drive.get(v.rung)
            points.append({"group": v.rung.rsplit(", N = ", 1)[0], "N": d["N"], "horizon": d["horizon"],
                           "k_inf_median_t_icl": d["k_inf_median_t_icl"], "k_star_relative": d["k_star_relative"],
                           "k_star_fixed": d["k_star_fixed"], "k_star_predicted": d["k_star_predicted"],
                           "drive_ratio": [d["drive_ratio"], *d["drive_ratio_ci"]],
                           "drive_ratio_all_acquiring_K": ([dv.details.get("ratio", _NAN), *dv.details.get(
                               "ratio_ci", (_NAN, _NAN))] if dv is not None else [_NAN, _NAN, _NAN]),
                           "verdict": v.verdict, "drive_verdict": dv.verdict if dv is not None else "-",
                           "memorization_in_situ": d.get("memorization_in_situ", {})})
        elif v.prediction == "k_star_local_slope" and "slope" in d:
            slopes.append({"group": v.rung.rsplit(", N = ", 1)[0], "N1": d["N1"], "N2": d["N2"],
                           "all": bool(d.get("all")), "slope": d["slope"],
                           "slope_fixed": d["slope_fixed"], "slope_predicted": d["slope_predicted"],
                           "inv_nu": d["inv_nu"], "verdict": v.verdict})
    return {"points": points, "slopes": slopes} if points or slopes else {}


def _iv(x) -> str:
    return _fmt(x) if len(x) == 3 else "-"


def _r(x) -> str:
    return f"{x[0]:.2f} [{x[1]:.2f}, {x[2]:.2f}]" if np.isfinite(x[0]) else "-"


def summary_markdown(s: dict) -> list[str]:
    """The summary (:func:`summary`) as markdown lines: the K* table and the local slopes."""
    if not s:
        return []
    lines = ["", "## The scale ladder", "",
             f"K* in items; T = {HORIZON_MULTIPLE:g} x the K = inf median t_ICL (iterations); drive ratios: the median "
             "drive at onset of the acquiring finite-K seeds over the K = inf median (all acquiring seeds, biased low "
             "near K* by selection), and drive_at_onset's ratio at the K where every seed acquired.", "",
             "| group | N | K = inf median t_ICL | T | K*(T) | K* at the fixed horizon | K* predicted (in-situ c1) "
             "| verdict | drive ratio | drive ratio, all-acquiring K | drive verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in s.get("points", []):
        t = p["horizon"]
        lines.append(f"| {p['group']} | {p['N']:g} | {p['k_inf_median_t_icl']:.0f} | {t:.0f} | "
                     f"{_iv(p['k_star_relative'])} | {_iv(p['k_star_fixed'])} | {_iv(p['k_star_predicted'])} | "
                     f"{p['verdict']} | {_r(p['drive_ratio'])} | {_r(p['drive_ratio_all_acquiring_K'])} | "
                     f"{p['drive_verdict']} |")
    if s.get("slopes"):
        lines += ["", "| group | N | d log K*/d log N at T | at the fixed horizon | predicted (in-situ c1) | 1/nu | "
                  "verdict |", "|---|---|---|---|---|---|---|"]
        for q in s["slopes"]:
            inv = q["inv_nu"]
            span = f"{q['N1']:g} ... {q['N2']:g} (all)" if q.get("all") else f"{q['N1']:g} -> {q['N2']:g}"
            lines.append(f"| {q['group']} | {span} | {_r(q['slope'])} | {_r(q['slope_fixed'])} | "
                         f"{_r(q['slope_predicted'])} | {_r(inv) if inv else '-'} | {q['verdict']} |")
    mem = [p for p in s.get("points", []) if p.get("memorization_in_situ", {}).get("K")]
    if mem:
        lines += ["", "In-situ memorization against the MLP alone: at each K, the median I_K(T) (learning-rate time) "
                  "of the seeds without ICL by T, over the standalone MLP's I_K(T) at the same width and T "
                  "(interpolated in log K; T is the point's horizon, or the MLP runs' last evaluation when they "
                  "end before it); below 1, the MLP inside the transformer memorizes faster.", "",
                  "| group | N | T | K: in situ / MLP alone (seeds) |", "|---|---|---|---|"]
        for p in mem:
            m = p["memorization_in_situ"]
            cells = "; ".join(f"{k:.0f}: {a:.3g} / " + (f"{b:.3g} = {r:.2f}" if np.isfinite(b) else "-") + f" ({n})"
                              for k, a, b, r, n in zip(m["K"], m["in_situ"], m["mlp"], m["ratio"], m["seeds"]))
            lines.append(f"| {p['group']} | {p['N']:g} | {m.get('T', p['horizon']):.0f} | {cells} |")
    return lines + [""]


__all__ = ["FIXED_HORIZON", "HORIZON_MULTIPLE", "Horizon", "InSituKStar", "LocalSlope", "drive_ratio",
           "in_situ_drive", "ladder_checks", "local_slopes", "memorization_in_situ", "predicted_k_star_in_situ",
           "relative_horizon", "summary", "summary_markdown", "width_of"]
