"""What each check needs: one table of every check's columns and minimum data, read by the
checks (below its minimum a check says "inconclusive: needs ...", never "holds" or "does
not hold") and by ``icl-kinetics validate --plan`` (:func:`plan`), which lists, before any
fit is made, which checks a table can run and what it lacks.

The minimums, and the argument for each, are in docs/validation.md ("What each check
needs"); :data:`REQUIREMENTS` is that table.  Counts are of seeds (one (run, seed) of a
tidy table, :class:`~icl_kinetics.validate.core.SeedSummary`); N in context tokens, K in
items, iterations for times.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from icl_kinetics.validate.core import SeedSummary, Verdict, seed_summaries
from icl_kinetics.validate.fits import MIN_BOOTSTRAP_POINTS
from icl_kinetics.validate.memorization import MEMORIZED_C1, memorized
from icl_kinetics.validate.schema import WD_ATTN_FLOOR

#: memorization_law: memorized K values in the power-law fit (>= 2 residual degrees of freedom)
MIN_MEMORIZED_K = 4
#: k_star_from_c1, p_icl (rung 2): MLP K values to interpolate I_K(T) between
MIN_MLP_K = 3
#: K* per N: distinct finite K (a sigmoid has 4 parameters) and observations (seeds x K: the
#: bootstrap's minimum, fits.MIN_BOOTSTRAP_POINTS)
MIN_K_PER_N = 4
MIN_KSTAR_OBS = MIN_BOOTSTRAP_POINTS
#: k_star_scaling: values of N with a measured K*
MIN_N_KSTAR = 2
#: onset_times_linear: values of N at K = inf (>= 1 degree of freedom for the quadratic term's
#: F-test), seeds per N, and more than half of them acquiring (an uncensored median)
MIN_N_ONSET = 4
MIN_SEEDS_ONSET = 5
#: onset_times_shape: acquiring K = inf seeds pooled over N (a KS test on fewer has no power)
MIN_ACQUIRING_SHAPE = 20
#: p_icl: seeds at one finite (N, K) (a Wilson interval of 8 seeds is about 0.5 wide)
MIN_SEEDS_POINT = 8
#: bimodality: seeds at one finite (N, K).  Sarle's coefficient is bias-corrected for n, and
#: at n = 8 two clean clusters give only 0.47-0.63 (a 4/4 split: 0.47, below 5/9); from 12
#: every split of two clean clusters gives >= 0.62, above the band 5/9 + 0.05
MIN_SEEDS_BIMODAL = 12
#: equalized_contexts: seeds per arm over the K where either arm acquired
MIN_SEEDS_ARM = 8
#: drive_at_onset: acquiring K = inf seeds at the N (their drives sample the thresholds)
MIN_ACQUIRING_DRIVE = 5
#: k_star_in_situ, k_star_local_slope (the scale ladder): K = inf seeds at the (model, width, N),
#: more than half of them acquiring (an uncensored median: the horizon and the threshold)
MIN_SEEDS_HORIZON = 8
#: transience, icl_iwl_loss_relation, transience_tracking: seeds with decay that acquired ICL
#: and ran on past it (not early-stopped), and post-acquisition evaluations
MIN_ACQUIRING_DECAY = 3
MIN_POST_EVALS = 10
#: final ICL accuracy above which a run that ended before the longest run of its grid point
#: counts as early-stopped (:func:`early_stopped`): not watched long enough to lose ICL
EARLY_STOP_ACC = 0.99


@dataclass(frozen=True)
class Requirement:
    """One check's needs: ``columns`` (beyond seed and iteration), which ``rows`` it reads,
    its stated ``minimum`` (words; each count is also a constant of this module) and
    ``why`` that minimum (the argument, in docs/validation.md)."""

    check: str
    columns: tuple
    rows: str
    minimum: str
    why: str


#: every check of ``validate --runs``, in report order
REQUIREMENTS = {r.check: r for r in [
    Requirement("memorization_law", ("model", "K", "c1", "lr"), "model = mlp, finite K",
                f">= {MIN_MEMORIZED_K} values of K memorized by the end (mean final c1 < {MEMORIZED_C1})",
                "a power law has 2 parameters: 4 points leave 2 degrees of freedom for its t interval; "
                "with 3 the t factor is 12.7 and the fit says nothing"),
    Requirement("k_star_from_c1", ("model", "K", "c1", "lr", "icl_acc", "N"),
                "model = mlp (I_K) and model = minimal at finite K",
                f"MLP runs at >= {MIN_MLP_K} K; per N, minimal-model runs at >= {MIN_K_PER_N} finite K and "
                f">= {MIN_KSTAR_OBS} seeds x K",
                "I_K(T) is interpolated between measured K; a sigmoid has 4 parameters, and its bootstrap "
                f"needs >= {MIN_BOOTSTRAP_POINTS} observations. Only the minimal model: its beta0 is the theory's"),
    Requirement("k_star_scaling", ("icl_acc", "K", "N"), "ICL model, finite K",
                f">= {MIN_N_KSTAR} values of N, each with >= {MIN_K_PER_N} finite K and >= {MIN_KSTAR_OBS} seeds x K",
                "a slope needs 2 N; each K* is a 4-parameter sigmoid fit bootstrapped over observations"),
    Requirement("drive_at_onset", ("icl_acc", "K", "N", "c1", "lr"), "ICL model, finite K and K = inf at a common N",
                f"per N: >= {MIN_ACQUIRING_DRIVE} acquiring K = inf seeds, finite-K seeds with c1; the verdict "
                "needs >= 3 seeds at the K where all acquired (p < 0.01 reachable)",
                "the K = inf drives sample the thresholds; a rank test on fewer seeds cannot reach p < 0.01"),
    Requirement("k_star_in_situ", ("icl_acc", "K", "N", "c1", "lr"),
                "ICL model, finite K and K = inf at a common N, per model and width",
                f"per N: >= {MIN_SEEDS_HORIZON} K = inf seeds, more than half acquiring; >= {MIN_K_PER_N} finite K "
                f"and >= {MIN_KSTAR_OBS} seeds x K, with c1",
                f"the horizon and the threshold are K = inf medians: of {MIN_SEEDS_HORIZON} seeds with sd(log t_ICL) "
                "~ 0.1 the median is known to about 5 %, which moves K* by under 10 % (a quarter of a sqrt(2) K "
                "step); each K* is a 4-parameter sigmoid fit bootstrapped over observations"),
    Requirement("k_star_local_slope", ("icl_acc", "K", "N"), "ICL model, finite K and K = inf, per model and width",
                f"2 adjacent N of one model and width, each with >= {MIN_SEEDS_HORIZON} K = inf seeds (more than "
                f"half acquiring), >= {MIN_K_PER_N} finite K and >= {MIN_KSTAR_OBS} seeds x K; nu from "
                "memorization_law holding on the MLP runs at that width",
                "a local slope needs K* at both ends; without nu there is no 1/nu to compare it with"),
    Requirement("onset_times_linear", ("icl_acc", "K", "N"), "ICL model, K = inf",
                f">= {MIN_N_ONSET} values of N, >= {MIN_SEEDS_ONSET} seeds per N, more than half acquiring at each",
                "the quadratic term's F-test has n - 3 degrees of freedom: with 3 N its p is NaN, which is no "
                "evidence of linearity; a median of fewer than 5 seeds moves with one seed"),
    Requirement("onset_times_shape", ("icl_acc", "K", "N", "beta"), "ICL model, K = inf, beta at iteration 0",
                f">= {MIN_ACQUIRING_SHAPE} acquiring seeds (pooled over N) with beta at iteration 0",
                "a KS test and a chi-square interval of an sd on fewer seeds cannot tell a wrong scale"),
    Requirement("bimodality", ("icl_acc", "K", "N"), "ICL model, finite K",
                f">= {MIN_SEEDS_BIMODAL} seeds at one finite (N, K)",
                "Sarle's coefficient is bias-corrected for n: with 8 seeds two clean clusters split 4/4 give 0.47, "
                "below 5/9; from 12 seeds every split of two clean clusters gives >= 0.62"),
    Requirement("p_icl", ("icl_acc", "K", "N"), "finite K; K* and nu from the same table",
                f">= {MIN_SEEDS_POINT} seeds at one finite (N, K); K*(N) measured (the K* minimum at that N); nu "
                "from memorization_law holding (transformer) or MLP runs at >= 3 K with the minimal model's "
                "w and beta (rung 2); a threshold spread (K = inf onsets, or beta at iteration 0)",
                "a fraction from fewer than 8 seeds has a Wilson interval wider than 0.5"),
    Requirement("equalized_contexts", ("icl_acc", "K", "contexts"), "finite K, contexts iid and equalized",
                f">= {MIN_SEEDS_ARM} seeds per arm over the K where either arm acquired",
                "Fisher's exact test on 2 x 8 seeds can reach p < 1e-4; on fewer it hardly reaches 0.01"),
    Requirement("transience", ("icl_acc", "wd_attn"), f"wd_attn > {WD_ATTN_FLOOR:g} (decay)",
                f">= {MIN_ACQUIRING_DECAY} seeds with decay that acquired ICL and were not early-stopped",
                "one seed's loss of ICL can be a flicker; early-stopped runs were not watched long enough to lose it"),
    Requirement("icl_iwl_loss_relation", ("icl_acc", "icl_loss", "iwl_loss", "wd_attn"),
                f"wd_attn > {WD_ATTN_FLOOR:g}, after acquisition",
                f">= {MIN_ACQUIRING_DECAY} acquiring seeds with decay, >= {MIN_POST_EVALS} evaluations after "
                "acquisition",
                "evaluations of one seed are correlated; a rank correlation needs several seeds and evaluations"),
    Requirement("transience_tracking", ("icl_acc", "wd_attn", "w", "c3"), f"wd_attn > {WD_ATTN_FLOOR:g}, after "
                "acquisition",
                f">= {MIN_ACQUIRING_DECAY} acquiring seeds with decay, >= {MIN_POST_EVALS} evaluations after "
                "acquisition",
                "as icl_iwl_loss_relation"),
]}


def inconclusive(prediction: str, rung: str, lacks: list, **fields) -> Verdict:
    """The verdict of a check below its minimum: "inconclusive", with a reason naming what
    is lacking ("needs ...")."""
    return Verdict(prediction=prediction, rung=rung, verdict="inconclusive",
                   reason="needs " + "; ".join(lacks) + f" (the minimum: {REQUIREMENTS[prediction].minimum}; "
                   "docs/validation.md, \"What each check needs\")", **fields)


# ----------------------------------------------------------------------------- the data each check lacks
def decayed(s: SeedSummary) -> bool:
    """Whether the seed ran with decay on the in-context pathway (wd_attn above the floor,
    :data:`WD_ATTN_FLOOR`: the paper's 1e-10 is no decay)."""
    return bool(np.isfinite(s.wd_attn) and s.wd_attn > WD_ATTN_FLOOR)


def early_stopped(s: SeedSummary, cap: float) -> bool:
    """Whether the seed ended above :data:`EARLY_STOP_ACC` ICL accuracy before ``cap``
    (iterations: the longest run of its grid point): stopped early, so never watched long
    enough to lose ICL."""
    return bool(s.final_icl_acc > EARLY_STOP_ACC and s.cap < cap)


def watched(seeds: list) -> list:
    """The seeds that acquired ICL and ran on past it: not early-stopped, the cap being the
    longest run among ``seeds`` (a run that ended above :data:`EARLY_STOP_ACC` before it kept
    ICL only as far as it was watched)."""
    cap = max((s.cap for s in seeds), default=0.0)
    return [s for s in seeds if s.observed and not early_stopped(s, cap)]


def kstar_lacks(seeds: list, where: str = "") -> dict:
    """{N: [what that N lacks for a K* fit]} over the finite-K seeds ``seeds``."""
    out = {}
    byn = defaultdict(list)
    for s in seeds:
        byn[s.N].append(s)
    for N, sn in sorted(byn.items()):
        lacks = []
        nk = len({s.K for s in sn})
        if nk < MIN_K_PER_N:
            lacks.append(f"N = {N:g}{where}: >= {MIN_K_PER_N} finite K (has {nk})")
        if len(sn) < MIN_KSTAR_OBS:
            lacks.append(f"N = {N:g}{where}: >= {MIN_KSTAR_OBS} seeds x K for the bootstrap (has {len(sn)})")
        out[N] = lacks
    return out


def _mlp_ks(seeds: list) -> tuple[int, int]:
    """(finite K values with MLP runs, of them memorized: mean final c1 < MEMORIZED_C1,
    :func:`~icl_kinetics.validate.memorization.memorized`)."""
    byk = defaultdict(list)
    for s in seeds:
        if s.model == "mlp" and np.isfinite(s.lr) and s.finite_k:
            byk[s.K].append(s.final("c1"))
    return len(byk), len(memorized([np.nanmean(v) for v in byk.values()]))


def lacks_memorization_law(seeds: list) -> list:
    nk, mem = _mlp_ks(seeds)
    if nk == 0:
        return ["standalone-MLP runs (model = mlp) at finite K with lr and c1"]
    return [] if mem >= MIN_MEMORIZED_K else [f">= {MIN_MEMORIZED_K} K memorized by the end of the runs (mean final "
                                              f"c1 < {MEMORIZED_C1}; has {mem} of {nk} K: run longer or add K)"]


def lacks_k_star_from_c1(seeds: list) -> list:
    nk, _ = _mlp_ks(seeds)
    out = [] if nk >= MIN_MLP_K else [f"MLP runs (model = mlp) with c1 at >= {MIN_MLP_K} K (has {nk})"]
    mini = [s for s in seeds if s.model == "minimal" and s.finite_k]
    if not mini:
        return out + ["runs of the minimal model (model = minimal, whose beta0 is the theory's) at finite K; a "
                      "transformer's K* is checked by k_star_scaling"]
    per = kstar_lacks(mini)
    if all(per.values()):
        out += [x for v in per.values() for x in v]
    return out


def lacks_k_star_scaling(seeds: list) -> list:
    icl = [s for s in seeds if s.icl_model and s.finite_k]
    if not icl:
        return ["ICL-model runs at finite K"]
    per = kstar_lacks(icl)
    good = [N for N, v in per.items() if not v]
    if len(good) >= MIN_N_KSTAR:
        return []
    return [f">= {MIN_N_KSTAR} values of N meeting the K* minimum (has {len(good)} of {len(per)} N)"] + \
        [x for v in per.values() for x in v]


def lacks_drive_at_onset(seeds: list) -> list:
    fin = [s for s in seeds if s.icl_model and s.finite_k and np.isfinite(s.lr)]
    inf = [s for s in seeds if s.icl_model and s.infinite_k and np.isfinite(s.lr)]
    Ns = sorted({s.N for s in fin} & {s.N for s in inf})
    if not Ns:
        return ["ICL-model runs at finite K and at K = inf at a common N, with lr"]
    acq = {N: sum(s.observed for s in inf if s.N == N) for N in Ns}
    if any(a >= MIN_ACQUIRING_DRIVE for a in acq.values()):
        return []
    return [f">= {MIN_ACQUIRING_DRIVE} acquiring K = inf seeds at some N (has " +
            ", ".join(f"{a} at N = {N:g}" for N, a in acq.items()) + ")"]


def in_situ_point_lacks(N: float, fin: list, inf: list, where: str = "", c1: bool = True) -> list:
    """What one (model, width, N) of the scale ladder lacks for ``k_star_in_situ``: ``fin``,
    ``inf``: its finite-K and K = inf seeds; ``c1=False``: all but c1 (K* at the relative
    horizon, what ``k_star_local_slope`` needs at each end)."""
    out = []
    acq = sum(s.observed for s in inf)
    if len(inf) < MIN_SEEDS_HORIZON or acq <= len(inf) / 2:
        out.append(f"N = {N:g}{where}: >= {MIN_SEEDS_HORIZON} K = inf seeds, more than half acquiring (has "
                   f"{len(inf)}, {acq} acquiring)")
    if not fin:
        out.append(f"N = {N:g}{where}: finite-K runs (none yet)")
    else:
        out += kstar_lacks(fin, where)[N]
        no_c1 = sum(not np.isfinite(s.series("c1")).any() for s in fin) if c1 else 0
        if no_c1:
            out.append(f"N = {N:g}{where}: c1 measured in situ ({no_c1} of {len(fin)} finite-K seeds have none)")
    return out


def _ladder_points(seeds: list) -> dict:
    """{(model, width, N): (finite-K seeds, K = inf seeds)} of the ICL-model seeds."""
    from icl_kinetics.validate.ladder import group_of

    out = defaultdict(lambda: ([], []))
    for s in seeds:
        if s.icl_model and (s.finite_k or s.infinite_k):
            out[(*group_of(s), s.N)][0 if s.finite_k else 1].append(s)
    return out


def lacks_k_star_in_situ(seeds: list) -> list:
    pts = _ladder_points(seeds)
    if not any(f and i for f, i in pts.values()):
        return ["ICL-model runs at finite K and at K = inf at a common N (of one model and width)"]
    per = {k: in_situ_point_lacks(k[2], *v) for k, v in pts.items() if v[0] and v[1]}
    return [] if any(not v for v in per.values()) else [x for v in per.values() for x in v]


def lacks_k_star_local_slope(seeds: list) -> list:
    pts = _ladder_points(seeds)
    ok = defaultdict(list)  # (model, width) -> [(N, meets the k_star_in_situ minimum)]
    for (model, width, N), (f, i) in sorted(pts.items(), key=lambda kv: kv[0][2]):
        ok[(model, width)].append(bool(f and i and not in_situ_point_lacks(N, f, i, c1=False)))
    pairs = any(a and b for v in ok.values() for a, b in zip(v, v[1:]))
    out = [] if pairs else [f"2 adjacent values of N of one model and width, each with >= {MIN_SEEDS_HORIZON} K = inf "
                            f"seeds and the K* minimum (has {max((sum(v) for v in ok.values()), default=0)} such N "
                            "at most)"]
    return out + [f"nu from memorization_law: {x}" for x in lacks_memorization_law(seeds)]


def _onset_points(seeds: list) -> dict:
    byn = defaultdict(list)
    for s in seeds:
        if s.icl_model and s.infinite_k:
            byn[s.N].append(s)
    return dict(sorted(byn.items()))


def lacks_onset_times_linear(seeds: list) -> list:
    byn = _onset_points(seeds)
    if not byn:
        return ["ICL-model runs at K = inf"]
    ok = [N for N, sn in byn.items() if len(sn) >= MIN_SEEDS_ONSET and sum(s.observed for s in sn) > len(sn) / 2]
    if len(ok) >= MIN_N_ONSET:
        return []
    few = [f"N = {N:g}: {len(sn)} seeds, {sum(s.observed for s in sn)} acquiring" for N, sn in byn.items()
           if N not in ok]
    return [f">= {MIN_N_ONSET} values of N with >= {MIN_SEEDS_ONSET} seeds, more than half acquiring (has {len(ok)}"
            + (f"; {', '.join(few)}" if few else "") + ")"]


def lacks_onset_times_shape(seeds: list) -> list:
    byn = _onset_points(seeds)
    if not byn:
        return ["ICL-model runs at K = inf"]
    acq = [s for sn in byn.values() for s in sn if s.observed and np.isfinite(s.beta0)]
    if len(acq) >= MIN_ACQUIRING_SHAPE:
        return []
    return [f">= {MIN_ACQUIRING_SHAPE} acquiring K = inf seeds with beta at iteration 0 (has {len(acq)})"]


def _points(seeds: list, model=None) -> dict:
    out = defaultdict(list)
    for s in seeds:
        if s.finite_k and s.icl_model and (model is None or s.model == model):
            out[(s.N, s.K)].append(s)
    return out


def _most_seeds(seeds: list, minimum: int) -> list:
    pts = _points(seeds)
    if not pts:
        return ["ICL-model runs at finite K"]
    most = max(len(v) for v in pts.values())
    return [] if most >= minimum else [f">= {minimum} seeds at one finite (N, K) (has at most {most})"]


def lacks_bimodality(seeds: list) -> list:
    return _most_seeds(seeds, MIN_SEEDS_BIMODAL)


def lacks_p_icl(seeds: list) -> list:
    pts = _points(seeds)
    if not pts:
        return ["ICL-model runs at finite K"]
    out = _most_seeds(seeds, MIN_SEEDS_POINT)
    if any(s.model == "minimal" for v in pts.values() for s in v):
        nk, _ = _mlp_ks(seeds)
        if nk < MIN_MLP_K:
            out.append(f"MLP runs (model = mlp) with c1 at >= {MIN_MLP_K} K (rung 2: P(ICL) from the MLP's I_K; "
                       f"has {nk})")
        return out
    per = kstar_lacks([s for s in seeds if s.icl_model and s.finite_k])
    big = {N for (N, K), v in pts.items() if len(v) >= MIN_SEEDS_POINT}
    if big and all(per.get(N) for N in big):
        out += ["K*(N) measured at the N of those seeds: " + "; ".join(x for N in sorted(big) for x in per[N])]
    out += [f"nu from memorization_law: {x}" for x in lacks_memorization_law(seeds)]
    inf = [s for sn in _onset_points(seeds).values() for s in sn]
    if len([s for s in inf if s.observed]) < MIN_ACQUIRING_SHAPE and \
            sum(np.isfinite(s.beta0) for v in pts.values() for s in v) < 5:
        out.append(f"a threshold spread: >= {MIN_ACQUIRING_SHAPE} acquiring K = inf seeds with beta at iteration 0, "
                   "or beta at iteration 0 of >= 5 finite-K seeds")
    return out


def lacks_equalized_contexts(seeds: list) -> list:
    arms = {c: [s for s in seeds if s.finite_k and s.contexts == c] for c in ("iid", "equalized")}
    if not arms["iid"] or not arms["equalized"]:
        return ["finite-K runs with both contexts = iid and equalized"]
    active = {s.K for v in arms.values() for s in v if s.observed}
    n = {c: sum(s.K in active for s in v) for c, v in arms.items()}
    if not active:
        return ["a seed that acquired ICL in either arm"]
    low = [f"{c}: {k}" for c, k in n.items() if k < MIN_SEEDS_ARM]
    return [f">= {MIN_SEEDS_ARM} seeds per arm over the K where either arm acquired (has {', '.join(low)})"] if low \
        else []


def _decay_lacks(seeds: list, need_evals: tuple = ()) -> list:
    dec = [s for s in seeds if decayed(s)]
    if not dec:
        return [f"runs with decay on the in-context pathway (wd_attn > {WD_ATTN_FLOOR:g}; at or below it is no decay)"]
    w = watched(dec)
    out = []
    if len(w) < MIN_ACQUIRING_DECAY:
        n_es = sum(s.observed for s in dec) - len(w)
        out.append(f">= {MIN_ACQUIRING_DECAY} seeds with decay that acquired ICL and ran on past it (has {len(w)}"
                   + (f"; {n_es} early-stopped, not counted" if n_es else "") + ")")
    if need_evals:
        n = 0
        for s in w:
            keep = s.series("iteration") > s.t_icl
            ok = np.ones(int(keep.sum()), bool)
            for c in need_evals:
                ok &= np.isfinite(s.series(c)[keep])
            n += int(ok.sum())
        if n < MIN_POST_EVALS:
            out.append(f">= {MIN_POST_EVALS} evaluations after acquisition with {', '.join(need_evals)} (has {n})")
    return out


def lacks_transience(seeds: list) -> list:
    return _decay_lacks(seeds)


def lacks_icl_iwl_loss_relation(seeds: list) -> list:
    return _decay_lacks(seeds, ("icl_loss", "iwl_loss"))


def lacks_transience_tracking(seeds: list) -> list:
    return _decay_lacks(seeds, ("w", "c3"))


#: each check's test of the data below its minimum (the columns are checked first, by :func:`plan_table`)
_LACKS = {
    "memorization_law": lacks_memorization_law,
    "k_star_from_c1": lacks_k_star_from_c1,
    "k_star_scaling": lacks_k_star_scaling,
    "drive_at_onset": lacks_drive_at_onset,
    "k_star_in_situ": lacks_k_star_in_situ,
    "k_star_local_slope": lacks_k_star_local_slope,
    "onset_times_linear": lacks_onset_times_linear,
    "onset_times_shape": lacks_onset_times_shape,
    "bimodality": lacks_bimodality,
    "p_icl": lacks_p_icl,
    "equalized_contexts": lacks_equalized_contexts,
    "transience": lacks_transience,
    "icl_iwl_loss_relation": lacks_icl_iwl_loss_relation,
    "transience_tracking": lacks_transience_tracking,
}
assert set(_LACKS) == set(REQUIREMENTS), "every check of REQUIREMENTS has its _LACKS test"


# ----------------------------------------------------------------------------- the plan
def plan_table(table, title: str = "") -> dict:
    """The plan of a table already read: for each check of :data:`REQUIREMENTS`, whether
    the table meets its minimum (``runnable``), what it lacks, and the minimum itself.
    No fit is made: the seeds are grouped and their ICL onsets found, nothing more."""
    seeds = seed_summaries(table)
    have = set(table)
    n_rows = len(next(iter(table.values()))) if table else 0
    rows = []
    for name, req in REQUIREMENTS.items():
        miss = [c for c in req.columns if c not in have]
        why = ["columns " + ", ".join(miss)] if miss else _LACKS[name](seeds)
        rows.append({"check": name, "runnable": not why, "missing_columns": miss, "lacks": why,
                     "columns": list(req.columns), "rows": req.rows, "minimum": req.minimum})
    Ns = sorted({s.N for s in seeds if np.isfinite(s.N)})
    Ks = sorted({s.K for s in seeds if not math.isnan(s.K)})
    return {"title": title or "plan", "rows": n_rows, "seeds": len(seeds), "columns": sorted(have),
            "N": Ns, "K": Ks, "checks": rows,
            "runnable": [r["check"] for r in rows if r["runnable"]]}


def plan(source, **read_options) -> dict:
    """``icl-kinetics validate --plan``: read ``source`` (anything
    :func:`icl_kinetics.validate.schema.read_tables` takes: CSV paths, a DataFrame, a list of
    row dicts, a dict of columns) with ``read_options`` (``column_map``,
    ``iterations_per_epoch``, ``k_minus_one_is_inf``), then list each check, whether the
    table meets its minimum and what it lacks (:func:`plan_table`).  Nothing is fitted.

    Raises:
        ParameterError: the source cannot be read as a table of the schema."""
    from icl_kinetics.validate.report import read_source, source_names

    return plan_table(read_source(source, read_options), f"Plan for {source_names(source)}")


__all__ = ["REQUIREMENTS", "Requirement", "decayed", "early_stopped", "inconclusive", "plan", "plan_table", "watched"]
