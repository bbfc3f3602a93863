"""The sympy derivation against finite differences, and the numeric flows against sympy."""

import numpy as np
import pytest

from icl_kinetics.theory import averaged_loss, symbolic
from icl_kinetics.theory.flow import rhs_linear, rhs_reduced
from icl_kinetics.theory.loss import averaged_gradient

RNG = np.random.default_rng(1234)


def _fd(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_sympy_gradient_matches_finite_differences():
    loss, gw, gb = symbolic.numeric_loss_gradient()
    for _ in range(20):
        w, b, phi = RNG.normal(0, 2), RNG.normal(0, 1.5), RNG.normal(0, 1)
        N = int(RNG.integers(5, 300))
        xi = float(RNG.integers(-(N - 1), N)) if N > 1 else 0.0
        fw = _fd(lambda x: loss(x, b, xi, N, phi), w)
        fb = _fd(lambda x: loss(w, x, xi, N, phi), b)
        assert abs(gw(w, b, xi, N, phi) - fw) < 1e-6
        assert abs(gb(w, b, xi, N, phi) - fb) < 1e-6


@pytest.mark.parametrize("contexts", ["iid", "equalized"])
@pytest.mark.parametrize("method", ["exact", "gaussian"])
def test_averaged_gradient_matches_finite_differences(contexts, method):
    phi = RNG.normal(0.5, 1.0, 7)
    for w, b in [(0.0, 0.0), (1.3, -0.7), (4.0, 3.0)]:
        fw = _fd(lambda x: averaged_loss(x, b, 50, phi, contexts, method), w)
        fb = _fd(lambda x: averaged_loss(w, x, 50, phi, contexts, method), b)
        gw, gb = averaged_gradient(w, b, 50, phi, contexts, method)
        assert abs(gw - fw) < 1e-6 and abs(gb - fb) < 1e-6


def test_gaussian_approximation_converges_to_exact_average():
    errs = []
    for N in (20, 200, 2000):
        ex = averaged_gradient(1.0, 0.5, N, 0.0, "iid", "exact")[0]
        ga = averaged_gradient(1.0, 0.5, N, 0.0, "iid", "gaussian")[0]
        errs.append(abs(ga / ex - 1))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3


def test_initial_loss_is_log2_without_mlp():
    assert abs(averaged_loss(0.0, 0.3, 100) - np.log(2)) < 1e-12


@pytest.mark.parametrize("contexts", ["iid", "equalized"])
@pytest.mark.parametrize("stage", ["linear", "reduced"])
def test_hand_written_rhs_matches_sympy(stage, contexts):
    fw, fb = symbolic.numeric_rhs(stage, contexts)
    f = rhs_linear if stage == "linear" else rhs_reduced
    for _ in range(25):
        w, b = RNG.normal(0, 2), RNG.normal(0, 2)
        N = int(RNG.integers(2, 500)) * 2
        lr, c1, c2 = RNG.uniform(0.01, 1), RNG.uniform(0.01, 0.5), RNG.uniform(0, 1)
        dw, db = f(w, b, N, lr, c1, c2, contexts)
        assert abs(dw - fw(w, b, N, lr, c1, c2)) <= 1e-12 * (1 + abs(dw))
        assert abs(db - fb(w, b, N, lr, c1, c2)) <= 1e-12 * (1 + abs(db))


def test_linear_flow_is_first_order_taylor_of_full_gradient():
    # with phi_plus = 0 (c1 = c2 = 1/2): -lr * grad L = linear rhs + O(u^2)
    N, lr = 100, 1.0
    for w in (1e-3, 1e-2):
        gw, gb = averaged_gradient(w, 0.2, N, 0.0)
        dw, db = rhs_linear(w, 0.2, N, lr, 0.5, 0.5)
        assert abs(-gw - dw) < 10 * w**2 / N and abs(-gb - db) < 10 * w**2 / N
