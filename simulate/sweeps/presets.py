"""Named presets: every experiment of the paper (paper-notes §4, §7.1) at two scales.

* ``paper``: the paper's grid, iteration caps and thresholds (N = len_context - 1, so
  the paper's N = 100 is N = 99 here; one epoch = 469 iterations; lr 0.01, width 512,
  batch 128, early stop at ICL accuracy 0.99 except for transience runs).
* ``small``: the same phenomenon on a 2-core CPU: N = 19 context tokens (the paper
  code's len_context 20), MLP width 128, lr 0.05, 1000-sequence test sets, a few
  thousand iterations.  How each was chosen is in ``docs/sweeps.md``.

Seeds per point are ours where the paper does not say.  ``smoke`` is a tiny sweep
(seconds) that checks an installation.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from icl_kinetics.errors import ParameterError, one_of
from icl_kinetics.simulate.bench import mlp_flops
from icl_kinetics.simulate.engine import TrainConfig
from icl_kinetics.simulate.sweeps.spec import SweepSpec, grid

SCALES = ("small", "paper")
EPOCH = 469  # iterations per 60000-sequence epoch at batch 128

PAPER = TrainConfig(model="transformer", N=99, K=None, width=512, lr=0.01, batch_size=128, seeds=8,
                    iterations=1000 * EPOCH, eval_every=EPOCH, eval_size=2000, early_stop=0.99,
                    checkpoint_every=20 * EPOCH, workers=1)
SMALL = TrainConfig(model="transformer", N=19, K=None, width=128, lr=0.05, batch_size=128, seeds=8,
                    iterations=6000, eval_every=100, eval_size=1000, early_stop=0.99, checkpoint_every=2000,
                    workers=1)


def _even(x) -> list[int]:
    """Round down to even integers (the paper's K values are even: balanced labels)."""
    return [int(v) // 2 * 2 for v in np.atleast_1d(x)]


def _log_k(lo, hi, n) -> list[int]:
    return _even(np.round(np.geomspace(lo, hi, n)))


def _paper_n():
    return [49, 99, 149, 199, 249]  # len_context 50 ... 250


# Each preset: (description, paper reference, builder(scale) -> SweepSpec).  Builders take the
# scale's base config and return the grid; the small K grids bracket the thresholds measured
# at that scale (docs/sweeps.md).
def _fig2bc(s):
    if s == "paper":
        return grid("fig2bc", s, PAPER, {"K": _even(np.linspace(500, 100_000, 10))}, seeds=8, seeds_per_run=8)
    return grid("fig2bc", s, SMALL, {"K": _log_k(256, 16384, 7)}, seeds=8, seeds_per_run=4)


def _fig2d(s):
    if s == "paper":
        return grid("fig2d", s, replace(PAPER, K=20_000), seeds=8)
    return grid("fig2d", s, replace(SMALL, K=4096, iterations=8000), seeds=8, seeds_per_run=4)


def _fig2e(s):
    if s == "paper":
        return grid("fig2e", s, replace(PAPER, K=10_000, wd_attn=3e-3, iterations=50_000 * EPOCH,
                                        early_stop=None, checkpoint_every=200 * EPOCH), seeds=4, seeds_per_run=4)
    return grid("fig2e", s, replace(SMALL, K=1024, wd_attn=1e-2, iterations=20_000, early_stop=None,
                                    eval_every=200), seeds=8, seeds_per_run=4)


def _fig5(s):
    ks = [498, 900, 1622, 2924, 5268, 9490, 17098, 30806, 55504, 99998]
    if s == "paper":
        base = TrainConfig(model="mlp", K=None, N=1, width=512, lr=0.01, iterations=20_000 * EPOCH,
                           eval_every=10 * EPOCH, early_stop=None, checkpoint_every=200 * EPOCH, workers=1)
        return grid("fig5", s, base, {"K": ks}, seeds=2, seeds_per_run=2)
    base = TrainConfig(model="mlp", K=None, N=1, width=128, lr=0.05, iterations=20_000, eval_every=250,
                       early_stop=None, checkpoint_every=5000, workers=1)
    return grid("fig5", s, base, {"K": _log_k(64, 16384, 7)}, seeds=2, seeds_per_run=2)


def _fig6a(s):
    if s == "paper":
        return grid("fig6a", s, replace(PAPER, iterations=2000 * EPOCH),
                    {"N": _paper_n(), "K": _log_k(498, 400_000, 30)}, seeds=4, seeds_per_run=4)
    # K in steps of sqrt(2): a grid of factor-2 steps left the slope of K* against N undetermined
    # (measured 1.00 with a 95% range 0.24-1.86 from intervals one grid step wide)
    return grid("fig6a", s, replace(SMALL, iterations=8000), {"N": [19, 29, 39], "K": _log_k(724, 11586, 9)},
                seeds=4, seeds_per_run=4)


def _kstar_slope(s):
    # Not part of `validate --preset small` (it would break the 60-minute budget): fig6a's
    # small grid spans N only by a factor of 2 with 4 seeds, which leaves the slope of K*
    # against N inconclusive.  This adds N = 9 (a factor of 4.3 in N, cheap to train) and 8
    # seeds per point, at fig6a's 8000-iteration horizon and sqrt(2) K steps, on a K window
    # per N that brackets both a slope of 1 and 1/nu = 1.64 from K*(19) ~ 1700.  At paper
    # scale fig6a's own grid (N = 49 ... 249, 30 K) already resolves it: the same runs.
    if s == "paper":
        a = _fig6a(s)
        return SweepSpec("kstar_slope", s, a.runs)
    base = replace(SMALL, iterations=8000)
    windows = {9: _log_k(256, 4096, 9), 19: _log_k(512, 8192, 9), 39: _log_k(1024, 16384, 9)}
    runs = tuple(r for N, ks in windows.items()
                 for r in grid("kstar_slope", s, base, {"N": [N], "K": ks}, seeds=8, seeds_per_run=4).runs)
    return SweepSpec("kstar_slope", s, runs)


def _fig6b(s):
    if s == "paper":
        return grid("fig6b", s, replace(PAPER, iterations=2000 * EPOCH), {"N": _paper_n()}, seeds=100,
                    seeds_per_run=50)
    return grid("fig6b", s, replace(SMALL, iterations=10_000), {"N": [9, 19, 29, 39]}, seeds=24,
                seeds_per_run=8)


def _fig6c(s):
    if s == "paper":
        return grid("fig6c", s, replace(PAPER, K=9666), seeds=100, seeds_per_run=50)
    return grid("fig6c", s, replace(SMALL, K=2048), seeds=32, seeds_per_run=8)


def _fig6e(s):
    # equalized contexts need an even N: the paper's len_context 100 (99 context tokens)
    # becomes N = 98 for both arms; small: N = 20
    if s == "paper":
        return grid("fig6e", s, replace(PAPER, N=98),
                    {"contexts": ["iid", "equalized"], "K": _log_k(4998, 49998, 10)}, seeds=8, seeds_per_run=8)
    return grid("fig6e", s, replace(SMALL, N=20), {"contexts": ["iid", "equalized"], "K": _log_k(512, 8192, 5)},
                seeds=4, seeds_per_run=4)


def _figA5(s):
    if s == "paper":
        return grid("figA5", s, replace(PAPER, model="transformer2", iterations=2000 * EPOCH),
                    {"N": _paper_n()}, seeds=16, seeds_per_run=16)
    return grid("figA5", s, replace(SMALL, model="transformer2", width=64, iterations=6000), {"N": [9, 19, 29]},
                seeds=8, seeds_per_run=4)


def _figA6(s):
    wds = [float(w) for w in np.geomspace(1e-3, 1e-2, 20)]
    if s == "paper":
        return grid("figA6", s, replace(PAPER, K=15_000, iterations=10_000 * EPOCH, early_stop=None,
                                        checkpoint_every=100 * EPOCH), {"wd_attn": wds}, seeds=2, seeds_per_run=2)
    return grid("figA6", s, replace(SMALL, K=1024, iterations=20_000, early_stop=None, eval_every=200),
                {"wd_attn": [float(w) for w in np.geomspace(3e-3, 3e-2, 5)]}, seeds=4, seeds_per_run=4)


def _figA8(s):
    if s == "paper":
        return grid("figA8", s, replace(PAPER, N=98, K=31_336, contexts="equalized"), seeds=8)
    return grid("figA8", s, replace(SMALL, N=20, K=6144, contexts="equalized"), seeds=8, seeds_per_run=4)


# Rung 2 of the validation ladder: the minimal model WITH its memorizing MLP phi (width 128,
# lr 0.1, beta0 = 0, w0 = 0), and the same MLP trained alone to measure c1(t).  Not a paper
# figure: it tests differential learning kinetics directly.  The K grid brackets the K* seen
# in probe runs (N = 50: no ICL at K = 256, ICL at 2048).
_RUNG2_K = [64, 128, 256, 512, 1024, 2048, 4096, 8192]


def _rung2(s):
    base = TrainConfig(model="minimal", N=50, width=128, beta0=0.0, lr=0.1, iterations=6000, eval_every=100,
                       eval_size=1000, early_stop=0.99, checkpoint_every=2000, workers=1)
    if s == "paper":
        base = replace(base, iterations=20_000, eval_size=2000)
    return grid("rung2", s, base, {"N": [50, 100], "K": _RUNG2_K}, seeds=8 if s == "paper" else 4,
                seeds_per_run=4)


def _rung2mlp(s):
    base = TrainConfig(model="mlp", N=1, width=128, lr=0.1, iterations=6000, eval_every=50, early_stop=None,
                       checkpoint_every=2000, workers=1)
    if s == "paper":
        base = replace(base, iterations=20_000)
    return grid("rung2mlp", s, base, {"K": _RUNG2_K}, seeds=2, seeds_per_run=2)


def _rung2_base(s):
    base = TrainConfig(model="minimal", N=50, width=128, beta0=0.0, lr=0.1, iterations=6000, eval_every=100,
                       eval_size=1000, early_stop=0.99, checkpoint_every=2000, workers=1)
    return replace(base, iterations=20_000, eval_size=2000) if s == "paper" else base


def _rung2bimodal(s):
    # beta0 ~ N(0, 1) per seed (the paper's minimal-model initialization) at K near the
    # measured rung-2 K* (~360 at N = 50): the theory says which seeds escape is set by beta0
    return grid("rung2bimodal", s, replace(_rung2_base(s), beta0=None, K=384, early_stop=None),
                seeds=64 if s == "paper" else 32, seeds_per_run=8)


def _rung2eq(s):
    return grid("rung2eq", s, _rung2_base(s), {"contexts": ["iid", "equalized"], "K": [256, 512, 1024, 2048, 4096]},
                seeds=8 if s == "paper" else 4, seeds_per_run=4)


def _rung2trans(s):
    # weight decay on (w, beta) only (wd_mlp = 0), K above K* so that the head escapes first
    return grid("rung2trans", s, replace(_rung2_base(s), K=768, early_stop=None, iterations=15_000 if s == "small"
                                         else 50_000, eval_every=250), {"wd_attn": [3e-3, 1e-2, 3e-2]},
                seeds=8 if s == "paper" else 4, seeds_per_run=4)


def _smoke(s):
    base = TrainConfig(model="transformer", N=9, D=12, width=16, batch_size=16, eval_size=64, iterations=200,
                       eval_every=50, lr=0.1, early_stop=None, checkpoint_every=100, workers=1)
    return grid("smoke", s, base, {"K": [20, 40, None]}, seeds=4, seeds_per_run=2)


PRESETS = {
    "fig2bc": ("ICL and IWL accuracy against K (the transition)", "Fig. 2b, 2c", _fig2bc),
    "fig2d": ("ICL accuracy against iterations at one K", "Fig. 2d", _fig2d),
    "fig2e": ("transient ICL under attention weight decay", "Fig. 2e, 6d", _fig2e),
    "fig5": ("standalone MLP memorization: c1, c2, c3 and I_K against K", "Fig. 5, A2, A3", _fig5),
    "fig6a": ("K* against N (sigmoid fits of ICL accuracy against log K)", "Fig. 6a, A7", _fig6a),
    "kstar_slope": ("K* against N over a wider N range (9 ... 39) with 8 seeds: the slope fig6a's small grid "
                    "leaves open", "Fig. 6a", _kstar_slope),
    "fig6b": ("t_ICL against N at K = inf, many seeds", "Fig. 6b, A4", _fig6b),
    "fig6c": ("bimodal outcomes near K*", "Fig. 6c", _fig6c),
    "fig6e": ("equalized against standard contexts across K", "Fig. 6e", _fig6e),
    "figA5": ("the two-layer transformer at K = inf", "Fig. A5", _figA5),
    "figA6": ("weight-decay sweep: time of ICL loss", "Fig. A6", _figA6),
    "figA8": ("equalized contexts at one K", "Fig. A8", _figA8),
    "rung2": ("minimal model with its memorizing MLP: which K acquire ICL, N = 50 and 100", "rung 2", _rung2),
    "rung2mlp": ("the same MLP alone: c1(t) and I_K for the rung-2 K* prediction", "rung 2", _rung2mlp),
    "rung2bimodal": ("minimal model + MLP near K*, beta0 ~ N(0, 1): bimodality", "rung 2", _rung2bimodal),
    "rung2eq": ("minimal model + MLP: equalized against i.i.d. contexts", "rung 2", _rung2eq),
    "rung2trans": ("minimal model + MLP: weight decay on (w, beta) only: transience", "rung 2", _rung2trans),
    "smoke": ("a tiny sweep that checks an installation (seconds)", "-", _smoke),
}


def preset(name: str, scale: str = "small", device: str = "cpu") -> SweepSpec:
    """The sweep ``name`` at ``scale`` ('small' or 'paper'), on ``device``."""
    one_of("preset", name, tuple(PRESETS))
    one_of("scale", scale, SCALES)
    desc, paper, build = PRESETS[name]
    spec = build(scale)
    if device != "cpu":
        spec = SweepSpec(spec.name, spec.scale, tuple(type(r)(replace(r.config, device=device), r.point)
                                                        for r in spec.runs), spec.description, spec.paper)
    return SweepSpec(spec.name, spec.scale, spec.runs, desc, paper)


# ----------------------------------------------------------------------------- cost model
# Milliseconds per seed-iteration on ONE core of the project's 2-core CPU (one engine
# worker, one thread, the other core busy with another run), fitted to measured runs
# (docs/sweeps.md, "Estimates"):
#   t = c_seed + c_flop * GFLOP(MLP fwd+bwd) + c_tok * B*N*T/1e6 + c_fresh * [K = inf] B*N*(D+T)/1e6
# plus the evaluations (forward passes only, about a third of a training step's cost).
# The two-layer model adds its middle MLP at every position (x4 for its full-attention
# autograd overhead, measured at N = 19, width 128).
COST = {"c_seed": 0.50, "c_seed_mlp": 0.15, "c_flop": 16.4, "c_tok": 1.71, "c_fresh": 5.7, "t2_mid_factor": 4.0}


def ms_per_seed_iteration(cfg: TrainConfig) -> float:
    """Estimated CPU milliseconds per seed-iteration for ``cfg`` on one core (see COST)."""
    T = cfg.D + (2 if cfg.labels == "onehot" else 1)
    B = cfg.batch_size
    if cfg.model == "mlp":
        flops = mlp_flops(B, cfg.D, cfg.width)
        tok = fresh = 0.0
        n_eval_seqs = min(cfg.K or 0, 10_000) / B
    else:
        width = cfg.width
        flops = mlp_flops(B, T, width) if width else 0.0
        if cfg.model == "transformer2":
            flops += COST["t2_mid_factor"] * mlp_flops(B * (cfg.N + 1), T, width)
        tok = B * cfg.N * T / 1e6
        fresh = B * cfg.N * (cfg.D + T) / 1e6 if cfg.K is None else 0.0
        n_eval_seqs = cfg.eval_size * (1 if cfg.K is None else 2) / B
    c0 = COST["c_seed_mlp"] if cfg.model == "mlp" else COST["c_seed"]
    step = c0 + COST["c_flop"] * flops / 1e9 + COST["c_tok"] * tok + COST["c_fresh"] * fresh
    return step * (1 + n_eval_seqs / (3 * cfg.eval_every))


#: seconds per run outside the training steps (a worker's share of process start-up and
#: imports, the item and test sets, checkpoints), measured on fig5 / fig2bc at small scale
RUN_OVERHEAD_S = 1.5


def estimate(spec: SweepSpec, cores: int = 2) -> dict:
    """Estimated CPU time of a sweep: the upper bound with every seed trained to its cap
    (early stopping only shortens runs), in core-hours and in wall hours on ``cores`` cores."""
    core_s = sum(r.seed_iterations * ms_per_seed_iteration(r.config) / 1e3 + RUN_OVERHEAD_S for r in spec.runs)
    return {"runs": len(spec.runs), "seeds": spec.seeds, "seed_iterations": spec.seed_iterations,
            "cpu_core_hours": core_s / 3600, "wall_hours_on_cores": core_s / 3600 / max(1, min(cores, len(spec.runs))),
            "cores": cores}


def list_presets(cores: int = 2) -> list[dict]:
    """Every preset at both scales, with its size and estimated CPU time."""
    out = []
    for name, (desc, paper, _) in PRESETS.items():
        row = {"preset": name, "figure": paper, "description": desc}
        for s in SCALES:
            row[s] = estimate(preset(name, s), cores)
        out.append(row)
    return out


def check_scale_preset(name: str, scale: str) -> None:
    if name not in PRESETS:
        raise ParameterError("preset", name, "one of " + ", ".join(PRESETS))
    one_of("scale", scale, SCALES)
