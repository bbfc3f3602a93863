"""The gradient flow of the minimal model, derived symbolically with sympy.

Every step of ``docs/theory.md`` §2 is an attribute of :func:`derivation`:

1. ``u``: the ICL logit along the correct label, large-D limit,
   ``u = w (e^b + xi) / (2 e^b + N - 1)`` with ``xi = 2 n_plus - N - 1``.
2. ``loss``: the per-sequence logistic loss ``log(1 + exp(-phi - u))``.
3. ``grad_w``, ``grad_beta``: its exact gradient (sympy ``diff``).
4. ``linear_w``, ``linear_beta``: the gradient-flow right-hand sides after the first
   Taylor expansion, ``sigma(-phi - u) ~ sigma(-phi) - sigma(phi) sigma(-phi) u``,
   averaged over the MLP logit (``<sigma(-phi)> = c1``,
   ``<sigma(-phi) sigma(phi)> = c1 c2``) and over ``xi`` (mean 0, variance N-1 for
   i.i.d. labels; ``xi = -1`` for equalized contexts).  Exact in N.
5. ``reduced_w``, ``reduced_beta``: the second expansion, leading order in 1/N at
   fixed e^beta: the reduced ODEs (the paper's Eq. 6)::

       dw/dt   = (eta / N) (c1 e^b - c1 c2 w)
       dbeta/dt = (eta / N)  c1 w e^b

   (for equalized contexts: ``dw/dt = (eta/N) c1 (e^b - 1)``, same ``dbeta/dt``).

Time ``t`` is in iterations; ``eta`` is the learning rate, so ``eta * t`` is
learning-rate time.  Numeric callables come from :func:`numeric_rhs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from icl_kinetics.errors import one_of

w, beta, xi, phi = sp.symbols("w beta xi phi", real=True)
N, eta, c1, c2, eps = sp.symbols("N eta c1 c2 epsilon", positive=True)
s0 = sp.Symbol("sigma0", positive=True)  # stands for sigma(-phi)


@dataclass(frozen=True)
class Derivation:
    """The sympy expressions of each derivation step (see module docstring)."""

    u: sp.Expr
    loss: sp.Expr
    grad_w: sp.Expr
    grad_beta: sp.Expr
    linear_w: sp.Expr
    linear_beta: sp.Expr
    reduced_w: sp.Expr
    reduced_beta: sp.Expr


def _average(expr: sp.Expr, contexts: str) -> sp.Expr:
    """Average a polynomial in sigma0 and xi over phi (c1, c2) and over xi."""
    expr = sp.expand(expr)
    # over phi: <sigma0> = c1, <sigma0^2> = c1 - c1 c2
    poly = sp.Poly(expr, s0)
    moments_phi = {0: 1, 1: c1, 2: c1 - c1 * c2}
    expr = sum(coef * moments_phi[deg[0]] for deg, coef in poly.terms())
    expr = sp.expand(expr)
    if contexts == "equalized":
        return expr.subs(xi, -1)
    poly = sp.Poly(expr, xi)
    # xi is a sum of N-1 independent signs: odd moments vanish, E xi^2 = N-1
    moments_xi = {0: 1, 1: 0, 2: N - 1}
    return sum(coef * moments_xi[deg[0]] for deg, coef in poly.terms())


@lru_cache(maxsize=None)
def derivation(contexts: str = "iid") -> Derivation:
    """Derive the loss, its gradient and the reduced ODEs for ``contexts``."""
    one_of("contexts", contexts, ("iid", "equalized"))
    a = sp.exp(beta)
    u = w * (a + xi) / (2 * a + N - 1)
    loss = sp.log(1 + sp.exp(-phi - u))
    grad_w = sp.diff(loss, w)
    grad_beta = sp.diff(loss, beta)

    # -dloss/dtheta = sigma(-phi-u) * du/dtheta; expand sigma to first order in u.
    ue = sp.Symbol("u_")
    sig = 1 / (1 + sp.exp(phi + ue))
    sig_lin = sp.series(sig, ue, 0, 2).removeO()
    sig_lin = sig_lin.subs(ue, u)
    # rewrite in terms of sigma0 = sigma(-phi) = 1/(1+e^phi)
    sig_lin = sp.simplify(sig_lin.subs(sp.exp(phi), 1 / s0 - 1))
    du_dw = sp.diff(u, w)
    du_db = sp.diff(u, beta)
    linear_w = sp.simplify(eta * _average(sp.expand(sig_lin * du_dw * (2 * a + N - 1) ** 2), contexts)
                           / (2 * a + N - 1) ** 2)
    linear_beta = sp.simplify(eta * _average(sp.expand(sig_lin * du_db * (2 * a + N - 1) ** 3), contexts)
                              / (2 * a + N - 1) ** 3)

    def leading(expr):
        # leading order in 1/N at fixed e^beta: N -> 1/eps, keep the eps^1 term
        e = sp.simplify(expr.subs(N, 1 / eps))
        lead = sp.series(e, eps, 0, 2).removeO().coeff(eps, 1)
        return sp.simplify(lead * eta / eta / N)

    return Derivation(u, loss, grad_w, grad_beta, linear_w, linear_beta,
                      sp.factor(leading(linear_w)), sp.factor(leading(linear_beta)))


@lru_cache(maxsize=None)
def numeric_rhs(stage: str = "reduced", contexts: str = "iid"):
    """Fast numpy callables ``(f_w, f_beta)`` of ``(w, beta, N, eta, c1, c2)``.

    ``stage`` is ``'linear'`` (first order in u, exact in N) or ``'reduced'``
    (leading order in 1/N, the paper's Eq. 6).  Both return d/dt per iteration.
    """
    one_of("stage", stage, ("linear", "reduced"))
    d = derivation(contexts)
    ew, eb = (d.linear_w, d.linear_beta) if stage == "linear" else (d.reduced_w, d.reduced_beta)
    args = (w, beta, N, eta, c1, c2)
    return sp.lambdify(args, ew, "numpy"), sp.lambdify(args, eb, "numpy")


@lru_cache(maxsize=None)
def numeric_loss_gradient():
    """Numpy callables of the exact per-sequence loss and gradient in ``(w, beta, xi, N, phi)``."""
    d = derivation("iid")
    args = (w, beta, xi, N, phi)
    return (sp.lambdify(args, d.loss, "numpy"), sp.lambdify(args, d.grad_w, "numpy"),
            sp.lambdify(args, d.grad_beta, "numpy"))
