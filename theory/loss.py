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

import math

import numpy as np
from scipy.special import expit

from icl_kinetics.errors import ParameterError, broadcast_shape, finite_array, one_of
from icl_kinetics.resources import require_memory
from icl_kinetics.theory.minimal import _n_plus_distribution, check_beta, check_n

METHODS = ("exact", "gaussian")


def _xi_nodes(N: int, contexts: str, method: str):
    """Nodes and weights of the average over xi = 2 n_plus - N - 1."""
    N = check_n(N, contexts)
    one_of("method", method, METHODS)
    if method == "exact" or contexts == "equalized":
        values, probs = _n_plus_distribution(N, contexts)
        return 2.0 * values - N - 1.0, probs
    x, wts = np.polynomial.hermite_e.hermegauss(64)
    return x * np.sqrt(N - 1.0), wts / wts.sum()


def _phi_nodes(phi_plus):
    return finite_array("phi_plus", phi_plus, max_ndim=1, allow_empty=False,
                        allowed="a finite number or a non-empty 1-D array of finite numbers").reshape(-1)


def _prepare(w, beta, N, phi_plus, contexts, method, n_temps):
    """Validated nodes (xi, p, phi) and an up-front memory check: the sums hold
    ``n_temps`` float arrays of size (broadcast of w and beta) x (xi nodes) x (phi nodes)."""
    w_a = finite_array("w", w)
    b_a = check_beta("beta", beta)
    shape = broadcast_shape(w=w_a, beta=b_a)
    xi, p = _xi_nodes(N, contexts, method)
    phi = _phi_nodes(phi_plus)
    sizes = {"w": math.prod(shape), "N": xi.size, "phi_plus": phi.size}
    big = max(sizes, key=sizes.get)
    value = {"w": w, "N": N, "phi_plus": phi_plus}[big]
    require_memory(big, value, n_temps * 8.0 * math.prod(sizes.values()),
                   f"the average over {xi.size} xi x {phi.size} phi_plus nodes at {sizes['w']} (w, beta) points")
    return xi, p, phi


def _finite_result(out, w, beta):
    """Refuse a result that overflowed, naming ``w`` if some |w| is huge, else ``beta``."""
    if not all(np.all(np.isfinite(o)) for o in (out if isinstance(out, tuple) else (out,))):
        name, value = ("w", w) if np.any(np.abs(np.asarray(w, float)) > 1e100) else ("beta", beta)
        raise ParameterError(name, value, "small enough in magnitude that the loss and its gradient "
                             "are finite floats (they overflowed)")
    return out


def averaged_loss(w, beta, N: int, phi_plus=0.0, contexts: str = "iid", method: str = "exact"):
    """Data-averaged logistic loss (nats per sequence); broadcasts over ``w`` and ``beta``.

    Raises:
        ParameterError: ``w`` not finite; ``beta`` not finite or above 700 (``e^beta``
            must be a finite float); shapes of ``w`` and ``beta`` that do not broadcast;
            ``N`` not an integer >= 1 (even for equalized contexts); ``phi_plus`` not a
            finite number or a non-empty 1-D array of them; unknown ``contexts`` or
            ``method``; sizes too large for memory.
    """
    xi, p, phi = _prepare(w, beta, N, phi_plus, contexts, method, 5)
    N = int(N)
    w = np.asarray(w, float)[..., None, None]
    a = np.exp(np.asarray(beta, float))[..., None, None]
    u = w * (a + xi[:, None]) / (2 * a + N - 1)
    z = phi[None, :] + u
    return _finite_result(np.sum(p[:, None] * np.logaddexp(0.0, -z), axis=(-2, -1)) / phi.size, w, beta)


def averaged_gradient(w, beta, N: int, phi_plus=0.0, contexts: str = "iid", method: str = "exact"):
    """Gradient ``(dL/dw, dL/dbeta)`` of :func:`averaged_loss`; broadcasts over ``w``, ``beta``.

    Raises:
        ParameterError: as :func:`averaged_loss`.
    """
    xi, p, phi = _prepare(w, beta, N, phi_plus, contexts, method, 9)
    N = int(N)
    return _finite_result(_gradient(w, beta, N, xi, p, phi), w, beta)


def _gradient(w, beta, N, xi, p, phi):
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
