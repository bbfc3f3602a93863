"""The data-averaged loss of the minimal model in the large-D limit, and its gradient.

``L(w, beta) = < log(1 + exp(-phi_plus - w * readout(beta, n_plus, N))) >``, averaged
over the MLP's correct-label logit ``phi_plus ~ P_plus`` and over ``n_plus``:

* ``method='exact'``: the exact sum over the distribution of ``n_plus``
  (binomial for i.i.d. labels, a point mass for equalized contexts);
* ``method='gaussian'``: ``xi = 2 n_plus - N - 1`` replaced by a Gaussian of the same
  mean and variance (mean 0, variance N-1), integrated by Gauss-Hermite quadrature
  (the paper's Eq. 5 step).

``phi_plus`` is either a scalar (a point mass; 0 for a network without MLP or at
initialization) or a 1-D array of samples of ``P_plus`` (e.g. measured values of
``y * phi(x)`` over the training items).  Losses are in nats per sequence;
gradients are per unit of the parameter.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from icl_kinetics.errors import one_of, positive_int
from icl_kinetics.theory.minimal import n_plus_distribution

METHODS = ("exact", "gaussian")


def _xi_nodes(N: int, contexts: str, method: str):
    """Nodes and weights of the average over xi = 2 n_plus - N - 1."""
    N = positive_int("N", N)
    one_of("method", method, METHODS)
    if method == "exact" or contexts == "equalized":
        values, probs = n_plus_distribution(N, contexts)
        return 2.0 * values - N - 1.0, probs
    x, wts = np.polynomial.hermite_e.hermegauss(64)
    return x * np.sqrt(N - 1.0), wts / wts.sum()


def _phi_nodes(phi_plus):
    p = np.atleast_1d(np.asarray(phi_plus, float))
    if p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)):
        raise ValueError(f"phi_plus={phi_plus!r} is not allowed: phi_plus must be a finite scalar or 1-D array")
    return p


def averaged_loss(w, beta, N: int, phi_plus=0.0, contexts: str = "iid", method: str = "exact"):
    """Data-averaged logistic loss (nats per sequence); broadcasts over ``w`` and ``beta``."""
    xi, p = _xi_nodes(N, contexts, method)
    phi = _phi_nodes(phi_plus)
    w = np.asarray(w, float)[..., None, None]
    a = np.exp(np.asarray(beta, float))[..., None, None]
    u = w * (a + xi[:, None]) / (2 * a + N - 1)
    z = phi[None, :] + u
    return np.sum(p[:, None] * np.logaddexp(0.0, -z), axis=(-2, -1)) / phi.size


def averaged_gradient(w, beta, N: int, phi_plus=0.0, contexts: str = "iid", method: str = "exact"):
    """Gradient ``(dL/dw, dL/dbeta)`` of :func:`averaged_loss`; broadcasts over ``w``, ``beta``."""
    xi, p = _xi_nodes(N, contexts, method)
    phi = _phi_nodes(phi_plus)
    w = np.asarray(w, float)[..., None, None]
    a = np.exp(np.asarray(beta, float))[..., None, None]
    den = 2 * a + N - 1
    x = xi[:, None]
    u = w * (a + x) / den
    err = expit(-(phi[None, :] + u))  # sigma(-phi - u)
    du_dw = (a + x) / den
    du_db = w * a * (N - 1 - 2 * x) / den**2
    wt = p[:, None] / phi.size
    gw = -np.sum(wt * err * du_dw, axis=(-2, -1))
    gb = -np.sum(wt * err * du_db, axis=(-2, -1))
    return gw, gb
