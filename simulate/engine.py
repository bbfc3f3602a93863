"""The seed-batched training engine: S independent seeds trained in one process.

:func:`train` runs plain SGD (per-group coupled L2 weight decay, logistic loss) on
one of the models of :mod:`icl_kinetics.simulate.models`, and logs a tidy metrics
table (one row per seed x logged evaluation).  It checkpoints atomically and resumes
after a kill with no lost progress and the same numbers.

**Backends** (``TrainConfig.backend``).  ``"autograd"``: the model of
:mod:`~icl_kinetics.simulate.models` on sequences from the data generator of
:mod:`~icl_kinetics.simulate.data`, gradients by torch autograd.  ``"overlaps"``: the
exact K -> infinity overlap sampler of :mod:`~icl_kinetics.simulate.overlaps`, valid for
``model="minimal"``, ``K=None``, ``width=0`` on the CPU, where it is two orders of
magnitude faster.  ``"auto"`` (the default) picks ``"overlaps"`` where it is valid.  Both
go through the one loop here (:func:`_run_group`): the same evaluation, t_ICL, early
stop, divergence handling, logging, checkpoints and result.

**Seeds.**  Seed index ``i`` of base seed ``seed`` draws its initialization and its
training-data stream from generators derived only from ``(seed, i)``
(:func:`~icl_kinetics.simulate.data.seed_generators`,
:func:`~icl_kinetics.simulate.data.overlap_streams`), so a seed gives the same numbers
alone or inside any batch.  With autograd the item set and the test sets come from
``item_seed`` and are shared by every seed (as in the paper's code, whose training items
use a fixed seed); the overlap sampler draws each seed's own test set from its own
stream.

**Parallelism.**  On CPU the seeds are split into ``workers`` groups; each group runs
in its own thread with one intra-op thread (small matmuls run much slower with two
threads each than with two single-threaded workers).  The overlap sampler's groups run
in forked worker processes instead for runs of >= 2e5 seed-iterations on Linux (its
step is short and GIL-bound: two threads lose 10-30 % to each other); a process runs
its group for one checkpoint segment and sends the group's state back through a pipe.
The numbers are the same either way.  On CUDA one group holds all seeds.

**Time** is counted in iterations (one SGD step on ``batch_size`` sequences each);
``lr`` and the weight decays are per iteration (learning-rate time is lr * t).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np

from icl_kinetics.errors import ParameterError, finite_float, one_of, positive_float, positive_int, probability
from icl_kinetics.simulate.workers import run_in_threads
from icl_kinetics.theory import T_ICL_THRESHOLD

__all__ = ["TrainConfig", "TrainResult", "train", "time_steps", "metrics_table", "METRIC_COLUMNS", "BACKENDS"]

#: the engine's backends (``TrainConfig.backend``)
BACKENDS = ("auto", "overlaps", "autograd")
#: fields added after runs were stored: left out of :meth:`TrainConfig.identity` (and so of
#: ``config_hash`` and the sweep ``run_id``) while at these defaults, so existing runs keep
#: their ids
_OMITTED_AT_DEFAULT = {"w0": 0.0, "log_every": None, "backend": "auto"}
#: the overlap sampler runs its groups in forked processes from this many seed-iterations on
_PROCESS_MIN_SEED_ITERATIONS = 200_000

#: columns of the tidy metrics table, in order (units in docs/engine.md)
METRIC_COLUMNS = ("seed", "iteration", "train_loss", "icl_acc", "icl_loss", "iwl_acc", "iwl_loss",
                  "c1", "c2", "c3", "w", "beta", "attn_logit_std")


@dataclass(frozen=True)
class TrainConfig:
    """One batch of independent training runs (one per seed).

    Model:
        model: ``"transformer"`` (the paper's), ``"transformer2"`` (Fig. A5),
            ``"minimal"`` (phi + (w, beta); ``width = 0``: no phi) or ``"mlp"``
            (standalone memorization, Fig. 5).
        width: MLP width (paper 512).  D: item dimension (paper 63).
        labels: token label encoding, ``"onehot"`` (paper code, T = D + 2) or ``"pm1"``.
        beta0: initial beta of the minimal model (1/overlap): a number, a tuple of one
            number per seed (position i of this batch), or None (N(0, 1) per seed, from
            the seed's "init" stream).
        w0: initial w of the minimal model (default 0).
        backend: ``"auto"``, ``"overlaps"`` or ``"autograd"`` (module docstring).
    Data:
        N: context tokens, NOT counting the target (paper code ``len_context - 1``).
        K: training items (even), None for K -> infinity.
        contexts: ``"iid"`` or ``"equalized"``.  zipf_alpha: item-frequency exponent.
        eval_size: sequences per test set.  item_seed: seed of the item set and test sets.
    Optimization:
        lr: SGD learning rate.  batch_size: sequences per iteration.
        wd_attn: L2 weight decay on LayerNorm and q/k/v (and w, beta).  wd_mlp: on the MLPs.
    Runs:
        seeds: number of seeds; seed, seed_offset: seed index i is ``(seed, seed_offset + i)``.
        iterations: iteration cap.  eval_every: iterations between evaluations.
        log_every: iterations between logged metric rows, a multiple of ``eval_every``
            (None: every evaluation).  t_ICL and early stopping are still decided at
            every evaluation, and the evaluation at which a seed acquires ICL or stops is
            always logged; a logged row is the row the run logs with ``log_every=None``
            (the overlap sampler's up to float rounding).
        early_stop: stop a seed once its ICL accuracy exceeds this (None: never).
        t_icl_threshold: ICL accuracy that defines t_ICL (first evaluation above it;
            default :data:`icl_kinetics.theory.T_ICL_THRESHOLD`).
        checkpoint_every: iterations between checkpoints (with ``out``).
        device: ``"cpu"`` or ``"cuda"``.  workers: CPU worker threads (None: all cores).
    """

    model: str = "transformer"
    N: int = 99
    K: int | None = None
    D: int = 63
    width: int = 512
    labels: str = "onehot"
    contexts: str = "iid"
    zipf_alpha: float = 0.0
    beta0: float | None = None
    lr: float = 0.01
    batch_size: int = 128
    wd_attn: float = 0.0
    wd_mlp: float = 0.0
    seeds: int = 8
    seed: int = 0
    seed_offset: int = 0
    item_seed: int = 10
    iterations: int = 20_000
    eval_every: int = 100
    eval_size: int = 2000
    early_stop: float | None = 0.99
    t_icl_threshold: float = T_ICL_THRESHOLD
    checkpoint_every: int = 5000
    device: str = "cpu"
    workers: int | None = None
    w0: float = 0.0
    log_every: int | None = None
    backend: str = "auto"

    def __post_init__(self):
        # per-seed beta0 as a tuple of floats (a list from a JSON file is the same config)
        if isinstance(self.beta0, (list, tuple, np.ndarray)):
            b = np.asarray(self.beta0, dtype=object).ravel()
            object.__setattr__(self, "beta0", tuple(float(v) if isinstance(v, (int, float, np.number))
                                                    and not isinstance(v, bool) else v for v in b))
        # an integer-valued float (K=20.0, from a JSON or YAML file) is that integer: one
        # configuration, one hash
        for f in ("N", "K", "D", "width", "batch_size", "seeds", "seed", "seed_offset", "item_seed", "iterations",
                  "eval_every", "eval_size", "checkpoint_every", "workers", "log_every"):
            v = getattr(self, f)
            if isinstance(v, (float, np.floating)) and not isinstance(v, bool) and float(v).is_integer():
                object.__setattr__(self, f, int(v))
            elif isinstance(v, np.integer):
                object.__setattr__(self, f, int(v))
        if isinstance(self.w0, (int, np.number)) and not isinstance(self.w0, bool):
            object.__setattr__(self, "w0", float(self.w0))

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the first bad parameter."""
        from icl_kinetics.simulate.models import KINDS

        one_of("model", self.model, KINDS)
        self.data_config().validate()
        if self.model == "mlp" and self.K is None:
            raise ParameterError("K", self.K, "an even integer >= 2 for model 'mlp' (it memorizes a finite item set)")
        positive_int("width", self.width, 0 if self.model == "minimal" else 1)
        positive_float("lr", self.lr)
        positive_int("batch_size", self.batch_size, 1)
        positive_float("wd_attn", self.wd_attn, allow_zero=True)
        positive_float("wd_mlp", self.wd_mlp, allow_zero=True)
        positive_int("seeds", self.seeds, 1)
        positive_int("seed", self.seed, 0)
        positive_int("seed_offset", self.seed_offset, 0)
        positive_int("item_seed", self.item_seed, 0)
        positive_int("iterations", self.iterations, 0)
        positive_int("eval_every", self.eval_every, 1)
        positive_int("checkpoint_every", self.checkpoint_every, 1)
        if self.early_stop is not None:
            probability("early_stop", self.early_stop, open_interval=False)
        probability("t_icl_threshold", self.t_icl_threshold, open_interval=False)
        if isinstance(self.beta0, tuple):
            if len(self.beta0) != self.seeds:
                raise ParameterError("beta0", self.beta0, f"a number, None, or a tuple of seeds = {self.seeds} "
                                     "numbers (one per seed)")
            for v in self.beta0:
                finite_float("beta0", v)
        elif self.beta0 is not None:
            finite_float("beta0", self.beta0)
        finite_float("w0", self.w0)
        if self.w0 != 0 and self.model != "minimal":
            raise ParameterError("w0", self.w0, "0 unless model='minimal' (w0 is the minimal model's initial w)")
        if self.log_every is not None:
            positive_int("log_every", self.log_every, 1)
            if self.log_every % self.eval_every:
                raise ParameterError("log_every", self.log_every,
                                     f"None or a multiple of eval_every = {self.eval_every}")
        one_of("device", self.device, ("cpu", "cuda"))
        one_of("backend", self.backend, BACKENDS)
        if self.backend == "overlaps":
            from icl_kinetics.simulate import overlaps

            if not overlaps.valid_for(self):
                raise ParameterError("backend", "overlaps", "'auto' or 'autograd' here: the overlap sampler is "
                                     "exact only for model='minimal' with K=None and width=0, on device='cpu'")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ParameterError("device", "cuda", "'cpu': no CUDA GPU is available on this machine")
        if self.workers is not None:
            positive_int("workers", self.workers, 1)

    def resolve_backend(self) -> str:
        """The backend this configuration runs on: ``"overlaps"`` or ``"autograd"``."""
        if self.backend != "auto":
            return self.backend
        from icl_kinetics.simulate import overlaps

        return "overlaps" if overlaps.valid_for(self) else "autograd"

    def estimate_bytes(self) -> tuple[float, str]:
        """Estimated peak memory of :func:`train` in bytes, and the parameter that dominates it.

        An upper-side estimate from the engine's allocations (float32 = 4 bytes):
        the shared item set and token tables (K x (D + 2T)); per seed, four copies of the
        parameters (store, live copy, gradient, update) and a training batch's activations,
        about 8 tensors of batch x (N + 1) x max(T, D) through forward and backward (plus the
        (N + 1)^2 attention maps of ``transformer2`` and the batch x width MLP activations);
        the test sets (eval_size x (N + 1) indices, or items for K = inf) and their
        250-sequence evaluation chunks.  It is for refusing sizes that cannot fit, up front;
        ordinary runs use a fraction of it (``benchmarks/bench_engine.py`` reports max RSS).
        The overlap sampler's estimate is :func:`icl_kinetics.simulate.overlaps.peak_bytes`.
        """
        if self.resolve_backend() == "overlaps":
            return self._overlaps_bytes()
        T = self.D + (2 if self.labels == "onehot" else 1)
        L, W, B, S = self.N + 1, max(self.width, 1), self.batch_size, self.seeds
        d = max(T, self.D)
        if self.model in ("transformer", "transformer2"):
            params = 3 * T * T + 2 * T + T * W + W * W + W + 2 * W + 1
            if self.model == "transformer2":
                params += 3 * T * T + T * W + W * W + W * T + 2 * W + T
        elif self.model == "minimal":
            params = 2 + (self.D * W + W * W + W + 2 * W + 1 if self.width else 0)
        else:
            params = self.D * W + W * W + W + 2 * W + 1
        act = 8.0 * B * L * d + 4.0 * B * W
        if self.model == "transformer2":
            act += 4.0 * B * L * L
        if self.model == "mlp":
            act = 8.0 * B * (self.D + W)
        shared = 0.0 if self.K is None else float(self.K) * (self.D + 2 * T)
        per_seed = 4.0 * params + act + (B * L * self.D if self.K is None else 0.0)
        evals = 2.0 * self.eval_size * L * (2 if self.K is not None else self.D) + 2.0 * S * 250 * L * d
        total = 4.0 * (shared + S * per_seed + evals)
        # name the size furthest above an ordinary run's (the paper's shapes, 16 seeds)
        ref = {"seeds": 16, "batch_size": 128, "N": 99, "K": 20_000, "eval_size": 2000, "width": 512, "D": 63}
        top = max(ref, key=lambda k: (getattr(self, k) or 0) / ref[k])
        return total, top

    def _overlaps_bytes(self) -> tuple[float, str]:
        """The overlap sampler's estimate, and the size whose reset to an ordinary run's
        value (100 seeds x 10^4 iterations at N = 100) lowers it the most."""
        from dataclasses import replace

        from icl_kinetics.simulate import overlaps

        procs = _use_processes(self, _resolve_workers(self))
        need = overlaps.peak_bytes(self, processes=procs)
        ref = {"seeds": 100, "batch_size": 128, "N": 100, "eval_size": 2000, "iterations": 10_000}
        drop = {k: need - overlaps.peak_bytes(replace(self, **{k: min(v, getattr(self, k))}), processes=procs)
                for k, v in ref.items()}
        return float(need), max(drop, key=drop.get)

    def require_memory(self) -> None:
        """Refuse (ParameterError naming the dominant size) a run whose estimated peak
        memory (:meth:`estimate_bytes`) exceeds what this machine has available."""
        from icl_kinetics.resources import require_memory

        need, name = self.estimate_bytes()
        require_memory(name, getattr(self, name), need, f"training {self.seeds} seed(s) of {self.model!r}")

    def data_config(self):
        from icl_kinetics.simulate.data import DataConfig

        return DataConfig(N=self.N, K=self.K, D=self.D, labels=self.labels, contexts=self.contexts,
                          zipf_alpha=self.zipf_alpha, eval_size=self.eval_size)

    def model_config(self):
        from icl_kinetics.simulate.models import ModelConfig

        T = self.D + (2 if self.labels == "onehot" else 1)
        beta0 = None if isinstance(self.beta0, tuple) else self.beta0  # per seed: see beta0_of
        return ModelConfig(kind=self.model, token_dim=T, D=self.D, width=self.width, beta0=beta0, w0=self.w0)

    def beta0_of(self, i: int):
        """Initial beta of seed position ``i`` (0 <= i < seeds): a float, or None (drawn)."""
        return self.beta0[i] if isinstance(self.beta0, tuple) else self.beta0

    def to_dict(self) -> dict:
        d = asdict(self)
        if isinstance(d["beta0"], tuple):
            d["beta0"] = list(d["beta0"])
        return d

    def identity(self, exclude=()) -> dict:
        """The fields that identify the run's numbers, less ``exclude``; the fields of
        ``_OMITTED_AT_DEFAULT`` are left out while at their defaults (so a configuration
        that does not use them has the id it had before they existed)."""
        return {k: v for k, v in self.to_dict().items()
                if k not in exclude and not (k in _OMITTED_AT_DEFAULT and v == _OMITTED_AT_DEFAULT[k])}

    def config_hash(self, exclude=("iterations", "workers", "checkpoint_every")) -> str:
        """Hash of everything that determines the numbers (not the cap or the parallelism)."""
        return hashlib.sha256(json.dumps(self.identity(exclude), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ParameterError("config", sorted(unknown), "only fields of TrainConfig")
        return cls(**d)


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    ``t_icl``: per seed, the first evaluated iteration at which ICL accuracy exceeded
    ``t_icl_threshold`` (None: never, right-censored at ``iterations_done``).
    ``status``: per seed, ``"running"`` (reached the cap), ``"stopped"`` (early stop)
    or ``"diverged"`` (non-finite loss; the reason is in ``reasons``).
    ``rows``: the tidy metrics table (:data:`METRIC_COLUMNS`).
    """

    config: TrainConfig
    t_icl: list
    status: list
    reasons: list
    iterations_done: int
    rows: list = field(default_factory=list)
    seconds: float = float("nan")
    seed_iterations: int = 0
    notes: list = field(default_factory=list)  # e.g. a damaged checkpoint that was set aside

    def summary(self) -> dict:
        last = {}
        for r in self.rows:
            last[r["seed"]] = r
        return {
            "config": self.config.to_dict(),
            "t_icl": self.t_icl,
            "status": self.status,
            "reasons": self.reasons,
            "iterations_done": self.iterations_done,
            "final_icl_acc": [last.get(self.config.seed_offset + i, {}).get("icl_acc") for i in range(self.config.seeds)],
            "final_iwl_acc": [last.get(self.config.seed_offset + i, {}).get("iwl_acc") for i in range(self.config.seeds)],
            "seconds": self.seconds,
            "seed_iterations": self.seed_iterations,
            "notes": list(self.notes),
            "units": {"t_icl": "iterations", "iterations_done": "iterations"},
        }


# ----------------------------------------------------------------------------- per-model work
def _forward_transformer(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    _, items, labels, ctx, tgt = inp
    sh = grp.shared
    if tables is not None:
        n_c, n_t = tables
    elif items.dim() == 2 and sh.tables is not None and items is sh.items:
        n_c, n_t = sh.tables
    else:
        n_c, n_t = sh.token_tables(items, labels)
    need = ctx.numel() * n_c.shape[-1]
    if grp._gbuf is None or grp._gbuf.numel() < need:
        grp._gbuf = grp.torch.empty(need, device=grp.device, dtype=n_c.dtype)
    return mm.transformer_fast(p, n_c, n_t, ctx, tgt, return_attention=attention, buffer=grp._gbuf)


def _forward_transformer2(grp, p, inp, attention, tables):
    """Every position is needed (see models.py): dense tokens."""
    from icl_kinetics.simulate import data as dm
    from icl_kinetics.simulate import models as mm

    torch = grp.torch
    _, items, labels, ctx, tgt = inp
    if items.dim() == 2:
        c, t = dm.token_table(items, labels, grp.cfg.labels)
        tok = torch.cat([c[ctx], t[tgt].unsqueeze(2)], dim=2)
    else:
        ct = [dm.token_table(i, l, grp.cfg.labels) for i, l in zip(items, labels)]
        tok = torch.stack([torch.cat([c[cx], t[tg].unsqueeze(1)], dim=1) for (c, t), cx, tg in zip(ct, ctx, tgt)])
    return mm.transformer_reference(p, tok, return_attention=attention)


def _forward_minimal(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    _, items, labels, ctx, tgt = inp
    return mm.minimal_forward(p, items, labels, ctx, tgt, return_attention=attention)


def _forward_mlp(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    return mm.mlp_forward(p, grp.shared.items[inp[1]])


@dataclass(frozen=True)
class _Kind:
    """What the engine does differently per model (the one place that depends on it).

    forward(group, params, inputs, attention, tables): logits (S, n) [, attention].
    icl: trained on sequences with an ICL readout (t_ICL, early stop, the ICL test set and
        the attention diagnostics); False: on bare items (the standalone MLP).
    coefficients: where c1, c2, c3 come from: ``"iwl"`` (phi_plus = y * logit on the IWL
        test set), ``"probe"`` (phi_plus = y * phi on up to 10^4 training items, when the
        model has an MLP phi and K is finite) or None.
    token_tables: normalize the token tables once per run (the fast transformer path).
    params_wb: the w and beta columns are the model's own parameters.
    """

    forward: object
    icl: bool = True
    coefficients: str | None = "iwl"
    token_tables: bool = False
    params_wb: bool = False


_KINDS = {
    "transformer": _Kind(_forward_transformer, token_tables=True),
    "transformer2": _Kind(_forward_transformer2),
    "minimal": _Kind(_forward_minimal, coefficients="probe", params_wb=True),
    "mlp": _Kind(_forward_mlp, icl=False, coefficients="probe"),
}


def _coefficients(phi_plus) -> tuple:
    """c1, c2, c3 (S,) of correct-label logits phi_plus (S, n), float64: the theory's one
    definition, :func:`icl_kinetics.theory.mlp_coefficients`."""
    from icl_kinetics.theory import mlp_coefficients

    c = mlp_coefficients(phi_plus, axis=-1)
    return c["c1"], c["c2"], c["c3"]


# ----------------------------------------------------------------------------- shared data
class _Shared:
    """What every seed shares (autograd backend): the item set, test sets and their
    normalized token tables."""

    def __init__(self, cfg: TrainConfig, device):
        import torch

        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate.models import normalize_tokens

        kind = _KINDS[cfg.model]
        self.dcfg = dcfg = cfg.data_config()
        gen = dm.item_generator(cfg.item_seed, device=device)
        self.items = self.labels = None
        if cfg.K is not None:
            self.items, self.labels = dm.make_item_set(cfg.K, cfg.D, gen, device=device)
        enc = cfg.labels
        self.tables = None
        self.icl = self.iwl = None
        if kind.icl:
            # novel items with fresh balanced labels, from the shared item stream
            self.icl = dm.icl_test_set(dcfg, None, gen, device=device)
            self.iwl = dm.iwl_test_set(dcfg, self.items, self.labels, gen, device=device) if cfg.K else None
            if cfg.K is not None and kind.token_tables:
                c, t = dm.token_table(self.items, self.labels, enc)
                self.tables = (normalize_tokens(c), normalize_tokens(t))
        # memorization probe: phi_plus on (up to) 10^4 training items
        self.probe = None
        if cfg.K is not None and kind.coefficients == "probe" and cfg.width:
            n = min(cfg.K, 10_000)
            self.probe = torch.arange(n, device=device)
        self.enc = enc
        self._norm = normalize_tokens
        self.test_tables = {}
        if kind.token_tables:  # normalized once, not at every evaluation
            for name, b in (("icl", self.icl), ("iwl", self.iwl)):
                if b is not None:
                    self.test_tables[name] = self.token_tables(b.items, b.labels)

    def token_tables(self, items, labels):
        """Normalized (context, target) token tables for an item table (M, D) or (S, M, D)."""
        from icl_kinetics.simulate import data as dm

        if items.dim() == 2:
            c, t = dm.token_table(items, labels, self.enc)
        else:
            ct = [dm.token_table(i, l, self.enc) for i, l in zip(items, labels)]
            import torch

            c, t = torch.stack([x[0] for x in ct]), torch.stack([x[1] for x in ct])
        return self._norm(c), self._norm(t)


# ----------------------------------------------------------------------------- seed group
class _Group:
    """A group of seeds trained together (one worker), autograd backend.

    The interface that :func:`_run_group` drives (the overlap sampler's
    :class:`~icl_kinetics.simulate.overlaps.OverlapGroup` has the same): ``step()``,
    ``begin_eval(it)`` / ``passes(sel, threshold)`` / ``log(sel, it)``,
    ``deactivate(local)``, the per-seed lists ``active``, ``t_icl``, ``status``,
    ``reasons``, ``its``, the metric ``rows``, ``last_eval``, and ``state()`` / ``load()``.
    """

    backend = "autograd"

    def __init__(self, cfg: TrainConfig, shared: _Shared, idx: list[int], device):
        import torch
        from dataclasses import replace

        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate import models as mm

        self.torch, self.cfg, self.shared, self.idx, self.device = torch, cfg, shared, idx, device
        self.kind = _KINDS[cfg.model]
        self.mcfg = cfg.model_config()
        per_seed, self.gens, self.samplers = [], [], []
        for i in idx:
            g = dm.seed_generators(cfg.seed, cfg.seed_offset + i, device=device)
            # parameters are always drawn on CPU, so a seed starts the same on every device
            gi = g["init"] if device.type == "cpu" else dm.seed_generators(cfg.seed, cfg.seed_offset + i)["init"]
            per_seed.append(mm.init_params(replace(self.mcfg, beta0=cfg.beta0_of(i)), gi))
            self.gens.append(g["data"])
            if self.kind.icl:
                self.samplers.append(dm.SequenceSampler(shared.dcfg, shared.items, shared.labels, g["data"],
                                                        device=device))
            else:
                self.samplers.append(dm.ItemSampler(cfg.K, cfg.zipf_alpha, g["data"], device=device))
        self.store = mm.stack_params(per_seed, device=device)
        self.att_names, self.mlp_names = mm.param_groups(self.store)
        S = len(idx)
        self.active = list(range(S))
        self.p = self._select()
        self.t_icl = [None] * S
        self.status = ["running"] * S
        self.reasons = [""] * S
        self.loss_sum = torch.zeros(S, dtype=torch.float64, device=device)
        self.loss_n = 0
        self._gbuf = None  # reused scratch for the gathered tokens (fresh pages cost ~3x)
        self.last_eval = -1
        self.rows: list = []
        self.its = [0] * S  # iterations trained, per seed
        self._cols, self._pos = {}, {}

    # -- parameters ------------------------------------------------------------------
    def _select(self):
        t = self.torch.tensor(self.active, dtype=self.torch.long, device=self.device)
        return {k: v[t].clone().requires_grad_(True) for k, v in self.store.items()}

    def _write_back(self):
        if not self.active:  # every seed stopped: the store already holds their parameters
            return
        t = self.torch.tensor(self.active, dtype=self.torch.long, device=self.device)
        with self.torch.no_grad():
            for k, v in self.p.items():
                self.store[k][t] = v.detach()

    def deactivate(self, local: list[int]):
        """Stop seeds (positions in this group); their parameters are kept in the store."""
        self._write_back()
        self.active = [j for j in self.active if j not in set(local)]
        self.p = self._select() if self.active else {}

    # -- forward -----------------------------------------------------------------------
    def _draw(self):
        """A training batch for the active seeds: (logits fn inputs, y)."""
        torch = self.torch
        cfg = self.cfg
        if not self.kind.icl:
            idx = torch.stack([self.samplers[j].sample(cfg.batch_size) for j in self.active])
            return ("items", idx), self.shared.labels[idx]
        batches = [self.samplers[j].sample(cfg.batch_size) for j in self.active]
        ctx = torch.stack([b.ctx for b in batches])
        tgt = torch.stack([b.tgt for b in batches])
        if cfg.K is None:
            items = torch.stack([b.items for b in batches])
            labels = torch.stack([b.labels for b in batches])
            ar = torch.arange(len(batches), device=self.device)[:, None]
            y = labels[ar, tgt]
        else:
            items, labels = self.shared.items, self.shared.labels
            y = labels[tgt]
        return ("seq", items, labels, ctx, tgt), y

    def _logits(self, p, inp, attention=False, tables=None):
        out = self.kind.forward(self, p, inp, attention, tables)
        return out if attention else (out, None)

    def step(self) -> dict:
        """One SGD iteration for every active seed.  Returns {group position: "training
        loss"} for the seeds whose training loss was not finite."""
        torch = self.torch
        cfg = self.cfg
        inp, y = self._draw()
        logit, _ = self._logits(self.p, inp)
        per_seed = torch.nn.functional.softplus(-y * logit).mean(1)
        names = list(self.p)
        grads = torch.autograd.grad(per_seed.sum(), [self.p[k] for k in names])
        with torch.no_grad():
            for k, g in zip(names, grads):
                wd = cfg.wd_attn if k in self.att_names else cfg.wd_mlp
                v = self.p[k]
                if wd:
                    g = g.add(v, alpha=wd)
                v.sub_(g, alpha=cfg.lr)
            t = torch.tensor(self.active, dtype=torch.long, device=self.device)
            self.loss_sum[t] += per_seed.detach().double()
        self.loss_n += 1
        for j in self.active:
            self.its[j] += 1
        bad = np.flatnonzero(~np.isfinite(per_seed.detach().cpu().numpy()))
        return {self.active[q]: "training loss" for q in bad}

    # -- evaluation ----------------------------------------------------------------------
    def _eval_set(self, batch, attention: bool, tables=None):
        """Accuracy, loss, and (transformer/minimal) effective (w, beta) on a test set: the
        theory's definitions, :func:`icl_kinetics.theory.correct_margin` and
        :func:`icl_kinetics.theory.effective_head`."""
        from icl_kinetics.theory.probes import correct_margin, effective_head

        torch = self.torch
        S = len(self.active)
        ctx = batch.ctx.unsqueeze(0).expand(S, -1, -1)
        tgt = batch.tgt.unsqueeze(0).expand(S, -1)
        y = batch.labels[batch.tgt]
        outs, atts = [], []
        C = 250
        for s0 in range(0, ctx.shape[1], C):
            inp = ("seq", batch.items, batch.labels, ctx[:, s0:s0 + C], tgt[:, s0:s0 + C])
            lo, at = self._logits(self.p, inp, attention=attention, tables=tables)
            outs.append(lo)
            atts.append(at)
        logit = torch.cat(outs, 1).double()
        yl = correct_margin(logit, y.double(), multiclass=False)  # y * logit
        res = {"acc": (yl > 0).double().mean(1), "loss": torch.nn.functional.softplus(-yl).mean(1), "yl": yl}
        if attention and atts[0] is not None:
            p_ctx = torch.cat([a[0] for a in atts], 1).double()
            p_tgt = torch.cat([a[1] for a in atts], 1).double()
            match = (batch.ctx == batch.tgt[:, None])  # (n, N): copies of the target
            # the one definition of the effective (w, beta), shared with validate.probes
            head = effective_head(p_ctx, match, batch.labels[batch.ctx].double(), y.double(), yl,
                                  attention_target=p_tgt)
            logp = torch.cat([p_ctx, p_tgt[..., None]], -1).clamp_min(1e-300).log()
            res.update(w=head["w"], beta=head["beta"], attn_logit_std=logp.std(-1).mean(1))
        return res

    def _probe_phi_plus(self, S):
        """phi_plus = y * phi(x) on the probe items, (S, n) float64."""
        from icl_kinetics.simulate import models as mm

        idx = self.shared.probe.unsqueeze(0).expand(S, -1)
        return mm.mlp_forward(self.p, self.shared.items[idx]).double() * self.shared.labels[idx].double()

    def begin_eval(self, it: int):
        """Evaluate every active seed (all of :data:`METRIC_COLUMNS`); :meth:`passes` and
        :meth:`log` read the result."""
        torch = self.torch
        kind = self.kind
        sh = self.shared
        S = len(self.active)
        cols = {c: [float("nan")] * S for c in METRIC_COLUMNS[2:]}
        c = None
        with torch.no_grad():
            t = torch.tensor(self.active, dtype=torch.long, device=self.device)
            if self.loss_n:
                cols["train_loss"] = (self.loss_sum[t] / self.loss_n).tolist()
            if not kind.icl:  # memorization of the training items
                php = self._probe_phi_plus(S)
                cols["iwl_acc"] = (php > 0).double().mean(1).tolist()
                cols["iwl_loss"] = torch.nn.functional.softplus(-php).mean(1).tolist()
                c = _coefficients(php)
            else:
                r = self._eval_set(sh.icl, attention=True, tables=sh.test_tables.get("icl"))
                cols["icl_acc"], cols["icl_loss"] = r["acc"].tolist(), r["loss"].tolist()
                for k in ("w", "beta", "attn_logit_std"):
                    if k in r:
                        cols[k] = r[k].tolist()
                if sh.iwl is not None:
                    ri = self._eval_set(sh.iwl, attention=False, tables=sh.test_tables.get("iwl"))
                    cols["iwl_acc"], cols["iwl_loss"] = ri["acc"].tolist(), ri["loss"].tolist()
                    if kind.coefficients == "iwl":  # phi_plus = y * logit with the target absent
                        c = _coefficients(ri["yl"])
                if kind.params_wb:
                    cols["w"] = self.p["w"].double().tolist()
                    cols["beta"] = self.p["beta"].double().tolist()
                if kind.coefficients == "probe" and sh.probe is not None:
                    c = _coefficients(self._probe_phi_plus(S))
            if c is not None:
                cols["c1"], cols["c2"], cols["c3"] = (x.tolist() for x in c)
            self.loss_sum.zero_()
        self.loss_n = 0
        self._cols = cols
        self._pos = {j: q for q, j in enumerate(self.active)}

    def passes(self, sel: list[int], threshold: float) -> list[bool]:
        """Whether each seed of ``sel`` had ICL accuracy > ``threshold`` at this evaluation."""
        return [self._cols["icl_acc"][self._pos[j]] > threshold for j in sel]

    def log(self, sel: list[int], it: int):
        """Append the metric rows of seeds ``sel`` evaluated at iteration ``it``."""
        cfg = self.cfg
        for j in sel:
            q = self._pos[j]
            row = {"seed": cfg.seed_offset + self.idx[j], "iteration": it}
            row.update({k: float(v[q]) for k, v in self._cols.items()})
            self.rows.append(row)

    # -- checkpoint state ------------------------------------------------------------------
    def state(self) -> dict:
        self._write_back()
        return {"store": {k: v.detach().cpu() for k, v in self.store.items()}, "active": list(self.active),
                "t_icl": list(self.t_icl), "status": list(self.status), "reasons": list(self.reasons),
                "gens": [g.get_state() for g in self.gens], "loss_sum": self.loss_sum.cpu(),
                "loss_n": self.loss_n, "last_eval": self.last_eval, "rows": list(self.rows), "its": list(self.its)}

    def load(self, st: dict):
        self.store = {k: v.to(self.device) for k, v in st["store"].items()}
        self.active = list(st["active"])
        self.t_icl, self.status, self.reasons = list(st["t_icl"]), list(st["status"]), list(st["reasons"])
        for g, s in zip(self.gens, st["gens"]):
            g.set_state(s)
        self.loss_sum = st["loss_sum"].to(self.device)
        self.loss_n = st["loss_n"]
        self.last_eval = st["last_eval"]
        self.rows = list(st["rows"])
        self.its = list(st["its"])
        if self.active:
            self.p = self._select()


def _make_group(cfg: TrainConfig, shared, idx: list[int], device):
    """The seed group of the configuration's backend, for seed positions ``idx``."""
    if cfg.resolve_backend() == "overlaps":
        from icl_kinetics.simulate.overlaps import OverlapGroup

        return OverlapGroup(cfg, idx, _initial_betas(cfg, idx))
    return _Group(cfg, shared, idx, device)


def _initial_betas(cfg: TrainConfig, idx: list[int]) -> list:
    """beta0 of seed positions ``idx``; a drawn one (beta0=None) is the autograd backend's
    draw, N(0, 1) from the seed's "init" generator."""
    import torch

    from icl_kinetics.simulate import data as dm

    out = []
    for i in idx:
        b = cfg.beta0_of(i)
        if b is None:
            b = float(torch.randn((), generator=dm.seed_generators(cfg.seed, cfg.seed_offset + i)["init"]))
        out.append(float(b))
    return out


# ----------------------------------------------------------------------------- the loop
def _run_group(grp, start: int, stop: int, counter: list, lock, errors: list):
    """Advance one group (either backend) from iteration ``start`` to ``stop``, evaluating
    on the way."""
    cfg = grp.cfg
    try:
        it = start
        while grp.active:
            if (it % cfg.eval_every == 0 or it == cfg.iterations) and grp.last_eval != it:
                _evaluate_and_stop(grp, it)
                grp.last_eval = it
                if not grp.active:
                    break
            if it >= stop:
                break
            bad = grp.step()
            it += 1
            if bad:
                for j, what in bad.items():
                    grp.status[j] = "diverged"
                    grp.reasons[j] = f"non-finite {what} at iteration {it}"
                grp.deactivate(list(bad))
            with lock:
                counter[0] += len(grp.active) + len(bad)
    except BaseException as exc:  # re-raised in the main thread
        errors.append(exc)


def _evaluate_and_stop(grp, it: int):
    """One evaluation: t_ICL for the seeds that exceed ``t_icl_threshold`` for the first
    time, early stop for those above ``early_stop`` (both strict), and the logged rows:
    every active seed at a logging iteration, else only the seeds that acquire or stop."""
    cfg = grp.cfg
    act = list(grp.active)
    grp.begin_eval(it)
    logged = set(act) if cfg.log_every is None or it % cfg.log_every == 0 or it == cfg.iterations else set()
    stop = []
    if _KINDS[cfg.model].icl:
        thr, es = cfg.t_icl_threshold, cfg.early_stop
        pending = [j for j in act if grp.t_icl[j] is None]
        newly = [j for j, ok in zip(pending, grp.passes(pending, thr)) if ok]
        for j in newly:
            grp.t_icl[j] = it
        if es is not None:
            sure = newly if es <= thr else []  # above thr >= es
            rest = [j for j in act if j not in sure and (es < thr or grp.t_icl[j] is not None)]
            stop = sure + [j for j, ok in zip(rest, grp.passes(rest, es)) if ok]
        logged.update(newly, stop)
    grp.log(sorted(logged), it)
    if stop:
        for j in stop:
            grp.status[j] = "stopped"
        grp.deactivate(stop)


def _resolve_workers(cfg: TrainConfig) -> int:
    if cfg.device == "cuda":
        return 1
    w = cfg.workers or os.cpu_count() or 1
    return max(1, min(w, cfg.seeds))


def _use_processes(cfg: TrainConfig, workers: int) -> bool:
    """Whether :func:`train` runs its groups in forked worker processes: the overlap
    sampler, more than one group, >= ``_PROCESS_MIN_SEED_ITERATIONS`` seed-iterations, Linux."""
    import sys

    return (workers > 1 and cfg.seeds * cfg.iterations >= _PROCESS_MIN_SEED_ITERATIONS
            and sys.platform.startswith("linux") and cfg.resolve_backend() == "overlaps")


class _ProcCounter:
    """``counter[0]`` over a shared ``multiprocessing.Value`` (one per worker process)."""

    def __init__(self, value):
        self.value = value

    def __getitem__(self, i):
        return self.value.value

    def __setitem__(self, i, v):
        self.value.value = v


def _proc_main(grp, start: int, stop: int, value, conn):
    """Worker process: advance one group (inherited through fork) and send its state back."""
    import torch

    torch.set_num_threads(1)
    errors: list = []
    _run_group(grp, start, stop, _ProcCounter(value), threading.Lock(), errors)
    try:
        if errors:
            conn.send_bytes(b"E" + f"{type(errors[0]).__name__}: {errors[0]}".encode())
        else:  # torch.save'd bytes: the parent reads them with weights_only=True, like a checkpoint
            import io

            buf = io.BytesIO()
            torch.save(grp.state(), buf)
            conn.send_bytes(b"S" + buf.getvalue())
    finally:
        conn.close()


def _run_in_processes(groups, start: int, stop: int, bar):
    """Advance every group from ``start`` to ``stop``, each in a forked process that sends
    the group's state back through a pipe (:meth:`state` / :meth:`load`; nothing is read
    from files)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    vals = [ctx.Value("q", 0, lock=False) for _ in groups]
    pipes = [ctx.Pipe(duplex=False) for _ in groups]
    procs = [ctx.Process(target=_proc_main, args=(g, start, stop, v, w), daemon=True)
             for g, v, (_, w) in zip(groups, vals, pipes)]
    for p in procs:
        p.start()
    for _, w in pipes:
        w.close()  # the children hold the write ends: a dead child reads as EOF
    results = [None] * len(groups)
    last = 0
    try:
        while any(r is None for r in results):
            for i, (r, _) in enumerate(pipes):
                if results[i] is None and r.poll(0.1):
                    try:
                        results[i] = r.recv_bytes()
                    except EOFError:
                        procs[i].join()
                        raise RuntimeError(f"training worker {i} died (exit code {procs[i].exitcode})") from None
            if bar is not None:
                c = sum(v.value for v in vals)
                bar.update(c - last)
                last = c
    finally:
        for p in procs:
            if p.is_alive() and any(r is None for r in results):
                p.terminate()
            p.join()
    import io

    import torch

    for g, res in zip(groups, results):
        if res[:1] != b"S":
            raise RuntimeError(f"training worker failed: {res[1:].decode(errors='replace')}")
        g.load(torch.load(io.BytesIO(res[1:]), map_location="cpu", weights_only=True))


def _run_segment(groups, start: int, stop: int, processes: bool, counter: list, bar):
    """The one runner: advance every group from ``start`` to ``stop``, in threads (one per
    group) or in forked processes (``processes``)."""
    import sys

    if processes:
        _run_in_processes(groups, start, stop, bar)
        return
    lock, errors = threading.Lock(), []
    old = sys.getswitchinterval()
    try:
        if len(groups) > 1 and groups[0].backend == "overlaps":
            sys.setswitchinterval(2e-4)  # short GIL-bound steps: hand the GIL over sooner
        run_in_threads([partial(_run_group, g, start, stop, counter, lock, errors) for g in groups], counter, bar)
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]


def _build(cfg: TrainConfig, device):
    """The seed groups of a run, one per worker (nothing trained yet)."""
    workers = _resolve_workers(cfg)
    shared = _Shared(cfg, device) if cfg.resolve_backend() == "autograd" else None
    parts = [list(map(int, p)) for p in np.array_split(np.arange(cfg.seeds), workers)]
    return [_make_group(cfg, shared, p, device) for p in parts]


def time_steps(cfg: TrainConfig, iterations: int, warmup: int = 2) -> dict:
    """Time ``iterations`` SGD steps of every seed of ``cfg`` as :func:`train` runs them
    (one worker thread per group, one intra-op thread each on CPU), data generation
    included, evaluation left out.  For benchmarks (:mod:`icl_kinetics.simulate.bench`).

    Returns ``{"seconds": wall seconds of the timed steps, "workers": groups,
    "seed_iterations": seeds x iterations}``; ``warmup`` untimed steps run first.
    """
    import torch

    if not isinstance(cfg, TrainConfig):
        raise ParameterError("cfg", type(cfg).__name__, "a TrainConfig")
    cfg.validate()
    iterations = positive_int("iterations", iterations, 1)
    warmup = positive_int("warmup", warmup, 0)
    device = torch.device(cfg.device)
    old = torch.get_num_threads()
    try:
        workers = _resolve_workers(cfg)
        if cfg.device == "cpu":
            torch.set_num_threads(1 if workers > 1 else (cfg.workers or old))
        groups = _build(cfg, device)

        def run(n):
            run_in_threads([lambda g=g: [g.step() for _ in range(n)] for g in groups], [0])
            if cfg.device != "cpu":
                torch.cuda.synchronize()

        run(warmup)
        t0 = time.perf_counter()
        run(iterations)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    return {"seconds": seconds, "workers": len(groups), "seed_iterations": cfg.seeds * iterations}


def train(cfg: TrainConfig, out=None, progress: bool = True, resume: bool = True) -> TrainResult:
    """Train ``cfg.seeds`` seeds; see the module docstring.

    Args:
        cfg: the configuration.
        out: folder for ``config.json``, ``metrics.csv``, ``summary.json`` and
            ``checkpoint.pt`` (None: nothing is written and nothing resumes).
        progress: show a progress bar (tqdm) over seed-iterations.
        resume: continue from ``out/checkpoint.pt`` if it exists.  A checkpoint that cannot
            be read, fails its SHA-256 digest or belongs to another configuration (or
            backend) is renamed ``checkpoint.pt.rejected-<time>`` (a one-line warning on
            stderr, and a note in the result) and training starts from iteration 0.

    Raises:
        ParameterError: a bad configuration, a size whose memory cannot fit (naming it),
            an ``out`` that cannot be written, or an ``iterations`` cap below the
            checkpoint's iteration.

    Returns:
        :class:`TrainResult`.
    """
    if not isinstance(cfg, TrainConfig):
        raise ParameterError("cfg", type(cfg).__name__, "a TrainConfig")
    cfg.validate()
    cfg.require_memory()
    if out is not None:
        from icl_kinetics.io import check_output_dir

        check_output_dir("out", out)
    import torch

    from icl_kinetics.io import write_csv, write_json
    from icl_kinetics.simulate.allocator import tune_malloc

    tune_malloc()
    t0 = time.perf_counter()
    device = torch.device(cfg.device)
    workers = _resolve_workers(cfg)
    processes = _use_processes(cfg, workers)
    old_threads = torch.get_num_threads()
    out = Path(out) if out is not None else None
    ckpt = out / "checkpoint.pt" if out is not None else None
    try:
        if cfg.device == "cpu":
            torch.set_num_threads(1 if workers > 1 else (cfg.workers or old_threads))
        groups = _build(cfg, device)
        it, notes = 0, []
        if ckpt is not None and resume and ckpt.exists():
            it, note = _resume(ckpt, cfg, groups, device)
            if note:
                notes.append(note)
        if out is not None:
            write_json(out / "config.json", {**cfg.to_dict(), "config_hash": cfg.config_hash()})
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.seeds * cfg.iterations, initial=sum(sum(g.its) for g in groups),
                       unit="seed-it", desc=f"train {cfg.model}", smoothing=0.05)
        counter = [0]
        while True:
            stop = min(cfg.iterations, (it // cfg.checkpoint_every + 1) * cfg.checkpoint_every)
            _run_segment(groups, it, stop, processes, counter, bar)
            it = stop
            done = it >= cfg.iterations or not any(g.active for g in groups)
            if ckpt is not None:
                _save(ckpt, cfg, groups, it)
                write_csv(out / "metrics.csv", metrics_table(cfg, _rows(groups)))
            if done:
                break
        if bar is not None:
            bar.close()
    finally:
        torch.set_num_threads(old_threads)
    res = _result(cfg, groups, it, time.perf_counter() - t0)
    res.notes = notes
    if out is not None:
        write_json(out / "summary.json", res.summary())
    return res


def _rows(groups) -> list:
    rows = [r for g in groups for r in g.rows]
    rows.sort(key=lambda r: (r["seed"], r["iteration"]))
    return rows


def metrics_table(cfg: TrainConfig, rows: list) -> list:
    """The rows of a run's ``metrics.csv``: each metrics row (:data:`METRIC_COLUMNS`) after
    ``run_id`` (the run's sweep id, :func:`icl_kinetics.simulate.sweeps.run_id`) and the
    grid columns (:data:`icl_kinetics.simulate.sweeps.GRID_COLUMNS`; K = inf for fresh
    items), with the values ``sweep collect`` writes, so that the file is a table of the
    validation schema as it stands (``icl-kinetics validate --runs OUT/metrics.csv``).

    Args:
        cfg: the run's configuration.
        rows: its metrics rows (``TrainResult.rows``; iterations, nats, ...: docs/engine.md).

    Returns:
        list of dicts, one per row, keys in the file's column order.
    """
    # imported here: the sweeps package imports this module
    from icl_kinetics.simulate.sweeps.spec import GRID_COLUMNS, run_id

    d = cfg.to_dict()
    head = {"run_id": run_id(cfg), **{k: (float("inf") if (k == "K" and d[k] is None) else d[k])
                                      for k in GRID_COLUMNS}}
    return [{**head, **r} for r in rows]


def _result(cfg, groups, it, seconds) -> TrainResult:
    t_icl, status, reasons = [], [], []
    for g in groups:
        t_icl += g.t_icl
        status += g.status
        reasons += g.reasons
    return TrainResult(cfg, t_icl, status, reasons, it, _rows(groups), seconds, sum(sum(g.its) for g in groups))


#: the checkpoint envelope's format tag (see :func:`_save`)
CHECKPOINT_FORMAT = "icl-kinetics-checkpoint/2"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: unreadable, damaged, or not this run's."""


def _save(path: Path, cfg: TrainConfig, groups, it: int):
    """Write the checkpoint atomically, as a self-verifying envelope.

    The state (tensors, lists, numbers and strings only) is serialized with
    ``torch.save``; the file holds ``{"format", "sha256", "payload"}`` where ``payload``
    is those bytes as a uint8 tensor and ``sha256`` their digest.  torch does not check
    its zip records' CRCs on load, so the digest is what catches a flipped bit.
    """
    import io

    import torch

    from icl_kinetics.io import atomic_write_bytes

    state = {"config_hash": cfg.config_hash(), "config": cfg.to_dict(), "iteration": it,
             "backend": groups[0].backend, "groups": [g.state() for g in groups],
             "seed_index": [g.idx for g in groups]}
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    env = {"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
           "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    out = io.BytesIO()
    torch.save(env, out)
    atomic_write_bytes(path, out.getvalue())


def _load_checkpoint(path: Path) -> dict:
    """Read a checkpoint without unpickling code (``weights_only=True``) and verify its digest.

    Raises :class:`CheckpointError` with the reason."""
    import io

    import torch

    if _torch_version() < (2, 10):  # weights_only could still run code or corrupt memory before 2.10
        from icl_kinetics.errors import EnvironmentFailure

        raise EnvironmentFailure(f"torch {torch.__version__} cannot read the checkpoint {path} safely "
                                 "(weights_only loading is sound from torch 2.10 on): upgrade torch, or start "
                                 "afresh with --no-resume")
    try:
        env = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, random bytes, a cut file ...
        raise CheckpointError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
    if isinstance(env, dict) and env.get("format") == CHECKPOINT_FORMAT:
        pl = env.get("payload")
        if not (isinstance(pl, torch.Tensor) and pl.dtype == torch.uint8 and pl.dim() == 1):
            raise CheckpointError("its envelope has no byte payload")
        data = pl.numpy().tobytes()
        if hashlib.sha256(data).hexdigest() != env.get("sha256"):
            raise CheckpointError("its content does not match its SHA-256 digest (damaged)")
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"unreadable payload ({type(e).__name__})")
    if isinstance(env, dict) and "config_hash" in env:  # format 1 (no digest): structure checks only
        return env
    raise CheckpointError("not an icl-kinetics checkpoint")


def _torch_version() -> tuple:
    import re

    import torch

    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _check_state(st, cfg: TrainConfig, groups) -> None:
    """Raise :class:`CheckpointError` unless ``st`` is a checkpoint of exactly this run."""
    import torch

    def need(ok, why):
        if not ok:
            raise CheckpointError(why)

    need(isinstance(st, dict), "not a dict")
    need(st.get("config_hash") == cfg.config_hash(), "it belongs to another configuration")
    made_by = st.get("backend", "autograd")  # checkpoints before the overlap backend: autograd
    need(made_by == groups[0].backend, f"it was made by the {made_by!r} backend, and this run uses "
         f"{groups[0].backend!r}")
    need(isinstance(st.get("iteration"), int) and not isinstance(st["iteration"], bool) and st["iteration"] >= 0,
         "its iteration is not a count")
    gs, si = st.get("groups"), st.get("seed_index")
    need(isinstance(gs, list) and isinstance(si, list) and len(gs) == len(si) and gs, "no seed groups")
    seeds = [i for idx in si for i in (idx if isinstance(idx, list) else [None])]
    need(all(isinstance(i, int) for i in seeds) and sorted(seeds) == list(range(cfg.seeds)),
         "its seeds are not this run's seeds")
    ref = {k: v.shape[1:] for k, v in groups[0].store.items()}
    keys = {"store", "active", "t_icl", "status", "reasons", "gens", "loss_sum", "loss_n", "last_eval",
            "rows", "its"} | ({"block_pos"} if groups[0].backend == "overlaps" else set())
    for g, idx in zip(gs, si):
        need(isinstance(g, dict) and keys <= set(g), "a seed group lacks fields")
        n = len(idx)
        store = g["store"]
        need(isinstance(store, dict) and set(store) == set(ref), "its parameters are not this model's")
        for k, v in store.items():
            need(isinstance(v, torch.Tensor) and tuple(v.shape) == (n, *ref[k]) and v.is_floating_point(),
                 f"parameter {k} has the wrong shape or type")
        for k in ("t_icl", "status", "reasons", "gens", "its"):
            need(isinstance(g[k], list) and len(g[k]) == n, f"field {k} has the wrong length")
        need(all(s in ("running", "stopped", "diverged") for s in g["status"]), "unknown seed status")
        need(all(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 for x in g["gens"]),
             "bad generator states")
        need(all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= st["iteration"] for x in g["its"]),
             "bad iteration counts")
        need(all(t is None or (isinstance(t, int) and 0 <= t <= st["iteration"]) for t in g["t_icl"]),
             "bad t_ICL values")
        need(isinstance(g["active"], list) and all(isinstance(a, int) and 0 <= a < n for a in g["active"]),
             "bad active list")
        need(isinstance(g["loss_sum"], torch.Tensor) and tuple(g["loss_sum"].shape) == (n,), "bad loss sums")
        need(isinstance(g["rows"], list) and all(isinstance(r, dict) and set(r) == set(METRIC_COLUMNS)
                                                 for r in g["rows"]), "bad metric rows")
    if st["iteration"] > cfg.iterations:  # a healthy checkpoint past a lowered cap: the user's call
        raise ParameterError("iterations", cfg.iterations, f">= {st['iteration']}, the iteration of the checkpoint "
                             "in this folder (or start afresh with --no-resume)")


def _set_aside(path: Path, why: str) -> str:
    """Rename a rejected checkpoint (never delete it); return a one-line note naming both files."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest = path.with_name(f"{path.name}.rejected-{stamp}")
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.rejected-{stamp}-{k}")
        k += 1
    os.replace(path, dest)
    return f"checkpoint {path} set aside as {dest.name}: {why}; the run restarts from iteration 0"


def _resume(path: Path, cfg: TrainConfig, groups, device) -> tuple[int, str]:
    """Restore ``groups`` from the checkpoint at ``path``: (iteration, note).

    A checkpoint that cannot be read, is damaged or belongs to another configuration is
    renamed (:func:`_set_aside`), a one-line warning naming it goes to stderr, and the
    run starts from scratch (iteration 0, note set)."""
    import sys

    try:
        st = _load_checkpoint(path)
        _check_state(st, cfg, groups)
        try:
            return _restore(groups, st), ""
        except Exception as e:  # a state that passed the checks but does not fit together
            raise CheckpointError(f"inconsistent state ({type(e).__name__}: {e})") from None
    except CheckpointError as e:
        note = _set_aside(path, str(e))
    sys.stderr.write(f"icl-kinetics: warning: {note}\n")
    # _restore may have loaded part of the state: start every group afresh
    fresh = [_make_group(cfg, getattr(g, "shared", None), g.idx, device) for g in groups]
    groups[:] = fresh
    return 0, note


def _restore(groups, st) -> int:
    """Load a checkpoint into groups; the grouping may differ (workers changed)."""
    import torch

    by_seed = {}
    for gs, idx in zip(st["groups"], st["seed_index"]):
        for q, i in enumerate(idx):
            by_seed[i] = (gs, q)
    rows = [r for gs in st["groups"] for r in gs["rows"]]
    for g in groups:
        sub = {"store": {}, "active": [], "t_icl": [], "status": [], "reasons": [], "gens": [],
               "rows": [], "its": []}
        stores, loss = [], []
        for q, i in enumerate(g.idx):
            gs, k = by_seed[i]
            stores.append({n: v[k] for n, v in gs["store"].items()})
            if k in gs["active"]:
                sub["active"].append(q)
            sub["t_icl"].append(gs["t_icl"][k])
            sub["status"].append(gs["status"][k])
            sub["reasons"].append(gs["reasons"][k])
            sub["gens"].append(gs["gens"][k])
            loss.append(gs["loss_sum"][k])
            sub["its"].append(gs["its"][k])
        sub["store"] = {n: torch.stack([s[n] for s in stores]) for n in stores[0]}
        sub["loss_sum"] = torch.stack(loss)
        # every group with active seeds stepped and evaluated at the same iterations
        live = [gs for gs in st["groups"] if gs["active"]] or st["groups"]
        sub["loss_n"], sub["last_eval"] = live[0]["loss_n"], max(gs["last_eval"] for gs in st["groups"])
        if "block_pos" in live[0]:  # the overlap sampler: where live groups are in their random block
            sub["block_pos"] = live[0]["block_pos"]
        seeds = {g.cfg.seed_offset + i for i in g.idx}
        sub["rows"] = [r for r in rows if r["seed"] in seeds]
        g.load(sub)
    return int(st["iteration"])
