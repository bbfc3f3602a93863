"""The minimal model in the large-D limit: definitions shared by the theory layer.

The minimal model (paper §3.2, the released ``PhenomenologicalTransformer``) reads::

    logit = phi(x_t) + w * sum_j softmax_j(beta * x_t . x_j) * l_j

The softmax runs over the N context tokens **and the target token**, whose label
slot is 0.  Throughout the theory layer **N counts context tokens only** (the
paper's code counts the target too: its ``len_context = 100`` is N = 99 here).

Large-D limit: the target's own overlap and the overlap with its copy in the
context are 1, all other overlaps are 0.  With exactly one copy of the target in
the context (K -> infinity, or K >> N), the ICL logit in the direction of the
correct label is ``u = w * readout(beta, n_plus, N)`` with::

    readout = (e^beta + 2 n_plus - N - 1) / (2 e^beta + N - 1)

where ``n_plus`` (1..N) counts context labels equal to the target's label, the
copy included.  Writing ``xi = 2 n_plus - N - 1`` (a sum of N-1 random signs for
i.i.d. labels; ``xi = -1`` for equalized contexts) this is
``(e^beta + xi) / (2 e^beta + N - 1)``.
"""

from __future__ import annotations

import math

import numpy as np

from icl_kinetics.errors import one_of, positive_int

CONTEXTS = ("iid", "equalized")


def readout(beta, n_plus, N: int):
    """Attention-weighted label sum along the correct label, large-D limit (dimensionless).

    Args:
        beta: inverse temperature of item matching (array-like).
        n_plus: number of context labels equal to the target's, copy included.
        N: number of context tokens (target not counted).
    """
    a = np.exp(beta)
    return (a + 2.0 * np.asarray(n_plus) - N - 1.0) / (2.0 * a + N - 1.0)


def n_plus_distribution(N: int, contexts: str = "iid"):
    """Support and probabilities of ``n_plus`` for a context of N tokens.

    ``contexts='iid'``: the copy agrees, the other N-1 labels are fair coins, so
    ``n_plus - 1 ~ Binomial(N-1, 1/2)``.  ``contexts='equalized'``: exactly N/2
    labels of each kind, so ``n_plus = N/2`` (N must be even).

    Returns:
        ``(values, probs)``: two 1-D float arrays.
    """
    N = positive_int("N", N)
    one_of("contexts", contexts, CONTEXTS)
    if contexts == "equalized":
        if N % 2:
            raise ValueError(f"N={N} is not allowed with contexts='equalized': N must be even")
        return np.array([N / 2.0]), np.array([1.0])
    k = np.arange(N)
    # Binomial(N-1, 1/2) pmf via log-gamma (exact to rounding; avoids importing scipy.stats)
    lg = np.array([math.lgamma(i + 1.0) for i in range(N)])
    logp = lg[N - 1] - lg[k] - lg[N - 1 - k] - (N - 1) * math.log(2.0)
    return k + 1.0, np.exp(logp)


def icl_accuracy(beta, N: int, contexts: str = "iid", w_sign: float = 1.0):
    """ICL accuracy of the minimal model without MLP, large-D limit, exact over n_plus.

    A sequence is classified correctly when ``w * readout > 0``; ties (readout = 0)
    count one half, as a coin flip would.  Vectorized over ``beta``.
    """
    values, probs = n_plus_distribution(N, contexts)
    r = np.sign(w_sign) * readout(np.asarray(beta, float)[..., None], values, N)
    return np.sum(probs * ((r > 0) + 0.5 * (r == 0)), axis=-1)


def icl_threshold_beta(N: int, accuracy: float = 0.95, contexts: str = "iid") -> float:
    """Smallest beta at which the large-D ICL accuracy (w > 0) reaches ``accuracy``.

    The accuracy is a step function of e^beta; this returns the log of the step at
    which it first exceeds ``accuracy`` (``inf`` if it never does, as for
    equalized contexts with accuracy >= 1).
    """
    values, probs = n_plus_distribution(N, contexts)
    xi = 2.0 * values - N - 1.0
    # readout > 0 iff e^beta > -xi; candidate steps are e^beta = -xi for -xi > 0.
    steps = np.unique(-xi[-xi > 0])
    for s in np.concatenate([[0.0], steps]):
        a = s * (1 + 1e-12) if s > 0 else 1e-300
        if icl_accuracy(np.log(a), N, contexts) > accuracy:
            return float(np.log(s)) if s > 0 else -np.inf
    return np.inf
