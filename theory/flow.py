"""Numeric gradient flows of the minimal model's ICL head (w, beta), via ``solve_ivp``.

Three stages of the same flow, from most to least exact (``docs/theory.md`` §2-3):

* ``'full'``: ``d theta/dt = -lr * grad L(w, beta)`` with the data-averaged loss of
  :mod:`icl_kinetics.theory.loss` (exact average over n_plus, large-D limit) and a
  given distribution of the MLP logit ``phi_plus`` (scalar, samples, or a callable
  of learning-rate time returning samples);
* ``'linear'``: first order in the ICL logit u, exact in N, with curves c1(s), c2(s);
* ``'reduced'``: leading order in 1/N, the paper's Eq. 6, with c1(s), c2(s).

Time ``t`` is in **iterations**; the curves c1, c2 are functions of learning-rate
time ``s = lr * t``.  ``wd_attn`` adds L2 weight decay on (w, beta) (the in-context
pathway only): ``d theta/dt -= lr * wd_attn * theta``.  The numeric right-hand sides
here are written by hand and tested against the sympy derivation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icl_kinetics.errors import (
    ParameterError, broadcast_shape, finite_array, finite_float, one_of, positive_float, positive_int,
    probability, real_float,
)
from icl_kinetics.resources import require_memory
from icl_kinetics.theory._compat import renamed_keywords
from icl_kinetics.theory.closed_form import C2_DEFAULT
from icl_kinetics.theory.loss import _gradient, _phi_nodes, _xi_nodes
from icl_kinetics.theory.memorization import as_curve
from icl_kinetics.theory.minimal import (
    BETA_MAX, T_ICL_THRESHOLD, check_beta, check_n, icl_accuracy, icl_threshold_beta,
)

STAGES = ("full", "linear", "reduced")

#: the reduced ODEs' range: e^beta0 / sqrt(N) at most this.  They are leading order in
#: e^beta / N and the head escapes near e^beta ~ sqrt(N), so their t_ICL error grows like
#: e^beta0 / sqrt(N): -6 % against the full flow at 0.1 (N = 100, beta0 = 0), -22 % at 0.38
#: (N = 50, beta0 = 1) (docs/theory.md section 2)
REDUCED_ODES_RANGE = 0.1


def reduced_odes_expansion(N, beta0):
    """The reduced ODEs' expansion parameter ``e^beta0 / sqrt(N)`` (dimensionless).

    Args:
        N: context tokens (target not counted): integers >= 1 (an array broadcasts).
        beta0: initial inverse temperature of the head: finite numbers.

    Returns:
        ``e^beta0 / sqrt(N)``: a float for scalar inputs, else an array.

    Raises:
        ParameterError: ``N`` not integers >= 1; ``beta0`` not finite numbers.
    """
    n = finite_array("N", N, minimum=1.0)
    if np.any(n != np.round(n)):
        raise ParameterError("N", N, "integers >= 1 (context tokens)")
    b = finite_array("beta0", beta0)
    with np.errstate(over="ignore"):
        x = np.exp(b) / np.sqrt(n)
    return float(x) if x.ndim == 0 else x


def reduced_odes_in_range(N, beta0, expansion_max: float = REDUCED_ODES_RANGE):
    """Whether the reduced ODEs (the paper's Eq. 6) are in their range at ``(N, beta0)``:
    ``e^beta0 / sqrt(N) <= expansion_max`` (:func:`reduced_odes_expansion`).

    Args:
        N, beta0: as in :func:`reduced_odes_expansion`.
        expansion_max: the largest expansion parameter counted as in range (> 0; default
            :data:`REDUCED_ODES_RANGE`, where their t_ICL is within ~6 % of the full flow).

    Returns:
        a bool for scalar inputs, else a bool array.

    Raises:
        ParameterError: ``N``, ``beta0`` as in :func:`reduced_odes_expansion`; ``expansion_max``
            not a finite number > 0.
    """
    expansion_max = positive_float("expansion_max", expansion_max)
    x = reduced_odes_expansion(N, beta0)
    return bool(x <= expansion_max) if np.ndim(x) == 0 else x <= expansion_max


def _rhs_linear(w, beta, N, lr, c1, c2, contexts="iid"):
    a = np.exp(beta)
    den = 2 * a + N - 1
    if contexts == "equalized":
        dw = lr * c1 * ((a - 1) * den - c2 * w * (a - 1) ** 2) / den**2
        db = lr * c1 * w * a * (N + 1) * (den - c2 * w * (a - 1)) / den**3
    else:
        dw = lr * c1 * (a * den - c2 * w * (a * a + N - 1)) / den**2
        db = lr * c1 * w * a * (N - 1) * (den - c2 * w * (a - 2)) / den**3
    return dw, db


def _rhs_reduced(w, beta, N, lr, c1, c2, contexts="iid"):
    a = np.exp(beta)
    dw = lr * c1 * ((a - 1) if contexts == "equalized" else (a - c2 * w)) / N
    return dw, lr * c1 * w * a / N


def _checked_rhs(f, w, beta, N, lr, c1, c2, contexts):
    """Validate the arguments of a right-hand side, evaluate it, refuse a non-finite result."""
    w_a = finite_array("w", w)
    b_a = check_beta("beta", beta)
    broadcast_shape(w=w_a, beta=b_a)
    N = check_n(N, contexts)
    lr = positive_float("lr", lr)
    c1 = finite_float("c1", c1, minimum=0.0)
    c2 = finite_float("c2", c2, minimum=0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        dw, db = f(w, beta, N, lr, c1, c2, contexts)
    if not (np.all(np.isfinite(dw)) and np.all(np.isfinite(db))):
        name, value = ("w", w) if np.any(np.abs(w_a) > 1e100) else ("beta", beta)
        raise ParameterError(name, value, "small enough in magnitude that the flow's right-hand side is "
                             "a finite float (it overflowed)")
    return dw, db


def rhs_linear(w, beta, N, lr, c1, c2, contexts="iid"):
    """``(dw/dt, dbeta/dt)`` per iteration, first order in u, exact in N.

    Raises:
        ParameterError: ``w`` not finite; ``beta`` not finite or above 700; shapes that
            do not broadcast; ``N`` not an integer >= 1 (even for equalized contexts);
            ``lr`` not a finite number > 0; ``c1``, ``c2`` not finite numbers >= 0;
            unknown ``contexts``; a right-hand side that overflows.
    """
    return _checked_rhs(_rhs_linear, w, beta, N, lr, c1, c2, contexts)


def rhs_reduced(w, beta, N, lr, c1, c2, contexts="iid"):
    """``(dw/dt, dbeta/dt)`` per iteration of the reduced ODEs (Eq. 6).

    Raises:
        ParameterError: as :func:`rhs_linear`.
    """
    return _checked_rhs(_rhs_reduced, w, beta, N, lr, c1, c2, contexts)


@dataclass
class FlowSolution:
    """A solved flow.  ``t`` in iterations; ``t_icl`` (iterations) is the first time the
    large-D ICL accuracy exceeds ``accuracy`` (None if never within ``t_max``);
    ``t_escape`` (iterations) is when beta passed ``beta_escape`` (blow-up)."""

    t: np.ndarray
    w: np.ndarray
    beta: np.ndarray
    t_icl: float | None
    t_escape: float | None
    N: int
    contexts: str

    def icl_accuracy(self):
        """Large-D ICL accuracy (no MLP) along the trajectory."""
        return np.array([icl_accuracy(b, self.N, self.contexts, np.sign(wv) or 1.0)
                         for wv, b in zip(self.w, self.beta)])


@renamed_keywords(lam="wd_attn")
def solve_flow(N: int, beta0: float, lr: float, *, w0: float = 0.0, stage: str = "full",
               c1=0.5, c2=C2_DEFAULT, phi_plus=0.0, contexts: str = "iid", wd_attn: float = 0.0,
               t_max: float | None = None, accuracy: float = T_ICL_THRESHOLD, beta_escape: float | None = None,
               n_points: int = 400) -> FlowSolution:
    """Integrate the flow of (w, beta) from (w0, beta0) with ``solve_ivp``.

    Args:
        N: context tokens (target not counted).
        beta0, w0: initial condition.
        lr: learning rate (per iteration).
        stage: ``'full'``, ``'linear'`` or ``'reduced'``.
        c1, c2: constants or curve models of learning-rate time (linear/reduced).
        phi_plus: MLP correct-label logit for ``'full'``: scalar, samples, or a
            callable ``s -> samples`` of learning-rate time.
        contexts: ``'iid'`` or ``'equalized'``.
        wd_attn: L2 weight decay on w and beta (per unit learning-rate time).
        t_max: horizon in iterations (default: 20x the signal-regime escape time).
        accuracy: ICL accuracy that defines ``t_icl`` (default :data:`T_ICL_THRESHOLD`, 0.95).
        beta_escape: beta at which the run counts as escaped and stops
            (default ``beta_c + 12``).

    Raises:
        ParameterError: ``N`` not an integer >= 1 (even for equalized contexts);
            ``beta0``, ``w0`` not finite; ``lr`` not a finite number > 0; ``wd_attn`` not a
            finite number >= 0; unknown ``stage`` or ``contexts``; ``c1``, ``c2`` not
            finite numbers >= 0 or curve models; ``phi_plus`` not a finite number, a
            non-empty 1-D array of them or a callable; ``t_max`` not None or a finite
            number > 0; ``accuracy`` not in [0, 1]; ``beta_escape`` not None or a finite
            number <= 700; ``n_points`` not an integer >= 2 (or too large for memory).
            Degenerate set-ups: the default ``t_max`` must be a finite float (``beta0``
            above ~ -350); a trajectory that overflows (e.g. the reduced stage started at
            or past ``beta_escape``, where nothing stops beta's blow-up) is refused naming
            ``beta0``; and where the integrator cannot locate the events of a very deep
            plateau (very negative ``beta0``, the reduced stage at ``c2 e^-beta0`` beyond
            ~1e4) the failure is reported naming ``beta0``: the closed form :func:`t_icl`
            covers that range.
    """
    N = check_n(N, contexts)
    beta0 = finite_float("beta0", beta0)
    w0 = finite_float("w0", w0)
    lr = positive_float("lr", lr)
    wd_attn = positive_float("wd_attn", wd_attn, allow_zero=True)
    one_of("stage", stage, STAGES)
    c1c, c2c = as_curve(c1, "c1"), as_curve(c2, "c2")
    if not callable(phi_plus):
        _phi_nodes(phi_plus)
    if t_max is not None:
        t_max = positive_float("t_max", t_max)
    accuracy = probability("accuracy", accuracy, open_interval=False)
    n_points = positive_int("n_points", n_points, 2)
    require_memory("n_points", n_points, 4 * 8.0 * n_points, "the trajectory's arrays")
    beta_c = icl_threshold_beta(N, accuracy, contexts)
    if beta_escape is None:
        beta_escape = (beta_c if np.isfinite(beta_c) else np.log(N)) + 12.0
    else:
        beta_escape = real_float("beta_escape", beta_escape, maximum=BETA_MAX)
    if t_max is None:
        with np.errstate(over="ignore"):
            t_max = 20.0 * N * np.sqrt(np.pi / 2) * np.exp(-min(beta0, 0.0) * 2) / (lr * 0.5) + 1e3
        if not np.isfinite(t_max):
            raise ParameterError("beta0", beta0, "large enough that the default horizon t_max (20x the "
                                 "signal-regime escape time) is a finite float; pass t_max")

    if stage == "full":
        xi, pw = _xi_nodes(N, contexts, "exact")
        phi_fixed = None if callable(phi_plus) else _phi_nodes(phi_plus)

        def rhs(t, y):
            phi = _phi_nodes(phi_plus(lr * t)) if phi_fixed is None else phi_fixed
            gw, gb = _gradient(y[0], y[1], N, xi, pw, phi)
            return [-lr * (gw + wd_attn * y[0]), -lr * (gb + wd_attn * y[1])]
    else:
        f = _rhs_linear if stage == "linear" else _rhs_reduced

        def rhs(t, y):
            s = lr * t
            dw, db = f(y[0], y[1], N, lr, float(c1c._at(s)), float(c2c._at(s)), contexts)
            return [dw - lr * wd_attn * y[0], db - lr * wd_attn * y[1]]

    def hit_acc(t, y):
        return y[1] - beta_c if y[0] > 0 else -1.0

    def hit_escape(t, y):
        return y[1] - beta_escape

    from scipy import integrate

    hit_escape.terminal = True
    hit_acc.direction = 1.0
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            sol = integrate.solve_ivp(rhs, (0.0, float(t_max)), [w0, beta0], method="LSODA", rtol=1e-8,
                                      atol=1e-10, events=[hit_acc, hit_escape], dense_output=True)
        t_end = sol.t[-1]
        tt = np.linspace(0.0, t_end, n_points)
        y = sol.sol(tt)
    except ParameterError:
        raise
    except (ValueError, IndexError, ArithmeticError) as e:  # scipy's event location / dense output
        raise ParameterError("beta0", beta0, f"such that the flow can be integrated (solve_ivp failed: "
                             f"{type(e).__name__}: {e}); for a plateau this deep use the closed form "
                             "t_icl") from None
    if not np.all(np.isfinite(y)):
        why = (f"; it starts at or past beta_escape = {beta_escape:.6g}, so nothing stops it"
               if beta0 >= beta_escape else "")
        raise ParameterError("beta0", beta0, f"such that the {stage} flow stays finite (w or beta "
                             f"overflowed{why})")
    t_icl = float(sol.t_events[0][0]) if sol.t_events[0].size else None
    if t_icl is None and beta0 >= beta_c and w0 > 0:
        t_icl = 0.0
    t_esc = float(sol.t_events[1][0]) if sol.t_events[1].size else None
    return FlowSolution(tt, y[0], y[1], t_icl, t_esc, N, contexts)
