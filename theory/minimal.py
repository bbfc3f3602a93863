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
from functools import lru_cache

import numpy as np

from icl_kinetics.errors import (
    ParameterError, broadcast_shape, finite_array, finite_float, one_of, positive_int, probability,
)
from icl_kinetics.resources import require_memory

CONTEXTS = ("iid", "equalized")
BETA_MAX = 700.0  # e^beta (and 2 e^beta + N - 1) must stay a finite float: e^700 ~ 1e304
T_ICL_THRESHOLD = 0.95
"""The acquisition accuracy (dimensionless): a seed has acquired ICL at the first
evaluation whose ICL accuracy exceeds this value; its ``t_icl`` (iterations) is that
evaluation's iteration, and ``beta_c = icl_threshold_beta(N)`` the beta above which the
large-D accuracy does.  The one definition: the engine, the sweeps and the validation
layer import it from here."""


def check_beta(name: str, beta):
    """``beta`` (an inverse temperature, array-like) as a float array: finite and
    <= ``BETA_MAX`` (700), so that ``e^beta`` is a finite float; very negative values are
    fine (``e^beta`` -> 0)."""
    return finite_array(name, beta, maximum=BETA_MAX)


def check_n(N, contexts: str = "iid") -> int:
    """N (context tokens, >= 1) as an int; even for equalized contexts."""
    N = positive_int("N", N)
    one_of("contexts", contexts, CONTEXTS)
    if contexts == "equalized" and N % 2:
        raise ParameterError("N", N, "even with contexts='equalized' (half the labels of each kind)")
    return N


def _readout(a, n_plus, N):
    # xi = 2 n_plus - N - 1 and N - 1 are exact integers: add e^beta to them, not to 2 n_plus,
    # so that a tiny e^beta is not rounded away (the sign of a + xi decides the accuracy)
    return (a + (2.0 * np.asarray(n_plus) - N - 1.0)) / (2.0 * a + (N - 1.0))


def _n_plus_distribution(N: int, contexts: str):
    if contexts == "equalized":
        return np.array([N / 2.0]), np.array([1.0])
    # the lgamma list (a Python float per entry, ~32 bytes) and ~8 float arrays of N
    require_memory("N", N, 100.0 * N, f"the distribution of n_plus over N={N} context tokens")
    k = np.arange(N)
    # Binomial(N-1, 1/2) pmf via log-gamma (exact to rounding; avoids importing scipy.stats)
    lg = np.array([math.lgamma(i + 1.0) for i in range(N)])
    logp = lg[N - 1] - lg[k] - lg[N - 1 - k] - (N - 1) * math.log(2.0)
    return k + 1.0, np.exp(logp)


def _accuracy(beta, values, probs, N, w_sign):
    """ICL accuracy at ``beta`` (float array) for the n_plus distribution (values, probs)."""
    r = np.sign(w_sign) * _readout(np.exp(beta[..., None]), values, N)
    return np.sum(probs * ((r > 0) + 0.5 * (r == 0)), axis=-1)


def readout(beta, n_plus, N: int):
    """Attention-weighted label sum along the correct label, large-D limit (dimensionless).

    Args:
        beta: inverse temperature of item matching (array-like).
        n_plus: number of context labels equal to the target's, copy included.
        N: number of context tokens (target not counted).

    Raises:
        ParameterError: ``N`` not an integer >= 1; ``beta`` not finite or above 700
            (``e^beta`` must be a finite float); ``n_plus`` not finite numbers in [1, N];
            shapes that do not broadcast, or a result too large for memory.
    """
    N = positive_int("N", N)
    b = check_beta("beta", beta)
    n = finite_array("n_plus", n_plus, minimum=1, maximum=N)
    shape = broadcast_shape(beta=b, n_plus=n)
    require_memory("beta", beta, 3 * 8.0 * math.prod(shape), "readout's broadcast result")
    return _readout(np.exp(beta), n_plus, N)


def n_plus_distribution(N: int, contexts: str = "iid"):
    """Support and probabilities of ``n_plus`` for a context of N tokens.

    ``contexts='iid'``: the copy agrees, the other N-1 labels are fair coins, so
    ``n_plus - 1 ~ Binomial(N-1, 1/2)``.  ``contexts='equalized'``: exactly N/2
    labels of each kind, so ``n_plus = N/2`` (N must be even).

    Returns:
        ``(values, probs)``: two 1-D float arrays.

    Raises:
        ParameterError: ``N`` not an integer >= 1 (even for equalized contexts) or too
            large for memory (about 100 bytes per token); unknown ``contexts``.
    """
    N = check_n(N, contexts)
    return _n_plus_distribution(N, contexts)


def icl_accuracy(beta, N: int, contexts: str = "iid", w_sign: float = 1.0):
    """ICL accuracy of the minimal model without MLP, large-D limit, exact over n_plus.

    A sequence is classified correctly when ``w * readout > 0``; ties (readout = 0)
    count one half, as a coin flip would.  Vectorized over ``beta``.

    Raises:
        ParameterError: ``beta`` not finite or above 700; ``N`` not an integer >= 1
            (even for equalized contexts); unknown ``contexts``; ``w_sign`` not a finite
            number (its sign is used; 0 gives chance, 1/2); ``beta.size * N`` too large
            for memory.
    """
    N = check_n(N, contexts)
    b = check_beta("beta", beta)
    w_sign = finite_float("w_sign", w_sign)
    size = b.size * (N if contexts == "iid" else 1)
    require_memory("N" if N >= b.size else "beta", N if N >= b.size else beta, 5 * 8.0 * size,
                   f"the accuracy of {b.size} beta value(s) over N={N} n_plus values")
    values, probs = _n_plus_distribution(N, contexts)
    return _accuracy(b, values, probs, N, w_sign)


def icl_threshold_beta(N: int, accuracy: float = T_ICL_THRESHOLD, contexts: str = "iid") -> float:
    """Smallest beta at which the large-D ICL accuracy (w > 0) reaches ``accuracy``
    (default :data:`T_ICL_THRESHOLD`, 0.95: then this is ``beta_c``).

    The accuracy is a step function of e^beta; this returns the log of the step at
    which it first exceeds ``accuracy`` (``inf`` if it never does, as for
    equalized contexts with accuracy >= 1; ``-inf`` if it does already at e^beta -> 0,
    as for N = 1 or accuracy 0).

    Raises:
        ParameterError: ``N`` not an integer >= 1 (even for equalized contexts);
            ``accuracy`` not a number in [0, 1]; unknown ``contexts``.
    """
    N = check_n(N, contexts)
    accuracy = probability("accuracy", accuracy, open_interval=False)
    values, probs = n_plus_distribution(N, contexts)
    xi = 2.0 * values - N - 1.0
    # readout > 0 iff e^beta > -xi; candidate steps are e^beta = -xi for -xi > 0.
    steps = np.concatenate([[0.0], np.unique(-xi[-xi > 0])])

    def above(s):
        a = s * (1 + 1e-12) if s > 0 else 1e-300
        return _accuracy(np.asarray(np.log(a), float), values, probs, N, 1.0) > accuracy

    # the accuracy is non-decreasing in e^beta: bisect for the first step above `accuracy`
    lo, hi = 0, steps.size
    while lo < hi:
        mid = (lo + hi) // 2
        if above(steps[mid]):
            hi = mid
        else:
            lo = mid + 1
    if lo == steps.size:
        return np.inf
    s = steps[lo]
    return float(np.log(s)) if s > 0 else -np.inf


def head_escaped(w, beta, N: int, contexts: str = "iid"):
    """Whether the induction head has escaped its plateau: ``w > 0`` and
    ``beta > beta_c``, with ``beta_c = icl_threshold_beta(N, contexts=contexts)`` the beta
    at which the large-D ICL accuracy reaches :data:`T_ICL_THRESHOLD` (0.95).

    The one definition of the theory's own acquisition event, used where the runs log
    the head (w, beta): the minimal model's MLP logit on novel items can hold the measured
    accuracy down although the head has escaped.

    Args:
        w: readout weight(s) of the head (dimensionless, array-like).
        beta: inverse temperature(s) of item matching (dimensionless, array-like;
            ``+inf``, a blown-up head, is allowed).
        N: context tokens (target not counted).
        contexts: ``'iid'`` or ``'equalized'``.

    Returns:
        A bool array of the broadcast shape of ``w`` and ``beta`` (0-d for scalars).

    Raises:
        ParameterError: ``w`` or ``beta`` NaN or not numbers (infinities are allowed;
            filter non-finite rows of a diverged run first), shapes that do not
            broadcast; ``N`` not an integer >= 1 (even for equalized contexts); unknown
            ``contexts``.
    """
    N = check_n(N, contexts)
    w_a = finite_array("w", w, allow_inf=True)
    b_a = finite_array("beta", beta, allow_inf=True)
    broadcast_shape(w=w_a, beta=b_a)
    return np.asarray((w_a > 0) & (b_a > _beta_c(N, contexts)))


@lru_cache(maxsize=256)
def _beta_c(N: int, contexts: str) -> float:
    return icl_threshold_beta(N, T_ICL_THRESHOLD, contexts)
