"""The drive at ICL onset (``drive_at_onset``, rung 3; docs/validation.md): ICL is acquired
when the head's drive, the integrated residual error I_K(t) = lr * integral_0^t c1 dt
(learning-rate time, :func:`icl_kinetics.validate.core.i_k`), reaches a threshold that
depends on N and beta0 but not on K."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from icl_kinetics.validate import fits
from icl_kinetics.validate.core import SeedSummary, Verdict, i_k, seed_summaries

#: "holds" for drive_at_onset needs the 95% CI of the finite-K / K = inf I_K ratio within
#: [1 / DRIVE_TOLERANCE, DRIVE_TOLERANCE] (widened by the evaluation grid's margin)
DRIVE_TOLERANCE = 1.25


class InfSeed(NamedTuple):
    """A K = inf seed: its id, I_K (learning-rate time) at its onset (or, censored, at its
    last evaluation; c1 = 1/2 where not measured) and whether it acquired ICL."""

    seed: str
    i_k: float
    observed: bool


class FiniteSeed(NamedTuple):
    """A finite-K seed: id, K (items), I_K at its onset (or at its last evaluation), whether
    it acquired ICL, its final ICL accuracy, its last evaluation (iterations) and lr."""

    seed: str
    K: float
    i_k: float
    observed: bool
    final_icl_acc: float
    cap: float
    lr: float


class Worst(NamedTuple):
    """A seed's largest log(final I_K / its own K = inf onset I_K) over the K where it never
    acquired, its final ICL accuracy there, and how many such K it has."""

    log_ratio: float
    final_icl_acc: float
    k: int


@dataclass(frozen=True, kw_only=True)
class ShiftTest:
    """Test 1 of :func:`drive_at_onset`: ``p`` (NaN when not run), ``ratio`` (exp of the
    median log shift), its 95 % bootstrap ``ci`` over seeds, ``p_min`` (the smallest p the
    test can give), ``n`` (finite-K seeds), ``test`` and ``how`` (words), ``paired``."""

    p: float
    ratio: float
    ci: tuple
    p_min: float
    n: int
    test: str
    how: str
    paired: bool


@dataclass(frozen=True, kw_only=True)
class NeverAcquiredTest:
    """Test 2 of :func:`drive_at_onset`: ``worst`` ({seed: :class:`Worst`}), ``over`` (those
    above their own K = inf onset I_K), ``beyond`` (the count past the noise) and ``p`` (NaN
    when not run)."""

    worst: dict
    over: dict
    beyond: int
    p: float


def _within_seed_sd(per_seed: dict) -> float:
    """Pooled sd of values around each seed's own mean ({seed: [values]}), over the seeds
    with >= 2 values; NaN when none has."""
    groups = [np.asarray(v, float) for v in per_seed.values() if len(v) >= 2]
    dof = sum(g.size - 1 for g in groups)
    return float(math.sqrt(sum(float(np.sum((g - g.mean()) ** 2)) for g in groups) / dof)) if dof else math.nan


def _paired_shift_test(seed_log: dict, own: dict, common: list, margin: float, rng) -> ShiftTest:
    from scipy.stats import wilcoxon

    diffs = np.array([seed_log[sid] - math.log(own[sid]) for sid in common])
    p = 2 * min(float(wilcoxon(diffs + margin, alternative="less").pvalue),
                float(wilcoxon(diffs - margin, alternative="greater").pvalue))
    boot = np.median(rng.choice(diffs, size=(2000, diffs.size)), axis=1)
    return ShiftTest(p=min(p, 1.0), ratio=float(math.exp(np.median(diffs))),
                     ci=tuple(float(x) for x in np.exp(np.percentile(boot, [2.5, 97.5]))),
                     p_min=2.0 / 2 ** len(common), n=len(common), test="Wilcoxon signed-rank", paired=True,
                     how=f"paired over {len(common)} seeds (Wilcoxon signed-rank)")


def _drive_shift_test(seed_log: dict, own: dict, inf: list[InfSeed], margin: float) -> ShiftTest:
    """Test 1 of :func:`drive_at_onset`: is log(I_K at onset at finite K) shifted from K = inf
    by more than ``margin``?  ``seed_log``: {seed: mean log I_K at onset over the
    all-acquiring K}; ``own``: {seed: I_K at onset at K = inf}; ``inf``: the K = inf seeds.
    Paired (Wilcoxon signed-rank) when >= 8 seeds are in both, else unpaired (Mann-Whitney)
    against the K = inf seeds not in ``seed_log``; one-sided on each side of +-margin, p
    doubled."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    common = sorted(set(seed_log) & set(own))
    if len(common) >= 8:
        return _paired_shift_test(seed_log, own, common, margin, rng)
    # every other K = inf seed.  One still without ICL at its cap enters at its I_K there, a
    # lower bound, only where that bound ranks above every onset I_K (so its rank is right)
    a = np.array(list(seed_log.values()))
    onsets = [math.log(x.i_k) for x in inf if x.observed and x.seed not in seed_log]
    top = max([*onsets, *a.tolist()]) if (onsets or a.size) else math.inf
    cens = [math.log(x.i_k) for x in inf if not x.observed and x.seed not in seed_log and x.i_k > 0]
    others = onsets + [c for c in cens if c >= top]
    n_left = len(cens) - (len(others) - len(onsets))
    how = (f"{len(a)} seeds against {len(others)} other K = inf seeds (Mann-Whitney)"
           + (f"; {n_left} censored K = inf seeds left out" if n_left else ""))
    if not (len(a) >= 1 and len(others) >= 1):
        # say what is lacking: a paired test needs >= 8 seeds in both sets, an unpaired one
        # K = inf seeds that are not also in the finite-K set (one seed = one initialization)
        lacking = (f"not compared: the {len(common)} K = inf seeds with an onset are all among the {len(a)} "
                   f"finite-K seeds (a paired test needs >= 8 seeds in both, an unpaired one K = inf seeds "
                   f"outside the finite-K set)")
        return ShiftTest(p=math.nan, ratio=math.nan, ci=(math.nan, math.nan), p_min=1.0, n=len(a),
                         test="Mann-Whitney", how=lacking, paired=False)
    ob = np.asarray(others)
    p = 2 * min(float(mannwhitneyu(a + margin, ob, alternative="less").pvalue),
                float(mannwhitneyu(a - margin, ob, alternative="greater").pvalue))
    boot = (np.median(rng.choice(a, size=(2000, a.size)), axis=1)
            - np.median(rng.choice(ob, size=(2000, ob.size)), axis=1))
    return ShiftTest(p=min(p, 1.0), ratio=float(math.exp(np.median(a) - np.median(ob))),
                     ci=tuple(float(x) for x in np.exp(np.percentile(boot, [2.5, 97.5]))),
                     p_min=2.0 / math.comb(len(a) + len(ob), len(a)), n=len(a), test="Mann-Whitney", how=how,
                     paired=False)


def _never_acquired_test(vals: list[FiniteSeed], own: dict, sig: float, margin: float) -> NeverAcquiredTest:
    """Test 2 of :func:`drive_at_onset`: seeds that never acquired ICL at some K against their
    own K = inf onset I_K (``own``: {seed: I_K}); ``sig``: run-to-run sd of log I_K.  Under
    the theory, log(final I_K / own) < eps_K - eps_inf ~ Normal(0, 2 sig^2), so a seed's
    largest value over its k never-acquired K passes margin + sqrt(2) sig z(1 - 0.1 / k) with
    probability <= 0.1; a one-sided binomial test of the count (>= 3 seeds)."""
    from scipy.stats import binomtest, norm

    worst = {}
    for v in vals:
        if not v.observed and v.seed in own:
            lq = math.log(v.i_k / own[v.seed])
            w = worst.get(v.seed, Worst(-math.inf, math.nan, 0))
            worst[v.seed] = Worst(max(w.log_ratio, lq), v.final_icl_acc if lq >= w.log_ratio else w.final_icl_acc,
                                  w.k + 1)
    over = {sid: w for sid, w in worst.items() if w.log_ratio > 0}
    beyond, p = 0, math.nan
    if np.isfinite(sig) and len(worst) >= 3:
        beyond = sum(w.log_ratio > margin + math.sqrt(2) * sig * norm.ppf(1 - 0.1 / w.k) for w in worst.values())
        p = float(binomtest(beyond, len(worst), 0.1, alternative="greater").pvalue)
    return NeverAcquiredTest(worst=worst, over=over, beyond=beyond, p=p)


def drive_at_onset(table, inf_table, rung: str = "transformer") -> list[Verdict]:
    """The heart of the theory on a model whose head is not the reduced one: ICL is acquired
    when the drive I(t) = lr * integral c1 dt (I_K, :func:`icl_kinetics.validate.core.i_k`)
    reaches a threshold that depends on N and beta0 but not on K (docs/theory.md §4:
    sqrt(pi/2) N e^-beta0 for the reduced model).  K* follows from this, so a K-dependent
    threshold bends the K* slope away from 1/nu.

    For each N with runs at finite K (``table``, c1 measured in situ on training items with
    the target absent from the context) and at K = inf (``inf_table``, c1 = 1/2), a seed's
    threshold (set by its beta0) is sampled by its I_K at onset at K = inf.

    **Test 1** (decides the verdict): at the K where every seed acquired ICL (so no seed was
    selected by its threshold), each seed's mean log I_K at onset over those K is compared
    with K = inf, one value per seed (a seed index shared across K is one initialization,
    not several samples): paired, when >= 8 seeds acquired at K = inf too (Wilcoxon
    signed-rank test of each seed's log ratio to its own K = inf value); otherwise unpaired
    (Mann-Whitney against the K = inf seeds not in the finite-K set).  Onsets are seen on
    the evaluation grid, so an I_K at onset overshoots its threshold by up to lr * step / 2
    (step: that N's median evaluation step);
    the tests ask whether the log ratio lies significantly outside +-log(1 + lr step /
    (2 median)) (one-sided tests on each side, p doubled), at p < 0.01.  Too few seeds for
    the test to reach p < 0.01 at all leave it untested.  The ratio reported is exp(median
    log ratio).

    **Test 2, never acquired**: a seed that never acquired at some K never reached its own
    threshold there, so its final I_K should stay below its own K = inf onset I_K, up to
    run-to-run noise (sd of one run's log I_K, sig, measured on the acquired side: each
    seed's log I_K at onset around its own mean, pooled).  A seed's largest log ratio over
    its k never-acquired K exceeds margin + sqrt(2) sig z(1 - 0.1 / k) with probability
    <= 0.1; a one-sided binomial test of the count at p < 0.01 rejects (>= 3 such seeds).

    "does not hold" when either test rejects; "holds" when test 1 ran, neither rejects, and
    the ratio's 95% bootstrap CI (over seeds) lies within a factor :data:`DRIVE_TOLERANCE`
    (widened by the grid's margin); "inconclusive" otherwise.  The reason also says when
    the runs were too short to reach the K = inf thresholds at all (lr T / 2 below their
    median).  The K = inf median is a Kaplan-Meier median: K = inf seeds still without ICL
    at their cap are censored there, not dropped."""
    fin = [x for x in seed_summaries(table) if x.icl_model and x.finite_k and np.isfinite(x.lr)]
    inf = [x for x in seed_summaries(inf_table) if x.icl_model and x.infinite_k and np.isfinite(x.lr)]
    Ns = sorted({x.N for x in fin} & {x.N for x in inf})
    out = []
    for N in Ns:  # each N with its own evaluation grid (a ladder evaluates every cap / 80 iterations)
        fn, inn = [x for x in fin if x.N == N], [x for x in inf if x.N == N]
        out.append(_drive_at_onset_at(fn, inn, N, _evaluation_step(fn + inn), rung))
    return out or [Verdict.skipped("drive_at_onset", rung, "needs ICL-model runs at finite K and at K = inf at a "
                                   "common N, with c1 and lr")]


def _evaluation_step(seeds: list[SeedSummary]) -> float:
    """The evaluation grid's step (iterations): the median over seeds of each seed's median step."""
    return float(np.median([np.median(np.diff(s.series("iteration"))) for s in seeds if len(s.rows) > 1]))


@dataclass(frozen=True, kw_only=True)
class _DriveCheck:
    """Everything :func:`drive_at_onset` measured at one N (I_K in learning-rate time)."""

    N: float
    inf: list
    own: dict
    vals: list
    median: float
    full_k: list
    margin: float
    shift: ShiftTest
    sig: float
    never: NeverAcquiredTest
    reach: float


def k_inf_drives(inf: list) -> tuple[list, float]:
    """The K = inf seeds' drives at onset (:class:`InfSeed`; c1 = 1/2 where not measured, so
    lr t_ICL / 2; a seed without ICL enters censored at its last evaluation) and their
    Kaplan-Meier median (learning-rate time; NaN when censored or there is no seed): the
    threshold theta(N) that a K-independent theory puts at every K (also the ladder's,
    :mod:`icl_kinetics.validate.ladder`)."""
    xi = [InfSeed(str(x.seed), i_k(x, until=x.time, c1_missing=0.5), x.observed) for x in inf]
    xi = [v for v in xi if np.isfinite(v.i_k)]
    if not xi:
        return xi, math.nan
    km = fits.censored_quantile([v.i_k for v in xi], [v.observed for v in xi], 0.5, n_boot=0)
    return xi, (km.value if km.value is not None else math.nan)


def _drive_at_onset_at(fin: list, inf: list, N: float, step: float, rung: str) -> Verdict:
    """:func:`drive_at_onset` at one N (``fin``, ``inf``: its seeds at finite K and K = inf)."""
    xi, med_inf = k_inf_drives(inf)
    own = {v.seed: v.i_k for v in xi if v.observed}
    vals = [FiniteSeed(str(x.seed), x.K, i_k(x, until=x.time), x.observed, x.final_icl_acc, x.cap, x.lr) for x in fin]
    vals = [v for v in vals if np.isfinite(v.i_k) and v.i_k > 0]
    where = f"{rung}, N = {N:g}"
    from icl_kinetics.validate.requirements import MIN_ACQUIRING_DRIVE, inconclusive

    if not vals:
        return Verdict.skipped("drive_at_onset", where, "needs finite-K seeds with c1 measured")
    if len(own) < MIN_ACQUIRING_DRIVE:
        return inconclusive("drive_at_onset", where, [f">= {MIN_ACQUIRING_DRIVE} acquiring K = inf seeds at "
                                                      f"N = {N:g} (has {len(own)})"])
    # test 1: one value per seed at the K where every seed acquired
    full_k = sorted(k for k in {v.K for v in vals} if all(v.observed for v in vals if v.K == k))
    per_seed = defaultdict(list)
    for v in vals:
        if v.K in full_k:
            per_seed[v.seed].append(math.log(v.i_k))
    seed_log = {sid: float(np.mean(ls)) for sid, ls in per_seed.items()}
    # onsets are seen on the evaluation grid, so an I_K at onset overshoots its threshold by
    # up to lr * (evaluation step) * c1 <= lr * step / 2: log-differences within that margin
    # are not counted (the tests ask whether the difference lies significantly outside it)
    lr0 = float(np.median([v.lr for v in vals]))
    margin = math.log1p(0.5 * lr0 * step / med_inf) if np.isfinite(med_inf) and med_inf > 0 else 0.0
    # test 2, never acquired: each such seed's largest final I_K over its own K = inf onset
    # I_K, against the run-to-run noise measured on the acquired side
    sig = _within_seed_sd(per_seed)
    check = _DriveCheck(N=N, inf=xi, own=own, vals=vals, median=med_inf, full_k=full_k, margin=margin,
                        shift=_drive_shift_test(seed_log, own, xi, margin), sig=sig,
                        never=_never_acquired_test(vals, own, sig, margin),
                        reach=max(0.5 * v.lr * v.cap for v in vals))  # what a run could gather by its cap at c1 = 1/2
    return _drive_verdict(check, where)


def _drive_verdict(c: _DriveCheck, where: str) -> Verdict:
    t1, t2 = c.shift, c.never
    testable = t1.n >= 3 and t1.p_min < 0.01 and np.isfinite(t1.p)
    never_ran = bool(np.isfinite(t2.p))
    # "holds" needs more than a failure to reject: the ratio's 95% CI must lie within the
    # stated tolerance (times the evaluation grid's margin)
    band = (math.exp(-c.margin) / DRIVE_TOLERANCE, math.exp(c.margin) * DRIVE_TOLERANCE)
    equivalent = np.all(np.isfinite(t1.ci)) and band[0] <= t1.ci[0] and t1.ci[1] <= band[1]
    if (testable and t1.p < 0.01) or (never_ran and t2.p < 0.01):
        verdict = "does not hold"
    else:
        verdict = "holds" if testable and equivalent else "inconclusive"
    reason = _drive_reason(c, never_ran)
    if verdict == "inconclusive" and testable and not equivalent:
        reason += (f". Not rejected, but the ratio's CI leaves {band[0]:.2f}-{band[1]:.2f} (the tolerance "
                   f"x{DRIVE_TOLERANCE:g} and the grid's margin): too few seeds to call it K-independent")
    if c.reach < c.median:
        reason += (f". The runs could gather at most about {c.reach:.3g} by their cap, below the K = inf median, so "
                   "seeds that never acquired say little here")
    n_cens = sum(not v.observed for v in c.inf)
    return Verdict(
        prediction="drive_at_onset", rung=where,
        predicted=f"the drive I = lr int c1 dt at ICL onset does not depend on K (K = inf median {c.median:.3g})",
        measured=(("acquired: not compared" if not np.isfinite(t1.p) else
                   f"acquired: {t1.ratio:.2f} x the K = inf drive") if c.full_k else "acquired: -")
        + f"; never acquired: {len(t2.over)}/{len(t2.worst)} seeds above their own K = inf drive"
        + (f", {t2.beyond} beyond noise" if never_ran else ""),
        metric=(f"{t1.test} p = {t1.p:.2g}" if c.full_k and np.isfinite(t1.p) else "-") + (f"; binomial p = {t2.p:.2g}" if never_ran else ""),
        verdict=verdict, reason=reason,
        details={"threshold_median": c.median, "inf_seeds": len(c.inf), "inf_censored": n_cens, "full_k": c.full_k,
                 "seeds_tested": t1.n, "paired": t1.paired, "p": t1.p, "margin": c.margin, "ratio": t1.ratio,
                 "ratio_ci": t1.ci, "equivalent": bool(equivalent), "within_seed_sd": c.sig,
                 "never_seeds": len(t2.worst), "never_above_own": len(t2.over), "never_beyond_noise": t2.beyond,
                 "p_never": t2.p, "never_log_ratios": {sid: w.log_ratio for sid, w in t2.worst.items()}},
        figure_data={"N": c.N, "K": [v.K for v in c.vals], "i_k": [v.i_k for v in c.vals],
                     "acquired": [bool(v.observed) for v in c.vals], "inf": sorted(c.own.values()),
                     "median": c.median})


def _acquired_words(c: _DriveCheck) -> str:
    """Test 1 in words: the ratio with its CI and p, or what it lacked."""
    t1 = c.shift
    if not c.full_k:
        return "no K where every seed acquired ICL"
    where = f"at the K where every seed acquired (K >= {c.full_k[0]:g})"
    if not np.isfinite(t1.p):
        return f"{where}: {t1.how}"
    words = (f"{where}, ICL came at {t1.ratio:.2f} x the K = inf drive [95% CI {t1.ci[0]:.2f}, {t1.ci[1]:.2f}], "
             f"{t1.how}, p = {t1.p:.2g} for a difference beyond the evaluation grid's {math.expm1(c.margin):.1%}")
    if not (t1.n >= 3 and t1.p_min < 0.01):
        words += f"; too few seeds for p < 0.01 to be reachable (smallest possible p = {t1.p_min:.2g})"
    return words


def _drive_reason(c: _DriveCheck, never_ran: bool) -> str:
    """The verdict's reason: the K = inf median, test 1 and test 2 in words."""
    t1, t2 = c.shift, c.never
    n_cens = sum(not v.observed for v in c.inf)
    reason = (f"K = inf onsets: median drive {c.median:.3g} (Kaplan-Meier, {len(c.inf)} seeds, {n_cens} censored). "
              "Acquired: " + _acquired_words(c)
              + f". Never acquired: {len(t2.over)} of {len(t2.worst)} seeds ended above their own K = inf onset drive "
              "at some K where they never acquired (theory: none, up to run-to-run noise)")
    if t2.over:
        accs = [w.final_icl_acc for w in t2.over.values() if np.isfinite(w.final_icl_acc)]
        reason += (f", by up to {math.exp(max(w.log_ratio for w in t2.over.values())):.2f}x" + (
            f", with final ICL accuracy {min(accs):.2f}-{max(accs):.2f} (0.95 counts as acquired)" if accs else ""))
    if never_ran:
        reason += (f"; {t2.beyond} beyond the run-to-run noise (sd of one run's log drive = {c.sig:.2f}; at most 10% "
                   f"expected, binomial p = {t2.p:.2g})")
    else:
        reason += "; not tested (needs >= 3 such seeds and the noise from seeds with >= 2 all-acquiring K)"
    return reason
