"""Transience of ICL under L2 regularization of the in-context pathway (w, beta).

After acquisition the ICL margin u is large, so ``sigma(-phi_plus - u) ~
e^-phi_plus e^-u`` and the drive on the head is scaled by
``c3 = <e^-phi_plus>`` (the MLP's large-margin error on the training items).  With
weight decay ``lam`` on w and beta, in learning-rate time ``s = lr * t``::

    dw/ds    = c3(s) < e^-u du/dw >_xi    - lam w
    dbeta/ds = c3(s) < e^-u du/dbeta >_xi - lam beta

(:func:`transience_flow`, exact average over n_plus, large-D).  As beta -> infinity
the readout tends to ``kappa = 1/2`` (attention splits between the target token and
its copy), ``u -> kappa w``, and w relaxes to the **tracking value**::

    kappa c3 e^(-kappa w_tr) = lam w_tr   =>   w_tr = W(kappa^2 c3 / lam) / kappa

(:func:`w_tr`, W = Lambert W).  As the MLP memorizes, c3 falls, w_tr falls and the
decayed beta eventually lets the context-label noise win: ICL is lost
(:func:`t_icl_loss`).  Eliminating c3 with the IWL loss (``L_IWL ~ c3`` for large
margins) gives the ICL-IWL loss relation (:func:`icl_loss_from_iwl_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icl_kinetics.errors import ParameterError, positive_float, positive_int, probability
from icl_kinetics.theory.memorization import as_curve
from icl_kinetics.theory.minimal import icl_accuracy, icl_threshold_beta, n_plus_distribution


def w_tr(c3, lam: float, kappa: float = 0.5):
    """Tracking value of w (dimensionless): the root of ``kappa c3 e^(-kappa w) = lam w``.

    Args:
        c3: MLP large-margin error ``<e^-phi_plus>`` (array-like, >= 0).
        lam: L2 weight decay on the in-context pathway (> 0).
        kappa: asymptotic readout, 1/2 when the target attends to itself.
    """
    from scipy.special import lambertw

    lam = positive_float("lam", lam)
    kappa = positive_float("kappa", kappa)
    c3 = np.asarray(c3, float)
    if np.any(c3 < 0) or not np.all(np.isfinite(c3)):
        raise ParameterError("c3", "array", "finite and >= 0")
    return np.real(lambertw(kappa**2 * c3 / lam)) / kappa


def icl_loss_from_iwl_loss(l_iwl, lam: float, kappa: float = 0.5):
    """ICL loss (nats) predicted from the IWL loss (nats) on the tracking manifold.

    Uses ``c3 ~ L_IWL`` (large MLP margins) and ``L_ICL = log(1 + e^(-kappa w_tr))``;
    for small losses ``L_ICL * L_IWL ~ lam w_tr / kappa``: an inverse relation.
    """
    w = w_tr(l_iwl, lam, kappa)
    return np.logaddexp(0.0, -kappa * w)


def _drive(w, beta, N, contexts):
    """``<e^-u du/dw>``, ``<e^-u du/dbeta>`` over n_plus (large-D)."""
    values, probs = n_plus_distribution(N, contexts)
    xi = 2.0 * values - N - 1.0
    a = np.exp(beta)
    den = 2 * a + N - 1
    u = w * (a + xi) / den
    e = probs * np.exp(-u)
    return np.sum(e * (a + xi) / den), np.sum(e * w * a * (N - 1 - 2 * xi) / den**2)


@dataclass
class TransienceSolution:
    """Post-acquisition trajectory.  ``s`` in learning-rate time; ``t = s / lr`` iterations."""

    s: np.ndarray
    w: np.ndarray
    beta: np.ndarray
    c3: np.ndarray
    w_tr: np.ndarray
    icl_accuracy: np.ndarray
    s_loss: float | None  # learning-rate time at which ICL accuracy fell below the threshold


def quasi_static_state(c3: float, lam: float, N: int, contexts: str = "iid"):
    """Fixed point (w, beta) of the post-acquisition flow at frozen c3 (the acquired state)."""
    def f(y):
        dw, db = _drive(y[0], y[1], N, contexts)
        return [c3 * dw - lam * y[0], c3 * db - lam * y[1]]

    from scipy import optimize

    w_guess = float(w_tr(c3, lam))
    sol = optimize.root(f, [w_guess, np.log(N) + 3.0], method="hybr")
    if not sol.success or sol.x[1] <= 0:
        raise ValueError(f"no acquired fixed point for c3={c3}, lam={lam}, N={N}: "
                         "the regularization is too strong for ICL to be held")
    return float(sol.x[0]), float(sol.x[1])


def transience_flow(c3, lam: float, N: int, s_max: float, contexts: str = "iid",
                    w_init: float | None = None, beta_init: float | None = None,
                    accuracy: float = 0.9, n_points: int = 400) -> TransienceSolution:
    """Integrate the post-acquisition flow with a c3(s) curve, from the acquired state.

    Args:
        c3: curve model of learning-rate time (or a constant).
        lam: L2 weight decay on w and beta, per unit learning-rate time.
        N: context tokens.
        s_max: horizon, learning-rate time.
        w_init, beta_init: start; default the quasi-static state at ``c3(0)``.
        accuracy: ICL is "lost" when the large-D ICL accuracy falls below this.
    """
    lam = positive_float("lam", lam)
    N = positive_int("N", N)
    s_max = positive_float("s_max", s_max)
    accuracy = probability("accuracy", accuracy)
    c3c = as_curve(c3)
    if w_init is None or beta_init is None:
        w_q, b_q = quasi_static_state(float(c3c(0.0)), lam, N, contexts)
        w_init = w_q if w_init is None else w_init
        beta_init = b_q if beta_init is None else beta_init
    beta_c = icl_threshold_beta(N, accuracy, contexts)

    def rhs(s, y):
        dw, db = _drive(y[0], y[1], N, contexts)
        c = float(c3c(s))
        return [c * dw - lam * y[0], c * db - lam * y[1]]

    def lost(s, y):
        return y[1] - beta_c

    lost.direction = -1.0
    from scipy import integrate

    sol = integrate.solve_ivp(rhs, (0.0, s_max), [w_init, beta_init], method="LSODA", rtol=1e-8,
                              atol=1e-10, events=lost, dense_output=True)
    s = np.concatenate([[0.0], np.geomspace(sol.t[-1] * 1e-5, sol.t[-1], n_points - 1)])
    y = sol.sol(s)
    c3s = c3c(s)
    acc = icl_accuracy(y[1], N, contexts)
    s_loss = float(sol.t_events[0][0]) if sol.t_events[0].size else None
    return TransienceSolution(s, y[0], y[1], c3s, w_tr(np.maximum(c3s, 0.0), lam), acc, s_loss)


def t_icl_loss(c3, lam: float, N: int, lr: float, s_max: float, **kwargs):
    """Predicted iteration at which ICL is lost (None if not before ``s_max / lr``)."""
    lr = positive_float("lr", lr)
    sol = transience_flow(c3, lam, N, s_max, **kwargs)
    return None if sol.s_loss is None else sol.s_loss / lr
