"""Comparisons of the theory's predictions with trained models.

First comparison (rung 1 of the validation ladder): the minimal model without its
MLP (phi = 0), trained by SGD, against the theory's t_ICL.  The headline prediction is
the full flow (the exact data-averaged gradient flow, large D); the reduced ODEs (the
paper's Eq. 6) and their two closed-form regimes sit beside it, the reduced ODEs flagged
where they are outside their range, e^beta0 / sqrt(N) > 0.1
(:func:`icl_kinetics.theory.reduced_odes_in_range`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from icl_kinetics.errors import finite_float, positive_float, positive_int
from icl_kinetics.io import write_csv, write_json, atomic_write_text
from icl_kinetics.theory import (
    C2_DEFAULT, REDUCED_ODES_RANGE, T_ICL_THRESHOLD, icl_threshold_beta, reduced_odes_expansion, reduced_odes_in_range,
    solve_flow, t_icl,
)


def regime_of(beta0: float, c2: float = C2_DEFAULT) -> str:
    """Which closed form is within 5 % of the exact escape time (docs/theory.md §3):
    gamma = c2 e^-beta0 < 0.3 -> "signal", gamma > 10 -> "noise", else "crossover" (use the exact T*)."""
    g = c2 * math.exp(-beta0)
    return "signal" if g < 0.3 else ("noise" if g > 10.0 else "crossover")


def theory_onset(N: int, beta0: float, lr: float) -> dict:
    """The theory's t_ICL (iterations) for the minimal model without MLP, K -> infinity.

    ``full_flow`` (the headline prediction): the exact data-averaged gradient flow (large
    D), stopped where the large-D ICL accuracy reaches 0.95 (the simulation's criterion);
    ``exact``: the reduced ODEs (the paper's Eq. 6) with the context-label noise, stopped at
    the same accuracy; ``signal`` / ``noise``: their two closed-form regimes (blow-up
    times).  ``reduced_odes_expansion`` is e^beta0 / sqrt(N) and ``reduced_odes_in_range``
    whether it is at most :data:`~icl_kinetics.theory.REDUCED_ODES_RANGE` (outside it the
    reduced ODEs drift from the full flow: -22 % at N = 50, beta0 = 1).
    """
    bc = icl_threshold_beta(N)
    return {
        "theory_exact": float(t_icl(N, beta0, lr, beta_c=bc)),
        "theory_full_flow": solve_flow(N, beta0, lr, stage="full").t_icl,
        "theory_signal": float(t_icl(N, beta0, lr, regime="signal")),
        "theory_noise": float(t_icl(N, beta0, lr, regime="noise")),
        "regime": regime_of(beta0),
        "reduced_odes_expansion": reduced_odes_expansion(N, beta0),
        "reduced_odes_in_range": reduced_odes_in_range(N, beta0),
    }


def censored_median(t, cap=None):
    """Median of onset times (iterations) with never-acquired seeds (None/NaN) counted as +inf.

    Returns None when half or more of the seeds never acquired (the median is then
    only bounded below by the cap, and no number is claimed).  With an even number of
    acquired seeds this is numpy's median, the mean of the two middle times (the
    rung-1 tables in docs/results/compare.md are made with it); the Kaplan--Meier
    quantile of :func:`icl_kinetics.validate.fits.censored_quantile` is the *lower*
    median (an order statistic), which differs from it by up to half the gap between
    the two middle seeds, so it is not used here.
    """
    x = np.array([np.inf if (v is None or not np.isfinite(v)) else v for v in t], float)
    if np.sum(np.isfinite(x)) <= x.size / 2:
        return None
    return float(np.median(x))


def median_t_icl(t_icl, status) -> float | None:
    """Median t_ICL (iterations) over the seeds that did not diverge before acquiring, a seed
    that never acquired counted as +inf (:func:`censored_median`); None when half or more of
    them never acquired or no seed is left.  A diverged seed's onset is unknown, not
    censored, so it is left out rather than counted as +inf."""
    return censored_median([t for t, s in zip(t_icl, status) if not (s == "diverged" and t is None)])


def relative_error(measured, predicted, resolution: float):
    """(measured / predicted - 1, "") or (None, why) when it is undefined.

    A relative error needs a prediction that SGD's measurement can resolve: t_ICL is read
    off every ``resolution`` iterations (``eval_every``) and is at least one evaluation
    after iteration 0 (w starts at 0, where the accuracy is 0).  A predicted t_ICL below
    that grid (e.g. beta0 already past the ICL threshold, where the theory's t_ICL is ~0
    and a ratio explodes or divides by zero) is not compared: the point stays in the
    table, with the measurement and the prediction, but no error is claimed.  Refusing
    such grid points up front would throw away a legitimate measurement (ICL at once)."""
    if measured is None:
        return None, ""
    if predicted is None or not math.isfinite(predicted):
        return None, "no prediction"
    if predicted < resolution:
        return None, (f"predicted t_ICL {predicted:.3g} is below the evaluation grid ({resolution:g} iterations): "
                      "relative error undefined")
    return measured / predicted - 1, ""


#: the rung-1 runs' fixed settings (the minimal model without MLP, K -> infinity)
_RUNG1 = dict(model="minimal", width=0, K=None, D=63, batch_size=128, eval_size=2000, eval_every=10,
              early_stop=T_ICL_THRESHOLD, t_icl_threshold=T_ICL_THRESHOLD, log_every=100)


def _rung1_config(**kw):
    """The engine configuration of a rung-1 run.  Rows are logged every 100 iterations
    (as the former simulator did): rung 1 reads only t_ICL, but the memory check counts
    the rows, so a tiny lr (a huge cap) is refused up front."""
    from icl_kinetics.simulate import TrainConfig

    return TrainConfig(**_RUNG1, **kw)


def compare_minimal_onset(Ns=(50, 100, 200), beta0s=(-2.0, -1.0, 0.0, 1.0), lr: float = 0.1,
                          seeds: int = 8, seed: int = 0, out="out/compare", plot=None,
                          progress: bool = True, cap_factor: float = 4.0) -> dict:
    """Train the minimal model (no MLP, K -> infinity) for every N x beta0 and compare
    the median t_ICL with the theory.  Writes ``summary.csv``, ``seeds.csv``,
    ``table.md``, ``summary.json`` and a figure into ``out`` (atomic writes).

    Each N is one run of the engine (:func:`icl_kinetics.simulate.train`; the minimal
    model without MLP at K -> infinity, so the exact overlap sampler) with ``seeds``
    seeds per beta0, stopped at acquisition (``early_stop = t_icl_threshold = 0.95``,
    evaluation every 10 iterations on 2000 sequences, batch 128, D = 63); the iteration
    cap is ``cap_factor`` times the largest predicted t_ICL, so a seed that never
    acquires is reported as censored, never as the cap.  A seed whose training diverges
    (non-finite loss) is reported as diverged (``seeds.csv``'s ``status``, the rows'
    ``diverged``) and left out of the median: its onset is unknown, not censored.  A
    relative error is given only where the prediction is above the evaluation grid
    (:func:`relative_error`; the row's ``note`` says why not).

    Every parameter, the memory of each run, ``out`` and ``plot`` are checked before
    any computation (:class:`~icl_kinetics.errors.ParameterError` naming the parameter).
    """
    from icl_kinetics.io import FIGURE_SUFFIXES, check_output_dir, check_output_file
    from icl_kinetics.simulate import train

    Ns, beta0s, lr, seeds, seed, cap_factor = _checked_grid(Ns, beta0s, lr, seeds, seed, cap_factor)
    out = Path(check_output_dir("out", out))
    if plot is not None:
        check_output_file("plot", plot, FIGURE_SUFFIXES)
    t_start = time.perf_counter()
    betas = [float(b) for b in beta0s for _ in range(seeds)]
    plan = [_plan_one(N, beta0s, betas, lr, seed, cap_factor) for N in Ns]
    rows, seed_rows, theory_rows = [], [], []
    for N, preds, cap, cfg in plan:
        res = train(cfg, progress=progress)
        seed_rows += [{"N": N, "beta0": b, "seed": i, "t_icl": t, "max_iterations": cap, "status": st}
                      for i, (b, t, st) in enumerate(zip(betas, res.t_icl, res.status))]
        rows += [_summary_row(N, b, betas, res, preds[b], cap, seeds) for b in beta0s]
        theory_rows += _theory_curves(N, beta0s, lr)
    result = {"lr": lr, "seeds": seeds, "seed": seed, "N": list(Ns), "beta0": list(beta0s),
              "batch_size": _RUNG1["batch_size"], "D": _RUNG1["D"], "eval_size": _RUNG1["eval_size"],
              "eval_every": _RUNG1["eval_every"], "t_icl_threshold": T_ICL_THRESHOLD,
              "headline": "theory_full_flow", "reduced_odes_range": f"e^beta0 / sqrt(N) <= {REDUCED_ODES_RANGE:g}",
              "rows": rows, "wall_seconds": time.perf_counter() - t_start, "units": "iterations"}
    return _write_outputs(out, plot, result, seed_rows, theory_rows)


def _checked_grid(Ns, beta0s, lr, seeds, seed, cap_factor):
    """The arguments of :func:`compare_minimal_onset`, checked (and each N's run sized)
    before anything is written or computed."""
    from icl_kinetics.errors import ParameterError

    lr = positive_float("lr", lr)
    seeds = positive_int("seeds", seeds)
    seed = positive_int("seed", seed, 0)
    cap_factor = positive_float("cap_factor", cap_factor)
    Ns = [Ns] if isinstance(Ns, (int, float, np.integer)) else list(Ns)
    beta0s = [beta0s] if isinstance(beta0s, (int, float, np.floating)) else list(beta0s)
    if not Ns:
        raise ParameterError("N", Ns, "at least one value")
    if not beta0s:
        raise ParameterError("beta0", beta0s, "at least one value")
    Ns = [positive_int("N", N) for N in Ns]
    beta0s = [finite_float("beta0", b) for b in beta0s]
    for N in Ns:  # every size of each run, before anything is written or computed
        c = _rung1_config(N=N, beta0=0.0, lr=lr, seeds=seeds * len(beta0s), seed=seed + 1000 * N, iterations=1)
        c.validate()
        c.require_memory()
    return Ns, beta0s, lr, seeds, seed, cap_factor


def _plan_one(N: int, beta0s, betas, lr: float, seed: int, cap_factor: float):
    """(N, predictions per beta0, iteration cap, TrainConfig) of one N.  The theory comes
    first (seconds): it sets the cap, so the run's memory (its rows grow with the cap) is
    checked before anything trains."""
    from icl_kinetics.errors import ParameterError

    preds = {b: theory_onset(N, b, lr) for b in beta0s}
    cap = int(cap_factor * max(p["theory_exact"] for p in preds.values())) + 100
    cap = int(math.ceil(cap / 10.0) * 10)
    cfg = _rung1_config(N=N, beta0=tuple(betas), lr=lr, seeds=len(betas), seed=seed + 1000 * N, iterations=cap)
    try:
        cfg.validate()
        cfg.require_memory()
    except ParameterError as e:  # the cap is not the user's: name what sets it
        if e.name != "iterations":
            raise
        raise ParameterError("lr", lr, f"large enough that the iteration cap it implies at N = {N} "
                             f"({cap} = {cap_factor:g} x the predicted t_ICL) fits: {e.allowed}") from None
    return N, preds, cap, cfg


def _summary_row(N: int, b: float, betas, res, pred: dict, cap: int, seeds: int) -> dict:
    """One (N, beta0) row of ``summary.csv``: the measured median t_ICL (iterations; seeds
    that diverged before acquiring left out) against the predictions ``pred``."""
    ts = [t for bb, t in zip(betas, res.t_icl) if bb == b]
    sts = [st for bb, st in zip(betas, res.status) if bb == b]
    div = [st == "diverged" and t is None for t, st in zip(ts, sts)]
    med = median_t_icl(ts, sts)
    err, note = relative_error(med, pred["theory_exact"], _RUNG1["eval_every"])
    err_flow, note_flow = relative_error(med, pred["theory_full_flow"], _RUNG1["eval_every"])
    notes = [f"{name}: {n}" for name, n in (("reduced ODEs", note), ("full flow", note_flow)) if n]
    if any(div):
        notes.insert(0, f"{sum(div)} of {seeds} seeds diverged (non-finite training loss) and are left out of "
                     "the median")
    return {"N": N, "beta0": float(b), "seeds": seeds, "acquired": int(sum(t is not None for t in ts)),
            "max_iterations": cap, "median_t_icl": med, **pred, "rel_err_exact": err,
            "rel_err_full_flow": err_flow, "diverged": int(sum(div)), "note": "; ".join(notes)}


def _theory_curves(N: int, beta0s, lr: float) -> list:
    """Tidy rows of the predicted t_ICL (iterations) against beta0 for the figure: the full flow
    (the headline; 25 points, each a numeric flow) and the reduced ODEs and their closed forms
    (60 points), each row with ``in_range`` (:func:`~icl_kinetics.theory.reduced_odes_in_range`)."""
    lo, hi = min(beta0s) - 0.4, max(beta0s) + 0.4
    rows = []
    for b in np.linspace(lo, hi, 25):
        rows.append({"N": N, "beta0": float(b), "t_icl": float(solve_flow(N, float(b), lr, stage="full").t_icl),
                     "model": "full flow", "in_range": True})
    grid = np.linspace(lo, hi, 60)
    ok = reduced_odes_in_range(np.full(grid.size, N), grid)
    for model, kw in (("reduced ODEs", {"beta_c": icl_threshold_beta(N)}), ("signal", {"regime": "signal"}),
                      ("noise", {"regime": "noise"})):
        rows += [{"N": N, "beta0": float(b), "t_icl": float(t), "model": model, "in_range": bool(k)}
                 for b, t, k in zip(grid, t_icl(N, grid, lr, **kw), ok)]
    return rows


def _write_outputs(out: Path, plot, result: dict, seed_rows: list, theory_rows: list) -> dict:
    """Write summary.csv, seeds.csv, table.md, the figure and summary.json (atomically)."""
    from icl_kinetics.validate.figures import onset_comparison_figure, save

    out.mkdir(parents=True, exist_ok=True)
    result["table_csv"] = write_csv(out / "summary.csv", result["rows"])
    write_csv(out / "seeds.csv", seed_rows)
    atomic_write_text(out / "table.md", format_onset_table(result["rows"]) + "\n")
    # diverged seeds have no onset to draw (the figure would show them as censored at the cap);
    # an N whose seeds all diverged keeps its panel (theory only) through a row drawn nowhere
    drawn = [r for r in seed_rows if r["status"] != "diverged"]
    drawn += [{"N": N, "beta0": float(result["beta0"][0]), "seed": -1, "t_icl": math.nan,
               "max_iterations": math.nan, "status": "diverged"}
              for N in result["N"] if not any(r["N"] == N for r in drawn)]
    title = (f"minimal model, no MLP, K = inf: lr = {result['lr']:g}, {result['seeds']} seeds per beta0, "
             f"D = {result['D']}, batch {result['batch_size']}, t_ICL at ICL accuracy {result['t_icl_threshold']:g}")
    result["plot"] = save(onset_comparison_figure(drawn, theory_rows, title=title, reduced_range=REDUCED_ODES_RANGE),
                          plot or out / "onset_vs_theory.png")
    write_json(out / "summary.json", result)
    return result


def format_onset_table(rows, closed_forms: bool = True) -> str:
    """Markdown table of measured vs predicted median t_ICL: the full flow (the headline) first,
    then the reduced ODEs with their range flag (rows made before the flag existed get it from
    N and beta0), and (``closed_forms``) their closed-form regimes: the signal and noise
    formulas and which of them holds.  ``closed_forms=False``: the demo's shorter table."""
    def f(v, fmt="{:.0f}"):
        return "n/a" if v is None else fmt.format(v)

    head = ["N", "beta0", "acquired", "median t_ICL (SGD)", "theory: full flow", "rel. err", "reduced ODEs",
            "rel. err", "reduced ODEs in range?"] + (["signal formula", "noise formula", "regime"] if closed_forms
                                                     else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for r in rows:
        acq = f"{r['acquired']}/{r['seeds']}" + (f" ({r['diverged']} diverged)" if r.get("diverged") else "")
        x = reduced_odes_expansion(r["N"], r["beta0"])
        rng = "yes" if reduced_odes_in_range(r["N"], r["beta0"]) else f"NO: e^beta0/sqrt(N) = {x:.2f}"
        cells = [str(r["N"]), f"{r['beta0']:g}", acq, f(r["median_t_icl"]), f(r["theory_full_flow"]),
                 f(r.get("rel_err_full_flow"), "{:+.1%}"), f(r["theory_exact"]), f(r["rel_err_exact"], "{:+.1%}"), rng]
        if closed_forms:
            cells += [f(r["theory_signal"]), f(r["theory_noise"]), r["regime"]]
        lines.append("| " + " | ".join(cells) + " |")
        if r.get("note"):
            notes.append(f"- N = {r['N']}, beta0 = {r['beta0']:g}: {r['note']}")
    lines += ["", f"Headline: the full flow (exact data-averaged gradient flow, large D).  Reduced ODEs: the "
              f"paper's Eq. 6, leading order in e^beta / N, in range where e^beta0 / sqrt(N) <= "
              f"{REDUCED_ODES_RANGE:g}; outside it they drift from the full flow (docs/theory.md section 2)."]
    return "\n".join(lines + ([""] + notes if notes else []))
