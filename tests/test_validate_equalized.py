"""Equalized against i.i.d. contexts (validate/equalized.py) and its figure (Fig. 6e)."""

import numpy as np

from icl_kinetics.validate.equalized import acquisition_by_k, equalized_contexts
from validate_tables import cols, eq_table


def test_equalized_contexts_need_more_items_and_the_reverse_does_not_hold():
    v = equalized_contexts(eq_table())
    assert v.verdict == "holds" and v.details["k50_equalized"] > 3 * v.details["k50_iid"]
    assert 0.5 < v.details["k50_iid"] / 1000 < 2  # K_50 within one grid step (x2) of the true K*
    assert equalized_contexts(eq_table(k_iid=4000.0, k_eq=1000.0)).verdict == "does not hold"
    assert equalized_contexts(eq_table(k_iid=2000.0, k_eq=2000.0)).verdict == "inconclusive"


def test_equalized_figure_plots_the_acquiring_fractions_and_the_theory_bound():
    """Fig. 6e's left panel: per arm and K, the fraction of seeds whose ICL accuracy ever
    exceeded 0.95 (counted here independently), with the theory's bound drawn dashed."""
    from icl_kinetics.validate import figures as F

    acquire = {("iid", 500.0): 1, ("iid", 4000.0): 4, ("equalized", 500.0): 0, ("equalized", 4000.0): 2}
    rows = []
    for (ctx, K), k in acquire.items():
        for s in range(4):
            peak = 0.99 if s < k else 0.9  # the acquiring seeds then fall back: "ever", not "final"
            rows += [{"seed": s, "iteration": it, "N": 20.0, "K": K, "contexts": ctx, "run_id": f"{ctx}{K}",
                      "icl_acc": acc} for it, acc in ((0.0, 0.5), (100.0, peak), (200.0, 0.6))]
    fig = F.equalized_figure(acquisition_by_k(cols(rows)), ceiling=0.25, ceiling_label="bound")
    ax = fig.axes[0]
    got = {cont.get_label().split()[0]: list(cont.lines[0].get_ydata()) for cont in ax.containers}
    assert got == {"iid": [0.25, 1.0], "equalized": [0.0, 0.5]}
    assert [ln.get_ydata()[0] for ln in ax.lines if ln.get_label() == "bound"] == [0.25]
    # the right panel: mean final accuracy (every seed ends at 0.6)
    assert all(np.allclose(ln.get_ydata(), 0.6) for ln in fig.axes[1].lines)
