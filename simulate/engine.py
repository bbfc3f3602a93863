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
``item_seed`` and are shared by every seed (as in the paper's code, whose training item
vectors use a fixed seed).  With ``label_map="per-seed"`` (the default) each seed draws
its own item -> label map from its own stream
(:func:`~icl_kinetics.simulate.data.seed_label_map`), as the paper's code, which redraws
it in every run, does in effect; with ``"shared"`` the map comes from ``item_seed`` too.  The overlap sampler draws each seed's own test set from
its own stream.

**Grid batching.**  :func:`train_packed` trains several runs that share every tensor shape
(:func:`pack_key`) as one seed-batched group: each run keeps its own item table, test sets,
hyperparameters, evaluations, early stopping and out folder, and gets the numbers it gets
alone; :func:`train` is a pack of one (docs/engine.md, "Grid batching").

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

__all__ = ["TrainConfig", "TrainResult", "train", "train_packed", "pack_key", "pack_check", "pack_bytes",
           "PACK_FIELDS", "time_steps", "metrics_table", "METRIC_COLUMNS", "BACKENDS"]

#: the engine's backends (``TrainConfig.backend``)
BACKENDS = ("auto", "overlaps", "autograd")
#: fields added after runs were stored, with the value that every run stored before them
#: had (their *legacy* value): left out of :meth:`TrainConfig.identity` (and so of
#: ``config_hash`` and the sweep ``run_id``) while at that value, so existing runs keep their
#: ids.  For ``label_map`` the legacy value is not the default: runs stored before the field
#: existed used one shared map, and the default is now the paper's map per seed.
_OMITTED_AT_LEGACY = {"w0": 0.0, "log_every": None, "backend": "auto", "label_map": "shared"}
#: fields added after the presets' sweep.json files were pinned (tests/data/
#: preset_runs_before_specs.json): also left out of :meth:`TrainConfig.to_dict` (config.json,
#: sweep.json) while at their legacy value, so those files stay the same byte for byte, and
#: :meth:`TrainConfig.from_dict` reads a file without them as that legacy value
_UNWRITTEN_AT_LEGACY = {"label_map": "shared"}
#: the training loss is computed on rows padded to a multiple of this many floats.  torch's
#: CPU kernels run an elementwise op in vector chunks from the start of the tensor and its
#: remainder in scalar code, and their vector and scalar exp/log round differently; on rows
#: of whole chunks a seed's softplus (and its backward) takes the same path in a group of any
#: size, so a seed gets the same bits alone, in a larger group or in a pack (grid batching).
#: 64 covers AVX-512 (32-float chunks) and AVX2 (16).  Batch sizes that are multiples of 64
#: (the paper's 128) are not padded.
_LANES = 64
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
            ``"minimal"`` (phi + (w, beta); ``width = 0``: no phi), ``"mlp"``
            (standalone memorization, Fig. 5), or one of the transformer's ablations
            ``"transformer_itemblind"``, ``"transformer_split"``, ``"transformer_noln"``
            (rung 2.5; :mod:`icl_kinetics.simulate.models`).
        width: MLP width (paper 512).  D: item dimension (paper 63).
        labels: token label encoding, ``"onehot"`` (paper code, T = D + 2) or ``"pm1"``.
        beta0: initial beta of the minimal model and of ``"transformer_itemblind"``
            (1/overlap; ignored by the other models): a number, a tuple of one
            number per seed (position i of this batch), or None (N(0, 1) per seed, from
            the seed's "init" stream).
        w0: initial w of the minimal model (default 0).
        backend: ``"auto"``, ``"overlaps"`` or ``"autograd"`` (module docstring).
    Data:
        N: context tokens, NOT counting the target (paper code ``len_context - 1``).
        K: training items (even), None for K -> infinity.
        contexts: ``"iid"`` or ``"equalized"``.  zipf_alpha: item-frequency exponent.
        eval_size: sequences per test set.  item_seed: seed of the item set and test sets.
        label_map: ``"per-seed"`` (default, as the paper's code: each seed its own
            balanced item -> label map over the shared items, from its own stream) or
            ``"shared"`` (the map drawn with the items from ``item_seed``, the same for
            every seed; what every run stored before this field existed used, and what a
            config file without the field means).  K = None has no map (fresh items and
            labels for every sequence): either value is accepted, and neither enters the
            run's id, so K -> infinity runs keep their ids.
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
    label_map: str = "per-seed"

    @property
    def label_map_in_use(self) -> str | None:
        """``label_map``, or None with K None (K = inf has no map: either value is one run).
        The one place that rule lives: equality, ``to_dict``, the pack key and the engine read it."""
        return None if self.K is None else self.label_map

    def _key(self) -> tuple:
        """The fields, with ``label_map`` as :attr:`label_map_in_use`."""
        return tuple(self.label_map_in_use if f.name == "label_map" else getattr(self, f.name)
                     for f in fields(self))

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

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
        from icl_kinetics.simulate.data import LABEL_MAPS

        one_of("label_map", self.label_map, LABEL_MAPS)
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
        (N + 1)^2 attention maps of ``transformer2``, the dense tokens of the ablations, and the
        batch x width MLP activations);
        the test sets (eval_size x (N + 1) indices, or items for K = inf) and their
        250-sequence evaluation chunks; with ``label_map="per-seed"`` a second context table
        (every item with either label) and each seed's label map; for the fast transformer at
        finite K, the ICL test set's novel items with their tables, and the raw token tables
        held while they are normalized (a peak while the run is built, counted instead of the
        seeds' share when it is larger).  It is for refusing sizes that cannot fit, up front;
        ordinary runs use a fraction of it (``benchmarks/bench_engine.py`` reports max RSS).
        The overlap sampler's estimate is :func:`icl_kinetics.simulate.overlaps.peak_bytes`.
        """
        from icl_kinetics.simulate.models import ABLATIONS

        if self.resolve_backend() == "overlaps":
            return self._overlaps_bytes()
        T = self.D + (2 if self.labels == "onehot" else 1)
        L, W, B, S = self.N + 1, max(self.width, 1), self.batch_size, self.seeds
        d = max(T, self.D)
        if self.model in ("transformer", "transformer2") + ABLATIONS:
            params = 3 * T * T + 2 * T + T * W + W * W + W + 2 * W + 1
            if self.model in ABLATIONS:  # at most the transformer's, and transformer_split's u (T)
                params += T
            if self.model == "transformer2":
                params += 3 * T * T + T * W + W * W + W * T + 2 * W + T
        elif self.model == "minimal":
            params = 2 + (self.D * W + W * W + W + 2 * W + 1 if self.width else 0)
        else:
            params = self.D * W + W * W + W + 2 * W + 1
        act = 8.0 * B * L * d + 4.0 * B * W
        if self.model == "transformer2":
            act += 4.0 * B * L * L
        if self.model in ABLATIONS:  # dense tokens: the gathered tokens and h = LN(tokens) beside the 8
            act += 2.0 * B * L * T
        if self.model == "mlp":
            act = 8.0 * B * (self.D + W)
        shared = 0.0 if self.K is None else float(self.K) * (self.D + 2 * T)
        per_seed = 4.0 * params + act + (B * L * self.D if self.K is None else 0.0)
        if self.label_map == "per-seed" and self.K is not None:
            # the context table holds both labels of every item; per seed its label map, a
            # batch's items gathered for the dense-token models, and (equalized) its own split
            # of the items by class and its own IWL sequences
            shared += float(self.K) * T
            per_seed += float(self.K) + B * L * self.D
            if self.contexts == "equalized":
                per_seed += 4.0 * float(self.K) + 2.0 * self.eval_size * L
        evals = 2.0 * self.eval_size * L * (2 if self.K is not None else self.D) + 2.0 * S * 250 * L * d
        build = 0.0
        if self.model == "transformer" and self.K is not None:
            # the fast path's token tables: the ICL test set's M novel items and their normalized
            # tables (M x 2T), and while a table is normalized its raw copy beside it (the
            # training tables' K x 2T, or 3T per seed, and the ICL tables' M x 2T): a peak while
            # the run is built, before any seed's activations exist
            M = min(float(self.K), float(self.data_config().max_novel_items))
            shared += M * (self.D + 2 * T)
            build = float(self.K) * T * (3 if self.label_map_in_use == "per-seed" else 2) + M * 2 * T
        total = 4.0 * (shared + evals + max(build, S * per_seed))
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
        """The fields as plain JSON values; those of ``_UNWRITTEN_AT_LEGACY`` only when they
        differ from their legacy values, and ``label_map`` only with finite K."""
        d = asdict(self)
        if isinstance(d["beta0"], tuple):
            d["beta0"] = list(d["beta0"])
        for k, v in _UNWRITTEN_AT_LEGACY.items():
            if d[k] == v:
                del d[k]
        if self.label_map_in_use is None:  # no label map at K = inf: one run, one file
            d.pop("label_map", None)
        return d

    def identity(self, exclude=()) -> dict:
        """The fields that identify the run's numbers, less ``exclude``; the fields of
        ``_OMITTED_AT_LEGACY`` are left out while at their legacy values (so a configuration
        that does not use them has the id it had before they existed); ``label_map`` is
        never there with K None (:meth:`to_dict`)."""
        return {k: v for k, v in self.to_dict().items()
                if k not in exclude and not (k in _OMITTED_AT_LEGACY and v == _OMITTED_AT_LEGACY[k])}

    def config_hash(self, exclude=("iterations", "workers", "checkpoint_every")) -> str:
        """Hash of everything that determines the numbers (not the cap or the parallelism)."""
        return hashlib.sha256(json.dumps(self.identity(exclude), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config that ``d`` (:meth:`to_dict`, a config.json or sweep.json entry) records;
        a field of ``_UNWRITTEN_AT_LEGACY`` that ``d`` lacks takes its legacy value (a file
        written before ``label_map`` existed, or at ``"shared"``, reads as ``"shared"``)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ParameterError("config", sorted(unknown), "only fields of TrainConfig")
        return cls(**{**_UNWRITTEN_AT_LEGACY, **d})


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
    if tables is not None:
        n_c, n_t = tables
    elif items.dim() == 2 and grp.tables is not None and items is grp.items:
        n_c, n_t = grp.tables  # the training tables (of every run in the group, stacked)
    else:
        n_c, n_t = grp.shared.token_tables(items, labels)
    need = ctx.numel() * n_c.shape[-1]
    if grp._gbuf is None or grp._gbuf.numel() < need:
        grp._gbuf = grp.torch.empty(need, device=grp.device, dtype=n_c.dtype)
    return mm.transformer_fast(p, n_c, n_t, ctx, tgt, return_attention=attention, buffer=grp._gbuf)


def _dense_tokens(grp, inp):
    """The sequences' dense tokens (S, B, N+1, T), the target last (label slot zero)."""
    from icl_kinetics.simulate import data as dm

    torch = grp.torch
    _, items, labels, ctx, tgt = inp
    if items.dim() == 2:
        c, t = dm.token_table(items, labels, grp.cfg.labels)
        return torch.cat([c[ctx], t[tgt].unsqueeze(2)], dim=2)
    ct = [dm.token_table(i, l, grp.cfg.labels) for i, l in zip(items, labels)]
    return torch.stack([torch.cat([c[cx], t[tg].unsqueeze(1)], dim=1) for (c, t), cx, tg in zip(ct, ctx, tgt)])


def _forward_transformer2(grp, p, inp, attention, tables):
    """Every position is needed (see models.py): dense tokens."""
    from icl_kinetics.simulate import models as mm

    return mm.transformer_reference(p, _dense_tokens(grp, inp), return_attention=attention)


def _forward_itemblind(grp, p, inp, attention, tables):
    """The ablations (rung 2.5, models.py) run on dense tokens."""
    from icl_kinetics.simulate import models as mm

    return mm.transformer_itemblind(p, _dense_tokens(grp, inp), grp.cfg.D, return_attention=attention)


def _forward_split(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    return mm.transformer_split(p, _dense_tokens(grp, inp), return_attention=attention)


def _forward_noln(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    return mm.transformer_noln(p, _dense_tokens(grp, inp), return_attention=attention)


def _forward_minimal(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    _, items, labels, ctx, tgt = inp
    return mm.minimal_forward(p, items, labels, ctx, tgt, return_attention=attention)


def _forward_mlp(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    return mm.mlp_forward(p, grp.items[inp[1]])


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
    # the ablations: c1..c3 and the effective (w, beta) measured as for the transformer
    "transformer_itemblind": _Kind(_forward_itemblind),
    "transformer_split": _Kind(_forward_split),
    "transformer_noln": _Kind(_forward_noln),
}


def _coefficients(phi_plus, weights=None) -> tuple:
    """c1, c2, c3 (S,) of correct-label logits phi_plus (S, n), float64: the theory's one
    definition, :func:`icl_kinetics.theory.mlp_coefficients`; ``weights`` (n,): the items'
    frequencies under the run's item distribution (Zipf), None: plain means."""
    from icl_kinetics.theory import mlp_coefficients

    c = mlp_coefficients(phi_plus, axis=-1, weights=weights)
    return c["c1"], c["c2"], c["c3"]


# ----------------------------------------------------------------------------- shared data
class _Shared:
    """What every seed shares (autograd backend): the item set, test sets and their
    normalized token tables.

    With per-seed label maps (``label_map="per-seed"``, finite K) the item set, its shared
    label map and the test sets are drawn from ``item_seed`` exactly as with a shared map (so
    the ICL test set is the same), and the training context table holds every item with
    either label (``rows`` = 2: row ``2 i + c`` is item i with label 2 c - 1,
    :func:`~icl_kinetics.simulate.data.class_token_tables`), shared by every seed; each seed's
    IWL test sequences are :meth:`iwl_for` its own map."""

    def __init__(self, cfg: TrainConfig, device):
        import torch

        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate.models import normalize_tokens

        kind = _KINDS[cfg.model]
        self.dcfg = dcfg = cfg.data_config()
        self.device = device
        self.per_seed = cfg.label_map_in_use == "per-seed"
        self.rows = 2 if self.per_seed else 1  # context-table rows per item
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
            self._iwl_state = gen.get_state() if self.per_seed else None  # where iwl_for draws from
            self.iwl = dm.iwl_test_set(dcfg, self.items, self.labels, gen, device=device) if cfg.K else None
            if cfg.K is not None and kind.token_tables:
                c, t = (dm.class_token_tables(self.items, enc) if self.per_seed
                        else dm.token_table(self.items, self.labels, enc))
                self.tables = (normalize_tokens(c), normalize_tokens(t))
        # memorization probe: phi_plus on (up to) 10^4 training items; under Zipf item
        # frequencies c1, c2, c3 are expectations under the item distribution, p(k) ~ (k+1)^-alpha
        # renormalized over the probed items (the most frequent ones); None: plain means
        self.probe = self.probe_weights = None
        if cfg.K is not None and kind.coefficients == "probe" and cfg.width:
            n = min(cfg.K, 10_000)
            self.probe = torch.arange(n, device=device)
            if cfg.zipf_alpha > 0:
                self.probe_weights = dm.zipf_weights(n, float(cfg.zipf_alpha)).numpy()
        self.enc = enc
        self._norm = normalize_tokens
        self.test_tables = {}
        if kind.token_tables:  # normalized once, not at every evaluation
            for name, b in (("icl", self.icl), ("iwl", self.iwl)):
                if b is None or (name == "iwl" and self.per_seed):  # per seed: on self.tables
                    continue
                if name == "iwl" and b.items is self.items and b.labels is self.labels and self.tables:
                    # the IWL sequences run over the training items and map: their tables are
                    # the training tables (a second copy was K x 2T floats, 208 MB at K = 4e5)
                    self.test_tables[name] = self.tables
                else:
                    self.test_tables[name] = self.token_tables(b.items, b.labels)

    def iwl_for(self, labels):
        """The IWL test sequences ``(ctx (n, N), tgt (n,))`` of a seed whose label map is
        ``labels`` (K,): those a run with that map as its shared map draws.  With iid
        contexts the draws do not depend on the labels, so they are the shared ones; with
        equalized contexts they are drawn with ``labels`` from the item stream at the point
        where the shared IWL set was drawn (the draws' count does not depend on the labels)."""
        if self.dcfg.contexts == "iid":
            return self.iwl.ctx, self.iwl.tgt
        import torch

        from icl_kinetics.simulate import data as dm

        gen = torch.Generator(device=self.device)
        gen.set_state(self._iwl_state)
        b = dm.iwl_test_set(self.dcfg, self.items, labels, gen, device=self.device)
        return b.ctx, b.tgt

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


# ----------------------------------------------------------------------------- grid batching
class _Tables:
    """The training item tables of the runs in a pack, stacked once: run ``r``'s rows are
    ``off[r] : off[r] + K_r`` of ``items`` (M, D), ``labels`` (M,) and the normalized token
    ``tables`` (M, T) x 2 (with per-seed label maps the context table has two rows per item:
    run ``r``'s are ``2 off[r] : 2 (off[r] + K_r)``).  Each run's :class:`_Shared` is rebound
    to views of these rows, so no table is held twice and none per seed.  One run: its own
    tensors, offset 0."""

    def __init__(self, shareds: list):
        import torch

        first = shareds[0]
        self.off = [0] * len(shareds)
        self.items, self.labels, self.tables = first.items, first.labels, first.tables
        if len(shareds) == 1 or first.items is None:  # one run, or K = inf (fresh items per seed)
            return
        ks = [sh.items.shape[0] for sh in shareds]
        self.off = [int(v) for v in np.cumsum([0] + ks[:-1])]
        self.items = torch.cat([sh.items for sh in shareds])
        self.labels = torch.cat([sh.labels for sh in shareds])
        if first.tables is not None:
            self.tables = (torch.cat([sh.tables[0] for sh in shareds]), torch.cat([sh.tables[1] for sh in shareds]))
        for sh, a, k in zip(shareds, self.off, ks):
            old = sh.items
            sh.items, sh.labels = self.items[a:a + k], self.labels[a:a + k]
            if self.tables is not None:
                r = sh.rows  # context-table rows per item (equal in a pack: label_map is a PACK_FIELD)
                sh.tables = (self.tables[0][r * a:r * (a + k)], self.tables[1][a:a + k])
            if sh.iwl is not None and sh.iwl.items is old:
                sh.iwl.items, sh.iwl.labels = sh.items, sh.labels


class _Member:
    """One run's seeds inside a seed group: group positions ``lo:hi`` are the run's seed
    positions ``idx``; what the run decides on its own (evaluation schedule, rows, t_ICL,
    early stop) is kept here.  ``shift``: the run's iteration minus the segment's step
    count (runs of a pack may resume at different iterations)."""

    def __init__(self, grp, run: int, cfg: TrainConfig, shared, idx: list[int], lo: int, off: int):
        self.grp, self.run, self.cfg, self.shared, self.idx = grp, run, cfg, shared, list(idx)
        self.lo, self.hi, self.off = lo, lo + len(idx), off
        self.loss_n, self.last_eval, self.shift = 0, -1, 0
        self.rows: list = []
        self._cols, self._pos = {}, {}

    def active(self) -> list[int]:
        return [j for j in self.grp.active if self.lo <= j < self.hi]

    def begin_eval(self, it: int):
        self.grp.begin_eval(it, self)


class _Whole:
    """A group without members (the overlap sampler's) seen as one unit of the loop."""

    shift = 0

    def __init__(self, grp):
        self.grp, self.cfg = grp, grp.cfg

    @property
    def last_eval(self):
        return self.grp.last_eval

    @last_eval.setter
    def last_eval(self, v):
        self.grp.last_eval = v

    def active(self) -> list[int]:
        return list(self.grp.active)

    def begin_eval(self, it: int):
        self.grp.begin_eval(it)


def _units(grp) -> list:
    return grp.members if hasattr(grp, "members") else [_Whole(grp)]


# ----------------------------------------------------------------------------- seed group
class _Group:
    """A group of seeds trained together (one worker), autograd backend.

    The seeds may belong to several runs of one pack (grid batching, :func:`train_packed`):
    ``parts`` lists ``(run, cfg, shared, idx)`` per run, and each becomes a
    :class:`_Member`.  Every run's seeds draw from their own generators and their own item
    table (rows ``off`` of the stacked tables), and are updated with their own lr and weight
    decays; only the batched matmuls are shared.

    The interface that :func:`_run_group` drives (the overlap sampler's
    :class:`~icl_kinetics.simulate.overlaps.OverlapGroup` has the same, for one run):
    ``step()``, ``begin_eval(it[, member])`` / ``passes(sel, threshold)`` / ``log(sel, it)``,
    ``deactivate(local)``, the per-seed lists ``active``, ``t_icl``, ``status``,
    ``reasons``, ``its``, and ``state()`` / ``load()`` (one run) or
    ``state_of(member)`` / ``load_member(member, state)``.
    """

    backend = "autograd"
    #: train the readout MLP by :class:`~icl_kinetics.simulate.models.SGDStep` (its update
    #: fused into its backward pass); False: autograd's gradients and :func:`_sgd_update` for
    #: every parameter, the reference that tests/test_fused_mlp.py and bench_engine compare
    fused_mlp = True

    def __init__(self, parts: list, device, tables: _Tables | None = None):
        import torch
        from dataclasses import replace

        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate import models as mm

        self.torch, self.device = torch, device
        run0, self.cfg, self.shared, idx0 = parts[0]
        tables = tables or _Tables([self.shared])
        self.items, self.labels, self.tables = tables.items, tables.labels, tables.tables
        self.kind = _KINDS[self.cfg.model]
        # per-seed label maps (label_map="per-seed", equal in a pack): seed position q's map is
        # lab[lstart[q] : lstart[q] + K] over its run's items; iwl_seq[q]: its IWL sequences
        self.per_seed, self.lab, self.lstart, self.iwl_seq, maps = self.shared.per_seed, None, None, [], None
        if self.per_seed:
            maps = [dm.seed_label_map(cfg.K, cfg.seed, cfg.seed_offset + i, device=device)
                    for _, cfg, _, idx in parts for i in idx]
            starts = [int(v) for v in np.cumsum([0] + [len(v) for v in maps[:-1]])]
            self.lab = torch.cat(maps)
            self.lstart = torch.tensor(starts, dtype=torch.long, device=device)
            maps = [self.lab[a:a + len(v)] for a, v in zip(starts, maps)]  # views: one copy of each map
        per_seed, self.gens, self.samplers, self.members, offs = [], [], [], [], []
        for run, cfg, shared, idx in parts:
            m = _Member(self, run, cfg, shared, idx, len(per_seed), tables.off[run] if len(tables.off) > run else 0)
            self.members.append(m)
            mcfg = cfg.model_config()
            for i in idx:
                g = dm.seed_generators(cfg.seed, cfg.seed_offset + i, device=device)
                # parameters are always drawn on CPU, so a seed starts the same on every device
                gi = g["init"] if device.type == "cpu" else dm.seed_generators(cfg.seed, cfg.seed_offset + i)["init"]
                per_seed.append(mm.init_params(replace(mcfg, beta0=cfg.beta0_of(i)), gi))
                self.gens.append(g["data"])
                labels = shared.labels if maps is None else maps[len(per_seed) - 1]
                if self.kind.icl:
                    self.samplers.append(dm.SequenceSampler(shared.dcfg, shared.items, labels, g["data"],
                                                            device=device))
                    if maps is not None:
                        self.iwl_seq.append(shared.iwl_for(labels))
                else:
                    self.samplers.append(dm.ItemSampler(cfg.K, cfg.zipf_alpha, g["data"], device=device))
                offs.append(m.off)
        self.idx = idx0 if len(parts) == 1 else None  # seed positions of the one run
        # row offset of each seed's item table in the stacked tables (None: all 0)
        self.offs = torch.tensor(offs, dtype=torch.long, device=device) if any(offs) else None
        self.store = mm.stack_params(per_seed, device=device)
        self.att_names, self.mlp_names = mm.param_groups(self.store)
        S = len(per_seed)
        self.active = list(range(S))
        self._segs = None
        self.p = self._select()
        self.t_icl = [None] * S
        self.status = ["running"] * S
        self.reasons = [""] * S
        self.loss_sum = torch.zeros(S, dtype=torch.float64, device=device)
        self._gbuf = None  # reused scratch for the gathered tokens (fresh pages cost ~3x)
        self.its = [0] * S  # iterations trained, per seed
        self._cur = None  # the member evaluated last

    @property
    def rows(self) -> list:
        return [r for m in self.members for r in m.rows]

    # -- parameters ------------------------------------------------------------------
    def _select(self):
        self._segs = None
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
        self._segs = None

    def _span(self, m: _Member) -> tuple[int, int]:
        """Where member ``m``'s active seeds are in ``active`` (and in ``p``): a contiguous range."""
        act = [q for q, j in enumerate(self.active) if m.lo <= j < m.hi]
        return (act[0], act[-1] + 1) if act else (0, 0)

    def _segments(self) -> list:
        """The active seeds as runs of equal (lr, wd_attn, wd_mlp): [(a, b, lr, wd_attn, wd_mlp)]
        over positions in ``active``."""
        if self._segs is None:
            segs = []
            for m in self.members:
                a, b = self._span(m)
                if a == b:
                    continue
                h = (m.cfg.lr, m.cfg.wd_attn, m.cfg.wd_mlp)
                if segs and segs[-1][1] == a and segs[-1][2:] == h:
                    segs[-1] = (segs[-1][0], b, *h)
                else:
                    segs.append((a, b, *h))
            self._segs = segs
            self._live = [m for m in self.members if self._span(m)[1] > self._span(m)[0]]
            self._o = None if self.offs is None else \
                self.offs[self.torch.tensor(self.active, dtype=self.torch.long, device=self.device)]
            self._ls = None if self.lstart is None else \
                self.lstart[self.torch.tensor(self.active, dtype=self.torch.long, device=self.device)]
        return self._segs

    # -- forward -----------------------------------------------------------------------
    def _draw(self):
        """A training batch for the active seeds: (logits fn inputs, y).  Each seed's indices
        point into its own run's rows of the stacked tables."""
        torch = self.torch
        B = self.cfg.batch_size
        self._segments()
        o = self._o  # each active seed's row offset (None: all 0)
        if not self.kind.icl:
            idx = torch.stack([self.samplers[j].sample(B) for j in self.active])
            y = None if self._ls is None else self.lab[idx + self._ls[:, None]]  # the seed's own labels
            if o is not None:
                idx += o[:, None]
            return ("items", idx), (self.labels[idx] if y is None else y)
        batches = [self.samplers[j].sample(B) for j in self.active]
        ctx = torch.stack([b.ctx for b in batches])
        tgt = torch.stack([b.tgt for b in batches])
        if self.per_seed:
            return self._seed_inputs(self.items, ctx, tgt, o, self._ls)
        if self.cfg.K is None:
            items = torch.stack([b.items for b in batches])
            labels = torch.stack([b.labels for b in batches])
            ar = torch.arange(len(batches), device=self.device)[:, None]
            y = labels[ar, tgt]
        else:
            if o is not None:
                ctx += o[:, None, None]
                tgt += o[:, None]
            items, labels = self.items, self.labels
            y = labels[tgt]
        return ("seq", items, labels, ctx, tgt), y

    def _seed_inputs(self, items, ctx, tgt, o, ls):
        """The forward's inputs and y for seeds with their own label maps: ``ctx`` (S, n, N),
        ``tgt`` (S, n) index the rows of their run's items, seed q's at row offset ``o[q]`` of
        ``items`` (o None: 0) and its labels at ``lab[ls[q]:]``.  Returns ``(inputs, y)``.

        The fast transformer (``token_tables``) reads context rows ``2 (index) + c`` of the
        context table with both labels of every item (c = 1 for label +1), target rows as
        ever; every other model gets a table per seed of the batch's own items and labels,
        (S, n (N + 1), D) and (S, n (N + 1)), the form of K = inf's fresh items, with each
        sequence's context at positions (N + 1) b + j and its target at (N + 1) b + N.  Either
        way each seed sees the numbers of a run whose shared map is its own."""
        torch = self.torch
        S, n, N = ctx.shape
        lab_ctx = self.lab[ctx + ls[:, None, None]]
        y = self.lab[tgt + ls[:, None]]
        if o is not None:
            ctx = ctx + o[:, None, None]
            tgt = tgt + o[:, None]
        if self.kind.token_tables:
            return ("seq", items, None, 2 * ctx + (lab_ctx > 0), tgt), y
        idx = torch.cat([ctx, tgt[..., None]], -1).reshape(S, n * (N + 1))
        lab = torch.cat([lab_ctx, y[..., None]], -1).reshape(S, n * (N + 1))
        pos = torch.arange(n * (N + 1), device=ctx.device).view(n, N + 1)
        return ("seq", items[idx], lab, pos[:, :N].expand(S, n, N), pos[:, N].expand(S, n)), y

    def _logits(self, p, inp, attention=False, tables=None):
        out = self.kind.forward(self, p, inp, attention, tables)
        return out if attention else (out, None)

    def step(self) -> dict:
        """One SGD iteration for every active seed, each with its run's lr and weight decays
        (updated in slices of equal hyperparameters: the same float32 operations as a run
        trained alone).  Returns {group position: "training loss"} for the seeds whose
        training loss was not finite."""
        from icl_kinetics.simulate.models import FUSED_PARAMS, MLP_PARAMS, SGDStep

        torch = self.torch
        inp, y = self._draw()
        segs = self._segments()
        # the readout MLP updates itself in its backward pass (models.SGDStep, docs/engine.md,
        # "The fused MLP step"); autograd differentiates the rest
        fused = self.fused_mlp and all(k in self.p for k in MLP_PARAMS)
        p = SGDStep(self.p, [(a, b, lr, wd_mlp) for a, b, lr, _, wd_mlp in segs]) if fused else self.p
        logit, _ = self._logits(p, inp)
        z = -y * logit
        B = z.shape[1]
        if B % _LANES:  # see _LANES: every seed's losses on whole vector lanes, as in any batch
            z = torch.nn.functional.pad(z, (0, -B % _LANES))
        per_seed = torch.nn.functional.softplus(z)[:, :B].mean(1)
        # with the fused step autograd still differentiates the MLP's biases and readout, so the
        # MLP's backward pass (and with it the update of W1, W2) runs wherever the MLP is used
        names = [k for k in self.p if not (fused and k in FUSED_PARAMS)]
        grads = torch.autograd.grad(per_seed.sum(), [self.p[k] for k in names])
        _sgd_update(self.p, dict(zip(names, grads)), segs, self.att_names)
        with torch.no_grad():
            t = torch.tensor(self.active, dtype=torch.long, device=self.device)
            self.loss_sum[t] += per_seed.detach().double()
        for m in self._live:  # the members with active seeds
            m.loss_n += 1
        for j in self.active:
            self.its[j] += 1
        bad = np.flatnonzero(~np.isfinite(per_seed.detach().cpu().numpy()))
        return {self.active[q]: "training loss" for q in bad}

    # -- evaluation ----------------------------------------------------------------------
    def _eval_set(self, p, batch, attention: bool, tables=None):
        """Accuracy, loss, and (transformer/minimal) effective (w, beta) on a test set: the
        theory's definitions, :func:`icl_kinetics.theory.correct_margin` and
        :func:`icl_kinetics.theory.effective_head`."""
        from icl_kinetics.theory.probes import correct_margin, effective_head

        torch = self.torch
        S = next(iter(p.values())).shape[0]
        ctx = batch.ctx.unsqueeze(0).expand(S, -1, -1)
        tgt = batch.tgt.unsqueeze(0).expand(S, -1)
        y = batch.labels[batch.tgt]
        outs, atts = [], []
        C = 250
        for s0 in range(0, ctx.shape[1], C):
            inp = ("seq", batch.items, batch.labels, ctx[:, s0:s0 + C], tgt[:, s0:s0 + C])
            lo, at = self._logits(p, inp, attention=attention, tables=tables)
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

    def _probe_phi_plus(self, p, sh, S, ls=None):
        """phi_plus = y * phi(x) on the probe items, (S, n) float64; y from each seed's own
        label map (at ``lab[ls[q]:]``) when ``ls`` is given."""
        from icl_kinetics.simulate import models as mm

        idx = sh.probe.unsqueeze(0).expand(S, -1)
        y = sh.labels[idx] if ls is None else self.lab[idx + ls[:, None]]
        return mm.mlp_forward(p, sh.items[idx]).double() * y.double()

    def _eval_iwl_seeds(self, p, sh, act, ls):
        """The IWL test of seeds ``act`` (group positions) with their own label maps (at
        ``lab[ls[q]:]``), each on its own IWL sequences (:meth:`_Shared.iwl_for`), in the
        chunks of :meth:`_eval_set`: accuracy, loss and phi_plus = y * logit."""
        from icl_kinetics.theory.probes import correct_margin

        torch = self.torch
        S = len(act)
        seqs = [self.iwl_seq[j] for j in act]
        if all(c is seqs[0][0] for c, _ in seqs):  # iid contexts: one set of sequences
            ctx, tgt = seqs[0][0].unsqueeze(0).expand(S, -1, -1), seqs[0][1].unsqueeze(0).expand(S, -1)
        else:
            ctx, tgt = torch.stack([c for c, _ in seqs]), torch.stack([t for _, t in seqs])
        tables = sh.tables if self.kind.token_tables else None
        outs, C = [], 250
        for s0 in range(0, ctx.shape[1], C):
            inp, _ = self._seed_inputs(sh.items, ctx[:, s0:s0 + C], tgt[:, s0:s0 + C], None, ls)
            outs.append(self._logits(p, inp, tables=tables)[0])
        logit = torch.cat(outs, 1).double()
        y = self.lab[tgt + ls[:, None]].double()
        yl = torch.stack([correct_margin(logit[q], y[q], multiclass=False) for q in range(S)])  # y * logit
        return {"acc": (yl > 0).double().mean(1), "loss": torch.nn.functional.softplus(-yl).mean(1), "yl": yl}

    def _member(self, m):
        if m is None:
            if len(self.members) != 1:
                raise ValueError("a group of several runs evaluates one member at a time")
            return self.members[0]
        return m

    def begin_eval(self, it: int, m: _Member | None = None):
        """Evaluate every active seed of member ``m`` (the one run when None) on its run's own
        test sets (all of :data:`METRIC_COLUMNS`); :meth:`passes` and :meth:`log` read the
        result."""
        torch = self.torch
        m = self._member(m)
        kind = self.kind
        sh = m.shared
        a, b = self._span(m)
        act = self.active[a:b]
        S = len(act)
        p = {k: v[a:b] for k, v in self.p.items()} if len(self.members) > 1 else self.p
        cols = {c: [float("nan")] * S for c in METRIC_COLUMNS[2:]}
        c = None
        with torch.no_grad():
            t = torch.tensor(act, dtype=torch.long, device=self.device)
            ls = None if self.lstart is None else self.lstart[t]  # per-seed label maps
            if m.loss_n:
                cols["train_loss"] = (self.loss_sum[t] / m.loss_n).tolist()
            if not kind.icl:  # memorization of the training items
                php = self._probe_phi_plus(p, sh, S, ls)
                cols["iwl_acc"] = (php > 0).double().mean(1).tolist()
                cols["iwl_loss"] = torch.nn.functional.softplus(-php).mean(1).tolist()
                c = _coefficients(php, sh.probe_weights)
            else:
                r = self._eval_set(p, sh.icl, attention=True, tables=sh.test_tables.get("icl"))
                cols["icl_acc"], cols["icl_loss"] = r["acc"].tolist(), r["loss"].tolist()
                for k in ("w", "beta", "attn_logit_std"):
                    if k in r:
                        cols[k] = r[k].tolist()
                if sh.iwl is not None:
                    ri = self._eval_set(p, sh.iwl, attention=False, tables=sh.test_tables.get("iwl")) \
                        if ls is None else self._eval_iwl_seeds(p, sh, act, ls)
                    cols["iwl_acc"], cols["iwl_loss"] = ri["acc"].tolist(), ri["loss"].tolist()
                    if kind.coefficients == "iwl":  # phi_plus = y * logit with the target absent
                        c = _coefficients(ri["yl"])
                if kind.params_wb:
                    cols["w"] = p["w"].double().tolist()
                    cols["beta"] = p["beta"].double().tolist()
                if kind.coefficients == "probe" and sh.probe is not None:
                    c = _coefficients(self._probe_phi_plus(p, sh, S, ls), sh.probe_weights)
            if c is not None:
                cols["c1"], cols["c2"], cols["c3"] = (x.tolist() for x in c)
            self.loss_sum[m.lo:m.hi] = 0.0
        m.loss_n = 0
        m._cols = cols
        m._pos = {j: q for q, j in enumerate(act)}
        self._cur = m

    def passes(self, sel: list[int], threshold: float) -> list[bool]:
        """Whether each seed of ``sel`` had ICL accuracy > ``threshold`` at this evaluation."""
        m = self._cur
        return [m._cols["icl_acc"][m._pos[j]] > threshold for j in sel]

    def log(self, sel: list[int], it: int):
        """Append the metric rows of seeds ``sel`` evaluated at iteration ``it``."""
        m = self._cur
        for j in sel:
            q = m._pos[j]
            row = {"seed": m.cfg.seed_offset + m.idx[j - m.lo], "iteration": it}
            row.update({k: float(v[q]) for k, v in m._cols.items()})
            m.rows.append(row)

    # -- checkpoint state ------------------------------------------------------------------
    def state_of(self, m: _Member) -> dict:
        """Member ``m``'s state, in the form of a one-run group's (:meth:`state`)."""
        self._write_back()
        lo, hi = m.lo, m.hi
        whole = lo == 0 and hi == len(self.its)
        cut = (lambda v: v.detach().cpu()) if whole else (lambda v: v[lo:hi].detach().cpu().clone())
        return {"store": {k: cut(v) for k, v in self.store.items()},
                "active": [j - lo for j in self.active if lo <= j < hi],
                "t_icl": self.t_icl[lo:hi], "status": self.status[lo:hi], "reasons": self.reasons[lo:hi],
                "gens": [g.get_state() for g in self.gens[lo:hi]], "loss_sum": cut(self.loss_sum),
                "loss_n": m.loss_n, "last_eval": m.last_eval, "rows": list(m.rows), "its": self.its[lo:hi]}

    def load_member(self, m: _Member, st: dict):
        """Load a one-run state (:meth:`state_of`) into member ``m``."""
        self._write_back()
        lo, hi = m.lo, m.hi
        with self.torch.no_grad():
            for k, v in st["store"].items():
                self.store[k][lo:hi] = v.to(self.device, self.store[k].dtype)
        self.active = sorted([j for j in self.active if not lo <= j < hi] + [lo + a for a in st["active"]])
        self._segs = None
        self.t_icl[lo:hi], self.status[lo:hi] = list(st["t_icl"]), list(st["status"])
        self.reasons[lo:hi], self.its[lo:hi] = list(st["reasons"]), list(st["its"])
        for g, s in zip(self.gens[lo:hi], st["gens"]):
            g.set_state(s)
        self.loss_sum[lo:hi] = st["loss_sum"].to(self.device)
        m.loss_n, m.last_eval, m.rows = st["loss_n"], st["last_eval"], list(st["rows"])
        self.p = self._select() if self.active else {}

    def state(self) -> dict:
        return self.state_of(self._member(None))

    def load(self, st: dict):
        self.load_member(self._member(None), st)

    @property
    def last_eval(self):
        return self._member(None).last_eval

    @last_eval.setter
    def last_eval(self, v):
        self._member(None).last_eval = v


def _sgd_update(p: dict, grads: dict, segs: list, att_names) -> None:
    """SGD with coupled L2 weight decay, in place: ``v -= lr * (g + wd * v)`` on each slice
    ``a:b`` of seeds of ``segs`` [(a, b, lr, wd_attn, wd_mlp)], wd_attn on ``att_names``, wd_mlp
    on the rest.  torch's ``add``/``sub`` with ``alpha`` (one rounding of ``x + alpha * y``), so
    a slice gets the float32 numbers of its run updated alone (docs/engine.md, "Grid batching")."""
    import torch

    with torch.no_grad():
        for k, g in grads.items():
            att = k in att_names
            v = p[k]
            for a, b, lr, wd_attn, wd_mlp in segs:
                wd = wd_attn if att else wd_mlp
                vs, gs = (v, g) if len(segs) == 1 else (v[a:b], g[a:b])
                if wd:
                    gs = gs.add(vs, alpha=wd)
                vs.sub_(gs, alpha=lr)


def _make_group(cfg: TrainConfig, shared, idx: list[int], device):
    """The seed group of the configuration's backend, for seed positions ``idx`` of one run."""
    if cfg.resolve_backend() == "overlaps":
        from icl_kinetics.simulate.overlaps import OverlapGroup

        return OverlapGroup(cfg, idx, _initial_betas(cfg, idx))
    return _Group([(0, cfg, shared, idx)], device)


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
    """Advance one group (either backend) from step ``start`` to ``stop``, evaluating on the
    way.  Each run in the group (:func:`_units`) is at iteration step + ``shift`` and is
    evaluated on its own schedule."""
    try:
        units = _units(grp)
        n = start
        while grp.active:
            for m in units:
                it, cfg = n + m.shift, m.cfg
                if (it % cfg.eval_every == 0 or it == cfg.iterations) and m.last_eval != it and m.active():
                    _evaluate_and_stop(grp, it, m)
                    m.last_eval = it
            if not grp.active or n >= stop:
                break
            bad = grp.step()
            n += 1
            if bad:
                for j, what in bad.items():
                    m = next(u for u in units if not hasattr(u, "lo") or u.lo <= j < u.hi)
                    grp.status[j] = "diverged"
                    grp.reasons[j] = f"non-finite {what} at iteration {n + m.shift}"
                grp.deactivate(list(bad))
            with lock:
                counter[0] += len(grp.active) + len(bad)
    except BaseException as exc:  # re-raised in the main thread
        errors.append(exc)


def _evaluate_and_stop(grp, it: int, m=None):
    """One evaluation of unit ``m`` (a run's seeds in the group; None: the whole group): t_ICL
    for the seeds that exceed ``t_icl_threshold`` for the first time, early stop for those
    above ``early_stop`` (both strict), and the logged rows: every active seed at a logging
    iteration, else only the seeds that acquire or stop."""
    m = m if m is not None else _units(grp)[0]
    cfg = m.cfg
    act = m.active()
    m.begin_eval(it)
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
    return _build_pack([cfg], device)[0]


def _pack_workers(cfgs: list) -> int:
    """Worker groups of a pack: ``workers`` of its runs (all cores when None), at most one
    per seed; one on CUDA."""
    return max(1, min(_resolve_workers(cfgs[0]), sum(c.seeds for c in cfgs))) if len(cfgs) > 1 else \
        _resolve_workers(cfgs[0])


def _build_pack(cfgs: list, device):
    """The seed groups of a pack of runs, one per worker, and each run's units
    ``[(group, member)]`` (member None: the overlap sampler's group of the one run).

    The seeds of all runs, in run order, are split into contiguous groups as one run's seeds
    are, so a run's seeds are a contiguous block of each group they fall in."""
    workers = _pack_workers(cfgs)
    if cfgs[0].resolve_backend() == "overlaps":  # one run (pack_check refuses more)
        cfg = cfgs[0]
        parts = [list(map(int, p)) for p in np.array_split(np.arange(cfg.seeds), workers)]
        groups = [_make_group(cfg, None, p, device) for p in parts]
        return groups, [[(g, None) for g in groups]]
    shareds = [_Shared(c, device) for c in cfgs]
    tables = _Tables(shareds)
    seeds = [(r, i) for r, c in enumerate(cfgs) for i in range(c.seeds)]
    groups = []
    for part in np.array_split(np.arange(len(seeds)), workers):
        runs: dict = {}
        for q in part:
            r, i = seeds[int(q)]
            runs.setdefault(r, []).append(i)
        groups.append(_Group([(r, cfgs[r], shareds[r], idx) for r, idx in runs.items()], device, tables))
    units = [[(g, m) for g in groups for m in g.members if m.run == r] for r in range(len(cfgs))]
    return groups, units


def time_steps(cfg: TrainConfig, iterations: int, warmup: int = 2) -> dict:
    """Time ``iterations`` SGD steps of every seed of ``cfg`` as :func:`train` runs them
    (one worker thread per group, one intra-op thread each on CPU), data generation
    included, evaluation left out.  For benchmarks (:mod:`icl_kinetics.simulate.bench`).

    Returns ``{"seconds": wall seconds of the timed steps, "workers": groups,
    "seed_iterations": seeds x iterations}``; ``warmup`` untimed steps run first.  The
    process's malloc settings are :func:`train`'s (``allocator.tune_malloc``), so the steps
    timed are the steps a run takes.
    """
    import torch

    from icl_kinetics.simulate.allocator import tune_malloc

    if not isinstance(cfg, TrainConfig):
        raise ParameterError("cfg", type(cfg).__name__, "a TrainConfig")
    cfg.validate()
    iterations = positive_int("iterations", iterations, 1)
    warmup = positive_int("warmup", warmup, 0)
    tune_malloc()
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


#: TrainConfig fields that set a tensor shape, the model or where it runs, and the label map
#: (per-seed maps need a context table with two rows per item): equal in a pack
#: (:func:`pack_key`).  Everything else may differ between the runs of a pack: K (finite),
#: item_seed, zipf_alpha, beta0, w0, lr, weight decays, seeds, seed, seed_offset, iterations,
#: eval_every, log_every, early_stop, t_icl_threshold, checkpoint_every.
PACK_FIELDS = ("model", "N", "D", "width", "labels", "contexts", "batch_size", "eval_size", "device", "workers",
               "label_map")


def pack_key(cfg: TrainConfig) -> tuple:
    """The compatibility key of grid batching: runs with equal keys can train as one
    seed-batched group (:func:`train_packed`).  The fields of :data:`PACK_FIELDS`, whether K
    is finite (K = inf draws fresh items per seed, finite K indexes a stored table) and the
    backend; the overlap sampler's runs are never packed (their key holds the run's id)."""
    if not isinstance(cfg, TrainConfig):
        raise ParameterError("cfg", type(cfg).__name__, "a TrainConfig")
    key = tuple((f, cfg.label_map_in_use if f == "label_map" else getattr(cfg, f))
                for f in PACK_FIELDS) + (("finite K", cfg.K is not None),)
    backend = cfg.resolve_backend()
    return key + (("backend", backend),) + ((("run", cfg.config_hash()),) if backend == "overlaps" else ())


def pack_check(cfgs) -> list:
    """Raise :class:`ParameterError` unless ``cfgs`` (a non-empty list of valid TrainConfig)
    can train as one pack: equal :func:`pack_key`, no two runs with the same seeds
    (``seed``, ``seed_offset + i``) and ``item_seed`` and K.  Returns the list."""
    if isinstance(cfgs, TrainConfig) or not isinstance(cfgs, (list, tuple)) or not cfgs:
        raise ParameterError("cfgs", type(cfgs).__name__, "a non-empty list of TrainConfig")
    cfgs = list(cfgs)
    for c in cfgs:
        if not isinstance(c, TrainConfig):
            raise ParameterError("cfgs", type(c).__name__, "a list of TrainConfig")
        c.validate()
    k0 = dict(pack_key(cfgs[0]))
    for c in cfgs[1:]:
        k = dict(pack_key(c))
        # finiteness of K first: it also decides whether label_map counts (K = inf has no map)
        for f in ["finite K"] + [f for f in k0 if f != "finite K"]:
            if k[f] != k0[f]:
                if f == "run":
                    raise ParameterError("backend", "overlaps", "runs of the 'autograd' backend (the overlap "
                                         "sampler trains one run at a time)")
                if f == "finite K":
                    raise ParameterError("K", c.K, f"{'a finite K' if k0[f] else 'None (K = inf)'}, as in the "
                                         "pack's first run: runs of a pack all have finite K or all K = inf")
                raise ParameterError(f, k[f], f"{k0[f]!r}, as in the pack's first run: runs of a pack share "
                                     f"{', '.join(PACK_FIELDS)}")
    ids = [c.config_hash() for c in cfgs]
    if len(set(ids)) < len(ids):
        raise ParameterError("cfgs", "the same run twice", "distinct runs")
    return cfgs


def pack_bytes(cfgs) -> tuple[float, str]:
    """Estimated peak memory of a pack: the sum of its runs' (:meth:`TrainConfig.estimate_bytes`;
    each run's shared tables once, its seeds' parameters and activations), and the parameter
    that dominates the largest."""
    est = [c.estimate_bytes() for c in cfgs]
    return float(sum(e[0] for e in est)), max(est)[1]


def train(cfg: TrainConfig, out=None, progress: bool = True, resume: bool = True) -> TrainResult:
    """Train ``cfg.seeds`` seeds; see the module docstring.  A pack of one run
    (:func:`train_packed`).

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
    return train_packed([cfg], None if out is None else [out], progress=progress, resume=resume)[0]


def train_packed(cfgs, outs=None, progress: bool = True, resume: bool = True, on_result=None) -> list:
    """Train several runs as one seed-batched group (grid batching; docs/engine.md, "Grid
    batching").

    The runs must share every tensor shape (:func:`pack_key`); they may differ in K (and
    item_seed, zipf_alpha), lr, weight decays, seeds, initial beta / w, iterations,
    eval_every, log_every, early_stop, t_icl_threshold and checkpoint_every.  Each run keeps
    its own item table, test sets, seed streams, hyperparameters, evaluations, t_ICL, early
    stopping and out folder, written exactly as :func:`train` writes them, and its metrics
    equal the run's trained alone (bitwise on CPU while at least two seeds of the pack are
    active; docs/engine.md).  A run's checkpoint resumes alone or in any pack.

    Args:
        cfgs: the runs' configurations (list of :class:`TrainConfig`).
        outs: one folder per run (as ``out`` of :func:`train`), or None (nothing written).
        progress: a progress bar over seed-iterations (all runs).
        resume: continue each run from its ``checkpoint.pt`` (as :func:`train`).  Runs may
            resume at different iterations.
        on_result: called as ``on_result(i, result)`` when run ``i`` finishes (its files
            written), before the others have.

    Raises:
        ParameterError: a bad configuration or ``outs``; runs that cannot share a pack
            (naming the field that differs); a pack whose memory cannot fit; an ``iterations``
            cap below a run's checkpoint.

    Returns:
        list of :class:`TrainResult`, one per run, in order; ``seconds`` is the run's share
        of the pack's wall time (by its seed-iterations).
    """
    cfgs = pack_check(cfgs)
    if outs is not None:
        from icl_kinetics.io import check_output_dir

        if isinstance(outs, (str, Path)) or not isinstance(outs, (list, tuple)) or len(outs) != len(cfgs):
            raise ParameterError("outs", outs if isinstance(outs, (str, Path)) else type(outs).__name__,
                                 f"None or a list of {len(cfgs)} folders (one per run)")
        outs = [Path(o) for o in outs]
        if len({o.resolve() for o in outs}) < len(outs):
            raise ParameterError("outs", "the same folder twice", "one folder per run")
        for o in outs:
            check_output_dir("out", o)
    if len(cfgs) == 1:
        cfgs[0].require_memory()
    else:
        from icl_kinetics.resources import require_memory

        need, name = pack_bytes(cfgs)
        require_memory(name, getattr(cfgs[0], name), need, f"training a pack of {len(cfgs)} runs "
                       f"({sum(c.seeds for c in cfgs)} seeds) of {cfgs[0].model!r}")
    import torch

    from icl_kinetics.io import write_csv, write_json
    from icl_kinetics.simulate.allocator import tune_malloc

    tune_malloc()
    t0 = time.perf_counter()
    device = torch.device(cfgs[0].device)
    workers = _pack_workers(cfgs)
    processes = len(cfgs) == 1 and _use_processes(cfgs[0], workers)
    old_threads = torch.get_num_threads()
    R = len(cfgs)
    ckpts = [None] * R if outs is None else [o / "checkpoint.pt" for o in outs]
    results: list = [None] * R
    try:
        if cfgs[0].device == "cpu":
            torch.set_num_threads(1 if workers > 1 else (cfgs[0].workers or old_threads))
        groups, units, its, notes = _resume_pack(cfgs, ckpts if resume else [None] * R, device)
        if outs is not None:
            for c, o in zip(cfgs, outs):
                write_json(o / "config.json", {**c.to_dict(), "config_hash": c.config_hash()})
        bar = None
        if progress:
            from tqdm.auto import tqdm

            desc = f"train {cfgs[0].model}" + (f" ({R} runs)" if R > 1 else "")
            bar = tqdm(total=sum(c.seeds * c.iterations for c in cfgs), initial=sum(sum(g.its) for g in groups),
                       unit="seed-it", desc=desc, smoothing=0.05)
        counter = [0]
        live = list(range(R))

        def boundary(r):  # the run's next checkpoint (train's segment end)
            c = cfgs[r]
            return min(c.iterations, (its[r] // c.checkpoint_every + 1) * c.checkpoint_every)

        def idle(r):  # no seed of run r steps any more
            return not any(g.active if m is None else m.active() for g, m in units[r])

        def save(r):
            if ckpts[r] is not None:
                _save(ckpts[r], cfgs[r], units[r], its[r])
                write_csv(outs[r] / "metrics.csv", metrics_table(cfgs[r], _run_rows(units[r])))

        def finish(r):
            save(r)
            live.remove(r)
            for g, m in units[r]:  # a finished run's seeds step no more
                if m is not None and m.active():
                    g.deactivate(m.active())
            done = sum(sum(g.its) for g in groups)
            res = _result(cfgs[r], units[r], its[r], 0.0)
            res.seconds = (time.perf_counter() - t0) * (res.seed_iterations / done if done else 1.0 / R)
            res.notes = notes[r]
            if outs is not None:
                write_json(outs[r] / "summary.json", res.summary())
            results[r] = res
            if on_result is not None:
                on_result(r, res)

        while live:
            for r in list(live):  # a run with no seed left ends at its next checkpoint, as alone
                if idle(r):
                    its[r] = boundary(r)
                    finish(r)
            if not live:
                break
            ends = {r: boundary(r) for r in live}
            L = min(ends[r] - its[r] for r in live)
            base = its[live[0]]
            for r in live:
                for g, m in units[r]:
                    if m is not None:
                        m.shift = its[r] - base
            _run_segment(groups, base, base + L, processes, counter, bar)
            for r in live:
                its[r] += L
            for r in list(live):
                if its[r] == ends[r]:
                    if its[r] >= cfgs[r].iterations or idle(r):
                        finish(r)
                    else:
                        save(r)
        if bar is not None:
            bar.close()
    finally:
        torch.set_num_threads(old_threads)
    return results


def _run_rows(units) -> list:
    rows = [r for g, m in units for r in (g.rows if m is None else m.rows)]
    rows.sort(key=lambda r: (r["seed"], r["iteration"]))
    return rows


def _rows(groups) -> list:
    return _run_rows([(g, None) for g in groups])


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


def _result(cfg, units, it, seconds) -> TrainResult:
    t_icl, status, reasons, its = [], [], [], 0
    for g, m in units:
        lo, hi = (0, len(g.t_icl)) if m is None else (m.lo, m.hi)
        t_icl += g.t_icl[lo:hi]
        status += g.status[lo:hi]
        reasons += g.reasons[lo:hi]
        its += sum(g.its[lo:hi])
    return TrainResult(cfg, t_icl, status, reasons, it, _run_rows(units), seconds, its)


#: the checkpoint envelope's format tag (see :func:`_save`)
CHECKPOINT_FORMAT = "icl-kinetics-checkpoint/2"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: unreadable, damaged, or not this run's."""


def _save(path: Path, cfg: TrainConfig, units, it: int):
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
             "backend": units[0][0].backend,
             "groups": [g.state() if m is None else g.state_of(m) for g, m in units],
             "seed_index": [list(g.idx if m is None else m.idx) for g, m in units]}
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


def _resume_pack(cfgs: list, ckpts: list, device):
    """Build a pack's groups and restore each run from its checkpoint (None: none):
    (groups, units per run, iteration per run, notes per run).

    A checkpoint that cannot be read, is damaged or belongs to another configuration is
    renamed (:func:`_set_aside`), a one-line warning naming it goes to stderr, and that run
    starts from scratch (iteration 0, a note); the pack is then built afresh, so nothing of
    a half-loaded state remains."""
    import sys

    notes: list = [[] for _ in cfgs]
    while True:
        groups, units = _build_pack(cfgs, device)
        its = [0] * len(cfgs)
        bad = None
        for r, path in enumerate(ckpts):
            if path is None or not path.exists():
                continue
            try:
                st = _load_checkpoint(path)
                _check_state(st, cfgs[r], [g for g, _ in units[r]])
                try:
                    its[r] = _restore(units[r], st)
                except Exception as e:  # a state that passed the checks but does not fit together
                    raise CheckpointError(f"inconsistent state ({type(e).__name__}: {e})") from None
            except CheckpointError as e:
                bad = (r, _set_aside(path, str(e)))
                break
        if bad is None:
            return groups, units, its, notes
        r, note = bad
        notes[r].append(note)
        sys.stderr.write(f"icl-kinetics: warning: {note}\n")


def _restore(units, st) -> int:
    """Load a run's checkpoint into its units ``[(group, member)]``; the grouping may differ
    (workers changed, or the run trained alone and now in a pack, or the reverse)."""
    import torch

    by_seed = {}
    for gs, idx in zip(st["groups"], st["seed_index"]):
        for q, i in enumerate(idx):
            by_seed[i] = (gs, q)
    rows = [r for gs in st["groups"] for r in gs["rows"]]
    for g, m in units:
        idx, cfg = (g.idx, g.cfg) if m is None else (m.idx, m.cfg)
        sub = {"store": {}, "active": [], "t_icl": [], "status": [], "reasons": [], "gens": [],
               "rows": [], "its": []}
        stores, loss = [], []
        for q, i in enumerate(idx):
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
        seeds = {cfg.seed_offset + i for i in idx}
        sub["rows"] = [r for r in rows if r["seed"] in seeds]
        if m is None:
            g.load(sub)
        else:
            g.load_member(m, sub)
    return int(st["iteration"])
