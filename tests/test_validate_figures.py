"""Figures (validate/figures.py): made without pyplot, so importing or drawing them never picks
a display backend; saved atomically; and the figure data the prediction modules compute
for them, against independent references."""

import math
import os
import subprocess
import sys

import numpy as np

from icl_kinetics.validate import figures as F
from icl_kinetics.validate.k_star import final_accuracy_by_k
from icl_kinetics.validate.memorization import c1_tails, coefficient_curves


def test_figures_need_no_pyplot_backend(tmp_path):
    """With an interactive backend asked for and no display, importing the module, drawing
    and saving a figure works and never imports pyplot (no backend is chosen)."""
    code = ("import sys; from icl_kinetics.validate import figures as F;"
            "fig = F.accuracy_vs_k_figure({100.0: {'icl_acc': [0.5, 0.6], 'iwl_acc': [0.9, 1.0]}});"
            f"F.save(fig, {str(tmp_path / 'a.png')!r});"
            "print('matplotlib.pyplot' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "tkagg"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_save_closes_a_pyplot_figure(tmp_path):
    """A figure made with pyplot (as the command line does) is saved and let go by pyplot."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    num = fig.number
    F.save(fig, tmp_path / "b.pdf")
    assert not plt.fignum_exists(num) and (tmp_path / "b.pdf").read_bytes()[:4] == b"%PDF"


def _mlp_rows(p=1.5, Ks=(64.0, 256.0), seeds=(0, 1)):
    """c1 = A_K t^-p for t >= 1000 (0.4 before), seed 1 at twice seed 0's c1; c2 = 0.25, c3 = 2 c1."""
    rows = []
    for K in Ks:
        for s in seeds:
            for t in (0.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0):
                c1 = 0.4 if t < 1000 else (1 + s) * 0.01 * K * t**-p
                rows.append({"seed": s, "iteration": t, "K": K, "c1": c1, "c2": 0.25, "c3": 2 * c1})
    return {k: [r[k] for r in rows] for k in rows[0]}


def test_c1_tails_recover_the_power_law_and_coefficient_curves_average_the_seeds():
    t = _mlp_rows()
    tails = c1_tails(t, tail_below=0.1)
    for tl in tails:
        # the mean of the two seeds is 1.5 x 0.01 K t^-1.5 on the tail: exponent and amplitude exactly
        assert tl["fit"] is not None and abs(tl["fit"].exponent + 1.5) < 1e-9
        assert abs(tl["fit"].amplitude / (0.015 * tl["K"]) - 1) < 1e-9
        np.testing.assert_array_equal(tl["iteration"], [500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0])
    assert [tl["K"] for tl in tails] == [64.0, 256.0]
    curves = coefficient_curves(t)
    c = curves[0]
    np.testing.assert_allclose(c["c1"][2:], 0.015 * 64 * np.array([1000.0, 2000.0, 4000.0, 8000.0, 16000.0]) ** -1.5)
    np.testing.assert_allclose(c["1 - c2"], 0.75)
    np.testing.assert_allclose(c["c3"], 2 * c["c1"])
    fig = F.mlp_coefficients_figure(curves)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 2
    fig = F.c1_power_law_figure(tails)
    dashed = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 2  # one fitted tail per K


def test_final_accuracy_by_k_takes_each_seeds_last_evaluation():
    rows = [{"seed": s, "iteration": it, "K": K, "icl_acc": acc + (it / 1000), "iwl_acc": 0.9}
            for K, acc in ((100.0, 0.5), (1000.0, 0.8)) for s in range(3) for it in (0.0, 100.0)]
    rows += [{"seed": 0, "iteration": 0.0, "K": math.inf, "icl_acc": 0.5, "iwl_acc": 0.5}]  # K = inf: not on the axis
    t = {k: [r[k] for r in rows] for k in rows[0]}
    by = final_accuracy_by_k(t)
    assert list(by) == [100.0, 1000.0] and by[100.0]["icl_acc"] == [0.6] * 3 and by[1000.0]["iwl_acc"] == [0.9] * 3
    fig = F.accuracy_vs_k_figure(by)
    mean = [ln for ln in fig.axes[0].lines if ln.get_label() == "mean over seeds"][0]
    np.testing.assert_allclose(mean.get_ydata(), [0.6, 0.9])


def test_k_star_figure_ticks_at_two_n_and_parameters_in_title():
    """Two values of N (less than a decade apart) get labelled ticks at those values; the title
    shows A, nu, beta0."""
    fig = F.k_star_figure({"N": [19, 29], "k_star": [1700.0, 2400.0]}, nu=0.6, amplitude=0.2, beta0=0.0)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [19.0, 29.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["19", "29"]
    assert "A = 0.2" in ax.get_title() and "nu = 0.6" in ax.get_title() and "beta0 = 0" in ax.get_title()
    fig = F.k_star_scaling_figure([19, 29], [1700.0, 2400.0], [[1500, 1900], [2000, 2800]], 1.6)
    assert list(fig.axes[0].get_xticks()) == [19.0, 29.0]


def test_drive_figure_ticks_and_title_fit(tmp_path):
    """The drive figure's x axis has a tick at each K (more than one), and its suptitle is broken
    over two lines so that it fits the figure width once drawn."""
    panels = [{"N": 19, "K": [2048, 2048, 4096, 4096], "i_k": [5.0, 6.0, 7.0, 8.0],
               "acquired": [True, False, True, True], "inf": [6.0, 7.0, 8.0], "median": 7.0}]
    fig = F.drive_figure(panels, params="lr = 0.01")
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [2048.0, 4096.0]
    fig.canvas.draw()
    bb = fig._suptitle.get_window_extent()
    assert bb.x0 >= 0 and bb.x1 <= fig.bbox.width and "lr = 0.01" in fig._suptitle.get_text()


def test_onset_figure_bins_cover_the_tails():
    """The histogram bins span every sample, the extreme tails included (nothing clipped)."""
    rng = np.random.default_rng(0)
    t = np.exp(rng.normal(7, 1.5, 3000))
    fig = F.onset_figure({"N": [50] * t.size, "t_icl": t}, title="lr = 0.1")
    ax = fig.axes[0]
    xs = np.concatenate([p.get_path().vertices[:, 0] for p in ax.patches])
    assert xs.min() <= np.log10(t.min()) + 1e-12 and xs.max() >= np.log10(t.max()) - 1e-12
    assert fig._suptitle.get_text() == "lr = 0.1"
