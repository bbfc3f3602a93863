"""Memorization curves, the onset distribution and transience, against references."""

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import expit

from icl_kinetics.errors import ParameterError
from icl_kinetics.theory import (
    Constant, OnsetDistribution, PowerLaw, Tabulated, i_k, icl_loss_from_iwl_loss,
    mlp_coefficients, quasi_static_state, t_icl, transience_flow, w_tr,
)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 1.7])
def test_power_law_i_k_against_quad(alpha):
    c = PowerLaw(0.5, 20.0, alpha)
    for s in (1.0, 100.0, 1e4):
        ref = integrate.quad(c, 0, s, limit=200)[0]
        assert abs(i_k(c, s) / ref - 1) < 1e-8
    if alpha > 1:
        assert abs(i_k(c, np.inf) - 0.5 * 20.0 / (alpha - 1)) < 1e-12


def test_tabulated_i_k_against_quad_of_interpolant():
    s = np.array([0.5, 2.0, 3.0, 10.0, 40.0])
    v = np.array([0.5, 0.4, 0.38, 0.2, 0.05])
    for ext in ("zero", "hold"):
        c = Tabulated(s, v, extrapolate=ext)
        for x in (0.2, 1.0, 2.5, 17.0, 40.0, 55.0):
            pts = [p for p in s if p < x]
            ref = integrate.quad(c, 0, x, points=pts or None, limit=200)[0]
            assert abs(i_k(c, x) - ref) < 1e-9
    assert i_k(Constant(0.5), 10.0) == 5.0


def test_mlp_coefficients_definitions():
    p = np.random.default_rng(3).normal(1.0, 2.0, 1000)
    co = mlp_coefficients(p)
    s = expit(-p)
    assert abs(co["c1"] * co["c2"] - np.mean(s * (1 - s))) < 1e-12
    assert abs(co["c3"] - np.mean(np.exp(-p))) < 1e-12
    z = mlp_coefficients(np.zeros(5))
    assert z == {"c1": 0.5, "c2": 0.5, "c3": 1.0}


def test_onset_samples_follow_closed_form_distribution():
    d = OnsetDistribution(N=100, lr=0.1, beta0_mean=-0.5, beta0_std=0.8)
    x = d.sample(20000, seed=7)
    ks = stats.kstest(x, d.cdf)
    assert ks.pvalue > 0.01 and ks.statistic < 0.015


def test_onset_quantile_cdf_pdf_consistency():
    d = OnsetDistribution(N=50, lr=0.1, beta0_mean=0.0, beta0_std=1.0)
    for p in (0.05, 0.5, 0.9):
        assert abs(d.cdf(d.quantile(p)) - p) < 1e-4
    assert d.median() == pytest.approx(float(d.quantile(0.5)), rel=1e-9)
    a, b = d.quantile(0.2), d.quantile(0.7)
    mass = integrate.quad(d.pdf, a, b, limit=200)[0]
    assert abs(mass - 0.5) < 2e-3


def test_signal_regime_onset_is_lognormal():
    d = OnsetDistribution(N=100, lr=0.1, beta0_mean=0.3, beta0_std=0.6, regime="signal")
    scale = math.sqrt(2 * math.pi) * 100 / 0.1 * math.exp(-0.3)
    ref = stats.lognorm(s=0.6, scale=scale)
    t = np.array([0.3, 1.0, 3.0]) * scale
    assert np.max(np.abs(d.cdf(t) - ref.cdf(t))) < 1e-4
    assert d.median() == pytest.approx(float(t_icl(100, 0.3, 0.1, regime="signal")), rel=1e-12)


def test_w_tr_solves_its_equation_and_relation_is_inverse():
    c3 = np.array([2.0, 0.3, 0.01])
    for lam in (1e-3, 3e-2):
        w = w_tr(c3, lam)
        assert np.max(np.abs(0.5 * c3 * np.exp(-0.5 * w) - lam * w)) < 1e-12
    l_iwl = np.array([0.5, 0.1, 0.02, 0.004])
    l_icl = icl_loss_from_iwl_loss(l_iwl, 3e-3)
    assert np.all(np.diff(l_icl) > 0)  # as the IWL loss falls, the ICL loss rises


def test_transience_flow_tracks_w_tr_and_loses_icl():
    lam = 3e-3
    c3 = PowerLaw(1.0, 200.0, 1.0)
    sol = transience_flow(c3, lam, 100, s_max=2e4)
    assert sol.s_loss is not None and sol.icl_accuracy[0] > 0.99 and sol.icl_accuracy[-1] < 0.9
    # w stays near w_tr while beta is large (before the loss of ICL)
    early = (sol.s > 200) & (sol.s < 0.5 * sol.s_loss)
    assert np.max(np.abs(sol.w[early] / sol.w_tr[early] - 1)) < 0.25
    # weaker decay holds ICL longer
    sol2 = transience_flow(c3, lam / 3, 100, s_max=2e5)
    assert sol2.s_loss > sol.s_loss


def test_quasi_static_state_is_a_fixed_point():
    w, b = quasi_static_state(0.5, 1e-3, 100)
    sol = transience_flow(0.5, 1e-3, 100, s_max=500.0, w_init=w, beta_init=b)
    assert abs(sol.w[-1] - w) < 1e-5 and abs(sol.beta[-1] - b) < 1e-5


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ParameterError, match="lam"):
        w_tr(1.0, 0.0)
    with pytest.raises(ParameterError, match="N"):
        OnsetDistribution(N=0, lr=0.1)
    with pytest.raises(ParameterError, match="lr"):
        OnsetDistribution(N=10, lr=-1)
