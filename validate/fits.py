"""Statistical fits of the validation layer (numpy + scipy only; nothing here imports torch).

Units: ``K`` (number of tasks) is counted in items, ``t`` (training time) in iterations.
Every fit returns a frozen dataclass with ``to_dict()`` (plain floats, ints, strings,
lists, ``None``; NaN allowed, so ``json.dumps`` works with its default ``allow_nan``).
Every random draw comes from ``numpy.random.default_rng(seed)``: the same ``seed`` gives
the same numbers.  Bad input raises :class:`icl_kinetics.errors.ParameterError` naming
the offending parameter.

All confidence intervals are 95 % *percentile bootstrap* intervals: the observations
(or points, or (time, observed) pairs) are resampled with replacement ``n_boot`` times,
the fit is redone on each resample, and the 2.5 % and 97.5 % percentiles of the refitted
quantity are reported.  Resamples on which the fit is undefined or fails are skipped
and counted (``n_boot_ok``).  A CI says how much the estimate moves under resampling of
the data actually measured; it does not cover model misspecification.

Fits
----
``sigmoid_fit(log10_k, acc)``
    ``acc = c + d / (1 + exp(-a (x - b)))`` with ``x = log10 K`` (K in items), one
    observation per (run, seed); least squares (``scipy.optimize.curve_fit``) with
    ``0 < a <= 50``, ``0 <= c <= 1``, ``0 <= d <= 1``, ``min x - 1 <= b <= max x + 1``.
    ``k_star = 10**b`` (items) is the task-diversity threshold; ``k_star_ci`` is the
    bootstrap CI over observations (percentiles of ``b`` mapped through ``10**b``).
    ``reason`` flags "no transition in the K range" (then ``k_star`` is NaN) and
    "K* outside the measured range" (then ``k_star`` is an extrapolation).
``power_law_fit(x, y)``
    ``y = A x**p`` by ordinary least squares of ``ln y`` on ``ln x``; ``exponent_ci`` and
    ``amplitude_ci`` are bootstrap CIs over points; ``r2`` is computed in log space.
``linear_fit(x, y)``
    ``y = slope x + intercept`` by ordinary least squares; ``slope_ci`` is the bootstrap
    CI over points; ``linearity`` is the p-value of the F-test for adding a quadratic
    term (nested OLS) -- small means the data are curved.
``kaplan_meier(times, observed)`` / ``censored_quantile(times, observed, q)``
    Right-censored Kaplan--Meier survival of the event time (t in iterations; a
    censored run never acquired ICL before its cap), by ``scipy.stats.ecdf`` on
    ``scipy.stats.CensoredData``.  The q-quantile is the smallest
    event time t with ``1 - S(t) >= q``; ``ci`` is the bootstrap CI over
    (time, observed) pairs, whose ends are ``None`` when censored.
``ks_compare(samples, cdf)``
    One-sample Kolmogorov--Smirnov test against a vectorized CDF (``scipy.stats.kstest``).
``bimodality_coefficient(x)``
    Sarle's bimodality coefficient; values above 5/9 suggest bimodality.
``wilson_interval(k, n)``
    95 % Wilson score interval of a fraction (``scipy.stats.binomtest``).
``sd_interval(x)``
    95 % chi-square interval of a Normal sample's standard deviation.
``is_linear(fit)``
    The linearity verdict on a ``linear_fit``: R^2 >= 0.9 and quadratic-term p >= 0.01.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np
from scipy import optimize, special, stats

from icl_kinetics.errors import ParameterError, positive_int, probability

__all__ = [
    "SigmoidFit",
    "PowerLawFit",
    "LinearFit",
    "CensoredQuantile",
    "KSResult",
    "sigmoid_fit",
    "power_law_fit",
    "linear_fit",
    "kaplan_meier",
    "censored_quantile",
    "ks_compare",
    "bimodality_coefficient",
    "wilson_interval",
    "is_linear",
    "sd_interval",
    "slope_t_interval",
    "line_t_intervals",
    "MIN_BOOTSTRAP_POINTS",
    "REASON_NO_TRANSITION",
    "REASON_OUTSIDE_RANGE",
    "REASON_NO_CONVERGENCE",
]

REASON_NO_TRANSITION = "no transition in the K range"
REASON_OUTSIDE_RANGE = "K* outside the measured range"
REASON_NO_CONVERGENCE = "the sigmoid fit did not converge"

_CI_LEVEL = 0.95
#: no interval is bootstrapped over fewer points than this: with a handful of points the
#: resamples repeat a few distinct sets, and the percentile interval comes out far too narrow
#: (3 points give a "CI" of the slope that is a fraction of its real uncertainty).  Below it the
#: checks use :func:`slope_t_interval` (docs/validation.md, "What each check needs")
MIN_BOOTSTRAP_POINTS = 8
_Q_LO, _Q_HI = (1.0 - _CI_LEVEL) / 2.0, 1.0 - (1.0 - _CI_LEVEL) / 2.0
_NAN = float("nan")


# --------------------------------------------------------------------------- helpers


def _plain(value):
    """Convert dataclass field values to JSON-ready Python objects."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


class _ToDict:
    def to_dict(self) -> dict:
        """The fields as plain Python objects (floats, ints, str, lists, None)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _array(name: str, value, *, min_n: int = 1) -> np.ndarray:
    """A 1-D float array of finite numbers with at least ``min_n`` entries, or raise."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ParameterError(name, value, "a 1-D sequence of numbers") from None
    if arr.ndim != 1:
        raise ParameterError(name, f"array of shape {arr.shape}", "a 1-D sequence of numbers")
    if arr.size < min_n:
        raise ParameterError(name, f"{arr.size} values", f"at least {min_n} values")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ParameterError(name, float(arr[bad][0]), "finite numbers (no NaN or inf)")
    return arr


def _same_length(name: str, arr: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
    if arr.size != ref.size:
        raise ParameterError(name, f"{arr.size} values", f"the same length as {ref_name} ({ref.size})")


def _positive(name: str, arr: np.ndarray) -> None:
    bad = arr <= 0
    if bad.any():
        raise ParameterError(name, float(arr[bad][0]), "> 0 everywhere (log fit)")


def _distinct(name: str, arr: np.ndarray, k: int) -> None:
    m = np.unique(arr).size
    if m < k:
        raise ParameterError(name, f"{m} distinct values", f"at least {k} distinct values")


def _seed(seed) -> int:
    return positive_int("seed", seed, minimum=0)


def _percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    """95 % percentile interval (numpy's default linear interpolation); NaN if < 2 samples."""
    samples = np.asarray(samples, dtype=float)
    if samples.size < 2:
        return (_NAN, _NAN)
    lo, hi = np.quantile(samples, [_Q_LO, _Q_HI])
    return (float(lo), float(hi))


def _ols_batch(x: np.ndarray, y: np.ndarray):
    """Slope and intercept of OLS, row-wise over a 2-D batch; NaN where x is constant."""
    xm = x.mean(axis=-1, keepdims=True)
    ym = y.mean(axis=-1, keepdims=True)
    dx = x - xm
    sxx = (dx * dx).sum(axis=-1)
    sxy = (dx * (y - ym)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # relative threshold: a resample whose x are all (numerically) equal has no slope
        scale = np.maximum((x * x).sum(axis=-1), np.finfo(float).tiny)
        degenerate = sxx <= 1e-24 * scale
        slope = np.where(degenerate, np.nan, sxy / np.where(degenerate, 1.0, sxx))
    intercept = ym[..., 0] - slope * xm[..., 0]
    return slope, intercept


def _r2(y: np.ndarray, resid: np.ndarray) -> float:
    """1 - SS_res / SS_tot; NaN when y is constant."""
    sst = float(((y - y.mean()) ** 2).sum())
    if sst <= 0.0:
        return _NAN
    return 1.0 - float((resid**2).sum()) / sst


# --------------------------------------------------------------------------- sigmoid


@dataclass(frozen=True)
class SigmoidFit(_ToDict):
    """Fit of ``acc = c + d / (1 + exp(-a (log10 K - b)))``.

    ``a`` is the steepness per decade of K, ``b`` the midpoint in log10(items),
    ``c`` the low plateau, ``d`` the height of the step; ``k_star = 10**b`` (items) with
    its 95 % bootstrap CI ``k_star_ci`` over observations; ``n_boot_ok`` of the
    ``n_boot`` refits succeeded; ``r2`` over observations; ``n`` observations.
    ``reason`` is "" for a fit inside the measured range, else says why ``k_star`` is
    NaN or extrapolated.
    """

    a: float
    b: float
    c: float
    d: float
    k_star: float
    k_star_ci: tuple[float, float]
    r2: float
    n: int
    n_boot: int
    n_boot_ok: int
    reason: str = ""


def _sigmoid(x, a, b, c, d):
    return c + d * special.expit(a * (x - b))


def _sigmoid_jac(x, a, b, c, d):
    s = special.expit(a * (x - b))
    ds = s * (1.0 - s)
    return np.column_stack([d * ds * (x - b), -d * ds * a, np.ones_like(x), s])


_A_MIN, _A_MAX = 1e-6, 50.0


def sigmoid_bounds(x: np.ndarray):
    lo = np.array([_A_MIN, x.min() - 1.0, 0.0, 0.0])
    hi = np.array([_A_MAX, x.max() + 1.0, 1.0, 1.0])
    return lo, hi


class _Fit(NamedTuple):
    params: np.ndarray
    sse: float


def fit_sigmoid_once(x, y, p0, bounds) -> "_Fit | None":
    """One bounded least-squares fit; None on failure."""
    lo, hi = bounds
    p0 = np.clip(np.asarray(p0, dtype=float), lo, hi)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = optimize.curve_fit(
                _sigmoid, x, y, p0=p0, bounds=bounds, jac=_sigmoid_jac, method="trf", maxfev=2000
            )
    except (RuntimeError, ValueError, optimize.OptimizeWarning, FloatingPointError):
        return None
    if not np.all(np.isfinite(popt)):
        return None
    return _Fit(popt, float(((y - _sigmoid(x, *popt)) ** 2).sum()))


def _sigmoid_starts(ux: np.ndarray, means: np.ndarray):
    """Initial guesses: b where the per-x means cross their mid-range, several slopes."""
    lo, hi = float(means.min()), float(means.max())
    mid = 0.5 * (lo + hi)
    c0 = min(max(lo, 0.0), 1.0)
    d0 = min(max(hi - lo, 1e-3), 1.0)
    i = int(np.argmax(means >= mid))  # first x whose mean reaches the mid-range
    if i == 0:
        b0, slope = float(ux[0]), 0.0
    else:
        x0, x1, m0, m1 = ux[i - 1], ux[i], means[i - 1], means[i]
        frac = (mid - m0) / (m1 - m0) if m1 != m0 else 0.5
        b0 = float(x0 + frac * (x1 - x0))
        slope = float((m1 - m0) / (x1 - x0))
    a_slope = 4.0 * slope / d0 if slope > 0 else 5.0  # logistic max slope is a d / 4
    a_list = sorted({float(np.clip(a, 0.5, _A_MAX)) for a in (a_slope, 2.0, 8.0, 25.0)})
    b_list = [b0, float(0.5 * (ux[0] + ux[-1]))]
    return [(a, b, c0, d0) for b in b_list for a in a_list]


def _bootstrap_midpoints(x, y, popt, bounds, n_boot: int, rng) -> list:
    """The midpoint b refitted on ``n_boot`` resamples of the observations (from ``popt``);
    resamples with < 3 distinct x, or whose fit fails, are skipped."""
    b_boot = []
    if n_boot > 0:
        n = x.size
        for idx in rng.integers(0, n, size=(n_boot, n)):
            xb, yb = x[idx], y[idx]
            if np.unique(xb).size < 3:
                continue
            res = fit_sigmoid_once(xb, yb, popt, bounds)
            if res is not None:
                b_boot.append(res.params[1])
    return b_boot


def sigmoid_fit(log10_k, acc, n_boot: int = 200, seed: int = 0) -> SigmoidFit:
    """Fit the task-diversity transition ``acc = c + d / (1 + exp(-a (x - b)))``.

    ``log10_k``: log10 of the number of tasks K (K in items), one entry per observation
    (run, seed); repeated values are expected.  ``acc``: the accuracy of each observation.
    ``n_boot``: bootstrap resamples of the observations for ``k_star_ci``; ``seed``: the
    seed of ``numpy.random.default_rng``.

    Needs >= 4 observations at >= 3 distinct K.  If the per-K mean accuracy changes by
    less than 0.1 over the K range, no sigmoid is fitted: ``k_star`` is NaN and ``reason``
    is "no transition in the K range".  If the fitted midpoint ``b`` lies outside
    ``[min x, max x]``, ``reason`` is "K* outside the measured range" (``k_star`` is then
    an extrapolation; the fit allows ``b`` one decade beyond the data on each side).
    """
    x = _array("log10_k", log10_k, min_n=4)
    y = _array("acc", acc)
    _same_length("acc", y, "log10_k", x)
    _distinct("log10_k", x, 3)
    n_boot = positive_int("n_boot", n_boot, minimum=0)
    seed = _seed(seed)
    n = int(x.size)

    ux, inv = np.unique(x, return_inverse=True)
    means = np.bincount(inv, weights=y) / np.bincount(inv)

    def empty(reason: str, r2: float = _NAN) -> SigmoidFit:
        return SigmoidFit(a=_NAN, b=_NAN, c=_NAN, d=_NAN, k_star=_NAN, k_star_ci=(_NAN, _NAN), r2=r2, n=n,
                          n_boot=n_boot, n_boot_ok=0, reason=reason)

    if means.max() - means.min() < 0.1:
        return empty(REASON_NO_TRANSITION)

    bounds = sigmoid_bounds(x)
    best = None
    for p0 in _sigmoid_starts(ux, means):
        res = fit_sigmoid_once(x, y, p0, bounds)
        if res is not None and (best is None or res.sse < best.sse):
            best = res
    if best is None:
        return empty(REASON_NO_CONVERGENCE)
    popt = best.params
    a, b, c, d = (float(v) for v in popt)
    r2 = _r2(y, y - _sigmoid(x, *popt))

    b_boot = _bootstrap_midpoints(x, y, popt, bounds, n_boot, np.random.default_rng(seed))
    b_lo, b_hi = _percentile_ci(np.asarray(b_boot))
    k_ci = (10.0**b_lo, 10.0**b_hi) if math.isfinite(b_lo) else (_NAN, _NAN)

    reason = "" if x.min() <= b <= x.max() else REASON_OUTSIDE_RANGE
    return SigmoidFit(a=a, b=b, c=c, d=d, k_star=10.0**b, k_star_ci=k_ci, r2=r2, n=n, n_boot=n_boot,
                      n_boot_ok=len(b_boot), reason=reason)


# --------------------------------------------------------------------------- power law


@dataclass(frozen=True)
class PowerLawFit(_ToDict):
    """Fit of ``y = amplitude * x**exponent`` (least squares of ln y on ln x).

    ``exponent_ci`` / ``amplitude_ci``: 95 % bootstrap CIs over points; ``r2`` in log
    space; ``n`` points; ``n_boot_ok`` of ``n_boot`` resamples had >= 2 distinct x.
    """

    exponent: float
    amplitude: float
    exponent_ci: tuple[float, float]
    amplitude_ci: tuple[float, float]
    r2: float
    n: int
    n_boot: int
    n_boot_ok: int


def power_law_fit(x, y, n_boot: int = 1000, seed: int = 0) -> PowerLawFit:
    """Fit ``y = A x**p`` by ordinary least squares in log-log space.

    ``x`` and ``y`` are positive (e.g. K in items, t in iterations), same length,
    >= 3 points with >= 2 distinct x.  The CIs resample the (x, y) points with
    replacement ``n_boot`` times (``numpy.random.default_rng(seed)``).
    """
    xa = _array("x", x, min_n=3)
    ya = _array("y", y)
    _same_length("y", ya, "x", xa)
    _positive("x", xa)
    _positive("y", ya)
    _distinct("x", xa, 2)
    n_boot = positive_int("n_boot", n_boot, minimum=0)
    rng = np.random.default_rng(_seed(seed))

    lx, ly = np.log(xa), np.log(ya)
    p, lnA = _ols_batch(lx[None, :], ly[None, :])
    p, lnA = float(p[0]), float(lnA[0])
    r2 = _r2(ly, ly - (lnA + p * lx))

    n = int(xa.size)
    if n_boot > 0:
        idx = rng.integers(0, n, size=(n_boot, n))
        pb, lnAb = _ols_batch(lx[idx], ly[idx])
        ok = np.isfinite(pb)
        pb, lnAb = pb[ok], lnAb[ok]
    else:
        pb = lnAb = np.empty(0)
    p_ci = _percentile_ci(pb)
    lnA_ci = _percentile_ci(lnAb)
    A_ci = (math.exp(lnA_ci[0]), math.exp(lnA_ci[1])) if math.isfinite(lnA_ci[0]) else (_NAN, _NAN)
    return PowerLawFit(exponent=p, amplitude=math.exp(lnA), exponent_ci=p_ci, amplitude_ci=A_ci, r2=r2, n=n,
                       n_boot=n_boot, n_boot_ok=int(pb.size))


# --------------------------------------------------------------------------- linear


@dataclass(frozen=True)
class LinearFit(_ToDict):
    """Fit of ``y = slope * x + intercept`` (ordinary least squares).

    ``slope_ci``: 95 % bootstrap CI over points; ``linearity``: p-value of the F-test
    for adding a quadratic term (small = curved; NaN when n < 4 or < 3 distinct x);
    ``r2``; ``n`` points; ``n_boot_ok`` of ``n_boot`` resamples had >= 2 distinct x.
    """

    slope: float
    intercept: float
    r2: float
    slope_ci: tuple[float, float]
    linearity: float
    n: int
    n_boot: int
    n_boot_ok: int


def _quadratic_pvalue(x: np.ndarray, y: np.ndarray, rss1: float) -> float:
    """p-value of the nested F-test: linear (df n-2) vs quadratic (df n-3) OLS."""
    n = x.size
    if n < 4 or np.unique(x).size < 3:
        return _NAN
    z = (x - x.mean()) / x.std()  # well-conditioned design
    X2 = np.column_stack([np.ones_like(z), z, z * z])
    coef, *_ = np.linalg.lstsq(X2, y, rcond=None)
    rss2 = float(((y - X2 @ coef) ** 2).sum())
    # exact fits: residuals at round-off level relative to the data's own scale
    tol = 1e-20 * max(float((y * y).sum()), np.finfo(float).tiny)
    if rss1 <= tol:
        return 1.0  # the line is exact: no evidence for curvature
    if rss2 <= tol:
        return 0.0  # the quadratic is exact and the line is not
    F = (rss1 - rss2) / (rss2 / (n - 3))
    return float(stats.f.sf(max(F, 0.0), 1, n - 3))


def linear_fit(x, y, n_boot: int = 1000, seed: int = 0) -> LinearFit:
    """Fit ``y = slope x + intercept`` by ordinary least squares.

    >= 3 points with >= 2 distinct x, same length.  ``slope_ci`` resamples the (x, y)
    points with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``).
    ``linearity`` is the p-value of adding ``x**2`` to the model (nested-OLS F-test with
    1 and n - 3 degrees of freedom): 1.0 when the line is exact, 0.0 when only the
    quadratic is exact, NaN when n < 4.
    """
    xa = _array("x", x, min_n=3)
    ya = _array("y", y)
    _same_length("y", ya, "x", xa)
    _distinct("x", xa, 2)
    n_boot = positive_int("n_boot", n_boot, minimum=0)
    rng = np.random.default_rng(_seed(seed))

    s, i0 = _ols_batch(xa[None, :], ya[None, :])
    s, i0 = float(s[0]), float(i0[0])
    resid = ya - (i0 + s * xa)
    rss1 = float((resid**2).sum())
    r2 = _r2(ya, resid)
    linearity = _quadratic_pvalue(xa, ya, rss1)

    n = int(xa.size)
    if n_boot > 0:
        idx = rng.integers(0, n, size=(n_boot, n))
        sb, _ = _ols_batch(xa[idx], ya[idx])
        sb = sb[np.isfinite(sb)]
    else:
        sb = np.empty(0)
    return LinearFit(slope=s, intercept=i0, r2=r2, slope_ci=_percentile_ci(sb), linearity=linearity, n=n,
                     n_boot=n_boot, n_boot_ok=int(sb.size))


def line_t_intervals(x, y, confidence: float = 0.95) -> tuple[tuple[float, float], tuple[float, float]]:
    """The Student-t intervals of an OLS line's slope and intercept: each +- t(n - 2) times
    its standard error.  ((slope_lo, slope_hi), (intercept_lo, intercept_hi)).

    For fits over a few points (fewer than :data:`MIN_BOOTSTRAP_POINTS`), where a bootstrap
    over points is too narrow.  Needs >= 3 points with >= 2 distinct x; an exact line gives
    zero-width intervals.  Units: those of y per unit of x (slope), of y (intercept)."""
    xa = _array("x", x, min_n=3)
    ya = _array("y", y)
    _same_length("y", ya, "x", xa)
    _distinct("x", xa, 2)
    n = xa.size
    dx = xa - xa.mean()
    sxx = float((dx * dx).sum())
    slope = float((dx * (ya - ya.mean())).sum() / sxx)
    intercept = float(ya.mean() - slope * xa.mean())
    resid = ya - ya.mean() - slope * dx
    s2 = float((resid**2).sum()) / (n - 2)
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 2))
    se_s = math.sqrt(s2 / sxx)
    se_i = math.sqrt(s2 * (1.0 / n + xa.mean() ** 2 / sxx))
    return (slope - t * se_s, slope + t * se_s), (intercept - t * se_i, intercept + t * se_i)


def slope_t_interval(x, y, confidence: float = 0.95) -> tuple[float, float]:
    """The Student-t interval of an OLS slope (:func:`line_t_intervals`)."""
    return line_t_intervals(x, y, confidence)[0]


# --------------------------------------------------------------------------- survival


def _survival_inputs(times, observed):
    t = _array("times", times, min_n=1)
    bad = t < 0
    if bad.any():
        raise ParameterError("times", float(t[bad][0]), ">= 0 (iterations)")
    obs = np.asarray(observed)
    if obs.ndim != 1:
        raise ParameterError("observed", f"array of shape {obs.shape}", "a 1-D sequence of booleans")
    if obs.dtype != bool:
        ok = obs.dtype.kind in "iuf" and np.all(np.isin(obs, (0, 1)))
        if not ok:
            raise ParameterError("observed", "non-boolean values", "booleans (True = event observed)")
        obs = obs.astype(bool)
    _same_length("observed", obs, "times", t)
    return t, obs


def _km(t: np.ndarray, obs: np.ndarray):
    """Kaplan--Meier (``scipy.stats.ecdf`` on ``scipy.stats.CensoredData``): (distinct event
    times, S just after each).  Ties: a run censored at t_j counts as at risk for the events
    at t_j (scipy's convention, and the usual one)."""
    if not obs.any():
        return np.empty(0), np.empty(0)
    sf = stats.ecdf(stats.CensoredData(uncensored=t[obs], right=t[~obs])).sf
    ut = np.unique(t[obs])
    # sf.quantiles holds every distinct time, censoring times too: keep the event times
    return ut.astype(float), sf.probabilities[np.searchsorted(sf.quantiles, ut)]


def kaplan_meier(times, observed) -> tuple[np.ndarray, np.ndarray]:
    """Right-censored Kaplan--Meier estimate of the survival S(t) = P(T > t)
    (``scipy.stats.ecdf`` with ``scipy.stats.CensoredData``).

    ``times``: event or censoring time of each run (iterations, >= 0).  ``observed``:
    True when the event (ICL acquired) happened at that time, False when the run was
    censored there (it never acquired ICL before its cap).  Returns ``(t, survival)``:
    the distinct observed event times in increasing order and S just after each of them
    (a right-continuous step function, S = 1 before the first event).  At a time with
    both events and censorings, the censored runs count as at risk for those events.
    """
    t, obs = _survival_inputs(times, observed)
    return _km(t, obs)


@dataclass(frozen=True)
class CensoredQuantile(_ToDict):
    """The q-quantile of a right-censored event time (iterations), from Kaplan--Meier.

    ``value``: smallest event time t with 1 - S(t) >= q, or ``None`` when the estimated
    event fraction never reaches q (the quantile is censored); then ``lower_bound`` is the
    largest censoring time (the quantile is beyond it), else ``lower_bound`` is ``None``.
    ``ci``: 95 % bootstrap CI over (time, observed) pairs; an end is ``None`` when that
    percentile of the bootstrap quantiles is censored (or NaN if ``n_boot`` is 0).
    """

    q: float
    value: Optional[float]
    lower_bound: Optional[float]
    ci: tuple[Optional[float], Optional[float]]
    n: int
    n_observed: int
    n_boot: int


# round-off slack for "1 - S(t) >= q": the KM product telescopes to (n-k)/n only up to
# a few ulps, and without slack an uncensored quantile could skip to the next event.
_KM_TOL = 1e-12


def _km_quantile(t, obs, q: float) -> float:
    """KM q-quantile, +inf when censored."""
    ut, surv = _km(t, obs)
    hit = np.nonzero(1.0 - surv >= q - _KM_TOL)[0]
    return float(ut[hit[0]]) if hit.size else math.inf


def censored_quantile(times, observed, q: float = 0.5, n_boot: int = 500, seed: int = 0) -> CensoredQuantile:
    """The q-quantile of the event time (iterations) under right censoring.

    Kaplan--Meier estimate (see :func:`kaplan_meier`); the quantile is the smallest
    observed event time t with ``1 - S(t) >= q`` (up to 1e-12 round-off).  Without
    censoring this is the order statistic ``sorted(times)[ceil(q n) - 1]``, i.e.
    ``numpy.quantile(times, q, method="inverted_cdf")``; for q = 0.5 that is the *lower*
    median (``method="lower"``), not numpy's averaged ``median``.  ``value`` is ``None``
    when the quantile is censored.  The CI resamples (time, observed) pairs ``n_boot``
    times with ``numpy.random.default_rng(seed)`` (indices into the pairs sorted by time)
    and takes the 2.5 % and 97.5 % order-statistic percentiles (``method="inverted_cdf"``)
    of the bootstrap quantiles, censored ones counting as +infinity (reported as ``None``).
    """
    t, obs = _survival_inputs(times, observed)
    q = probability("q", q)
    n_boot = positive_int("n_boot", n_boot, minimum=0)
    rng = np.random.default_rng(_seed(seed))

    order = np.argsort(t, kind="stable")
    ts, os_ = t[order], obs[order]
    est = _km_quantile(ts, os_, q)
    value = est if math.isfinite(est) else None
    lower_bound = None
    if value is None:
        lower_bound = float(ts[~os_].max()) if (~os_).any() else float(ts.max())

    n = int(t.size)
    if n_boot > 0:
        boot = np.array([_km_quantile(ts[idx], os_[idx], q) for idx in rng.integers(0, n, size=(n_boot, n))])
        lo, hi = np.quantile(boot, [_Q_LO, _Q_HI], method="inverted_cdf")
        ci = tuple(float(v) if math.isfinite(v) else None for v in (lo, hi))
    else:
        ci = (_NAN, _NAN)
    return CensoredQuantile(q=q, value=value, lower_bound=lower_bound, ci=ci, n=n, n_observed=int(obs.sum()),
                            n_boot=n_boot)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a fraction k/n (k successes of n trials) at ``confidence``
    (``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")``, with the
    exact normal quantile: z = 1.95996... at 95 %)."""
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def is_linear(fit: "LinearFit") -> bool:
    """The linearity verdict on a :func:`linear_fit`: R^2 >= 0.9 and no significant quadratic
    term (p >= 0.01; untestable, NaN, with 3 points)."""
    return fit.r2 >= 0.9 and (not np.isfinite(fit.linearity) or fit.linearity >= 0.01)


def sd_interval(x) -> tuple[float, float]:
    """The 95 % chi-square interval of the standard deviation of a Normal sample ``x``
    (around the sample sd, ddof = 1; needs >= 2 values)."""
    xa = _array("x", x, min_n=2)
    n, sd = xa.size, float(np.std(xa, ddof=1))
    return (sd * math.sqrt((n - 1) / stats.chi2.ppf(0.975, n - 1)), sd * math.sqrt((n - 1) / stats.chi2.ppf(0.025, n - 1)))


# --------------------------------------------------------------------------- KS, bimodality


@dataclass(frozen=True)
class KSResult(_ToDict):
    """One-sample Kolmogorov--Smirnov test: ``statistic`` (sup |F_n - F|), ``pvalue``, ``n``."""

    statistic: float
    pvalue: float
    n: int


def ks_compare(samples, cdf: Callable[[np.ndarray], np.ndarray]) -> KSResult:
    """One-sample KS test of ``samples`` against ``cdf`` (``scipy.stats.kstest``).

    ``cdf`` must accept an array and return the CDF elementwise (e.g. a theory's
    distribution of t_ICL in iterations, or ``scipy.stats.expon(scale=...).cdf``).
    """
    s = _array("samples", samples, min_n=1)
    if not callable(cdf):
        raise ParameterError("cdf", cdf, "a callable CDF")
    res = stats.kstest(s, cdf)
    return KSResult(statistic=float(res.statistic), pvalue=float(res.pvalue), n=int(s.size))


def bimodality_coefficient(x) -> float:
    """Sarle's bimodality coefficient of the sample ``x`` (any units).

    ``BC = (g**2 + 1) / (k + 3 (n-1)**2 / ((n-2)(n-3)))`` with ``g`` the sample skewness
    and ``k`` the sample excess kurtosis, both bias-corrected (``scipy.stats.skew`` /
    ``kurtosis`` with ``bias=False``).  A uniform distribution gives 5/9; values above
    5/9 suggest bimodality, a normal sample gives about 1/3.  Needs n >= 4 and x not
    constant.
    """
    xa = _array("x", x, min_n=4)
    if np.ptp(xa) == 0:
        raise ParameterError("x", "constant values", "not all equal")
    n = xa.size
    g = float(stats.skew(xa, bias=False))
    k = float(stats.kurtosis(xa, fisher=True, bias=False))
    return (g * g + 1.0) / (k + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
