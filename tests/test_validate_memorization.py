"""The memorization law (validate/memorization.py) on MLP runs whose I_K(inf) = A K^nu exactly."""

from icl_kinetics.validate.memorization import memorization_law
from validate_tables import mlp_table


def test_memorization_law_recovers_nu():
    v = memorization_law(mlp_table(nu=0.6))
    assert v.verdict == "holds"
    fit = v.details["fit"]
    assert abs(fit["exponent"] - 0.6) < 0.01 and abs(fit["amplitude"] / 2.0 - 1) < 0.05
    assert fit["exponent_ci"][0] <= 0.6 <= fit["exponent_ci"][1] or fit["exponent_ci"][1] - fit["exponent_ci"][0] < 1e-3


def test_memorization_law_needs_memorized_runs():
    v = memorization_law(mlp_table(T=500))  # too short: nothing memorized
    assert v.verdict == "inconclusive" and "run longer" in v.reason
