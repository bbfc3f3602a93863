"""SGD on the minimal ("phenomenological") model, many seeds at once.

Model (the paper's ``PhenomenologicalTransformer``).  A sequence has N context tokens
(item x_j in R^D, label l_j = +-1) and one target token (item x_t, label slot 0):

    logit = phi(x_t) + w * sum_j softmax_j(beta * x_t . x_j) * l_j

The softmax runs over the N context tokens *and* the target token itself (label 0,
overlap x_t . x_t).  w (readout strength) and beta (inverse temperature, units of
1/overlap) are scalars; phi is an optional MLP D -> h -> h -> 1 (ReLU) on the target
item (phi = 0 without it).  Loss: logistic, -log sigmoid(y * logit), y = target label.

**N convention.**  Here N is the number of *context* tokens, NOT counting the target.
The paper's code (``len_context``) counts the target, so paper N = 100 is N = 99 here.

**Units.**  Time is measured in iterations (SGD steps, one batch each); learning rates
are per iteration; beta has units of inverse item overlap (items have |x|^2 ~ 1).

Training: plain SGD with batch ``batch_size``, coupled L2 weight decay (grad += wd * theta)
``wd_icl`` on (w, beta) and ``wd_mlp`` on all of phi's parameters.  Every seed of a batch
is an independent run; seed index s uses streams derived only from
``np.random.SeedSequence([config.seed, s])`` (children: init, items, data, eval), so a
seed run alone reproduces the same seed run inside a batch.

Two code paths:

* fast path (K = None and no MLP): the D-dim items are never drawn.  Overlaps are
  sampled exactly in distribution: r = |x_t|^2 ~ Gamma(D/2, scale 2/D); the copy's and
  the target's own overlap is r; the N-1 other overlaps are iid N(0, r/D) given r
  (Box-Muller on raw SFC64 words, float32); the number of non-copy tokens that agree
  with the target label is Binomial(N-1, 1/2) (popcount of N-1 random bits).  With no
  MLP the loss depends only on y * l_j, so labels are taken relative to the target.
* general path (finite K and/or MLP): real D-dim items, batched over seeds in torch,
  analytic gradients (hand-written MLP backward with batched bmm, no autograd).

Evaluation: a per-seed fixed ICL test set of ``eval_size`` sequences with novel items.
t_ICL (iterations) is the first evaluation (every ``eval_every`` iterations, starting at
iteration 0) at which ICL accuracy = mean[y * logit > 0] exceeds ``acc_threshold``
strictly.  Seeds that never get there have t_icl = None (right-censored).

Divergence: a seed whose training loss (or w, beta after an update) is not finite is
marked ``"diverged"`` with the reason (as the engine does) and trained no further; it is
never reported as "never acquired" (``MinimalResult.status`` / ``reasons``).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Sequence

import numpy as np

from icl_kinetics.errors import (
    ParameterError,
    finite_float,
    positive_float,
    positive_int,
    probability,
)
from icl_kinetics.resources import require_memory
from icl_kinetics.simulate.workers import run_in_threads

__all__ = ["MinimalConfig", "MinimalResult", "run_minimal"]

_TWO_PI_2M32 = 2.0 * math.pi * 2.0**-32
_LN2_32 = 32.0 * math.log(2.0)
_ZMAX = math.sqrt(_LN2_32 + math.log(2.0)) * (1 + 1e-6)  # largest |z'| Box-Muller can produce (u' >= 1/2)
_F32_MAX = float(np.finfo(np.float32).max)
_BLOCK = 16  # iterations of random numbers drawn per generator call (fixed: part of the stream definition)


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class MinimalConfig:
    """Configuration of a batch of independent SGD runs of the minimal model.

    N: context tokens per sequence, NOT counting the target (paper code counts it).
    beta0: initial beta (1/overlap units), a float or one value per seed.
    w0: initial w.  lr: SGD learning rate (per iteration).
    seeds: number of independent runs; run s uses SeedSequence([seed, seed_offset + s]).
    seed_offset: first seed index of this batch (seeds=1, seed_offset=i reproduces
        seed i of a larger batch).
    batch_size: sequences per iteration.  D: item dimension (items ~ N(0, I/D)).
    K: number of training items (even, >= 2) or None for K -> infinity (fresh items).
    mlp_width: hidden width h of phi, or None for phi = 0.
    equalize: exactly N/2 context labels of each kind (N even).
    wd_icl, wd_mlp: coupled L2 weight decay (per iteration, grad += wd * theta).
    max_iterations: iteration cap (iterations).  eval_every / log_every: iterations
        between evaluations / between logged rows.  eval_size: test sequences.
    acc_threshold: ICL accuracy that must be exceeded for t_ICL.
    stop_on_acquire: stop a seed once its t_ICL is recorded.
    threads: CPU threads (None: torch's current setting).
    processes: run the K -> infinity fast path's seed groups in forked worker processes
        instead of threads (None: automatically, for runs of >= 2e5 seed-iterations on
        Linux; processes avoid the 10-30 % that two threads lose to each other here).
        The numbers are the same either way.
    """

    N: int = 100
    beta0: float | Sequence[float] = 0.0
    w0: float = 0.0
    lr: float = 0.1
    seeds: int = 8
    seed: int = 0
    batch_size: int = 128
    D: int = 63
    K: int | None = None
    mlp_width: int | None = None
    equalize: bool = False
    wd_icl: float = 0.0
    wd_mlp: float = 0.0
    max_iterations: int = 10_000
    eval_every: int = 10
    log_every: int = 100
    eval_size: int = 2000
    acc_threshold: float = 0.95
    stop_on_acquire: bool = True
    threads: int | None = None
    seed_offset: int = 0
    processes: bool | None = None

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the first bad parameter, or, for sizes
        whose estimated peak memory (:meth:`memory_estimate`) exceeds what is available,
        the size that dominates it."""
        N = positive_int("N", self.N, 1)
        positive_int("seeds", self.seeds, 1)
        positive_int("seed", self.seed, 0)
        positive_int("seed_offset", self.seed_offset, 0)
        positive_float("lr", self.lr)
        finite_float("w0", self.w0)
        if isinstance(self.beta0, (list, tuple, np.ndarray)):
            b = list(np.asarray(self.beta0, dtype=object).ravel())
            if len(b) != self.seeds:
                raise ParameterError("beta0", self.beta0, f"a float or a sequence of length seeds={self.seeds}")
            for v in b:
                finite_float("beta0", v)
        else:
            finite_float("beta0", self.beta0)
        positive_int("batch_size", self.batch_size, 1)
        positive_int("D", self.D, 1)
        if self.K is not None:
            K = positive_int("K", self.K, 2)
            if K % 2:
                raise ParameterError("K", self.K, "None (K -> infinity) or an even integer >= 2")
        if self.mlp_width is not None:
            positive_int("mlp_width", self.mlp_width, 1)
        if not isinstance(self.equalize, (bool, np.bool_)):
            raise ParameterError("equalize", self.equalize, "True or False")
        if self.equalize and N % 2:
            raise ParameterError("N", self.N, "an even integer when equalize=True")
        if self.K is None and N < 1:
            raise ParameterError("N", self.N, "an integer >= 1")
        positive_float("wd_icl", self.wd_icl, allow_zero=True)
        positive_float("wd_mlp", self.wd_mlp, allow_zero=True)
        positive_int("max_iterations", self.max_iterations, 0)
        positive_int("eval_every", self.eval_every, 1)
        positive_int("log_every", self.log_every, 1)
        positive_int("eval_size", self.eval_size, 1)
        probability("acc_threshold", self.acc_threshold, open_interval=False)
        if not isinstance(self.stop_on_acquire, (bool, np.bool_)):
            raise ParameterError("stop_on_acquire", self.stop_on_acquire, "True or False")
        if self.processes not in (None, True, False):
            raise ParameterError("processes", self.processes, "True, False or None (automatic)")
        if self.threads is not None:
            positive_int("threads", self.threads, 1)
        # sizes that cannot fit are refused here, before anything is allocated
        need, name = self.memory_estimate()
        require_memory(name, getattr(self, name), need, "the minimal-model simulator")

    #: the sizes that set the memory, each with the value it is compared against when
    #: naming the one that dominates (:meth:`memory_estimate`): the field's default
    _SIZES = ("seeds", "batch_size", "N", "D", "K", "mlp_width", "eval_size", "max_iterations", "log_every")

    def memory_estimate(self) -> tuple[int, str]:
        """(estimated peak bytes of :func:`run_minimal`, the parameter that dominates them).

        The dominating parameter is the one whose reset to its default value lowers the
        estimate the most (``seeds`` for a default-sized run).  See :func:`_peak_bytes`
        for the terms; call on a validated config (:meth:`validate` does)."""
        import dataclasses

        sizes = {k: getattr(self, k) for k in self._SIZES}
        procs = self.processes is not False and self.seeds > 1 and (
            self.processes or self.seeds * self.max_iterations >= 200_000)
        need = _peak_bytes(**sizes, processes=procs)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        drop = {k: need - _peak_bytes(**{**sizes, k: defaults[k]}, processes=procs) for k in self._SIZES}
        return need, max(drop, key=drop.get)

    def beta0_array(self) -> np.ndarray:
        """Initial beta per seed (float64, length ``seeds``)."""
        if isinstance(self.beta0, (list, tuple, np.ndarray)):
            return np.asarray(self.beta0, dtype=np.float64).ravel().copy()
        return np.full(self.seeds, float(self.beta0))


def _peak_bytes(seeds, batch_size, N, D, K, mlp_width, eval_size, max_iterations, log_every,
                processes=False) -> int:
    """Estimated peak bytes that :func:`run_minimal` allocates, from its actual buffers.

    S = seeds, B = batch_size, E = eval_size, P = max(1, N // 2) overlap pairs, h =
    mlp_width, C = min(E, 256) evaluation chunk.  Python's and torch's own footprint
    (a few hundred MB, already in use when this is called) is not counted.

    * Fast path (K = None, no MLP): the test set's overlaps and signed label masks,
      2 x (S, 2, E, P) float32 = 16 S E P (plus a bool mask while it is built); the
      training buffers z, e, t2, mask, f (S, 2, B, P) float32 = 40 S B P and a block of
      16 iterations of raw 64-bit words (S, 16, B P) = 128 S B P; three evaluation chunk
      buffers 24 S C P.  With worker processes (fork) each child copies the training
      buffers it writes: once more 176 S B P + 24 S C P.
    * General path (finite K and/or MLP): items (S, K, D) float32 and labels; the test
      sets (ICL, and IWL for finite K) 4 S E (D + 2 N + 2) bytes each, twice while they
      are stacked; the first min(K, 2000) items again for c1..c3; the MLP's weights about
      five times (weights, gathered copy, gradient, update temporaries).  On top, the
      largest transient of: building a test set (per seed X[ctx] of E N D float32 and
      the min(K, 20000) novel items), one step (the batch, float64 softmax terms ~64 S B N,
      per-seed X[ctx] 4 B N D, MLP activations ~20 S B h) or one evaluation (the test
      set gathered, ~64 S E N float64 softmax terms, MLP activations ~20 S E h).
    * History: seeds x (max_iterations // log_every + 2) rows of ~1500 bytes (the row
      dict and its JSON-ready copy).

    Checked against the measured growth of peak RSS (threads, 2 cores): estimate /
    measured = 1.12 (fast path, 64 seeds, N = 200, B = 256, E = 4000), 1.30 (K = 1000,
    MLP 64, 16 seeds), 0.91 (K = inf, MLP 64), 1.10 (K = 20000), 1.04 (K = 1e5, D = 200),
    1.35 (history: 100 seeds x 3000 logged iterations).
    """
    S, B, E = int(seeds), int(batch_size), int(eval_size)
    N, D = int(N), int(D)
    P = max(1, N // 2)
    C = min(E, 256)
    rows = S * (int(max_iterations) // int(log_every) + 2) * 1500
    if K is None and mlp_width is None:
        fast = 16 * S * E * P + 2 * S * E * P + 176 * S * B * P + 128 * S * B + 24 * S * C * P + 8 * S * E
        build = 8 * E * P + 8 * E * ((N + 63) // 64)  # one seed's raw words while its test set is drawn
        if processes:
            fast += 176 * S * B * P + 24 * S * C * P
        return fast + build + rows
    h = int(mlp_width or 0)
    seq_bytes = 4 * (D + 2 * N + 2)  # one sequence: x_t, overlaps, labels, y, r (float32)
    nsets = 1 if K is None else 2
    mlp = 4 * S * (h * D + h * h + 3 * h + 1) if h else 0
    persistent = nsets * S * E * seq_bytes + 5 * mlp
    if K is not None:
        K = int(K)
        persistent += 4 * S * K * (D + 1) + 4 * S * min(K, 2000) * D
    ctx = 4 * N * D if K is not None else 32 * N  # per sequence: X[ctx] (finite K) / float64 label work (K = inf)
    build = nsets * S * E * seq_bytes + E * ctx + (12 * min(K, 20000) * D if K is not None else 0)
    step = 2 * S * B * seq_bytes + 64 * S * B * N + B * ctx + 20 * S * B * h
    evaluate = S * E * seq_bytes + 64 * S * E * N + 20 * S * E * h
    return persistent + max(build, step, evaluate) + rows


# ----------------------------------------------------------------------------- result
@dataclass
class MinimalResult:
    """Outcome of :func:`run_minimal`.

    t_icl: per seed, the ICL acquisition time in iterations, or None if never acquired
        (right-censored; the cap is never substituted) or diverged before acquiring.
    history: tidy rows, one per seed x logged evaluation, with keys seed, iteration,
        beta, w, icl_acc, icl_loss, iwl_acc, iwl_loss, c1, c2, c3 (NaN where n/a).
    status: per seed, as the engine's: ``"running"`` (trained to ``max_iterations``),
        ``"stopped"`` (stopped once acquired, ``stop_on_acquire``) or ``"diverged"``
        (non-finite training loss, or w or beta; trained no further).
    reasons: per seed, why it diverged (e.g. "non-finite training loss at iteration
        12"; the iteration is the SGD step that produced it), else "".
    """

    config: MinimalConfig
    t_icl: list
    history: list = field(default_factory=list)
    seconds: float = float("nan")
    status: list = field(default_factory=list)
    reasons: list = field(default_factory=list)

    @property
    def median_t_icl(self) -> float | None:
        """Median t_ICL (iterations) over the seeds that did not diverge before acquiring,
        never-acquired counted as +inf; None if more than half of them never acquire
        (median is censored) or every seed diverged.  A diverged seed's onset is unknown,
        not censored, so it is left out rather than counted as +inf."""
        status = self.status or ["running"] * len(self.t_icl)
        v = np.array([np.inf if t is None else float(t) for t, st in zip(self.t_icl, status)
                      if not (st == "diverged" and t is None)])
        if v.size == 0:
            return None
        m = float(np.median(v))
        return None if not np.isfinite(m) else m

    def to_json(self) -> dict:
        cfg = asdict(self.config)
        if isinstance(cfg["beta0"], np.ndarray):
            cfg["beta0"] = cfg["beta0"].tolist()
        elif isinstance(cfg["beta0"], tuple):
            cfg["beta0"] = list(cfg["beta0"])

        def clean(row):
            return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}

        return {
            "config": cfg,
            "t_icl": [None if t is None else int(t) for t in self.t_icl],
            "status": list(self.status),
            "reasons": list(self.reasons),
            "median_t_icl": self.median_t_icl,
            "seconds": None if not math.isfinite(self.seconds) else self.seconds,
            "history": [clean(r) for r in self.history],
        }


# ----------------------------------------------------------------------------- helpers
def _streams(seed: int, index: int):
    """The four per-seed generators (init, items, data, eval) for seed index ``index``."""
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(4)
    return [np.random.Generator(np.random.SFC64(c)) for c in children]


def _min_correct(n: int, thr: float) -> int:
    """Smallest c with c / n > thr (the same float expression as the reported accuracy)."""
    c = int(math.floor(thr * n))
    while c > 0 and (c - 1) / n > thr:
        c -= 1
    while c <= n and not (c / n > thr):
        c += 1
    return c  # may be n + 1: unreachable


def _raw64(gen, n: int) -> np.ndarray:
    """n uniform 64-bit words (as uint64) from ``gen`` (GIL released while drawing)."""
    return gen.integers(-(2**63), 2**63 - 1, n, dtype=np.int64, endpoint=True).view(np.uint64)


def _agree_counts(bg, count: int, nbits: int) -> np.ndarray:
    """``count`` iid Binomial(nbits, 1/2) draws as popcounts of raw 64-bit words."""
    if nbits == 0:
        return np.zeros(count, dtype=np.float32)
    q = (nbits + 63) // 64
    words = _raw64(bg, count * q).reshape(count, q)
    rem = nbits - 64 * (q - 1)
    if rem < 64:
        words[:, -1] &= np.uint64((1 << rem) - 1)
    return np.bitwise_count(words).sum(axis=1, dtype=np.int64).astype(np.float32)


class _OverlapDraws:
    """Exact K -> infinity overlap statistics for ``count`` sequences from one generator.

    z: (count, 2, P) float32 scaled normals z' = z / sqrt(2) (Box-Muller: radius
    sqrt(-ln u) and angle from one raw word per pair; the entry [.., 1, P-1] is unused
    when N-1 is odd).  r: (count,) |x_t|^2.  k: (count,) number of non-copy context
    tokens whose label agrees with the target's.
    """

    @staticmethod
    def draw(gen, count: int, N: int, D: int, equalize: bool, torch):
        bg = gen
        P = max(1, (N) // 2)  # ceil((N-1)/2), at least one slot
        raw = _raw64(gen, count * P)
        if equalize:
            k = np.full(count, N // 2 - 1, dtype=np.float32)
        else:
            k = _agree_counts(bg, count, N - 1)
        r = gen.standard_gamma(D / 2.0, count, dtype=np.float32) * np.float32(2.0 / D)
        return raw, k, r, P


def _box_muller(i32, out_z, tmp):
    """Box-Muller from raw words.

    i32: (S, 2, W) int32 view of W raw 64-bit words per row; writes z' ~ N(0, 1/2)
    (i.e. z / sqrt(2)) into out_z (S, 2, W) (cosine half, sine half).  tmp: (S, 2, W)
    float32 scratch.  Uniforms: u' = (i + 2^31) + 1/2 in (0, 2^32] for the radius
    (never 0, so no infinite normals) and theta = 2 pi i / 2^32 in [-pi, pi)."""
    import torch

    tmp.copy_(i32)
    u = tmp[:, 0]
    th = tmp[:, 1]
    u.add_(2.0**31).add_(0.5).log_().neg_().add_(_LN2_32).clamp_min_(0.0).sqrt_()
    th.mul_(_TWO_PI_2M32)
    c = out_z[:, 0]
    s = out_z[:, 1]
    torch.cos(th, out=c)
    c.mul_(u)
    torch.sin(th, out=s)
    s.mul_(u)


def _diverged(act: np.ndarray, ok: np.ndarray, loss_of) -> dict:
    """{group index: what was not finite} for the active seeds ``act`` whose update was
    not finite (``ok`` False); ``loss_of(q)``: the training loss of the q-th active seed."""
    out = {}
    for q in np.flatnonzero(~ok):
        out[int(act[q])] = "training loss" if not math.isfinite(loss_of(q)) else "w or beta"
    return out


# ----------------------------------------------------------------------------- fast path
class _FastGroup:
    """A group of seeds on the fast path (K -> infinity, no MLP), run in one thread.

    Layout of overlap buffers: (S, 2, n, P) float32 with z'[s, h, b, p] the (h*P + p)-th
    non-copy overlap of sequence b (in units of sqrt(2 r / D)); mask[s, h, b, p] = 1 for
    tokens whose label agrees with the target's (the first k of them, by exchangeability).
    """

    EVAL_CHUNK = 256

    def __init__(self, cfg: MinimalConfig, idx: list[int], beta0: np.ndarray, torch):
        self.torch = torch
        self.cfg = cfg
        self.idx = idx
        S = len(idx)
        self.S = S
        N, B, D = cfg.N, cfg.batch_size, cfg.D
        self.N, self.B, self.D = N, B, D
        self.P = max(1, N // 2)
        P = self.P
        self.pad = 2 * P > N - 1
        self.sqrt2_over_D = math.sqrt(2.0 / D)
        streams = [_streams(cfg.seed, cfg.seed_offset + i) for i in idx]
        self.data = [s[2] for s in streams]
        self.w = np.full(S, float(cfg.w0))
        self.beta = beta0.astype(np.float64).copy()
        # evaluation set (fixed per seed, drawn from the eval stream)
        E = cfg.eval_size
        ez = torch.empty((S, 2, E, P))
        ek = np.empty((S, E), np.float32)
        er = np.empty((S, E), np.float32)
        tmp = torch.empty((1, 2, E * P))
        for j, st in enumerate(streams):
            raw, k, r, _ = _OverlapDraws.draw(st[3], E, N, D, cfg.equalize, torch)
            i32 = torch.from_numpy(raw.view(np.int32)).view(1, 2, E * P)
            _box_muller(i32, ez[j : j + 1].view(1, 2, E * P), tmp)
            ek[j], er[j] = k, r
        self.ez, self.er = ez, torch.from_numpy(er)
        # signed label mask of the test set: +1 agree, -1 disagree, 0 unused slot
        esgn = self._mask(torch.from_numpy(ek)).mul_(2.0).sub_(1.0)
        if self.pad:
            esgn[:, 1, :, -1] = 0.0
        self.esgn = esgn
        # training buffers
        self.z = torch.empty((S, 2, B, P))
        self.e = torch.empty((S, 2, B, P))
        self.t2 = torch.empty((S, 2, B, P))
        self.f = torch.empty((S, 2, B * P))
        self.mask = torch.empty((S, 2, B, P))
        self.ar = torch.arange(2 * P, dtype=torch.float32).view(2, 1, P)
        C = min(E, self.EVAL_CHUNK)
        self.ebuf = [torch.empty((S, 2, C, P)) for _ in range(3)]
        self.block_pos = _BLOCK
        self.active = np.ones(S, bool)
        self.status, self.reasons = ["running"] * S, [""] * S

    def _mask(self, k):
        """Float mask (S, 2, n, P) from agree counts k (S, n)."""
        torch = self.torch
        P = self.P
        ar = torch.arange(2 * P, dtype=torch.float32).view(2, 1, P)
        return (ar < k[:, None, :, None]).to(torch.float32)

    def _refill(self):
        cfg, S, B, P, N = self.cfg, self.S, self.B, self.P, self.N
        L = _BLOCK
        if getattr(self, "raws", None) is None:
            self.raws = np.empty((S, L, B * P), np.uint64)
            self.ks = np.empty((S, L, B), np.float32)
            self.rs = np.empty((S, L, B), np.float32)
        raws, ks, rs = self.raws, self.ks, self.rs
        for j in range(S):
            if not self.active[j]:
                continue
            raw, k, r, _ = _OverlapDraws.draw(self.data[j], L * B, N, self.D, cfg.equalize, None)
            raws[j] = raw.reshape(L, B * P)
            ks[j] = k.reshape(L, B)
            rs[j] = r.reshape(L, B)
        self.block_pos = 0

    def _exp(self, z, e, r, beta_t):
        """e = exp(beta s - c) for z' (S,2,n,P); returns (sig (S,n), Ec (S,n)).

        Only ratios of the softmax sums are used, so any per-sequence constant c may be
        subtracted.  When no exponent can overflow float32 (|beta| max(r, |s|) < 80, with
        |z'| <= sqrt(32 ln 2) from the Box-Muller construction) c = 0, which saves one
        pass over the overlaps; otherwise c = |beta| r."""
        torch = self.torch
        sig = r.sqrt().mul_(self.sqrt2_over_D)  # s = sig * z'
        a = sig * beta_t[:, None]
        bmax = float(beta_t.abs().max()) if beta_t.numel() else 0.0
        rmax = float(r.max()) if r.numel() else 0.0
        torch.mul(z, a[:, None, :, None], out=e)
        if bmax * max(rmax, math.sqrt(2.0 * rmax / self.D) * _ZMAX) < 80.0:
            Ec = torch.exp(r * beta_t[:, None])  # copy / target term
        else:
            c = r * beta_t.abs()[:, None]
            e.sub_(c[:, None, :, None])
            Ec = torch.exp(r * beta_t[:, None] - c)
        e.exp_()
        if self.pad:
            e[:, 1, :, -1] = 0.0
        return sig, Ec

    def _sums(self, z, e, t2, mask, r, beta_t):
        """Four softmax sums (labels relative to the target's), incl. copy and target.

        Returns Z = sum e, M = sum l e, SB = sum s e, MS = sum l s e (e stabilised by
        exp(-|beta| r)).  Destroys z."""
        torch = self.torch
        sig, Ec = self._exp(z, e, r, beta_t)
        Se = e.sum(-1).sum(1)
        torch.mul(e, mask, out=t2)
        Ae = t2.sum(-1).sum(1)
        z.mul_(e)  # z' e
        Sz = z.sum(-1).sum(1)
        torch.mul(z, mask, out=t2)
        Az = t2.sum(-1).sum(1)
        Z = Se + 2 * Ec
        M = Ec + 2 * Ae - Se
        SB = 2 * r * Ec + sig * Sz
        MS = r * Ec + sig * (2 * Az - Sz)
        return Z, M, SB, MS

    def step(self):
        """One SGD iteration (all active seeds).  Returns None, or {group index: what was
        not finite} for the seeds that diverged in it (:func:`_diverged`)."""
        torch = self.torch
        if self.block_pos >= _BLOCK:
            self._refill()
        t = self.block_pos
        self.block_pos += 1
        act = np.flatnonzero(self.active)
        full = act.size == self.S
        S = act.size
        B, P = self.B, self.P
        raw = self.raws[:, t] if full else self.raws[act, t]
        i32 = torch.from_numpy(raw.view(np.int32)).view(S, 2, B * P)
        z = self.z[:S]
        _box_muller(i32, z.view(S, 2, B * P), self.f[:S])
        k = torch.from_numpy(self.ks[:, t] if full else self.ks[act, t])
        r = torch.from_numpy(self.rs[:, t] if full else self.rs[act, t])
        mask = self.mask[:S]
        torch.lt(self.ar, k[:, None, :, None], out=mask)
        beta = self.beta[act]
        w = self.w[act]
        bt = torch.from_numpy(beta.astype(np.float32))
        Z, M, SB, MS = self._sums(z, self.e[:S], self.t2[:S], mask, r, bt)
        Zd = Z.double()
        m = M.double() / Zd
        sbar = SB.double() / Zd
        ms = MS.double() / Zd
        wt = torch.from_numpy(w)
        nx = -wt[:, None] * m  # -logit (labels relative to the target): the loss is softplus(nx)
        g = -torch.sigmoid(nx)  # dL/dlogit
        gw = (g * m).mean(1).numpy() + self.cfg.wd_icl * w
        gb = (g * (ms - m * sbar)).mean(1).numpy() * w + self.cfg.wd_icl * beta
        lr = self.cfg.lr
        w1 = w - lr * gw
        b1 = beta - lr * gb
        self.w[act] = w1
        self.beta[act] = b1
        # divergence, checked on the (S,) updates: with w finite, |m| <= 1 unless m is NaN,
        # so a non-finite loss (softplus(nx)) makes gw, and hence w1, NaN in this very step.
        # beta enters the overlaps as float32: beyond its range it is infinite there
        if np.isfinite(w1).all() and (np.abs(b1) <= _F32_MAX).all():
            return None
        return _diverged(act, np.isfinite(w1) & (np.abs(b1) <= _F32_MAX),
                         lambda q: torch.nn.functional.softplus(nx[q]).mean().item())

    def evaluate(self, sel: np.ndarray, full: bool, min_correct: int):
        """ICL test set for group seeds ``sel``.

        full=False: bool array "accuracy > threshold", stopping a seed's pass over the
        test set as soon as its error count exceeds eval_size - min_correct.
        full=True: (acc, loss) arrays over the whole test set."""
        torch = self.torch
        E = self.cfg.eval_size
        n_sel = sel.size
        correct = np.zeros(n_sel, np.int64)
        loss = np.zeros(n_sel)
        alive = np.arange(n_sel)
        max_err = E - min_correct
        C = self.ebuf[0].shape[2]
        for s0 in range(0, E, C):
            s1 = min(E, s0 + C)
            n = s1 - s0
            if alive.size == 0:
                break
            gi = sel[alive]
            # gathering copies; when most of the group is still undecided, compute the
            # whole group on views and read off the rows needed
            if 2 * gi.size >= self.S:
                rows = gi
                src, sgn, r = self.ez[:, :, s0:s1], self.esgn[:, :, s0:s1], self.er[:, s0:s1]
                bsel = np.arange(self.S)
            else:
                rows = np.arange(gi.size)
                gt = torch.from_numpy(gi)
                src, sgn, r = self.ez[gt, :, s0:s1], self.esgn[gt, :, s0:s1], self.er[gt, s0:s1]
                bsel = gi
            A = src.shape[0]
            eb = self.ebuf[1][:A, :, :n]
            b = torch.from_numpy(self.beta[bsel].astype(np.float32))
            _, Ec = self._exp(src, eb, r, b)
            if full:
                Se = eb.sum(-1).sum(1)
            eb.mul_(sgn)
            M = (Ec + eb.sum(-1).sum(1))[torch.from_numpy(rows)].double()
            wa = torch.from_numpy(self.w[gi])[:, None]
            correct[alive] += (wa * M > 0).sum(1).numpy()
            if full:
                Z = (Se + 2 * Ec)[torch.from_numpy(rows)].double()
                loss[alive] += torch.nn.functional.softplus(-wa * (M / Z)).sum(1).numpy()
            else:
                errs = s1 - correct[alive]
                alive = alive[errs <= max_err]
        if full:
            return correct / E, loss / E
        return correct >= min_correct


# ----------------------------------------------------------------------------- general path
def _linear_init(gen, fan_in, fan_out):
    bound = 1.0 / math.sqrt(fan_in)
    W = gen.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
    b = gen.uniform(-bound, bound, fan_out).astype(np.float32)
    return W, b


def _mlp_forward(params, x, torch):
    """phi on x (S, n, D) with per-seed weights; returns (phi (S,n), cache)."""
    W1, b1, W2, b2, W3, b3 = params
    h1 = torch.baddbmm(b1[:, None, :], x, W1.transpose(1, 2)).clamp_min_(0.0)
    h2 = torch.baddbmm(b2[:, None, :], h1, W2.transpose(1, 2)).clamp_min_(0.0)
    phi = torch.bmm(h2, W3.transpose(1, 2))[..., 0] + b3[:, :1]
    return phi, (x, h1, h2)


def _mlp_backward(params, cache, dphi, torch):
    """Hand-written backward of :func:`_mlp_forward` for upstream gradient dphi (S, n)."""
    W1, b1, W2, b2, W3, b3 = params
    x, h1, h2 = cache
    dW3 = torch.bmm(dphi[:, None, :], h2)  # (S,1,h)
    db3 = dphi.sum(1, keepdim=True)
    dh2 = dphi[..., None] * W3  # (S,n,h)
    dh2 = dh2 * (h2 > 0)
    dW2 = torch.bmm(dh2.transpose(1, 2), h1)
    db2 = dh2.sum(1)
    dh1 = torch.bmm(dh2, W2) * (h1 > 0)
    dW1 = torch.bmm(dh1.transpose(1, 2), x)
    db1 = dh1.sum(1)
    return [dW1, db1, dW2, db2, dW3, db3]


def _icl_terms(s, lab, r, beta, torch):
    """Softmax statistics over N context tokens (overlaps s, labels lab, shape (S,n,N))
    plus the target token (overlap r, label 0).  beta: (S,).  Returns (m, ms - m*sbar)."""
    b = beta[:, None, None]
    c = (beta.abs()[:, None] * r)[..., None]
    e = torch.exp(b * s - c)
    et = torch.exp(beta[:, None] * r - c[..., 0])
    Z = e.sum(-1) + et
    m = (e * lab).sum(-1) / Z
    sbar = ((e * s).sum(-1) + et * r) / Z
    ms = (e * lab * s).sum(-1) / Z
    return m, ms - m * sbar


class _GeneralGroup:
    """All seeds on the general path (real items; finite K and/or MLP)."""

    def __init__(self, cfg: MinimalConfig, idx, beta0, torch):
        self.torch, self.cfg, self.idx = torch, cfg, idx
        S = len(idx)
        self.S = S
        D, K = cfg.D, cfg.K
        streams = [_streams(cfg.seed, cfg.seed_offset + i) for i in idx]
        self.data = [s[2] for s in streams]
        self.w = torch.full((S,), float(cfg.w0), dtype=torch.float64)
        self.beta = torch.tensor(beta0, dtype=torch.float64)
        self.active = np.ones(S, bool)
        self.status, self.reasons = ["running"] * S, [""] * S
        self.mlp = None
        if cfg.mlp_width:
            h = cfg.mlp_width
            ps = [[], [], [], [], [], []]
            for st in streams:
                for li, (fi, fo) in enumerate([(D, h), (h, h), (h, 1)]):
                    W, b = _linear_init(st[0], fi, fo)
                    ps[2 * li].append(W)
                    ps[2 * li + 1].append(b)
            self.mlp = [torch.from_numpy(np.stack(p)) for p in ps]
        if K is not None:
            X = np.empty((S, K, D), np.float32)
            L = np.empty((S, K), np.float32)
            for j, st in enumerate(streams):
                X[j], L[j] = self._item_set(st[1], K, D)
            self.X, self.L = X, L
        E = cfg.eval_size
        self.icl_set = []
        self.iwl_set = []
        for j, st in enumerate(streams):
            ge = st[3]
            if K is None:
                self.icl_set.append(self._seq_inf(ge, E, with_items=True))
            else:
                Kt = min(K, 20000)
                Xn, Ln = self._item_set(ge, Kt, D)
                self.icl_set.append(self._seq_finite(ge, Xn, Ln, E))
                self.iwl_set.append(self._seq_iwl(ge, self.X[j], self.L[j], E))
        self.icl_set = self._stack(self.icl_set)
        if K is not None:
            self.iwl_set = self._stack(self.iwl_set)
            nc = min(K, 2000)
            self.c_items = torch.from_numpy(self.X[:, :nc].copy())
            self.c_labels = torch.from_numpy(self.L[:, :nc].copy())

    def _stack(self, lst):
        torch = self.torch
        return tuple(torch.from_numpy(np.stack([t[i] for t in lst])) for i in range(len(lst[0])))

    @staticmethod
    def _item_set(gen, K, D):
        X = (gen.standard_normal((K, D), dtype=np.float32) / np.float32(math.sqrt(D))).astype(np.float32)
        L = np.repeat(np.array([1.0, -1.0], np.float32), K // 2)
        gen.shuffle(L)
        return X, L

    def _seq_inf(self, gen, n, with_items):
        """K -> infinity sequences: returns (x_t (n,D), y (n,), s (n,N), lab (n,N), r (n,))."""
        cfg = self.cfg
        N, D = cfg.N, cfg.D
        xt = gen.standard_normal((n, D), dtype=np.float32) / np.float32(math.sqrt(D))
        r = (xt.astype(np.float64) ** 2).sum(1).astype(np.float32)
        y = np.where(gen.random(n) < 0.5, 1.0, -1.0).astype(np.float32)
        others = gen.standard_normal((n, N - 1), dtype=np.float32) * np.sqrt(r / D)[:, None].astype(np.float32)
        s = np.concatenate([r[:, None], others], axis=1)
        if cfg.equalize:
            k = np.full(n, N // 2 - 1)
        else:
            k = _agree_counts(gen, n, N - 1).astype(np.int64)
        j = np.arange(N - 1)[None, :]
        rel = np.concatenate([np.ones((n, 1)), np.where(j < k[:, None], 1.0, -1.0)], axis=1)
        lab = (rel * y[:, None]).astype(np.float32)
        return xt, y, s.astype(np.float32), lab, r

    def _draw_indices(self, gen, L, n):
        """Context (n,N) and target (n,) indices into an item set with labels L."""
        cfg = self.cfg
        N = cfg.N
        K = L.shape[0]
        if cfg.equalize:
            pos = np.flatnonzero(L > 0)
            neg = np.flatnonzero(L < 0)
            ctx = np.concatenate(
                [pos[gen.integers(0, pos.size, (n, N // 2))], neg[gen.integers(0, neg.size, (n, N // 2))]], axis=1
            )
            tgt = ctx[np.arange(n), gen.integers(0, N, n)]
            return ctx, tgt
        ctx = gen.integers(0, K, (n, N))
        tgt = gen.integers(0, K, n)
        absent = ~(ctx == tgt[:, None]).any(1)
        repl = ctx[np.arange(n), gen.integers(0, N, n)]
        tgt = np.where(absent, repl, tgt)
        return ctx, tgt

    def _seq_finite(self, gen, X, L, n):
        ctx, tgt = self._draw_indices(gen, L, n)
        return self._assemble(X, L, ctx, tgt)

    def _assemble(self, X, L, ctx, tgt):
        xt = X[tgt]
        y = L[tgt]
        s = np.einsum("nd,njd->nj", xt, X[ctx], dtype=np.float32) if X.shape[0] > ctx.shape[1] else (xt @ X.T)[
            np.arange(ctx.shape[0])[:, None], ctx
        ]
        r = np.einsum("nd,nd->n", xt, xt).astype(np.float32)
        return xt.astype(np.float32), y, s.astype(np.float32), L[ctx].astype(np.float32), r

    def _seq_iwl(self, gen, X, L, n):
        """IWL test: training items; target absent from the context."""
        N = self.cfg.N
        K = L.shape[0]
        tgt = gen.integers(0, K, n)
        ctx = gen.integers(0, K - 1, (n, N))
        ctx = ctx + (ctx >= tgt[:, None])  # skip the target's index
        return self._assemble(X, L, ctx, tgt)

    def _batch(self, act):
        cfg = self.cfg
        out = []
        for j in act:
            g = self.data[j]
            if cfg.K is None:
                out.append(self._seq_inf(g, cfg.batch_size, True))
            else:
                out.append(self._seq_finite(g, self.X[j], self.L[j], cfg.batch_size))
        return self._stack(out)

    def _logits(self, act_t, xt, s, lab, r, params, w, beta):
        torch = self.torch
        m, dm = _icl_terms(s.double(), lab.double(), r.double(), beta, torch)
        logit = w[:, None] * m
        cache = None
        if params is not None:
            phi, cache = _mlp_forward(params, xt, torch)
            logit = logit + phi.double()
        return logit, m, dm, cache

    def step(self):
        """One SGD iteration (all active seeds); returns None or the diverged seeds, as
        :meth:`_FastGroup.step`."""
        torch = self.torch
        cfg = self.cfg
        act = np.flatnonzero(self.active)
        at = torch.from_numpy(act)
        xt, y, s, lab, r = self._batch(act)
        params = None if self.mlp is None else [p[at] for p in self.mlp]
        w, beta = self.w[at], self.beta[at]
        logit, m, dm, cache = self._logits(at, xt, s, lab, r, params, w, beta)
        yd = y.double()
        g = -yd * torch.sigmoid(-yd * logit)  # dL/dlogit
        B = logit.shape[1]
        gw = (g * m).mean(1) + cfg.wd_icl * w
        gb = (g * dm).mean(1) * w + cfg.wd_icl * beta
        w1 = w - cfg.lr * gw
        b1 = beta - cfg.lr * gb
        self.w[at] = w1
        self.beta[at] = b1
        if params is not None:
            grads = _mlp_backward(params, cache, (g / B).float(), torch)
            for p, gp, full in zip(params, grads, self.mlp):
                gp = gp.reshape(p.shape)
                p.sub_(cfg.lr * (gp + cfg.wd_mlp * p))
                full[at] = p
        # divergence: the training loss itself (cheap next to this path's (S, B, N) work);
        # MLP weights that blow up reach the loss through phi within a step or two
        loss = torch.nn.functional.softplus(-yd * logit).mean(1)
        ok = (torch.isfinite(loss) & torch.isfinite(w1) & torch.isfinite(b1)).numpy()
        if ok.all():
            return None
        return _diverged(act, ok, lambda q: loss[q].item())

    def _eval_set(self, sel, data):
        torch = self.torch
        st = torch.from_numpy(sel)
        xt, y, s, lab, r = (t[st] for t in data)
        params = None if self.mlp is None else [p[st] for p in self.mlp]
        logit, *_ = self._logits(st, xt, s, lab, r, params, self.w[st], self.beta[st])
        yl = y.double() * logit
        acc = (yl > 0).double().mean(1).numpy()
        loss = torch.nn.functional.softplus(-yl).mean(1).numpy()
        return acc, loss

    def evaluate(self, sel, full, min_correct):
        acc, loss = self._eval_set(sel, self.icl_set)
        if full:
            return acc, loss
        return np.rint(acc * self.cfg.eval_size).astype(np.int64) >= min_correct

    def extra_metrics(self, sel):
        """IWL acc/loss and c1, c2, c3 (finite K with MLP), per selected seed."""
        torch = self.torch
        n = sel.size
        nan = np.full(n, np.nan)
        if self.cfg.K is None or self.mlp is None:
            return nan, nan.copy(), nan.copy(), nan.copy(), nan.copy()
        iwl_acc, iwl_loss = self._eval_set(sel, self.iwl_set)
        st = torch.from_numpy(sel)
        params = [p[st] for p in self.mlp]
        phi, _ = _mlp_forward(params, self.c_items[st], torch)
        php = (phi * self.c_labels[st]).double()
        sg = torch.sigmoid(-php)
        c1 = sg.mean(1)
        c2 = 1 - (sg**2).mean(1) / c1
        c3 = torch.exp(-php).mean(1)
        return iwl_acc, iwl_loss, c1.numpy(), c2.numpy(), c3.numpy()


def torch_index(torch, sel):
    return torch.from_numpy(np.asarray(sel))


# ----------------------------------------------------------------------------- driver
def _run_group(grp, cfg, tlist, rows, progress_counter, lock, error_box):
    """Run one group to completion (called in a worker thread)."""
    try:
        min_c = _min_correct(cfg.eval_size, cfg.acc_threshold)
        S = grp.S
        fast = isinstance(grp, _FastGroup)
        done_t = [None] * S
        status, reasons = grp.status, grp.reasons

        def log_rows(sel, it):
            acc, loss = grp.evaluate(sel, True, min_c)
            if fast:
                nan = np.full(sel.size, np.nan)
                extra = (nan,) * 5
                w, beta = grp.w[sel], grp.beta[sel]
            else:
                extra = grp.extra_metrics(sel)
                w, beta = grp.w[torch_index(grp.torch, sel)].numpy(), grp.beta[torch_index(grp.torch, sel)].numpy()
            out = []
            for q, j in enumerate(sel):
                out.append(
                    dict(
                        seed=int(cfg.seed_offset + grp.idx[j]),
                        iteration=int(it),
                        beta=float(beta[q]),
                        w=float(w[q]),
                        icl_acc=float(acc[q]),
                        icl_loss=float(loss[q]),
                        iwl_acc=float(extra[0][q]),
                        iwl_loss=float(extra[1][q]),
                        c1=float(extra[2][q]),
                        c2=float(extra[3][q]),
                        c3=float(extra[4][q]),
                    )
                )
            return out, acc

        it = 0
        local_rows = []
        while True:
            act = np.flatnonzero(grp.active)
            if act.size == 0:
                break
            is_eval = it % cfg.eval_every == 0
            is_log = it % cfg.log_every == 0 or it == cfg.max_iterations
            if is_eval or is_log:
                pending = np.array([j for j in act if done_t[j] is None], dtype=np.int64)
                newly = np.zeros(0, np.int64)
                if is_eval and pending.size:
                    passed = grp.evaluate(pending, False, min_c)
                    newly = pending[passed]
                    for j in newly:
                        done_t[j] = it
                logsel = act if is_log else newly
                if logsel.size:
                    r_, _ = log_rows(np.asarray(logsel, np.int64), it)
                    local_rows.extend(r_)
                if cfg.stop_on_acquire and newly.size:
                    grp.active[newly] = False
                    for j in newly:
                        status[j] = "stopped"
            if it >= cfg.max_iterations:
                break
            if not grp.active.any():
                break
            bad = grp.step()
            it += 1
            if bad:  # as the engine: marked, with the reason, and trained no further
                for j, what in bad.items():
                    status[j] = "diverged"
                    reasons[j] = f"non-finite {what} at iteration {it}"
                    grp.active[j] = False
            with lock:
                progress_counter[0] += int(grp.active.sum()) + 0
        with lock:
            for j in range(S):
                tlist[grp.idx[j]] = done_t[j]
            rows.extend(local_rows)
    except BaseException as exc:  # re-raised in the main thread
        error_box.append(exc)


class _ProcCounter:
    """``counter[0]`` interface over a shared ``multiprocessing.Value`` (one per worker)."""

    def __init__(self, value):
        self.value = value

    def __getitem__(self, i):
        return self.value.value

    def __setitem__(self, i, v):
        self.value.value = v


def _proc_main(grp, cfg, value, conn):
    """Worker process: run one group (inherited through fork) and send its results back."""
    import torch

    torch.set_num_threads(1)
    tl: list = [None] * cfg.seeds
    rows: list = []
    errs: list = []
    _run_group(grp, cfg, tl, rows, _ProcCounter(value), threading.Lock(), errs)
    if errs:
        conn.send(("error", f"{type(errs[0]).__name__}: {errs[0]}", None))
    else:
        conn.send(("ok", [tl[i] for i in grp.idx], rows, grp.status, grp.reasons))
    conn.close()


def _run_in_processes(groups, cfg, tlist, rows, bar):
    """Run each group in a forked process; collect t_ICL and rows; drive the progress bar."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    vals = [ctx.Value("q", 0, lock=False) for _ in groups]
    pipes = [ctx.Pipe(duplex=False) for _ in groups]
    procs = [ctx.Process(target=_proc_main, args=(g, cfg, v, w), daemon=True)
             for g, v, (_, w) in zip(groups, vals, pipes)]
    for p in procs:
        p.start()
    results = [None] * len(groups)
    last = 0
    try:
        while any(r is None for r in results):
            for i, (r, _) in enumerate(pipes):
                if results[i] is None and r.poll(0.1):
                    results[i] = r.recv()
                elif results[i] is None and not procs[i].is_alive() and not r.poll():
                    raise RuntimeError(f"minimal-model worker {i} died (exit code {procs[i].exitcode})")
            if bar is not None:
                c = sum(v.value for v in vals)
                bar.update(c - last)
                last = c
    finally:
        for p in procs:
            if p.is_alive() and any(r is None for r in results):
                p.terminate()
            p.join()
    for g, res in zip(groups, results):
        if res[0] == "error":
            raise RuntimeError(f"minimal-model worker failed: {res[1]}")
        for j, t in zip(g.idx, res[1]):
            tlist[j] = t
        rows.extend(res[2])
        g.status, g.reasons = list(res[3]), list(res[4])


def run_minimal(config: MinimalConfig, progress: bool = True) -> MinimalResult:
    """Run ``config.seeds`` independent SGD runs of the minimal model.

    Returns a :class:`MinimalResult` with per-seed t_ICL (iterations, None = never
    acquired within ``max_iterations``, or diverged first), per-seed status and reasons
    (``"diverged"``: non-finite training loss; trained no further) and the tidy metric
    history.
    """
    if not isinstance(config, MinimalConfig):
        raise ParameterError("config", type(config).__name__, "a MinimalConfig")
    config.validate()
    import torch

    cfg = config
    t0 = time.perf_counter()
    beta0 = cfg.beta0_array()
    fast = cfg.K is None and cfg.mlp_width is None
    old_threads = torch.get_num_threads()
    threads = cfg.threads or old_threads
    old_switch = sys.getswitchinterval()
    tlist: list = [None] * cfg.seeds
    rows: list = []
    counter = [0]
    lock = threading.Lock()
    errors: list = []
    try:
        if fast:
            ngroups = max(1, min(threads, cfg.seeds))
            torch.set_num_threads(max(1, threads // ngroups))
            parts = np.array_split(np.arange(cfg.seeds), ngroups)
            groups = [_FastGroup(cfg, list(p), beta0[p], torch) for p in parts]
        else:
            ngroups = 1
            torch.set_num_threads(threads)
            groups = [_GeneralGroup(cfg, list(range(cfg.seeds)), beta0, torch)]
        total = cfg.seeds * cfg.max_iterations
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="seed-it", desc="minimal SGD", leave=False)
        use_procs = cfg.processes
        if use_procs is None:
            use_procs = cfg.seeds * cfg.max_iterations >= 200_000 and sys.platform.startswith("linux")
        if fast and ngroups > 1 and use_procs:
            _run_in_processes(groups, cfg, tlist, rows, bar)
        else:
            if ngroups > 1:
                sys.setswitchinterval(2e-4)
            run_in_threads([partial(_run_group, g, cfg, tlist, rows, counter, lock, errors) for g in groups],
                           counter, bar, poll=0.2)
        if bar is not None:
            bar.close()
    finally:
        torch.set_num_threads(old_threads)
        sys.setswitchinterval(old_switch)
    if errors:
        raise errors[0]
    rows.sort(key=lambda r: (r["seed"], r["iteration"]))
    status, reasons = [None] * cfg.seeds, [None] * cfg.seeds
    for g in groups:
        for j, i in enumerate(g.idx):
            status[i], reasons[i] = g.status[j], g.reasons[j]
    return MinimalResult(config=cfg, t_icl=tlist, history=rows, seconds=time.perf_counter() - t0, status=status,
                         reasons=reasons)
