"""Named presets: every experiment of the paper (its Figs. 2-6 and A5) at two scales.

Each preset is a spec file, ``preset_specs/<name>.toml``, in the format any user's grid is
written in (:mod:`.specfile`, docs/sweeps.md "Spec files"); ``sweep run NAME`` runs it
(``sweep run --spec`` on a copy of it is the same sweep, with the same run ids).

* ``paper``: the paper's grid, iteration caps and thresholds (N = len_context - 1, so
  the paper's N = 100 is N = 99 here; one epoch = 469 iterations; lr 0.01, width 512,
  batch 128, early stop at ICL accuracy 0.99 except for transience runs).
* ``small``: the same phenomenon on a 2-core CPU: N = 19 context tokens (the paper
  code's len_context 20), MLP width 128, lr 0.05, 1000-sequence test sets, a few
  thousand iterations.  How each was chosen is in ``docs/sweeps.md``.

Grids that used to be computed (even K log-spaced, ``np.geomspace`` weight decays) are
written out as literal lists; ``tests/test_sweep_spec.py`` checks every preset's run ids,
at both scales, against those the computed presets had (``tests/data/preset_runs_before_specs.json``).
Seeds per point are ours where the paper does not say.  ``smoke`` is a tiny sweep
(seconds) that checks an installation.  ``scale_ladder`` (issue 14) is newer than that fixture:
its run ids are pinned by ``tests/test_ladder.py``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from icl_kinetics.errors import ParameterError, one_of
from icl_kinetics.simulate.bench import mlp_flops
from icl_kinetics.simulate.config import TrainConfig
from icl_kinetics.simulate.sweeps.spec import SweepSpec

SCALES = ("small", "paper")
EPOCH = 469  # iterations per 60000-sequence epoch at batch 128

#: the folder of the presets' spec files (shipped as package data)
SPEC_DIR = Path(__file__).resolve().parent / "preset_specs"
#: the presets, in the order ``sweep list`` shows them: name -> its spec file
PRESETS = {name: SPEC_DIR / f"{name}.toml" for name in (
    "fig2bc", "fig2d", "fig2e", "fig5", "fig6a", "kstar_slope", "scale_ladder", "fig6b", "fig6c", "fig6e", "figA5",
    "figA6", "figA8", "rung2", "rung2mlp", "rung2bimodal", "rung2eq", "rung2trans", "zipf_rung2", "smoke")}


@lru_cache(maxsize=None)
def _raw(name: str) -> dict:
    from icl_kinetics.simulate.sweeps.specfile import read_spec_file

    return read_spec_file(PRESETS[name])[0]


def describe_preset(name: str) -> tuple[str, str]:
    """(description, the paper's figure) of the preset ``name``."""
    one_of("preset", name, tuple(PRESETS))
    raw = _raw(name)
    return raw.get("description", ""), raw.get("paper", "")


def preset(name: str, scale: str = "small", device: str = "cpu") -> SweepSpec:
    """The sweep ``name`` at ``scale`` ('small' or 'paper'), on ``device``: its spec file,
    resolved (no ``spec`` record: a preset's folder keeps the ``sweep.json`` it always had)."""
    from icl_kinetics.simulate.sweeps.specfile import build, resolve

    one_of("preset", name, tuple(PRESETS))
    one_of("scale", scale, SCALES)
    return build(resolve(_raw(name), scale, str(PRESETS[name])), str(PRESETS[name]), device)


# ----------------------------------------------------------------------------- cost model
# Milliseconds per seed-iteration on ONE core of the project's 2-core CPU (one engine
# worker, one thread, the other core busy with another run), fitted to measured runs
# (docs/sweeps.md, "Estimates"):
#   t = c_seed + c_flop * GFLOP(MLP fwd+bwd) + c_tok * B*N*T/1e6 + c_fresh * [K = inf] B*N*(D+T)/1e6
# plus the evaluations (forward passes only, about a third of a training step's cost).
# The two-layer model adds its middle MLP at every position (x4 for its full-attention
# autograd overhead, measured at N = 19, width 128).
#
# c_step: the part of a step that does not grow with the seeds (torch op launches, Python),
# in ms per iteration of one group; c_seed holds c_step / (the run's seeds) of it.  A pack of
# S seeds (grid batching) pays c_step / S per seed-iteration instead (pack_ms_per_seed_iteration).
# c_step = 1.2 is PROVISIONAL (an op count x launch cost, not a fit): to be refitted from
# `sweep run fig6a --scale small` timed packed and unpacked (docs/sweeps.md, "Estimates").
COST = {"c_seed": 0.50, "c_seed_mlp": 0.15, "c_flop": 16.4, "c_tok": 1.71, "c_fresh": 5.7, "t2_mid_factor": 4.0,
        "c_step": 1.2}


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


def pack_ms_per_seed_iteration(cfg: TrainConfig, seeds: int) -> float:
    """Estimated CPU milliseconds per seed-iteration of ``cfg`` trained in a pack of ``seeds``
    seeds in all (grid batching): :func:`ms_per_seed_iteration` with the step's fixed part
    ``c_step`` shared by ``seeds`` seeds instead of the run's own."""
    own = max(1, cfg.seeds)
    saved = COST["c_step"] * (1.0 / own - 1.0 / max(own, seeds))
    return max(ms_per_seed_iteration(cfg) - saved, 0.2 * ms_per_seed_iteration(cfg))


def run_cost(cfg: TrainConfig) -> float:
    """Estimated CPU seconds of one run trained alone (every seed to its cap)."""
    return cfg.seeds * cfg.iterations * ms_per_seed_iteration(cfg) / 1e3 + RUN_OVERHEAD_S


# One NVIDIA H200 (docs/performance.md, "On an NVIDIA H200"): the transformer at the paper's
# Fig. 2 shapes (N = 99, K = 20000, width 512, batch 128, no evaluation) ran 2461
# seed-iterations/s at 16 seeds, 5399 at 64 and 5352 at 256.  A step of S seeds takes
# max(step_floor_ms, S * seed_ms): launch-bound (6.5 ms a step) below about 35 seeds, then
# linear in S (0.187 ms per seed-iteration, from 64 and 256 seeds).  Other shapes scale
# seed_ms by the CPU model's ratio to those shapes; checked against the one other GPU
# measurement, K = inf at N = 49 with evaluation, 64 seeds: 3160 measured, 2990 estimated.
GPU_COST = {"step_floor_ms": 6.5, "seed_ms": 0.187}
_GPU_REF = dict(model="transformer", N=99, K=20_000, width=512, batch_size=128, eval_every=10 ** 9)


@lru_cache(maxsize=None)
def _gpu_ref_cpu_ms() -> float:
    """The CPU model's milliseconds per seed-iteration at the GPU figures' shapes."""
    return ms_per_seed_iteration(TrainConfig(**_GPU_REF))


def gpu_ms_per_seed_iteration(cfg: TrainConfig, seeds: int) -> float:
    """Estimated milliseconds per seed-iteration of ``cfg`` on one H200 in a pack of ``seeds``
    seeds in all (see GPU_COST): the larger of the launch floor shared by the pack's seeds and
    the per-seed cost, which scales with the run's shapes as the CPU model does."""
    per_seed = GPU_COST["seed_ms"] * ms_per_seed_iteration(cfg) / _gpu_ref_cpu_ms()
    return max(GPU_COST["step_floor_ms"] / max(1, seeds), per_seed)


def pack_seconds(cfgs, device: str = "cpu") -> float:
    """Estimated seconds of a pack of runs (every seed to its cap): CPU seconds on one core
    (:func:`pack_ms_per_seed_iteration`), or on ``device="cuda"`` seconds on one H200
    (:func:`gpu_ms_per_seed_iteration`)."""
    S = sum(c.seeds for c in cfgs)
    ms = gpu_ms_per_seed_iteration if device == "cuda" else pack_ms_per_seed_iteration
    return sum(c.seeds * c.iterations * ms(c, S) / 1e3 + RUN_OVERHEAD_S for c in cfgs)


def estimate(spec: SweepSpec, cores: int = 2, device: str = "cpu") -> dict:
    """Estimated time of a sweep: the upper bound with every seed trained to its cap (early
    stopping only shortens runs), with the runs packed as the executor packs them (grid
    batching, ``plan_packs``).  On ``device="cpu"``: core-hours and wall hours on ``cores``
    cores.  On ``device="cuda"``: also ``gpu_hours``, the packs in sequence on one H200
    (``GPU_COST``; packs of up to 1024 seeds)."""
    from dataclasses import replace

    from icl_kinetics.simulate.sweeps.executors import plan_packs

    one_of("device", device, ("cpu", "cuda"))
    cuda = device == "cuda"
    runs = [replace(r, config=replace(r.config, device="cuda")) for r in spec.runs] if cuda else spec.runs
    packs = plan_packs(runs, processes=1 if cuda else cores)
    secs = [pack_seconds([r.config for r in p], device) for p in packs]
    size = {"runs": len(spec.runs), "packs": len(packs), "seeds": spec.seeds, "seed_iterations": spec.seed_iterations}
    if cuda:  # one process on one GPU: the packs in sequence
        return {**size, "gpu_hours": sum(secs) / 3600, "device": "cuda"}
    core_s = sum(secs)
    # the pool runs the packs longest first: the wall time is at least the longest pack
    wall = max(core_s / max(1, min(cores, len(packs))), max(secs, default=0.0))
    return {**size, "cpu_core_hours": core_s / 3600, "wall_hours_on_cores": wall / 3600, "cores": cores}


def list_presets(cores: int = 2, device: str = "cpu") -> list[dict]:
    """Every preset at both scales, with its size and estimated time on ``device``
    (:func:`estimate`)."""
    out = []
    for name in PRESETS:
        desc, paper = describe_preset(name)
        row = {"preset": name, "figure": paper, "description": desc}
        for s in SCALES:
            row[s] = estimate(preset(name, s), cores, device)
        out.append(row)
    return out


def check_scale_preset(name: str, scale: str) -> None:
    if name not in PRESETS:
        raise ParameterError("preset", name, "one of " + ", ".join(PRESETS))
    one_of("scale", scale, SCALES)
