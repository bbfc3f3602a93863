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


# --- validate/compare.py: the full flow is the headline, the reduced ODEs are flagged outside their range

def _cells(line: str) -> list:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_reduced_odes_range_is_the_theorys_one_definition():
    import numpy as np
    import pytest

    from icl_kinetics.errors import ParameterError
    from icl_kinetics.theory import REDUCED_ODES_RANGE, reduced_odes_in_range
    from icl_kinetics.validate import compare, demo

    assert demo.reduced_odes_in_range is compare.reduced_odes_in_range is reduced_odes_in_range
    assert demo.REDUCED_ODES_RANGE == REDUCED_ODES_RANGE == 0.1
    assert reduced_odes_in_range(100, 0.0) and not reduced_odes_in_range(50, 1.0)  # e^0/10 = 0.1; e/7.07 = 0.38
    Ns, b = np.array([25, 50, 100, 400]), np.array([-1.0, 0.0, 0.0, 1.0])
    assert np.array_equal(reduced_odes_in_range(Ns, b), np.exp(b) / np.sqrt(Ns) <= 0.1)
    for kw, name in ((dict(N=0, beta0=0.0), "N"), (dict(N=2.5, beta0=0.0), "N"),
                     (dict(N=10, beta0=float("nan")), "beta0"),
                     (dict(N=10, beta0=0.0, expansion_max=0.0), "expansion_max")):
        with pytest.raises(ParameterError) as e:
            reduced_odes_in_range(**kw)
        assert e.value.name == name


def test_compare_theory_curves_put_the_full_flow_first_and_flag_the_reduced_odes():
    import numpy as np

    from icl_kinetics.theory import icl_threshold_beta, solve_flow, t_icl
    from icl_kinetics.validate.compare import _theory_curves, format_onset_table, theory_onset

    rows = _theory_curves(50, [-1.0, 1.0], 0.1)
    flow = [r for r in rows if r["model"] == "full flow"]
    red = [r for r in rows if r["model"] == "reduced ODEs"]
    assert len(flow) == 25 and len(red) == 60
    r = flow[-1]  # beta0 = 1.4: checked against a fresh solve
    assert r["t_icl"] == solve_flow(50, r["beta0"], 0.1, stage="full").t_icl
    assert all(x["in_range"] == (math.exp(x["beta0"]) / math.sqrt(50) <= 0.1) for x in red)
    assert any(x["in_range"] for x in red) and not all(x["in_range"] for x in red)
    assert np.allclose([x["t_icl"] for x in red],
                       t_icl(50, np.array([x["beta0"] for x in red]), 0.1, beta_c=icl_threshold_beta(50)))
    # outside the range the reduced ODEs drift from the full flow (docs/theory.md: about -22 % at N = 50, beta0 = 1)
    p = theory_onset(50, 1.0, 0.1)
    assert not p["reduced_odes_in_range"] and abs(p["reduced_odes_expansion"] - math.e / math.sqrt(50)) < 1e-12
    assert -0.3 < p["theory_exact"] / p["theory_full_flow"] - 1 < -0.15
    row = {"N": 50, "beta0": 1.0, "seeds": 8, "acquired": 8, "median_t_icl": 600.0, **p,
           "rel_err_exact": 600 / p["theory_exact"] - 1, "rel_err_full_flow": 600 / p["theory_full_flow"] - 1}
    head, _, line = format_onset_table([row]).splitlines()[:3]
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols[4] == "theory: full flow" and cols[6] == "reduced ODEs" and cols[8] == "reduced ODEs in range?"
    assert "NO: e^beta0/sqrt(N) = 0.38" in line and f"{p['theory_full_flow']:.0f}" in line.split("|")[5]
    # the demo's table is the same table without the closed-form columns (signal, noise, regime)
    from icl_kinetics.validate.demo import format_demo

    short = format_onset_table([row], closed_forms=False).splitlines()
    long_ = format_onset_table([row]).splitlines()
    for s_line, l_line in zip(short[:3], long_[:3]):
        assert _cells(s_line) == _cells(l_line)[:9]
    assert short[3:] == long_[3:]
    demo = {"default": {"amplitude": 0.2, "nu": 0.7, "beta0": 0.0, "c2": 0.5, "lr": 0.01, "beta0_mean": 0.0,
                        "beta0_std": 1.0}, "k_star": {}, "k_star_slope": 1 / 0.7, "t_icl": {}, "p_icl_N100": {},
            "sgd_check": {"rows": [row], "plot": "c.png"}, "k_star_plot": "k.png", "onset_plot": "o.png",
            "summary_json": "s.json"}
    assert "\n".join(short) in format_demo(demo)


def test_compare_keeps_its_json_keys_and_draws_the_full_flow(tmp_path):
    """A tiny real comparison: every key the committed reports read keeps its meaning; the new keys
    are added; the figure has the full flow as its headline curve and the parameters in its title."""
    import json

    from icl_kinetics.theory import icl_threshold_beta, t_icl
    from icl_kinetics.validate.compare import _theory_curves, compare_minimal_onset
    from icl_kinetics.validate.figures import onset_comparison_figure

    r = compare_minimal_onset(Ns=[16], beta0s=[-1.0, 0.5], seeds=2, lr=0.1, out=tmp_path / "c", progress=False)
    old_top = {"lr", "seeds", "seed", "N", "beta0", "batch_size", "D", "eval_size", "eval_every", "t_icl_threshold",
               "rows", "wall_seconds", "units", "table_csv", "plot"}
    old_row = {"N", "beta0", "seeds", "acquired", "max_iterations", "median_t_icl", "theory_exact", "theory_full_flow",
               "theory_signal", "theory_noise", "regime", "rel_err_exact", "rel_err_full_flow", "diverged", "note"}
    saved = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert old_top <= set(saved) and saved["headline"] == "theory_full_flow"
    for row in saved["rows"]:
        assert old_row <= set(row) and "reduced_odes_in_range" in row
        assert row["theory_exact"] == float(t_icl(16, row["beta0"], 0.1, beta_c=icl_threshold_beta(16)))
        assert row["rel_err_exact"] == row["median_t_icl"] / row["theory_exact"] - 1
    assert [v.verdict for v in rung1_onset(saved["rows"]) if v.prediction == "t_icl_absolute"]
    assert (tmp_path / "c" / "onset_vs_theory.png").read_bytes()[:4] == b"\x89PNG"
    fig = onset_comparison_figure([{"N": 16, "beta0": -1.0, "seed": 0, "t_icl": 900.0, "max_iterations": 4000}],
                                  _theory_curves(16, [-1.0, 0.5], 0.1), title="lr = 0.1", reduced_range=0.1)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels[0] == "theory: full flow (headline)" and any("outside range" in x for x in labels)
    assert fig._suptitle.get_text() == "lr = 0.1"
