"""Zipf item frequencies on rung 2: K*(alpha) predicted from the memorizing MLP's c1 alone,
then measured on the minimal model with that MLP (docs/validation.md, "Zipf item frequencies
(rung 2)"; the preset ``zipf_rung2``).

Training items are drawn with probability f_k ~ (k + 1)^-alpha (item index k, alpha = 0:
uniform).  The head's drive is the MLP's residual error on the targets it actually sees, so
the c1 that enters the theory is the expectation over the data distribution,
c1 = sum_k f_k sigma(-phi_plus(x_k)): the engine logs exactly that (its memorization probe's
coefficients are weighted by f, renormalized over the probed items; at alpha = 0 the plain
mean, bit for bit).  Everything below then applies the rung-2 rule of
:func:`icl_kinetics.validate.k_star.k_star_from_c1` per alpha, unchanged:

* **predicted** K*(alpha): where the MLP's I_K(T) = lr * integral_0^T c1 dt (learning-rate
  time; T the runs' length in iterations), interpolated in log-log between the measured K,
  crosses N tau*(beta0), with tau* bracketed between c2 = 0 and c2 = 1/2.  Its 95 % interval
  adds the seeds: a seeded bootstrap over the MLP seeds at each K (:data:`N_BOOT` resamples,
  seed 0).  An N tau* above every measured I_K(T) predicts K* above the grid (an interval
  ``[K_max, inf)``), one below every I_K(T) predicts K* below it (``(0, K_min]``).
* **measured** K*(alpha): the midpoint of a sigmoid fit of "the head escaped" (w > 0 and
  beta > beta_c(N) at the last evaluation) against log10 K, its bootstrap CI widened to the
  neighbouring K of the grid; when every seed at every K escaped, K* < K_min, when none did,
  K* > K_max.
* **verdict** per alpha, the rule of ``k_star_from_c1``: "holds" when the predicted and the
  measured intervals overlap; "does not hold" when the prediction misses the measured interval
  widened by one more K grid step on each side (K* is resolved only to the grid, so a miss by
  less than one step is no evidence); "inconclusive" between the two, and below the minimums
  (MLP runs at >= ``MIN_MLP_K`` K; minimal-model runs at >= ``MIN_K_PER_N`` K and
  >= ``MIN_KSTAR_OBS`` seeds x K, :mod:`~icl_kinetics.validate.requirements`).

What c1 alone leaves out (reported, not corrected): the context items follow the same Zipf
distribution, so a frequent target item sits in the context several times
(:func:`target_copies`), and its copies all point to the right label.  The reduced theory's
head sees one copy of the target among N tokens; m copies multiply the head's signal on that
sequence by about m.  But the repeated items are the frequent ones, whose residual the MLP
removes first, so the drive that counts is per item, sum_k f_k m_k c1_k, which the tables do
not hold.  ``predicted_with_copies`` (in the details) is a crude bound that multiplies I_K(T)
by the mean copies relative to alpha = 0; on the zipf_rung2 runs it is far too optimistic
(docs/validation.md, "Zipf item frequencies (rung 2)").
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from icl_kinetics.validate.core import SeedSummary, Verdict, i_k, number, seed_summaries
from icl_kinetics.validate.k_star import widened_interval

#: the preset this check reads (``icl-kinetics validate --preset zipf_rung2``)
ZIPF_PRESET = "zipf_rung2"
#: bootstrap resamples of the MLP seeds for the predicted K*'s interval
N_BOOT = 1000
#: Monte Carlo sequences per (N, K, alpha) for the copies of the target in the context (seed 0)
COPIES_SEQUENCES = 4000

__all__ = ["N_BOOT", "ZIPF_PRESET", "alpha_of", "predicted_k_star", "target_copies", "zipf_i_k",
           "zipf_k_star", "zipf_weights"]


def zipf_weights(K: int, alpha: float) -> np.ndarray:
    """The item distribution of the data generator (``simulate.data``), f_k ~ (k + 1)^-alpha
    over item indices k = 0 .. K - 1, normalized (dimensionless)."""
    from icl_kinetics.errors import positive_float, positive_int

    K = positive_int("K", K, 1)
    alpha = positive_float("alpha", alpha, allow_zero=True)
    from icl_kinetics.simulate.data import zipf_weights as weights

    w = weights(K, alpha)
    return np.full(K, 1.0 / K) if w is None else (w / w.sum()).numpy()


def target_copies(N: int, K: int, alpha: float, sequences: int = 20000, seed: int = 0) -> float:
    """Mean number of copies of the target's item among the N context items of a training
    sequence (iid contexts, as ``simulate.data.SequenceSampler`` draws them: context items
    and a target i.i.d. from f, the target replaced by a uniformly chosen context item when
    its item is absent), by Monte Carlo over ``sequences`` sequences drawn from ``seed``.
    About 1 + N / K at alpha = 0 and large K; grows with alpha (frequent items repeat)."""
    from icl_kinetics.errors import positive_int

    N = positive_int("N", N, 1)
    sequences = positive_int("sequences", sequences, 1)
    f = zipf_weights(K, alpha)
    rng = np.random.default_rng(positive_int("seed", seed, 0))
    ctx = rng.choice(K, size=(sequences, N), p=f)
    tgt = rng.choice(K, size=sequences, p=f)
    present = (ctx == tgt[:, None]).any(1)
    pick = ctx[np.arange(sequences), rng.integers(0, N, sequences)]
    tgt = np.where(present, tgt, pick)
    return float((ctx == tgt[:, None]).sum(1).mean())


def alpha_of(seed: SeedSummary) -> float:
    """The seed's Zipf exponent: its rows' ``zipf_alpha`` column (0 where the table lacks it
    or leaves it empty: uniform items)."""
    v = number(seed.rows[0].get("zipf_alpha")) if seed.rows else math.nan
    return 0.0 if math.isnan(v) else float(v)


def zipf_i_k(seeds: list[SeedSummary]) -> dict:
    """Per K (items): each standalone-MLP seed's I_K(T) (learning-rate time, from its logged
    c1, the frequency-weighted one under Zipf), their mean and the 2.5-97.5 % range over
    seeds.  ``seeds``: the MLP seeds of one alpha.  Returns {"K": [...], "i_k": [...],
    "per_seed": [[...], ...], "lo": [...], "hi": [...], "T": [...]} (K increasing)."""
    byk = defaultdict(list)
    for s in seeds:
        if s.model == "mlp" and s.finite_k and np.isfinite(s.lr):
            byk[s.K].append(s)
    Ks = sorted(byk)
    per = [[i_k(s) for s in byk[k]] for k in Ks]
    return {"K": Ks, "i_k": [float(np.nanmean(v)) for v in per], "per_seed": per,
            "lo": [float(np.nanpercentile(v, 2.5)) for v in per], "hi": [float(np.nanpercentile(v, 97.5)) for v in per],
            "T": [float(max(s.cap for s in byk[k])) for k in Ks]}


def _crossing(Ks, ik, target: float) -> float:
    """The K (items) where I_K(T), interpolated in log-log, reaches ``target``: inf above every
    measured I_K(T), 0 below every one (the K grid's ends bound it)."""
    lk, li = np.log(np.asarray(Ks, float)), np.log(np.maximum(np.asarray(ik, float), 1e-300))
    t = math.log(target)
    if t > li.max():
        return math.inf
    if t < li.min():
        return 0.0
    order = np.argsort(li, kind="stable")
    return float(np.exp(np.interp(t, li[order], lk[order])))


def predicted_k_star(ik: dict, N: float, beta0: float = 0.0, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """K* (items) predicted from the MLP's I_K(T) alone, the rule of ``k_star_from_c1``: where
    the mean I_K(T) over seeds crosses N tau*, tau* = ``theory.escape_time(beta0, c2)`` for
    c2 = 0 and c2 = 1/2.  ``ik``: :func:`zipf_i_k`'s table.  The interval: the 2.5 % point of
    the lower crossing and the 97.5 % point of the upper one over a bootstrap of the seeds at
    each K (``n_boot`` resamples from ``seed``; with one seed per K it is the point range).
    A crossing above the measured I_K(T) is inf (K* above the grid), below it 0; the interval is
    then bounded by the grid's end, [K_max, inf) or (0, K_min].

    Returns {"tau_star": [lo, hi], "point": [K* at each tau*], "lo", "hi", "K_range": [min K,
    max K]}."""
    from icl_kinetics.theory import C2_DEFAULT, escape_time

    taus = sorted([float(escape_time(beta0, c2=0.0)), float(escape_time(beta0, c2=C2_DEFAULT))])
    Ks = ik["K"]
    point = [_crossing(Ks, ik["i_k"], N * tau) for tau in taus]
    rng = np.random.default_rng(seed)
    per = [np.asarray(v, float) for v in ik["per_seed"]]
    boot = np.empty((n_boot, len(taus)))
    for b in range(n_boot):
        means = [float(np.nanmean(v[rng.integers(0, v.size, v.size)])) for v in per]
        boot[b] = [_crossing(Ks, means, N * tau) for tau in taus]
    with np.errstate(invalid="ignore"):
        lo = float(np.percentile(boot.min(1), 2.5, method="lower"))
        hi = float(np.percentile(boot.max(1), 97.5, method="higher"))
    lo, hi = min(lo, min(point)), max(hi, max(point))
    # a crossing beyond the grid bounds K* by the grid's end: [K_max, inf) or (0, K_min]
    lo, hi = (float(max(Ks)) if lo == math.inf else lo), (float(min(Ks)) if hi == 0.0 else hi)
    return {"tau_star": taus, "point": point, "lo": lo, "hi": hi, "K_range": [float(min(Ks)), float(max(Ks))]}


def _measured(sn: list[SeedSummary], n_boot: int = 200) -> dict:
    """K* (items) measured from the head's escape of the minimal model's seeds at one alpha:
    a sigmoid fit against log10 K with its interval widened to the grid, or a bound when every
    seed (or none) escaped."""
    from icl_kinetics.validate.k_star import fit_k_star, measured_k_star_interval

    Ks = sorted({s.K for s in sn})
    esc = [float(s.head_escaped()) for s in sn]
    frac = {k: float(np.mean([e for s, e in zip(sn, esc) if s.K == k])) for k in Ks}
    out = {"escaped_by_k": frac, "seeds": [(s.K, e) for s, e in zip(sn, esc)], "fit": None,
           "acc_by_k": {k: float(np.mean([s.final_icl_acc for s in sn if s.K == k])) for k in Ks}}
    if all(v == 1.0 for v in frac.values()):
        return {**out, "k_star": math.nan, "lo": 0.0, "hi": float(Ks[0]), "why": f"every seed escaped at every K "
                f"(K* < {Ks[0]:g})"}
    if all(v == 0.0 for v in frac.values()):
        return {**out, "k_star": math.nan, "lo": float(Ks[-1]), "hi": math.inf, "why": f"no seed escaped at any K "
                f"(K* > {Ks[-1]:g})"}
    fit = fit_k_star([math.log10(s.K) for s in sn], esc, n_boot=n_boot)
    lo, hi = measured_k_star_interval(fit, [s.K for s in sn])
    return {**out, "k_star": float(fit.k_star), "lo": lo, "hi": hi, "fit": fit.to_dict(),
            "why": fit.reason or ""}


def _fmt_interval(lo: float, hi: float) -> str:
    if hi == math.inf:
        return f"> {lo:.0f}"
    if lo == 0.0:
        return f"< {hi:.0f}"
    return f"[{lo:.0f}, {hi:.0f}]"


def _needs(mlp: list, sn: list) -> list:
    from icl_kinetics.validate.requirements import MIN_K_PER_N, MIN_KSTAR_OBS, MIN_MLP_K

    lacks = []
    nk = len({s.K for s in mlp})
    if nk < MIN_MLP_K:
        lacks.append(f"MLP runs with c1 at >= {MIN_MLP_K} K (has {nk})")
    nm = len({s.K for s in sn})
    if nm < MIN_K_PER_N:
        lacks.append(f"minimal-model runs at >= {MIN_K_PER_N} finite K (has {nm})")
    if len(sn) < MIN_KSTAR_OBS:
        lacks.append(f">= {MIN_KSTAR_OBS} minimal-model seeds x K for the bootstrap (has {len(sn)})")
    return lacks


def zipf_k_star(table, model: str = "minimal", n_boot: int = N_BOOT, fit_boot: int = 200) -> list[Verdict]:
    """Zipf on rung 2: per alpha (the ``zipf_alpha`` column; absent = 0), K* predicted from the
    standalone MLP's (frequency-weighted) c1 alone against K* measured on the minimal model
    with that MLP, with a verdict (the module docstring states the rule).  One verdict per
    (alpha, N) that has minimal-model runs; each carries ``figure_data`` for
    :func:`icl_kinetics.validate.figures.zipf_k_star_figure`.  Below the minimums the verdict
    is "inconclusive: needs ..."; a table without MLP or minimal-model runs gives one
    "skipped" verdict.  ``n_boot``: bootstrap resamples of the MLP seeds (the prediction's
    interval); ``fit_boot``: of the sigmoid fit (the measured K*'s, as ``k_star_from_c1``)."""
    name, rung = "zipf_k_star", "minimal model + MLP, Zipf"
    seeds = seed_summaries(table)
    mlp = defaultdict(list)
    icl = defaultdict(list)
    for s in seeds:
        a = alpha_of(s)
        if s.model == "mlp" and s.finite_k and "c1" in s.rows[0]:
            mlp[a].append(s)
        elif s.model == model and s.finite_k:
            icl[(a, s.N)].append(s)
    if not mlp or not icl:
        return [Verdict.skipped(name, rung, f"needs standalone-MLP runs (model = mlp, with c1 and lr) and runs of "
                                f"model '{model}' at finite K, with a zipf_alpha column (absent: alpha = 0)")]
    out = []
    base = {}
    for (a, N) in sorted(icl):
        sn = icl[(a, N)]
        where = f"{rung}, alpha = {a:g}, N = {N:g}"
        lacks = _needs(mlp.get(a, []), sn)
        if lacks:
            out.append(Verdict(prediction=name, rung=where, verdict="inconclusive",
                               reason="needs " + "; ".join(lacks) + " (the minimums of k_star_from_c1; "
                               "docs/validation.md, \"Zipf item frequencies (rung 2)\")",
                               details={"alpha": a, "N": N}))
            continue
        b0 = float(np.nanmean([s.beta0 for s in sn])) if any(np.isfinite(s.beta0) for s in sn) else 0.0
        ik = zipf_i_k(mlp[a])
        pred = predicted_k_star(ik, N, b0, n_boot=n_boot)
        meas = _measured(sn, fit_boot)
        grid = sorted({s.K for s in sn})
        lo_p, hi_p, mlo, mhi = pred["lo"], pred["hi"], meas["lo"], meas["hi"]
        overlap = lo_p <= mhi and hi_p >= mlo
        if np.isnan(mlo) or np.isnan(mhi):
            wlo = whi = math.nan
            verdict, why = "inconclusive", f"no K* measured: {meas['why']}"
        else:  # a bound (0 or inf) stays a bound when widened
            wlo, whi = widened_interval(mlo, mhi, grid)
            far = hi_p < wlo or lo_p > whi
            verdict = "holds" if overlap else ("does not hold" if far else "inconclusive")
            why = (f"predicted from the MLP's c1 alone: K* {_fmt_interval(lo_p, hi_p)} (tau* from c2 = 0 to 1/2, "
                   f"beta0 = {b0:.2f}, 95 % over {len(ik['per_seed'][0])} MLP seeds per K); measured from the head's "
                   f"escape: " + (f"{meas['k_star']:.0f} " if np.isfinite(meas["k_star"]) else "")
                   + f"{_fmt_interval(mlo, mhi)}" + (f" ({meas['why']})" if meas["why"] else "")
                   + f": the intervals {'overlap' if overlap else 'do not overlap'}"
                   + ("" if overlap else f", and the prediction {'misses' if far else 'lies within'} the measured "
                      f"interval widened by one K grid step ({_fmt_interval(wlo, whi)}; does not hold only beyond it)"))
        # what c1 alone leaves out: copies of the target in the context, relative to alpha = 0.  A
        # heuristic beside the verdict (the head's signal taken as proportional to the mean copies,
        # times the weighted c1): it over-counts, since the repeated items are the frequent ones,
        # which the MLP memorizes first; the right weight is per item (sum_k f_k m_k c1_k), which
        # needs per-item residuals the tables do not hold
        copies = [target_copies(int(N), int(k), a, sequences=COPIES_SEQUENCES) for k in ik["K"]]
        rel = [m / target_copies(int(N), int(k), 0.0, sequences=COPIES_SEQUENCES) for m, k in zip(copies, ik["K"])]
        adj = [_crossing(ik["K"], [x * r for x, r in zip(ik["i_k"], rel)], N * t) for t in pred["tau_star"]]
        details = {"alpha": a, "N": N, "beta0": b0, "predicted": pred, "measured": {k: v for k, v in meas.items()
                   if k != "seeds"}, "i_k": ik, "widened": [wlo, whi],
                   "target_copies": {"K": ik["K"], "copies": copies, "relative_to_alpha0": rel},
                   "predicted_with_copies": adj}
        base.setdefault(N, {})[a] = (pred, meas)
        out.append(Verdict(
            prediction=name, rung=where, predicted=_fmt_interval(lo_p, hi_p),
            measured=(f"{meas['k_star']:.0f} " if np.isfinite(meas["k_star"]) else "") + _fmt_interval(mlo, mhi),
            metric="interval overlap (predicted: 95 % over MLP seeds and tau*; measured: 95 % bootstrap CI widened "
                   "to the K grid)", verdict=verdict, reason=why, details=details,
            figure_data={"alpha": a, "N": N, "predicted": [lo_p, hi_p], "predicted_point": pred["point"],
                         "measured": [meas["k_star"], mlo, mhi], "K_range": pred["K_range"],
                         "i_k": {"K": ik["K"], "i_k": ik["i_k"], "lo": ik["lo"], "hi": ik["hi"]},
                         "threshold": [N * t for t in pred["tau_star"]]}))
    for v in out:  # the ratio to alpha = 0 at the same N, where both are point estimates
        a, N = v.details.get("alpha"), v.details.get("N")
        ref = base.get(N, {}).get(0.0)
        if ref is None or "predicted" not in v.details:
            continue
        p0, m0 = ref
        v.details["ratio_to_alpha0"] = {
            "predicted": [x / y if 0 < y < math.inf else math.nan for x, y in zip(v.details["predicted"]["point"],
                                                                                 p0["point"])],
            "measured": (v.details["measured"]["k_star"] / m0["k_star"]
                         if np.isfinite(m0["k_star"]) and m0["k_star"] > 0 else math.nan)}
    return out

