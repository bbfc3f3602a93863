"""The seed-batched training engine: S independent seeds trained in one process.

:func:`train` runs plain SGD (per-group coupled L2 weight decay, logistic loss) on
one of the models of :mod:`icl_kinetics.simulate.models`, fed by the data generator
of :mod:`icl_kinetics.simulate.data`, and logs a tidy metrics table (one row per
seed x evaluation).  It checkpoints atomically and resumes after a kill with no lost
progress and the same numbers.

**Seeds.**  Seed index ``i`` of base seed ``seed`` draws its initialization and its
training-data stream from generators derived only from ``(seed, i)``
(:func:`~icl_kinetics.simulate.data.seed_generators`), so a seed gives the same
numbers alone or inside any batch.  The item set and the test sets come from
``item_seed`` and are shared by every seed (as in the paper's code, whose training
items use a fixed seed).

**Parallelism.**  On CPU the seeds are split into ``workers`` groups; each group runs
in its own thread with one intra-op thread (small matmuls run much slower with two
threads each than with two single-threaded workers).  On CUDA one group holds all
seeds.

**Time** is counted in iterations (one SGD step on ``batch_size`` sequences each).
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

from icl_kinetics.errors import ParameterError, one_of, positive_float, positive_int, probability
from icl_kinetics.simulate.workers import run_in_threads

__all__ = ["TrainConfig", "TrainResult", "train", "METRIC_COLUMNS"]

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
        beta0: initial beta of the minimal model (None: N(0, 1) per seed).
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
        early_stop: stop a seed once its ICL accuracy exceeds this (None: never).
        t_icl_threshold: ICL accuracy that defines t_ICL (first evaluation above it).
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
    t_icl_threshold: float = 0.95
    checkpoint_every: int = 5000
    device: str = "cpu"
    workers: int | None = None

    def __post_init__(self):
        # an integer-valued float (K=20.0, from a JSON or YAML file) is that integer: one
        # configuration, one hash
        for f in ("N", "K", "D", "width", "batch_size", "seeds", "seed", "seed_offset", "item_seed", "iterations",
                  "eval_every", "eval_size", "checkpoint_every", "workers"):
            v = getattr(self, f)
            if isinstance(v, (float, np.floating)) and not isinstance(v, bool) and float(v).is_integer():
                object.__setattr__(self, f, int(v))
            elif isinstance(v, np.integer):
                object.__setattr__(self, f, int(v))

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
        if self.beta0 is not None:
            from icl_kinetics.errors import finite_float

            finite_float("beta0", self.beta0)
        one_of("device", self.device, ("cpu", "cuda"))
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ParameterError("device", "cuda", "'cpu': no CUDA GPU is available on this machine")
        if self.workers is not None:
            positive_int("workers", self.workers, 1)

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
        """
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
        return ModelConfig(kind=self.model, token_dim=T, D=self.D, width=self.width, beta0=self.beta0)

    def to_dict(self) -> dict:
        return asdict(self)

    def config_hash(self, exclude=("iterations", "workers", "checkpoint_every")) -> str:
        """Hash of everything that determines the numbers (not the cap or the parallelism)."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

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


# ----------------------------------------------------------------------------- shared data
class _Shared:
    """What every seed shares: the item set, test sets and their normalized token tables."""

    def __init__(self, cfg: TrainConfig, device):
        import torch

        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate.models import normalize_tokens

        self.dcfg = dcfg = cfg.data_config()
        gen = dm.item_generator(cfg.item_seed, device=device)
        self.items = self.labels = None
        if cfg.K is not None:
            self.items, self.labels = dm.make_item_set(cfg.K, cfg.D, gen, device=device)
        enc = cfg.labels
        self.tables = None
        if cfg.model in ("transformer", "transformer2", "minimal"):
            # novel items with fresh balanced labels, from the shared item stream
            self.icl = dm.icl_test_set(dcfg, None, gen, device=device)
            self.iwl = dm.iwl_test_set(dcfg, self.items, self.labels, gen, device=device) if cfg.K else None
            if cfg.K is not None and cfg.model == "transformer":
                c, t = dm.token_table(self.items, self.labels, enc)
                self.tables = (normalize_tokens(c), normalize_tokens(t))
        else:
            self.icl = self.iwl = None
        # memorization probe: phi_plus on (up to) 10^4 training items
        self.probe = None
        if cfg.K is not None and cfg.model in ("mlp", "minimal") and cfg.width:
            n = min(cfg.K, 10_000)
            self.probe = torch.arange(n, device=device)
        self.enc = enc
        self._norm = normalize_tokens
        self.test_tables = {}
        if cfg.model == "transformer":  # normalized once, not at every evaluation
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
    """A group of seeds trained together (one worker thread)."""

    def __init__(self, cfg: TrainConfig, shared: _Shared, idx: list[int], device):
        import torch

        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate import models as mm

        self.torch, self.cfg, self.shared, self.idx, self.device = torch, cfg, shared, idx, device
        self.mcfg = cfg.model_config()
        per_seed, self.gens, self.samplers = [], [], []
        for i in idx:
            g = dm.seed_generators(cfg.seed, cfg.seed_offset + i, device=device)
            # parameters are always drawn on CPU, so a seed starts the same on every device
            gi = g["init"] if device.type == "cpu" else dm.seed_generators(cfg.seed, cfg.seed_offset + i)["init"]
            per_seed.append(mm.init_params(self.mcfg, gi))
            self.gens.append(g["data"])
            if cfg.model != "mlp":
                self.samplers.append(dm.SequenceSampler(shared.dcfg, shared.items, shared.labels, g["data"],
                                                        device=device))
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
        if cfg.model == "mlp":
            K = cfg.K
            if cfg.zipf_alpha > 0:
                w = torch.arange(1, K + 1, dtype=torch.float64, device=device) ** (-cfg.zipf_alpha)
                self.cdf = (w.cumsum(0) / w.sum()).float()
            else:
                self.cdf = None

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
        if cfg.model == "mlp":
            idx = []
            for j in self.active:
                g = self.gens[j]
                if self.cdf is None:
                    idx.append(torch.randint(0, cfg.K, (cfg.batch_size,), generator=g, device=self.device))
                else:
                    u = torch.rand(cfg.batch_size, generator=g, device=self.device)
                    idx.append(torch.searchsorted(self.cdf, u).clamp_max_(cfg.K - 1))
            idx = torch.stack(idx)
            return ("mlp", idx), self.shared.labels[idx]
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
        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate import models as mm

        if inp[0] == "mlp":
            return mm.mlp_forward(p, self.shared.items[inp[1]]), None
        _, items, labels, ctx, tgt = inp
        kind = self.cfg.model
        if kind == "minimal":
            out = mm.minimal_forward(p, items, labels, ctx, tgt, return_attention=attention)
        elif kind == "transformer":
            if tables is not None:
                n_c, n_t = tables
            elif items.dim() == 2 and self.shared.tables is not None and items is self.shared.items:
                n_c, n_t = self.shared.tables
            else:
                n_c, n_t = self.shared.token_tables(items, labels)
            need = ctx.numel() * n_c.shape[-1]
            if self._gbuf is None or self._gbuf.numel() < need:
                self._gbuf = self.torch.empty(need, device=self.device, dtype=n_c.dtype)
            out = mm.transformer_fast(p, n_c, n_t, ctx, tgt, return_attention=attention, buffer=self._gbuf)
        else:  # transformer2: every position is needed (see models.py)
            torch = self.torch
            if items.dim() == 2:
                c, t = dm.token_table(items, labels, self.cfg.labels)
                tok = torch.cat([c[ctx], t[tgt].unsqueeze(2)], dim=2)
            else:
                ct = [dm.token_table(i, l, self.cfg.labels) for i, l in zip(items, labels)]
                tok = torch.stack([torch.cat([c[cx], t[tg].unsqueeze(1)], dim=1)
                                   for (c, t), cx, tg in zip(ct, ctx, tgt)])
            out = mm.transformer_reference(p, tok, return_attention=attention)
        return out if attention else (out, None)

    def step(self):
        """One SGD iteration for every active seed."""
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
        return per_seed.detach()

    # -- evaluation ----------------------------------------------------------------------
    def _eval_set(self, batch, attention: bool, tables=None):
        """Accuracy, loss, and (transformer/minimal) effective (w, beta) on a test set."""
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
        yl = y.double() * logit
        res = {"acc": (yl > 0).double().mean(1), "loss": torch.nn.functional.softplus(-yl).mean(1), "yl": yl}
        if attention and atts[0] is not None:
            p_ctx = torch.cat([a[0] for a in atts], 1).double()
            p_tgt = torch.cat([a[1] for a in atts], 1).double()
            lab = batch.labels[batch.ctx].double()
            match = (batch.ctx == batch.tgt[:, None])  # (n, N): copies of the target
            m = (p_ctx * lab).sum(-1) * y.double()  # attention-weighted label sum along y
            # effective beta: log of (mean weight on matching keys) / (mean weight on the others)
            nm = match.sum(1).double() + 1.0
            pm = ((p_ctx * match).sum(-1) + p_tgt) / nm
            no = (~match).sum(1).double().clamp_min(1.0)
            po = (p_ctx * (~match)).sum(-1) / no
            beta_eff = (pm.clamp_min(1e-300).log() - po.clamp_min(1e-300).log()).mean(1)
            # effective w: slope of y*logit on the attention readout along y
            mc = m - m.mean(1, keepdim=True)
            w_eff = (mc * (yl - yl.mean(1, keepdim=True))).sum(1) / (mc * mc).sum(1).clamp_min(1e-300)
            logp = torch.cat([p_ctx, p_tgt[..., None]], -1).clamp_min(1e-300).log()
            res.update(w=w_eff, beta=beta_eff, attn_logit_std=logp.std(-1).mean(1))
        return res

    def _coefficients(self, phi_plus):
        """c1, c2, c3 of correct-label logits phi_plus (S, n)."""
        torch = self.torch
        s = torch.sigmoid(-phi_plus)
        c1 = s.mean(1)
        return c1, 1 - (s * s).mean(1) / c1, torch.exp(-phi_plus).mean(1)

    @staticmethod
    def _nan(S):
        return [float("nan")] * S

    def evaluate(self, it: int):
        """Evaluate the active seeds; returns their ICL accuracies (list) and logs rows."""
        torch = self.torch
        cfg = self.cfg
        S = len(self.active)
        cols = {c: self._nan(S) for c in METRIC_COLUMNS[2:]}
        with torch.no_grad():
            t = torch.tensor(self.active, dtype=torch.long, device=self.device)
            if self.loss_n:
                cols["train_loss"] = (self.loss_sum[t] / self.loss_n).tolist()
            if cfg.model == "mlp":
                idx = self.shared.probe.unsqueeze(0).expand(S, -1)
                from icl_kinetics.simulate import models as mm

                phi = mm.mlp_forward(self.p, self.shared.items[idx]).double()
                php = phi * self.shared.labels[idx].double()
                cols["iwl_acc"] = (php > 0).double().mean(1).tolist()
                cols["iwl_loss"] = torch.nn.functional.softplus(-php).mean(1).tolist()
                c1, c2, c3 = self._coefficients(php)
            else:
                att = cfg.model in ("transformer", "transformer2", "minimal")
                r = self._eval_set(self.shared.icl, attention=att, tables=self.shared.test_tables.get("icl"))
                cols["icl_acc"], cols["icl_loss"] = r["acc"].tolist(), r["loss"].tolist()
                for k in ("w", "beta", "attn_logit_std"):
                    if k in r:
                        cols[k] = r[k].tolist()
                c1 = None
                if self.shared.iwl is not None:
                    ri = self._eval_set(self.shared.iwl, attention=False, tables=self.shared.test_tables.get("iwl"))
                    cols["iwl_acc"], cols["iwl_loss"] = ri["acc"].tolist(), ri["loss"].tolist()
                    if cfg.model != "minimal":  # transformer: phi_plus = y * logit with the target absent
                        c1, c2, c3 = self._coefficients(ri["yl"])
                if cfg.model == "minimal":
                    cols["w"] = self.p["w"].double().tolist()
                    cols["beta"] = self.p["beta"].double().tolist()
                    if self.shared.probe is not None:
                        from icl_kinetics.simulate import models as mm

                        idx = self.shared.probe.unsqueeze(0).expand(S, -1)
                        phi = mm.mlp(self.p, self.shared.items[idx])[..., 0].double()
                        c1, c2, c3 = self._coefficients(phi * self.shared.labels[idx].double())
            if c1 is not None:
                cols["c1"], cols["c2"], cols["c3"] = c1.tolist(), c2.tolist(), c3.tolist()
            self.loss_sum.zero_()
        self.loss_n = 0
        for q, j in enumerate(self.active):
            row = {"seed": cfg.seed_offset + self.idx[j], "iteration": it}
            row.update({k: float(v[q]) for k, v in cols.items()})
            self.rows.append(row)
        return cols["icl_acc"]

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


# ----------------------------------------------------------------------------- the loop
def _run_group(grp: _Group, start: int, stop: int, counter: list, lock, errors: list):
    """Advance one group from iteration ``start`` to ``stop`` (evaluating on the way)."""
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
            losses = grp.step()
            it += 1
            bad = [grp.active[q] for q in np.flatnonzero(~np.isfinite(losses.cpu().numpy()))]
            if bad:
                for j in bad:
                    grp.status[j] = "diverged"
                    grp.reasons[j] = f"non-finite training loss at iteration {it}"
                grp.deactivate(bad)
            with lock:
                counter[0] += len(grp.active) + len(bad)
    except BaseException as exc:  # re-raised in the main thread
        errors.append(exc)


def _evaluate_and_stop(grp: _Group, it: int):
    if grp.cfg.model == "mlp":
        grp.evaluate(it)
        return
    accs = grp.evaluate(it)
    stop = []
    for q, j in enumerate(list(grp.active)):
        a = accs[q]
        if grp.t_icl[j] is None and a > grp.cfg.t_icl_threshold:
            grp.t_icl[j] = it
        if grp.cfg.early_stop is not None and a > grp.cfg.early_stop:
            grp.status[j] = "stopped"
            stop.append(j)
    if stop:
        grp.deactivate(stop)


def _resolve_workers(cfg: TrainConfig) -> int:
    if cfg.device == "cuda":
        return 1
    w = cfg.workers or os.cpu_count() or 1
    return max(1, min(w, cfg.seeds))


def train(cfg: TrainConfig, out=None, progress: bool = True, resume: bool = True) -> TrainResult:
    """Train ``cfg.seeds`` seeds; see the module docstring.

    Args:
        cfg: the configuration.
        out: folder for ``config.json``, ``metrics.csv``, ``summary.json`` and
            ``checkpoint.pt`` (None: nothing is written and nothing resumes).
        progress: show a progress bar (tqdm) over seed-iterations.
        resume: continue from ``out/checkpoint.pt`` if it exists.  A checkpoint that cannot
            be read, fails its SHA-256 digest or belongs to another configuration is
            renamed ``checkpoint.pt.rejected-<time>`` (a one-line warning on stderr, and a
            note in the result) and training starts from iteration 0.

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
    old_threads = torch.get_num_threads()
    out = Path(out) if out is not None else None
    ckpt = out / "checkpoint.pt" if out is not None else None
    try:
        if cfg.device == "cpu":
            torch.set_num_threads(1 if workers > 1 else (cfg.workers or old_threads))
        shared = _Shared(cfg, device)
        parts = [list(map(int, p)) for p in np.array_split(np.arange(cfg.seeds), workers)]
        groups = [_Group(cfg, shared, p, device) for p in parts]
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
        counter, lock, errors = [0], threading.Lock(), []
        while True:
            stop = min(cfg.iterations, (it // cfg.checkpoint_every + 1) * cfg.checkpoint_every)
            run_in_threads([partial(_run_group, g, it, stop, counter, lock, errors) for g in groups], counter, bar)
            if errors:
                raise errors[0]
            it = stop
            done = it >= cfg.iterations or not any(g.active for g in groups)
            if ckpt is not None:
                _save(ckpt, cfg, groups, it)
                write_csv(out / "metrics.csv", _rows(groups))
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
             "groups": [g.state() for g in groups], "seed_index": [g.idx for g in groups]}
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
    need(isinstance(st.get("iteration"), int) and not isinstance(st["iteration"], bool) and st["iteration"] >= 0,
         "its iteration is not a count")
    gs, si = st.get("groups"), st.get("seed_index")
    need(isinstance(gs, list) and isinstance(si, list) and len(gs) == len(si) and gs, "no seed groups")
    seeds = [i for idx in si for i in (idx if isinstance(idx, list) else [None])]
    need(all(isinstance(i, int) for i in seeds) and sorted(seeds) == list(range(cfg.seeds)),
         "its seeds are not this run's seeds")
    ref = {k: v.shape[1:] for k, v in groups[0].store.items()}
    keys = {"store", "active", "t_icl", "status", "reasons", "gens", "loss_sum", "loss_n", "last_eval",
            "rows", "its"}
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
    fresh = [_Group(cfg, g.shared, g.idx, device) for g in groups]
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
        seeds = {g.cfg.seed_offset + i for i in g.idx}
        sub["rows"] = [r for r in rows if r["seed"] in seeds]
        g.load(sub)
    return int(st["iteration"])
