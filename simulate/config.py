"""Training configuration and outcome: :class:`TrainConfig` (its validation, identity and
hash, memory estimate and refusal), :class:`TrainResult`, the tidy metrics table's
:data:`METRIC_COLUMNS`, and how a configuration is run on this machine (worker groups,
and whether the overlap sampler's groups run in forked processes).

Time is counted in iterations (one SGD step on ``batch_size`` sequences each); ``lr`` and
the weight decays are per iteration (learning-rate time is lr * t).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from icl_kinetics.errors import ParameterError, finite_float, one_of, positive_float, positive_int, probability
from icl_kinetics.theory import T_ICL_THRESHOLD

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
        """Estimated peak memory of :func:`~icl_kinetics.simulate.engine.train` in bytes, and the
        parameter that dominates it.

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
    """Outcome of :func:`~icl_kinetics.simulate.engine.train`.

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
            "final_icl_acc": [last.get(self.config.seed_offset + i, {}).get("icl_acc")
                              for i in range(self.config.seeds)],
            "final_iwl_acc": [last.get(self.config.seed_offset + i, {}).get("iwl_acc")
                              for i in range(self.config.seeds)],
            "seconds": self.seconds,
            "seed_iterations": self.seed_iterations,
            "notes": list(self.notes),
            "units": {"t_icl": "iterations", "iterations_done": "iterations"},
        }


def _resolve_workers(cfg: TrainConfig) -> int:
    if cfg.device == "cuda":
        return 1
    w = cfg.workers or os.cpu_count() or 1
    return max(1, min(w, cfg.seeds))


def _use_processes(cfg: TrainConfig, workers: int) -> bool:
    """Whether :func:`~icl_kinetics.simulate.engine.train` runs its groups in forked worker processes: the overlap
    sampler, more than one group, >= ``_PROCESS_MIN_SEED_ITERATIONS`` seed-iterations, Linux."""
    import sys

    return (workers > 1 and cfg.seeds * cfg.iterations >= _PROCESS_MIN_SEED_ITERATIONS
            and sys.platform.startswith("linux") and cfg.resolve_backend() == "overlaps")
