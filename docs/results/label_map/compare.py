"""fig6c (small: N = 19, K = 2048, width 128, lr 0.05, 6000 iterations, 32 seeds) with one
label map shared by every seed against a label map per seed, the same seeds (so the same
initializations and data streams; only the item -> label assignment differs).

    python docs/results/label_map/compare.py docs/results/label_map/tables/fig6c_shared.csv.gz \
        docs/results/label_map/tables/fig6c_per_seed.csv.gz docs/results/label_map/final_icl_acc.png

The tables come from `icl-kinetics sweep run fig6c --scale small` and `icl-kinetics sweep run
--spec docs/results/label_map/fig6c_per_seed.toml --scale small` (then `sweep collect`).
"""
import sys

import numpy as np
from scipy import stats

from icl_kinetics.validate import read_table
from icl_kinetics.validate.core import seed_summaries
from icl_kinetics.validate.fits import bimodality_coefficient


def acquired(s) -> bool:
    return s.t_icl is not None and bool(np.isfinite(s.t_icl))


def figure(runs: dict):
    """Histograms of the final ICL accuracy, one panel per label-map mode."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    bins = np.linspace(0.4, 1.0, 25)
    for ax, (name, ss) in zip(axes, runs.items()):
        x = [s.final_icl_acc for s in ss.values()]
        k = sum(acquired(s) for s in ss.values())
        ax.hist(x, bins=bins, color="tab:green" if name == "per-seed" else "tab:blue")
        ax.set_title(f"label map {name}: {k}/{len(x)} acquired")
        ax.set_xlabel("final ICL accuracy")
    axes[0].set_ylabel("seeds")
    fig.suptitle("fig6c small (N = 19, K = 2048, width 128, lr 0.05, 6000 iterations), the same 32 seeds")
    return fig


def main(shared_path: str, per_seed_path: str, png: str | None = None) -> None:
    runs = {}
    for name, path in (("shared", shared_path), ("per-seed", per_seed_path)):
        ss = {s.seed: s for s in seed_summaries(read_table(path))}
        runs[name] = ss
        final = np.array([s.final_icl_acc for s in ss.values()])
        k, n = sum(acquired(s) for s in ss.values()), len(ss)
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        t = [s.t_icl for s in ss.values() if acquired(s)]
        print(f"{name:8s}: P(ICL) = {k}/{n} = {k / n:.2f} [{ci.low:.2f}, {ci.high:.2f}] (Wilson 95%); "
              f"bimodality coefficient {bimodality_coefficient(final):.2f}; "
              f"median t_ICL of the acquiring seeds {np.median(t):.0f} iterations")
    a, b = runs["shared"], runs["per-seed"]
    seeds = sorted(set(a) & set(b))
    both = sum(acquired(a[s]) and acquired(b[s]) for s in seeds)
    only_a = sum(acquired(a[s]) and not acquired(b[s]) for s in seeds)
    only_b = sum(acquired(b[s]) and not acquired(a[s]) for s in seeds)
    p = stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    print(f"paired by seed ({len(seeds)}): both acquire {both}, only with the shared map {only_a}, only with "
          f"its own map {only_b}; McNemar exact p = {p:.2f}")
    ks = stats.ks_2samp([a[s].final_icl_acc for s in seeds], [b[s].final_icl_acc for s in seeds])
    kt = stats.ks_2samp([a[s].t_icl for s in seeds if acquired(a[s])], [b[s].t_icl for s in seeds if acquired(b[s])])
    print(f"two-sample KS: final ICL accuracy D = {ks.statistic:.3f}, p = {ks.pvalue:.2f}; "
          f"t_ICL of the acquiring seeds D = {kt.statistic:.3f}, p = {kt.pvalue:.2f}")
    if png:
        figure(runs).savefig(png, dpi=110)




if __name__ == "__main__":
    main(*sys.argv[1:4])
