"""The distribution of ICL onset times across seeds.

Seeds differ in their initial inverse temperature beta0 (Gaussian across random
initializations; a transformer's effective beta0 is measured in the validation
layer).  With constant c1, c2 (K -> infinity: c1 = c2 = 1/2) each seed's onset is a
deterministic, strictly decreasing function of its beta0::

    t(beta0) = N * tau_star(beta0) / (lr * c1)        [iterations]

so the onset distribution is the push-forward of the beta0 distribution: in the
signal regime ``t ~ e^-beta0`` is **log-normal** (long-tailed); for very negative
beta0 the noise regime ``t ~ e^-2 beta0`` stretches the tail further.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from icl_kinetics.errors import (
    ParameterError, finite_array, finite_float, positive_float, positive_int, real_float,
)
from icl_kinetics.resources import require_memory
from icl_kinetics.theory._compat import renamed_keywords
from icl_kinetics.theory.closed_form import C2_DEFAULT, _check_regime, _check_scaled, _checked_tau, escape_time

TABLE_SDS = 9.0  # the beta0 -> t table (cdf, pdf, beta0_of) spans beta0_mean +- 9 standard deviations
MEDIAN_FLOOR = 1.0  # iterations: a median onset below one SGD step is outside the gradient-flow theory


@dataclass
class OnsetDistribution:
    """Distribution of ``t_icl`` (iterations) for ``beta0 ~ Normal(beta0_mean, beta0_std)``.

    Args:
        N: context tokens (target not counted).
        lr: learning rate.
        beta0_mean, beta0_std: the Gaussian spread of beta0 across seeds
            (``beta0_std = 0``: every seed has the same onset).
        w0: initial readout weight (>= 0), the same for every seed.
        c1, c2: constant MLP coefficients: this is the K = infinity distribution (nothing is
            memorized, c1 = c2 = 1/2, the defaults); for a finite K with a measured c1
            curve use :class:`FiniteKOnset`.
        regime: ``'exact'``, ``'signal'`` or ``'noise'`` (see :func:`escape_time`).
        beta_c: threshold beta (see :func:`escape_time`); ``inf``: blow-up time.

    Raises:
        ParameterError: at construction, for ``N`` not an integer >= 1; ``lr``, ``c1``
            not finite numbers > 0; ``beta0_mean`` not finite; ``beta0_std``, ``c2`` not
            finite numbers >= 0; ``w0`` not finite (and not >= 0 for ``regime='exact'``,
            not 0 for ``'noise'``, with c2 > 0); unknown ``regime``; ``beta_c`` NaN.  Two
            degenerate distributions are refused there too:

            * the **median** onset (the onset of ``beta0_mean``) must be a finite number
              of at least 1 iteration (``MEDIAN_FLOOR``): below one SGD step the
              continuous gradient-flow description does not apply, and 0 means the median
              seed starts past ``beta_c`` (e.g. ``beta0_mean = 1e6`` makes every onset 0,
              named ``beta0_mean``; so can a huge ``lr``, named ``lr``);
            * every ``beta0`` within 9 standard deviations of the mean (the span of the
              table behind :meth:`cdf`, :meth:`pdf` and :meth:`beta0_of`) must have a
              finite onset, > 0 below ``beta_c`` (e.g. ``beta0_std = 1e6`` gives onsets of
              e^(+-9e6), named ``beta0_std``).
    """

    N: int
    lr: float
    beta0_mean: float = 0.0
    beta0_std: float = 1.0
    w0: float = 0.0
    c1: float = 0.5
    c2: float = C2_DEFAULT
    regime: str = "exact"
    beta_c: float = np.inf
    _grid: tuple = field(default=None, init=False, repr=False)
    _median: float = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.N = positive_int("N", self.N)
        self.lr = positive_float("lr", self.lr)
        self.beta0_mean = finite_float("beta0_mean", self.beta0_mean)
        self.beta0_std = positive_float("beta0_std", self.beta0_std, allow_zero=True)
        self.c1 = positive_float("c1", self.c1)
        self.c2 = positive_float("c2", self.c2, allow_zero=True)
        self.w0, self.c2, self.regime = _check_regime(self.w0, self.c2, self.regime)
        self.beta_c = real_float("beta_c", self.beta_c, allow_inf=True)
        # the median: finite and >= MEDIAN_FLOOR iterations
        m = float(self._onset(self.beta0_mean, "beta0_mean", self.beta0_mean))
        if not m >= MEDIAN_FLOOR:
            if not self.beta0_mean < self.beta_c:
                raise ParameterError("beta0_mean", self.beta0_mean, f"< beta_c = {self.beta_c:g}: the median seed "
                                     "starts past the threshold (its onset is 0)")
            tau = m * self.lr * self.c1 / self.N
            share = {"beta0_mean": -math.log(tau), "lr": math.log(self.lr), "c1": math.log(self.c1)}
            name = max(share, key=share.get)
            raise ParameterError(name, getattr(self, name), f"such that the median t_ICL is at least "
                                 f"{MEDIAN_FLOOR:g} iteration (it is {m:.3g}: the median seed would acquire ICL "
                                 "before the first SGD step, outside the gradient-flow description)")
        self._median = m
        # the table's span: mean +- 9 sd (sd floored at 1e-3, as in _table)
        sd = max(self.beta0_std, 1e-3)
        ends = np.array([self.beta0_mean - TABLE_SDS * sd, self.beta0_mean + TABLE_SDS * sd])
        try:
            self._onset(ends, "beta0", ends)
        except ParameterError as e:
            unit = np.array([self.beta0_mean - TABLE_SDS, self.beta0_mean + TABLE_SDS])
            try:  # with a unit spread the table fits: the spread is to blame
                self._onset(unit, "beta0", unit)
            except ParameterError:  # even a unit spread does not fit: the scale (lr, N, c1) leaves no room
                share = {"lr": abs(math.log(self.lr)), "N": math.log(self.N), "c1": abs(math.log(self.c1)),
                         "beta0_mean": abs(self.beta0_mean)}
                name = max(share, key=share.get)
                raise ParameterError(name, getattr(self, name), f"such that the onset times of beta0 = "
                                     f"{unit[0]:.4g} .. {unit[1]:.4g} (the mean +- {TABLE_SDS:g}) are finite "
                                     f"floats ({e.name} must be {e.allowed})") from None
            raise ParameterError("beta0_std", self.beta0_std, f"small enough that every beta0 within "
                                 f"{TABLE_SDS:g} standard deviations of the mean ({ends[0]:.4g} .. {ends[1]:.4g}) "
                                 f"has a finite onset time ({e.name} must be {e.allowed})") from None

    # -- the map beta0 -> t and its inverse ---------------------------------------------
    def _onset(self, beta0, name, value):
        """Checked onsets (iterations) of the beta0 values ``beta0``, refusals naming ``name``."""
        beta0 = finite_array(name, beta0)
        tau = _checked_tau(beta0, self.w0, self.c2, self.regime, np.asarray(self.beta_c, float), name, value)
        with np.errstate(over="ignore", under="ignore"):
            t = self.N * tau / (self.lr * self.c1)
        _check_scaled(t, tau, {"N": self.N, "lr": self.lr, "c1": self.c1}, value, "t_ICL", beta0_name=name)
        return t

    def onset_of(self, beta0):
        """``t_icl`` (iterations) of a seed with initial inverse temperature ``beta0``.

        Raises:
            ParameterError: ``beta0`` not finite numbers, or so extreme that its onset
                overflows (or underflows to 0 below ``beta_c``).
        """
        tau = escape_time(beta0, w0=self.w0, c2=self.c2, regime=self.regime, beta_c=self.beta_c)
        with np.errstate(over="ignore", under="ignore"):
            t = self.N * tau / (self.lr * self.c1)
        _check_scaled(t, tau, {"N": self.N, "lr": self.lr, "c1": self.c1}, beta0, "t_ICL")
        return t

    def _table(self):
        if self._grid is None:
            sd = max(self.beta0_std, 1e-3)
            b = np.linspace(self.beta0_mean - 9 * sd, self.beta0_mean + 9 * sd, 2001)
            with np.errstate(divide="ignore"):  # onset 0 at beta0 >= beta_c: log -inf
                self._grid = (b, np.log(self.onset_of(b)))
        return self._grid

    def _beta0_of(self, t):
        b, lt = self._table()
        return np.interp(np.log(np.asarray(t, float)), lt[::-1], b[::-1])

    def beta0_of(self, t):
        """Inverse map: the beta0 whose onset is ``t`` iterations (monotone interpolation).

        Raises:
            ParameterError: ``t`` not finite numbers > 0.
        """
        finite_array("t", t, minimum=0.0, exclusive_minimum=True)
        return self._beta0_of(t)

    # -- distribution functions ---------------------------------------------------------
    def cdf(self, t):
        """``P(t_icl <= t)`` = ``P(beta0 >= beta0_of(t))``.

        Raises:
            ParameterError: ``t`` NaN (any other number, +-inf included, is fine).
        """
        t = finite_array("t", t, allow_inf=True)
        if self.beta0_std == 0:
            return (t >= self._median).astype(float)
        from scipy.special import ndtr

        b = self._beta0_of(np.maximum(t, 1e-300))
        return np.where(t > 0, ndtr(-(b - self.beta0_mean) / self.beta0_std), 0.0)

    def pdf(self, t):
        """Density of ``t_icl`` per iteration: ``f_beta(beta0(t)) |d beta0/dt|``.

        Raises:
            ParameterError: ``beta0_std = 0`` (a point mass has no density); ``t`` not
                finite numbers > 0.
        """
        if self.beta0_std == 0:
            raise ParameterError("beta0_std", self.beta0_std, "> 0 for pdf (with beta0_std = 0 the onset "
                                 "distribution is a point mass, without a density)")
        t = finite_array("t", t, minimum=0.0, exclusive_minimum=True)
        b, lt = self._table()
        slope = np.gradient(b, lt)  # d beta0 / d log t  (negative)
        bt = self._beta0_of(t)
        s = np.interp(np.log(t), lt[::-1], slope[::-1])
        z = (bt - self.beta0_mean) / self.beta0_std
        dens = np.exp(-0.5 * z * z) / (self.beta0_std * np.sqrt(2 * np.pi))
        return dens * np.abs(s) / t

    def quantile(self, p):
        """``t_icl`` quantile: ``onset_of(beta0 quantile 1 - p)`` (the map is decreasing).

        Raises:
            ParameterError: ``p`` not numbers in (0, 1) whose complement ``1 - p`` is
                distinguishable from 1 in floating point (``p >= ~1.1e-16``).
        """
        given = p
        p = finite_array("p", p, minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True,
                         allowed="numbers in (0, 1) (quantile levels)")
        if np.any(1 - p >= 1):
            raise ParameterError("p", given, "quantile levels >= ~1.1e-16 (1 - p must differ from 1 in floating "
                                 "point)")
        nd = NormalDist(self.beta0_mean, self.beta0_std) if self.beta0_std > 0 else None
        b = np.vectorize(lambda q: nd.inv_cdf(1 - q) if nd else self.beta0_mean)(p)
        return self.onset_of(b)

    def median(self) -> float:
        """Median ``t_icl`` (iterations) = onset of the median beta0 (at least 1: see Raises
        of the class)."""
        return float(self._median)

    @renamed_keywords(n="samples")
    def sample(self, samples: int, seed: int = 0):
        """``samples`` onset times (iterations) from ``beta0`` drawn with ``numpy`` seed ``seed``.

        Raises:
            ParameterError: ``samples`` not an integer >= 1 or too large for memory (about
                16 float64 arrays of ``samples`` are alive at the peak of the tabulated exact
                regime, 8 for the closed forms, and ~8500 per sample where the exact regime
                integrates every sample, with ``w0 > 0`` or a finite ``beta_c``); ``seed``
                not an integer >= 0.
        """
        n = positive_int("samples", samples)
        seed = positive_int("seed", seed, 0)
        require_memory("samples", n, self._floats_per_sample() * 8.0 * n, f"sampling {n} onset times")
        rng = np.random.default_rng(seed)
        beta0 = rng.normal(self.beta0_mean, self.beta0_std, n)
        try:
            return self.onset_of(beta0)
        except ParameterError as e:  # a draw beyond the checked +- 9 sd (p ~ 1e-19 per draw)
            raise ParameterError("beta0_std", self.beta0_std, f"small enough that every sampled seed has a "
                                 f"finite onset ({e.name} must be {e.allowed})") from None

    def _floats_per_sample(self) -> float:
        """Float64 arrays of the sample size alive at the peak of :meth:`sample` (measured
        with tracemalloc, rounded up)."""
        if self.regime == "signal" or self.c2 == 0 or self.regime == "noise":
            return 8.0
        if self.w0 == 0 and np.isposinf(self.beta_c):
            return 16.0
        return 8500.0


@dataclass
class FiniteKOnset:
    """Onset times (iterations) at a finite K, driven by a memorization curve c1(s).

    With a memorizing MLP the head advances in reduced time ``tau = I_K(s) / N``
    (``I_K(s) = integral_0^s c1``, s = lr * t learning-rate time): a seed with initial
    beta0 acquires ICL at the learning-rate time where ``I_K(s) = N tau_star(beta0)``, and
    never if ``I_K(inf) <= N tau_star(beta0)`` (the bimodality).  The onset is
    ``t = I_K^-1(N tau_star(beta0)) / lr`` (:func:`~icl_kinetics.theory.memorization.inverse_i_k`),
    still decreasing in beta0, so its quantiles are those of beta0; levels above the fraction
    that acquires are ``inf`` (never).  c2 is held constant (default 1/2; a memorizing MLP's c2
    rises from 1/2 towards 1, which delays the escape: pass a larger c2 to bound that).

    Args:
        N: context tokens (target not counted).
        lr: learning rate (the c1 curve's time axis is learning-rate time).
        c1: the memorization curve: :class:`Tabulated` (e.g. a measured c1 table, its iterations
            times lr), :class:`PowerLaw` or :class:`Constant` (c1 = 1/2 gives the K = infinity onsets).
        beta0_mean, beta0_std: the seeds' beta0 ~ Normal(mean, std^2).
        c2, w0, regime, beta_c: as in :func:`~icl_kinetics.theory.escape_time`.

    Raises:
        ParameterError: ``N`` not an integer >= 1; ``lr`` not a finite number > 0; ``c1`` not a
            curve model or a number >= 0; ``beta0_mean`` not finite; ``beta0_std`` not >= 0;
            ``c2``, ``w0``, ``regime``, ``beta_c`` as in :class:`OnsetDistribution`.
    """

    N: int
    lr: float
    c1: object
    beta0_mean: float = 0.0
    beta0_std: float = 1.0
    c2: float = C2_DEFAULT
    w0: float = 0.0
    regime: str = "exact"
    beta_c: float = np.inf

    def __post_init__(self):
        from icl_kinetics.theory.memorization import as_curve

        self.N = positive_int("N", self.N)
        self.lr = positive_float("lr", self.lr)
        self.c1 = as_curve(self.c1, "c1")
        self.beta0_mean = finite_float("beta0_mean", self.beta0_mean)
        self.beta0_std = positive_float("beta0_std", self.beta0_std, allow_zero=True)
        self.c2 = positive_float("c2", self.c2, allow_zero=True)
        self.w0, self.c2, self.regime = _check_regime(self.w0, self.c2, self.regime)
        self.beta_c = real_float("beta_c", self.beta_c, allow_inf=True)

    def i_k_inf(self) -> float:
        """``I_K(inf)`` of the curve (learning-rate time)."""
        return float(self.c1._integral(np.inf))

    def onset_of(self, beta0):
        """Onset (iterations) of seeds with initial beta0 ``beta0``; ``inf`` for a seed that never
        acquires ICL.

        Raises:
            ParameterError: ``beta0`` not finite numbers (or as :func:`escape_time`).
        """
        from icl_kinetics.theory.memorization import inverse_i_k

        tau = escape_time(beta0, w0=self.w0, c2=self.c2, regime=self.regime, beta_c=self.beta_c)
        s = inverse_i_k(self.c1, self.N * np.asarray(tau, float))
        return np.asarray(s, float) / self.lr if np.ndim(s) else float(s) / self.lr

    def fraction_acquired(self) -> float:
        """The fraction of seeds that acquire ICL, ``P(N tau_star(beta0) < I_K(inf))`` (bisection
        of the decreasing map beta0 -> tau_star on [mean - 12 sd, mean + 12 sd])."""
        from scipy.special import ndtr

        target = self.i_k_inf() / self.N
        if math.isinf(target):
            return 1.0
        tau = lambda b: float(escape_time(b, w0=self.w0, c2=self.c2, regime=self.regime,  # noqa: E731
                                          beta_c=self.beta_c))
        if self.beta0_std == 0:
            return float(tau(self.beta0_mean) < target)
        lo, hi = self.beta0_mean - 12 * self.beta0_std, self.beta0_mean + 12 * self.beta0_std
        if tau(lo) < target:
            return 1.0
        if not tau(hi) < target:
            return 0.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if tau(mid) < target else (mid, hi)
        return float(ndtr((self.beta0_mean - 0.5 * (lo + hi)) / self.beta0_std))

    def quantile(self, p):
        """Onset quantiles (iterations) at levels ``p`` of all seeds: ``inf`` where ``p`` is above
        :meth:`fraction_acquired` (those seeds never acquire).

        Raises:
            ParameterError: ``p`` not numbers in (0, 1).
        """
        p = finite_array("p", p, minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True,
                         allowed="numbers in (0, 1) (quantile levels)")
        nd = NormalDist(self.beta0_mean, self.beta0_std) if self.beta0_std > 0 else None
        b = np.vectorize(lambda q: nd.inv_cdf(1 - q) if nd else self.beta0_mean)(p)
        return self.onset_of(b)

    def sample(self, samples: int, seed: int = 0):
        """``samples`` onsets (iterations; ``inf`` for seeds that never acquire) from beta0 drawn
        with ``numpy`` seed ``seed``.

        Raises:
            ParameterError: ``samples`` not an integer >= 1 (or too large for memory); ``seed`` not
                an integer >= 0.
        """
        n = positive_int("samples", samples)
        seed = positive_int("seed", seed, 0)
        require_memory("samples", n, 16 * 8.0 * n, f"sampling {n} onset times")
        rng = np.random.default_rng(seed)
        return self.onset_of(rng.normal(self.beta0_mean, self.beta0_std, n))


#: the bootstrap's default number of resamples (:func:`onset_quantile_ci`, ``onset --c1-table``)
CI_RESAMPLES = 2000
#: fewer seeds than this in a c1 table: no interval is given (a bootstrap over 1 or 2 seeds
#: resamples at most 3 distinct mean curves; its "interval" would say nothing)
MIN_CI_SEEDS = 3


def _checked_seed_curves(seed_curves, name: str = "seed_curves"):
    """(union grid of learning-rate times, values (seeds x times, NaN where a seed has no
    value)) of per-seed c1 curves, checked."""
    items = list(seed_curves.values()) if isinstance(seed_curves, dict) else list(seed_curves)
    if not items:
        raise ParameterError(name, seed_curves, "at least one seed's c1 curve (a pair: learning-rate times, c1)")
    pairs = []
    for i, item in enumerate(items):
        try:
            s, v = item
        except (TypeError, ValueError):
            raise ParameterError(f"{name}[{i}]", item, "a pair (learning-rate times, c1 values)") from None
        s = finite_array(f"{name}[{i}] times", s, minimum=0.0, max_ndim=1, allow_empty=False)
        v = finite_array(f"{name}[{i}] c1", v, minimum=0.0, max_ndim=1, allow_empty=False)
        if s.shape != v.shape or s.ndim != 1:
            raise ParameterError(f"{name}[{i}]", item, f"times and c1 values of one length (got {s.shape} and "
                                 f"{v.shape})")
        if np.any(np.diff(s) <= 0):
            raise ParameterError(f"{name}[{i}] times", s, "strictly increasing learning-rate times")
        pairs.append((s, v))
    grid = np.unique(np.concatenate([s for s, _ in pairs]))
    if grid.size < 2:
        raise ParameterError(name, seed_curves, "curves with at least 2 distinct learning-rate times in all")
    vals = np.full((len(pairs), grid.size), np.nan)
    for i, (s, v) in enumerate(pairs):
        vals[i, np.searchsorted(grid, s)] = v
    return grid, vals


def _weighted_mean_curve(grid, vals, weights):
    """The c1 curve averaged over seeds with ``weights`` (resampling counts) at each time; a time
    that no weighted seed has is left out (the interpolant bridges it)."""
    from icl_kinetics.theory.memorization import Tabulated

    present = ~np.isnan(vals)
    wsum = weights @ present
    keep = wsum > 0
    mean = (weights @ np.where(present, vals, 0.0))[keep] / wsum[keep]
    if keep.sum() < 2:  # every drawn seed has a single time: hold it (nothing else is known)
        t = grid[keep][0]
        return Tabulated((t, t + 1.0), (mean[0], mean[0]))
    return Tabulated(grid[keep], mean)


def mean_c1_curve(seed_curves):
    """The c1 curve averaged over seeds at each learning-rate time (a seed without a value at a
    time is left out of that time's mean), as :class:`~icl_kinetics.theory.memorization.Tabulated`
    (0 beyond the last time: nothing is claimed there).

    Args:
        seed_curves: one ``(s, c1)`` pair per seed (a list, or a dict seed -> pair): strictly
            increasing learning-rate times ``s`` (``lr * iteration``) >= 0 and c1 >= 0.

    Raises:
        ParameterError: an empty ``seed_curves``; a pair whose times are not finite, >= 0 and
            strictly increasing, or whose c1 values are not finite numbers >= 0 of the same
            length; fewer than 2 distinct times over all seeds.
    """
    grid, vals = _checked_seed_curves(seed_curves)
    return _weighted_mean_curve(grid, vals, np.ones(vals.shape[0]))


def onset_quantile_ci(seed_curves, p, *, N: int, lr: float, beta0_mean: float, beta0_std: float,
                      c2: float = C2_DEFAULT, w0: float = 0.0, regime: str = "exact", beta_c: float = np.inf,
                      resamples: int = CI_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict:
    """Finite-K onset quantiles (iterations) driven by a measured c1 curve, with a bootstrap
    interval that carries the seed-to-seed scatter of that curve.

    The point estimate is :meth:`FiniteKOnset.quantile` with c1 = :func:`mean_c1_curve` of all
    seeds.  The interval: ``resamples`` times, draw as many seeds as there are, with
    replacement (``numpy`` generator seeded by ``seed``), average their curves the same way,
    and recompute the quantiles; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
    order statistics of the resampled quantiles (the lower and the upper one: no interpolation,
    so ``inf``, never acquiring, is carried through).  The beta0 spread is the model's, not
    resampled: the interval is the uncertainty of the memorization curve only.  With fewer than
    :data:`MIN_CI_SEEDS` seeds no interval is given (``lo``, ``hi`` are None and ``reason`` says
    why): a bootstrap over 1 or 2 seeds has 1 or 3 distinct resamples.

    Args:
        seed_curves: per-seed c1 curves, as in :func:`mean_c1_curve` (learning-rate time).
        p: quantile levels in (0, 1) of all seeds (levels above the fraction that acquires
            give ``inf``).
        N, lr, beta0_mean, beta0_std, c2, w0, regime, beta_c: as in :class:`FiniteKOnset`.
        resamples: bootstrap resamples (an integer >= 100).
        seed: the resampling generator's seed (an integer >= 0).
        level: the interval's confidence level, in (0, 1).

    Returns:
        dict ``quantile`` (the point estimates, iterations, one per level), ``lo``, ``hi``
        (arrays, or None below :data:`MIN_CI_SEEDS` seeds), ``fraction_acquired`` (of the mean
        curve), ``seeds`` (the number of curves), ``resamples``, ``seed``, ``level``,
        ``reason`` (None when the interval is given).

    Raises:
        ParameterError: ``seed_curves`` as in :func:`mean_c1_curve`; ``p`` not numbers in (0, 1);
            ``resamples`` not an integer >= 100; ``seed`` not an integer >= 0; ``level`` not in
            (0, 1); the onset parameters as in :class:`FiniteKOnset`.
    """
    grid, vals = _checked_seed_curves(seed_curves)
    p = np.atleast_1d(finite_array("p", p, minimum=0.0, maximum=1.0, exclusive_minimum=True,
                                   exclusive_maximum=True, max_ndim=1, allowed="numbers in (0, 1) (quantile levels)"))
    resamples = positive_int("resamples", resamples, 100)
    seed = positive_int("seed", seed, 0)
    level = finite_float("level", level)
    if not 0.0 < level < 1.0:
        raise ParameterError("level", level, "a confidence level in (0, 1)")
    n = vals.shape[0]
    d = FiniteKOnset(N=N, lr=lr, c1=_weighted_mean_curve(grid, vals, np.ones(n)), beta0_mean=beta0_mean,
                     beta0_std=beta0_std, c2=c2, w0=w0, regime=regime, beta_c=beta_c)
    point = np.atleast_1d(d.quantile(p))
    out = {"quantile": point, "lo": None, "hi": None, "fraction_acquired": d.fraction_acquired(), "seeds": n,
           "resamples": resamples, "seed": seed, "level": level, "reason": None}
    if n < MIN_CI_SEEDS:
        out["reason"] = (f"needs >= {MIN_CI_SEEDS} seeds in the c1 table (it has {n}): a bootstrap over fewer "
                         "seeds has too few distinct resamples to give an interval")
        return out
    # the escape times of the quantile levels' beta0 do not depend on c1: computed once
    nd = NormalDist(d.beta0_mean, d.beta0_std) if d.beta0_std > 0 else None
    b = np.array([nd.inv_cdf(1 - q) if nd else d.beta0_mean for q in p])
    target = d.N * np.asarray(escape_time(b, w0=d.w0, c2=d.c2, regime=d.regime, beta_c=d.beta_c), float)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    boot = _resampled_onsets(grid, vals, counts, target) / d.lr
    alpha = (1.0 - level) / 2
    out["lo"] = np.quantile(boot, alpha, axis=0, method="lower")
    out["hi"] = np.quantile(boot, 1 - alpha, axis=0, method="higher")
    return out


def _resampled_onsets(grid, vals, counts, target):
    """Learning-rate times (resamples x levels) at which the integral of each resample's mean c1
    curve reaches ``target``: :func:`~icl_kinetics.theory.memorization.inverse_i_k` of
    :func:`_weighted_mean_curve` for every row of ``counts``, vectorized over the resamples whose
    seeds cover every time of ``grid`` (the others, with ragged seed grids, one at a time)."""
    from icl_kinetics.theory.memorization import inverse_i_k

    present = ~np.isnan(vals)
    full = (counts @ present) == counts.sum(axis=1, keepdims=True)  # a weighted seed at every time
    full = full.all(axis=1)
    out = np.empty((counts.shape[0], target.size))
    for r in np.flatnonzero(~full):
        out[r] = inverse_i_k(_weighted_mean_curve(grid, vals, counts[r]), target)
    if not full.any():
        return out
    w = counts[full]
    mean = (w @ np.where(present, vals, 0.0)) / (w @ present)
    g = grid
    if g[0] > 0:  # the curve is held at its first value from s = 0
        g, mean = np.concatenate([[0.0], g]), np.concatenate([mean[:, :1], mean], axis=1)
    h = np.diff(g)
    cum = np.concatenate([np.zeros((mean.shape[0], 1)), np.cumsum(0.5 * (mean[:, 1:] + mean[:, :-1]) * h, axis=1)],
                         axis=1)
    y = np.broadcast_to(target, (mean.shape[0], target.size))
    i = np.clip((cum[:, None, :] <= y[:, :, None]).sum(axis=-1) - 1, 0, g.size - 2)
    b = np.take_along_axis(mean, i, axis=1)
    a = 0.5 * (np.take_along_axis(mean, i + 1, axis=1) - b) / h[i]  # I = cum + b x + a x^2 in the segment
    rem = np.maximum(y - np.take_along_axis(cum, i, axis=1), 0.0)
    with np.errstate(all="ignore"):
        disc = np.sqrt(np.maximum(b * b + 4 * a * rem, 0.0))
        x = np.where(b + disc > 0, 2 * rem / (b + disc), np.inf)
    s = g[i] + np.minimum(x, h[i])
    out[full] = np.where(y >= cum[:, -1:], np.inf, np.where(y <= 0, 0.0, s))
    return out
