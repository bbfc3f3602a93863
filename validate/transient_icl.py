"""Transient ICL under L2 weight decay on the in-context pathway (``wd_attn``; paper Figs.
2e, 6d, A6): ICL is acquired, then lost as memorization proceeds, sooner for stronger
decay; the ICL loss rises as the IWL loss falls; and w tracks w_tr(c3, wd_attn)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from icl_kinetics.validate.core import SeedSummary, Verdict, seed_summaries
from icl_kinetics.validate.requirements import EARLY_STOP_ACC
from icl_kinetics.validate.schema import WD_ATTN_FLOOR


class TransienceRow(NamedTuple):
    """One seed of :func:`transience`: its decay, the iteration at which it lost ICL (or,
    kept to the end, its last evaluation; None when it never acquired), and whether it
    acquired and lost ICL."""

    wd_attn: float
    t_loss: float | None
    acquired: bool
    lost: bool


def _transience_row(s: SeedSummary, lost_below: float) -> TransienceRow:
    if not s.observed:
        return TransienceRow(s.wd_attn, None, False, False)
    it, acc = s.series("iteration"), s.series("icl_acc")
    lost = np.nonzero((it > s.t_icl) & (acc < lost_below))[0]
    t_loss = float(it[lost[0]]) if lost.size else None
    return TransienceRow(s.wd_attn, t_loss if t_loss is not None else s.cap, True, t_loss is not None)


def transience(table, rung: str = "transformer", lost_below: float = 0.9) -> list[Verdict]:
    """With L2 weight decay on the in-context pathway, ICL is transient: acquired, then
    lost as memorization proceeds; stronger decay loses it sooner (and too strong prevents
    it).  And after acquisition the ICL loss rises as the IWL loss falls.

    t_loss (iterations): the first evaluation after acquisition with ICL accuracy below
    ``lost_below`` (the paper's 0.9); censored at the last evaluation if never."""
    from icl_kinetics.validate.requirements import decayed, lacks_transience, watched

    every = [s for s in seed_summaries(table) if np.isfinite(s.wd_attn)]
    if not every:
        return [Verdict.skipped("transience", rung, "needs the wd_attn column")]
    # the prediction is about decay on the in-context pathway: runs without it (wd_attn at or
    # below the floor, the paper's 1e-10 included) are not evidence either way (an accuracy
    # flicker below 0.9 there is not transience)
    seeds = [s for s in every if decayed(s)]
    n_zero = len(every) - len(seeds)
    if not seeds:
        why = (f"needs runs with wd_attn > {WD_ATTN_FLOOR:g} (L2 on the in-context pathway; at or below it is no "
               f"decay); all {n_zero} seeds have wd_attn <= {WD_ATTN_FLOOR:g}")
        return [Verdict.skipped("transience", rung, why), Verdict.skipped("icl_iwl_loss_relation", rung, why)]
    kept = {id(s) for s in watched(seeds)}
    rows = [_transience_row(s, lost_below) for s in seeds if id(s) in kept or not s.observed]
    n_early = sum(s.observed for s in seeds) - len(kept)
    lack = lacks_transience(seeds)
    return [_transience_verdict(rows, n_zero, rung, lost_below, n_early, lack),
            _loss_relation([s for s in seeds if id(s) in kept], rung)]


#: transience: seeds that must lose ICL for "holds" (one loss can be a flicker), and the p below
#: which a positive rho(wd, t_loss) (stronger decay losing ICL later) makes it "does not hold"
MIN_LOST, P_LATER = 2, 0.01


def _transience_verdict(rows: list[TransienceRow], n_zero: int, rung: str, lost_below: float, n_early: int = 0,
                        lack: list | None = None) -> Verdict:
    from scipy.stats import spearmanr

    from icl_kinetics.validate.requirements import inconclusive

    acq = [r for r in rows if r.acquired]
    lost = [r for r in acq if r.lost]
    wds = sorted({r.wd_attn for r in rows})
    details = {"seeds": len(rows), "acquired": len(acq), "lost": len(lost), "early_stopped": n_early,
               "per_wd": {str(w): {"acquired": sum(r.acquired for r in rows if r.wd_attn == w),
                                   "lost": sum(r.lost for r in rows if r.wd_attn == w),
                                   "n": sum(r.wd_attn == w for r in rows)} for w in wds}}
    early = (f"; {n_early} early-stopped seeds (ended above {EARLY_STOP_ACC:g} before the cap) are not counted as "
             "keeping ICL: they were not watched long enough to lose it") if n_early else ""
    if not acq and not n_early:
        return Verdict(prediction="transience", rung=rung, predicted="ICL acquired, then lost",
                       measured=f"0 of {len(rows)} seeds acquired", verdict="skipped",
                       reason="no seed with decay acquired ICL", details=details, figure_data={"rows": rows})
    if lack:
        return inconclusive("transience", rung, lack, predicted="ICL acquired, then lost",
                            measured=f"{len(lost)}/{len(acq)} transient" + early, details=details,
                            figure_data={"rows": rows})
    if len(lost) < MIN_LOST:
        return Verdict(prediction="transience", rung=rung, predicted="ICL acquired, then lost",
                       measured=f"{len(acq)} seeds acquired, {len(lost)} lost ICL",
                       verdict="inconclusive",
                       reason=f"fewer than {MIN_LOST} seeds lost ICL within the runs (too short, or decay too weak at "
                              "this scale)" + early, details=details, figure_data={"rows": rows})
    verdict = "holds"
    reason = f"{len(lost)} of {len(acq)} seeds that acquired ICL lost it (accuracy < {lost_below})"
    metric = "count of transient seeds"
    if len({r.wd_attn for r in lost}) >= 3:
        rho, p = spearmanr([r.wd_attn for r in lost], [r.t_loss for r in lost])
        details.update(spearman_rho=float(rho), spearman_p=float(p))
        metric = f"Spearman rho(wd, t_loss) = {rho:.2f} (p = {p:.2g})"
        if rho > 0 and p < P_LATER:
            verdict, reason = "does not hold", reason + "; but stronger decay lost ICL later"
        elif rho > 0 and p < 0.05:
            verdict, reason = "inconclusive", reason + (f"; stronger decay lost ICL later (p = {p:.2g}: not below "
                                                        f"{P_LATER}, not rejected)")
        elif rho < 0:
            reason += "; stronger decay lost ICL sooner"
    if n_zero:
        reason += f"; {n_zero} seeds at wd_attn <= {WD_ATTN_FLOOR:g} (no decay) left out"
    return Verdict(prediction="transience", rung=rung, predicted="ICL acquired then lost; sooner for stronger decay",
                   measured=f"{len(lost)}/{len(acq)} transient", metric=metric, verdict=verdict, reason=reason + early,
                   details=details, figure_data={"rows": rows})


def _after_onset(s: SeedSummary, *cols: str) -> list[tuple]:
    """The columns at the seed's evaluations after its ICL onset, one tuple per evaluation."""
    keep = s.series("iteration") > s.t_icl
    return list(zip(*(s.series(c)[keep].tolist() for c in cols)))


def _loss_relation(seeds: list[SeedSummary], rung: str) -> Verdict:
    """ICL-IWL loss relation after acquisition (paper Fig. 6d): opposite trends."""
    from scipy.stats import spearmanr

    from icl_kinetics.validate.requirements import MIN_ACQUIRING_DECAY, MIN_POST_EVALS, inconclusive

    name = "icl_iwl_loss_relation"
    pairs = [p for s in seeds if s.observed for p in _after_onset(s, "iwl_loss", "icl_loss")]
    pairs = [(iwl, icl) for iwl, icl in pairs if np.isfinite(iwl) and np.isfinite(icl)]
    if not pairs:
        return Verdict.skipped(name, rung, "needs evaluations after acquisition with icl_loss and iwl_loss")
    n_acq = sum(s.observed for s in seeds)
    if len(pairs) < MIN_POST_EVALS or n_acq < MIN_ACQUIRING_DECAY:
        return inconclusive(name, rung, [f">= {MIN_ACQUIRING_DECAY} acquiring seeds with decay (has {n_acq}) and >= "
                                         f"{MIN_POST_EVALS} evaluations after acquisition (has {len(pairs)})"])
    rho, p = spearmanr(*map(list, zip(*pairs)))
    verdict = "holds" if (rho < 0 and p < 0.01) else ("does not hold" if (rho > 0 and p < 0.01) else "inconclusive")
    return Verdict(prediction=name, rung=rung, predicted="after acquisition the ICL loss rises as the IWL loss falls",
                   measured=f"Spearman rho(IWL loss, ICL loss) = {rho:.2f} over {len(pairs)} evaluations",
                   metric=f"p = {p:.2g}", verdict=verdict,
                   reason="an inverse relation (the theory's L_ICL L_IWL ~ lam w_tr / kappa) shows as a negative rank "
                          "correlation", details={"rho": float(rho), "p": float(p), "n": len(pairs)},
                   figure_data={"pairs": pairs})


def transience_tracking(table, rung: str = "transformer") -> Verdict:
    """After acquisition, w tracks w_tr(c3, wd_attn) (theory/transience.py): as the network
    memorizes, c3 falls, w_tr falls, and w should follow.  With coupled SGD weight decay
    (grad += wd * theta) the decay per unit learning-rate time is wd_attn.  Measured: the
    rank correlation between the (effective) w and w_tr(c3, wd_attn) over the
    post-acquisition evaluations."""
    from scipy.stats import spearmanr

    from icl_kinetics.theory import w_tr

    from icl_kinetics.validate.requirements import (
        MIN_ACQUIRING_DECAY, MIN_POST_EVALS, decayed, inconclusive, watched,
    )

    pairs, n_acq = [], 0
    for s in watched([s for s in seed_summaries(table) if decayed(s)]):
        got = [(w, float(w_tr(c3, s.wd_attn))) for w, c3 in _after_onset(s, "w", "c3")
               if np.isfinite(c3) and np.isfinite(w)]
        n_acq += bool(got)
        pairs += got
    if not pairs:
        return Verdict.skipped("transience_tracking", rung, "needs evaluations after acquisition with w, c3 and "
                               f"wd_attn > {WD_ATTN_FLOOR:g} (at or below it is no decay)")
    if len(pairs) < MIN_POST_EVALS or n_acq < MIN_ACQUIRING_DECAY:
        return inconclusive("transience_tracking", rung, [f">= {MIN_ACQUIRING_DECAY} acquiring seeds with decay (has "
                                                          f"{n_acq}) and >= {MIN_POST_EVALS} evaluations after "
                                                          f"acquisition (has {len(pairs)})"])
    rho, p = spearmanr(*map(list, zip(*pairs)))
    ratio = float(np.median([w / wt for w, wt in pairs if wt > 0]))
    verdict = "holds" if (rho > 0 and p < 0.01) else ("does not hold" if (rho < 0 and p < 0.01) else "inconclusive")
    return Verdict(prediction="transience_tracking", rung=rung, predicted="w follows w_tr(c3, wd) after acquisition",
                   measured=f"Spearman rho(w, w_tr) = {rho:.2f} over {len(pairs)} evaluations; median w / w_tr = "
                            f"{ratio:.2f}",
                   metric=f"p = {p:.2g}", verdict=verdict,
                   reason="a positive rank correlation means w rises and falls with w_tr; the ratio shows how far the "
                          "(effective) w sits from the beta -> inf tracking value",
                   details={"rho": float(rho), "p": float(p), "n": len(pairs), "median_ratio": ratio},
                   figure_data={"pairs": pairs})
