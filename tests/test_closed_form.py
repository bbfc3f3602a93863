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
    ks = k_star(Ns, b0, A, nu, c2=0.0)  # the paper's closed form (noise dropped)
    slope = np.polyfit(np.log(Ns), np.log(ks), 1)[0]
    assert abs(slope - 1 / nu) < 1e-9
    for N, k in zip(Ns, ks):
        assert escape_condition(A * (1.01 * k) ** nu, int(N), b0, c2=0.0)
        assert not escape_condition(A * (0.99 * k) ** nu, int(N), b0, c2=0.0)
    # beta0 shifts K* by e^{-beta0/nu}
    assert abs(k_star(100, 1.0, A, nu, c2=0.0) / k_star(100, 0.0, A, nu, c2=0.0) - math.exp(-1 / nu)) < 1e-9


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


# ---------------------------------------------------------------- c2 default, CIs, calibration, finite K
from icl_kinetics.errors import ParameterError  # noqa: E402
def test_one_c2_default_everywhere():
    """k_star, p_icl, critical_beta0, escape_time, t_icl, escape_condition and OnsetDistribution
    share one c2 default (1/2, an untrained MLP's c2)."""
    import dataclasses
    import inspect

    from icl_kinetics.theory import C2_DEFAULT, OnsetDistribution, escape_condition

    assert C2_DEFAULT == 0.5
    for f in (k_star, p_icl, critical_beta0, escape_time, t_icl, escape_condition):
        assert inspect.signature(f).parameters["c2"].default == C2_DEFAULT, f.__name__
    assert {f.name: f.default for f in dataclasses.fields(OnsetDistribution)}["c2"] == C2_DEFAULT
    # the defaults agree: K* from k_star is the N tau_star whose critical beta0 is beta0
    ks = k_star(100, 0.3, 0.2, 0.7)
    assert critical_beta0(0.2 * ks**0.7, 100) == pytest.approx(0.3, abs=1e-3)


def test_k_star_interval_delta_matches_monte_carlo():
    """The analytic (delta) interval of K* and a 200000-draw seeded Monte Carlo agree within 3 %
    for narrow CIs; without CIs the interval is the point."""
    from icl_kinetics.theory import k_star_interval

    kw = dict(amplitude_ci=(0.18, 0.222), nu_ci=(0.68, 0.72))
    d = k_star_interval([50, 100], 0.0, 0.2, 0.7, **kw)
    m = k_star_interval([50, 100], 0.0, 0.2, 0.7, method="monte_carlo", draws=200_000, seed=3, **kw)
    assert np.allclose(d["k_star"], k_star([50, 100], 0.0, 0.2, 0.7), rtol=1e-12)
    assert np.allclose(d["lo"], m["lo"], rtol=0.03) and np.allclose(d["hi"], m["hi"], rtol=0.03)
    assert np.all(d["lo"] < d["k_star"]) and np.all(d["k_star"] < d["hi"])
    p = k_star_interval(100, 0.0, 0.2, 0.7)
    assert p["lo"] == p["hi"] == p["k_star"] and p["below_one"] is False
    assert k_star_interval(50, 0.0, 1e3, 0.7)["below_one"] is True
    with pytest.raises(ParameterError, match="nu_ci"):
        k_star_interval(50, 0.0, 0.2, 0.7, nu_ci=(0.75, 0.8))  # does not contain the estimate


def test_calibrate_beta0_recovers_a_known_scale():
    """A slope made from a known scale a (s = a m(a beta0_eff)) gives a back; in the signal limit
    (c2 = 0) the theory's slope is exactly -1, so a = -s."""
    from icl_kinetics.theory import calibrate_beta0, onset_slope

    assert onset_slope(0.7, c2=0.0) == pytest.approx(-1.0, abs=1e-6)
    assert onset_slope(-8.0) == pytest.approx(-2.0, abs=0.02)  # deep noise regime: e^-2 beta0
    for a_true, be in ((0.4, 0.0), (0.3, 1.5), (0.8, -2.0)):
        s = a_true * onset_slope(a_true * be)
        r = calibrate_beta0(s, be)
        assert r["scale"] == pytest.approx(a_true, rel=1e-6) and r["fitted"] is True
    assert calibrate_beta0(-0.42, c2=0.0)["scale"] == pytest.approx(0.42, rel=1e-6)
    lo, hi = calibrate_beta0(-0.42, slope_ci=(-0.49, -0.35), c2=0.0)["scale_ci"]
    assert (lo, hi) == pytest.approx((0.35, 0.49), rel=1e-6)
    with pytest.raises(ParameterError, match="measured_slope"):
        calibrate_beta0(0.1)


def test_inverse_i_k_against_the_integral():
    """inverse_i_k inverts each curve's integral (the independent reference) to 1e-10."""
    from icl_kinetics.theory import Constant, PowerLaw, Tabulated, i_k, inverse_i_k

    for c in (Constant(0.5), PowerLaw(0.5, 3.0, 0.6), PowerLaw(0.5, 3.0, 1.0), PowerLaw(0.5, 3.0, 1.7),
              Tabulated((0.5, 2.0, 7.0, 30.0), (0.5, 0.45, 0.1, 0.01)),
              Tabulated((0.0, 2.0, 7.0), (0.5, 0.5, 0.2), extrapolate="hold")):
        total = float(i_k(c, np.inf))
        y = np.linspace(0.0, min(total, 40.0) * 0.999, 37)[1:]
        assert np.allclose(i_k(c, inverse_i_k(c, y)), y, rtol=1e-10, atol=1e-12), c
        if np.isfinite(total):
            assert inverse_i_k(c, total * 1.01) == np.inf


def test_finite_k_onset():
    """c1 = 1/2 reproduces the K = inf distribution; a memorizing c1 gives fraction_acquired = p_icl
    of its I_K(inf), and that fraction of samples (binomial 4 sd) is finite."""
    from icl_kinetics.theory import FiniteKOnset, OnsetDistribution, Tabulated, i_k

    q = np.array([0.05, 0.5, 0.9])
    ref = OnsetDistribution(N=50, lr=0.1, beta0_mean=0.2, beta0_std=0.8)
    same = FiniteKOnset(N=50, lr=0.1, c1=0.5, beta0_mean=0.2, beta0_std=0.8)
    assert np.allclose(same.quantile(q), ref.quantile(q), rtol=1e-10)
    c1 = Tabulated((0.0, 10.0, 100.0, 1000.0), (0.5, 0.3, 0.05, 0.0))
    d = FiniteKOnset(N=50, lr=0.1, c1=c1, beta0_mean=0.0, beta0_std=1.0)
    f = d.fraction_acquired()
    assert f == pytest.approx(p_icl(float(i_k(c1, np.inf)), 50, 0.0, 1.0), abs=1e-6)
    x = d.sample(40000, seed=2)
    assert abs(np.mean(np.isfinite(x)) - f) < 4 * math.sqrt(f * (1 - f) / 40000)
    qs = d.quantile(np.array([f / 2, (1 + f) / 2]))
    assert np.isfinite(qs[0]) and qs[1] == np.inf
    # memorization only delays (c1 <= 1/2)
    assert d.quantile(f / 2) >= FiniteKOnset(N=50, lr=0.1, c1=0.5).quantile(f / 2)


def test_memorization_law_fit_matches_linregress():
    """A, nu and their t intervals against scipy.stats.linregress on ln I vs ln K."""
    from scipy import stats

    from icl_kinetics.theory import memorization_law_fit

    K = np.array([64, 128, 256, 512, 1024.0])
    I = 0.3 * K**0.65 * np.exp(np.array([0.02, -0.03, 0.01, 0.03, -0.02]))
    r = memorization_law_fit(K, I)
    lr = stats.linregress(np.log(K), np.log(I))
    t = stats.t.ppf(0.975, 3)
    assert r["nu"] == pytest.approx(lr.slope, rel=1e-10)
    assert r["nu_ci"] == pytest.approx((lr.slope - t * lr.stderr, lr.slope + t * lr.stderr), rel=1e-9)
    assert math.log(r["amplitude"]) == pytest.approx(lr.intercept, rel=1e-10)
    lo, hi = r["amplitude_ci"]
    assert math.log(hi) - math.log(lo) == pytest.approx(2 * t * lr.intercept_stderr, rel=1e-9)
    with pytest.raises(ParameterError, match="K"):
        memorization_law_fit([10, 20], [1.0, 2.0])
