"""One error contract for the theory API: every bad argument raises exactly
:class:`~icl_kinetics.errors.ParameterError` (a ValueError), with a one-line message that
starts with the parameter's name, and never returns a number instead.

Table-driven: each case is a callable, its arguments and the parameter the message must
name.  Categories: NaN, inf, negative, zero where > 0 is needed, strings, None, booleans,
lists where a scalar is expected, arrays with one bad element (the index is named),
degenerate results (K* inf or 0, t_ICL 0 or below one iteration, overflowing escape
times), sizes that cannot fit in memory.  The last tests check that valid edge inputs
still work, so the checks cannot be over-broad.
"""

import math

import numpy as np
import pytest

import icl_kinetics.resources as resources
from icl_kinetics.errors import ParameterError
from icl_kinetics.theory import (
    Constant, OnsetDistribution, PowerLaw, Tabulated, averaged_loss, critical_beta0, escape_condition,
    escape_time, head_escaped, i_k, icl_accuracy, icl_loss_from_iwl_loss, icl_threshold_beta, k_star,
    mlp_coefficients, p_icl, solve_flow, t_icl, t_icl_loss, transience_flow, w_tr,
)
from icl_kinetics.theory.closed_form import escape_time_reference, scaled_escape_time, trajectory_invariant
from icl_kinetics.theory.flow import rhs_linear, rhs_reduced
from icl_kinetics.theory.loss import averaged_gradient
from icl_kinetics.theory.minimal import n_plus_distribution, readout
from icl_kinetics.theory.transience import quasi_static_state

NAN, INF = float("nan"), float("inf")


def _dist(**kw):
    return OnsetDistribution(N=20, lr=0.1, **kw)


def case(fn, *args, name, contains=None, id=None, **kwargs):
    """A bad-input case: ``fn(*args, **kwargs)`` must refuse, naming ``name``."""
    return pytest.param(fn, args, kwargs, name, contains, id=id)


CASES = [
    # --- escape_time and friends
    case(escape_time, NAN, name="beta0", id="escape_time beta0 nan"),
    case(escape_time, [0.0, NAN], name="beta0", contains="beta0[1] = nan", id="escape_time beta0 array nan"),
    case(escape_time, INF, name="beta0", id="escape_time beta0 inf"),
    case(escape_time, "abc", name="beta0", id="escape_time beta0 str"),
    case(escape_time, None, name="beta0", id="escape_time beta0 None"),
    case(escape_time, True, name="beta0", id="escape_time beta0 bool"),
    case(escape_time, [[0.0, False]], name="beta0", id="escape_time beta0 bool in list"),
    case(escape_time, 0.0, w0=NAN, name="w0", id="escape_time w0 nan"),
    case(escape_time, 0.0, w0=-1.0, name="w0", id="escape_time w0 negative exact"),
    case(escape_time, 0.0, w0=0.5, regime="noise", name="w0", id="escape_time w0 nonzero noise"),
    case(escape_time, 0.0, w0=[0.1], name="w0", id="escape_time w0 list"),
    case(escape_time, 0.0, c2=-0.1, name="c2", id="escape_time c2 negative"),
    case(escape_time, 0.0, c2="0.5", name="c2", id="escape_time c2 str"),
    case(escape_time, 0.0, regime="bogus", name="regime", id="escape_time regime unknown"),
    case(escape_time, 0.0, regime=None, name="regime", id="escape_time regime None"),
    case(escape_time, 0.0, beta_c=NAN, name="beta_c", id="escape_time beta_c nan"),
    case(escape_time, [0.0, 1.0], beta_c=[1.0, 2.0, 3.0], name="beta_c", id="escape_time beta_c shape"),
    case(escape_time, -800.0, name="beta0", contains="overflowed", id="escape_time overflow"),
    case(escape_time, [0.0, -800.0], name="beta0", contains="beta0[1]", id="escape_time overflow index"),
    case(escape_time, 1e308, name="beta0", contains="underflowed", id="escape_time underflow"),
    case(escape_time, -60.0, w0=0.1, name="beta0", contains="gamma", id="escape_time numeric gamma limit"),
    case(escape_time, 0.0, w0=50.0, regime="signal", name="w0", id="escape_time w0 overflow"),
    case(scaled_escape_time, -1.0, name="gamma", id="scaled_escape_time negative"),
    case(scaled_escape_time, [1.0, INF], name="gamma", contains="gamma[1]", id="scaled_escape_time inf"),
    case(trajectory_invariant, NAN, 0.0, name="w", id="trajectory_invariant w nan"),
    case(trajectory_invariant, 0.0, [0.0, INF], name="beta", id="trajectory_invariant beta inf"),
    case(trajectory_invariant, 1e200, 0.0, name="w", id="trajectory_invariant overflow"),
    case(escape_condition, -1.0, 20, 0.0, name="i_k_inf", id="escape_condition i_k negative"),
    case(escape_condition, 1.0, 0, 0.0, name="N", id="escape_condition N zero"),
    case(escape_time_reference, NAN, name="beta0", id="reference beta0 nan"),
    case(escape_time_reference, 0.0, beta_stop=0.0, name="beta_stop", id="reference beta_stop zero"),
    case(escape_time_reference, 0.0, tail="yes", name="tail", id="reference tail str"),
    case(escape_time_reference, -10.0, name="beta0", contains="steps", id="reference too long"),
    case(escape_time_reference, 690.0, name="beta_stop", id="reference e^beta overflow"),
    # --- t_icl, k_star, critical_beta0, p_icl
    case(t_icl, 20, 0.0, 0.1, beta_c=NAN, name="beta_c", id="t_icl beta_c nan"),
    case(t_icl, 0, 0.0, 0.1, name="N", id="t_icl N zero"),
    case(t_icl, 2.5, 0.0, 0.1, name="N", id="t_icl N fractional"),
    case(t_icl, 20, 0.0, 0.0, name="lr", id="t_icl lr zero"),
    case(t_icl, 20, 0.0, -0.1, name="lr", id="t_icl lr negative"),
    case(t_icl, 20, 0.0, [0.1], name="lr", id="t_icl lr list"),
    case(t_icl, 20, 0.0, 0.1, c1=INF, name="c1", id="t_icl c1 inf"),
    case(t_icl, 20, -300.0, 1e-300, name="lr", contains="overflowed", id="t_icl overflow"),
    case(k_star, 20, 0.0, 1.0, 1e-300, name="nu", contains="overflowed", id="k_star inf"),
    case(k_star, 20, 0.0, 1e3, 1e-3, name="nu", contains="underflowed", id="k_star zero"),
    case(k_star, 20, 1e308, 1.0, 0.7, name="beta0", id="k_star beta0 huge"),
    case(k_star, 20, 0.0, 1e-320, 0.7, name="amplitude", id="k_star amplitude subnormal"),
    case(k_star, [20, NAN], 0.0, 1.0, 0.7, name="N", contains="N[1]", id="k_star N array nan"),
    case(k_star, [20, True], 0.0, 1.0, 0.7, name="N", id="k_star N bool in list"),
    case(k_star, 10**400, 0.0, 1.0, 0.7, name="N", id="k_star N beyond float"),
    case(k_star, 20, NAN, 1.0, 0.7, name="beta0", id="k_star beta0 nan"),
    case(k_star, 20, 0.0, 1.0, -0.7, name="nu", id="k_star nu negative"),
    case(k_star, 20, 0.0, "1", 0.7, name="amplitude", id="k_star amplitude str"),
    case(critical_beta0, NAN, 20, name="i_k_inf", id="critical_beta0 nan"),
    case(critical_beta0, [1.0, -1.0], 20, name="i_k_inf", contains="i_k_inf[1]", id="critical_beta0 negative"),
    case(critical_beta0, 1.0, 20, c2=1e7, w0=0.5, name="c2", id="critical_beta0 grid not computable"),
    case(p_icl, NAN, 20, 0.0, 1.0, name="i_k_inf", id="p_icl i_k nan"),
    case(p_icl, -1.0, 20, 0.0, 1.0, name="i_k_inf", id="p_icl i_k negative"),
    case(p_icl, 1.0, 20, NAN, 1.0, name="beta0_mean", id="p_icl beta0_mean nan"),
    case(p_icl, 1.0, 20, 0.0, -1.0, name="beta0_std", id="p_icl beta0_std negative"),
    case(p_icl, 1.0, 20, 0.0, None, name="beta0_std", id="p_icl beta0_std None"),
    # --- definitions of the minimal model
    case(readout, NAN, 1, 5, name="beta", id="readout beta nan"),
    case(readout, 1.0, 0, 5, name="n_plus", id="readout n_plus zero"),
    case(readout, 800.0, 1, 5, name="beta", id="readout e^beta overflow"),
    case(n_plus_distribution, 7, "equalized", name="N", id="n_plus odd N equalized"),
    case(n_plus_distribution, 10**12, name="N", contains="memory", id="n_plus memory"),
    case(n_plus_distribution, 10, "bogus", name="contexts", id="n_plus contexts"),
    case(icl_accuracy, NAN, 10, name="beta", id="icl_accuracy nan"),
    case(icl_accuracy, 1.0, 10, w_sign=NAN, name="w_sign", id="icl_accuracy w_sign nan"),
    case(icl_threshold_beta, 10, NAN, name="accuracy", id="threshold accuracy nan"),
    case(icl_threshold_beta, 10, 1.5, name="accuracy", id="threshold accuracy above 1"),
    case(icl_threshold_beta, 0, name="N", id="threshold N zero"),
    case(head_escaped, NAN, 1.0, 10, name="w", id="head_escaped w nan"),
    case(head_escaped, 1.0, [0.0, NAN], 10, name="beta", contains="beta[1]", id="head_escaped beta nan"),
    case(head_escaped, "1", 1.0, 10, name="w", id="head_escaped w str"),
    case(head_escaped, [1.0, 2.0], [1.0, 2.0, 3.0], 10, name="beta", id="head_escaped shapes"),
    case(head_escaped, 1.0, 1.0, 0, name="N", id="head_escaped N zero"),
    case(head_escaped, 1.0, 1.0, 7, contexts="equalized", name="N", id="head_escaped odd N equalized"),
    case(head_escaped, 1.0, 1.0, 10, contexts="bogus", name="contexts", id="head_escaped contexts"),
    # --- loss and flows
    case(averaged_loss, NAN, 1.0, 10, name="w", id="loss w nan"),
    case(averaged_loss, 1.0, 800.0, 10, name="beta", id="loss beta too large"),
    case(averaged_loss, 1.0, 1.0, 10, phi_plus=[0.0, NAN], name="phi_plus", contains="phi_plus[1]",
         id="loss phi_plus nan"),
    case(averaged_loss, 1.0, 1.0, 10, phi_plus=[], name="phi_plus", id="loss phi_plus empty"),
    case(averaged_gradient, 1.0, 1.0, 10, method="bogus", name="method", id="gradient method"),
    case(averaged_gradient, [1.0, 2.0], [1.0, 2.0, 3.0], 10, name="beta", id="gradient shapes"),
    case(rhs_linear, 1.0, 1.0, 10, 0.1, 0.5, 0.5, contexts="bogus", name="contexts", id="rhs_linear contexts"),
    case(rhs_reduced, 1.0, NAN, 10, 0.1, 0.5, 0.5, name="beta", id="rhs_reduced beta nan"),
    case(rhs_reduced, 1.0, 1.0, 10, 0.1, -0.5, 0.5, name="c1", id="rhs_reduced c1 negative"),
    case(solve_flow, 20, NAN, 0.1, name="beta0", id="flow beta0 nan"),
    case(solve_flow, 20, 0.0, 0.1, c1="x", stage="reduced", name="c1", id="flow c1 str"),
    case(solve_flow, 20, 0.0, 0.1, phi_plus=[0.0, NAN], name="phi_plus", id="flow phi_plus nan"),
    case(solve_flow, 20, 0.0, 0.1, stage="bogus", name="stage", id="flow stage"),
    case(solve_flow, 20, 20.0, 0.1, stage="reduced", name="beta0", id="flow starts escaped"),
    case(solve_flow, 20, -400.0, 0.1, stage="reduced", name="beta0", id="flow horizon overflow"),
    case(solve_flow, 20, 0.0, 0.1, t_max=-1.0, name="t_max", id="flow t_max negative"),
    case(solve_flow, 20, 0.0, 0.1, n_points=1, name="n_points", id="flow n_points"),
    case(solve_flow, 7, 0.0, 0.1, contexts="equalized", name="N", id="flow odd N equalized"),
    # --- memorization curves
    case(mlp_coefficients, [], name="phi_plus", id="mlp_coefficients empty"),
    case(mlp_coefficients, [800.0, 900.0], name="phi_plus", contains="c1", id="mlp_coefficients c1 zero"),
    case(mlp_coefficients, [0.0, -800.0], name="phi_plus", contains="c3", id="mlp_coefficients c3 inf"),
    case(mlp_coefficients, [[0.0, 1.0]], axis=2, name="axis", id="mlp_coefficients axis out of range"),
    case(mlp_coefficients, [[0.0, 1.0]], axis=1.0, name="axis", id="mlp_coefficients axis float"),
    case(mlp_coefficients, [[0.0, 1.0]], axis=True, name="axis", id="mlp_coefficients axis bool"),
    case(mlp_coefficients, [[0.0, NAN]], axis=1, name="phi_plus", contains="phi_plus[0, 1]",
         id="mlp_coefficients batched nan"),
    case(mlp_coefficients, [[0.0], [800.0]], axis=1, name="phi_plus", contains="c1",
         id="mlp_coefficients batched c1 zero"),
    case(mlp_coefficients, [[0.0], [-800.0]], axis=1, name="phi_plus", contains="c3",
         id="mlp_coefficients batched c3 inf"),
    case(Constant, True, name="value", id="Constant bool"),
    case(Constant, -0.5, name="value", id="Constant negative"),
    case(PowerLaw, NAN, name="c0", id="PowerLaw c0 nan"),
    case(PowerLaw, 0.5, 0.0, name="s0", id="PowerLaw s0 zero"),
    case(Tabulated, [0, 2, 1], [1, 2, 3], name="s", id="Tabulated s not increasing"),
    case(Tabulated, [0, 1, 2], [1, NAN, 3], name="values", contains="values[1]", id="Tabulated values nan"),
    case(Tabulated, [0, 1, "a"], [1, 2, 3], name="s", id="Tabulated s str"),
    case(Tabulated, [0, 1], [1, 2], extrapolate="linear", name="extrapolate", id="Tabulated extrapolate"),
    case(i_k, -1.0, 1.0, name="c1", id="i_k c1 negative"),
    case(i_k, 0.5, NAN, name="s", id="i_k s nan"),
    case(i_k, 0.5, [1.0, -1.0], name="s", contains="s[1]", id="i_k s negative"),
    case(PowerLaw(), NAN, name="s", id="PowerLaw call nan"),
    # --- the onset distribution (construction)
    case(_dist, beta_c=NAN, name="beta_c", id="onset beta_c nan"),
    case(_dist, w0=-1, name="w0", id="onset w0 negative"),
    case(_dist, beta0_mean=1e6, name="beta0_mean", id="onset all t_icl zero"),
    case(_dist, beta0_mean=10.0, name="beta0_mean", contains="1 iteration", id="onset median below 1"),
    case(OnsetDistribution, 20, 1e6, name="lr", contains="1 iteration", id="onset lr huge"),
    case(_dist, beta0_std=1e6, name="beta0_std", id="onset beta0_std huge"),
    case(_dist, beta0_mean=2.0, beta_c=1.0, regime="signal", name="beta0_mean", id="onset mean past beta_c"),
    case(_dist, regime=None, name="regime", id="onset regime None"),
    case(OnsetDistribution, "20", 0.1, name="N", id="onset N str"),
    # --- the onset distribution (methods)
    case(_dist().cdf, NAN, name="t", id="cdf nan"),
    case(_dist().pdf, 0.0, name="t", id="pdf t zero"),
    case(_dist(beta0_std=0).pdf, 10.0, name="beta0_std", id="pdf point mass"),
    case(_dist().quantile, NAN, name="p", id="quantile nan"),
    case(_dist().quantile, [0.5, 1.0], name="p", contains="p[1]", id="quantile one"),
    case(_dist().quantile, 1e-300, name="p", id="quantile below resolution"),
    case(_dist().beta0_of, -1.0, name="t", id="beta0_of negative"),
    case(_dist().onset_of, NAN, name="beta0", id="onset_of nan"),
    case(_dist().sample, 10**12, name="samples", contains="memory", id="sample memory"),
    case(_dist().sample, 0, name="samples", id="sample zero"),
    case(_dist().sample, 10, seed=-1, name="seed", id="sample seed negative"),
    case(_dist().sample, 10, seed="x", name="seed", id="sample seed str"),
    # --- transience
    case(w_tr, -1, 1e-3, name="c3", id="w_tr c3 negative"),
    case(w_tr, [1.0, NAN], 1e-3, name="c3", contains="c3[1]", id="w_tr c3 array nan"),
    case(w_tr, 1.0, 0.0, name="wd_attn", id="w_tr wd_attn zero"),
    case(w_tr, 1.0, 1e-320, name="wd_attn", contains="overflowed", id="w_tr overflow"),
    case(w_tr, 1.0, 1e-3, lam=1e-3, name="lam", contains="wd_attn", id="w_tr lam and wd_attn"),
    case(w_tr, 1.0, 1e-3, kappa=NAN, name="kappa", id="w_tr kappa nan"),
    case(icl_loss_from_iwl_loss, -0.1, 1e-3, name="iwl_loss", id="icl_loss iwl_loss negative"),
    case(icl_loss_from_iwl_loss, NAN, 1e-3, name="iwl_loss", id="icl_loss iwl_loss nan"),
    case(quasi_static_state, 0.0, 1e-3, 20, name="c3", id="quasi_static c3 zero"),
    case(quasi_static_state, NAN, 1e-3, 20, name="c3", id="quasi_static c3 nan"),
    case(transience_flow, 0.5, 1e-3, 20, NAN, name="s_max", id="transience s_max nan"),
    case(transience_flow, 0.5, 1e-3, 20, 1e3, accuracy=1.0, name="accuracy", id="transience accuracy 1"),
    case(transience_flow, 0.5, 1e-3, 20, 1e3, beta_init=NAN, name="beta_init", id="transience beta_init nan"),
    case(transience_flow, -0.5, 1e-3, 20, 1e3, name="c3", id="transience c3 negative"),
    case(t_icl_loss, 0.5, 1e-3, 20, 0.0, 1e3, name="lr", id="t_icl_loss lr zero"),
    case(t_icl_loss, 0.5, 1e-3, 20, 0.1, 1e3, n_points=0, name="n_points", id="t_icl_loss n_points"),
]


def _refusal(fn, args, kwargs) -> ParameterError:
    """The ParameterError ``fn`` raises; fails the test if it returns anything instead."""
    try:
        out = fn(*args, **kwargs)
    except ParameterError as e:
        return e
    pytest.fail(f"returned {out!r} instead of raising ParameterError")


def test_the_table_is_large_and_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) >= 60
    assert len(set(ids)) == len(ids)
    keys = [(c.values[0], repr(c.values[1]), repr(sorted(c.values[2].items()))) for c in CASES]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("fn,args,kwargs,name,contains", CASES)
def test_bad_input_is_one_parameter_error_naming_it(fn, args, kwargs, name, contains):
    e = _refusal(fn, args, kwargs)
    assert type(e) is ParameterError and isinstance(e, ValueError)
    msg = str(e)
    assert "\n" not in msg and msg.strip() == msg
    assert e.name == name
    assert msg.startswith(f"{name}=") and f"{name} must be" in msg
    if contains:
        assert contains in msg


def test_sample_of_a_billion_is_refused_up_front_with_the_estimate(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 16 << 30)  # a 16 GiB machine
    d = _dist()
    e = _refusal(d.sample, (10**9,), {})
    assert e.name == "samples" and "GiB" in str(e) and "\n" not in str(e)
    assert d.sample(1000).shape == (1000,)  # a size that fits is still sampled


def test_onset_beta0_std_huge_is_one_short_line():
    # the CLI's `onset --beta0-std 1e6` used to print a 79-line array dump
    e = _refusal(_dist, (), {"beta0_std": 1e6})
    assert len(str(e)) < 400 and "\n" not in str(e)


# ----------------------------------------------------------------------------- valid edges
def test_negative_and_small_beta0_are_fine():
    lo, hi = k_star(100, -1e-3, 0.3, 0.7), k_star(100, 1e-3, 0.3, 0.7)
    assert math.isfinite(lo) and lo > hi > 0  # K* decreases with beta0
    tau = escape_time(np.array([-300.0, -299.0]), regime="noise")
    assert np.all(np.isfinite(tau)) and tau[0] > tau[1]
    assert math.isfinite(float(escape_time(-30.0)))  # the tabulated exact regime has no gamma limit


def test_onset_zero_past_the_threshold_is_a_result_not_an_error():
    t = t_icl(20, np.array([0.0, 5.0]), 0.1, beta_c=2.0, regime="signal")
    assert t[0] > 0 and t[1] == 0
    blow_up = float(escape_time(0.0, regime="signal"))
    assert float(escape_time(0.0, beta_c=-np.inf, regime="signal")) == 0 < blow_up


def test_infinite_and_zero_drive_give_certain_outcomes():
    assert p_icl(np.inf, 20, 0.0, 1.0) == 1.0
    assert p_icl(0.0, 20, 0.0, 1.0) == 0.0
    assert critical_beta0(np.inf, 20) == -np.inf


def test_onset_distribution_edges():
    d = _dist(beta0_mean=-1e-3, beta0_std=0)
    m = d.median()
    assert m >= 1 and d.cdf(m / 2) == 0 and d.cdf(2 * m) == 1
    d = _dist()
    assert d.cdf(-np.inf) == 0 and d.cdf(np.inf) == 1
    assert _dist(beta0_mean=3.0).median() >= 1  # the 1-iteration floor is not over-broad
    q = d.quantile(np.array([1e-15, 1 - 1e-15]))
    assert np.all(np.isfinite(q)) and q[0] < q[1]


def test_zero_curves_integrate_to_zero_even_at_infinity():
    assert i_k(0.0, np.inf) == 0
    tab = Tabulated([0.0, 1.0], [0.5, 0.0], extrapolate="hold")
    assert math.isfinite(float(tab.integral(np.inf)))
    assert math.isfinite(mlp_coefficients([800.0, 0.0])["c2"])
    assert w_tr(0.0, 1e-3) == 0


def test_numeric_types_that_mean_the_same_number_are_accepted():
    ref = t_icl(20, 0.5, 0.1)
    assert t_icl(20.0, 0.5, 0.1) == ref
    assert t_icl(np.int64(20), np.float32(0.5), np.float64(0.1)) == pytest.approx(ref, rel=1e-6)
    assert np.all(k_star([20, 40.0], 0.0, 1.0, 0.7) > 0)
    assert math.isfinite(float(escape_time(0.0, w0=-0.5, regime="signal")))  # w0 < 0 is fine without noise


@pytest.mark.parametrize("N,contexts", [(2, "iid"), (10, "iid"), (50, "iid"), (10, "equalized")])
@pytest.mark.parametrize("accuracy", [0.0, 0.5, 0.95, 1.0])
def test_threshold_beta_is_the_first_step_above_accuracy(N, contexts, accuracy):
    # the bisection over the accuracy's steps returns the step a linear scan would
    b = icl_threshold_beta(N, accuracy, contexts)
    if np.isinf(b):
        probe = -50.0 if b < 0 else 50.0
        assert (icl_accuracy(probe, N, contexts) > accuracy) == (b < 0)
        return
    above = icl_accuracy(b + 1e-9, N, contexts)
    below = icl_accuracy(b - 1e-9, N, contexts)
    assert above > accuracy >= below
