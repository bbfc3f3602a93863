"""Rung 2.5, the transformer's ablations (simulate/models.py): each forward against a
hand-written per-sequence loop (float64, 1e-10), gradients (autograd against finite
differences, and only the parameters each ablation has), the initialization shared with
the transformer, the identities that reduce each ablation to the transformer where it
should, tiny training runs through the engine, and bad input."""

import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from icl_kinetics.errors import ParameterError  # noqa: E402
from icl_kinetics.simulate import models as mm  # noqa: E402
from icl_kinetics.simulate.engine import METRIC_COLUMNS, TrainConfig, train  # noqa: E402

TOL = 1e-10  # float64: the batched forward against the per-sequence loop
S, B, N, D, T, W = 3, 4, 7, 10, 12, 8  # seeds, sequences, context tokens, item dim, token dim, MLP width

PARAMS = {  # the parameters each ablation has (and nothing else)
    "transformer_itemblind": {"ln_w", "ln_b", "wv", "beta", "W1", "b1", "W2", "b2", "W3", "b3"},
    "transformer_split": {"ln_w", "ln_b", "wq", "wk", "wv", "u", "W1", "b1", "W2", "b2", "W3", "b3"},
    "transformer_noln": {"wq", "wk", "wv", "W1", "b1", "W2", "b2", "W3", "b3"},
}


def _forward(kind, p, tokens, attention=False):
    if kind == "transformer_itemblind":
        return mm.transformer_itemblind(p, tokens, tokens.shape[-1] - 2, return_attention=attention)
    return getattr(mm, kind)(p, tokens, return_attention=attention)


def _tokens(gen, s=S, b=B, n=N, d=D):
    """Dense one-hot tokens [x, label] (S, B, N+1, D+2), items N(0, I/D), the target a copy of a
    context item with its label slot zero."""
    x = torch.randn(s, b, n, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    lab = torch.randint(0, 2, (s, b, n), generator=gen)
    onehot = torch.stack([(lab == 0), (lab == 1)], -1).double()
    j = torch.randint(0, n, (s, b), generator=gen)
    xt = x[torch.arange(s)[:, None], torch.arange(b)[None], j]
    ctx = torch.cat([x, onehot], -1)
    tgt = torch.cat([xt, torch.zeros(s, b, 2, dtype=torch.float64)], -1)
    return torch.cat([ctx, tgt.unsqueeze(2)], 2)


def _params(kind, s=S, d=D, width=W, beta0=None, seed=100):
    cfg = mm.ModelConfig(kind=kind, token_dim=d + 2, D=d, width=width, beta0=beta0)
    p = mm.stack_params([mm.init_params(cfg, torch.Generator().manual_seed(seed + i)) for i in range(s)],
                        dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    if "ln_w" in p:  # default init has g = 1, b = 0: perturb so the affine part is exercised
        p["ln_w"] = 1 + 0.5 * torch.randn(p["ln_w"].shape, generator=g, dtype=torch.float64)
        p["ln_b"] = 0.3 * torch.randn(p["ln_b"].shape, generator=g, dtype=torch.float64)
    if "beta" in p:  # a spread of betas of both signs, large enough to make the softmax uneven
        p["beta"] = torch.tensor([3.0, -1.5, 0.7][:s], dtype=torch.float64)
    return p


# ----------------------------------------------------------------------------- the reference loop
def _np(p):
    return {k: v.detach().numpy() for k, v in p.items()}


def _ln_one(x, g, b, eps=mm.LN_EPS):
    mu = sum(x) / len(x)
    var = sum((xi - mu) ** 2 for xi in x) / len(x)
    return (x - mu) / math.sqrt(var + eps) * g + b


def _mlp_one(P, s, z):
    h1 = np.maximum(z @ P["W1"][s] + P["b1"][s], 0.0)
    h2 = np.maximum(h1 @ P["W2"][s] + P["b2"][s], 0.0)
    return float((h2 @ P["W3"][s] + P["b3"][s])[0])


def _reference_one(kind, P, s, seq, d):
    """One sequence (L, T) of seed s, written out token by token: (logit, attention weights (L,))."""
    L = seq.shape[0]
    t = L - 1
    if kind == "transformer_noln":
        H = [seq[j].copy() for j in range(L)]
    else:
        H = [_ln_one(seq[j], P["ln_w"][s], P["ln_b"][s]) for j in range(L)]
    if kind == "transformer_itemblind":
        scores = [P["beta"][s] * sum(seq[t][i] * seq[j][i] for i in range(d)) for j in range(L)]
    else:
        q = P["wq"][s] @ H[t]
        scores = [float(q @ (P["wk"][s] @ H[j])) for j in range(L)]
    top = max(scores)
    e = [math.exp(sc - top) for sc in scores]
    att = np.array([ei / sum(e) for ei in e])
    sa = sum(att[j] * (P["wv"][s] @ H[j]) for j in range(L))
    if kind == "transformer_split":
        logit = _mlp_one(P, s, H[t]) + float(P["u"][s] @ sa)
    else:
        logit = _mlp_one(P, s, H[t] + sa)
    return logit, att


@pytest.mark.parametrize("kind", mm.ABLATIONS)
def test_forward_matches_the_per_sequence_loop(kind):
    tok = _tokens(torch.Generator().manual_seed(1))
    p = _params(kind)
    logit, (p_ctx, p_tgt) = _forward(kind, p, tok, attention=True)
    assert logit.shape == (S, B) and p_ctx.shape == (S, B, N) and p_tgt.shape == (S, B)
    assert torch.equal(logit, _forward(kind, p, tok))  # the attention flag changes nothing
    P, X = _np(p), tok.numpy()
    for s in range(S):
        for b in range(B):
            ref, att = _reference_one(kind, P, s, X[s, b], D)
            assert abs(logit[s, b].item() - ref) < TOL * (1 + abs(ref)), (s, b)
            assert np.abs(p_ctx[s, b].numpy() - att[:N]).max() < TOL
            assert abs(p_tgt[s, b].item() - att[N]) < TOL
    # the attention is not uniform (the check would be blind to the score otherwise)
    assert (p_ctx.max(-1).values - p_ctx.min(-1).values).min().item() > 1e-3


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", mm.ABLATIONS)
def test_gradients_reach_every_parameter_it_has_and_match_finite_differences(kind):
    p = _params(kind, s=2, d=4, width=3)
    assert set(p) == PARAMS[kind]
    if kind == "transformer_itemblind":
        assert not {"wq", "wk"} & set(p)
    names = sorted(p)
    tok = _tokens(torch.Generator().manual_seed(2), s=2, b=3, n=3, d=4)
    y = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]], dtype=torch.float64)

    def loss(*vals):
        q = dict(zip(names, vals))
        return torch.nn.functional.softplus(-y * _forward(kind, q, tok)).mean()

    vals = [p[k].clone().requires_grad_(True) for k in names]
    grads = torch.autograd.grad(loss(*vals), vals)
    for k, g in zip(names, grads):
        assert g.abs().max().item() > 0, k  # every parameter it has is trained
    assert torch.autograd.gradcheck(loss, vals, eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------- initialization
@pytest.mark.parametrize("kind", mm.ABLATIONS)
def test_init_shares_the_transformers_draws_and_draws_its_own_after(kind):
    cfg = mm.ModelConfig(kind=kind, token_dim=T, D=D, width=W)
    tr = mm.init_params(replace(cfg, kind="transformer"), torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    p = mm.init_params(cfg, gen)
    for k in p:
        if k in tr:
            assert torch.equal(p[k], tr[k]), k
        assert p[k].dtype == torch.float32, k
    replay = torch.Generator().manual_seed(5)
    mm.init_params(replace(cfg, kind="transformer"), replay)  # advance past the transformer's draws
    if kind == "transformer_itemblind":
        assert p["beta"].shape == () and p["beta"].item() == torch.randn((), generator=replay).item()
        given = mm.init_params(replace(cfg, beta0=-0.75), torch.Generator().manual_seed(5))
        assert given["beta"].item() == -0.75
    elif kind == "transformer_split":
        bound = 1 / math.sqrt(T)
        assert p["u"].shape == (T,) and p["u"].abs().max().item() <= bound
        assert torch.equal(p["u"], torch.empty(1, T).uniform_(-bound, bound, generator=replay)[0])
    else:
        assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=replay))  # nothing else drawn


def test_beta_and_u_are_in_the_attention_weight_decay_group():
    for kind in mm.ABLATIONS:
        att, rest = mm.param_groups(_params(kind))
        assert set(rest) == {"W1", "b1", "W2", "b2", "W3", "b3"}, kind
        assert set(att) == PARAMS[kind] - set(rest), kind


# ----------------------------------------------------------------------------- identities
def _prenormalized_tokens(gen, s=S, b=B, n=N, t=T):
    """Tokens with mean 0 and variance 1 - eps over their T dims: LayerNorm with g = 1, b = 0
    leaves them unchanged."""
    x = torch.randn(s, b, n + 1, t, generator=gen, dtype=torch.float64)
    x = x - x.mean(-1, keepdim=True)
    return x / x.pow(2).mean(-1, keepdim=True).sqrt() * math.sqrt(1 - mm.LN_EPS)


def _as_transformer(p, **over):
    """A transformer parameter dict from an ablation's (g = 1, b = 0 where it has no LayerNorm)."""
    q = {k: v for k, v in p.items() if k not in ("beta", "u")}
    Sx, Tx = p["wv"].shape[:2]
    q.setdefault("ln_w", torch.ones(Sx, Tx, dtype=torch.float64))
    q.setdefault("ln_b", torch.zeros(Sx, Tx, dtype=torch.float64))
    q.update(over)
    return q


def test_noln_is_the_transformer_where_layernorm_is_the_identity():
    tok = _prenormalized_tokens(torch.Generator().manual_seed(3))
    assert (mm.normalize_tokens(tok) - tok).abs().max().item() < 1e-12
    p = _params("transformer_noln")
    a, (ac, at) = mm.transformer_noln(p, tok, return_attention=True)
    b, (bc, bt) = mm.transformer_reference(_as_transformer(p), tok, return_attention=True)
    assert (a - b).abs().max().item() < TOL and (ac - bc).abs().max().item() < TOL
    # and on ordinary tokens, where LayerNorm acts, they differ
    tok2 = _tokens(torch.Generator().manual_seed(3))
    assert (mm.transformer_noln(p, tok2) - mm.transformer_reference(_as_transformer(p), tok2)).abs().max() > 1e-3


def test_itemblind_is_the_transformer_whose_bilinear_score_is_beta_times_the_item_overlap():
    """With LN the identity (pre-normalized tokens, g = 1, b = 0) and Wq^T Wk = beta * P_D (the
    projection on the item dims), the transformer's score is beta * x_t[:D] . x_j[:D]."""
    tok = _prenormalized_tokens(torch.Generator().manual_seed(4))
    p = _params("transformer_itemblind")
    p["ln_w"] = torch.ones(S, T, dtype=torch.float64)
    p["ln_b"] = torch.zeros(S, T, dtype=torch.float64)
    PD = torch.diag(torch.cat([torch.ones(D), torch.zeros(T - D)])).double()
    r = p["beta"].abs().sqrt()[:, None, None]
    tr = _as_transformer(p, wq=r * PD, wk=torch.sign(p["beta"])[:, None, None] * r * PD)
    a, (ac, _) = mm.transformer_itemblind(p, tok, D, return_attention=True)
    b, (bc, _) = mm.transformer_reference(tr, tok, return_attention=True)
    assert (a - b).abs().max().item() < TOL and (ac - bc).abs().max().item() < TOL
    # the score reads the item dims only: changing the label dims changes no attention weight
    tok2 = tok.clone()
    tok2[..., D:] += 1.0
    assert (mm.transformer_itemblind(p, tok2, D, return_attention=True)[1][0] - ac).abs().max().item() < TOL


def test_split_is_the_transformer_where_the_mlp_is_linear():
    """With every ReLU on (large first- and second-layer biases), MLP(h + sa) = MLP(h) + sa W1 W2 W3:
    the transformer is transformer_split with u = W1 W2 W3."""
    tok = _tokens(torch.Generator().manual_seed(5))
    p = _params("transformer_split")
    p["b1"] = p["b1"] + 20.0
    p["b2"] = p["b2"] + 200.0
    p["u"] = (p["W1"] @ p["W2"] @ p["W3"])[..., 0]
    tr = _as_transformer(p)
    a, (ac, at) = mm.transformer_split(p, tok, return_attention=True)
    h = mm.normalize_tokens(tok) * p["ln_w"][:, None, None] + p["ln_b"][:, None, None]
    att = torch.cat([ac, at.unsqueeze(-1)], -1)
    sa = torch.einsum("sbl,sblt,sut->sbu", att, h, p["wv"])
    for z in (h[:, :, -1], h[:, :, -1] + sa):  # every unit on, for the MLP input of both models
        h1 = torch.baddbmm(p["b1"].unsqueeze(1), z, p["W1"])
        assert h1.min() > 0 and torch.baddbmm(p["b2"].unsqueeze(1), h1, p["W2"]).min() > 0
    b, (bc, _) = mm.transformer_reference(tr, tok, return_attention=True)
    assert (a - b).abs().max().item() < TOL * (1 + b.abs().max().item())
    assert (ac - bc).abs().max().item() < TOL
    # with the default biases the ReLUs cut in and the two models differ
    q = _params("transformer_split")
    q["u"] = (q["W1"] @ q["W2"] @ q["W3"])[..., 0]
    assert (mm.transformer_split(q, tok) - mm.transformer_reference(_as_transformer(q), tok)).abs().max() > 1e-6


# ----------------------------------------------------------------------------- the engine
TINY = dict(N=5, K=64, D=12, width=16, batch_size=16, eval_size=64, iterations=50, eval_every=25, lr=0.1,
            early_stop=None, seeds=2, workers=1)


@pytest.mark.parametrize("kind", mm.ABLATIONS)
def test_tiny_training_run_gives_finite_metrics_with_the_effective_head(kind):
    cfg = TrainConfig(model=kind, **TINY)
    cfg.validate()
    assert cfg.model_config().kind == kind
    res = train(cfg, progress=False)
    assert res.status == ["running", "running"] and res.iterations_done == 50
    assert sorted((r["seed"], r["iteration"]) for r in res.rows) == [(s, i) for s in (0, 1) for i in (0, 25, 50)]
    for r in res.rows:
        for c in METRIC_COLUMNS:
            if c == "train_loss" and r["iteration"] == 0:
                assert math.isnan(r[c])
            else:
                assert math.isfinite(r[c]), (c, r)
    # it trained: the training loss changes from one evaluation to the next
    loss = {(r["seed"], r["iteration"]): r["train_loss"] for r in res.rows}
    assert loss[0, 25] != loss[0, 50] and loss[1, 25] != loss[1, 50]


def test_itemblind_logs_its_beta_as_the_effective_beta_at_start():
    """At iteration 0 the effective beta of the item-blind head is its beta0 up to the large-D
    corrections: beta * |x_t|^2 - log mean_j exp(beta x_t . x_j), with |x_t|^2 = 1 +- sqrt(2/D) and
    the second term's mean within [0, beta^2 / (2 D)] = [0, 0.032] at D = 63.  With 4096 test
    items and 1024 test sequences the standard error is about 0.013, so 0.1 leaves 5 of them
    beside the largest bias."""
    cfg = TrainConfig(model="transformer_itemblind", **{**TINY, "D": 63, "K": 4096, "iterations": 0,
                                                         "eval_size": 1024, "beta0": 2.0})
    rows = train(cfg, progress=False).rows
    assert len(rows) == 2
    for r in rows:
        assert abs(r["beta"] - 2.0) < 0.1, r["beta"]


def test_ablation_seed_alone_equals_seed_in_batch_at_k_infinity():
    """K = inf: each seed's own item table (the dense tokens' per-seed path)."""
    cfg = TrainConfig(model="transformer_split", **{**TINY, "K": None, "iterations": 20, "eval_every": 10,
                                                     "seeds": 3})
    batch = train(cfg, progress=False)
    alone = train(replace(cfg, seeds=1, seed_offset=2, workers=1), progress=False)
    rb = [r for r in batch.rows if r["seed"] == 2]
    assert len(rb) == len(alone.rows) == 3
    for x, y in zip(rb, alone.rows):
        for c in METRIC_COLUMNS:
            if math.isnan(x[c]):
                assert math.isnan(y[c]), c
            else:
                assert abs(x[c] - y[c]) <= 1e-5 * (1 + abs(x[c])), (c, x[c], y[c])


def test_memory_estimate_counts_the_ablations_as_transformers():
    base = TrainConfig(model="transformer", **TINY)
    for kind in mm.ABLATIONS:
        cfg = replace(base, model=kind)
        assert cfg.estimate_bytes()[0] > base.estimate_bytes()[0]  # the dense tokens on top
        # per seed it holds at least four copies of the parameters (store, live, gradient, update)
        one = mm.init_params(cfg.model_config(), torch.Generator().manual_seed(0))
        n = sum(v.numel() for v in one.values())
        assert cfg.estimate_bytes()[0] >= 4 * 4 * n * cfg.seeds


# ----------------------------------------------------------------------------- bad input
def _raises(name, fn):
    with pytest.raises(ParameterError) as e:
        fn()
    assert e.value.name == name and f"{name}=" in str(e.value)
    return e.value


def test_bad_input_is_named():
    p = _params("transformer_itemblind")
    tok = _tokens(torch.Generator().manual_seed(0))
    for bad in (0, T, T + 3, True, 2.0):
        _raises("D", lambda: mm.transformer_itemblind(p, tok, bad))
    for kind in mm.ABLATIONS:
        q = _params(kind)
        _raises("tokens", lambda: _forward(kind, q, tok[0]))  # the seed dimension missing
        _raises("tokens", lambda: _forward(kind, q, tok[:, :, -1:]))  # no context token
    e = _raises("model", lambda: TrainConfig(model="transformer_item_blind").validate())
    assert "transformer_itemblind" in str(e)
    for kind in mm.ABLATIONS:
        _raises("width", lambda: TrainConfig(model=kind, width=0).validate())
        _raises("w0", lambda: TrainConfig(model=kind, w0=0.5).validate())
    _raises("D", lambda: mm.ModelConfig(kind="transformer_itemblind", token_dim=12, D=12).validate())
