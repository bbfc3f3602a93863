"""The exact K -> infinity overlap sampler: the engine's ``"overlaps"`` backend.

It trains the minimal model without its MLP (``model="minimal"``, ``K=None``,
``width=0``)::

    logit = w * sum_j softmax_j(beta * x_t . x_j) * l_j

over the N context tokens and the target itself (label 0, overlap |x_t|^2), by plain SGD
on the logistic loss, without ever drawing a D-dimensional item.  With fresh items for
every sequence the loss depends on the items only through the overlaps, and these are
sampled exactly in distribution:

* r = |x_t|^2 ~ Gamma(D/2, scale 2/D) (items ~ N(0, I/D));
* the target copies one context token: that token's overlap, and the target's own, is r;
* the N - 1 other overlaps are i.i.d. N(0, r/D) given r (Box-Muller on raw SFC64 words,
  float32; z' = z / sqrt(2) from one 64-bit word per pair);
* with no MLP only y * l_j matters, so labels are taken relative to the target's: the
  number of the N - 1 other tokens that agree with it is Binomial(N - 1, 1/2), a popcount
  of N - 1 random bits (``contexts="equalized"``: exactly N/2 - 1).

Gradients are written by hand from four softmax sums per sequence (float32 sums, float64
readout); (w, beta) are float64.  Random numbers are drawn in blocks of 16 iterations per
seed (part of the stream definition: a seed's numbers do not depend on the block it is
in).  Each seed has its own evaluation set of ``eval_size`` sequences, drawn at the start
from its own "eval" stream; training draws come from its "data" stream
(:func:`icl_kinetics.simulate.data.overlap_streams`), so a seed gives the same numbers
alone or inside any batch.  (The autograd backend instead shares one test set, drawn from
``item_seed``, between all seeds: the same distribution, other draws.)

The group here has the interface of the engine's autograd group (``step``,
``begin_eval`` / ``passes`` / ``log``, ``deactivate``, ``active``, ``t_icl``,
``status``, ``reasons``, ``rows``, ``its``, ``state`` / ``load``), and
:func:`icl_kinetics.simulate.engine.train` drives both through one loop.

**Units.** Time in iterations; ``lr`` and ``wd_attn`` per iteration; beta in 1/overlap
(items have |x|^2 ~ 1).
"""

from __future__ import annotations

import math

import numpy as np

_TWO_PI_2M32 = 2.0 * math.pi * 2.0**-32
_LN2_32 = 32.0 * math.log(2.0)
_ZMAX = math.sqrt(_LN2_32 + math.log(2.0)) * (1 + 1e-6)  # largest |z'| Box-Muller can produce (u' >= 1/2)
_F32_MAX = float(np.finfo(np.float32).max)
_BLOCK = 16  # iterations of random numbers drawn per generator call (fixed: part of the stream definition)
_EVAL_CHUNK = 256


def valid_for(cfg) -> bool:
    """Whether the overlap sampler is exact for a :class:`~icl_kinetics.simulate.engine.TrainConfig`:
    the minimal model without MLP at K -> infinity, on the CPU."""
    return cfg.model == "minimal" and cfg.K is None and cfg.width == 0 and cfg.device == "cpu"


def peak_bytes(cfg, processes: bool = False) -> int:
    """Estimated peak bytes that an overlaps run of ``cfg`` allocates, from its buffers.

    S = seeds, B = batch_size, E = eval_size, P = max(1, N // 2) overlap pairs, C =
    min(E, 256) evaluation chunk.  The test sets' overlaps and signed label masks,
    2 x (S, 2, E, P) float32 = 16 S E P (plus a bool mask while they are built); the
    training buffers z, e, t2, mask, f (S, 2, B, P) float32 = 40 S B P and a block of 16
    iterations of raw 64-bit words (S, 16, B P) = 128 S B P; three evaluation chunk
    buffers 24 S C P.  With worker processes (fork) each child copies the buffers it
    writes: once more 176 S B P + 24 S C P.  Logged rows: seeds x (iterations /
    (log_every, or eval_every when every evaluation is logged) + 2) rows of ~1500 bytes.
    Python's and torch's own footprint is not counted.  Checked against the measured
    growth of peak RSS: 1.12 x (64 seeds, N = 200, B = 256, E = 4000), 1.35 x (rows of 100
    seeds x 3000 logged evaluations).
    """
    S, B, E = int(cfg.seeds), int(cfg.batch_size), int(cfg.eval_size)
    N = int(cfg.N)
    P = max(1, N // 2)
    C = min(E, _EVAL_CHUNK)
    every = cfg.log_every or cfg.eval_every
    rows = S * (int(cfg.iterations) // int(every) + 2) * 1500
    fast = 16 * S * E * P + 2 * S * E * P + 176 * S * B * P + 128 * S * B + 24 * S * C * P + 8 * S * E
    build = 8 * E * P + 8 * E * ((N + 63) // 64)  # one seed's raw words while its test set is drawn
    if processes:
        fast += 176 * S * B * P + 24 * S * C * P
    return fast + build + rows


# ----------------------------------------------------------------------------- random numbers
def _raw64(gen, n: int) -> np.ndarray:
    """n uniform 64-bit words (as uint64) from ``gen`` (GIL released while drawing)."""
    return gen.integers(-(2**63), 2**63 - 1, n, dtype=np.int64, endpoint=True).view(np.uint64)


def _agree_counts(gen, count: int, nbits: int) -> np.ndarray:
    """``count`` iid Binomial(nbits, 1/2) draws as popcounts of raw 64-bit words."""
    if nbits == 0:
        return np.zeros(count, dtype=np.float32)
    q = (nbits + 63) // 64
    words = _raw64(gen, count * q).reshape(count, q)
    rem = nbits - 64 * (q - 1)
    if rem < 64:
        words[:, -1] &= np.uint64((1 << rem) - 1)
    return np.bitwise_count(words).sum(axis=1, dtype=np.int64).astype(np.float32)


def _draw(gen, count: int, N: int, D: int, equalized: bool):
    """Overlap statistics of ``count`` sequences: (raw words (count * P,), agree counts k
    (count,), r = |x_t|^2 (count,)), in this order from ``gen``."""
    P = max(1, N // 2)  # ceil((N-1)/2), at least one slot
    raw = _raw64(gen, count * P)
    if equalized:
        k = np.full(count, N // 2 - 1, dtype=np.float32)
    else:
        k = _agree_counts(gen, count, N - 1)
    r = gen.standard_gamma(D / 2.0, count, dtype=np.float32) * np.float32(2.0 / D)
    return raw, k, r


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


def min_correct(n: int, threshold: float) -> int:
    """Smallest c with c / n > threshold (the same float expression as the reported
    accuracy, the mean of n 0/1 values); may be n + 1 (unreachable)."""
    c = int(math.floor(threshold * n))
    while c > 0 and (c - 1) / n > threshold:
        c -= 1
    while c <= n and not (c / n > threshold):
        c += 1
    return c


# SFC64 generator state <-> bytes (checkpoints and worker processes: plain tensors, no pickled objects)
def _gen_bytes(state: dict) -> np.ndarray:
    words = np.zeros(6, np.uint64)
    words[:4] = np.asarray(state["state"]["state"], np.uint64)
    words[4], words[5] = int(state["has_uint32"]), int(state["uinteger"])
    return words.view(np.uint8)


def _gen_state(data: np.ndarray) -> dict:
    words = np.asarray(data, np.uint8).view(np.uint64)
    if words.shape != (6,) or int(words[4]) not in (0, 1) or int(words[5]) >= 2**32:
        raise ValueError("not an SFC64 state")
    return {"bit_generator": "SFC64", "state": {"state": words[:4].copy()}, "has_uint32": int(words[4]),
            "uinteger": int(words[5])}


# ----------------------------------------------------------------------------- the group
class OverlapGroup:
    """Seeds ``idx`` (positions in the config's batch) trained together in one worker.

    Layout of the overlap buffers: (S, 2, n, P) float32 with z'[s, h, b, p] the (h*P + p)-th
    non-copy overlap of sequence b (in units of sqrt(2 r / D)); mask[s, h, b, p] = 1 for
    tokens whose label agrees with the target's (the first k of them, by exchangeability).
    """

    backend = "overlaps"

    def __init__(self, cfg, idx: list[int], beta0, device=None):
        import torch

        from icl_kinetics.simulate import data as dm

        self.torch, self.cfg, self.idx = torch, cfg, list(idx)
        S = len(idx)
        self.S = S
        N, B, D = cfg.N, cfg.batch_size, cfg.D
        self.N, self.B, self.D = N, B, D
        self.P = P = max(1, N // 2)
        self.pad = 2 * P > N - 1
        self.sqrt2_over_D = math.sqrt(2.0 / D)
        self.equalized = cfg.contexts == "equalized"
        streams = [dm.overlap_streams(cfg.seed, cfg.seed_offset + i) for i in idx]
        self.data = [s["data"] for s in streams]
        self.w = np.full(S, float(cfg.w0))
        self.beta = np.asarray(beta0, dtype=np.float64).copy()
        # evaluation set (fixed per seed, drawn from the eval stream)
        E = cfg.eval_size
        ez = torch.empty((S, 2, E, P))
        ek = np.empty((S, E), np.float32)
        er = np.empty((S, E), np.float32)
        tmp = torch.empty((1, 2, E * P))
        for j, st in enumerate(streams):
            raw, k, r = _draw(st["eval"], E, N, D, self.equalized)
            i32 = torch.from_numpy(raw.view(np.int32)).view(1, 2, E * P)
            _box_muller(i32, ez[j: j + 1].view(1, 2, E * P), tmp)
            ek[j], er[j] = k, r
        self.ez, self.er = ez, torch.from_numpy(er)
        # signed label mask of the test set: +1 agree, -1 disagree, 0 unused slot
        ar = torch.arange(2 * P, dtype=torch.float32).view(2, 1, P)
        esgn = (ar < torch.from_numpy(ek)[:, None, :, None]).to(torch.float32).mul_(2.0).sub_(1.0)
        if self.pad:
            esgn[:, 1, :, -1] = 0.0
        self.esgn = esgn
        # training buffers
        self.z = torch.empty((S, 2, B, P))
        self.e = torch.empty((S, 2, B, P))
        self.t2 = torch.empty((S, 2, B, P))
        self.f = torch.empty((S, 2, B * P))
        self.mask = torch.empty((S, 2, B, P))
        self.ar = ar
        C = min(E, _EVAL_CHUNK)
        self.ebuf = [torch.empty((S, 2, C, P)) for _ in range(3)]
        self.raws = self.ks = self.rs = None
        self.block_pos = _BLOCK
        self._at_refill = [g.bit_generator.state for g in self.data]  # for checkpoints (state())
        # the engine's bookkeeping (the autograd group's names)
        self.active = list(range(S))
        self.t_icl = [None] * S
        self.status, self.reasons = ["running"] * S, [""] * S
        self.its = [0] * S
        self.rows: list = []
        self.last_eval = -1
        self.loss_sum = np.zeros(S)
        self.loss_n = 0
        self._loss_skipped = False  # the training loss of the current window was not summed
        self._train_loss = np.full(S, np.nan)

    # -- parameters --------------------------------------------------------------------
    @property
    def store(self) -> dict:
        """(w, beta) per seed, float64 tensors (the checkpoint's "store")."""
        return {"w": self.torch.from_numpy(self.w.copy()), "beta": self.torch.from_numpy(self.beta.copy())}

    def deactivate(self, local: list[int]):
        """Stop seeds (positions in this group); their (w, beta) are kept."""
        drop = set(local)
        self.active = [j for j in self.active if j not in drop]

    # -- training ------------------------------------------------------------------------
    def _refill(self):
        S, B, P = self.S, self.B, self.P
        if self.raws is None:
            self.raws = np.empty((S, _BLOCK, B * P), np.uint64)
            self.ks = np.empty((S, _BLOCK, B), np.float32)
            self.rs = np.empty((S, _BLOCK, B), np.float32)
        for j in self.active:
            g = self.data[j]
            self._at_refill[j] = g.bit_generator.state
            raw, k, r = _draw(g, _BLOCK * B, self.N, self.D, self.equalized)
            self.raws[j] = raw.reshape(_BLOCK, B * P)
            self.ks[j] = k.reshape(_BLOCK, B)
            self.rs[j] = r.reshape(_BLOCK, B)
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

    def step(self) -> dict:
        """One SGD iteration of every active seed.  Returns {group position: what was not
        finite ("training loss" or "w or beta")} for the seeds that diverged in it."""
        torch = self.torch
        if self.block_pos >= _BLOCK:
            self._refill()
        t = self.block_pos
        self.block_pos += 1
        act = np.asarray(self.active, dtype=np.int64)
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
        gw = (g * m).mean(1).numpy() + self.cfg.wd_attn * w
        gb = (g * (ms - m * sbar)).mean(1).numpy() * w + self.cfg.wd_attn * beta
        lr = self.cfg.lr
        w1 = w - lr * gw
        b1 = beta - lr * gb
        self.w[act] = w1
        self.beta[act] = b1
        if self._loss_needed():
            loss = torch.nn.functional.softplus(nx).mean(1).numpy()
            self.loss_sum[act] += loss
        else:  # nothing will be logged at the next evaluation (and this step's loss is finite if w1 is)
            loss = None
            self._loss_skipped = True
        self.loss_n += 1
        for j in self.active:
            self.its[j] += 1
        # divergence, on the (S,) updates: with w finite, |m| <= 1 unless m is NaN, so a
        # non-finite loss makes gw, and hence w1, NaN in this very step.  beta enters the
        # overlaps as float32: beyond its range it is infinite there
        ok = np.isfinite(w1) & (np.abs(b1) <= _F32_MAX)
        if ok.all():
            return {}
        if loss is None:
            loss = torch.nn.functional.softplus(nx).mean(1).numpy()
        return {int(act[q]): ("training loss" if not math.isfinite(loss[q]) else "w or beta")
                for q in np.flatnonzero(~ok)}

    def _loss_needed(self) -> bool:
        """Whether the evaluation that ends the current window can log a row, so that the
        training loss must be summed over the window (~2 % of a step; skipped otherwise).
        It can unless the next evaluation is not a logging iteration, every active seed has
        acquired ICL and no early stop is set.  Constant within a window: it depends on the
        next evaluation's iteration and on t_ICL, which changes only at evaluations."""
        cfg = self.cfg
        if cfg.log_every is None or cfg.early_stop is not None:
            return True
        nxt = min((max(self.last_eval, 0) // cfg.eval_every + 1) * cfg.eval_every, cfg.iterations)
        if nxt % cfg.log_every == 0 or nxt == cfg.iterations:
            return True
        return any(self.t_icl[j] is None for j in self.active)

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate(self, sel: np.ndarray, full: bool, min_correct: int):
        """The ICL test sets of group seeds ``sel``.

        full=False: bool array "accuracy > threshold", stopping a seed's pass over its
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

    def begin_eval(self, it: int):
        """Start the evaluation at iteration ``it``: the mean training loss since the
        previous evaluation is set aside for the rows logged now."""
        ok = self.loss_n and not self._loss_skipped
        self._train_loss = self.loss_sum / self.loss_n if ok else np.full(self.S, np.nan)
        self.loss_sum = np.zeros(self.S)
        self.loss_n = 0
        self._loss_skipped = False

    def passes(self, sel: list[int], threshold: float) -> list[bool]:
        """Whether each seed of ``sel`` has ICL accuracy > ``threshold`` (an early-stopping
        pass over the test set: exact, and cheaper than the accuracy itself)."""
        if not sel:
            return []
        ok = self._evaluate(np.asarray(sel, np.int64), False, min_correct(self.cfg.eval_size, threshold))
        return [bool(x) for x in ok]

    def log(self, sel: list[int], it: int):
        """Append the metric rows (:data:`~icl_kinetics.simulate.engine.METRIC_COLUMNS`) of
        seeds ``sel`` at iteration ``it``: w and beta themselves, the ICL test accuracy
        and loss, the training loss; NaN for the IWL and MLP columns."""
        if not sel:
            return
        s = np.asarray(sel, np.int64)
        acc, loss = self._evaluate(s, True, 0)
        nan = float("nan")
        for q, j in enumerate(sel):
            self.rows.append({"seed": self.cfg.seed_offset + self.idx[j], "iteration": int(it),
                              "train_loss": float(self._train_loss[j]), "icl_acc": float(acc[q]),
                              "icl_loss": float(loss[q]), "iwl_acc": nan, "iwl_loss": nan, "c1": nan, "c2": nan,
                              "c3": nan, "w": float(self.w[j]), "beta": float(self.beta[j]),
                              "attn_logit_std": nan})

    # -- state (checkpoints, worker processes) -------------------------------------------------
    def state(self) -> dict:
        """Tensors, lists, numbers and strings only.  The generators are saved as they
        were before the current block of random numbers was drawn (``block_pos`` says
        how far into it the run is): :meth:`load` draws the block again."""
        torch = self.torch
        at_block = self.block_pos < _BLOCK
        gens = [torch.from_numpy(_gen_bytes(st if at_block else g.bit_generator.state).copy())
                for st, g in zip(self._at_refill, self.data)]
        return {"store": self.store, "active": list(self.active), "t_icl": list(self.t_icl),
                "status": list(self.status), "reasons": list(self.reasons), "gens": gens,
                "loss_sum": torch.from_numpy(self.loss_sum.copy()), "loss_n": self.loss_n,
                "last_eval": self.last_eval, "rows": list(self.rows), "its": list(self.its),
                "block_pos": int(self.block_pos)}

    def load(self, st: dict):
        self.w = st["store"]["w"].double().numpy().copy()
        self.beta = st["store"]["beta"].double().numpy().copy()
        self.active = list(st["active"])
        self.t_icl, self.status, self.reasons = list(st["t_icl"]), list(st["status"]), list(st["reasons"])
        for g, b in zip(self.data, st["gens"]):
            g.bit_generator.state = _gen_state(b.numpy())
        self._at_refill = [g.bit_generator.state for g in self.data]
        self.loss_sum = st["loss_sum"].double().numpy().copy()
        self.loss_n = int(st["loss_n"])
        self.last_eval = st["last_eval"]
        self.rows = list(st["rows"])
        self.its = list(st["its"])
        pos = int(st["block_pos"])
        if not 0 <= pos <= _BLOCK:
            raise ValueError(f"block position {pos} outside 0..{_BLOCK}")
        self.block_pos = _BLOCK
        if pos < _BLOCK and self.active:
            self._refill()
        self.block_pos = pos
