"""Numeric gradient flows of the minimal model's ICL head (w, beta), via ``solve_ivp``.

Three stages of the same flow, from most to least exact (``docs/theory.md`` §2-3):

* ``'full'``: ``d theta/dt = -lr * grad L(w, beta)`` with the data-averaged loss of
  :mod:`icl_kinetics.theory.loss` (exact average over n_plus, large-D limit) and a
  given distribution of the MLP logit ``phi_plus`` (scalar, samples, or a callable
  of learning-rate time returning samples);
* ``'linear'``: first order in the ICL logit u, exact in N, with curves c1(s), c2(s);
* ``'reduced'``: leading order in 1/N, the paper's Eq. 6, with c1(s), c2(s).

Time ``t`` is in **iterations**; the curves c1, c2 are functions of learning-rate
time ``s = lr * t``.  ``lam`` adds L2 weight decay on (w, beta) (the in-context
pathway only): ``d theta/dt -= lr * lam * theta``.  The numeric right-hand sides
here are written by hand and tested against the sympy derivation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icl_kinetics.errors import finite_float, one_of, positive_float, positive_int
from icl_kinetics.theory.loss import averaged_gradient
from icl_kinetics.theory.memorization import as_curve
from icl_kinetics.theory.minimal import CONTEXTS, icl_accuracy, icl_threshold_beta

STAGES = ("full", "linear", "reduced")


def rhs_linear(w, beta, N, lr, c1, c2, contexts="iid"):
    """``(dw/dt, dbeta/dt)`` per iteration, first order in u, exact in N."""
    a = np.exp(beta)
    den = 2 * a + N - 1
    if contexts == "equalized":
        dw = lr * c1 * ((a - 1) * den - c2 * w * (a - 1) ** 2) / den**2
        db = lr * c1 * w * a * (N + 1) * (den - c2 * w * (a - 1)) / den**3
    else:
        dw = lr * c1 * (a * den - c2 * w * (a * a + N - 1)) / den**2
        db = lr * c1 * w * a * (N - 1) * (den - c2 * w * (a - 2)) / den**3
    return dw, db


def rhs_reduced(w, beta, N, lr, c1, c2, contexts="iid"):
    """``(dw/dt, dbeta/dt)`` per iteration of the reduced ODEs (Eq. 6)."""
    a = np.exp(beta)
    dw = lr * c1 * ((a - 1) if contexts == "equalized" else (a - c2 * w)) / N
    return dw, lr * c1 * w * a / N


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


def solve_flow(N: int, beta0: float, lr: float, *, w0: float = 0.0, stage: str = "full",
               c1=0.5, c2=0.5, phi_plus=0.0, contexts: str = "iid", lam: float = 0.0,
               t_max: float | None = None, accuracy: float = 0.95, beta_escape: float | None = None,
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
        lam: L2 weight decay on w and beta (per unit learning-rate time).
        t_max: horizon in iterations (default: 20x the signal-regime escape time).
        accuracy: ICL accuracy that defines ``t_icl``.
        beta_escape: beta at which the run counts as escaped and stops
            (default ``beta_c + 12``).
    """
    N = positive_int("N", N)
    beta0 = finite_float("beta0", beta0)
    w0 = finite_float("w0", w0)
    lr = positive_float("lr", lr)
    lam = positive_float("lam", lam, allow_zero=True)
    one_of("stage", stage, STAGES)
    one_of("contexts", contexts, CONTEXTS)
    c1c, c2c = as_curve(c1), as_curve(c2)
    beta_c = icl_threshold_beta(N, accuracy, contexts)
    if beta_escape is None:
        beta_escape = (beta_c if np.isfinite(beta_c) else np.log(N)) + 12.0
    if t_max is None:
        t_max = 20.0 * N * np.sqrt(np.pi / 2) * np.exp(-min(beta0, 0.0) * 2) / (lr * 0.5) + 1e3

    if stage == "full":
        def rhs(t, y):
            p = phi_plus(lr * t) if callable(phi_plus) else phi_plus
            gw, gb = averaged_gradient(y[0], y[1], N, p, contexts)
            return [-lr * (gw + lam * y[0]), -lr * (gb + lam * y[1])]
    else:
        f = rhs_linear if stage == "linear" else rhs_reduced

        def rhs(t, y):
            s = lr * t
            dw, db = f(y[0], y[1], N, lr, float(c1c(s)), float(c2c(s)), contexts)
            return [dw - lr * lam * y[0], db - lr * lam * y[1]]

    def hit_acc(t, y):
        return y[1] - beta_c if y[0] > 0 else -1.0

    def hit_escape(t, y):
        return y[1] - beta_escape

    from scipy import integrate

    hit_escape.terminal = True
    hit_acc.direction = 1.0
    sol = integrate.solve_ivp(rhs, (0.0, float(t_max)), [w0, beta0], method="LSODA", rtol=1e-8,
                              atol=1e-10, events=[hit_acc, hit_escape], dense_output=True)
    t_end = sol.t[-1]
    tt = np.linspace(0.0, t_end, n_points)
    y = sol.sol(tt)
    t_icl = float(sol.t_events[0][0]) if sol.t_events[0].size else None
    if t_icl is None and beta0 >= beta_c and w0 > 0:
        t_icl = 0.0
    t_esc = float(sol.t_events[1][0]) if sol.t_events[1].size else None
    return FlowSolution(tt, y[0], y[1], t_icl, t_esc, N, contexts)
