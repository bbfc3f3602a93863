"""The models, seed-batched: every parameter has a leading seed dimension S.

Seven models (``ModelConfig.kind``), all functional (parameters are a dict of tensors)
so that S independent seeds train in one set of batched matmuls:

``"transformer"`` (the paper's one-layer transformer; docs/engine.md, "Models")::

    tokens (B, N+1, T) --LayerNorm(T)--> h
    q, k, v = h Wq^T, h Wk^T, h Wv^T        bias-free, single head, no output projection
    sa = softmax_causal(q k^T * 1.0) v      attention scale 1.0 (no 1/sqrt(T))
    logit = MLP(h_last + sa_last)           MLP: T -> width -> width -> 1, ReLU

``"transformer2"``: the two-layer control (paper Fig. A5).  The paper gives its
parts but not its wiring; ours is::

    h = LN(tokens); r1 = h + attn1(h); r2 = r1 + MLP_mid(r1)       (every position)
    logit = MLP(r2_last + attn2(r2)_last)                          MLP_mid: T -> width -> width -> T

``"minimal"``: the paper's phenomenological model on raw items,
``logit = phi(x_t) + w * sum_j softmax_j(beta x_t . x_j) l_j`` over the N context
tokens and the target itself (label 0); phi (D -> width -> width -> 1) is optional.

``"mlp"``: the standalone memorizing MLP phi(x) on bare items (paper Fig. 5, A2, A3).

**Three ablations of the transformer (rung 2.5).**  Each removes one thing that the
theory's reduced model abstracts away and keeps everything else of ``"transformer"``
(docs/engine.md, "Models").  Only the target's (last) position is computed; h = LN(x)
with its affine part, x_t the target token (label slot zero), the softmax over the N
context tokens and the target itself, as in the transformer::

    "transformer_itemblind": p_j = softmax_j(beta * x_t[:D] . x_j[:D])    no Wq, Wk
                             logit = MLP(h_t + Wv sum_j p_j h_j)
    "transformer_split":     p_j = softmax_j(q_t . k_j)                  (the transformer's)
                             logit = MLP(h_t) + u . (Wv sum_j p_j h_j)   u (T,): own linear readout
    "transformer_noln":      the transformer with h = x (no LayerNorm anywhere)

* itemblind: the score is the reduced model's, beta times the overlap of the raw items
  (first D dims of the tokens: no label dims, no learned item features); one learned
  scalar beta per seed.  The head can no longer learn features of the K items it sees
  again and again, which is the difference docs/validation.md suspects behind the
  transformer's K-dependent threshold.
* split: the MLP reads the target alone, and the attention output reaches the logit
  through a linear readout, so logit = IWL(x_t) + ICL(context) is additive, as the
  reduced model (phi + w * head) assumes.  In the MLP's linear regime (every ReLU on)
  it is the transformer with u = W1 W2 W3 (tests/test_ablations.py).
* noln: LayerNorm couples the label slots to the item (one mean and variance over all
  T dims, shared by attention and MLP); the reduced model has no normalization.

Initialization: every parameter that an ablation shares with ``"transformer"`` is
drawn from the same generator calls in the same order (one ``Linear(T, 3T)`` for q, k,
v, then the MLP), so seed i of an ablation starts with seed i's transformer weights;
itemblind keeps only Wv of that draw, and its beta (``beta0``, or N(0, 1) when None)
is drawn after the MLP; split's u (``nn.Linear(T, 1, bias=False)``: U(-1/sqrt(T),
1/sqrt(T))) likewise.  beta and u are in :data:`ATTENTION_PARAMS`: they are the
in-context pathway's (beta as in the minimal model; u is the head's readout, the
role w has there), so ``wd_attn`` decays the whole ICL pathway, as for the minimal
model.  The ablations run on dense gathered tokens (S, B, N+1, T).

**Two code paths for the one-layer transformer.**

* :func:`transformer_reference` is the naive oracle: LayerNorm on every token, q, k
  and v at every position, full causal attention, then the last position.  Tests
  check the fast path against it, in float64, to 1e-5.
* :func:`transformer_fast` computes only what the last-token loss needs.  The loss
  reads one query row, and LayerNorm's normalization ``n = (x - mean) / std`` does
  not depend on any parameter, only its affine part ``h = g * n + b`` does.  So
  with ``a = g * (Wk^T q)``::

      q . k_j = a . n_j + const          (const = q . Wk b, the same for every j: cancels in softmax)
      sa      = Wv (g * sum_j p_j n_j + b)   (the p_j sum to 1)

  The normalized tokens are computed once per item (:func:`normalize_tokens`), not
  once per use.  The softmax over the context and the weighted token mean run in one
  fused CPU kernel that reads each sequence's rows straight from the token tables
  (:func:`icl_kinetics.simulate.kernels.gather_attention`; a torch reference, which
  gathers the (B, N, T) rows into a buffer, runs elsewhere and is tested against it).

Initialization follows PyTorch's defaults (``nn.Linear``: U(-1/sqrt(fan_in),
1/sqrt(fan_in)) for weights and biases; LayerNorm: g = 1, b = 0); each seed draws
its parameters from its own generator, so a seed's initialization does not depend
on the batch it is trained in.  Parameter groups for weight decay:
:data:`ATTENTION_PARAMS` (LayerNorm and q/k/v, and w, beta, u) and the MLP's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from icl_kinetics.errors import ParameterError, one_of, positive_int

#: the transformer's ablations (rung 2.5; module docstring), each a kind of its own
ABLATIONS = ("transformer_itemblind", "transformer_split", "transformer_noln")
KINDS = ("transformer", "transformer2", "minimal", "mlp") + ABLATIONS
LN_EPS = 1e-5
#: parameters in the "attention" weight-decay group (LayerNorm, q/k/v; w and beta of the minimal
#: model and of transformer_itemblind; u, the attention readout of transformer_split)
ATTENTION_PARAMS = ("ln_w", "ln_b", "wq", "wk", "wv", "wq2", "wk2", "wv2", "w", "beta", "u")

Params = dict  # name -> tensor with a leading seed dimension S


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of a model.

    Args:
        kind: one of :data:`KINDS`: ``"transformer"``, ``"transformer2"``, ``"minimal"``,
            ``"mlp"`` or an ablation of :data:`ABLATIONS`.
        token_dim: T, the token width (D + 2 for one-hot labels, D + 1 for ±1).
        D: item dimension (input of phi for ``"minimal"`` and ``"mlp"``; the item part of
            a token, read by ``"transformer_itemblind"``'s score).
        width: hidden width of the MLPs (0 for ``"minimal"``: no phi).
        beta0: initial beta of ``"minimal"`` and ``"transformer_itemblind"`` (1/overlap
            units; None: drawn N(0, 1) per seed, as the paper's model does); the other
            kinds have no beta and ignore it.
        w0: initial w of ``"minimal"`` (default 0, as the paper's model).
    """

    kind: str = "transformer"
    token_dim: int = 65
    D: int = 63
    width: int = 512
    beta0: float | None = None
    w0: float = 0.0

    def validate(self) -> None:
        one_of("model", self.kind, KINDS)
        positive_int("token_dim", self.token_dim, 2)
        positive_int("D", self.D, 1)
        if self.kind == "transformer_itemblind" and self.D >= self.token_dim:
            raise ParameterError("D", self.D, f"an integer in [1, token_dim - 1 = {self.token_dim - 1}] for "
                                 f"{self.kind!r} (a token is the item's D dims and its label dims)")
        positive_int("width", self.width, 0 if self.kind == "minimal" else 1)
        if self.beta0 is not None and not math.isfinite(float(self.beta0)):
            raise ParameterError("beta0", self.beta0, "a finite number or None")
        if not math.isfinite(float(self.w0)):
            raise ParameterError("w0", self.w0, "a finite number")


# ----------------------------------------------------------------------------- init
def _linear(gen: torch.Generator, fan_in: int, fan_out: int, bias: bool = True):
    bound = 1.0 / math.sqrt(fan_in)
    W = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=gen)
    b = torch.empty(fan_out).uniform_(-bound, bound, generator=gen) if bias else None
    return W, b


def _mlp_init(gen, fan_in: int, width: int, out: int, prefix: str = "") -> dict:
    """MLP weights stored as (fan_in, fan_out), the transpose of ``nn.Linear.weight``, so that
    the forward is ``x @ W`` and autograd returns contiguous weight gradients (a transposed
    gradient makes the SGD update of a 512 x 512 weight ~20x slower on CPU)."""
    p = {}
    for i, (fi, fo) in enumerate([(fan_in, width), (width, width), (width, out)], start=1):
        W, p[f"{prefix}b{i}"] = _linear(gen, fi, fo)
        p[f"{prefix}W{i}"] = W.t().contiguous()
    return p


def init_params(cfg: ModelConfig, gen: torch.Generator) -> dict:
    """Parameters of ONE seed (no seed dimension), float32 on CPU, from ``gen``."""
    cfg.validate()
    T, h = cfg.token_dim, cfg.width
    p: dict = {}
    if cfg.kind in ("transformer", "transformer2") + ABLATIONS:
        if cfg.kind != "transformer_noln":
            p["ln_w"], p["ln_b"] = torch.ones(T), torch.zeros(T)
        Wqkv, _ = _linear(gen, T, 3 * T, bias=False)  # one Linear(T, 3T), as in the paper's code
        if cfg.kind != "transformer_itemblind":  # item-blind: Wv only (the same draw as the transformer's)
            p["wq"], p["wk"] = Wqkv[:T].clone(), Wqkv[T:2 * T].clone()
        p["wv"] = Wqkv[2 * T:].clone()
        if cfg.kind == "transformer2":
            p.update(_mlp_init(gen, T, h, T, prefix="mid_"))
            Wqkv2, _ = _linear(gen, T, 3 * T, bias=False)
            p["wq2"], p["wk2"], p["wv2"] = Wqkv2[:T].clone(), Wqkv2[T:2 * T].clone(), Wqkv2[2 * T:].clone()
        p.update(_mlp_init(gen, T, h, 1))
        # drawn after everything the transformer draws, so the shared weights are seed i's transformer's
        if cfg.kind == "transformer_itemblind":
            beta = torch.randn((), generator=gen) if cfg.beta0 is None else torch.tensor(float(cfg.beta0))
            p["beta"] = beta.float()
        if cfg.kind == "transformer_split":
            p["u"] = _linear(gen, T, 1, bias=False)[0][0]  # nn.Linear(T, 1, bias=False): (T,)
    elif cfg.kind == "minimal":
        p["w"] = torch.tensor(float(cfg.w0))
        beta = torch.randn((), generator=gen) if cfg.beta0 is None else torch.tensor(float(cfg.beta0))
        p["beta"] = beta.float()
        if h:
            p.update(_mlp_init(gen, cfg.D, h, 1))
    else:  # mlp
        p.update(_mlp_init(gen, cfg.D, h, 1))
    return p


def stack_params(per_seed: list[dict], device="cpu", dtype=torch.float32) -> Params:
    """Stack one-seed parameter dicts into seed-batched tensors (leading dim S)."""
    return {k: torch.stack([p[k] for p in per_seed]).to(device=device, dtype=dtype) for k in per_seed[0]}


def select(params: Params, idx) -> Params:
    """The parameters of seeds ``idx`` (a new seed-batched dict)."""
    return {k: v[idx] for k, v in params.items()}


# ----------------------------------------------------------------------------- pieces
#: the parameters of the readout MLP phi (prefix "")
MLP_PARAMS = ("W1", "b1", "W2", "b2", "W3", "b3")
#: the two weight matrices that :class:`SGDStep` updates inside the MLP's backward pass; the
#: MLP's biases and readout get their gradients from autograd like every other parameter
FUSED_PARAMS = ("W1", "W2")


class SGDStep(dict):
    """A parameter dict for one training step in which the readout MLP (prefix ``""``, scalar
    output) updates its two weight matrices itself: :func:`mlp` runs it through
    :class:`_MLPSGD`, whose backward pass returns the gradients of the MLP's input, biases
    and readout and applies the SGD update to ``FUSED_PARAMS`` in place, so the caller
    differentiates every parameter but those.

    Arguments:
        params: the seed-batched parameters (the same tensors, not copies).
        segments: [(a, b, lr, wd)]: seeds ``a:b`` take ``v -= lr * (g + wd * v)``; lr in
            units of the parameters per unit loss gradient, wd the coupled L2 coefficient.
    """

    def __init__(self, params: Params, segments: list):
        super().__init__(params)
        self.segments = [tuple(sg) for sg in segments]


def _hidden(x, W1, b1, W2, b2):
    """The MLP's two ReLU layers in torch: (h1, h2), each (S, n, width)."""
    h1 = torch.baddbmm(b1.unsqueeze(1), x, W1).relu_()
    return h1, torch.baddbmm(b2.unsqueeze(1), h1, W2).relu_()


def _scalar_readout(h, W3, b3):
    """h . w3 + b3 for a (width x 1) readout W3: (S, n, 1).  A row-wise dot product: as a
    matmul, its forward and its two backward products (the weight gradient and the outer
    product for the hidden gradient) run at a few GFLOP/s on CPU (~3 ms of a 60 ms step for
    8 seeds)."""
    return (h * W3.transpose(1, 2)).sum(-1, keepdim=True) + b3.unsqueeze(1)


class _MLPSGD(torch.autograd.Function):
    """phi(x) = relu(relu(x W1 + b1) W2 + b2) . w3 + b3 and, in the backward pass, the SGD
    step on W1 and W2 (their gradients go straight into the weights by
    ``baddbmm_(beta = 1 - lr wd, alpha = -lr)``: never written out and read back); the
    gradients of x, b1, b2, W3 and b3 are returned to autograd.
    The same products and ReLU masks as autograd's backward of :func:`mlp`, in float64 the
    same numbers to rounding (tests/test_fused_mlp.py); every input gradient is taken before
    the weight it reads is updated.  On CPU the passes between the products (bias and ReLU,
    the readout, the masks and the bias gradients) are the compiled ``mlp_step.cpp``
    (:func:`icl_kinetics.simulate.kernels.mlp_ops`), one pass each; the torch code below is
    their reference (and runs on CUDA)."""

    @staticmethod
    def forward(ctx, x, W1, b1, W2, b2, W3, b3, segments):
        from icl_kinetics.simulate.kernels import mlp_ops

        ext = mlp_ops(x)
        if ext is not None:
            h1 = torch.bmm(x, W1)
            ext.mlp_bias_relu_(h1, b1.contiguous())
            h2 = torch.bmm(h1, W2)
            out = ext.mlp_readout_forward_(h2, b2.contiguous(), W3.contiguous(), b3.contiguous())
        else:
            h1, h2 = _hidden(x, W1, b1, W2, b2)
            out = _scalar_readout(h2, W3, b3)
        ctx.save_for_backward(x, h1, h2, W3)
        ctx.weights = (W1, W2)  # not saved tensors: updated in place below
        ctx.segments = segments
        ctx.ext = ext
        return out

    @staticmethod
    def backward(ctx, g):
        x, h1, h2, W3 = ctx.saved_tensors
        W1, W2 = ctx.weights
        ext = ctx.ext
        gb3 = g.sum(1)  # (S, 1)
        if ext is not None:
            ga2, gW3, gb2 = ext.mlp_readout_backward(g.contiguous(), h2, W3.contiguous())
            ga1 = torch.bmm(ga2, W2.transpose(1, 2))
            gb1 = ext.mlp_relu_backward_(ga1, h1)
        else:
            gW3 = (g * h2).sum(1, keepdim=True).transpose(1, 2)  # (S, width, 1)
            ga2 = torch.ops.aten.threshold_backward(g * W3.transpose(1, 2), h2, 0)
            ga1 = torch.ops.aten.threshold_backward(torch.bmm(ga2, W2.transpose(1, 2)), h1, 0)
            gb2, gb1 = ga2.sum(1), ga1.sum(1)
        gx = torch.bmm(ga1, W1.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        whole = len(ctx.segments) == 1
        for a, b, lr, wd in ctx.segments:
            sl = slice(None) if whole else slice(a, b)
            W2[sl].baddbmm_(h1[sl].transpose(1, 2), ga2[sl], beta=1.0 - lr * wd, alpha=-lr)
            W1[sl].baddbmm_(x[sl].transpose(1, 2), ga1[sl], beta=1.0 - lr * wd, alpha=-lr)
        return gx, None, gb1, None, gb2, gW3, gb3, None


def mlp(p: Params, x: torch.Tensor, prefix: str = "") -> torch.Tensor:
    """Seed-batched 3-layer ReLU MLP: x (S, n, fan_in) -> (S, n, out); weights (S, fan_in, fan_out).
    With an :class:`SGDStep` dict and grad enabled, the readout MLP (prefix ``""``, scalar
    output) is :class:`_MLPSGD`: its backward pass updates its weights."""
    if (prefix == "" and isinstance(p, SGDStep) and torch.is_grad_enabled()
            and p["W3"].shape[-1] == 1):
        return _MLPSGD.apply(x, *(p[k] for k in MLP_PARAMS), p.segments)
    _, h = _hidden(x, *(p[prefix + k] for k in ("W1", "b1", "W2", "b2")))
    W3, b3 = p[prefix + "W3"], p[prefix + "b3"]
    if W3.shape[-1] == 1:
        return _scalar_readout(h, W3, b3)
    return torch.baddbmm(b3.unsqueeze(1), h, W3)


def normalize_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """LayerNorm without its affine part, ``(x - mean) / sqrt(var + eps)`` over the last dim."""
    return F.layer_norm(tokens, tokens.shape[-1:], eps=LN_EPS)


def _full_attention(h, wq, wk, wv, return_last_row: bool = False):
    """Causal single-head attention at every position, scale 1.0: h (S, B, L, T).
    With ``return_last_row`` also the last position's attention weights (S, B, L)."""
    S, B, L, T = h.shape
    hf = h.reshape(S, B * L, T)
    q = torch.bmm(hf, wq.transpose(1, 2)).view(S, B, L, T)
    k = torch.bmm(hf, wk.transpose(1, 2)).view(S, B, L, T)
    v = torch.bmm(hf, wv.transpose(1, 2)).view(S, B, L, T)
    scores = q @ k.transpose(-1, -2)  # (S, B, L, L)
    mask = torch.ones(L, L, dtype=torch.bool, device=h.device).triu(1)
    att = scores.masked_fill(mask, float("-inf")).softmax(-1)
    return (att @ v, att[:, :, -1]) if return_last_row else att @ v


def _flat_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Row numbers into ``table.reshape(-1, T)`` for indices ``idx`` (S, ...) into a table
    (M, T) shared by the seeds, or (S, M, T) per seed (seed s's rows start at s M)."""
    if table.dim() == 3:
        S, M = table.shape[:2]
        return idx + (torch.arange(S, device=idx.device) * M).view(S, *([1] * (idx.dim() - 1)))
    return idx


# ----------------------------------------------------------------------------- transformer
def transformer_reference(p: Params, tokens: torch.Tensor, return_attention: bool = False):
    """The naive oracle: full causal attention over every position (as the paper's code).

    Args:
        p: seed-batched parameters of ``"transformer"`` or ``"transformer2"``.
        tokens: (S, B, N+1, T) dense tokens, the target last.
        return_attention: also return the last position's attention weights in the
            layer that feeds the readout (layer 2 of ``"transformer2"``), split as in
            :func:`transformer_fast`: (p_ctx (S, B, N), p_tgt (S, B)).

    Returns:
        logits (S, B) [, (p_ctx, p_tgt)].
    """
    h = F.layer_norm(tokens, tokens.shape[-1:], eps=LN_EPS) * p["ln_w"][:, None, None] + p["ln_b"][:, None, None]
    sa, last = _full_attention(h, p["wq"], p["wk"], p["wv"], return_last_row=True)
    if "wq2" not in p:  # one layer
        z = h[:, :, -1] + sa[:, :, -1]
    else:
        S, B, L, T = h.shape
        r = h + sa
        r2 = r + mlp(p, r.reshape(S, B * L, T), prefix="mid_").view(S, B, L, T)
        sa2, last = _full_attention(r2, p["wq2"], p["wk2"], p["wv2"], return_last_row=True)
        z = r2[:, :, -1] + sa2[:, :, -1]
    logit = mlp(p, z)[..., 0]
    if return_attention:
        return logit, (last[..., :-1], last[..., -1])
    return logit


def transformer_fast(p: Params, n_ctx: torch.Tensor, n_tgt: torch.Tensor, ctx: torch.Tensor,
                     tgt: torch.Tensor, return_attention: bool = False, buffer: torch.Tensor | None = None):
    """One-layer transformer, last-token path only (see module docstring).

    Args:
        p: seed-batched ``"transformer"`` parameters (S seeds).
        n_ctx, n_tgt: normalized context / target token tables, (M, T) shared by all
            seeds or (S, M, T) per seed (:func:`normalize_tokens` of the token tables).
        ctx: (S, B, N) int64 context indices into the tables; tgt: (S, B) target indices.
        return_attention: also return the attention weights (p_ctx (S, B, N), p_tgt (S, B)).
        buffer: optional scratch tensor (>= S*B*N*T elements) reused for the gathered
            tokens; it must not be overwritten before the backward pass.

    Returns:
        logits (S, B) [, (p_ctx, p_tgt)].
    """
    from icl_kinetics.simulate.kernels import gather_attention

    S, B, N = ctx.shape
    T = n_ctx.shape[-1]
    ci, ti = _flat_rows(n_ctx, ctx), _flat_rows(n_tgt, tgt)  # rows of the (flattened) tables
    ct, tt = n_ctx.reshape(-1, T), n_tgt.reshape(-1, T)
    nt = tt.index_select(0, ti.reshape(-1)).view(S, B, T)
    g, b = p["ln_w"].unsqueeze(1), p["ln_b"].unsqueeze(1)  # (S, 1, T)
    ht = g * nt + b  # (S, B, T)
    q = torch.bmm(ht, p["wq"].transpose(1, 2))
    a = g * torch.bmm(q, p["wk"])  # (S, B, T): g * (Wk^T q)
    # softmax over the N context tokens and the target, and the weighted token mean
    # (kernels.py: one fused pass per direction over each sequence's rows)
    att, mbar = gather_attention(a.reshape(S * B, T), ct, tt, ci.reshape(S * B, N), ti.reshape(S * B), buffer=buffer)
    sa = torch.bmm(g * mbar.view(S, B, T) + b, p["wv"].transpose(1, 2))
    p_ctx, p_tgt = att.view(S, B, N + 1)[..., :N], att.view(S, B, N + 1)[..., N:]
    logit = mlp(p, ht + sa)[..., 0]
    if return_attention:
        return logit, (p_ctx, p_tgt[..., 0])
    return logit


# ----------------------------------------------------------------------------- ablations (rung 2.5)
def _check_tokens(tokens) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4 or tokens.shape[2] < 2:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ParameterError("tokens", shape, "a tensor (S, B, N+1, T) with N >= 1 context tokens, the target last")


def _layer_norm(p: Params, tokens: torch.Tensor) -> torch.Tensor:
    """LayerNorm with the seed's affine part g, b: (S, B, L, T)."""
    return normalize_tokens(tokens) * p["ln_w"][:, None, None] + p["ln_b"][:, None, None]


def _qk_scores(p: Params, h: torch.Tensor) -> torch.Tensor:
    """The target's attention logits q_t . k_j (scale 1.0) against every token j of h (S, B, L, T),
    the target included: (S, B, L).  With a = Wk^T q_t, q_t . k_j = a . h_j."""
    a = torch.bmm(torch.bmm(h[:, :, -1], p["wq"].transpose(1, 2)), p["wk"])  # (S, B, T)
    return (h @ a.unsqueeze(-1)).squeeze(-1)


def _attend(p: Params, h: torch.Tensor, scores: torch.Tensor):
    """Softmax over the N context tokens and the target, and the value read out at the target:
    sa = Wv sum_j p_j h_j (S, B, T), and the weights p (S, B, L)."""
    att = scores.softmax(-1)
    mbar = (att.unsqueeze(-2) @ h).squeeze(-2)
    return torch.bmm(mbar, p["wv"].transpose(1, 2)), att


def _split_attention(logit, att, return_attention: bool):
    if return_attention:
        return logit, (att[..., :-1], att[..., -1])
    return logit


def transformer_itemblind(p: Params, tokens: torch.Tensor, D: int, return_attention: bool = False):
    """``"transformer_itemblind"``: the transformer with an item-blind head.

    The target's attention logits are ``beta * x_t . x_j``, the overlap of the raw item parts
    (the first D dims of the tokens, before LayerNorm; the target's with itself included,
    ``|x_t|^2``), with one learned scalar beta per seed (1/overlap units): no Wq, Wk.  Value
    path, LayerNorm, residual and MLP are the transformer's:
    ``logit = MLP(h_t + Wv sum_j p_j h_j)``, h = LN(tokens).

    Args:
        p: seed-batched parameters (``ln_w``, ``ln_b``, ``wv``, ``beta`` (S,), the MLP).
        tokens: (S, B, N+1, T) dense tokens, the target last (its label slot zero).
        D: item dimension, 1 <= D < T.
        return_attention: also return the target's attention weights (p_ctx (S, B, N), p_tgt (S, B)).

    Returns:
        logits (S, B) [, (p_ctx, p_tgt)].
    """
    _check_tokens(tokens)
    T = tokens.shape[-1]
    if isinstance(D, bool) or not isinstance(D, int) or not 1 <= D < T:
        raise ParameterError("D", D, f"an integer in [1, T - 1 = {T - 1}] (the item part of a token of width T = {T})")
    S = tokens.shape[0]
    x = tokens[..., :D]
    overlap = (x @ x[:, :, -1].unsqueeze(-1)).squeeze(-1)  # (S, B, L): x_t . x_j, j = target included
    h = _layer_norm(p, tokens)
    sa, att = _attend(p, h, p["beta"].view(S, 1, 1) * overlap)
    return _split_attention(mlp(p, h[:, :, -1] + sa)[..., 0], att, return_attention)


def transformer_split(p: Params, tokens: torch.Tensor, return_attention: bool = False):
    """``"transformer_split"``: additive in-context and in-weights pathways.

    The transformer's attention as it is (h = LN(tokens), q, k, v, scale 1.0), but the MLP
    reads the target alone and the attention output reaches the logit through its own
    linear readout u (T,): ``logit = MLP(h_t) + u . (Wv sum_j p_j h_j)``.

    Args:
        p: seed-batched parameters (``ln_w``, ``ln_b``, ``wq``, ``wk``, ``wv``, ``u`` (S, T), the MLP).
        tokens: (S, B, N+1, T) dense tokens, the target last.
        return_attention: also return (p_ctx (S, B, N), p_tgt (S, B)).

    Returns:
        logits (S, B) [, (p_ctx, p_tgt)].
    """
    _check_tokens(tokens)
    h = _layer_norm(p, tokens)
    sa, att = _attend(p, h, _qk_scores(p, h))
    ht = h[:, :, -1]
    logit = mlp(p, ht)[..., 0] + (sa * p["u"].unsqueeze(1)).sum(-1)
    return _split_attention(logit, att, return_attention)


def transformer_noln(p: Params, tokens: torch.Tensor, return_attention: bool = False):
    """``"transformer_noln"``: the transformer without LayerNorm: the raw tokens x go into q, k,
    v and into the residual, ``logit = MLP(x_t + Wv sum_j p_j x_j)``, p_j = softmax_j(q_t . k_j).

    Args:
        p: seed-batched parameters (``wq``, ``wk``, ``wv``, the MLP; no ``ln_w``, ``ln_b``).
        tokens: (S, B, N+1, T) dense tokens, the target last.
        return_attention: also return (p_ctx (S, B, N), p_tgt (S, B)).

    Returns:
        logits (S, B) [, (p_ctx, p_tgt)].
    """
    _check_tokens(tokens)
    sa, att = _attend(p, tokens, _qk_scores(p, tokens))
    return _split_attention(mlp(p, tokens[:, :, -1] + sa)[..., 0], att, return_attention)


# ----------------------------------------------------------------------------- minimal / mlp
def minimal_forward(p: Params, items: torch.Tensor, labels: torch.Tensor, ctx: torch.Tensor,
                    tgt: torch.Tensor, return_attention: bool = False):
    """The minimal model: ``phi(x_t) + w * sum_j softmax_j(beta x_t . x_j) l_j``.

    items (M, D) or (S, M, D); labels (M,) or (S, M); ctx (S, B, N); tgt (S, B).
    The softmax includes the target itself (overlap |x_t|^2, label 0).
    """
    S, B, N = ctx.shape
    if items.dim() == 2:
        X, xt, lab = items[ctx], items[tgt], labels[ctx]
    else:
        ar = torch.arange(S, device=ctx.device)
        X, xt, lab = items[ar[:, None, None], ctx], items[ar[:, None], tgt], labels[ar[:, None, None], ctx]
    D = xt.shape[-1]
    s_ctx = torch.bmm(X.view(S * B, N, D), xt.reshape(S * B, D, 1)).view(S, B, N)
    s_tgt = (xt * xt).sum(-1, keepdim=True)
    beta = p["beta"].view(S, 1, 1)
    att = (beta * torch.cat([s_ctx, s_tgt], -1)).softmax(-1)
    m = (att[..., :N] * lab).sum(-1)
    logit = p["w"].view(S, 1) * m
    if "W1" in p:
        logit = logit + mlp(p, xt)[..., 0]
    if return_attention:
        return logit, (att[..., :N], att[..., N])
    return logit


def mlp_forward(p: Params, x: torch.Tensor) -> torch.Tensor:
    """The standalone MLP phi on items x (S, B, D) -> logits (S, B)."""
    return mlp(p, x)[..., 0]


def param_groups(params: Params) -> tuple[list[str], list[str]]:
    """Names in the attention group and in the MLP group (for per-group weight decay)."""
    att = [k for k in params if k in ATTENTION_PARAMS]
    return att, [k for k in params if k not in ATTENTION_PARAMS]


def n_params(params: Params) -> int:
    """Parameters per seed."""
    return sum(v[0].numel() for v in params.values())
