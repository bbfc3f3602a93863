"""The main job (``icl-kinetics demo``): the theory's headline predictions on an
embedded default, plus a quick theory-vs-SGD check on the minimal model.

Embedded default (paper scale where the paper fixes it):

* K*(N) for N in {50, 100, 150, 200, 250} (the paper's Fig. 6a grid), nu = 0.7 and
  amplitude A = 0.2 (learning-rate time) -- an illustrative A chosen so that
  K*(N = 100, beta0 = 0) ~ 10^4, the scale the paper's Fig. 2b/6c suggest; the
  validation layer measures A and nu for a real MLP;
* t_ICL distributions for the same N at the paper's lr = 0.01 with beta0 ~ N(0, 1)
  (the minimal model's initialization);
* P(ICL | K) at N = 100 (the bimodality);
* a quick SGD check: the minimal model without MLP at N = 50, beta0 in {0, 1},
  8 seeds each, against the theory's t_ICL.  The headline prediction is the **full flow**
  (the exact data-averaged gradient flow, :func:`icl_kinetics.theory.solve_flow`); the
  reduced ODEs (the paper's Eq. 6, "reduced ODEs" column) sit beside it, flagged where
  they are outside their range: they are leading order in e^beta / N and their error
  grows like e^beta0 / sqrt(N) (docs/theory.md section 2: -6 % at e^beta0 / sqrt(N) = 0.1,
  -22 % at N = 50, beta0 = 1), so a row with e^beta0 / sqrt(N) >
  :data:`~icl_kinetics.theory.REDUCED_ODES_RANGE` is flagged (the theory's one definition:
  :func:`icl_kinetics.theory.reduced_odes_in_range`).  The table is ``compare``'s
  (:func:`icl_kinetics.validate.compare.format_onset_table`) without its closed-form columns.

c2 is the theory's one default, 1/2 (:data:`icl_kinetics.theory.C2_DEFAULT`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icl_kinetics.io import write_json
from icl_kinetics.theory import C2_DEFAULT, REDUCED_ODES_RANGE, OnsetDistribution, k_star, p_icl, reduced_odes_in_range
from icl_kinetics.validate.compare import compare_minimal_onset, format_onset_table

DEFAULT = {"N": [50, 100, 150, 200, 250], "nu": 0.7, "amplitude": 0.2, "beta0": 0.0,
           "lr": 0.01, "beta0_mean": 0.0, "beta0_std": 1.0, "samples": 100_000, "c2": C2_DEFAULT}


def run_demo(out="out/demo", simulate: bool = True, progress: bool = True) -> dict:
    """Compute, plot and save the headline predictions; returns a summary dict."""
    from icl_kinetics.validate.figures import k_star_figure, onset_figure, save

    d = DEFAULT
    out = Path(out)
    Ns = np.array(d["N"])
    ks = k_star(Ns, d["beta0"], d["amplitude"], d["nu"], c2=d["c2"])
    slope = float(np.polyfit(np.log(Ns), np.log(ks), 1)[0])
    res = {"default": d, "k_star": dict(zip(map(str, d["N"]), ks.tolist())), "k_star_slope": slope}
    res["k_star_plot"] = save(k_star_figure({"N": Ns, "k_star": ks}, nu=d["nu"], amplitude=d["amplitude"],
                                            beta0=d["beta0"], c2=d["c2"]), out / "k_star.png")

    samples, curves, med = [], [], {}
    for N in d["N"]:
        dist = OnsetDistribution(N=N, lr=d["lr"], beta0_mean=d["beta0_mean"], beta0_std=d["beta0_std"])
        x = dist.sample(d["samples"], seed=N)
        med[str(N)] = {"median": float(np.median(x)), "q05": float(np.quantile(x, 0.05)),
                       "q95": float(np.quantile(x, 0.95))}
        samples.extend({"N": N, "t_icl": t} for t in x[:20000])
        tt = np.geomspace(dist.quantile(0.001), dist.quantile(0.999), 200)
        curves.extend({"N": N, "t_icl": t, "density": v * t * np.log(10)} for t, v in zip(tt, dist.pdf(tt)))
    res["t_icl"] = med
    title = f"K = inf, lr = {d['lr']:g}, beta0 ~ N({d['beta0_mean']:g}, {d['beta0_std']:g}^2), c2 = {d['c2']:g}"
    res["onset_plot"] = save(onset_figure(samples, curves, title=title), out / "onset.png")

    K = np.geomspace(2e3, 5e4, 9)
    res["p_icl_N100"] = {f"{k:.0f}": float(p_icl(d["amplitude"] * k ** d["nu"], 100, d["beta0_mean"],
                                                   d["beta0_std"], c2=d["c2"])) for k in K}
    if simulate:
        cmp = compare_minimal_onset(Ns=(50,), beta0s=(0.0, 1.0), lr=0.1, seeds=8, out=out / "compare",
                                    progress=progress)
        res["sgd_check"] = {"rows": cmp["rows"], "plot": cmp["plot"], "wall_seconds": cmp["wall_seconds"],
                            "headline": "theory_full_flow",
                            "reduced_range": f"e^beta0 / sqrt(N) <= {REDUCED_ODES_RANGE:g}",
                            "reduced_in_range": [reduced_odes_in_range(r["N"], r["beta0"]) for r in cmp["rows"]]}
    res["summary_json"] = write_json(out / "summary.json", res)
    return res


def format_demo(r: dict) -> str:
    """Human-readable summary of :func:`run_demo`'s result."""
    d = r["default"]
    lines = [f"Diversity threshold K* (I_K(inf) = {d['amplitude']} K^{d['nu']}, beta0 = {d['beta0']}, "
             f"c2 = {d['c2']}):"]
    lines += [f"  N = {n:>4}: K* = {k:10.0f}" for n, k in r["k_star"].items()]
    lines.append(f"  log-log slope {r['k_star_slope']:.3f} (= 1/nu = {1 / d['nu']:.3f})")
    lines.append(f"\nICL onset t_ICL (iterations), lr = {d['lr']}, beta0 ~ N({d['beta0_mean']}, "
                 f"{d['beta0_std']}^2):")
    lines += [f"  N = {n:>4}: median {v['median']:9.0f}   5%-95%: {v['q05']:8.0f} - {v['q95']:9.0f}"
              for n, v in r["t_icl"].items()]
    lines.append("\nP(ICL | K) at N = 100 (bimodality: fraction of seeds that acquire ICL):")
    lines.append("  " + "  ".join(f"K={k}: {p:.2f}" for k, p in r["p_icl_N100"].items()))
    if "sgd_check" in r:
        lines.append("\nQuick check, minimal-model SGD (no MLP, K -> inf, lr 0.1, 8 seeds) vs theory:")
        lines.append(format_onset_table(r["sgd_check"]["rows"], closed_forms=False))
    lines.append(f"\nFigures: {r['k_star_plot']}, {r['onset_plot']}"
                 + (f", {r['sgd_check']['plot']}" if "sgd_check" in r else ""))
    lines.append(f"Summary: {r['summary_json']}")
    return "\n".join(lines)
