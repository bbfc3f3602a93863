"""Bimodality and P(ICL) (validate/p_icl.py) on seeds whose escapes are known by construction."""

import math

import numpy as np

from icl_kinetics.validate.p_icl import bimodality, p_icl_from_c1, p_icl_from_k_star
from validate_tables import bimodal_table, cols, mlp_table


def test_bimodality_split_by_beta0_and_a_unimodal_input_does_not_hold():
    (v,) = bimodality(bimodal_table())
    assert v.verdict == "holds", v.reason
    assert v.details["beta0_mannwhitney_p"] < 1e-4 and v.details["bimodality_coefficient"] > 5 / 9
    (u,) = bimodality(bimodal_table(split=False))
    assert u.verdict == "does not hold", u.reason


def test_p_icl_from_c1_matches_a_consistent_truth_and_rejects_a_shifted_one():
    from scipy.stats import norm

    from icl_kinetics.theory import critical_beta0

    lr, amp, nu, N, K = 0.1, 2.0, 0.6, 20, 256
    mlp = mlp_table(nu=nu, amp=amp, lr=lr, Ks=(64, 128, 256, 512, 1024), T=400_000, every=200)
    i_k = amp * K**nu
    b_c = float(critical_beta0(i_k, N, c2=0.25))
    beta0s = norm.ppf((np.arange(40) + 0.5) / 40)  # stratified Normal(0, 1)

    def table(shift):
        rows = []
        for s, b0 in enumerate(beta0s):
            esc = b0 > b_c + shift
            rows += [{"seed": s, "iteration": 0.0, "model": "minimal", "N": float(N), "K": float(K), "icl_acc": 0.5,
                      "w": 0.0, "beta": float(b0)},
                     {"seed": s, "iteration": 6000.0, "model": "minimal", "N": float(N), "K": float(K),
                      "icl_acc": 0.99 if esc else 0.5, "w": 5.0 if esc else 1.0, "beta": 6.0 if esc else 0.5}]
        return cols(rows)

    (good,) = p_icl_from_c1(mlp, table(0.0))
    assert good.verdict == "holds", good.reason
    (bad,) = p_icl_from_c1(mlp, table(1.5))
    assert bad.verdict == "does not hold"


def test_p_icl_from_k_star_matches_a_consistent_truth_and_rejects_a_shifted_one():
    """Seeds escape iff beta0_eff > -nu ln(K / K*) (signal regime); the predicted fraction
    Phi(nu ln(K/K*) / sd) must cover the measured one, and a table whose escapes are
    shifted by 1.5 sd must fail."""
    from scipy.stats import norm

    nu, kst, N, sd = 0.6, 1000.0, 19.0, 0.4
    beta0s = norm.ppf((np.arange(40) + 0.5) / 40) * sd  # stratified Normal(0, sd)

    def table(K, shift):
        b_c = -nu * math.log(K / kst) + shift
        rows = []
        for s, b0 in enumerate(beta0s):
            esc = b0 > b_c
            rows += [{"seed": s, "iteration": 0.0, "N": N, "K": K, "icl_acc": 0.5, "beta": float(b0)},
                     {"seed": s, "iteration": 6000.0, "N": N, "K": K, "icl_acc": 1.0 if esc else 0.5, "beta": 3.0}]
        return rows

    ks = {N: (kst, kst * 0.95, kst * 1.05)}
    # seeds that all start at the same beta0 give nothing to spread: skipped, not a crash
    flat = [dict(r, beta=0.0) if r["iteration"] == 0 else r for r in table(1000.0, 0.0)]
    assert p_icl_from_k_star(cols(flat), ks, nu)[0].verdict == "skipped"
    for K in (800.0, 1400.0):
        (good,) = p_icl_from_k_star(cols(table(K, 0.0)), ks, nu, (0.58, 0.62))
        assert good.verdict == "holds", good.reason
        truth = norm.cdf(nu * math.log(K / kst) / sd)
        assert good.details["predicted"][0] <= truth <= good.details["predicted"][1]
        assert abs(good.details["point"] - truth) < 0.01  # the point uses the 40 seeds' sample sd
    (bad,) = p_icl_from_k_star(cols(table(1400.0, 1.5 * sd)), ks, nu, (0.58, 0.62))
    assert bad.verdict == "does not hold", bad.reason
    # without K* at this N there is nothing to predict
    (skip,) = p_icl_from_k_star(cols(table(1400.0, 0.0)), {39.0: (kst, kst, kst)}, nu)
    assert skip.verdict == "skipped"


def test_p_icl_from_k_star_calibrated_by_the_onset_slope():
    """beta_eff on another scale than the reduced beta: seeds escape iff a beta0_eff >
    -nu ln(K / K*), so the onset slope is s = -a and P = Phi(nu ln(K/K*) / (a sd)).  The
    calibrated form must cover the truth where the uncalibrated one (a = 1) misses it, and
    a wrong slope must turn the verdict."""
    from scipy.stats import norm

    nu, kst, N, a, sd, K = 0.6, 1000.0, 19.0, 0.4, 1.0, 2500.0
    beta0s = norm.ppf((np.arange(40) + 0.5) / 40) * sd
    rows = []
    for s, b0 in enumerate(beta0s):
        esc = a * b0 > -nu * math.log(K / kst)
        rows += [{"seed": s, "iteration": 0.0, "N": N, "K": K, "icl_acc": 0.5, "beta": float(b0)},
                 {"seed": s, "iteration": 6000.0, "N": N, "K": K, "icl_acc": 1.0 if esc else 0.5, "beta": 3.0}]
    t, ks, nu_ci = cols(rows), {N: (kst, kst * 0.95, kst * 1.05)}, (0.58, 0.62)
    truth = norm.cdf(nu * math.log(K / kst) / (a * sd))
    (uncal,) = p_icl_from_k_star(t, ks, nu, nu_ci)
    assert uncal.verdict == "does not hold" and uncal.details["form"] == "beta_eff uncalibrated", uncal.reason
    (cal,) = p_icl_from_k_star(t, ks, nu, nu_ci, onset_slope=(-a, (-a - 0.02, -a + 0.02)))
    assert cal.verdict == "holds" and cal.details["form"] == "beta_eff calibrated", cal.reason
    assert cal.details["predicted"][0] <= truth <= cal.details["predicted"][1]
    assert abs(cal.details["point"] - truth) < 0.02
    assert cal.details["forms"]["beta_eff uncalibrated"]["predicted"] == uncal.details["predicted"]
    (wrong,) = p_icl_from_k_star(t, ks, nu, nu_ci, onset_slope=(-1.2, (-1.25, -1.15)))
    assert wrong.verdict == "does not hold", wrong.reason
    # a slope whose CI reaches zero calibrates nothing: the uncalibrated form decides
    (flat,) = p_icl_from_k_star(t, ks, nu, nu_ci, onset_slope=(-0.1, (-0.3, 0.1)))
    assert flat.details["form"] == "beta_eff uncalibrated" and flat.details["predicted"] == uncal.details["predicted"]


def test_p_icl_from_k_star_from_the_threshold_spread_needs_no_beta():
    """Thresholds log-normal with sd 0.3 (no beta column at all): seeds escape iff log theta
    < nu ln(K / K*), so P = Phi(nu ln(K/K*) / 0.3); the threshold-spread form must cover
    the truth, decide the verdict, and fail for a spread 3x too wide."""
    from scipy.stats import norm

    nu, kst, N, sig, K = 0.6, 1000.0, 19.0, 0.3, 2000.0
    logth = norm.ppf((np.arange(40) + 0.5) / 40) * sig
    rows = []
    for s, lt in enumerate(logth):
        esc = lt < nu * math.log(K / kst)
        rows += [{"seed": s, "iteration": 0.0, "N": N, "K": K, "icl_acc": 0.5},
                 {"seed": s, "iteration": 6000.0, "N": N, "K": K, "icl_acc": 1.0 if esc else 0.5}]
    t, ks = cols(rows), {N: (kst, kst * 0.97, kst * 1.03)}
    truth = norm.cdf(nu * math.log(K / kst) / sig)
    (v,) = p_icl_from_k_star(t, ks, nu, (0.58, 0.62), log_threshold_sd=(sig, (0.27, 0.34)))
    assert v.verdict == "holds" and v.details["form"] == "threshold spread" and set(v.details["forms"]) == {
        "threshold spread"}, v.reason
    assert v.details["predicted"][0] <= truth <= v.details["predicted"][1]
    (wide,) = p_icl_from_k_star(t, ks, nu, (0.58, 0.62), log_threshold_sd=(3 * sig, (2.9 * sig, 3.1 * sig)))
    assert wide.verdict == "does not hold", wide.reason
    # neither a spread nor a beta column: nothing to predict with
    (skip,) = p_icl_from_k_star(t, ks, nu)
    assert skip.verdict == "skipped"
