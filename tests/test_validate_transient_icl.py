"""Transient ICL under decay on the in-context pathway (validate/transient_icl.py)."""

import math

import numpy as np

from icl_kinetics.validate.transient_icl import transience, transience_tracking
from validate_tables import cols, transient_table


def test_transience_sooner_for_stronger_decay_and_the_reverse_does_not_hold():
    vs = {v.prediction: v for v in transience(transient_table())}
    assert vs["transience"].verdict == "holds" and vs["transience"].details["spearman_rho"] < 0
    assert vs["icl_iwl_loss_relation"].verdict == "holds"
    rev = {v.prediction: v for v in transience(transient_table(sign=+1))}
    assert rev["transience"].verdict == "does not hold"


def test_transience_ignores_runs_without_decay_on_the_in_context_pathway():
    """The same accuracy traces at wd_attn = 0 are not transience evidence: alone they are
    skipped, and beside decayed runs they are left out (and counted) rather than counted
    as transient seeds."""
    t = transient_table()
    zero = dict(t, wd_attn=[0.0] * len(t["wd_attn"]))
    vs = {v.prediction: v for v in transience(zero)}
    assert vs["transience"].verdict == vs["icl_iwl_loss_relation"].verdict == "skipped"
    assert "wd_attn > 1e-08" in vs["transience"].reason
    both = {k: t[k] + zero[k] for k in t}
    both["seed"] = t["seed"] + [f"z{w}_{s}" for w, s in zip(t["wd_attn"], t["seed"])]  # 9 distinct seeds
    mixed = {v.prediction: v for v in transience(both)}["transience"]
    alone = {v.prediction: v for v in transience(t)}["transience"]
    assert mixed.details["lost"] == alone.details["lost"] and mixed.verdict == "holds"
    assert "left out" not in alone.reason and "9 seeds at wd_attn <= 1e-08 (no decay) left out" in mixed.reason


def test_transience_tracking_follows_w_tr_and_the_reverse_does_not_hold():
    from icl_kinetics.theory import w_tr

    def table(sign):
        rows = []
        for s in range(3):
            for it in np.arange(0, 10000, 250.0):
                c3 = 1.0 * math.exp(-it / 4000)
                wt = float(w_tr(c3, 1e-2))
                w = wt * (1 + 0.05 * math.sin(it + s)) if sign > 0 else 10 - wt
                rows.append({"seed": s, "iteration": it, "wd_attn": 1e-2, "K": 1024.0, "N": 19.0,
                             "icl_acc": 0.5 if it < 500 else 1.0, "c3": c3, "w": w})
        return cols(rows)

    assert transience_tracking(table(+1)).verdict == "holds"
    assert transience_tracking(table(-1)).verdict == "does not hold"
