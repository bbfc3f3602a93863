"""Memorization curves, the onset distribution and transience, against references."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import expit

from icl_kinetics.errors import ParameterError
from icl_kinetics.theory import (
    Constant, OnsetDistribution, PowerLaw, Tabulated, i_k, icl_loss_from_iwl_loss,
    mlp_coefficients, t_icl, transience_flow, w_tr,
)
from icl_kinetics.theory.transience import quasi_static_state


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


def test_batched_mlp_coefficients_on_torch_are_the_engine_formula_bit_for_bit():
    import torch  # the test only: the theory layer never imports torch

    g = torch.Generator().manual_seed(11)
    p = 3.0 * torch.randn(5, 257, generator=g, dtype=torch.float64) + 1.0
    # the engine's expressions, written out here as the reference
    s = torch.sigmoid(-p)
    c1 = s.mean(1)
    ref = {"c1": c1, "c2": 1 - (s * s).mean(1) / c1, "c3": torch.exp(-p).mean(1)}
    got = mlp_coefficients(p, axis=1)
    assert set(got) == {"c1", "c2", "c3"}
    for k in ref:
        assert isinstance(got[k], torch.Tensor) and got[k].dtype == torch.float64 and got[k].shape == (5,)
        assert torch.equal(got[k], ref[k]), k
    # float32 in, float32 out; a negative axis reduces the same axis
    g32 = mlp_coefficients(p.float(), axis=-1)
    assert all(v.dtype == torch.float32 for v in g32.values())
    assert torch.allclose(g32["c2"].double(), ref["c2"], rtol=1e-5)
    # a tensor is checked without reading its values: dtype, shape and axis
    for bad, axis, name in ((torch.zeros(3, dtype=torch.int64), 0, "phi_plus"), (torch.zeros(0, 4), 1, "phi_plus"),
                            (p, 2, "axis"), (torch.tensor(1.0), 0, "axis")):
        with pytest.raises(ParameterError) as e:
            mlp_coefficients(bad, axis=axis)
        assert e.value.name == name and "\n" not in str(e.value)


def test_batched_mlp_coefficients_on_numpy_match_the_scalar_definition():
    p = np.random.default_rng(5).normal(0.5, 2.0, (4, 300))
    for axis in (0, 1, -1):
        got = mlp_coefficients(p, axis=axis)
        rows = np.moveaxis(p, axis, -1)
        for j, row in enumerate(rows):
            one = mlp_coefficients(row)
            for k in one:  # per-slice means against the flattened mean: summation order only
                assert got[k].shape == (rows.shape[0],)
                assert abs(got[k][j] / one[k] - 1) < 1e-13, (axis, j, k)
    # a 3-D batch reduces one axis and keeps the others
    assert mlp_coefficients(p.reshape(2, 2, 300), axis=2)["c3"].shape == (2, 2)


def test_theory_with_batched_coefficients_never_imports_torch():
    code = ("import sys, numpy as np; import icl_kinetics.theory as T;"
            "import icl_kinetics.theory.flow, icl_kinetics.theory.transience, icl_kinetics.theory.onset;"
            "T.mlp_coefficients(np.zeros((2, 3)), axis=1); T.head_escaped(1.0, 5.0, 20);"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


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
    iwl_loss = np.array([0.5, 0.1, 0.02, 0.004])
    l_icl = icl_loss_from_iwl_loss(iwl_loss, 3e-3)
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


def test_lam_is_a_deprecated_alias_of_wd_attn():
    from icl_kinetics.theory import solve_flow

    c3 = np.array([2.0, 0.3])
    with pytest.warns(DeprecationWarning, match="'lam' is deprecated.*use 'wd_attn'"):
        old = w_tr(c3, lam=1e-3)
    assert np.array_equal(old, w_tr(c3, wd_attn=1e-3)) and np.array_equal(old, w_tr(c3, 1e-3))
    with pytest.warns(DeprecationWarning, match="wd_attn"):
        a = solve_flow(20, 0.0, 0.1, stage="reduced", lam=1e-3, n_points=5)
    b = solve_flow(20, 0.0, 0.1, stage="reduced", wd_attn=1e-3, n_points=5)
    assert a.t_icl == b.t_icl and np.array_equal(a.beta, b.beta)
    with pytest.warns(DeprecationWarning):
        assert quasi_static_state(0.5, lam=1e-3, N=100) == quasi_static_state(0.5, 1e-3, 100)
    iwl = np.array([0.3, 0.01])
    with pytest.warns(DeprecationWarning, match="'l_iwl' is deprecated.*use 'iwl_loss'"):
        assert np.array_equal(icl_loss_from_iwl_loss(l_iwl=iwl, wd_attn=1e-3), icl_loss_from_iwl_loss(iwl, 1e-3))
    d = OnsetDistribution(N=20, lr=0.1)
    with pytest.warns(DeprecationWarning, match="'n' is deprecated.*use 'samples'"):
        assert np.array_equal(d.sample(n=50, seed=3), d.sample(samples=50, seed=3))
    # the alias and the new name together: refused, naming the alias
    for call in (lambda: w_tr(c3, 1e-3, lam=1e-3), lambda: w_tr(c3, wd_attn=1e-3, lam=1e-3)):
        with pytest.raises(ParameterError) as e:
            call()
        assert e.value.name == "lam" and "wd_attn" in str(e.value)


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ParameterError, match="wd_attn"):
        w_tr(1.0, 0.0)
    with pytest.raises(ParameterError, match="N"):
        OnsetDistribution(N=0, lr=0.1)
    with pytest.raises(ParameterError, match="lr"):
        OnsetDistribution(N=10, lr=-1)
