"""Rung 1 (validate/rung1.py): the SGD medians against the theory's t_ICL, within tolerance."""

import math

from icl_kinetics.validate.rung1 import rung1_onset
from validate_tables import rung1_rows


def test_rung1_onset_holds_within_tolerance_and_flags_the_points_outside():
    vs = rung1_onset(rung1_rows(lambda N, b0: 0.03))
    assert {v.verdict for v in vs} == {"holds"} and len(vs) == 6  # 2 beta0 x (flow, reduced, linear)
    vs = rung1_onset(rung1_rows(lambda N, b0: 0.3 if (N == 50 and b0 == 0) else 0.0))
    bad = [v for v in vs if v.verdict == "does not hold"]
    assert {v.rung for v in bad} == {"minimal model, no MLP, beta0 = 0 (full flow)",
                                     "minimal model, no MLP, beta0 = 0 (reduced ODEs)"}
    assert all("N = 50 (+30.0%)" in v.reason for v in bad)
    # N = 25, beta0 = 0 is outside the reduced ODEs' range (e^0 / 5 > 0.15): only the full flow tests it
    by = {v.rung: v for v in rung1_onset(rung1_rows(lambda N, b0: 0.3 if (N == 25 and b0 == 0) else 0.0))}
    assert by["minimal model, no MLP, beta0 = 0 (full flow)"].verdict == "does not hold"
    red = by["minimal model, no MLP, beta0 = 0 (reduced ODEs)"]
    assert red.verdict == "holds" and "not tested" in red.reason and "N = 25 (+30.0%)" in red.reason
    # medians quadratic in N: the linearity check fails
    rows = rung1_rows(lambda N, b0: 0.0)
    for r in rows:
        r["median_t_icl"] = 0.5 * r["N"] ** 2 * math.exp(-r["beta0"])
    lin = [v for v in rung1_onset(rows) if v.prediction == "onset_times_linear"]
    assert lin and all(v.verdict == "does not hold" for v in lin)
    # a censored median: no number is claimed
    rows = rung1_rows(lambda N, b0: 0.0)
    rows[0]["median_t_icl"] = None
    assert rung1_onset(rows)[0].verdict == "inconclusive"
