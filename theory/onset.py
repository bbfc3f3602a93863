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
from icl_kinetics.theory.closed_form import _check_regime, _check_scaled, _checked_tau, escape_time

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
        c1, c2: constant MLP coefficients (1/2 without memorization).
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
    c2: float = 0.5
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
