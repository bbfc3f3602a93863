"""Figures.  Each function takes tidy data and returns a ``matplotlib.figure.Figure``.

Tidy data is a table: either a mapping of column name -> sequence, or a list of row
mappings (one row per observation), or the per-panel data that a prediction module
computes (e.g. :func:`icl_kinetics.validate.equalized.acquisition_by_k`): the statistics
live there, a figure only draws.  Theory is drawn dashed, measurements as points or solid
lines, on log axes where the paper used them.  Nothing here imports torch.

Figures are made with :class:`matplotlib.figure.Figure` directly, so no pyplot backend is
chosen (none is set at import time, and none is needed on a machine without a display);
:func:`save` renders with Agg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from icl_kinetics.validate.core import columns

__all__ = [
    "accuracy_vs_k_figure", "bimodality_figure", "c1_power_law_figure", "columns", "drive_figure", "drive_ratio_figure",
    "equalized_figure", "icl_vs_iwl_figure", "k_star_figure", "k_star_prediction_figure", "k_star_scaling_figure",
    "ladder_k_star_figure", "zipf_k_star_figure",
    "memorization_figure", "mlp_coefficients_figure", "onset_comparison_figure", "onset_figure",
    "onset_shape_figure", "onset_times_figure", "save", "sigmoid_fits_figure", "training_curves_figure",
    "transience_figure", "transience_runs_figure",
]


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize, **kw):
    """A new constrained-layout :class:`Figure` (no pyplot) and its axes (``Figure.subplots``)."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kw)


def _colors(n):
    return matplotlib.colormaps["viridis"](np.linspace(0.1, 0.85, max(n, 1)))


def _ticks_at(ax, values, axis: str = "x", most: int = 8) -> None:
    """Major ticks of a log axis at the data's own values (plain numbers) when there are at most
    ``most`` of them: a log axis over less than a decade (two values of N, say) otherwise shows
    no labelled tick, or one."""
    v = np.unique(np.asarray(values, float)[np.isfinite(np.asarray(values, float))])
    if not 0 < v.size <= most:
        return
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(matplotlib.ticker.FixedLocator(v))
    a.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{x:g}" for x in v]))
    a.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _params(**kw) -> str:
    """'A = 0.2, nu = 0.7, ...' of the parameters given (None left out)."""
    return ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in kw.items()
                     if v is not None)


def k_star_figure(table, nu: float | None = None, *, amplitude: float | None = None, beta0: float | None = None,
                  c2: float | None = None) -> Figure:
    """K* against N (log-log), ticks at the N values.  Columns: ``N``, ``k_star``; optional ``label``.
    The title shows the parameters given (A, nu, beta0, c2)."""
    c = columns(table)
    fig, ax = _subplots(figsize=(4.8, 3.8))
    labels = c.get("label", np.array(["theory"] * len(c["N"])))
    for lab, col in zip(dict.fromkeys(labels), _colors(len(set(labels)))):
        m = labels == lab
        N, k = c["N"][m].astype(float), c["k_star"][m].astype(float)
        order = np.argsort(N)
        slope = np.polyfit(np.log(N), np.log(k), 1)[0] if m.sum() > 1 else np.nan
        ax.plot(N[order], k[order], "--o", color=col, ms=4, label=f"{lab} (slope {slope:.3f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _ticks_at(ax, c["N"].astype(float))
    ax.set_xlabel("context length N (context tokens)")
    ax.set_ylabel("diversity threshold K* (items)")
    title = "Predicted K* vs N" + (f"  (1/nu = {1 / nu:.3f})" if nu else "")
    p = _params(A=amplitude, nu=nu, beta0=beta0, c2=c2)
    ax.set_title(title + ("\n" + p if p else ""), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def onset_figure(samples, curves=None, title: str | None = None) -> Figure:
    """Distributions of t_ICL per N: log-binned histograms over the full range (no tail cut off)
    and violins.

    Args:
        samples: tidy table with columns ``N`` and ``t_icl`` (iterations), one row per seed.
        curves: optional tidy table with ``N``, ``t_icl``, ``density`` (per unit log10 t):
            a theory density drawn dashed over the histograms.
        title: the parameters (e.g. lr and the beta0 distribution), shown over the panels.
    """
    c = columns(samples)
    Ns = sorted(set(c["N"].tolist()))
    cols = _colors(len(Ns))
    fig, (ax, ax2, ax3) = _subplots(1, 3, figsize=(13, 4.0))
    logt = np.log10(c["t_icl"].astype(float))
    per_n = logt.size / max(1, len(Ns))
    # bins over the full range: the tails are the point of the panel
    bins = np.linspace(np.nanmin(logt), np.nanmax(logt), int(np.clip(3 * np.sqrt(per_n), 8, 120)))
    for N, col in zip(Ns, cols):
        x = logt[c["N"] == N]
        ax.hist(x, bins=bins, density=True, histtype="step", color=col, lw=1.5, label=f"N = {N:g}")
    if curves is not None:
        cc = columns(curves)
        for N, col in zip(Ns, cols):
            m = cc["N"] == N
            ax.plot(np.log10(cc["t_icl"][m].astype(float)), cc["density"][m], "--", color=col, lw=1)
    ax.set_xlabel("log10 t_ICL (iterations)")
    ax.set_ylabel("density per unit log10 t")
    ax.set_title("t_ICL across seeds, full range" + (" (dashed: closed form)" if curves is not None else ""),
                 fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    ax.legend(fontsize=8)
    width = 0.6 * min(np.diff(Ns)) if len(Ns) > 1 else 1.0
    parts = ax2.violinplot([logt[c["N"] == N] for N in Ns], positions=Ns, widths=width,
                           showmedians=True, showextrema=False)
    for body, col in zip(parts["bodies"], cols):
        body.set_facecolor(col)
        body.set_alpha(0.6)
    ax2.set_xlabel("context length N")
    ax2.set_ylabel("log10 t_ICL (iterations)")
    ax2.set_title("long right tails (log scale)", fontsize=10)
    med = np.array([np.median(c["t_icl"][c["N"] == N].astype(float)) for N in Ns])
    ax3.plot(Ns, med, "o", color="k", label="median")
    if len(Ns) > 1:
        a, b = np.polyfit(Ns, med, 1)
        xx = np.linspace(0, max(Ns) * 1.05, 50)
        ax3.plot(xx, a * xx + b, "--", color="gray", label=f"linear fit: {a:.3g} N {b:+.3g}")
    ax3.set_xlim(0, None)
    ax3.set_ylim(0, None)
    ax3.set_xlabel("context length N")
    ax3.set_ylabel("median t_ICL (iterations)")
    ax3.set_title("median t_ICL is linear in N", fontsize=10)
    ax3.legend(fontsize=8)
    return fig


def onset_comparison_figure(measured, theory, title: str | None = None,
                            reduced_range: float | None = None) -> Figure:
    """Measured t_ICL per seed against the theory's prediction, one panel per N.

    Args:
        measured: tidy table ``N``, ``beta0``, ``seed``, ``t_icl`` (iterations, NaN if
            the seed never acquired ICL within ``max_iterations``), ``max_iterations``.
        theory: tidy table ``N``, ``beta0``, ``t_icl`` (iterations), ``model`` ('full flow':
            the headline, a thick solid line; 'reduced ODEs'; 'signal', 'noise'; any other
            name: gray dashes), evaluated on a fine beta0 grid; optional ``in_range`` (bool):
            the reduced-ODE curves are drawn faint where it is False.  ``t_icl <= 0`` (a
            beta0 already past the threshold) is not drawn on the log axis.
        title: a title over the panels (the run's parameters).
        reduced_range: the reduced ODEs' range, e^beta0 / sqrt(N) at most this: the beta0
            beyond it is shaded and labelled in each panel (None: no shading).
    """
    from icl_kinetics.validate.compare import censored_median

    m, th = columns(measured), columns(theory)
    Ns = sorted(set(m["N"].tolist()))
    fig, axes = _subplots(1, len(Ns), figsize=(3.9 * len(Ns), 3.9), sharey=True, squeeze=False)
    styles = {"full flow": ("k", "-", 2.0), "reduced ODEs": ("tab:gray", "--", 1.3),
              "exact": ("tab:gray", "--", 1.3), "signal": ("tab:blue", ":", 1.0), "noise": ("tab:red", ":", 1.0)}
    names = {"full flow": "theory: full flow (headline)", "reduced ODEs": "reduced ODEs (Eq. 6)",
             "exact": "reduced ODEs (Eq. 6)", "signal": "reduced: signal formula", "noise": "reduced: noise formula"}
    has_range = "in_range" in th
    for ax, N in zip(axes[0], Ns):
        for model in dict.fromkeys(th["model"].tolist()):
            sel = (th["N"] == N) & (th["model"] == model)
            colr, ls, lw = styles.get(model, ("gray", "--", 1.2))
            b, t = th["beta0"][sel].astype(float), th["t_icl"][sel].astype(float)
            t = np.where(t > 0, t, np.nan)
            if has_range and model != "full flow":
                ok = th["in_range"][sel].astype(bool)
                ax.plot(b, np.where(ok, t, np.nan), ls, color=colr, lw=lw, label=names.get(model, model))
                # faint outside the range (one point of overlap keeps the line continuous)
                out = ~ok | np.concatenate([~ok[1:], [False]])
                ax.plot(b, np.where(out, t, np.nan), ls, color=colr, lw=lw, alpha=0.3)
            else:
                ax.plot(b, t, ls, color=colr, lw=lw, label=names.get(model, model), zorder=3)
        if reduced_range is not None:
            edge = float(np.log(reduced_range * np.sqrt(N)))  # e^beta0 / sqrt(N) = reduced_range
            x_hi = float(np.nanmax(th["beta0"][th["N"] == N].astype(float)))
            if edge < x_hi:
                ax.axvspan(edge, x_hi, color="tab:orange", alpha=0.08, lw=0,
                           label=f"reduced ODEs outside range\n(e^beta0/sqrt(N) > {reduced_range:g})")
        sel = m["N"] == N
        t = m["t_icl"][sel].astype(float)
        b = m["beta0"][sel].astype(float)
        jitter = (np.random.default_rng(0).random(b.size) - 0.5) * 0.12
        ok = np.isfinite(t)
        ax.plot(b[ok] + jitter[ok], t[ok], "o", ms=3, color="tab:green", alpha=0.6, label="SGD seeds")
        if (~ok).any():
            cap = m["max_iterations"][sel].astype(float)[~ok]
            ax.plot(b[~ok] + jitter[~ok], cap, "^", ms=5, color="tab:orange", label="not acquired (censored)")
        first = True
        for bb in sorted(set(b.tolist())):
            med = censored_median(t[b == bb])  # the median of compare's table, drawn
            if med is not None:
                ax.plot([bb], [med], "s", ms=7, mfc="none", mec="tab:green", mew=1.5,
                        label="SGD median" if first else None)
                first = False
        ax.set_yscale("log")
        ax.set_title(f"N = {N}", fontsize=10)
        ax.set_xlabel("beta0")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("t_ICL (iterations)")
    axes[0][-1].legend(fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def transience_figure(table) -> Figure:
    """A post-acquisition trajectory.  Columns: ``t`` (iterations), ``w``, ``w_tr``,
    ``beta``, ``icl_accuracy``; optional ``t_loss`` (constant column)."""
    c = columns(table)
    fig, (ax, ax2) = _subplots(1, 2, figsize=(9, 3.5))
    t = c["t"].astype(float)
    keep = t > 0
    c = {k: v[keep] for k, v in c.items()}
    t = t[keep]
    ax.plot(t, c["w"], "-", color="tab:purple", label="w (flow)")
    ax.plot(t, c["w_tr"], "--", color="k", label="w_tr(c3(t), lambda)")
    ax.plot(t, c["beta"], "-", color="tab:cyan", label="beta (flow)")
    ax.set_xscale("log")
    ax.set_xlabel("iterations after acquisition")
    ax.legend(fontsize=8)
    ax.set_title("w, beta and the tracking value w_tr", fontsize=10)
    ax2.plot(t, c["icl_accuracy"], "-", color="tab:green", label="ICL accuracy (large D)")
    if "t_loss" in c and np.isfinite(c["t_loss"].astype(float)).any():
        ax2.axvline(float(c["t_loss"][0]), color="r", ls="--", label="predicted loss of ICL")
    ax2.set_xscale("log")
    ax2.set_ylim(0.4, 1.02)
    ax2.set_xlabel("iterations after acquisition")
    ax2.set_ylabel("ICL accuracy")
    ax2.legend(fontsize=8)
    return fig


def training_curves_figure(rows, threshold: float | None = None, title: str | None = None) -> Figure:
    """Training curves, one line per seed: ICL accuracy, IWL accuracy and training loss.

    Args:
        rows: the engine's tidy metrics table (``seed``, ``iteration`` in iterations,
            ``icl_acc``, ``iwl_acc``, ``train_loss``; NaN where not measured).
        threshold: ICL accuracy that defines t_ICL, drawn dotted.
        title: figure title.
    """
    c = columns(rows)
    seeds = sorted(set(c["seed"].tolist()))
    cols = _colors(len(seeds))
    panels = [("icl_acc", "ICL accuracy (novel items)"), ("iwl_acc", "IWL accuracy (target absent)"),
              ("train_loss", "training loss (nats)")]
    panels = [pn for pn in panels if pn[0] in c and np.isfinite(c[pn[0]].astype(float)).any()]
    fig, axes = _subplots(1, len(panels), figsize=(4.3 * len(panels), 3.4),
                             squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for s, col in zip(seeds, cols):
            m = c["seed"] == s
            it = c["iteration"][m].astype(float)
            v = c[key][m].astype(float)
            ok = np.isfinite(v)
            ax.plot(it[ok], v[ok], "-", color=col, lw=1.1, label=f"seed {s}" if len(seeds) <= 10 else None)
        if key != "train_loss":
            lo = np.nanmin(c[key].astype(float))
            ax.set_ylim(min(0.4, lo - 0.02), 1.02)
            if threshold is not None and key == "icl_acc":
                ax.axhline(threshold, color="k", ls=":", lw=1)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    if len(seeds) <= 10:
        axes[0][0].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save(fig: Figure, path) -> str:
    """Save a figure atomically (rendered in memory, then written to a temporary file and
    renamed; a failure leaves no temporary file) and close it."""
    import io
    from pathlib import Path

    from icl_kinetics.io import atomic_write_bytes

    p = Path(path)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, dpi=130, format=p.suffix.lstrip(".") or "png")
        return atomic_write_bytes(p, buf.getvalue())
    finally:
        if getattr(fig.canvas, "manager", None) is not None:  # made by pyplot: let pyplot forget it
            import matplotlib.pyplot as plt

            plt.close(fig)


def _loglog(ax, xlabel: str, ylabel: str, title: str, legend_size: int = 7):
    """Log-log axes with labels, a small title, a legend and a light grid."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=legend_size)
    ax.grid(True, which="both", alpha=0.3)


# ----------------------------------------------------------------------------- validation panels
def memorization_figure(i_k: Mapping, fit: Mapping | None = None, fitted=None) -> Figure:
    """Paper Fig. 5: the integrated residual error I_K(T) (learning-rate time) against K
    (log-log).  Filled points were memorized by the end of the run (entered the fit), open
    ones were not; the fitted power law A K^nu is dashed."""
    K = np.asarray(i_k["K"], float)
    y = np.asarray(i_k["i_k"], float)
    sd = np.asarray(i_k.get("i_k_sd", np.zeros_like(y)), float)
    mem = np.zeros(K.size, bool)
    if fitted is not None:
        mem[list(fitted)] = True
    fig, ax = _subplots(figsize=(4.6, 3.6))
    ax.errorbar(K[mem], y[mem], yerr=sd[mem], fmt="o", color="tab:blue", ms=5, label="memorized (fitted)")
    if (~mem).any():
        ax.errorbar(K[~mem], y[~mem], yerr=sd[~mem], fmt="o", mfc="none", color="tab:blue", ms=5,
                    label="not memorized by T")
    if fit:
        kk = np.geomspace(K.min(), K.max(), 50)
        ax.plot(kk, fit["amplitude"] * kk ** fit["exponent"], "--", color="k",
                label=f"A K^nu: A = {fit['amplitude']:.3g}, nu = {fit['exponent']:.2f} "
                f"[{fit['exponent_ci'][0]:.2f}, {fit['exponent_ci'][1]:.2f}]")
    _loglog(ax, "K (items)", "I_K(T) (learning-rate time)", "memorization law (MLP alone)")
    return fig


def k_star_prediction_figure(panels: Sequence[Mapping]) -> Figure:
    """Rung 2: final ICL accuracy of each seed against K (points), the sigmoid fit (solid),
    the measured K* with its CI (shaded) and the K* predicted from c1(t) (dashed), one
    panel per N.  Each panel: ``N``, ``seeds`` [(K, final acc)], ``fit`` (sigmoid),
    ``predicted`` [K* low, K* high]."""
    fig, axes = _subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4),
                             squeeze=False)
    for ax, p in zip(axes[0], panels):
        K = np.array([k for k, _ in p["seeds"]], float)
        acc = np.array([a for _, a in p["seeds"]], float)
        jitter = np.exp((np.random.default_rng(0).random(K.size) - 0.5) * 0.1)
        ax.plot(K * jitter, acc, "o", ms=4, alpha=0.6, color="tab:green", label="seeds")
        f = p["fit"]
        if np.isfinite(f.get("k_star", np.nan)):
            x = np.linspace(np.log10(K.min()), np.log10(K.max()), 100)
            ax.plot(10 ** x, f["c"] + f["d"] / (1 + np.exp(-f["a"] * (x - f["b"]))), "-", color="tab:green")
            ax.axvspan(*f["k_star_ci"], color="tab:green", alpha=0.15, label=f"measured K* = {f['k_star']:.0f}")
        pred = [v for v in p["predicted"] if np.isfinite(v)]
        for i, v in enumerate(pred):
            ax.axvline(v, color="k", ls="--", lw=1.2, label="predicted from c1(t)" if i == 0 else None)
        ax.set_xscale("log")
        ax.set_ylim(min(0.4, float(np.nanmin(acc)) - 0.05), 1.05)
        ax.set_xlabel("K (items)")
        ax.set_ylabel(p.get("observable", "final ICL accuracy"), fontsize=8)
        ax.set_title(f"N = {p['N']:g}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return fig


def drive_figure(panels: Sequence[Mapping], params: str | None = None) -> Figure:
    """The head's drive I = lr int c1 dt (learning-rate time) of each finite-K seed against
    K: at its ICL onset (filled) or, for seeds that never acquired, at its last evaluation
    (crosses), one panel per N.  The theory's K-independent threshold is the K = inf onset
    drive: its median (dashed) and its 10-90 % band (shaded).  Each panel (``drive_at_onset``'s
    ``figure_data``): ``N``, ``K``, ``i_k`` (the drive I_K of each seed), ``acquired`` (per
    seed), ``inf`` (K = inf onset drives), ``median`` (their Kaplan-Meier median), and
    optionally ``title`` (e.g. the model and width of a ladder group with N; default "N = ...").
    ``params``: the run's parameters (e.g. "lr = 0.01"), appended to the title; x ticks at the
    K values.  At most 4 panels per row."""
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = _subplots(rows, cols, figsize=(max(4.2 * cols, 6.0), 3.8 * rows + 0.4 * (rows > 1)),
                             squeeze=False, sharey=True)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fs = 8 if any(len(p.get("title") or "") > 20 for p in panels) else 10
    for ax, p in zip(axes.ravel(), panels):
        K, I = np.asarray(p["K"], float), np.asarray(p["i_k"], float)
        acq = np.asarray(p["acquired"], bool)
        jitter = np.exp((np.random.default_rng(0).random(K.size) - 0.5) * 0.12)
        ax.plot(K[acq] * jitter[acq], I[acq], "o", ms=4, alpha=0.7, color="tab:green", label="at ICL onset")
        ax.plot(K[~acq] * jitter[~acq], I[~acq], "x", ms=5, alpha=0.8, color="tab:gray",
                label="never acquired: at the last evaluation")
        inf = np.asarray(p["inf"], float)
        ax.axhspan(*np.quantile(inf, [0.1, 0.9]), color="tab:blue", alpha=0.12, label="K = inf onsets, 10-90 %")
        ax.axhline(p["median"], color="k", ls="--", lw=1.2, label="theory: the K = inf median")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        _ticks_at(ax, K)
        ax.set_xlabel("K (items)")
        ax.set_title(p.get("title") or f"N = {p['N']:g}", fontsize=fs)
        ax.grid(True, which="both", alpha=0.3)
    for row in axes:
        row[0].set_ylabel("drive lr * int c1 dt (learning-rate time)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("the head's drive at ICL onset against K\n(theory: a threshold that does not depend on K, "
                 "dashed)" + (f"; {params}" if params else ""), fontsize=9)
    return fig


def k_star_scaling_figure(N, k_star, k_star_ci, predicted_slope: float, slope: float | None = None) -> Figure:
    """Paper Fig. 6a: measured K* against N (log-log, 95% CI bars) and the predicted slope
    1/nu (dashed, through the measured points' geometric mean)."""
    N = np.asarray(N, float)
    k = np.asarray(k_star, float)
    ci = np.asarray(k_star_ci, float)
    ok = np.isfinite(k)
    fig, ax = _subplots(figsize=(4.6, 3.6))
    ax.errorbar(N[ok], k[ok], yerr=[k[ok] - ci[ok, 0], ci[ok, 1] - k[ok]], fmt="o", color="tab:blue",
                label="measured K*" + (f" (slope {slope:.2f})" if slope is not None else ""))
    if ok.sum():
        n0, k0 = np.exp(np.mean(np.log(N[ok]))), np.exp(np.mean(np.log(k[ok])))
        nn = np.geomspace(N.min() * 0.9, N.max() * 1.1, 20)
        ax.plot(nn, k0 * (nn / n0) ** predicted_slope, "--", color="k", label=f"slope 1/nu = {predicted_slope:.2f}")
    _loglog(ax, "N (context tokens)", "K* (items)", "diversity threshold against context length", 8)
    _ticks_at(ax, N)
    return fig


def onset_times_figure(samples: Mapping, medians: Mapping, fit: Mapping | None = None) -> Figure:
    """Paper Fig. 6b: t_ICL per seed against N at K = inf (points; censored seeds as open
    triangles at their last iteration), Kaplan-Meier medians (squares) and the linear fit
    of the medians (dashed)."""
    fig, ax = _subplots(figsize=(5.0, 3.7))
    rng = np.random.default_rng(0)
    for N, rows in samples.items():
        t = np.array([time for time, _ in rows], float)
        obs = np.array([o for _, o in rows], bool)
        x = N + (rng.random(t.size) - 0.5) * 0.15 * max(1.0, min(samples) if samples else 1.0)
        ax.plot(x[obs], t[obs], "o", ms=3, alpha=0.5, color="tab:green")
        if (~obs).any():
            ax.plot(x[~obs], t[~obs], "^", ms=5, mfc="none", color="tab:orange")
    Ns = [N for N, m in medians.items() if m is not None]
    ax.plot(Ns, [medians[N] for N in Ns], "s", ms=7, mfc="none", mec="k", label="median (Kaplan-Meier)")
    if fit:
        xx = np.linspace(0, max(samples) * 1.05, 20)
        ax.plot(xx, fit["slope"] * xx + fit["intercept"], "--", color="k",
                label=f"linear fit, R^2 = {fit['r2']:.3f}")
    ax.plot([], [], "^", mfc="none", color="tab:orange", label="never acquired (censored)")
    ax.set_xlim(0, None)
    ax.set_ylim(0, None)
    ax.set_xlabel("N (context tokens)")
    ax.set_ylabel("t_ICL (iterations)")
    ax.set_title("ICL onset at K = inf", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def onset_shape_figure(resid, sd_beta0: float) -> Figure:
    """The spread of log t_ICL around each N's median (histogram) against the theory's
    Normal(0, sd(beta0_eff)) (dashed), the signal-regime push-forward of the beta0 spread."""
    r = np.asarray(resid, float)
    fig, ax = _subplots(figsize=(4.6, 3.4))
    ax.hist(r, bins=max(8, int(np.sqrt(r.size)) + 2), density=True, color="tab:green", alpha=0.6,
            label=f"measured (sd {np.std(r, ddof=1):.2f})")
    xx = np.linspace(min(r.min(), -3 * sd_beta0), max(r.max(), 3 * sd_beta0), 200)
    ax.plot(xx, np.exp(-0.5 * (xx / sd_beta0) ** 2) / (sd_beta0 * np.sqrt(2 * np.pi)), "--", color="k",
            label=f"theory: sd(beta0_eff) = {sd_beta0:.2f}")
    ax.set_xlabel("log t_ICL - log median t_ICL(N)")
    ax.set_ylabel("density")
    ax.set_title("shape of the onset distribution", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def bimodality_figure(acc, observed, N, K, xlabel: str = "final ICL accuracy") -> Figure:
    """Paper Fig. 6c: the final ICL accuracy (or, for the minimal model, the final beta) of
    every seed at one (N, K) near K* (histogram; seeds that acquired ICL in green)."""
    a = np.asarray(acc, float)
    o = np.asarray(observed, bool)
    fig, ax = _subplots(figsize=(4.6, 3.4))
    lo, hi = (min(0.4, a.min()), 1.0) if xlabel == "final ICL accuracy" else (a.min(), a.max())
    bins = np.linspace(lo, hi + 1e-9, 25)
    ax.hist([a[o], a[~o]], bins=bins, stacked=True, color=["tab:green", "tab:gray"],
            label=[f"acquired ({o.sum()})", f"not acquired ({(~o).sum()})"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seeds")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(f"outcomes near K*: N = {N:g}, K = {K:g}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def transience_runs_figure(rows) -> Figure:
    """Paper Fig. A6: iteration at which ICL was lost against the attention weight decay;
    seeds that kept ICL are drawn at their last iteration (open), seeds that never
    acquired it at the bottom (crosses).  ``rows``: (wd, t_loss or None, acquired, lost)."""
    fig, ax = _subplots(figsize=(4.6, 3.4))
    rng = np.random.default_rng(0)
    for wd, t, acq, lost in rows:
        x = wd * np.exp((rng.random() - 0.5) * 0.08)
        if not acq:
            ax.plot(x, 0, "x", color="tab:gray")
        elif lost:
            ax.plot(x, t, "o", color="tab:red")
        else:
            ax.plot(x, t, "o", mfc="none", color="tab:blue")
    ax.plot([], [], "o", color="tab:red", label="ICL lost at")
    ax.plot([], [], "o", mfc="none", color="tab:blue", label="kept ICL to the end")
    ax.plot([], [], "x", color="tab:gray", label="never acquired")
    ax.set_xscale("log")
    # one labelled tick per weight decay run (the points are jittered around it)
    wds = sorted({float(r[0]) for r in rows if r[0] > 0})
    if wds:
        ax.set_xticks(wds, [f"{w:.2g}" for w in wds], fontsize=8)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("weight decay on attention (wd_attn)")
    ax.set_ylabel("iteration")
    ax.set_title("transience against weight decay", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def accuracy_vs_k_figure(by_k: Mapping, title: str = "ICL and IWL accuracy against K") -> Figure:
    """Paper Fig. 2b and 2c: final ICL accuracy (novel items) and IWL accuracy (training
    items, target absent) against K, one point per seed and the mean per K.  ``by_k``:
    {K: {"icl_acc": [...], "iwl_acc": [...]}}
    (:func:`icl_kinetics.validate.k_star.final_accuracy_by_k`)."""
    Ks = sorted(float(k) for k in by_k if np.isfinite(float(k)))
    fig, axes = _subplots(1, 2, figsize=(8.4, 3.4))
    for ax, key, lab in zip(axes, ("icl_acc", "iwl_acc"), ("ICL accuracy", "IWL accuracy")):
        m = []
        for K in Ks:
            v = np.asarray(by_k[K][key], float)
            ax.plot(np.full(v.size, K), v, "o", ms=3, alpha=0.4, color="tab:green" if key == "icl_acc" else "tab:blue")
            m.append(np.nanmean(v) if v.size and np.isfinite(v).any() else np.nan)
        ax.plot(Ks, m, "-", color="k", lw=1.2, label="mean over seeds")
        ax.set_xscale("log")
        ax.set_xlabel("K (items)")
        ax.set_ylabel(f"final {lab}")
        ax.set_ylim(0.4, 1.02)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def equalized_figure(arms: Mapping, ceiling: float | None = None, ceiling_label: str = "",
                     title: str = "Fig. 6e: equalized against i.i.d. contexts") -> Figure:
    """Paper Fig. 6e: the fraction of seeds acquiring ICL (accuracy above 0.95 at any
    evaluation; 95% Wilson intervals) and the mean final ICL accuracy against K,
    equalized contexts against i.i.d. ones.  ``arms``: {arm: [{"K", "fraction", "ci",
    "mean_final_icl_acc"}, ...]} (:func:`icl_kinetics.validate.equalized.acquisition_by_k`).

    ``ceiling``: the theory's bound on the equalized fraction, drawn dashed (equalized
    contexts put a saddle at beta = 0, so at most the seeds with beta0 > 0 can escape;
    docs/theory.md section 7).  Only meaningful where beta0 is the reduced model's."""
    fig, (ax_f, ax_a) = _subplots(1, 2, figsize=(9.6, 3.6))
    for ctx, col in (("iid", "tab:blue"), ("equalized", "tab:red")):
        rows = arms.get(ctx, [])
        if not rows:
            continue
        Ks = [r["K"] for r in rows]
        frac = np.array([r["fraction"] for r in rows])
        lo, hi = np.array([r["ci"][0] for r in rows]), np.array([r["ci"][1] for r in rows])
        ax_f.errorbar(Ks, frac, yerr=[frac - lo, hi - frac], fmt="o-", color=col, capsize=3, label=f"{ctx} (measured)")
        ax_a.plot(Ks, [r["mean_final_icl_acc"] for r in rows], "o-", color=col, label=ctx)
    if ceiling is not None:
        ax_f.axhline(ceiling, color="tab:red", ls="--", lw=1.2, label=ceiling_label or f"theory: equalized <= {ceiling:.2f}")
    ax_f.set_ylabel("fraction of seeds acquiring ICL")
    ax_f.set_ylim(-0.05, 1.05)
    ax_a.set_ylabel("mean final ICL accuracy")
    ax_a.set_ylim(0.4, 1.02)
    grid_k = sorted({float(r["K"]) for rows in arms.values() for r in rows})
    for ax in (ax_f, ax_a):
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(grid_k, [f"{k:g}" for k in grid_k])
        ax.set_xlabel("K (items)")
        ax.grid(True, which="both", alpha=0.3)
    ax_a.legend(fontsize=7)
    ax_f.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.suptitle(title, fontsize=10)
    return fig


def mlp_coefficients_figure(curves: Sequence[Mapping]) -> Figure:
    """Paper Fig. A2: c1, 1 - c2 and c3 of the memorizing MLP against iterations, one line
    per K (log-log), mean over seeds.  ``curves``: one {"K", "iteration", "c1", "1 - c2",
    "c3"} per K (:func:`icl_kinetics.validate.memorization.coefficient_curves`)."""
    cols = _colors(len(curves))
    fig, axes = _subplots(1, 3, figsize=(12, 3.4))
    for cv, col in zip(curves, cols):
        it = np.asarray(cv["iteration"], float)
        for ax, key in zip(axes, ("c1", "1 - c2", "c3")):
            mean = np.asarray(cv[key], float)
            ok = (it > 0) & (mean > 0)
            ax.plot(it[ok], mean[ok], "-", color=col, lw=1, label=f"K = {cv['K']:g}")
    for ax, lab in zip(axes, ("c1", "1 - c2", "c3")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(lab)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle("memorizing MLP alone: c1, 1 - c2, c3", fontsize=10)
    return fig


def sigmoid_fits_figure(panels: Mapping) -> Figure:
    """Paper Fig. A7: per-N final ICL accuracy against K with the sigmoid fit and K*.
    ``panels``: N -> {"K": [...], "acc": [...], "fit": SigmoidFit dict}."""
    Ns = sorted(panels)
    fig, axes = _subplots(1, len(Ns), figsize=(3.6 * len(Ns), 3.2), squeeze=False)
    for ax, N in zip(axes[0], Ns):
        p = panels[N]
        K = np.asarray(p["K"], float)
        ax.plot(K, p["acc"], "o", ms=3, alpha=0.5, color="tab:green")
        f = p["fit"]
        if np.isfinite(f.get("k_star", np.nan)):
            x = np.linspace(np.log10(K.min()), np.log10(K.max()), 100)
            ax.plot(10 ** x, f["c"] + f["d"] / (1 + np.exp(-f["a"] * (x - f["b"]))), "-", color="k")
            ax.axvline(f["k_star"], color="k", ls=":", lw=1)
            ax.set_title(f"N = {N:g}: K* = {f['k_star']:.0f}", fontsize=9)
        else:
            ax.set_title(f"N = {N:g}: {f.get('reason', 'no fit')}", fontsize=7)
        ax.set_xscale("log")
        ax.set_ylim(0.4, 1.02)
        ax.set_xlabel("K (items)")
    axes[0][0].set_ylabel("final ICL accuracy")
    return fig


def icl_vs_iwl_figure(table, title: str = "ICL against IWL accuracy along training") -> Figure:
    """Paper Fig. 6d: ICL accuracy against IWL accuracy at every evaluation of a run
    (colour: iteration), one trajectory per seed."""
    c = columns(table)
    fig, ax = _subplots(figsize=(4.6, 3.8))
    sc = None
    for s in sorted(set(c["seed"].tolist())):
        m = c["seed"] == s
        it = c["iteration"][m].astype(float)
        o = np.argsort(it)
        x, y = c["iwl_acc"][m].astype(float)[o], c["icl_acc"][m].astype(float)[o]
        ax.plot(x, y, "-", color="gray", lw=0.5, alpha=0.5)
        sc = ax.scatter(x, y, c=it[o], s=6, cmap="viridis")
    if sc is not None:
        fig.colorbar(sc, ax=ax, label="iteration")
    ax.set_xlabel("IWL accuracy")
    ax.set_ylabel("ICL accuracy")
    ax.set_title(title, fontsize=10)
    return fig


def c1_power_law_figure(tails: Sequence[Mapping]) -> Figure:
    """Paper Fig. A3: the memorizing MLP's residual error c1(t) against iterations
    (log-log, mean over seeds), with the power law c1 ~ t^-p fitted (dashed) to each K's
    tail; the exponents are in the legend.  ``tails``: one {"K", "iteration", "c1", "tail",
    "fit"} per K (:func:`icl_kinetics.validate.memorization.c1_tails`)."""
    cols = _colors(len(tails))
    fig, ax = _subplots(figsize=(5.2, 3.8))
    for tl, col in zip(tails, cols):
        ts, mean, tail, fit = np.asarray(tl["iteration"], float), np.asarray(tl["c1"], float), tl["tail"], tl["fit"]
        ax.plot(ts, mean, "-", color=col, lw=1)
        label = f"K = {tl['K']:g}"
        if fit is not None:
            ax.plot(ts[tail], fit.amplitude * ts[tail] ** fit.exponent, "--", color="k", lw=0.8)
            label += f": c1 ~ t^{fit.exponent:.2f}"
        ax.plot([], [], "-", color=col, label=label)
    _loglog(ax, "iteration", "c1", "residual error of the MLP alone (tails fitted)", 6)
    return fig


# ----------------------------------------------------------------------------- the scale ladder
class NothingToPlot(ValueError):
    """A figure's data has no value to draw; the message says which, in words."""


def _ladder_groups(rows: Sequence[Mapping], cols: tuple) -> dict:
    """The ladder's rows grouped by their ``group`` (order of first appearance), each sorted by N.

    Raises:
        NothingToPlot: no row has a finite value (the first of its [value, lo, hi]) in ``cols``."""
    if not any(np.isfinite(np.asarray(r.get(c, [np.nan]), float).ravel()[:1]).any() for r in rows for c in cols):
        raise NothingToPlot(f"nothing to plot: no (model, width, N) point has a {' or '.join(cols)} value (each is "
                            "below its check's minimum; the verdicts say what is missing)")
    out: dict = {}
    for r in rows:
        out.setdefault(r["group"], []).append(r)
    return {g: sorted(v, key=lambda r: r["N"]) for g, v in out.items()}


def _errorbar(ax, N, iv, fmt: str, color, label: str, shift: float = 1.0, **kw) -> None:
    """Points K (items) with their intervals [(K, lo, hi), ...] at N x ``shift``; rows without a
    finite K are left out (a one-sided bound has no point)."""
    N = np.asarray(N, float)
    iv = np.asarray(iv, float).reshape(-1, 3)
    ok = np.isfinite(iv[:, 0]) & np.isfinite(iv[:, 1]) & np.isfinite(iv[:, 2])
    if ok.any():
        k = iv[ok, 0]
        ax.errorbar(N[ok] * shift, k, yerr=[np.maximum(k - iv[ok, 1], 0), np.maximum(iv[ok, 2] - k, 0)], fmt=fmt,
                    color=color, label=label, capsize=2, **kw)


def ladder_k_star_figure(rows: Sequence[Mapping]) -> Figure:
    """The scale ladder: K* (items) against N (context tokens) on log-log axes, one colour per
    (model, width) group: measured at the relative horizon T(N) (filled, 95 % intervals), at
    the fixed horizon (open squares) and predicted from the transformer's in-situ c1 (crosses,
    slightly shifted right); guides of slope 1 (dotted) and 1/nu (dashed, nu from the MLP at
    the group's width) through the group's relative-horizon points.  ``rows`` (one per group
    and N, ``k_star_in_situ``'s figure data): ``group``, ``N``, ``k_rel``, ``k_fixed``,
    ``k_pred`` ([K*, lo, hi] each; NaN where not measured), ``inv_nu`` ([1/nu, lo, hi] or None).

    Raises:
        NothingToPlot: no row has a K* of any of the three kinds."""
    groups = _ladder_groups(rows, ("k_rel", "k_fixed", "k_pred"))
    fig, ax = _subplots(figsize=(5.6, 4.2))
    allN = [r["N"] for r in rows]
    for (g, rs), col in zip(groups.items(), _colors(len(groups))):
        N = [r["N"] for r in rs]
        _errorbar(ax, N, [r["k_rel"] for r in rs], "o-", col, f"{g}: K* at T = {rs[0].get('multiple', 3):g} x the "
                  "K = inf median onset")
        _errorbar(ax, N, [r["k_fixed"] for r in rs], "s", col, f"{g}: K* at the fixed horizon", shift=0.96,
                  mfc="none")
        _errorbar(ax, N, [r["k_pred"] for r in rs], "x", col, f"{g}: predicted from in-situ c1", shift=1.04)
        rel = np.array([r["k_rel"][0] for r in rs], float)
        ok = np.isfinite(rel)
        if ok.sum():
            n0, k0 = np.exp(np.mean(np.log(np.asarray(N)[ok]))), np.exp(np.mean(np.log(rel[ok])))
            nn = np.geomspace(min(N) * 0.85, max(N) * 1.15, 20)
            ax.plot(nn, k0 * (nn / n0), ":", color=col, lw=1)
            inv = next((r["inv_nu"] for r in rs if r.get("inv_nu")), None)
            if inv:
                ax.plot(nn, k0 * (nn / n0) ** inv[0], "--", color=col, lw=1, label=f"{g}: slope 1/nu = {inv[0]:.2f}")
    ax.plot([], [], ":", color="gray", label="slope 1")
    _loglog(ax, "N (context tokens)", "K* (items)", "diversity threshold against context length (scale ladder)", 6)
    _legend_outside(fig, ax, len(groups))
    _ticks_at(ax, allN)
    return fig


def _legend_outside(fig, ax, groups: int, size: int = 6) -> None:
    """With more than one group the legend goes beside the axes (it would cover the data),
    and the figure widens to make room."""
    if groups > 1:
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + 3.6, h)
        ax.legend(fontsize=size, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def drive_ratio_figure(rows: Sequence[Mapping]) -> Figure:
    """The scale ladder: the drive ratio at ICL onset against N (context tokens), one colour per
    (model, width) group: the median drive at onset lr int c1 dt of the finite-K seeds that
    acquired ICL over the K = inf median (filled, 95 % bootstrap intervals) and, where given,
    drive_at_onset's ratio at the K where every seed acquired (open squares, shifted right).  The
    theory's K-independent threshold is 1 (dashed), with drive_at_onset's tolerance x1.25 shaded.
    ``rows``: ``group``, ``N``, ``drive_ratio`` and optionally ``drive_ratio_all_k`` ([ratio, lo,
    hi]; NaN where not measured).

    Raises:
        NothingToPlot: no row has a drive ratio of either kind."""
    groups = _ladder_groups(rows, ("drive_ratio", "drive_ratio_all_k"))
    fig, ax = _subplots(figsize=(5.0, 3.8))
    ax.axhspan(1 / 1.25, 1.25, color="tab:gray", alpha=0.15, label="theory's tolerance (x1.25)")
    ax.axhline(1.0, color="k", ls="--", lw=1.2, label="theory: 1 (threshold independent of K)")
    vals = [1.0]
    for (g, rs), col in zip(groups.items(), _colors(len(groups))):
        N = [r["N"] for r in rs]
        _errorbar(ax, N, [r["drive_ratio"] for r in rs], "o-", col, f"{g}: all acquiring seeds")
        if any("drive_ratio_all_k" in r for r in rs):
            _errorbar(ax, N, [r.get("drive_ratio_all_k", [np.nan] * 3) for r in rs], "s", col,
                      f"{g}: at the K where every seed acquired", shift=1.04, mfc="none")
        vals += [v for r in rs for k in ("drive_ratio", "drive_ratio_all_k") for v in r.get(k, ())]
    v = np.asarray(vals, float)
    v = v[np.isfinite(v) & (v > 0)]
    ax.set_ylim(min(0.5, v.min() / 1.1), max(2.0, v.max() * 1.1))
    _loglog(ax, "N (context tokens)", "drive at onset / K = inf median", "the head's drive at ICL onset, finite K "
            "over K = inf", 6)
    _legend_outside(fig, ax, len(groups))
    _ticks_at(ax, [r["N"] for r in rows])
    ticks = [t for t in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0) if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    _ticks_at(ax, ticks, axis="y", most=len(ticks))
    return fig


def zipf_k_star_figure(panels: Sequence[Mapping]) -> Figure:
    """Zipf item frequencies on rung 2 (``validate.zipf.zipf_k_star``'s figure data, one entry
    per alpha at one N).  Left: K* (items) against the Zipf exponent alpha: predicted from the
    MLP's frequency-weighted c1 alone (grey bars, left of each alpha: 95 % over MLP seeds and
    tau* from c2 = 0 to 1/2) and measured from the head's escape (green points, right of each
    alpha: 95 % intervals widened to the K grid).  A bound beyond the K grid (K* above K_max
    or below K_min) is an arrow from the grid's end (the grid's ends are dotted).  Right: the
    MLP's I_K(T) (learning-rate time) against K per alpha (mean over seeds, 2.5-97.5 % range
    shaded), with the head's threshold N tau* (dashed, its c2 range shaded): K* is where each
    curve crosses it.  Each panel: ``alpha``, ``N``, ``predicted`` [lo, hi], ``measured``
    [K*, lo, hi], ``K_range`` [min, max], ``i_k`` {K, i_k, lo, hi}, ``threshold`` [N tau* low,
    high]."""
    from matplotlib.patches import Rectangle

    ps = sorted(panels, key=lambda p: p["alpha"])
    a = np.array([p["alpha"] for p in ps], float)
    kmin = min(p["K_range"][0] for p in ps)
    kmax = max(p["K_range"][1] for p in ps)
    fig, (ax, bx) = _subplots(1, 2, figsize=(10.0, 4.0))
    lo_edge, hi_edge = kmin / 3.0, kmax * 3.0  # where a bound beyond the grid ends
    da = 0.06 * max(float(np.ptp(a)), 0.5)  # the two markers' offset from each alpha
    arrow = {"arrowstyle": "->", "lw": 1.5}
    labels = set()

    def once(label):
        if label in labels:
            return None
        labels.add(label)
        return label

    def bound(x, lo, hi, color, label):
        """An arrow from the grid's end outwards: K* > lo (hi = inf) or K* < hi (lo = 0)."""
        up = hi == np.inf
        y0 = lo if up else hi
        ax.annotate("", xy=(x, hi_edge if up else lo_edge), xytext=(x, y0), arrowprops={**arrow, "color": color})
        ax.plot([x], [y0], "_", ms=12, mew=2, color=color, label=once(label))

    for x, p in zip(a, ps):
        lo, hi = (float(v) for v in p["predicted"])
        lab = "predicted from the MLP's c1 alone (95 %)"
        if hi == np.inf or lo == 0:
            bound(x - da, lo, hi, "tab:gray", lab + ": beyond the grid")
        elif np.isfinite(lo) and np.isfinite(hi):
            ax.add_patch(Rectangle((x - 1.6 * da, lo), 1.2 * da, hi - lo, color="tab:gray", alpha=0.5,
                                   label=once(lab)))
        k, mlo, mhi = (float(v) for v in p["measured"])
        if np.isfinite(k):
            ax.errorbar([x + da], [k], yerr=[[max(k - mlo, 0)], [max(mhi - k, 0)]], fmt="o", color="tab:green",
                        capsize=3, label=once("measured (head escaped), 95 %"))
        elif mhi == np.inf or mlo == 0:  # every seed escaped (K* < K_min) or none did (K* > K_max)
            bound(x + da, mlo, mhi, "tab:green", "measured: beyond the grid")
    for y in (kmin, kmax):
        ax.axhline(y, color="tab:gray", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_ylim(lo_edge / 1.2, hi_edge * 1.2)
    ax.set_xlim(a.min() - 0.5 * max(float(np.ptp(a)), 0.5) / 2, a.max() + 0.5 * max(float(np.ptp(a)), 0.5) / 2)
    ax.set_xticks(a)
    ax.set_xlabel("Zipf exponent alpha (item k drawn with p ~ (k + 1)^-alpha)")
    ax.set_ylabel("K* (items)")
    ax.set_title(f"K* against item-frequency skew, N = {ps[0]['N']:g} (dotted: the K grid)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    for p, col in zip(ps, _colors(len(ps))):
        ik = p["i_k"]
        K = np.asarray(ik["K"], float)
        bx.plot(K, ik["i_k"], "o-", color=col, ms=4, label=f"alpha = {p['alpha']:g}")
        bx.fill_between(K, ik["lo"], ik["hi"], color=col, alpha=0.2)
    th = ps[0]["threshold"]
    bx.axhspan(min(th), max(th), color="k", alpha=0.12)
    bx.axhline(float(np.sqrt(th[0] * th[1])), color="k", ls="--", lw=1.2, label="the head's threshold N tau*")
    _loglog(bx, "K (items)", "I_K(T) (learning-rate time)", "the MLP's frequency-weighted drive I_K(T)")
    _ticks_at(bx, np.concatenate([np.asarray(p["i_k"]["K"], float) for p in ps]))
    return fig
