"""The fused MLP step (models.SGDStep): the readout MLP's SGD update done in its own backward
pass, against the reference it replaces (autograd's gradients, then group._sgd_update)."""

import pytest
import torch

from icl_kinetics.simulate import models as mm
from icl_kinetics.simulate.engine import TrainConfig, _build, train
from icl_kinetics.simulate.group import _Group, _sgd_update

S, n, T, W = 5, 12, 7, 16


def _params(dtype):
    g = torch.Generator().manual_seed(3)
    p = {"wq": torch.randn(S, T, T, generator=g), "W1": torch.randn(S, T, W, generator=g) / T ** 0.5,
         "b1": torch.randn(S, W, generator=g) * 0.1, "W2": torch.randn(S, W, W, generator=g) / W ** 0.5,
         "b2": torch.randn(S, W, generator=g) * 0.1, "W3": torch.randn(S, W, 1, generator=g) / W ** 0.5,
         "b3": torch.randn(S, 1, generator=g) * 0.1}
    return {k: v.to(dtype).requires_grad_(True) for k, v in p.items()}


def _loss(p, x, y):
    # a parameter outside the MLP in front of it (as the transformer's q/k/v are), so the MLP's
    # input gradient is needed and checked through wq's update
    h = torch.tanh(torch.bmm(x, p["wq"]))
    return torch.nn.functional.softplus(-y * mm.mlp(p, h)[..., 0]).mean(1).sum()


# three runs packed in one group, with their own lr and weight decays, as in grid batching
SEGS = [(0, 2, 0.3, 0.0, 0.0), (2, 3, 0.1, 0.02, 0.05), (3, 5, 0.05, 0.0, 0.1)]


def _step(fused, dtype):
    p = _params(dtype)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(S, n, T, generator=g).to(dtype)
    y = (torch.randint(0, 2, (S, n), generator=g) * 2 - 1).to(dtype)
    if fused:
        q = mm.SGDStep(p, [(a, b, lr, wdm) for a, b, lr, _, wdm in SEGS])
        names = [k for k in p if k not in mm.FUSED_PARAMS]
        grads = torch.autograd.grad(_loss(q, x, y), [p[k] for k in names])
    else:
        names = list(p)
        grads = torch.autograd.grad(_loss(p, x, y), [p[k] for k in names])
    _sgd_update(p, dict(zip(names, grads)), SEGS, ("wq",))
    return {k: v.detach() for k, v in p.items()}


def test_the_fused_step_updates_every_parameter_as_autograd_and_sgd_do_in_float64():
    """Every parameter after one step, each seed with its run's lr and weight decay: equal to
    the autograd reference to 1e-12 in float64 (the products are the same; only the order of
    rounding in the update differs), and to float32 rounding (1e-5 relative) in float32."""
    a, b = _step(True, torch.float64), _step(False, torch.float64)
    start = {k: v.detach() for k, v in _params(torch.float64).items()}
    for k in a:
        assert (a[k] - start[k]).abs().max() > 1e-6, k  # every parameter moved
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-12, msg=k)
    a, b = _step(True, torch.float32), _step(False, torch.float32)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_without_an_sgd_step_dict_or_without_grad_the_mlp_is_the_plain_one():
    """mlp() takes the fused path only for an SGDStep dict with grad enabled; evaluation
    (no_grad) and a plain dict give the same logits, and the parameters do not move."""
    p = _params(torch.float64)
    x = torch.randn(S, n, T, dtype=torch.float64)
    q = mm.SGDStep(p, [(0, S, 0.5, 0.0)])
    with torch.no_grad():
        ref = mm.mlp(p, x)
        assert torch.equal(mm.mlp(q, x), ref)
    out = mm.mlp(q, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)
    assert out.grad_fn is not None and type(out.grad_fn).__name__.startswith("_MLPSGD")


@pytest.mark.parametrize("model", ["transformer", "mlp", "transformer_split"])
def test_a_run_trained_with_the_fused_step_matches_the_reference_engine(model):
    """A tiny run with the fused step against the same run through autograd and _sgd_update
    (group._Group.fused_mlp = False): every logged metric equal to within 1e-3 (relative,
    or absolute below 1), with weight decay on the MLP.  The two differ by float32 rounding in
    the update (about 1e-7 per step), which 120 steps of training amplify to at most a few
    1e-4 in the fitted effective beta; a wrong gradient or update is off by far more."""
    kw = dict(model=model, K=64, width=32, iterations=120, eval_every=40, seeds=2, lr=0.05, wd_mlp=1e-3,
              eval_size=100)
    if model != "mlp":
        kw["N"] = 5
    rows = {}
    try:
        for fused in (True, False):
            _Group.fused_mlp = fused
            rows[fused] = train(TrainConfig(**kw), progress=False).rows
    finally:
        _Group.fused_mlp = True
    assert len(rows[True]) == len(rows[False]) > 0
    for r, s in zip(rows[True], rows[False]):
        for k, v in r.items():
            if isinstance(v, float) and v == v:
                assert abs(v - s[k]) <= 1e-3 * max(1.0, abs(s[k])), (k, v, s[k])


@pytest.mark.parametrize("model,kw", [
    ("transformer", dict(N=5)), ("transformer2", dict(N=5)), ("transformer_itemblind", dict(N=5)),
    ("transformer_split", dict(N=5)), ("transformer_noln", dict(N=5)), ("minimal", dict(N=5, D=16)),
    ("mlp", dict()),
])
def test_one_engine_step_moves_every_parameter_as_the_reference_does(model, kw):
    """Three steps of an engine group, fused against the reference (autograd and _sgd_update
    for every parameter), two packed runs with their own lr and wd_mlp: every parameter of
    every model kind equal to float32 rounding (1e-5 relative), and every MLP weight moved.
    (The minimal model's MLP reads the raw items, which depend on no other parameter: a
    fused step that autograd never ran would leave its MLP unchanged.)"""
    cfg = TrainConfig(model=model, K=64, width=16, seeds=2, lr=0.1, wd_mlp=0.01, eval_size=50, workers=1, **kw)
    out = {}
    try:
        for fused in (True, False):
            _Group.fused_mlp = fused
            g = _build(cfg, torch.device("cpu"))[0]
            start = {k: v.detach().clone() for k, v in g.p.items()}
            for _ in range(3):
                g.step()
            out[fused] = {k: v.detach().clone() for k, v in g.p.items()}
    finally:
        _Group.fused_mlp = True
    assert set(out[True]) == set(out[False]) and "W2" in out[True]
    for k in out[True]:
        torch.testing.assert_close(out[True][k], out[False][k], rtol=1e-5, atol=1e-6, msg=k)
    for k in mm.MLP_PARAMS:
        assert (out[True][k] - start[k]).abs().max() > 1e-5, k
