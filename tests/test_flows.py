"""The reduced ODEs against the full data-averaged flow, within their stated regime."""

import math

import numpy as np
import pytest

from icl_kinetics.theory import PowerLaw, icl_threshold_beta, solve_flow, t_icl


@pytest.mark.parametrize("beta0", [-1.0, 0.0, 1.0])
def test_reduced_flow_approaches_full_flow_as_n_grows(beta0):
    # regime of the reduced ODE: e^beta << N up to the accuracy threshold e^beta_c ~ 1.6 sqrt(N),
    # so its relative error is O(e^beta0 / sqrt(N)).  Stated tolerance: < e^beta0 / sqrt(N).
    errs = []
    for N in (50, 200, 800):
        full = solve_flow(N, beta0, 0.1, stage="full").t_icl
        red = solve_flow(N, beta0, 0.1, stage="reduced").t_icl
        errs.append(abs(red / full - 1))
        assert errs[-1] < math.exp(beta0) / math.sqrt(N)
    assert errs[0] > errs[1] > errs[2]


def test_linear_flow_matches_full_flow_on_the_plateau():
    # first order in u is accurate while u is small: t_icl within 0.5 %
    for N, b in [(50, -1.0), (100, 0.0), (200, 1.0)]:
        full = solve_flow(N, b, 0.1, stage="full").t_icl
        lin = solve_flow(N, b, 0.1, stage="linear").t_icl
        assert abs(lin / full - 1) < 5e-3


def test_full_flow_with_memorizing_mlp_matches_linear_flow_with_its_c1_c2():
    # phi_plus samples that grow with time vs the c1(t), c2(t) they imply
    from icl_kinetics.theory import Tabulated, mlp_coefficients

    base = np.random.default_rng(0).normal(0, 1, 64)

    def phi(s):
        return base + 0.002 * s

    s_grid = np.linspace(0, 4000, 81)
    co = [mlp_coefficients(phi(s)) for s in s_grid]
    c1 = Tabulated(s_grid, [c["c1"] for c in co], extrapolate="hold")
    c2 = Tabulated(s_grid, [c["c2"] for c in co], extrapolate="hold")
    full = solve_flow(100, 0.0, 0.1, stage="full", phi_plus=phi).t_icl
    lin = solve_flow(100, 0.0, 0.1, stage="linear", c1=c1, c2=c2).t_icl
    assert abs(lin / full - 1) < 0.02


def test_power_law_memorization_delays_escape():
    # c1 decaying in time slows the head: later onset than constant c1
    const = solve_flow(100, 0.0, 0.1, stage="reduced").t_icl
    decaying = solve_flow(100, 0.0, 0.1, stage="reduced", c1=PowerLaw(0.5, 50.0, 0.5)).t_icl
    assert decaying > const
    # the reduced flow's accuracy crossing equals the closed form stopped at beta_c
    assert abs(const / t_icl(100, 0.0, 0.1, beta_c=icl_threshold_beta(100)) - 1) < 1e-4


def test_equalized_contexts_saddle():
    # equalized contexts: no drive at beta0 = 0 (saddle); beta0 < 0 runs away from ICL
    up = solve_flow(100, 0.5, 0.1, stage="reduced", contexts="equalized", t_max=1e6)
    down = solve_flow(100, -0.5, 0.1, stage="reduced", contexts="equalized", t_max=1e6)
    assert up.t_icl is not None and down.t_icl is None
    assert down.w[-1] < 0 and down.beta[-1] < -0.5
