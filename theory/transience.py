"""Transience of ICL under L2 regularization of the in-context pathway (w, beta).

After acquisition the ICL margin u is large, so ``sigma(-phi_plus - u) ~
e^-phi_plus e^-u`` and the gradient on the head is scaled by
``c3 = <e^-phi_plus>`` (the MLP's large-margin error on the training items).  With
weight decay ``wd_attn`` on w and beta, in learning-rate time ``s = lr * t``::

    dw/ds    = c3(s) < e^-u du/dw >_xi    - wd_attn w
    dbeta/ds = c3(s) < e^-u du/dbeta >_xi - wd_attn beta

(:func:`transience_flow`, exact average over n_plus, large-D).  As beta -> infinity
the readout tends to ``kappa = 1/2`` (attention splits between the target token and
its copy), ``u -> kappa w``, and w relaxes to the **tracking value**::

    kappa c3 e^(-kappa w_tr) = wd_attn w_tr   =>   w_tr = W(kappa^2 c3 / wd_attn) / kappa

(:func:`w_tr`, W = Lambert W).  As the MLP memorizes, c3 falls, w_tr falls and the
decayed beta eventually lets the context-label noise win: ICL is lost
(:func:`t_icl_loss`).  Eliminating c3 with the IWL loss (``L_IWL ~ c3`` for large
margins) gives the ICL-IWL loss relation (:func:`icl_loss_from_iwl_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from icl_kinetics.errors import (
    ParameterError, finite_array, finite_float, positive_float, positive_int, probability,
)
from icl_kinetics.resources import require_memory
from icl_kinetics.theory._compat import renamed_keywords
from icl_kinetics.theory.memorization import as_curve
from icl_kinetics.theory.minimal import (
    BETA_MAX, _accuracy, _n_plus_distribution, check_n, icl_threshold_beta,
)


def _w_tr(c3, wd_attn, kappa, name):
    """:func:`w_tr` with ``c3`` called ``name`` in a refusal."""
    from scipy.special import lambertw

    wd_attn = positive_float("wd_attn", wd_attn)
    kappa = positive_float("kappa", kappa)
    c3_a = finite_array(name, c3, minimum=0.0)
    with np.errstate(over="ignore"):
        out = np.real(lambertw(kappa**2 * c3_a / wd_attn)) / kappa
    if not np.all(np.isfinite(out)):
        c_max = float(np.max(c3_a))
        share = {name: (math.log(c_max), c3), "wd_attn": (-math.log(wd_attn), wd_attn),
                 "kappa": (2 * math.log(kappa), kappa)}
        bad = max(share, key=lambda k: share[k][0])
        raise ParameterError(bad, share[bad][1], "such that w_tr is a finite float (kappa^2 c3 / wd_attn "
                             "overflowed)")
    return out


@renamed_keywords(lam="wd_attn")
def w_tr(c3, wd_attn: float, kappa: float = 0.5):
    """Tracking value of w (dimensionless): the root of ``kappa c3 e^(-kappa w) = wd_attn w``.

    Args:
        c3: MLP large-margin error ``<e^-phi_plus>`` (array-like, >= 0).
        wd_attn: L2 weight decay on the in-context pathway (> 0).
        kappa: asymptotic readout, 1/2 when the target attends to itself.

    Raises:
        ParameterError: ``c3`` not finite numbers >= 0 (the first bad element is
            named); ``wd_attn``, ``kappa`` not finite numbers > 0; a w_tr that overflows
            (``kappa^2 c3 / wd_attn`` beyond the float range), naming the largest factor.
    """
    return _w_tr(c3, wd_attn, kappa, "c3")


@renamed_keywords(lam="wd_attn", l_iwl="iwl_loss")
def icl_loss_from_iwl_loss(iwl_loss, wd_attn: float, kappa: float = 0.5):
    """ICL loss (nats) predicted from the IWL loss ``iwl_loss`` (nats) on the tracking manifold.

    Uses ``c3 ~ L_IWL`` (large MLP margins) and ``L_ICL = log(1 + e^(-kappa w_tr))``;
    for small losses ``L_ICL * L_IWL ~ wd_attn w_tr / kappa``: an inverse relation.

    Raises:
        ParameterError: ``iwl_loss`` not finite numbers >= 0; ``wd_attn``, ``kappa`` as in
            :func:`w_tr`.
    """
    w = _w_tr(iwl_loss, wd_attn, kappa, "iwl_loss")
    return np.logaddexp(0.0, -kappa * w)


def _margin_gradient(w, beta, N, values, probs):
    """``<e^-u du/dw>``, ``<e^-u du/dbeta>`` over n_plus (large-D), for the n_plus
    distribution ``(values, probs)``."""
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


def _quasi_static(c3, wd_attn, N, contexts, values, probs):
    def f(y):
        dw, db = _margin_gradient(y[0], y[1], N, values, probs)
        return [c3 * dw - wd_attn * y[0], c3 * db - wd_attn * y[1]]

    from scipy import optimize

    w_guess = float(_w_tr(c3, wd_attn, 0.5, "c3"))
    with np.errstate(over="ignore", invalid="ignore"):
        sol = optimize.root(f, [w_guess, np.log(N) + 3.0], method="hybr")
    if not sol.success or sol.x[1] <= 0 or not np.all(np.isfinite(sol.x)):
        if c3 == 0:
            raise ParameterError("c3", c3, "> 0 for an acquired fixed point (without c3 nothing holds ICL)")
        raise ParameterError("wd_attn", wd_attn, f"small enough for an acquired fixed point to exist at "
                             f"c3={c3:g}, N={N}: the regularization is too strong for ICL to be held")
    return float(sol.x[0]), float(sol.x[1])


@renamed_keywords(lam="wd_attn")
def quasi_static_state(c3: float, wd_attn: float, N: int, contexts: str = "iid"):
    """Fixed point (w, beta) of the post-acquisition flow at frozen c3 (the acquired state).

    Raises:
        ParameterError: ``c3`` not a finite number >= 0; ``wd_attn`` not a finite number
            > 0; ``N`` not an integer >= 1 (even for equalized contexts); unknown
            ``contexts``; no acquired fixed point (``c3 = 0``, or ``wd_attn`` too strong for
            ``c3`` and ``N``: named ``c3`` or ``wd_attn``).
    """
    c3 = finite_float("c3", c3, minimum=0.0)
    wd_attn = positive_float("wd_attn", wd_attn)
    N = check_n(N, contexts)
    values, probs = _n_plus_distribution(N, contexts)
    return _quasi_static(c3, wd_attn, N, contexts, values, probs)


@renamed_keywords(lam="wd_attn")
def transience_flow(c3, wd_attn: float, N: int, s_max: float, contexts: str = "iid",
                    w_init: float | None = None, beta_init: float | None = None,
                    accuracy: float = 0.9, n_points: int = 400) -> TransienceSolution:
    """Integrate the post-acquisition flow with a c3(s) curve, from the acquired state.

    Args:
        c3: curve model of learning-rate time (or a constant).
        wd_attn: L2 weight decay on w and beta, per unit learning-rate time.
        N: context tokens.
        s_max: horizon, learning-rate time.
        w_init, beta_init: start; default the quasi-static state at ``c3(0)``.
        accuracy: ICL is "lost" when the large-D ICL accuracy falls below this.

    Raises:
        ParameterError: ``c3`` not a curve model or a finite number >= 0; ``wd_attn``,
            ``s_max`` not finite numbers > 0; ``N`` not an integer >= 1 (even for
            equalized contexts); unknown ``contexts``; ``w_init`` not None or finite;
            ``beta_init`` not None or a finite number <= 700; ``accuracy`` not in (0, 1);
            ``n_points`` not an integer >= 2 (or too large for memory); no acquired state
            to start from (see :func:`quasi_static_state`); a flow the integrator cannot
            follow (named ``beta_init`` if given, else ``wd_attn``).
    """
    wd_attn = positive_float("wd_attn", wd_attn)
    N = check_n(N, contexts)
    s_max = positive_float("s_max", s_max)
    accuracy = probability("accuracy", accuracy)
    c3c = as_curve(c3, "c3")
    if w_init is not None:
        w_init = finite_float("w_init", w_init)
    given = "beta_init" if beta_init is not None else "wd_attn"
    if beta_init is not None:
        beta_init = finite_float("beta_init", beta_init, maximum=BETA_MAX)
    n_points = positive_int("n_points", n_points, 2)
    require_memory("n_points", n_points, 8 * 8.0 * n_points, "the trajectory's arrays")
    values, probs = _n_plus_distribution(N, contexts)
    if w_init is None or beta_init is None:
        w_q, b_q = _quasi_static(float(c3c._at(0.0)), wd_attn, N, contexts, values, probs)
        w_init = w_q if w_init is None else w_init
        beta_init = b_q if beta_init is None else beta_init
    beta_c = icl_threshold_beta(N, accuracy, contexts)

    def rhs(s, y):
        dw, db = _margin_gradient(y[0], y[1], N, values, probs)
        c = float(c3c._at(s))
        return [c * dw - wd_attn * y[0], c * db - wd_attn * y[1]]

    def lost(s, y):
        return y[1] - beta_c

    lost.direction = -1.0
    from scipy import integrate

    try:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            sol = integrate.solve_ivp(rhs, (0.0, s_max), [w_init, beta_init], method="LSODA", rtol=1e-8,
                                      atol=1e-10, events=lost, dense_output=True)
        s = np.concatenate([[0.0], np.geomspace(sol.t[-1] * 1e-5, sol.t[-1], n_points - 1)])
        y = sol.sol(s)
    except ParameterError:
        raise
    except (ValueError, IndexError, ArithmeticError) as e:
        raise ParameterError(given, beta_init if given == "beta_init" else wd_attn, f"such that the flow can "
                             f"be integrated (solve_ivp failed: {type(e).__name__}: {e})") from None
    if not np.all(np.isfinite(y)):
        raise ParameterError("wd_attn", wd_attn, "such that the post-acquisition flow stays finite (it "
                             "overflowed)")
    c3s = c3c._at(s)
    acc = _accuracy(np.asarray(y[1], float), values, probs, N, 1.0)
    s_loss = float(sol.t_events[0][0]) if sol.t_events[0].size else None
    return TransienceSolution(s, y[0], y[1], c3s, _w_tr(np.maximum(c3s, 0.0), wd_attn, 0.5, "c3"), acc, s_loss)


@renamed_keywords(lam="wd_attn")
def t_icl_loss(c3, wd_attn: float, N: int, lr: float, s_max: float, contexts: str = "iid",
               w_init: float | None = None, beta_init: float | None = None, accuracy: float = 0.9,
               n_points: int = 400):
    """Predicted iteration at which ICL is lost (None if not before ``s_max / lr``).

    The keyword arguments are those of :func:`transience_flow`.

    Raises:
        ParameterError: ``lr`` not a finite number > 0, or so small that the iteration
            overflows; anything :func:`transience_flow` refuses.
    """
    lr = positive_float("lr", lr)
    sol = transience_flow(c3, wd_attn, N, s_max, contexts=contexts, w_init=w_init, beta_init=beta_init,
                          accuracy=accuracy, n_points=n_points)
    if sol.s_loss is None:
        return None
    with np.errstate(over="ignore"):
        t = sol.s_loss / lr
    if not math.isfinite(t):
        raise ParameterError("lr", lr, f"large enough that the loss iteration s_loss / lr is a finite float "
                             f"(s_loss = {sol.s_loss:g})")
    return t
