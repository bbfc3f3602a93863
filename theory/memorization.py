"""Memorization curves c1(t), c2(t), c3(t) and the integrated residual error I_K(t).

The MLP enters the induction head's dynamics only through its correct-label logit
``phi_plus = y * phi(x)`` over the training items, summarized by (the paper's c1, c2, c3; docs/theory.md §2)::

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

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from icl_kinetics.errors import ParameterError, finite_array, first_bad, one_of, positive_float, real_float


def _times(s):
    """Learning-rate times: numbers >= 0, inf allowed, never NaN."""
    return finite_array("s", s, minimum=0.0, allow_inf=True)


def mlp_coefficients(phi_plus, axis: int | None = None, weights=None) -> dict:
    """c1, c2, c3 of a sample of correct-label logits ``phi_plus`` (dimensionless).

    ``c1 = <sigma(-phi_plus)>``, ``c2 = 1 - <sigma(-phi_plus)^2> / c1``,
    ``c3 = <exp(-phi_plus)>``: the one definition (the engine computes its logged c1, c2,
    c3 columns with this function).

    Args:
        phi_plus: correct-label logits: an array-like, or a floating-point tensor (any
            object with ``.sigmoid()``, ``.exp()`` and ``.mean(axis)``, e.g. a torch
            tensor; the theory layer never imports torch).
        axis: None: average over all of ``phi_plus`` and return Python floats.  An int:
            average along that axis only and return arrays of the remaining shape, of
            the input's kind (a tensor stays a tensor, on its device and in its dtype)::

                s = sigmoid(-p); c1 = s.mean(axis)
                c2 = 1 - (s * s).mean(axis) / c1;  c3 = exp(-p).mean(axis)

            (for a float64 tensor bit-identical to those torch expressions).
        weights: None (every logit counts equally: the plain means above), or the
            probabilities of the items the logits belong to, under the data
            distribution (Zipf item frequencies): ``<.>`` becomes the expectation
            ``sum_i f_i (.)_i`` with f = weights / sum(weights).  A 1-D array of finite
            numbers >= 0 with a positive sum, one per logit along ``axis`` (all logits,
            flattened, for ``axis=None``).  With None the code path is the unweighted
            one, bit for bit.

    Returns:
        ``{"c1": ..., "c2": ..., "c3": ...}``.

    Raises:
        ParameterError: ``phi_plus`` not a non-empty array of finite numbers, or so
            extreme that a coefficient is not a finite float: c1 underflows to 0 when
            every logit is above ~745 (c2 would be 0/0), c3 = <e^-phi_plus> overflows when
            a logit is below ~ -709 (with ``axis``: checked for each slice).  ``axis`` not
            None or an integer in [-ndim, ndim).  A tensor's values are not checked (that
            would synchronize its device): it must be a non-empty floating-point tensor of
            at least one dimension, and non-finite logits give non-finite coefficients.
    """
    if weights is not None:
        return _coefficients_weighted(phi_plus, axis, weights)
    if axis is None:
        return _coefficients_all(phi_plus)
    if _is_tensor(phi_plus):
        return _coefficients_tensor(phi_plus, axis)
    p = finite_array("phi_plus", phi_plus, allow_empty=False,
                     allowed="a non-empty array of finite numbers")
    ax = _check_axis(axis, p.ndim)
    s = expit(-p)
    c1 = s.mean(ax)
    if np.any(c1 == 0):
        raise ParameterError("phi_plus", phi_plus, "logits not all above ~745 along any slice (c1 = "
                             "<sigma(-phi_plus)> underflowed to 0, so c2 is undefined)")
    with np.errstate(over="ignore"):
        c3 = np.exp(-p).mean(ax)
    if not np.all(np.isfinite(c3)):
        raise ParameterError("phi_plus", phi_plus, "logits above ~ -709 (c3 = <exp(-phi_plus)> "
                             "overflowed" + first_bad("phi_plus", p, p < -709.0, "; {}") + ")")
    return {"c1": c1, "c2": 1.0 - (s * s).mean(ax) / c1, "c3": c3}


def _coefficients_weighted(phi_plus, axis, weights) -> dict:
    """:func:`mlp_coefficients` with ``weights``: expectations sum_i f_i (.)_i, f = weights /
    sum(weights), along ``axis`` (or over all logits); numpy arrays and tensors."""
    tensor = _is_tensor(phi_plus)
    if tensor and not phi_plus.is_floating_point():
        raise ParameterError("phi_plus", phi_plus, f"a floating-point tensor (got dtype {phi_plus.dtype})")
    p = phi_plus if tensor else finite_array("phi_plus", phi_plus, allow_empty=False,
                                             allowed="a non-empty array of finite numbers")
    shape = tuple(p.shape)
    ax = None if axis is None else _check_axis(axis, len(shape)) % len(shape)
    n = int(np.prod(shape)) if ax is None else shape[ax]
    w = finite_array("weights", weights.detach().cpu().numpy() if _is_tensor(weights) else weights,
                     minimum=0.0, max_ndim=1, allow_empty=False,
                     allowed="a 1-D array of finite numbers >= 0 with a positive sum")
    if w.shape != (n,) or not w.sum() > 0:
        raise ParameterError("weights", weights, f"a 1-D array of {n} finite numbers >= 0 (one per logit along "
                             f"axis {axis}) with a positive sum (got shape {w.shape}, sum {float(w.sum())!r})")
    f = w / w.sum()
    if ax is None:
        p = p.reshape(-1)
        ax, bshape = 0, (n,)
    else:
        bshape = tuple(n if i == ax else 1 for i in range(len(shape)))
    f = p.new_tensor(f).reshape(bshape) if tensor else f.reshape(bshape)
    if tensor:
        s, e = (-p).sigmoid(), (-p).exp()
    else:
        s = expit(-p)
        with np.errstate(over="ignore"):
            e = np.exp(-p)
    c1, c3 = (s * f).sum(ax), (e * f).sum(ax)
    if not tensor:
        if np.any(c1 == 0):
            raise ParameterError("phi_plus", phi_plus, "logits not all above ~745 where the weights are positive "
                                 "(c1 underflowed to 0, so c2 is undefined)")
        if not np.all(np.isfinite(c3)):
            raise ParameterError("phi_plus", phi_plus, "logits above ~ -709 (c3 = <exp(-phi_plus)> overflowed)")
    out = {"c1": c1, "c2": 1 - (s * s * f).sum(ax) / c1, "c3": c3}
    if not tensor and axis is None:
        out = {k: float(v) for k, v in out.items()}
    return out


def _coefficients_all(phi_plus) -> dict:
    """:func:`mlp_coefficients` with ``axis=None``: Python floats over all logits."""
    if _is_tensor(phi_plus):
        phi_plus = phi_plus.detach().cpu().numpy()
    p = finite_array("phi_plus", phi_plus, allow_empty=False,
                     allowed="a non-empty array of finite numbers").ravel()
    s = expit(-p)
    c1 = float(s.mean())
    if c1 == 0:
        raise ParameterError("phi_plus", phi_plus, "logits not all above ~745 (c1 = <sigma(-phi_plus)> "
                             "underflowed to 0, so c2 is undefined)")
    with np.errstate(over="ignore"):
        c3 = float(np.mean(np.exp(-p)))
    if not np.isfinite(c3):
        raise ParameterError("phi_plus", phi_plus, "logits above ~ -709 (c3 = <exp(-phi_plus)> "
                             "overflowed" + _first_below(p, -709.0) + ")")
    return {"c1": c1, "c2": float(1.0 - np.mean(s * s) / c1), "c3": c3}


def _is_tensor(x) -> bool:
    """A tensor-like (torch) array, recognized without importing torch."""
    return not isinstance(x, np.ndarray) and all(hasattr(x, m) for m in ("sigmoid", "exp", "mean", "dim"))


def _check_axis(axis, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ParameterError("axis", axis, f"None or an integer in [{-ndim}, {ndim}) for phi_plus of "
                             f"{ndim} dimension(s)")
    return int(axis)


def _coefficients_tensor(p, axis) -> dict:
    """The batched coefficients of a tensor, computed with its own methods."""
    if not p.is_floating_point():
        raise ParameterError("phi_plus", p, f"a floating-point tensor (got dtype {p.dtype})")
    ax = _check_axis(axis, p.dim())
    if p.numel() == 0:
        raise ParameterError("phi_plus", p, f"a non-empty tensor (got shape {tuple(p.shape)})")
    s = (-p).sigmoid()
    c1 = s.mean(ax)
    return {"c1": c1, "c2": 1 - (s * s).mean(ax) / c1, "c3": (-p).exp().mean(ax)}


def _first_below(p, limit):
    i = int(np.flatnonzero(p < limit)[0]) if np.any(p < limit) else None
    return "" if i is None else f"; phi_plus[{i}] = {float(p[i])!r}"


@dataclass(frozen=True)
class Constant:
    """A constant coefficient, ``c(s) = value`` (e.g. c1 = c2 = 1/2 when K -> infinity).

    Raises:
        ParameterError: ``value`` not a finite number >= 0 (constructor); ``s`` not
            numbers >= 0 (inf allowed) in the methods.
    """

    value: float = 0.5

    def __post_init__(self):
        positive_float("value", self.value, allow_zero=True)

    def __call__(self, s):
        return self._at(_times(s))

    def _at(self, s):
        return np.full_like(np.asarray(s, float), self.value)

    def integral(self, s):
        """Integral from 0 to s (learning-rate time); 0 for ``value = 0`` even at ``s = inf``."""
        return self._integral(_times(s))

    def _integral(self, s):
        s = np.asarray(s, float)
        return np.zeros_like(s) if self.value == 0 else self.value * s  # 0 * inf is 0 here, not NaN


@dataclass(frozen=True)
class PowerLaw:
    """``c(s) = c0 * (1 + s / s0) ** (-alpha)``, s in learning-rate time.

    With ``alpha > 1`` the integral converges: ``I(inf) = c0 s0 / (alpha - 1)``.

    Raises:
        ParameterError: ``c0`` or ``s0`` not a finite number > 0, ``alpha`` not a
            finite number >= 0 (constructor); ``s`` not numbers >= 0 (inf allowed) in
            the methods.
    """

    c0: float = 0.5
    s0: float = 1.0
    alpha: float = 1.0

    def __post_init__(self):
        positive_float("c0", self.c0)
        positive_float("s0", self.s0)
        positive_float("alpha", self.alpha, allow_zero=True)

    def __call__(self, s):
        return self._at(_times(s))

    def _at(self, s):
        return self.c0 * (1.0 + np.asarray(s, float) / self.s0) ** (-self.alpha)

    def integral(self, s):
        """Closed-form integral from 0 to s (``inf`` allowed)."""
        return self._integral(_times(s))

    def _integral(self, s):
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

    Raises:
        ParameterError: ``s`` not a 1-D array of >= 2 finite, strictly increasing times
            >= 0; ``values`` not finite numbers >= 0 of the same shape; ``extrapolate``
            not 'zero' or 'hold' (constructor); the methods' ``s`` not numbers >= 0
            (inf allowed).
    """

    s: tuple
    values: tuple
    extrapolate: str = "zero"

    def __post_init__(self):
        s = finite_array("s", self.s, minimum=0.0, max_ndim=1,
                         allowed="a 1-D array of finite learning-rate times >= 0")
        v = finite_array("values", self.values, minimum=0.0, max_ndim=1,
                         allowed="a 1-D array of finite numbers >= 0")
        if s.ndim != 1 or s.size < 2:
            raise ParameterError("s", self.s, "a 1-D array of >= 2 times")
        if s.shape != v.shape:
            raise ParameterError("values", self.values, f"the same shape as s {s.shape} (got {v.shape})")
        if np.any(np.diff(s) <= 0):
            i = int(np.flatnonzero(np.diff(s) <= 0)[0]) + 1
            raise ParameterError("s", self.s, f"strictly increasing (s[{i}] = {float(s[i])!r} <= "
                                 f"s[{i - 1}] = {float(s[i - 1])!r})")
        one_of("extrapolate", self.extrapolate, ("zero", "hold"))
        object.__setattr__(self, "s", tuple(s))
        object.__setattr__(self, "values", tuple(v))

    def __call__(self, s):
        return self._at(_times(s))

    def _at(self, s):
        t, v = np.asarray(self.s), np.asarray(self.values)
        right = v[-1] if self.extrapolate == "hold" else 0.0
        return np.interp(np.asarray(s, float), t, v, left=v[0], right=right)

    def integral(self, s):
        """Exact integral of the piecewise-linear interpolant from 0 to s (``inf`` allowed)."""
        return self._integral(_times(s))

    def _integral(self, s):
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
        # held at v[-1] after the data (0 * inf is 0 here: a curve held at 0 adds nothing)
        tail = (np.maximum(s - grid[-1], 0.0) * v[-1]) if self.extrapolate == "hold" and v[-1] != 0 else 0.0
        return inside + tail


CURVES = (Constant, PowerLaw, Tabulated)


def as_curve(c, name: str = "c") -> Constant | PowerLaw | Tabulated:
    """Accept a curve model, or a finite number >= 0 (-> :class:`Constant`); else a
    ParameterError naming ``name`` (the caller's argument)."""
    if isinstance(c, CURVES):
        return c
    return Constant(real_float(name, c, minimum=0.0,
                               allowed="a finite number >= 0 or a curve model (Constant, PowerLaw, Tabulated)"))


def i_k(c1, s):
    """Integrated residual error ``I_K(s) = integral_0^s c1(s') ds'``.

    Args:
        c1: a curve model (or a constant).
        s: learning-rate time ``eta * t`` (t in iterations); ``inf`` allowed.

    Returns:
        I_K in learning-rate time units (same shape as ``s``).

    Raises:
        ParameterError: ``c1`` not a curve model or a finite number >= 0; ``s`` not
            numbers >= 0 (inf allowed).
    """
    return as_curve(c1, "c1")._integral(_times(s))


def inverse_i_k(c1, i_k):
    """The learning-rate time ``s`` at which ``I_K(s) = integral_0^s c1`` reaches ``i_k``.

    Exact for the three curve models (a quadratic within a segment of :class:`Tabulated`,
    closed forms for :class:`Constant` and :class:`PowerLaw`); ``inf`` where ``target``
    is at or beyond ``I_K(inf)`` (never reached), 0 where ``i_k <= 0``.  ``i_k`` in learning-rate time.

    Raises:
        ParameterError: ``c1`` not a curve model or a finite number >= 0; ``i_k`` NaN.
    """
    c = as_curve(c1, "c1")
    target = i_k
    y = finite_array("i_k", target, allow_inf=True)
    total = float(c._integral(np.inf))
    with np.errstate(all="ignore"):
        if isinstance(c, Constant):
            s = y / c.value if c.value > 0 else np.full(y.shape, np.inf)
        elif isinstance(c, PowerLaw):
            u = y / (c.c0 * c.s0)
            x = np.exp(u) if c.alpha == 1.0 else (1.0 + u * (1.0 - c.alpha)) ** (1.0 / (1.0 - c.alpha))
            s = c.s0 * (x - 1.0)
        else:
            s = _tabulated_inverse(c, y)
        s = np.where(y >= total, np.inf, np.where(y <= 0, 0.0, s))
    return s if np.ndim(target) else float(s)


def _tabulated_inverse(c: "Tabulated", y):
    t, v = np.asarray(c.s), np.asarray(c.values)
    grid = np.concatenate([[0.0], t]) if t[0] > 0 else t
    vals = np.concatenate([[v[0]], v]) if t[0] > 0 else v
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (vals[1:] + vals[:-1]) * np.diff(grid))])
    y = np.asarray(y, float)
    yc = np.clip(y, 0.0, cum[-1])
    i = np.clip(np.searchsorted(cum, yc, side="right") - 1, 0, grid.size - 2)
    h = grid[i + 1] - grid[i]
    a = 0.5 * (vals[i + 1] - vals[i]) / h  # I = cum + y0 x + a x^2 within the segment
    r = yc - cum[i]
    b = vals[i]
    disc = np.sqrt(np.maximum(b * b + 4 * a * r, 0.0))
    x = np.where(np.abs(a) > 1e-300, 2 * r / np.where(b + disc > 0, b + disc, np.inf), r / np.where(b > 0, b, np.inf))
    out = grid[i] + np.minimum(x, h)
    if c.extrapolate == "hold" and v[-1] > 0:
        out = np.where(y > cum[-1], grid[-1] + (y - cum[-1]) / v[-1], out)
    return out


def memorization_law_fit(K, i_k_inf, level: float = 0.95) -> dict:
    """``I_K(inf) = A K^nu``: least squares of ln I on ln K, with t intervals (n - 2 degrees of
    freedom) for ``nu`` and ``ln A``.

    Args:
        K: the numbers of training items (>= 3 distinct values > 0).
        i_k_inf: the integrated residual error at each K (learning-rate time, > 0).
        level: the intervals' confidence level.

    Returns:
        dict ``amplitude`` (A, learning-rate time), ``amplitude_ci``, ``nu``, ``nu_ci``, ``n``
        (points) and ``r2``.

    Raises:
        ParameterError: ``K``, ``i_k_inf`` not finite numbers > 0 of the same length, with at
            least 3 distinct K (2 points leave no degree of freedom for an interval).
    """
    from scipy import stats

    k = finite_array("K", K, minimum=0.0, exclusive_minimum=True, max_ndim=1)
    y = finite_array("i_k_inf", i_k_inf, minimum=0.0, exclusive_minimum=True, max_ndim=1)
    if k.shape != y.shape:
        raise ParameterError("i_k_inf", i_k_inf, f"one value per K ({k.size} K, {y.size} values)")
    if np.unique(k).size < 3:
        raise ParameterError("K", K, "at least 3 distinct values (a power law with an interval needs n - 2 >= 1 "
                             "degrees of freedom)")
    x, ly = np.log(k), np.log(y)
    n = x.size
    nu, la = np.polyfit(x, ly, 1)
    resid = ly - (la + nu * x)
    s2 = float(resid @ resid) / (n - 2)
    sxx = float(((x - x.mean()) ** 2).sum())
    se_nu = math.sqrt(s2 / sxx)
    se_la = math.sqrt(s2 * (1.0 / n + x.mean() ** 2 / sxx))
    tq = float(stats.t.ppf(0.5 + level / 2, n - 2))
    ss = float(((ly - ly.mean()) ** 2).sum())
    return {"amplitude": float(math.exp(la)),
            "amplitude_ci": (float(math.exp(la - tq * se_la)), float(math.exp(la + tq * se_la))),
            "nu": float(nu), "nu_ci": (float(nu - tq * se_nu), float(nu + tq * se_nu)), "n": n,
            "r2": 1.0 - float(resid @ resid) / ss if ss > 0 else 1.0, "level": level}
