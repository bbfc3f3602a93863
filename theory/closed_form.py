"""Closed forms of the reduced model: invariant, escape, t_ICL, K* and P(ICL).

All results here follow from the reduced ODEs (``docs/theory.md`` §3), written in
the **reduced time** ``tau = I_K(s) / N`` (``s = eta * t`` learning-rate time, t in
iterations; for constant c1, ``tau = eta * c1 * t / N``)::

    dw/dtau    = e^beta - c2 * w          (c2 * w: context-label noise)
    dbeta/dtau = w * e^beta

With ``v = e^-beta``: ``v'' + c2 v' + 1/v = 0``.  Rescaling ``v = v0 V``,
``tau = v0 T`` (``v0 = e^-beta0``) leaves one parameter, ``gamma = c2 e^-beta0``::

    V'' + gamma V' + 1/V = 0,   V(0) = 1,  V'(0) = -w0.

``V`` reaches 0 (beta and w blow up: ICL is acquired) at a finite ``T*(gamma, w0)``:
the **escape time** ``tau_star = e^-beta0 T*``.  Two regimes have closed forms:

* ``regime='signal'`` (noise dropped, valid for ``gamma << 1``, i.e. ``beta0 >~ ln c2 + 1``):
  ``beta - w^2/2`` is conserved and
  ``tau_star = e^-beta0 e^(w0^2/2) sqrt(pi/2) erfc(w0/sqrt 2)`` (= sqrt(pi/2) e^-beta0 for w0 = 0).
  Exact for the noise-free reduced ODE.
* ``regime='noise'`` (``gamma >> 1``, i.e. ``-beta0 >> 1``): w follows
  ``e^beta / c2`` adiabatically and ``tau_star = c2 e^(-2 beta0) / 2``.
  Exact as ``gamma -> infinity``; the relative error falls like ``ln(gamma)/gamma^2``.
* ``regime='exact'`` integrates the scaled ODE numerically (vectorized over beta0).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from icl_kinetics.errors import (
    ParameterError, boolean, broadcast_shape, finite_array, finite_float, first_bad, int_array, one_of,
    positive_float, positive_int,
)

REGIMES = ("exact", "signal", "noise")
_SIGMA_MAX = 8.0  # integrate s = beta - beta0 up to 64: the remaining time is < e^-60
GAMMA_NUMERIC_MAX = 1e12  # the sigma-parametrized integration is reliable up to here (fails ~1e16)
REFERENCE_MAX_STEPS = 2e5  # escape_time_reference: ~c2 * tau explicit steps on the noise plateau
#: The one default of c2 (escape_time, t_icl, k_star, critical_beta0, p_icl, OnsetDistribution):
#: c2 = 1 - <sigma(-phi_plus)^2> / c1 is exactly 1/2 for an untrained MLP (phi_plus = 0) and stays
#: 1/2 at K = infinity (nothing is memorized); a memorizing MLP with phi_plus >= 0 has
#: c2 in [1/2, 1) (sigma <= 1/2 gives <sigma^2> <= c1/2), so 1/2 is also the least context-label
#: noise a memorizing MLP can have.  c2 = 0 drops the noise: the paper's closed forms
#: (K* = (sqrt(pi/2) N e^-beta0 / A)^(1/nu)).
C2_DEFAULT = 0.5


def trajectory_invariant(w, beta):
    """``beta - w^2 / 2``: conserved by the noise-free reduced flow (dimensionless).

    Raises:
        ParameterError: ``w`` or ``beta`` not finite numbers, shapes that do not
            broadcast, or ``|w|`` so large that ``w^2`` overflows.
    """
    w_a = finite_array("w", w)
    b_a = finite_array("beta", beta)
    broadcast_shape(w=w_a, beta=b_a)
    with np.errstate(over="ignore"):
        out = b_a - 0.5 * w_a ** 2
    if not np.all(np.isfinite(out)):
        raise ParameterError("w", w, "small enough that w^2 / 2 is a finite float (|w| < ~1.3e154)")
    return out


def _check_regime(w0, c2, regime):
    """Validated (w0, c2, regime) with the regime's rule on w0."""
    one_of("regime", regime, REGIMES)
    w0 = finite_float("w0", w0)
    c2 = positive_float("c2", c2, allow_zero=True)
    if regime == "signal" or c2 == 0:
        return w0, c2, regime
    if regime == "noise" and w0 != 0:
        raise ParameterError("w0", w0, "0 with regime='noise' (or use regime='exact' or 'signal')")
    if regime == "exact" and w0 < 0:
        raise ParameterError("w0", w0, ">= 0 with regime='exact' (use escape_time_reference for w0 < 0)")
    return w0, c2, regime


def escape_condition(i_k_inf, N: int, beta0, w0: float = 0.0, c2: float = C2_DEFAULT, regime: str = "exact"):
    """True where the head escapes: ``I_K(inf) / N > tau_star(beta0)``.

    ``i_k_inf`` is the total integrated residual error in learning-rate time.

    Raises:
        ParameterError: ``i_k_inf`` not numbers >= 0 (inf allowed); ``N`` not an integer
            >= 1; shapes that do not broadcast; anything :func:`escape_time` refuses.
    """
    ik = finite_array("i_k_inf", i_k_inf, minimum=0.0, allow_inf=True)
    N = positive_int("N", N)
    tau = escape_time(beta0, w0=w0, c2=c2, regime=regime)
    broadcast_shape(i_k_inf=ik, beta0=tau)
    return np.asarray(i_k_inf, float) / N > tau


def _signal_tau(beta0, w0, s_c):
    """Noise-free escape (or threshold-crossing) reduced time; s_c = beta_c - beta0."""
    beta0 = np.asarray(beta0, float)
    pref = np.exp(-beta0 + 0.5 * w0**2) * math.sqrt(math.pi / 2)
    if np.all(np.isposinf(s_c)):  # blow-up (beta_c = +inf); -inf: already past, 0 below
        return pref * math.erfc(w0 / math.sqrt(2))
    from scipy.special import erf

    w_c = np.sqrt(w0**2 + 2 * np.maximum(s_c, 0.0))
    return pref * (erf(w_c / math.sqrt(2)) - erf(w0 / math.sqrt(2)))


def _scaled_escape(gamma, w0: float, s_c):
    """T at which s = beta - beta0 reaches ``s_c`` (inf: blow-up) in the scaled ODE.

    Parametrized by sigma = sqrt(s) and q = w^2/2 (w0 >= 0, so s grows monotonically)::

        dq/dsigma = 2 sigma (1 - gamma sqrt(2q) e^-sigma^2)
        dT/dsigma = 2 sigma e^-sigma^2 / sqrt(2q)

    which is regular at sigma = 0 and stiff only in q for large gamma.  All gammas
    are integrated in one call (vectorized, block-diagonal Jacobian).
    """
    from scipy import integrate, sparse

    gamma = np.atleast_1d(np.asarray(gamma, float))
    s_c = np.broadcast_to(np.asarray(s_c, float), gamma.shape)
    n = gamma.size
    sig0 = 1e-7 if w0 == 0 else 0.0
    q0 = np.full(n, sig0**2 if w0 == 0 else 0.5 * w0**2)
    T0 = np.full(n, math.sqrt(2) * sig0 if w0 == 0 else 0.0)

    def rhs(sig, y):
        q = np.maximum(y[:n], 1e-300)
        e = math.exp(-sig * sig)
        r = np.sqrt(2 * q)
        return np.concatenate([2 * sig * (1 - gamma * r * e), 2 * sig * e / r])

    def jac(sig, y):
        q = np.maximum(y[:n], 1e-300)
        e = math.exp(-sig * sig)
        r = np.sqrt(2 * q)
        dqq = -2 * sig * gamma * e / r
        dTq = -2 * sig * e / r**3
        return sparse.bmat([[sparse.diags(dqq), None], [sparse.diags(dTq), sparse.csr_matrix((n, n))]],
                           format="csc")

    sig_c = np.sqrt(np.clip(s_c, 0, _SIGMA_MAX**2))
    sol = integrate.solve_ivp(rhs, (sig0, _SIGMA_MAX), np.concatenate([q0, T0]), method="Radau",
                              jac=jac, rtol=1e-10, atol=1e-12, dense_output=True)
    if not sol.success:  # pragma: no cover - solver failure is reported, not hidden
        raise RuntimeError(f"escape-time integration failed: {sol.message}")
    T = np.empty(n)
    for val in np.unique(sig_c):
        idx = sig_c == val
        T[idx] = sol.y[n:, -1][idx] if val >= _SIGMA_MAX else sol.sol(max(val, sig0))[n:][idx]
    return T


@lru_cache(maxsize=1)
def _escape_table():
    with np.load(Path(__file__).with_name("escape_table.npz")) as f:
        return np.log(f["gamma"]), np.log(f["T"]), f["dlogT"]


def _hermite(x, xs, ys, ds):
    """Cubic Hermite interpolation of (xs, ys) with slopes ds (xs uniform or not)."""
    i = np.clip(np.searchsorted(xs, x) - 1, 0, xs.size - 2)
    h = xs[i + 1] - xs[i]
    t = (x - xs[i]) / h
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * ys[i] + (t3 - 2 * t2 + t) * h * ds[i]
            + (-2 * t3 + 3 * t2) * ys[i + 1] + (t3 - t2) * h * ds[i + 1])


def scaled_escape_time(gamma):
    """Universal escape time ``T*(gamma)`` of ``V'' + gamma V' + 1/V = 0`` (w0 = 0).

    Cubic Hermite interpolation of a table (``escape_table.npz``: log T* and its slope
    at 321 log-spaced points over gamma in [1e-4, 1e4], relative interpolation error
    < 1e-7, checked in the tests against fresh integrations; regenerate with
    ``tools/make_escape_table.py``) and continues it by its asymptotes:
    ``T* -> sqrt(pi/2) + k gamma`` as gamma -> 0 and ``T* -> gamma/2 + O(ln gamma / gamma)``
    as gamma -> infinity.  Dimensionless.

    Raises:
        ParameterError: ``gamma`` not finite numbers >= 0 (the first bad element is named).
    """
    lg, lT, dlT = _escape_table()
    g, T = np.exp(lg), np.exp(lT)
    x = finite_array("gamma", gamma, minimum=0.0)
    inside = np.exp(_hermite(np.log(np.clip(x, g[0], g[-1])), lg, lT, dlT))
    k = (T[0] - math.sqrt(math.pi / 2)) / g[0]
    with np.errstate(over="ignore"):
        low = math.sqrt(math.pi / 2) + k * x
    high = 0.5 * x + (T[-1] - 0.5 * g[-1]) * g[-1] * np.log(np.maximum(x, g[-1])) / (
        np.maximum(x, g[-1]) * math.log(g[-1]))
    return np.where(x < g[0], low, np.where(x > g[-1], high, inside))


def _tau(beta0, w0, c2, regime, s_c, name, value):
    """The escape time for validated inputs (the computation of :func:`escape_time`);
    ``name``/``value`` is what a refusal of the validated float array ``beta0`` calls it."""
    if regime == "signal" or c2 == 0:
        return _signal_tau(beta0, w0, s_c)
    if regime == "noise":
        a_c = np.exp(-2 * np.maximum(s_c, 0.0))  # v^2 goes from v0^2 to v_c^2
        return 0.5 * c2 * np.exp(-2 * beta0) * (1 - a_c)
    if w0 == 0 and np.all(np.isposinf(s_c)):
        gamma = c2 * np.exp(-beta0)
        if not np.all(np.isfinite(gamma)):  # e^-beta0 overflowed, and so does tau_star there
            out = np.full(beta0.shape, np.inf)
            ok = np.isfinite(gamma)
            out[ok] = np.exp(-beta0[ok]) * scaled_escape_time(gamma[ok])
            return out
        return np.exp(-beta0) * scaled_escape_time(c2 * np.exp(-beta0))
    gamma = c2 * np.exp(-beta0)
    if np.any(gamma > GAMMA_NUMERIC_MAX):
        lo = math.log(c2 / GAMMA_NUMERIC_MAX)
        raise ParameterError(name, value, f">= {lo:.4g} with c2={c2:g} for regime='exact' with w0 > 0 or a "
                             f"finite beta_c: gamma = c2 e^-beta0 must be <= {GAMMA_NUMERIC_MAX:g} for the "
                             "numerical integration" + first_bad(name, beta0, gamma > GAMMA_NUMERIC_MAX, " ({})")
                             + "; regime='noise' is accurate there (relative error ~ ln(gamma)/gamma^2)")
    flat = beta0.ravel()
    uniq, inv = np.unique(np.stack([flat, np.broadcast_to(s_c, beta0.shape).ravel()]), axis=1, return_inverse=True)
    T = _scaled_escape(c2 * np.exp(-uniq[0]), w0, uniq[1])
    return (np.exp(-uniq[0]) * T)[inv.ravel()].reshape(beta0.shape)


def _checked_tau(beta0, w0, c2, regime, beta_c, name="beta0", value=None):
    """:func:`_tau` with its result checked: finite everywhere, and > 0 wherever
    beta0 < beta_c (0 there is an underflow, not an escape)."""
    value = beta0 if value is None else value
    s_c = beta_c - beta0
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        tau = _tau(beta0, w0, c2, regime, s_c, name, value)
        t = np.asarray(tau, float)
        zero = (t <= 0) & (s_c > 0)
    bad = ~np.isfinite(t) | zero
    if np.any(bad):
        what = "overflowed to inf" if not np.all(np.isfinite(t)) else "underflowed to 0"
        if not np.all(np.isfinite(t)) and w0 * w0 / 2 > 700:
            raise ParameterError("w0", w0, f"small enough that the escape time is a finite float (it {what}; "
                                 "e^(w0^2/2) overflows for |w0| > ~37)")
        if c2 > 1e100:
            raise ParameterError("c2", c2, f"small enough that the escape time is a finite float (it {what})")
        signal = regime == "signal" or c2 == 0
        if what.startswith("over"):
            lim = "above ~ -709" if signal else "above ~ -354 (tau_star ~ c2 e^(-2 beta0) / 2)"
        else:
            lim = "below ~ 372 (tau_star ~ c2 e^(-2 beta0) / 2)" if regime == "noise" else "below ~ 745"
        b_show = np.broadcast_to(beta0, bad.shape)
        raise ParameterError(name, value, f"{lim}: the escape time tau_star {what}"
                             + first_bad(name, b_show, bad, " at {}"))
    return tau


def escape_time(beta0, w0: float = 0.0, c2: float = C2_DEFAULT, regime: str = "exact", beta_c: float = np.inf):
    """Escape time ``tau_star`` of the induction head, in reduced time ``tau = I_K / N``.

    Args:
        beta0: initial inverse temperature (array-like).
        w0: initial readout weight (scalar; ``regime='exact'`` needs ``w0 >= 0``).
        c2: MLP coefficient c2, held constant (1/2 for an untrained MLP or no MLP);
            ``c2 = 0`` drops the context-label noise.
        regime: ``'exact'`` (numeric, noise included), ``'signal'`` or ``'noise'``
            (closed forms, see module docstring).
        beta_c: stop when beta reaches ``beta_c`` instead of at blow-up (e.g. the
            beta at which the ICL accuracy reaches the acquisition threshold
            ``T_ICL_THRESHOLD`` = 0.95, :func:`icl_threshold_beta`);
            where ``beta0 >= beta_c`` the escape time is 0.

    Returns:
        ``tau_star`` (dimensionless reduced time); the learning-rate time is
        ``N * tau_star / c1`` and the iteration count ``N * tau_star / (eta * c1)``.

    Raises:
        ParameterError: ``beta0`` not finite numbers; ``w0`` not finite (and not 0 for
            ``regime='noise'``, not >= 0 for ``'exact'``); ``c2`` not a finite number >= 0;
            unknown ``regime``; ``beta_c`` NaN or not broadcastable with ``beta0``.
            Degenerate results are refused, naming the parameter responsible (usually
            ``beta0``): ``tau_star`` must be a finite float, and > 0 wherever
            ``beta0 < beta_c`` (it overflows for beta0 below ~ -354 with noise, ~ -709
            without; it underflows to 0 above ~745, ~372 in the noise regime).
            ``regime='exact'`` with ``w0 > 0`` or a finite ``beta_c`` integrates
            numerically and needs ``gamma = c2 e^-beta0 <= 1e12``.
    """
    w0, c2, regime = _check_regime(w0, c2, regime)
    beta0_a = finite_array("beta0", beta0)
    beta_c_a = finite_array("beta_c", beta_c, allow_inf=True)
    broadcast_shape(beta0=beta0_a, beta_c=beta_c_a)
    return _checked_tau(beta0_a, w0, c2, regime, beta_c_a, "beta0", beta0)


def escape_time_reference(beta0: float, w0: float = 0.0, c2: float = C2_DEFAULT, beta_stop: float = 20.0,
                          tail: bool = True) -> float:
    """Reference escape time by direct ``solve_ivp`` of the reduced ODE in tau (any w0).

    Integrates ``dw/dtau = e^beta - c2 w``, ``dbeta/dtau = w e^beta`` until
    ``beta = beta0 + beta_stop``, then (``tail=True``) adds the time left to blow-up,
    ``e^-beta / w`` to leading order (itself ~ e^-(beta0 + beta_stop)).
    Slow but independent of the parametrization used by :func:`escape_time`.
    Returns ``inf`` if beta does not reach ``beta0 + beta_stop`` by ``tau = 1e12``.

    Raises:
        ParameterError: ``beta0``, ``w0`` not finite; ``c2`` not a finite number >= 0;
            ``beta_stop`` not a finite number > 0, or ``beta0 + beta_stop > 700``
            (``e^beta`` must stay finite); ``tail`` not a bool; ``beta0`` so negative
            that the explicit integration would take more than ~2e5 steps on the noise
            plateau (about ``c2 * tau_star`` of them: beta0 below ~ -7.1 for c2 = 1/2;
            use :func:`escape_time` there).
    """
    beta0 = finite_float("beta0", beta0)
    w0 = finite_float("w0", w0)
    c2 = positive_float("c2", c2, allow_zero=True)
    beta_stop = positive_float("beta_stop", beta_stop)
    tail = boolean("tail", tail)
    if beta0 + beta_stop > 700:
        raise ParameterError("beta_stop" if beta0 <= 700 else "beta0", beta_stop if beta0 <= 700 else beta0,
                             f"such that beta0 + beta_stop <= 700 (e^beta must stay finite; "
                             f"beta0 + beta_stop = {beta0 + beta_stop:g})")
    if c2 > 0:  # explicit steps ~ c2 * (time integrated), the time capped at 1e12 below
        with np.errstate(over="ignore"):
            e = float(np.exp(-beta0))
            gamma = c2 * e
            tau_est = e * float(scaled_escape_time(gamma)) if math.isfinite(gamma) else math.inf
        steps = c2 * min(tau_est, 1e12)
        if not steps <= REFERENCE_MAX_STEPS:
            raise ParameterError("beta0", beta0, f"large enough that the explicit reference integration stays "
                                 f"short: with c2={c2:g} its noise plateau needs ~{steps:.2g} steps (limit "
                                 f"{REFERENCE_MAX_STEPS:g}); use escape_time for such beta0")

    def rhs(tau, y):
        wv, b = y
        a = math.exp(b)
        return [a - c2 * wv, wv * a]

    def hit(tau, y):
        return y[1] - (beta0 + beta_stop)

    from scipy import integrate

    hit.terminal = True
    sol = integrate.solve_ivp(rhs, (0, 1e12), [w0, beta0], events=hit, method="DOP853",
                              rtol=1e-12, atol=1e-12)
    if sol.t_events[0].size == 0:
        return math.inf
    w_s, b_s = sol.y_events[0][0]
    return float(sol.t_events[0][0] + (math.exp(-b_s) / w_s if tail else 0.0))


def _blame(contributions: dict, what: str, result_name: str):
    """A ParameterError naming the parameter whose ``contributions`` (its share of
    ``log(result)``, signed so that the largest is the most responsible) is largest."""
    name = max(contributions, key=lambda k: contributions[k][0])
    value = contributions[name][1]
    return ParameterError(name, value, f"such that {result_name} is a finite float > 0 (it {what})")


def t_icl(N: int, beta0, lr: float, w0: float = 0.0, c1: float = 0.5, c2: float = C2_DEFAULT,
          regime: str = "exact", beta_c: float = np.inf):
    """ICL onset time in **iterations** for constant c1, c2 (K -> infinity: c1 = c2 = 1/2).

    ``t_icl = N * tau_star / (lr * c1)``.  With ``regime='signal'`` and w0 = 0 this is
    ``sqrt(2 pi) N e^-beta0 / lr``; with ``regime='noise'`` it is
    ``c2 N e^(-2 beta0) / (2 lr c1)``.  N counts context tokens (target not counted).
    Where ``beta0 >= beta_c`` the onset is 0 (the seed starts past the threshold).

    Raises:
        ParameterError: ``N`` not an integer >= 1; ``lr``, ``c1`` not finite numbers
            > 0; anything :func:`escape_time` refuses; a t_ICL that overflows to inf or
            underflows to 0 (where ``beta0 < beta_c``), naming the parameter that
            contributes most to the overflow (``beta0``, ``N``, ``lr`` or ``c1``).
    """
    N = positive_int("N", N)
    lr = positive_float("lr", lr)
    c1 = positive_float("c1", c1)
    tau = escape_time(beta0, w0=w0, c2=c2, regime=regime, beta_c=beta_c)
    with np.errstate(over="ignore", under="ignore"):
        out = N * tau / (lr * c1)
    _check_scaled(out, tau, {"N": N, "lr": lr, "c1": c1}, beta0, "t_ICL")
    return out


def _check_scaled(out, tau, factors, beta0, result_name, beta0_name="beta0"):
    """Refuse a result ``N * tau / (lr * c1)`` that overflowed, or underflowed where tau > 0."""
    o, t = np.asarray(out, float), np.asarray(tau, float)
    over, under = ~np.isfinite(o), (o <= 0) & (t > 0)
    if not (np.any(over) or np.any(under)):
        return
    sign = 1.0 if np.any(over) else -1.0
    t_ext = np.max(t[over]) if np.any(over) else np.min(t[under])
    contrib = {beta0_name: (sign * math.log(t_ext), beta0), "N": (sign * math.log(factors["N"]), factors["N"]),
               "lr": (-sign * math.log(factors["lr"]), factors["lr"]),
               "c1": (-sign * math.log(factors["c1"]), factors["c1"])}
    raise _blame(contrib, "overflowed to inf" if sign > 0 else "underflowed to 0", result_name)


def k_star(N, beta0: float, amplitude: float, nu: float, w0: float = 0.0, c2: float = C2_DEFAULT,
           regime: str = "exact"):
    """Diversity threshold K* (number of items) for ``I_K(inf) = amplitude * K^nu``.

    ICL is acquired iff ``I_K(inf) > N tau_star(beta0)``, so
    ``K* = (N tau_star(beta0) / amplitude)^(1/nu)`` and ``d log K* / d log N = 1/nu``;
    with c2 = 0 (noise dropped, the paper's closed form)
    ``K* = (sqrt(pi/2) N e^-beta0 / amplitude)^(1/nu)``.  A K* below 1 item means that
    every K >= 1 acquires ICL (the threshold lies outside the range of K): callers that
    print it say so (the ``threshold`` command does, and :func:`k_star_interval` flags it).

    Args:
        N: context length(s), target not counted (int or array of ints).
        beta0: initial inverse temperature.
        amplitude: A in ``I_K(inf) = A K^nu``, in learning-rate time.
        nu: memorization exponent (> 0).
        w0: initial readout weight.
        c2: constant c2 of the context-label noise (default ``C2_DEFAULT`` = 1/2, the
            value of an untrained MLP; 0 drops the noise: the paper's closed form).
        regime: as in :func:`escape_time`.

    Returns:
        K* in items (a float, or an array over ``N``).

    Raises:
        ParameterError: ``N`` not integers >= 1; ``beta0`` not a finite number;
            ``amplitude``, ``nu`` not finite numbers > 0; anything :func:`escape_time`
            refuses (``beta0`` so large that tau_star underflows to 0, e.g. 1e308).
            K* must come out a finite float > 0: if ``N tau_star / amplitude`` itself
            overflows or underflows, the message names whichever of ``beta0``, ``N``,
            ``amplitude`` contributes most; if only the power ``1/nu`` does (e.g.
            ``nu = 1e-300``), it names ``nu``.
    """
    int_array("N", N, minimum=1)
    Ns = np.atleast_1d(np.asarray(N))
    amplitude = positive_float("amplitude", amplitude)
    nu = positive_float("nu", nu)
    beta0 = finite_float("beta0", beta0)
    tau = float(escape_time(beta0, w0=w0, c2=c2, regime=regime))
    with np.errstate(over="ignore", under="ignore"):
        base = Ns.astype(float) * tau / amplitude
        out = base ** (1.0 / nu)
    if Ns.size and not (np.all(np.isfinite(base)) and np.all(base > 0)):
        sign = 1.0 if not np.all(np.isfinite(base)) else -1.0
        n_ext = float(Ns.max() if sign > 0 else Ns.min())
        raise _blame({"beta0": (sign * math.log(tau), beta0), "N": (sign * math.log(n_ext), N),
                      "amplitude": (-sign * math.log(amplitude), amplitude)},
                     "overflowed to inf" if sign > 0 else "underflowed to 0", "N tau_star / amplitude")
    if Ns.size and not (np.all(np.isfinite(out)) and np.all(out > 0)):
        over = not np.all(np.isfinite(out))
        i = int(np.flatnonzero(~np.isfinite(out) | (out <= 0))[0])
        # log K* = log(base) + log(base) (1/nu - 1): N, tau_star and amplitude share the first
        # term, nu owns the second (signed so that the largest share is to blame)
        sign = 1.0 if over else -1.0
        lb = math.log(base[i])
        tau_name, tau_value = ("c2", c2) if (c2 > 1 and math.log(c2) > -beta0) else ("beta0", beta0)
        shares = {tau_name: (sign * math.log(tau), tau_value), "N": (sign * math.log(float(Ns[i])), N),
                  "amplitude": (-sign * math.log(amplitude), amplitude), "nu": (sign * lb * (1.0 / nu - 1.0), nu)}
        raise _blame(shares, "overflowed to inf" if over else "underflowed to 0",
                     f"K* = (N tau_star / amplitude)^(1/nu) (N tau_star / amplitude = {base[i]:.6g} at N = {Ns[i]})")
    return out if np.ndim(N) else float(out[0])


def critical_beta0(i_k_inf, N: int, w0: float = 0.0, c2: float = C2_DEFAULT, regime: str = "exact"):
    """The beta0 above which a seed escapes, given ``I_K(inf)`` (learning-rate time).

    Solves ``tau_star(beta0) = I_K(inf) / N``; ``tau_star`` decreases monotonically
    in beta0.  Returns ``-inf`` for ``I_K(inf) = inf`` and ``+inf`` for ``I_K(inf) = 0``.

    Raises:
        ParameterError: ``i_k_inf`` not numbers >= 0 (inf allowed; NaN never);
            ``N`` not an integer >= 1; ``w0``, ``c2``, ``regime`` as in
            :func:`escape_time`, and such that tau_star is computable over the beta0
            grid [-12, 12] used for the inversion.
    """
    ik = finite_array("i_k_inf", i_k_inf, minimum=0.0, allow_inf=True)
    N = positive_int("N", N)
    target = np.atleast_1d(ik) / N
    grid = np.linspace(-12.0, 12.0, 481)
    w0, c2, regime = _check_regime(w0, c2, regime)
    try:
        tau = escape_time(grid, w0=w0, c2=c2, regime=regime)
    except ParameterError as e:
        if e.name != "beta0":
            raise
        name, value = ("c2", c2) if c2 > 0 else ("w0", w0)
        raise ParameterError(name, value, f"such that tau_star can be computed over the beta0 grid [-12, 12] "
                             f"({e.allowed})") from None
    # log tau is smooth and decreasing in beta0: interpolate, extrapolate linearly
    lt = np.log(tau)[::-1]
    g = grid[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.interp(np.log(np.where(target > 0, target, np.nan)), lt, g)
    lo_slope = (g[1] - g[0]) / (lt[1] - lt[0])
    hi_slope = (g[-1] - g[-2]) / (lt[-1] - lt[-2])
    lt_t = np.log(target, where=target > 0, out=np.full_like(target, -np.inf))
    out = np.where(lt_t < lt[0], g[0] + lo_slope * (lt_t - lt[0]), out)
    out = np.where(lt_t > lt[-1], g[-1] + hi_slope * (lt_t - lt[-1]), out)
    out = np.where(np.isinf(target), -np.inf, out)
    out = np.where(target <= 0, np.inf, out)
    return out if np.ndim(i_k_inf) else float(out[0])


def p_icl(i_k_inf, N: int, beta0_mean: float, beta0_std: float, w0: float = 0.0, c2: float = C2_DEFAULT,
          regime: str = "exact"):
    """Fraction of seeds that acquire ICL, for ``beta0 ~ Normal(beta0_mean, beta0_std)``.

    ``P(ICL) = P(beta0 > beta0_c) = Phi((beta0_mean - beta0_c) / beta0_std)`` where
    ``beta0_c = critical_beta0(I_K(inf), N)``.  Near K* this is the bimodality: each
    seed either escapes or stalls, and the fraction moves smoothly with K.
    ``i_k_inf`` in learning-rate time (use ``amplitude * K**nu`` for a power law).

    Raises:
        ParameterError: ``beta0_mean`` not a finite number; ``beta0_std`` not a finite
            number >= 0; anything :func:`critical_beta0` refuses (``i_k_inf`` NaN or
            negative among them).
    """
    from scipy.special import ndtr

    beta0_mean = finite_float("beta0_mean", beta0_mean)
    beta0_std = positive_float("beta0_std", beta0_std, allow_zero=True)
    beta0_c = critical_beta0(i_k_inf, N, w0=w0, c2=c2, regime=regime)
    if beta0_std == 0:
        return np.where(beta0_mean > beta0_c, 1.0, 0.0) if np.ndim(beta0_c) else float(beta0_mean > beta0_c)
    p = ndtr((beta0_mean - np.asarray(beta0_c, float)) / beta0_std)
    return p if np.ndim(beta0_c) else float(p)


#: draws of the seeded Monte Carlo route of :func:`k_star_interval` (and of the CLI's propagation)
CI_DRAWS = 20000


def _ci_sd(name, ci, center, log: bool, z: float):
    """The standard deviation that a two-sided interval ``ci`` (lo, hi) at the z of ``level``
    implies around ``center``, on the log scale for ``log=True``: the mean of the two half-widths
    divided by z.  Refuses an interval that does not contain ``center``."""
    if ci is None:
        return 0.0
    try:
        lo, hi = (float(v) for v in ci)
    except (TypeError, ValueError):
        raise ParameterError(name, ci, "a pair (lo, hi) of numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= center <= hi and (lo > 0 or not log)):
        raise ParameterError(name, ci, f"a finite interval (lo, hi) with lo <= {center:g} <= hi"
                             + (" and lo > 0" if log else ""))
    if log:
        return (math.log(hi) - math.log(lo)) / (2 * z)
    return (hi - lo) / (2 * z)


def k_star_interval(N, beta0: float, amplitude: float, nu: float, *, amplitude_ci=None, nu_ci=None,
                    level: float = 0.95, method: str = "delta", draws: int = CI_DRAWS, seed: int = 0,
                    w0: float = 0.0, c2: float = C2_DEFAULT, regime: str = "exact") -> dict:
    """K* (items) with an interval propagated from the CIs of the memorization law ``A K^nu``.

    The CIs are read as normal intervals at ``level`` (``amplitude_ci`` on the log scale,
    where A is fitted; ``nu_ci`` on the linear scale), their standard deviations being the
    mean half-width over z, and A and nu independent.  With ``L = ln(N tau_star) - ln A``,
    ``ln K* = L / nu``:

    * ``method='delta'`` (analytic, first order): ``sd(ln K*)^2 = (sd_lnA / nu)^2 +
      (L sd_nu / nu^2)^2`` and the interval is ``K* e^(+-z sd)``;
    * ``method='monte_carlo'``: ``draws`` draws of (ln A, nu) from ``numpy`` seed ``seed``
      (nu draws <= 0 are refused, naming ``nu_ci``), the interval their ``level`` percentiles.

    The two agree while ``sd_nu / nu`` is small (tested); the Monte Carlo route keeps the
    skew of ``1/nu`` when it is not.

    Args:
        N: context length(s), target not counted.
        beta0, amplitude, nu, w0, c2, regime: as in :func:`k_star` (amplitude in learning-rate time).
        amplitude_ci, nu_ci: (lo, hi) intervals of A and nu at ``level``, or None (exact).
        level: the intervals' confidence level, in (0, 1).
        method: ``'delta'`` or ``'monte_carlo'``.
        draws, seed: the Monte Carlo draws and their seed.

    Returns:
        dict with ``k_star``, ``lo``, ``hi`` (items; arrays over N, or floats for a scalar N),
        ``below_one`` (where K* < 1 item: every K acquires ICL), ``method``, ``level`` and
        ``draws`` (None for the delta method).

    Raises:
        ParameterError: anything :func:`k_star` refuses; ``amplitude_ci`` / ``nu_ci`` not a pair
            of finite numbers bracketing the estimate (A's lo > 0); ``level`` not in (0, 1);
            unknown ``method``; ``draws``, ``seed`` not integers (>= 100, >= 0); a Monte Carlo
            draw of nu <= 0 (``nu_ci`` too wide for the normal reading).
    """
    from statistics import NormalDist

    k = k_star(N, beta0, amplitude, nu, w0=w0, c2=c2, regime=regime)
    level = finite_float("level", level, minimum=0.0, maximum=1.0)
    if not 0 < level < 1:
        raise ParameterError("level", level, "a confidence level in (0, 1)")
    one_of("method", method, ("delta", "monte_carlo"))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    sd_la = _ci_sd("amplitude_ci", amplitude_ci, float(amplitude), True, z)
    sd_nu = _ci_sd("nu_ci", nu_ci, float(nu), False, z)
    ka = np.atleast_1d(np.asarray(k, float))
    L = np.log(ka) * nu  # ln(N tau_star / A)
    if method == "delta":
        sd = np.sqrt((sd_la / nu) ** 2 + (L * sd_nu / nu**2) ** 2)
        lo, hi, n_draws = ka * np.exp(-z * sd), ka * np.exp(z * sd), None
    else:
        n_draws = positive_int("draws", draws, 100)
        seed = positive_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        la = rng.normal(0.0, sd_la, n_draws)  # ln A - ln A_hat
        nus = rng.normal(nu, sd_nu, n_draws)
        if np.any(nus <= 0):
            raise ParameterError("nu_ci", nu_ci, f"narrow enough that nu stays > 0 in the Monte Carlo draws "
                                 f"({int(np.sum(nus <= 0))} of {n_draws} draws of nu were <= 0)")
        lk = (L[:, None] - la[None, :]) / nus[None, :]
        q = 100 * (0.5 - level / 2), 100 * (0.5 + level / 2)
        lo, hi = np.exp(np.percentile(lk, q[0], axis=1)), np.exp(np.percentile(lk, q[1], axis=1))
    scalar = np.ndim(N) == 0
    pick = (lambda a: float(a[0])) if scalar else (lambda a: a)
    return {"k_star": pick(ka), "lo": pick(lo), "hi": pick(hi),
            "below_one": bool(ka[0] < 1) if scalar else ka < 1,
            "method": method, "level": level, "draws": n_draws}


def onset_slope(beta0, c2: float = C2_DEFAULT, w0: float = 0.0) -> float:
    """The theory's ``d ln t_ICL / d beta0`` at ``beta0`` (per unit beta0): ``d ln tau_star / d beta0``,
    -1 in the signal regime, -> -2 deep in the noise regime (central difference, step 1e-4).

    Raises:
        ParameterError: as :func:`escape_time`.
    """
    b = finite_float("beta0", beta0)
    h = 1e-4
    t = escape_time(np.array([b - h, b + h]), w0=w0, c2=c2)
    return float((math.log(t[1]) - math.log(t[0])) / (2 * h))


def calibrate_beta0(measured_slope: float, beta0_eff_mean: float = 0.0, *, slope_ci=None,
                    c2: float = C2_DEFAULT) -> dict:
    """The **fitted** scale ``a`` in ``beta0 = a * beta0_eff`` from a measured onset slope.

    A transformer's effective beta0 (``validate``'s ``beta0``: the effective beta of the
    first evaluation) is a log-ratio of attention weights, not the reduced model's beta0;
    its ordering of the seeds matches, its scale need not.  ``validate`` reports the per-seed
    slope ``s = d ln t_ICL / d beta0_eff`` (at K = infinity); the theory's slope is
    ``m(beta0) = d ln tau_star / d beta0`` (:func:`onset_slope`).  With ``beta0 = a beta0_eff``,
    ``s = a m(a beta0_eff_mean)``, solved for ``a`` by fixed-point iteration (``m`` varies
    slowly: -1 to -2).  The scale is *fitted* from the same onsets it is then used to
    describe, so a prediction made with it is a consistency check, not a test.

    Args:
        measured_slope: ``d ln t_ICL / d beta0_eff`` (negative: larger beta0_eff, earlier onset).
        beta0_eff_mean: the seeds' mean effective beta0, where ``m`` is taken.
        slope_ci: optional (lo, hi) interval of the measured slope, mapped to an interval of ``a``.
        c2: as in :func:`escape_time`.

    Returns:
        dict ``scale`` (a), ``scale_ci`` ((lo, hi) or None), ``theory_slope`` (m at the
        calibrated beta0), ``beta0_mean`` (a * beta0_eff_mean) and ``fitted`` (True).

    Raises:
        ParameterError: ``measured_slope`` not a finite number < 0; ``beta0_eff_mean`` not
            finite; ``slope_ci`` not a pair of negative numbers around ``measured_slope``.
    """
    s = finite_float("measured_slope", measured_slope)
    if not s < 0:
        raise ParameterError("measured_slope", measured_slope, "a finite number < 0 (d ln t_ICL / d beta0_eff: "
                             "a seed with larger beta0_eff acquires earlier); a slope >= 0 has no scale")
    be = finite_float("beta0_eff_mean", beta0_eff_mean)
    a = 1.0
    for _ in range(50):
        m = onset_slope(a * be, c2=c2)
        a_new = s / m
        if abs(a_new - a) < 1e-10:
            a = a_new
            break
        a = a_new
    m = onset_slope(a * be, c2=c2)
    ci = None
    if slope_ci is not None:
        try:
            lo, hi = sorted(float(v) for v in slope_ci)
        except (TypeError, ValueError):
            raise ParameterError("slope_ci", slope_ci, "a pair (lo, hi) of numbers") from None
        if not (math.isfinite(lo) and lo <= s <= hi < 0):
            raise ParameterError("slope_ci", slope_ci, f"a finite interval of negative slopes around {s:g}")
        ci = (hi / m, lo / m)  # m < 0: the steeper slope gives the larger scale
    return {"scale": a, "scale_ci": ci, "theory_slope": m, "beta0_mean": a * be, "fitted": True}
