"""Closed forms of the reduced model against independent numeric references."""

import inspect
import math

import numpy as np
import pytest

from icl_kinetics.theory import (
    T_ICL_THRESHOLD, critical_beta0, escape_condition, escape_time, head_escaped, icl_accuracy,
    icl_threshold_beta, k_star, p_icl, solve_flow, t_icl,
)
from icl_kinetics.theory.closed_form import (
    _scaled_escape, escape_time_reference, scaled_escape_time, trajectory_invariant,
)


@pytest.mark.parametrize("beta0", [-2.0, -1.0, 0.0, 1.0, 2.5])
@pytest.mark.parametrize("w0", [-0.7, 0.0, 0.8])
def test_signal_regime_closed_form_is_exact_for_noise_free_ode(beta0, w0):
    # regime 'signal' is exact for c2 = 0: compare with solve_ivp of the reduced ODE, rel < 1e-3
    ref = escape_time_reference(beta0, w0=w0, c2=0.0)
    got = escape_time(beta0, w0=w0, c2=0.0, regime="signal")
    assert abs(got / ref - 1) < 1e-3


@pytest.mark.parametrize("beta0", [-3.0, -1.0, 0.0, 1.5])
@pytest.mark.parametrize("c2", [0.2, 0.5, 1.0])
def test_exact_escape_time_matches_time_domain_reference(beta0, c2):
    # the tabulated universal function and its rescaling against a direct solve: rel < 1e-6
    ref = escape_time_reference(beta0, c2=c2)
    assert abs(escape_time(beta0, c2=c2) / ref - 1) < 1e-6


def test_escape_with_w0_and_threshold_against_reference():
    # the sigma-parametrized integration with w0 > 0 and a finite beta_c, against the time domain
    for beta0, w0, bc in [(0.0, 0.5, 2.8), (-1.0, 0.3, 2.4), (0.5, 0.0, 3.0)]:
        ref = escape_time_reference(beta0, w0=w0, c2=0.5, beta_stop=bc - beta0, tail=False)
        got = escape_time(beta0, w0=w0, c2=0.5, beta_c=bc)
        assert abs(got / ref - 1) < 1e-6


def test_signal_threshold_crossing_closed_form():
    for beta0, bc in [(0.0, 2.83), (1.0, 3.1), (-1.0, 2.4)]:
        ref = escape_time_reference(beta0, c2=0.0, beta_stop=bc - beta0, tail=False)
        assert abs(escape_time(beta0, c2=0.0, beta_c=bc) / ref - 1) < 1e-3


def test_scaled_escape_table_interpolation():
    # off-grid points against fresh integrations: rel < 1e-6; asymptotes at both ends
    g = np.array([2.3e-4, 0.0137, 0.29, 1.0, 3.7, 41.0, 777.0, 9.1e3])
    assert np.max(np.abs(scaled_escape_time(g) / _scaled_escape(g, 0.0, np.inf) - 1)) < 1e-6
    assert abs(scaled_escape_time(1e-8) - math.sqrt(math.pi / 2)) < 1e-6
    big = 3e4
    assert abs(scaled_escape_time(big) / _scaled_escape(np.array([big]), 0.0, np.inf)[0] - 1) < 1e-6


def test_noise_regime_is_the_large_gamma_limit():
    # 'noise' is exact only as gamma = c2 e^-beta0 -> infinity: its error must shrink
    errs = []
    for beta0 in (-2.0, -4.0, -6.0):
        ref = escape_time_reference(beta0, c2=0.5)
        errs.append(abs(escape_time(beta0, c2=0.5, regime="noise") / ref - 1))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-3


def test_t_icl_formulas():
    N, lr = 100, 0.1
    for b in (-1.0, 0.0, 2.0):
        sig = t_icl(N, b, lr, regime="signal")
        assert abs(sig / (math.sqrt(2 * math.pi) * N * math.exp(-b) / lr) - 1) < 1e-12
        noi = t_icl(N, b, lr, regime="noise")
        assert abs(noi / (0.5 * N * math.exp(-2 * b) / (2 * lr * 0.5)) - 1) < 1e-12


def test_reduced_flow_escape_matches_closed_form():
    # closed-form t_icl (exact regime) against solve_ivp of the reduced ODE in iterations
    for N, b in [(50, -1.0), (100, 0.0), (200, 1.0)]:
        sol = solve_flow(N, b, 0.1, stage="reduced", c1=0.5, c2=0.5)
        assert abs(sol.t_escape / t_icl(N, b, 0.1) - 1) < 1e-3


def test_invariant_conserved_by_noise_free_reduced_flow():
    sol = solve_flow(100, 0.3, 0.1, w0=0.2, stage="reduced", c2=0.0)
    inv = trajectory_invariant(sol.w, sol.beta)
    assert np.max(np.abs(inv - inv[0])) < 1e-5


def test_k_star_threshold_slope_and_escape_condition():
    A, nu, b0 = 0.3, 0.7, 0.0
    Ns = np.array([50, 100, 150, 200, 250])
    ks = k_star(Ns, b0, A, nu)
    slope = np.polyfit(np.log(Ns), np.log(ks), 1)[0]
    assert abs(slope - 1 / nu) < 1e-9
    for N, k in zip(Ns, ks):
        assert escape_condition(A * (1.01 * k) ** nu, int(N), b0, c2=0.0)
        assert not escape_condition(A * (0.99 * k) ** nu, int(N), b0, c2=0.0)
    # beta0 shifts K* by e^{-beta0/nu}
    assert abs(k_star(100, 1.0, A, nu) / k_star(100, 0.0, A, nu) - math.exp(-1 / nu)) < 1e-9


def test_critical_beta0_and_p_icl():
    N = 100
    for c2 in (0.0, 0.5):
        for b in (-3.0, -0.5, 1.0):
            i_inf = N * float(escape_time(b, c2=c2))
            assert abs(critical_beta0(i_inf, N, c2=c2) - b) < 1e-3
            assert abs(p_icl(i_inf, N, b, 1.0, c2=c2) - 0.5) < 1e-3
    # more integrated error, more seeds escape; infinite I_K: all escape
    ps = [p_icl(i, N, 0.0, 1.0) for i in (10.0, 100.0, 1000.0)]
    assert ps[0] < ps[1] < ps[2]
    assert p_icl(np.inf, N, 0.0, 1.0) == 1.0


def test_one_acquisition_threshold_is_every_default():
    assert T_ICL_THRESHOLD == 0.95
    for fn in (icl_threshold_beta, solve_flow):
        assert inspect.signature(fn).parameters["accuracy"].default == T_ICL_THRESHOLD, fn.__name__
    assert icl_threshold_beta(99) == icl_threshold_beta(99, 0.95)


def test_a_tiny_e_beta_is_not_rounded_away():
    # N = 1: the readout is e^beta / (2 e^beta) = 1/2 for every beta, so the accuracy is 1 and
    # beta_c = -inf (it came out +inf when 2 e^beta + N - 1 rounded to 0)
    assert icl_accuracy(-50.0, 1) == 1.0 and icl_threshold_beta(1) == -np.inf
    # N = 3: xi = 2 n_plus - 4 in {-2, 0, 2} w.p. 1/4, 1/2, 1/4; for e^beta -> 0+ the readout is
    # positive iff xi >= 0 (xi = 0 is a win, not a tie)
    assert icl_accuracy(-50.0, 3) == pytest.approx(0.75, abs=1e-12) and icl_threshold_beta(3, 0.6) == -np.inf


@pytest.mark.parametrize("N,contexts", [(1, "iid"), (2, "iid"), (20, "iid"), (99, "iid"), (20, "equalized")])
def test_head_escaped_is_w_positive_and_accuracy_above_threshold(N, contexts):
    # reference: the large-D ICL accuracy itself (no bisection), on a grid that avoids its steps
    beta = np.linspace(-6.0, 12.0, 1801) + 1e-7
    w = np.where(np.arange(beta.size) % 3 == 0, -0.4, 0.8)
    ref = (w > 0) & (icl_accuracy(beta, N, contexts) > T_ICL_THRESHOLD)
    got = head_escaped(w, beta, N, contexts=contexts)
    assert got.dtype == bool and got.shape == beta.shape
    assert np.array_equal(got, ref)
    if contexts == "iid" and N > 1:
        assert got.any() and not got.all()  # both outcomes occur on the grid
    # broadcasting, scalars, a blown-up head and w = 0 (not escaped)
    assert head_escaped(1.0, np.inf, N, contexts).ndim == 0 and bool(head_escaped(1.0, np.inf, N, contexts))
    assert not bool(head_escaped(0.0, np.inf, N, contexts))
    assert head_escaped(np.array([[1.0], [-1.0]]), np.array([0.0, 50.0]), N, contexts).shape == (2, 2)
