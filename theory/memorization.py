"""Memorization curves c1(t), c2(t), c3(t) and the integrated residual error I_K(t).

The MLP enters the induction head's dynamics only through its correct-label logit
``phi_plus = y * phi(x)`` over the training items, summarized by (paper-notes §2)::

    c1 = < sigma(-phi_plus) >                 residual error (1/2 at init)
    c2 = 1 - < sigma(-phi_plus)^2 > / c1      so that c1 c2 = < sigma (1 - sigma) >
    c3 = < exp(-phi_plus) >                   large-margin error (transience)

A curve model maps **learning-rate time** ``s = eta * t`` (t in iterations) to a
coefficient.  Three models: :class:`Constant`, :class:`PowerLaw` and
:class:`Tabulated` (a measured curve).

``I_K(s) = integral_0^s c1(s') ds'`` (:func:`i_k`), in learning-rate time.  The
induction head escapes its plateau when ``I_K / N`` reaches the escape time
``tau_star`` (``docs/theory.md`` §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from icl_kinetics.errors import ParameterError, finite_float, positive_float


def mlp_coefficients(phi_plus) -> dict:
    """c1, c2, c3 of a sample of correct-label logits ``phi_plus`` (dimensionless)."""
    p = np.asarray(phi_plus, float).ravel()
    if p.size == 0 or not np.all(np.isfinite(p)):
        raise ParameterError("phi_plus", "array", "a non-empty array of finite numbers")
    s = expit(-p)
    c1 = float(s.mean())
    return {"c1": c1, "c2": float(1.0 - np.mean(s * s) / c1), "c3": float(np.mean(np.exp(-p)))}


@dataclass(frozen=True)
class Constant:
    """A constant coefficient, ``c(s) = value`` (e.g. c1 = c2 = 1/2 when K -> infinity)."""

    value: float = 0.5

    def __post_init__(self):
        positive_float("value", self.value, allow_zero=True)

    def __call__(self, s):
        return np.full_like(np.asarray(s, float), self.value)

    def integral(self, s):
        """Integral from 0 to s (learning-rate time)."""
        return self.value * np.asarray(s, float)


@dataclass(frozen=True)
class PowerLaw:
    """``c(s) = c0 * (1 + s / s0) ** (-alpha)``, s in learning-rate time.

    With ``alpha > 1`` the integral converges: ``I(inf) = c0 s0 / (alpha - 1)``.
    """

    c0: float = 0.5
    s0: float = 1.0
    alpha: float = 1.0

    def __post_init__(self):
        positive_float("c0", self.c0)
        positive_float("s0", self.s0)
        positive_float("alpha", self.alpha, allow_zero=True)

    def __call__(self, s):
        return self.c0 * (1.0 + np.asarray(s, float) / self.s0) ** (-self.alpha)

    def integral(self, s):
        """Closed-form integral from 0 to s (``inf`` allowed)."""
        x = 1.0 + np.asarray(s, float) / self.s0
        if self.alpha == 1.0:
            return self.c0 * self.s0 * np.log(x)
        with np.errstate(over="ignore", divide="ignore"):
            return self.c0 * self.s0 * (x ** (1.0 - self.alpha) - 1.0) / (1.0 - self.alpha)


@dataclass(frozen=True)
class Tabulated:
    """A measured curve: values at learning-rate times ``s`` (strictly increasing, s[0] >= 0).

    Between samples the curve is interpolated linearly; before ``s[0]`` it is held
    at ``values[0]``; after ``s[-1]`` at ``values[-1]`` if ``extrapolate='hold'`` or
    at 0 if ``extrapolate='zero'`` (the default: nothing is claimed beyond the data).
    """

    s: tuple
    values: tuple
    extrapolate: str = "zero"

    def __post_init__(self):
        s = np.asarray(self.s, float)
        v = np.asarray(self.values, float)
        if s.ndim != 1 or s.size < 2 or s.shape != v.shape:
            raise ParameterError("s", f"shape {s.shape}", "a 1-D array of >= 2 times, same shape as values")
        if np.any(np.diff(s) <= 0) or s[0] < 0 or not np.all(np.isfinite(s)):
            raise ParameterError("s", "array", "strictly increasing, finite and >= 0")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ParameterError("values", "array", "finite and >= 0")
        if self.extrapolate not in ("zero", "hold"):
            raise ParameterError("extrapolate", self.extrapolate, "'zero' or 'hold'")
        object.__setattr__(self, "s", tuple(s))
        object.__setattr__(self, "values", tuple(v))

    def __call__(self, s):
        t, v = np.asarray(self.s), np.asarray(self.values)
        right = v[-1] if self.extrapolate == "hold" else 0.0
        return np.interp(np.asarray(s, float), t, v, left=v[0], right=right)

    def integral(self, s):
        """Exact integral of the piecewise-linear interpolant from 0 to s."""
        t, v = np.asarray(self.s), np.asarray(self.values)
        grid = np.concatenate([[0.0], t]) if t[0] > 0 else t
        vals = np.concatenate([[v[0]], v]) if t[0] > 0 else v
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (vals[1:] + vals[:-1]) * np.diff(grid))])
        s = np.asarray(s, float)
        # within a segment the interpolant is linear: add the partial trapezoid exactly
        idx = np.clip(np.searchsorted(grid, np.minimum(s, grid[-1]), side="right") - 1, 0, grid.size - 2)
        s_c = np.minimum(s, grid[-1])
        x0, x1, y0, y1 = grid[idx], grid[idx + 1], vals[idx], vals[idx + 1]
        y_s = y0 + (y1 - y0) * (s_c - x0) / (x1 - x0)
        inside = cum[idx] + 0.5 * (y0 + y_s) * (s_c - x0)
        tail = (np.maximum(s - grid[-1], 0.0) * v[-1]) if self.extrapolate == "hold" else 0.0
        return inside + tail


def as_curve(c) -> Constant | PowerLaw | Tabulated:
    """Accept a curve model, or a number (-> :class:`Constant`)."""
    if isinstance(c, (Constant, PowerLaw, Tabulated)):
        return c
    return Constant(finite_float("c", c))


def i_k(c1, s):
    """Integrated residual error ``I_K(s) = integral_0^s c1(s') ds'``.

    Args:
        c1: a curve model (or a constant).
        s: learning-rate time ``eta * t`` (t in iterations); ``inf`` allowed.

    Returns:
        I_K in learning-rate time units (same shape as ``s``).
    """
    return as_curve(c1).integral(s)
