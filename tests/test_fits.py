"""Tests of validate/fits.py against known truth (all seeds fixed, tolerances stated)."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from icl_kinetics.errors import ParameterError
from icl_kinetics.validate.fits import (
    REASON_NO_TRANSITION,
    REASON_OUTSIDE_RANGE,
    bimodality_coefficient,
    censored_quantile,
    is_linear,
    kaplan_meier,
    ks_compare,
    linear_fit,
    power_law_fit,
    sd_interval,
    sigmoid_fit,
    wilson_interval,
)

# --------------------------------------------------------------------------- sigmoid

LOG10_K = np.repeat(np.log10(np.logspace(2, 5, 10)), 8)  # 10 K values 100..1e5, 8 obs each


def _sigmoid_data(a, b, c, d, sd, seed):
    rng = np.random.default_rng(seed)
    return c + d / (1.0 + np.exp(-a * (LOG10_K - b))) + rng.normal(0.0, sd, LOG10_K.size)


def test_sigmoid_recovers_k_star():
    acc = _sigmoid_data(6.0, math.log10(3000.0), 0.5, 0.5, 0.03, seed=1)
    f = sigmoid_fit(LOG10_K, acc, n_boot=200, seed=0)
    assert f.reason == ""
    assert abs(f.k_star - 3000.0) / 3000.0 < 0.10  # within 10 %
    assert f.k_star_ci[0] <= 3000.0 <= f.k_star_ci[1]
    assert f.k_star_ci[0] < f.k_star < f.k_star_ci[1]
    assert f.n == 80 and f.n_boot_ok >= 190
    assert abs(f.a - 6.0) < 2.0 and abs(f.c - 0.5) < 0.05 and abs(f.d - 0.5) < 0.05
    assert f.r2 > 0.95
    json.dumps(f.to_dict())
    assert isinstance(f.to_dict()["k_star_ci"], list)


def test_sigmoid_flat_data_has_no_transition():
    rng = np.random.default_rng(2)
    acc = 0.5 + rng.normal(0.0, 0.02, LOG10_K.size)
    f = sigmoid_fit(LOG10_K, acc, n_boot=50, seed=0)
    assert f.reason == REASON_NO_TRANSITION == "no transition in the K range"
    assert math.isnan(f.k_star)
    assert all(math.isnan(v) for v in f.k_star_ci)
    json.dumps(f.to_dict())  # NaN allowed


def test_sigmoid_transition_beyond_largest_k():
    # midpoint at K = 10**5.5, beyond the largest measured K = 1e5: only the rising foot shows
    acc = _sigmoid_data(2.5, 5.5, 0.1, 0.8, 0.01, seed=3)
    f = sigmoid_fit(LOG10_K, acc, n_boot=20, seed=0)
    assert f.reason == REASON_OUTSIDE_RANGE == "K* outside the measured range"
    assert f.b > LOG10_K.max()


def test_sigmoid_bad_input():
    with pytest.raises(ParameterError) as e:
        sigmoid_fit(LOG10_K, np.zeros(LOG10_K.size - 1))
    assert e.value.name == "acc"
    acc = np.full(LOG10_K.size, 0.5)
    acc[3] = np.nan
    with pytest.raises(ParameterError) as e:
        sigmoid_fit(LOG10_K, acc)
    assert e.value.name == "acc"
    with pytest.raises(ParameterError) as e:
        sigmoid_fit([2.0, 2.0, 3.0, 3.0], [0.1, 0.2, 0.8, 0.9])  # only 2 distinct K
    assert e.value.name == "log10_k"
    with pytest.raises(ParameterError) as e:
        sigmoid_fit(LOG10_K, np.full(LOG10_K.size, 0.5), seed=-1)
    assert e.value.name == "seed"


# --------------------------------------------------------------------------- power law


def test_power_law_recovers_exponent():
    rng = np.random.default_rng(4)
    x = np.logspace(0, 4, 20)
    y = 0.2 * x**0.7 * (1.0 + 0.02 * rng.normal(size=x.size))  # 2 % multiplicative noise
    f = power_law_fit(x, y, n_boot=1000, seed=0)
    assert abs(f.exponent - 0.7) < 0.02
    assert f.exponent_ci[0] <= 0.7 <= f.exponent_ci[1]
    assert f.amplitude_ci[0] <= f.amplitude <= f.amplitude_ci[1]
    assert abs(f.amplitude - 0.2) / 0.2 < 0.05
    assert f.n == 20
    json.dumps(f.to_dict())


def test_power_law_exact_data():
    x = np.array([1.0, 2.0, 5.0, 10.0, 30.0])
    f = power_law_fit(x, 3.0 * x**-1.5, n_boot=10)
    assert abs(f.r2 - 1.0) < 1e-12
    assert abs(f.exponent + 1.5) < 1e-12 and abs(f.amplitude - 3.0) < 1e-12


def test_power_law_bad_input():
    with pytest.raises(ParameterError) as e:
        power_law_fit([1.0, 0.0, 3.0], [1.0, 2.0, 3.0])
    assert e.value.name == "x"
    with pytest.raises(ParameterError) as e:
        power_law_fit([1.0, 2.0, 3.0], [1.0, -2.0, 3.0])
    assert e.value.name == "y"
    with pytest.raises(ParameterError) as e:
        power_law_fit([1.0, 2.0], [1.0, 2.0])  # 2 points
    assert e.value.name == "x"
    with pytest.raises(ParameterError) as e:
        power_law_fit([1.0, 2.0, 3.0], [1.0, 2.0])
    assert e.value.name == "y"
    with pytest.raises(ParameterError) as e:
        power_law_fit([1.0, 2.0, 3.0], [1.0, np.nan, 3.0])
    assert e.value.name == "y"


# --------------------------------------------------------------------------- linear


def test_linear_exact_line():
    x = np.arange(1.0, 11.0)
    f = linear_fit(x, 2.5 * x - 7.0, n_boot=100)
    assert abs(f.slope - 2.5) < 1e-10 and abs(f.intercept + 7.0) < 1e-10
    assert abs(f.r2 - 1.0) < 1e-12
    assert abs(f.slope_ci[0] - 2.5) < 1e-10 and abs(f.slope_ci[1] - 2.5) < 1e-10
    assert f.linearity == 1.0  # exact line: no evidence for a quadratic term
    json.dumps(f.to_dict())


def test_linear_detects_curvature():
    x = np.arange(1.0, 11.0)
    assert linear_fit(x, x**2, n_boot=10).linearity < 1e-3
    rng = np.random.default_rng(5)
    xs = np.linspace(0.0, 10.0, 30)
    noisy = linear_fit(xs, 1.0 + 0.5 * xs + rng.normal(0.0, 0.3, xs.size), n_boot=10)
    assert noisy.linearity > 0.01
    assert abs(noisy.slope - 0.5) < 0.05
    assert math.isnan(linear_fit([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], n_boot=10).linearity)  # n < 4


def test_linear_bad_input():
    with pytest.raises(ParameterError) as e:
        linear_fit([1.0, 2.0], [1.0, 2.0])
    assert e.value.name == "x"
    with pytest.raises(ParameterError) as e:
        linear_fit([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert e.value.name == "y"
    with pytest.raises(ParameterError) as e:
        linear_fit([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])  # no slope without 2 distinct x
    assert e.value.name == "x"


# --------------------------------------------------------------------------- survival


def _naive_km(times, observed):
    """Reference Kaplan-Meier: loop over the sorted distinct event times."""
    pairs = sorted(zip(times, observed))
    event_times = sorted({t for t, o in pairs if o})
    s, out_t, out_s = 1.0, [], []
    for te in event_times:
        at_risk = sum(1 for t, _ in pairs if t >= te)
        deaths = sum(1 for t, o in pairs if t == te and o)
        s *= 1.0 - deaths / at_risk
        out_t.append(te)
        out_s.append(s)
    return np.array(out_t), np.array(out_s)


def test_kaplan_meier_matches_naive_reference():
    rng = np.random.default_rng(6)
    times = rng.integers(1, 40, size=150).astype(float)  # integers: many ties
    observed = rng.random(150) < 0.6
    t, s = kaplan_meier(times, observed)
    rt, rs = _naive_km(times.tolist(), observed.tolist())
    np.testing.assert_array_equal(t, rt)
    np.testing.assert_allclose(s, rs, rtol=0, atol=1e-12)
    assert np.all(np.diff(s) <= 0)


def test_uncensored_quantile_is_inverted_cdf():
    # Convention: the smallest t with 1 - S(t) >= q; uncensored, that is
    # numpy.quantile(method="inverted_cdf"); for q = 0.5 the LOWER median (method="lower").
    rng = np.random.default_rng(7)
    for n in (24, 40, 41):  # n = 24: the KM product misses 1/2 by an ulp without the slack
        times = rng.exponential(1000.0, size=n)
        obs = np.ones(n, dtype=bool)
        med = censored_quantile(times, obs, n_boot=0)
        assert med.value == np.quantile(times, 0.5, method="lower")
        assert med.value == np.quantile(times, 0.5, method="inverted_cdf")
        assert med.lower_bound is None and med.n == n and med.n_observed == n
        q25 = censored_quantile(times, obs, q=0.25, n_boot=0)
        assert q25.value == np.quantile(times, 0.25, method="inverted_cdf")
    times = np.array([4.0, 1.0, 3.0, 2.0])
    assert censored_quantile(times, [True] * 4, n_boot=0).value == 2.0  # not numpy's 2.5


def test_heavily_censored_median_is_none():
    # 30 runs acquire ICL at 1..30 iterations, 70 runs hit their caps (500..1000) first
    times = np.concatenate([np.arange(1.0, 31.0), np.linspace(500.0, 1000.0, 70)])
    observed = np.concatenate([np.ones(30, bool), np.zeros(70, bool)])
    r = censored_quantile(times, observed, n_boot=100, seed=0)
    assert r.value is None
    assert r.lower_bound == 1000.0
    assert r.ci == (None, None)
    assert r.n == 100 and r.n_observed == 30
    d = r.to_dict()
    assert d["value"] is None and d["ci"] == [None, None]
    json.dumps(d)
    # the 0.2 quantile is observed: the 20th event
    assert censored_quantile(times, observed, q=0.2, n_boot=0).value == 20.0


def test_km_median_of_censored_exponential():
    rng = np.random.default_rng(8)
    n = 2000
    event = rng.exponential(1000.0, size=n)  # rate 1/1000: median 1000 ln 2
    censor = rng.exponential(3000.0, size=n)  # independent censoring
    times = np.minimum(event, censor)
    observed = event <= censor
    r = censored_quantile(times, observed, n_boot=200, seed=0)
    truth = 1000.0 * math.log(2.0)
    assert abs(r.value - truth) / truth < 0.10
    assert r.ci[0] <= truth <= r.ci[1]
    assert r.ci[0] <= r.value <= r.ci[1]
    # censoring is informative for the naive median: it is biased low, KM is not
    assert np.median(times[observed]) < 0.9 * truth


def test_survival_bad_input():
    with pytest.raises(ParameterError) as e:
        kaplan_meier([1.0, 2.0, 3.0], [True, False])
    assert e.value.name == "observed"
    with pytest.raises(ParameterError) as e:
        kaplan_meier([1.0, -2.0, 3.0], [True, False, True])
    assert e.value.name == "times"
    with pytest.raises(ParameterError) as e:
        kaplan_meier([1.0, 2.0], ["yes", "no"])
    assert e.value.name == "observed"
    with pytest.raises(ParameterError) as e:
        censored_quantile([1.0, 2.0], [True, True], q=1.5)
    assert e.value.name == "q"


# --------------------------------------------------------------------------- KS, bimodality


def test_ks_compare():
    rng = np.random.default_rng(9)
    cdf = stats.expon(scale=1000.0).cdf
    same = ks_compare(rng.exponential(1000.0, size=500), cdf)
    assert same.pvalue > 1e-3 and same.n == 500
    shifted = ks_compare(rng.exponential(1000.0, size=500) + 300.0, cdf)
    assert shifted.pvalue < 1e-6
    assert shifted.statistic > same.statistic
    json.dumps(shifted.to_dict())
    with pytest.raises(ParameterError) as e:
        ks_compare([1.0, 2.0], "not a cdf")
    assert e.value.name == "cdf"


def test_bimodality_coefficient():
    rng = np.random.default_rng(10)
    n = 2000
    mix = np.where(rng.random(n) < 0.5, rng.normal(-4.0, 1.0, n), rng.normal(4.0, 1.0, n))
    one = rng.normal(0.0, 1.0, n)
    assert bimodality_coefficient(mix) > 5.0 / 9.0
    assert bimodality_coefficient(one) < 5.0 / 9.0
    assert abs(bimodality_coefficient(one) - 1.0 / 3.0) < 0.05
    with pytest.raises(ParameterError) as e:
        bimodality_coefficient([1.0, 2.0, 3.0])
    assert e.value.name == "x"


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_ci_different_seed_different_ci():
    rng = np.random.default_rng(11)
    x = np.logspace(0, 3, 15)
    y = 2.0 * x**0.5 * np.exp(rng.normal(0.0, 0.1, x.size))
    a = power_law_fit(x, y, n_boot=300, seed=1)
    b = power_law_fit(x, y, n_boot=300, seed=1)
    c = power_law_fit(x, y, n_boot=300, seed=2)
    assert a.exponent_ci == b.exponent_ci and a.amplitude_ci == b.amplitude_ci
    assert a.exponent_ci != c.exponent_ci

    la, lb, lc = (linear_fit(x, y, n_boot=300, seed=s).slope_ci for s in (1, 1, 2))
    assert la == lb and la != lc

    acc = _sigmoid_data(6.0, 3.5, 0.5, 0.5, 0.03, seed=12)
    sa, sb, sc = (sigmoid_fit(LOG10_K, acc, n_boot=30, seed=s).k_star_ci for s in (1, 1, 2))
    assert sa == sb and sa != sc

    times = rng.exponential(100.0, size=200)
    obs = rng.random(200) < 0.8
    qa, qb, qc = (censored_quantile(times, obs, n_boot=200, seed=s).ci for s in (1, 1, 2))
    assert qa == qb and qa != qc


# --------------------------------------------------------------------------- scipy against the former code
# The Kaplan-Meier estimate and its quantiles now come from scipy.stats.ecdf on
# scipy.stats.CensoredData; the hand-written implementation they replace is copied here as an
# independent reference.  Survival values agree to round-off (the products are formed in
# another order: differences of a few ulps, tolerance 1e-12); the quantiles are data values
# and agree exactly, bootstrap CIs included (same resampling indices).


def _old_km_sorted(t_sorted, obs_sorted):
    n = t_sorted.size
    ev = t_sorted[obs_sorted]
    if ev.size == 0:
        return np.empty(0), np.empty(0)
    ut, d = np.unique(ev, return_counts=True)
    at_risk = n - np.searchsorted(t_sorted, ut, side="left")
    return ut.astype(float), np.cumprod(1.0 - d / at_risk)


def _old_km_quantile(t_sorted, obs_sorted, q):
    ut, surv = _old_km_sorted(t_sorted, obs_sorted)
    hit = np.nonzero(1.0 - surv >= q - 1e-12)[0]
    return float(ut[hit[0]]) if hit.size else math.inf


def _old_censored_quantile(times, observed, q, n_boot, seed):
    t, obs = np.asarray(times, float), np.asarray(observed, bool)
    order = np.argsort(t, kind="stable")
    ts, os_ = t[order], obs[order]
    est = _old_km_quantile(ts, os_, q)
    value = est if math.isfinite(est) else None
    lower = None if value is not None else (float(ts[~os_].max()) if (~os_).any() else float(ts.max()))
    boot = []
    for idx in np.random.default_rng(seed).integers(0, t.size, size=(n_boot, t.size)):
        idx.sort()
        boot.append(_old_km_quantile(ts[idx], os_[idx], q))
    # the former levels, (1 - 0.95) / 2 = 0.025000000000000022 and 0.975: with inverted_cdf the
    # last digit matters where n_boot * level is a whole number (200 * 0.025 = 5)
    lo, hi = np.quantile(boot, [(1 - 0.95) / 2, 1 - (1 - 0.95) / 2], method="inverted_cdf")
    return value, lower, tuple(float(v) if math.isfinite(v) else None for v in (lo, hi))


def _survival_cases():
    rng = np.random.default_rng(13)
    yield rng.integers(1, 40, size=150).astype(float), rng.random(150) < 0.6  # many ties
    yield rng.exponential(100.0, size=60), np.ones(60, bool)  # no censoring
    yield np.array([5.0, 5.0, 5.0, 7.0, 7.0, 9.0]), np.array([1, 0, 1, 0, 1, 0], bool)  # censored at event times
    t = np.concatenate([rng.exponential(50.0, 30), np.full(20, 80.0)])  # a common cap
    yield t, np.concatenate([t[:30] < 80.0, np.zeros(20, bool)])
    yield np.array([3.0, 1.0, 2.0]), np.zeros(3, bool)  # all censored


def test_kaplan_meier_on_scipy_matches_the_former_implementation():
    for times, observed in _survival_cases():
        t, s = kaplan_meier(times, observed)
        order = np.argsort(times, kind="stable")
        rt, rs = _old_km_sorted(times[order], observed[order])
        np.testing.assert_array_equal(t, rt)
        np.testing.assert_allclose(s, rs, rtol=0, atol=1e-12)


def test_censored_quantile_on_scipy_matches_the_former_implementation():
    for times, observed in _survival_cases():
        for q in (0.1, 0.25, 0.5, 0.75):
            for seed in (0, 5):
                r = censored_quantile(times, observed, q=q, n_boot=200, seed=seed)
                value, lower, ci = _old_censored_quantile(times, observed, q, 200, seed)
                assert (r.value, r.lower_bound, r.ci) == (value, lower, ci), (q, seed)


def test_wilson_interval_on_scipy_against_the_score_formula():
    """scipy's Wilson interval uses the exact normal quantile z = 1.959964..., the former
    formula z = 1.96: the ends agree with the score formula at the exact z to 1e-12 and with
    the z = 1.96 formula to 5e-5 (the 3.6e-5 change in z moves them by at most ~3e-5)."""
    def score(k, n, z):
        centre = (k + z * z / 2) / (n + z * z)
        half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
        return centre - half, centre + half

    z = stats.norm.ppf(0.975)
    for n in (1, 8, 40, 200):
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
            np.testing.assert_allclose((lo, hi), score(k, n, z), rtol=0, atol=1e-12)
            np.testing.assert_allclose((lo, hi), score(k, n, 1.96), rtol=0, atol=5e-5)


def test_sd_interval_covers_the_true_sd_95_percent_of_the_time():
    """2000 Normal samples of 10: the chi-square interval holds the true sd in 95 % of them
    (binomial sd 0.005; tolerance 3 sd)."""
    rng = np.random.default_rng(14)
    hits = 0
    for _ in range(2000):
        lo, hi = sd_interval(rng.normal(0.0, 2.0, 10))
        hits += lo <= 2.0 <= hi
    assert abs(hits / 2000 - 0.95) < 0.015
    with pytest.raises(ParameterError) as e:
        sd_interval([1.0])
    assert e.value.name == "x"


def test_is_linear():
    x = np.arange(1.0, 11.0)
    assert is_linear(linear_fit(x, 3 * x + 1, n_boot=0))
    assert not is_linear(linear_fit(x, x**2, n_boot=0))  # significant curvature
    rng = np.random.default_rng(15)
    assert not is_linear(linear_fit(x, 0.1 * x + rng.normal(0, 1, x.size), n_boot=0))  # R^2 < 0.9
