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

from dataclasses import dataclass, field

from statistics import NormalDist

import numpy as np

from icl_kinetics.errors import finite_float, one_of, positive_float, positive_int
from icl_kinetics.theory.closed_form import REGIMES, escape_time


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

    def __post_init__(self):
        self.N = positive_int("N", self.N)
        self.lr = positive_float("lr", self.lr)
        self.beta0_mean = finite_float("beta0_mean", self.beta0_mean)
        self.beta0_std = positive_float("beta0_std", self.beta0_std, allow_zero=True)
        self.c1 = positive_float("c1", self.c1)
        self.c2 = positive_float("c2", self.c2, allow_zero=True)
        one_of("regime", self.regime, REGIMES)

    # -- the map beta0 -> t and its inverse ---------------------------------------------
    def onset_of(self, beta0):
        """``t_icl`` (iterations) of a seed with initial inverse temperature ``beta0``."""
        tau = escape_time(beta0, w0=self.w0, c2=self.c2, regime=self.regime, beta_c=self.beta_c)
        return self.N * tau / (self.lr * self.c1)

    def _table(self):
        if self._grid is None:
            sd = max(self.beta0_std, 1e-3)
            b = np.linspace(self.beta0_mean - 9 * sd, self.beta0_mean + 9 * sd, 2001)
            self._grid = (b, np.log(self.onset_of(b)))
        return self._grid

    def beta0_of(self, t):
        """Inverse map: the beta0 whose onset is ``t`` iterations (monotone interpolation)."""
        b, lt = self._table()
        return np.interp(np.log(np.asarray(t, float)), lt[::-1], b[::-1])

    # -- distribution functions ---------------------------------------------------------
    def cdf(self, t):
        """``P(t_icl <= t)`` = ``P(beta0 >= beta0_of(t))``."""
        t = np.asarray(t, float)
        if self.beta0_std == 0:
            return (t >= self.onset_of(self.beta0_mean)).astype(float)
        from scipy.special import ndtr

        b = self.beta0_of(np.maximum(t, 1e-300))
        return np.where(t > 0, ndtr(-(b - self.beta0_mean) / self.beta0_std), 0.0)

    def pdf(self, t):
        """Density of ``t_icl`` per iteration: ``f_beta(beta0(t)) |d beta0/dt|``."""
        if self.beta0_std == 0:
            raise ValueError("beta0_std=0 is not allowed for pdf: the distribution is a point mass")
        b, lt = self._table()
        t = np.asarray(t, float)
        slope = np.gradient(b, lt)  # d beta0 / d log t  (negative)
        bt = self.beta0_of(t)
        s = np.interp(np.log(t), lt[::-1], slope[::-1])
        z = (bt - self.beta0_mean) / self.beta0_std
        dens = np.exp(-0.5 * z * z) / (self.beta0_std * np.sqrt(2 * np.pi))
        return dens * np.abs(s) / t

    def quantile(self, p):
        """``t_icl`` quantile: ``onset_of(beta0 quantile 1 - p)`` (the map is decreasing)."""
        p = np.asarray(p, float)
        if np.any((p <= 0) | (p >= 1)):
            raise ValueError(f"p={p!r} is not allowed: quantile levels must be in (0, 1)")
        nd = NormalDist(self.beta0_mean, self.beta0_std) if self.beta0_std > 0 else None
        b = np.vectorize(lambda q: nd.inv_cdf(1 - q) if nd else self.beta0_mean)(p)
        return self.onset_of(b)

    def median(self) -> float:
        """Median ``t_icl`` (iterations) = onset of the median beta0."""
        return float(self.onset_of(self.beta0_mean))

    def sample(self, n: int, seed: int = 0):
        """``n`` onset times (iterations) from ``beta0`` drawn with ``numpy`` seed ``seed``."""
        n = positive_int("samples", n)
        rng = np.random.default_rng(seed)
        return self.onset_of(rng.normal(self.beta0_mean, self.beta0_std, n))
