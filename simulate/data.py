"""Seeded, device-side data generator for the paper's in-context classification task.

Nguyen & Reddy (ICLR 2025); the task as the paper describes it, with the conventions and
choices below (also in docs/engine.md, "Data").  Everything here is vectorized
torch on a given ``device`` (default CPU); there are no Python loops over sequences.

**N convention.**  ``N`` counts *context* tokens only; the target (query) token is NOT
counted.  The paper's code uses ``len_context = 100`` for 99 context tokens plus the
target, which is ``N = 99`` here; :func:`n_from_len_context` converts (len_context - 1).

**Items and labels.**  Items are float32 draws from N(0, I/D) (D = 63 by default, so
|x|^2 ~ 1).  Labels are float32 +-1.  A finite item set of K items (K even) has exactly
K/2 items of each label, randomly permuted (:func:`make_item_set`).

**Tokens.**  A sequence is N context tokens [x_j, label_j] followed by the target token
[x_t, 0] (label slot all zeros).  Label encodings (``DataConfig.labels``):

* ``"onehot"`` (the paper's code): 2 label dims, token dim D + 2 = 65;
  label -1 -> [1, 0], label +1 -> [0, 1] (one-hot of the class index (y + 1) / 2).
* ``"pm1"`` (the paper's text): 1 label dim holding +-1, token dim D + 1.

Sequences are stored compactly (:class:`Batch`: an item table plus int64 indices);
:meth:`Batch.tokens` / :func:`token_table` build dense tokens when needed.

**Modes** (``DataConfig``):

* ``K`` finite (training items fixed for the run) or ``K = None`` (K -> infinity:
  N fresh distinct items per sequence, labels i.i.d. fair +-1).
* ``contexts = "iid"``: context items i.i.d. from the item distribution; the target is
  drawn from the same distribution and, if its item is not among the context items,
  replaced by a uniformly chosen context item (so the target is always present).
  ``contexts = "equalized"``: exactly N/2 context labels of each kind (N even): N/2
  items from the +1 items and N/2 from the -1 items (each with the item distribution
  restricted to that class), order permuted per sequence, the target copies a uniformly
  chosen context position.  With K = None: fresh items, exactly N/2 labels of each kind.
* ``zipf_alpha``: item frequencies p(k) ~ (k + 1)^(-alpha) over the item index k
  (0 = uniform).  An extension: the paper runs no Zipf experiment.  Sampled by inverse
  CDF (``searchsorted`` on a float64 cumulative distribution with uniform draws).
* ICL test set (:func:`icl_test_set`): ``min(K, max_novel_items)`` novel items with
  balanced, randomly assigned labels; ``eval_size`` sequences drawn like training
  sequences (same context mode, same Zipf exponent over the novel items' index), target
  present.  IWL test set (:func:`iwl_test_set`, finite K only): training items, target
  from the item distribution, context items drawn *with replacement* from the other
  K - 1 items (item distribution restricted to indices != target), so the target is
  absent from the context.

**Seeding.**  All randomness comes from explicit generators, and every rule that
turns a seed into a stream is in this module.  :func:`seed_generators` gives run
``index`` of base seed ``seed`` its own "init", "data" and "eval" torch generators from
``numpy.random.SeedSequence([seed, index]).spawn(3)`` (independent of how many runs
exist).  :func:`overlap_streams` gives the same run the two numpy SFC64 streams of the
exact K -> infinity overlap sampler (:mod:`~icl_kinetics.simulate.overlaps`), children 2
and 3 of ``SeedSequence([seed, index]).spawn(4)``.  The training item set is shared by every run of a
sweep: it comes from :func:`item_generator` (``torch.Generator().manual_seed(item_seed)``),
as the paper's code draws its item vectors from one fixed seed.  Its label map comes from the
same stream (``label_map = "shared"``), or each run draws its own over the shared items
(``"per-seed"``, :func:`seed_label_map`: child 4 of ``SeedSequence([seed, index])``, on the
CPU), as the paper's code, which redraws the item -> label map in every run from the clock,
does in effect.  Same seeds => bitwise identical output
on CPU; CPU and CUDA streams differ from each other.  The Zipf and non-equal-class-size
uniform paths draw float64 / int64 random numbers (fine on CPU and CUDA, not on MPS).

**Deliberate differences from the paper's released code** (also in docs/engine.md,
"Deliberate differences from the paper's released code"):

* Data streams are seeded explicitly (the released code seeds data with ``time.time()``,
  so its runs are not reproducible and jobs started in the same second share data).
* The item -> label map is shared by every run by default (from ``item_seed``, with the
  items); the released code fixes the item vectors but redraws the map in every run.
  :func:`seed_label_map` gives each run (seed) its own, reproducibly.
* Equalized-context test sets are label-balanced by construction (the released code
  draws its own label split but reads labels from the training map, giving 38-64
  same-label tokens instead of N/2).
* N counts context tokens only (paper N = 100 is N = 99 here).
* ICL test items are drawn from the generator passed to :func:`icl_test_set` (the
  training engine passes the shared item stream of ``item_seed``, right after the
  training items), not a fixed seed 100; their labels are fresh and exactly balanced
  (``labels_map=None``, what the engine uses), or, as in the released
  code, read by index from the training label map (``labels_map`` given; exactly
  balanced only when min(K, max_novel_items) == K).
* The IWL test draws context items with replacement from the K - 1 non-target items
  (the released code draws training items without replacement); both keep the target
  out of the context.
* Sequences are generated on the device in one vectorized call per batch instead of a
  per-sample Python data loader, and no K-long label map is collated per step.
* Zipf item frequencies (``zipf_alpha > 0``) are an extension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from icl_kinetics.errors import ParameterError, one_of, positive_float, positive_int

__all__ = [
    "DataConfig",
    "Batch",
    "SequenceSampler",
    "make_item_set",
    "balanced_labels",
    "seed_label_map",
    "token_table",
    "class_token_tables",
    "icl_test_set",
    "iwl_test_set",
    "seed_generators",
    "overlap_streams",
    "item_generator",
    "ItemSampler",
    "n_from_len_context",
    "LABEL_ENCODINGS",
    "CONTEXT_MODES",
    "LABEL_MAPS",
]

LABEL_ENCODINGS = ("onehot", "pm1")
CONTEXT_MODES = ("iid", "equalized")
_UINT62 = 2**62  # exclusive bound for raw int64 draws reduced modulo a per-row size


# ------------------------------------------------------------------ validation helpers
def _even_int(name: str, value, minimum: int = 2) -> int:
    v = positive_int(name, value, minimum)
    if v % 2:
        raise ParameterError(name, value, f"an even integer >= {minimum}")
    return v


def _label_dims(encoding: str) -> int:
    return 2 if one_of("encoding", encoding, LABEL_ENCODINGS) == "onehot" else 1


def n_from_len_context(len_context: int) -> int:
    """Context length N (target not counted) from the paper code's ``len_context``
    (which counts the target): N = len_context - 1.  ``len_context`` must be >= 2."""
    return positive_int("len_context", len_context, 2) - 1


# ------------------------------------------------------------------ config
@dataclass(frozen=True)
class DataConfig:
    """Data-generation settings for one sweep.  Validated on construction.

    N: context tokens per sequence (target not counted).  K: number of training items
    (even, >= 2), or None for K -> infinity (fresh items every sequence).  D: item
    dimension.  labels: token label encoding, "onehot" (token dim D + 2) or "pm1"
    (token dim D + 1).  contexts: "iid" or "equalized" (exactly N/2 labels of each kind,
    N even).  zipf_alpha: item frequencies p(k) ~ (k+1)^(-alpha), >= 0 (needs finite K
    when > 0).  eval_size: sequences per test set.  max_novel_items: the ICL test set
    uses min(K, max_novel_items) novel items (even, >= 2).
    """

    N: int
    K: int | None = None
    D: int = 63
    labels: str = "onehot"
    contexts: str = "iid"
    zipf_alpha: float = 0.0
    eval_size: int = 2000
    max_novel_items: int = 20000

    def __post_init__(self):
        self.validate()
        # normalize numeric types (e.g. numpy ints) once validated
        object.__setattr__(self, "N", int(self.N))
        object.__setattr__(self, "K", None if self.K is None else int(self.K))
        object.__setattr__(self, "D", int(self.D))
        object.__setattr__(self, "zipf_alpha", float(self.zipf_alpha))
        object.__setattr__(self, "eval_size", int(self.eval_size))
        object.__setattr__(self, "max_novel_items", int(self.max_novel_items))

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the first bad field."""
        N = positive_int("N", self.N, 1)
        if self.K is not None:
            _even_int("K", self.K, 2)
        positive_int("D", self.D, 1)
        one_of("labels", self.labels, LABEL_ENCODINGS)
        one_of("contexts", self.contexts, CONTEXT_MODES)
        if self.contexts == "equalized" and N % 2:
            raise ParameterError("N", self.N, "an even integer >= 2 when contexts='equalized'")
        alpha = positive_float("zipf_alpha", self.zipf_alpha, allow_zero=True)
        if alpha > 0 and self.K is None:
            raise ParameterError(
                "zipf_alpha", self.zipf_alpha, "0 when K is None (Zipf weights need a finite K)"
            )
        positive_int("eval_size", self.eval_size, 1)
        _even_int("max_novel_items", self.max_novel_items, 2)

    @property
    def token_dim(self) -> int:
        """Token dimension: D + 2 ("onehot") or D + 1 ("pm1")."""
        return self.D + _label_dims(self.labels)


# ------------------------------------------------------------------ items and tokens
def make_item_set(K: int, D: int, generator: torch.Generator, device="cpu"):
    """Draw a labelled item set.

    Returns ``(items, labels)``: items (K, D) float32 ~ N(0, I/D) (so |x|^2 ~ 1);
    labels (K,) float32 +-1 with EXACTLY K/2 of each, randomly permuted.  K must be even.
    """
    K = _even_int("K", K, 2)
    D = positive_int("D", D, 1)
    device = torch.device(device)
    items = torch.randn(K, D, generator=generator, device=device, dtype=torch.float32)
    items /= math.sqrt(D)
    return items, balanced_labels(K, generator, device)


def balanced_labels(K: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """A balanced label map: (K,) float32 +-1 with EXACTLY K/2 of each, in the order of one
    ``torch.randperm(K, generator=generator)`` (K even).  The labels of :func:`make_item_set`
    and of :func:`seed_label_map`."""
    K = _even_int("K", K, 2)
    device = torch.device(device)
    base = torch.ones(K, device=device, dtype=torch.float32)
    base[K // 2:] = -1.0
    perm = torch.randperm(K, generator=generator, device=device)
    return base[perm]


def class_token_tables(items: torch.Tensor, encoding: str):
    """Token tables with every label for each item, for seeds with their own label maps.

    items (M, D) float32.  Returns ``(context_tokens, target_tokens)``: context_tokens
    (2M, token_dim) with row ``2 i + c`` = [x_i, label(2 c - 1)] (c = 0: label -1, c = 1:
    label +1, the one-hot class index), target_tokens (M, token_dim) = [x_i, 0...0].  Row
    ``2 i + c`` equals row i of :func:`token_table` for a label map with label 2 c - 1 at
    item i, so a seed's context rows are ``2 * index + (label > 0)``."""
    M = items.shape[0]
    two = torch.tensor([-1.0, 1.0], device=items.device).repeat(M)
    ctx_tok, _ = token_table(items.repeat_interleave(2, dim=0), two, encoding)
    _, tgt_tok = token_table(items, two[:M], encoding)
    return ctx_tok, tgt_tok


def _write_label_slots(out: torch.Tensor, lab: torch.Tensor, D: int, encoding: str) -> None:
    """Write the label part of tokens: ``out[..., D:]`` from +-1 labels ``lab``."""
    if encoding == "pm1":
        out[..., D] = lab
    else:  # onehot: -1 -> [1, 0], +1 -> [0, 1]
        out[..., D] = (lab < 0).to(out.dtype)
        out[..., D + 1] = (lab > 0).to(out.dtype)


def token_table(items: torch.Tensor, labels: torch.Tensor, encoding: str):
    """Per-item tokens for an item table.

    items (M, D) float32, labels (M,) +-1.  Returns ``(context_tokens, target_tokens)``,
    each (M, token_dim) float32: context_tokens[i] = [x_i, label(l_i)], target_tokens[i]
    = [x_i, 0...0] (label slot zeroed).  ``Batch.tokens(encoding)`` equals
    ``cat(context_tokens[ctx], target_tokens[tgt][:, None], dim=1)`` exactly.
    """
    L = _label_dims(encoding)
    M, D = items.shape
    tgt_tok = torch.zeros(M, D + L, device=items.device, dtype=torch.float32)
    tgt_tok[:, :D] = items
    ctx_tok = tgt_tok.clone()
    _write_label_slots(ctx_tok, labels.to(torch.float32), D, encoding)
    return ctx_tok, tgt_tok


@dataclass
class Batch:
    """A batch of B sequences stored as indices into an item table.

    items: (M, D) float32 item table the indices point into (the fixed item set, or the
    fresh items of this batch when K is None).  labels: (M,) float32 +-1 labels of the
    table's items.  ctx: (B, N) int64 context item indices.  tgt: (B,) int64 target item
    index; the training target is y = labels[tgt].
    """

    items: torch.Tensor
    labels: torch.Tensor
    ctx: torch.Tensor
    tgt: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.ctx.shape[0]

    @property
    def N(self) -> int:
        return self.ctx.shape[1]

    def y(self) -> torch.Tensor:
        """(B,) float32 +-1 target labels, labels[tgt]."""
        return self.labels[self.tgt]

    def ctx_labels(self) -> torch.Tensor:
        """(B, N) float32 +-1 context labels, labels[ctx]."""
        return self.labels[self.ctx]

    def tokens(self, encoding: str) -> torch.Tensor:
        """Dense tokens (B, N + 1, token_dim) float32: N context tokens [x_j, label_j]
        then the target token [x_t, 0] (label slot all zeros).  Label encodings as in
        :func:`token_table` ("onehot": -1 -> [1, 0], +1 -> [0, 1]; "pm1": +-1)."""
        L = _label_dims(encoding)
        B, N = self.ctx.shape
        D = self.items.shape[1]
        out = torch.zeros(B, N + 1, D + L, device=self.items.device, dtype=torch.float32)
        out[:, :N, :D] = self.items[self.ctx]
        out[:, N, :D] = self.items[self.tgt]
        _write_label_slots(out[:, :N], self.labels[self.ctx].to(torch.float32), D, encoding)
        return out


# ------------------------------------------------------------------ item distribution
class _ItemDist:
    """Categorical distribution over K item indices, optionally split into classes.

    Items are laid out in class order (class 0 first); draws name a class per row and
    optionally one excluded item per row (which must belong to that row's class).
    Uniform weights use integer draws; Zipf weights use inverse-CDF: a float64
    cumulative array where class c occupies [c, c + 1), ``searchsorted`` on uniform draws.
    """

    def __init__(self, weights, classes, device):
        K = classes.shape[0]
        self.device = device
        C = int(classes.max().item()) + 1 if K else 1
        counts = torch.bincount(classes, minlength=C)
        self.counts = counts
        self.seg_start = torch.cumsum(counts, 0) - counts
        self.equal_sizes = bool((counts == counts[0]).all().item())
        self.size0 = int(counts[0].item())
        self.min_size = int(counts.min().item())
        if C == 1:
            self.order = None
            self.pos_of = None
        else:
            self.order = torch.argsort(classes, stable=True)
            self.pos_of = torch.empty_like(self.order)
            self.pos_of[self.order] = torch.arange(K, device=device)
        self.cum = None
        if weights is not None:
            w = weights if self.order is None else weights[self.order]
            cls_sorted = classes if self.order is None else classes[self.order]
            sums = torch.zeros(C, dtype=torch.float64, device=device).index_add_(0, cls_sorted, w)
            q = w / sums[cls_sorted]
            cum = torch.cumsum(q, 0)
            ends = self.seg_start + counts - 1
            cum[ends] = torch.arange(1, C + 1, dtype=torch.float64, device=device)
            lower = torch.empty_like(cum)
            lower[1:] = cum[:-1]
            lower[self.seg_start] = torch.arange(C, dtype=torch.float64, device=device)
            self.cum, self.lower, self.width = cum, lower, cum - lower

    def draw(self, n_rows, n_cols, gen, cls=None, excl=None):
        """(n_rows, n_cols) int64 global item indices.  cls: None (class 0) or (n_rows,)
        int64 class per row.  excl: None or (n_rows,) int64 global index to exclude."""
        dev = self.device
        shape = (n_rows, n_cols)
        if cls is None:
            cls = torch.zeros(n_rows, dtype=torch.int64, device=dev)
        start = self.seg_start[cls][:, None]
        size = self.counts[cls][:, None]
        epos = None
        if excl is not None:
            epos = excl if self.pos_of is None else self.pos_of[excl]
            epos = epos[:, None]
        if self.cum is None:  # uniform within the class
            n_eff = size if epos is None else size - 1
            if self.equal_sizes:
                local = torch.randint(0, self.size0 - (epos is not None), shape,
                                      generator=gen, device=dev)
            else:
                raw = torch.randint(0, _UINT62, shape, generator=gen, device=dev)
                local = torch.remainder(raw, n_eff)
            if epos is not None:
                local = local + (local >= epos - start).to(local.dtype)
            pos = start + local
        else:  # inverse CDF
            u = torch.rand(shape, generator=gen, device=dev, dtype=torch.float64)
            c = cls[:, None].to(torch.float64)
            if epos is None:
                u = c + u
            else:
                lo, wd = self.lower[epos], self.width[epos]
                u = c + u * (1.0 - wd)
                u = torch.where(u >= lo, u + wd, u)
            pos = torch.searchsorted(self.cum, u, right=True)
            pos = torch.minimum(torch.maximum(pos, start), start + size - 1)
            if epos is not None:  # guard against float rounding onto the excluded item
                alt = torch.where(epos + 1 < start + size, epos + 1, epos - 1)
                pos = torch.where(pos == epos, alt, pos)
        return pos if self.order is None else self.order[pos]


def zipf_weights(K: int, alpha: float, device="cpu") -> torch.Tensor | None:
    """The item distribution's unnormalized weights, (k + 1)^-alpha for item k = 0 .. K - 1
    (float64), or None for alpha = 0 (uniform).  The one definition: the samplers draw with
    it, the engine's memorization probe weights c1 with it, ``validate.zipf`` reads it."""
    if alpha == 0:
        return None
    k = torch.arange(1, K + 1, dtype=torch.float64, device=device)
    return k.pow(-alpha)


def _random_row_perm(n_rows: int, n_cols: int, gen, device) -> torch.Tensor:
    """(n_rows, n_cols) int64, each row an independent random permutation of arange."""
    keys = torch.randint(0, _UINT62, (n_rows, n_cols), generator=gen, device=device)
    return torch.argsort(keys, dim=1)


def _check_item_set(cfg: DataConfig, items, labels, device, need_class_size: int):
    K, D = cfg.K, cfg.D
    if not isinstance(items, torch.Tensor) or tuple(items.shape) != (K, D):
        got = tuple(items.shape) if isinstance(items, torch.Tensor) else type(items).__name__
        raise ParameterError("items", got, f"a tensor of shape (K, D) = ({K}, {D})")
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (K,):
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ParameterError("labels", got, f"a tensor of shape (K,) = ({K},)")
    items = items.to(device=device, dtype=torch.float32)
    labels = labels.to(device=device, dtype=torch.float32)
    n_plus = int((labels == 1).sum().item())
    n_minus = int((labels == -1).sum().item())
    if n_plus + n_minus != K:
        raise ParameterError("labels", "values other than +-1", "+-1 only")
    if min(n_plus, n_minus) < need_class_size:
        raise ParameterError(
            "labels", f"{n_plus} (+1) / {n_minus} (-1)",
            f"at least {need_class_size} item(s) of each label for contexts={cfg.contexts!r}",
        )
    return items, labels


# ------------------------------------------------------------------ sampler
class SequenceSampler:
    """Training sequences for ONE run (one data generator), as in the module docstring's "Modes".

    * finite K, iid: N context indices i.i.d. from the item distribution (uniform, or
      Zipf p(k) ~ (k+1)^-alpha via inverse CDF); the target index from the same
      distribution; if the target's item is not among the context items it is replaced
      by a uniformly chosen context item (so the target is always present).
    * finite K, equalized: N/2 context items from the +1 items and N/2 from the -1 items
      (item distribution restricted to each class), order permuted per sequence; the
      target copies a uniformly chosen context position.
    * K = None: a fresh table of B*N items per batch (ctx = arange(B*N).view(B, N)),
      labels i.i.d. fair +-1 (equalized: exactly N/2 of each, permuted per sequence),
      target = a uniformly chosen context item.

    items (K, D) / labels (K,) +-1 are the training item set (both None when cfg.K is
    None).  All draws use ``generator``; output lives on ``device``.
    """

    def __init__(self, cfg: DataConfig, items, labels, generator: torch.Generator, device="cpu"):
        cfg.validate()
        self.cfg = cfg
        self.gen = generator
        self.device = torch.device(device)
        self.N = cfg.N
        if cfg.K is None:
            if items is not None or labels is not None:
                raise ParameterError("items", "a tensor", "None when K is None (fresh items)")
            self.items = self.labels = None
            return
        self.items, self.labels = _check_item_set(cfg, items, labels, self.device, 1)
        w = zipf_weights(cfg.K, cfg.zipf_alpha, self.device)
        zeros = torch.zeros(cfg.K, dtype=torch.int64, device=self.device)
        self._all = _ItemDist(w, zeros, self.device)
        self._by_class = None
        if cfg.contexts == "equalized":
            # class 0 = label +1, class 1 = label -1
            self._by_class = _ItemDist(w, (self.labels < 0).to(torch.int64), self.device)

    # -- helpers
    def _pick_position(self, ctx: torch.Tensor) -> torch.Tensor:
        B, N = ctx.shape
        j = torch.randint(0, N, (B,), generator=self.gen, device=self.device)
        return ctx.gather(1, j[:, None])[:, 0]

    def _equalized_ctx(self, B: int, same_cls=None, excl=None) -> torch.Tensor:
        """(B, N): N/2 items of each class, permuted per row.  With ``same_cls``/``excl``
        (IWL test) the half of class ``same_cls`` excludes the item ``excl``."""
        h = self.N // 2
        dev = self.device
        if same_cls is None:
            c0 = torch.zeros(B, dtype=torch.int64, device=dev)
            a = self._by_class.draw(B, h, self.gen, cls=c0)
            b = self._by_class.draw(B, h, self.gen, cls=c0 + 1)
        else:
            a = self._by_class.draw(B, h, self.gen, cls=same_cls, excl=excl)
            b = self._by_class.draw(B, h, self.gen, cls=1 - same_cls)
        ctx = torch.cat([a, b], dim=1)
        return ctx.gather(1, _random_row_perm(B, self.N, self.gen, dev))

    # -- public
    def sample(self, batch_size: int) -> Batch:
        """Draw ``batch_size`` training sequences as a :class:`Batch` (ctx (B, N),
        tgt (B,), both int64 into the item table)."""
        B = positive_int("batch_size", batch_size, 1)
        N, dev, g = self.N, self.device, self.gen
        cfg = self.cfg
        if cfg.K is None:
            M = B * N
            items = torch.randn(M, cfg.D, generator=g, device=dev, dtype=torch.float32)
            items /= math.sqrt(cfg.D)
            if cfg.contexts == "iid":
                bits = torch.randint(0, 2, (M,), generator=g, device=dev)
                labels = bits.to(torch.float32) * 2.0 - 1.0
            else:
                base = torch.ones(N, device=dev, dtype=torch.float32)
                base[N // 2:] = -1.0
                labels = base[_random_row_perm(B, N, g, dev)].reshape(M)
            ctx = torch.arange(M, device=dev, dtype=torch.int64).view(B, N)
            tgt = self._pick_position(ctx)
            return Batch(items, labels, ctx, tgt)
        if cfg.contexts == "iid":
            ctx = self._all.draw(B, N, g)
            tgt = self._all.draw(B, 1, g)[:, 0]
            fallback = self._pick_position(ctx)
            present = (ctx == tgt[:, None]).any(1)
            tgt = torch.where(present, tgt, fallback)
        else:
            ctx = self._equalized_ctx(B)
            tgt = self._pick_position(ctx)
        return Batch(self.items, self.labels, ctx, tgt)

    def _sample_iwl(self, B: int) -> Batch:
        """IWL sequences: target from the item distribution, context items drawn with
        replacement from the other K - 1 items (restricted item distribution)."""
        g = self.gen
        tgt = self._all.draw(B, 1, g)[:, 0]
        if self.cfg.contexts == "iid":
            ctx = self._all.draw(B, self.N, g, excl=tgt)
        else:
            same = (self.labels[tgt] < 0).to(torch.int64)
            ctx = self._equalized_ctx(B, same_cls=same, excl=tgt)
        return Batch(self.items, self.labels, ctx, tgt)


# ------------------------------------------------------------------ test sets
def icl_test_set(cfg: DataConfig, labels_map, generator: torch.Generator, device="cpu") -> Batch:
    """ICL test set: ``cfg.eval_size`` sequences over NOVEL items, target present.

    Finite K: M = min(K, cfg.max_novel_items) novel items drawn fresh from ``generator``
    (N(0, I/D)); labels exactly balanced +-1 and randomly assigned when ``labels_map`` is
    None, or (paper-code convention) ``labels_map[:M]`` when a (K,) +-1 training label
    map is given (exactly balanced only if M == K).  Sequences are drawn like training
    sequences over the M novel items (same context mode, Zipf over the novel index).
    K = None: fresh items exactly as in training (``labels_map`` must be None).
    Equalized contexts are exactly N/2 labels of each kind by construction.
    """
    cfg.validate()
    device = torch.device(device)
    if cfg.K is None:
        if labels_map is not None:
            raise ParameterError("labels_map", "a tensor", "None when K is None")
        return SequenceSampler(cfg, None, None, generator, device).sample(cfg.eval_size)
    M = min(cfg.K, cfg.max_novel_items)
    items, labels = make_item_set(M, cfg.D, generator, device)
    if labels_map is not None:
        if not isinstance(labels_map, torch.Tensor) or tuple(labels_map.shape) != (cfg.K,):
            got = tuple(labels_map.shape) if isinstance(labels_map, torch.Tensor) else labels_map
            raise ParameterError("labels_map", got, f"None or a tensor of shape (K,) = ({cfg.K},)")
        labels = labels_map[:M].to(device=device, dtype=torch.float32)
    sub = replace(cfg, K=M)
    return SequenceSampler(sub, items, labels, generator, device).sample(cfg.eval_size)


def iwl_test_set(cfg: DataConfig, items, labels, generator: torch.Generator, device="cpu") -> Batch:
    """IWL test set (finite K only): ``cfg.eval_size`` sequences over the training items.

    The target is drawn from the item distribution; the N context items are drawn WITH
    replacement from the K items EXCLUDING the target's index (item distribution
    restricted to the other K - 1 items; equalized: N/2 from the target's class minus the
    target and N/2 from the other class, permuted), so the target is absent from the
    context.  Raises ParameterError if K is None (or, for equalized contexts, if a class
    has fewer than 2 items).
    """
    cfg.validate()
    if cfg.K is None:
        raise ParameterError("K", None, "a finite even integer for the IWL test set")
    device = torch.device(device)
    need = 2 if cfg.contexts == "equalized" else 1
    items, labels = _check_item_set(cfg, items, labels, device, need)
    sampler = SequenceSampler(cfg, items, labels, generator, device)
    return sampler._sample_iwl(cfg.eval_size)


# ------------------------------------------------------------------ seeding
def seed_generators(seed: int, index: int, device="cpu") -> dict:
    """Independent torch generators ``{"init", "data", "eval"}`` for run ``index`` of
    base seed ``seed`` (both integers >= 0).  Derived only from
    ``numpy.random.SeedSequence([seed, index]).spawn(3)`` (each torch seed =
    ``child.generate_state(1, dtype=np.uint64)[0] & (2**63 - 1)``), so a run's streams do
    not depend on how many other runs exist."""
    seed = positive_int("seed", seed, 0)
    index = positive_int("index", index, 0)
    children = np.random.SeedSequence([seed, index]).spawn(3)
    out = {}
    for key, child in zip(("init", "data", "eval"), children):
        s = int(child.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)
        out[key] = torch.Generator(device=torch.device(device)).manual_seed(s)
    return out


def overlap_streams(seed: int, index: int) -> dict:
    """The numpy streams ``{"data", "eval"}`` of run ``index`` of base seed ``seed`` for
    the exact K -> infinity overlap sampler (:mod:`~icl_kinetics.simulate.overlaps`).

    ``numpy.random.SeedSequence([seed, index]).spawn(4)``: child 2 drives the training
    draws ("data"), child 3 the run's own evaluation set ("eval"), each through
    ``numpy.random.Generator(numpy.random.SFC64(child))``.  (Children 0 and 1 are unused;
    they were the former simulator's "init" and "items" streams, and the numbering is
    kept so that its runs reproduce bit for bit.)  Like :func:`seed_generators`, a run's
    streams do not depend on how many other runs exist."""
    seed = positive_int("seed", seed, 0)
    index = positive_int("index", index, 0)
    children = np.random.SeedSequence([seed, index]).spawn(4)
    return {"data": np.random.Generator(np.random.SFC64(children[2])),
            "eval": np.random.Generator(np.random.SFC64(children[3]))}


class ItemSampler:
    """Item indices drawn from the item distribution of a finite item set, for models
    that read bare items (the standalone MLP): uniform over the K items, or Zipf
    p(k) ~ (k + 1)^(-zipf_alpha) by inverse CDF, exactly as :class:`SequenceSampler`
    draws its target items.  All draws use ``generator``; output lives on ``device``."""

    def __init__(self, K: int, zipf_alpha: float, generator: torch.Generator, device="cpu"):
        self.K = _even_int("K", K, 2)
        alpha = positive_float("zipf_alpha", zipf_alpha, allow_zero=True)
        self.gen = generator
        self.device = torch.device(device)
        zeros = torch.zeros(self.K, dtype=torch.int64, device=self.device)
        self._dist = _ItemDist(zipf_weights(self.K, alpha, self.device), zeros, self.device)

    def sample(self, n: int) -> torch.Tensor:
        """(n,) int64 item indices in [0, K)."""
        n = positive_int("n", n, 1)
        return self._dist.draw(1, n, self.gen)[0]


#: ``TrainConfig.label_map``: "shared" (one label map, from ``item_seed``, for every seed) or
#: "per-seed" (each seed its own, :func:`seed_label_map`; the items stay shared)
LABEL_MAPS = ("shared", "per-seed")
#: the child of ``SeedSequence([seed, index])`` that draws a seed's own label map (children
#: 0-2: :func:`seed_generators`; 2-3: :func:`overlap_streams`)
LABEL_MAP_CHILD = 4


def seed_label_map(K: int, seed: int, index: int, device="cpu") -> torch.Tensor:
    """The own label map of run (seed) ``index`` of base seed ``seed`` (``label_map =
    "per-seed"``): (K,) float32 +-1 over the K shared training items, EXACTLY K/2 of each
    (:func:`balanced_labels`).

    Drawn on the CPU from child :data:`LABEL_MAP_CHILD` (= 4) of
    ``numpy.random.SeedSequence([seed, index])`` (torch seed = ``child.generate_state(1,
    dtype=np.uint64)[0] & (2**63 - 1)``, as :func:`seed_generators`), then moved to
    ``device``: so a seed's map depends only on (seed, index, K), not on how many seeds or
    runs train beside it, nor on the device."""
    K = _even_int("K", K, 2)
    seed = positive_int("seed", seed, 0)
    index = positive_int("index", index, 0)
    child = np.random.SeedSequence([seed, index]).spawn(LABEL_MAP_CHILD + 1)[LABEL_MAP_CHILD]
    s = int(child.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)
    return balanced_labels(K, torch.Generator().manual_seed(s)).to(torch.device(device))


def item_generator(item_seed: int, device="cpu") -> torch.Generator:
    """Generator for the training item set, ``torch.Generator(device).manual_seed(item_seed)``.
    Shared by every run of a sweep (the paper's code uses one fixed item seed)."""
    item_seed = positive_int("item_seed", item_seed, 0)
    return torch.Generator(device=torch.device(device)).manual_seed(item_seed)
