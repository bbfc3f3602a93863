"""Transient ICL under L2 weight decay on the in-context pathway (``wd_attn``; paper Figs.
2e, 6d, A6): ICL is acquired, then lost as memorization proceeds, sooner for stronger
decay; the ICL loss rises as the IWL loss falls; and w tracks w_tr(c3, wd_attn)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from icl_kinetics.validate.core import SeedSummary, Verdict, seed_summaries


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
    every = [s for s in seed_summaries(table) if np.isfinite(s.wd_attn)]
    if not every:
        return [Verdict.skipped("transience", rung, "needs the wd_attn column")]
    # the prediction is about decay on the in-context pathway: runs without it (wd_attn = 0)
    # are not evidence either way (an accuracy flicker below 0.9 there is not transience)
    seeds = [s for s in every if s.wd_attn > 0]
    n_zero = len(every) - len(seeds)
    if not seeds:
        why = f"needs runs with wd_attn > 0 (L2 on the in-context pathway); all {n_zero} seeds have wd_attn = 0"
        return [Verdict.skipped("transience", rung, why), Verdict.skipped("icl_iwl_loss_relation", rung, why)]
    rows = [_transience_row(s, lost_below) for s in seeds]
    return [_transience_verdict(rows, n_zero, rung, lost_below), _loss_relation(seeds, rung)]


def _transience_verdict(rows: list[TransienceRow], n_zero: int, rung: str, lost_below: float) -> Verdict:
    from scipy.stats import spearmanr

    acq = [r for r in rows if r.acquired]
    lost = [r for r in acq if r.lost]
    wds = sorted({r.wd_attn for r in rows})
    details = {"seeds": len(rows), "acquired": len(acq), "lost": len(lost),
               "per_wd": {str(w): {"acquired": sum(r.acquired for r in rows if r.wd_attn == w),
                                   "lost": sum(r.lost for r in rows if r.wd_attn == w),
                                   "n": sum(r.wd_attn == w for r in rows)} for w in wds}}
    if not lost:
        return Verdict(prediction="transience", rung=rung, predicted="ICL acquired, then lost",
                       measured=f"{len(acq)} of {len(rows)} seeds acquired, none lost ICL",
                       verdict="inconclusive" if acq else "skipped",
                       reason="no seed lost ICL within the runs (too short, or decay too weak at this scale)" if acq
                       else "no seed acquired ICL", details=details, figure_data={"rows": rows})
    verdict = "holds"
    reason = f"{len(lost)} of {len(acq)} seeds that acquired ICL lost it (accuracy < {lost_below})"
    metric = "count of transient seeds"
    if len({r.wd_attn for r in lost}) >= 3:
        rho, p = spearmanr([r.wd_attn for r in lost], [r.t_loss for r in lost])
        details.update(spearman_rho=float(rho), spearman_p=float(p))
        metric = f"Spearman rho(wd, t_loss) = {rho:.2f} (p = {p:.2g})"
        if rho > 0 and p < 0.05:
            verdict, reason = "does not hold", reason + "; but stronger decay lost ICL later"
        elif rho < 0:
            reason += "; stronger decay lost ICL sooner"
    if n_zero:
        reason += f"; {n_zero} seeds at wd_attn = 0 left out"
    return Verdict(prediction="transience", rung=rung, predicted="ICL acquired then lost; sooner for stronger decay",
                   measured=f"{len(lost)}/{len(acq)} transient", metric=metric, verdict=verdict, reason=reason,
                   details=details, figure_data={"rows": rows})


def _after_onset(s: SeedSummary, *cols: str) -> list[tuple]:
    """The columns at the seed's evaluations after its ICL onset, one tuple per evaluation."""
    keep = s.series("iteration") > s.t_icl
    return list(zip(*(s.series(c)[keep].tolist() for c in cols)))


def _loss_relation(seeds: list[SeedSummary], rung: str) -> Verdict:
    """ICL-IWL loss relation after acquisition (paper Fig. 6d): opposite trends."""
    from scipy.stats import spearmanr

    name = "icl_iwl_loss_relation"
    pairs = [p for s in seeds if s.observed for p in _after_onset(s, "iwl_loss", "icl_loss")]
    pairs = [(iwl, icl) for iwl, icl in pairs if np.isfinite(iwl) and np.isfinite(icl)]
    if len(pairs) < 10:
        return Verdict.skipped(name, rung, "needs >= 10 post-acquisition evaluations with icl_loss and iwl_loss")
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

    pairs = []
    for s in seed_summaries(table):
        if not s.observed or not np.isfinite(s.wd_attn) or s.wd_attn <= 0:
            continue
        pairs += [(w, float(w_tr(c3, s.wd_attn))) for w, c3 in _after_onset(s, "w", "c3")
                  if np.isfinite(c3) and np.isfinite(w)]
    if len(pairs) < 10:
        return Verdict.skipped("transience_tracking", rung,
                               "needs >= 10 post-acquisition evaluations with w, c3 and wd_attn > 0")
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
