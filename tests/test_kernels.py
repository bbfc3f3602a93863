"""The engine's compiled CPU kernels against their torch references: the fused
gather-attention kernel (simulate/gather_attention.cpp) against kernels.py's reference and
finite differences, and the transformer's fast path with it against the full-attention
oracle; the readout MLP's passes (simulate/mlp_step.cpp) against models._MLPSGD's torch
code; the fallback when they cannot be built, and the build's locks."""

import math

import pytest
import torch

from icl_kinetics.errors import ParameterError
from icl_kinetics.simulate import kernels as kn
from icl_kinetics.simulate import models as mm


def _inputs(dtype, R=37, N=11, D=9, Mc=50, Mt=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (2 * torch.randn(R, D, generator=g, dtype=dtype)).requires_grad_(True)
    ct = torch.randn(Mc, D, generator=g, dtype=dtype)
    tt = torch.randn(Mt, D, generator=g, dtype=dtype)
    ci = torch.randint(0, Mc, (R, N), generator=g)
    ti = torch.randint(0, Mt, (R,), generator=g)
    return a, ct, tt, ci, ti


def _fused_available():
    assert kn.extension() is not None, f"the fused kernel did not build: {kn._STATE['error']}"


def test_fused_kernel_matches_the_reference_in_float64_values_and_gradients():
    _fused_available()
    for seed, shape in enumerate([dict(), dict(R=5, N=1, D=3), dict(R=64, N=99, D=65, Mc=2000, Mt=2000)]):
        a, ct, tt, ci, ti = _inputs(torch.float64, seed=seed, **shape)
        pf, mf = kn.gather_attention(a, ct, tt, ci, ti)
        pr, mr = kn.gather_attention_reference(a, ct, tt, ci, ti)
        assert torch.allclose(pf.sum(-1), torch.ones(len(pf), dtype=torch.float64), atol=1e-14)
        assert (pf - pr).abs().max() < 1e-12 and (mf - mr).abs().max() < 1e-12
        # a loss that uses both outputs, so both incoming gradients are nonzero
        g = torch.Generator().manual_seed(100 + seed)
        wp, wm = torch.randn(pf.shape, generator=g, dtype=torch.float64), torch.randn(mf.shape, generator=g,
                                                                                        dtype=torch.float64)
        (gf,) = torch.autograd.grad((pf * wp).sum() + (mf * wm).sum(), a)
        (gr,) = torch.autograd.grad((pr * wp).sum() + (mr * wm).sum(), a)
        assert (gf - gr).abs().max() < 1e-12 * max(1.0, gr.abs().max().item())


def test_fused_kernel_gradient_against_finite_differences():
    _fused_available()
    a, ct, tt, ci, ti = _inputs(torch.float64, R=6, N=5, D=4)
    assert torch.autograd.gradcheck(lambda x: kn.gather_attention(x, ct, tt, ci, ti), (a,), eps=1e-6, atol=1e-8)


def test_fused_kernel_in_float32_agrees_with_the_reference_to_rounding():
    _fused_available()
    a, ct, tt, ci, ti = _inputs(torch.float32, R=256, N=99, D=65, Mc=5000, Mt=5000)
    pf, mf = kn.gather_attention(a, ct, tt, ci, ti)
    pr, mr = kn.gather_attention_reference(a, ct, tt, ci, ti)
    assert (pf - pr).abs().max() < 1e-5 and (mf - mr).abs().max() < 1e-5 * mr.abs().max()


def test_fused_kernel_refuses_an_index_out_of_range():
    _fused_available()
    a, ct, tt, ci, ti = _inputs(torch.float64)
    bad = ci.clone()
    bad[3, 2] = ct.shape[0]
    with pytest.raises(RuntimeError, match="ctx_idx out of range"):
        kn.gather_attention(a, ct, tt, bad, ti)
    with pytest.raises(RuntimeError, match="tgt_idx out of range"):
        kn.gather_attention(a, ct, tt, ci, ti - 1 - ti.max())


def test_kernel_choice_by_environment_and_the_fallback_when_it_cannot_build(monkeypatch, tmp_path, capsys):
    a, ct, tt, ci, ti = _inputs(torch.float64)
    monkeypatch.setenv(kn.KERNEL_ENV, "torch")
    assert kn.extension() is None
    monkeypatch.setenv(kn.KERNEL_ENV, "fast")
    with pytest.raises(ParameterError, match="ICL_KINETICS_KERNEL"):
        kn.extension()
    # a kernel that does not compile: "auto" warns once and uses the reference, "cpp" refuses
    broken = tmp_path / "gather_attention.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(kn, "_SOURCES", (broken,))
    monkeypatch.setattr(kn, "_STATE", {"ext": None, "error": None, "warned": False})
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv(kn.KERNEL_ENV, "auto")
    p, m = kn.gather_attention(a, ct, tt, ci, ti)
    pr, mr = kn.gather_attention_reference(a, ct, tt, ci, ti)
    assert torch.equal(p, pr) and torch.equal(m, mr)
    kn.gather_attention(a, ct, tt, ci, ti)
    # the MLP's passes fall back too (the torch code of models._MLPSGD), with no second warning
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    assert kn.mlp_ops(x) is None
    q = mm.SGDStep({k: v.requires_grad_(True) for k, v in _mlp_params(torch.float64, 2, 4, 5).items()},
                   [(0, 2, 0.1, 0.0)])
    out = mm.mlp(q, x)
    assert out.shape == (2, 3, 1) and type(out.grad_fn).__name__.startswith("_MLPSGD")
    assert capsys.readouterr().err.count("not available") == 1
    monkeypatch.setenv(kn.KERNEL_ENV, "cpp")
    with pytest.raises(RuntimeError, match="cannot be built"):
        kn.extension()


def _mlp_params(dtype, S, T, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"W1": torch.randn(S, T, W, generator=g, dtype=dtype) / T ** 0.5,
            "b1": 0.3 * torch.randn(S, W, generator=g, dtype=dtype),
            "W2": torch.randn(S, W, W, generator=g, dtype=dtype) / W ** 0.5,
            "b2": 0.3 * torch.randn(S, W, generator=g, dtype=dtype),
            "W3": torch.randn(S, W, 1, generator=g, dtype=dtype) / W ** 0.5,
            "b3": torch.randn(S, 1, generator=g, dtype=dtype)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("S,R,W", [(3, 5, 37), (2, 128, 512), (1, 1, 1)])
def test_the_mlp_kernels_match_their_torch_reference(dtype, S, R, W):
    """Each of mlp_step.cpp's passes against the torch operations it replaces (models._MLPSGD's
    reference code): float64 to 1e-12 relative (the sums run in another order), float32 to
    rounding (1e-5 relative); the masks exactly.  Widths that fill vector lanes evenly (512)
    and that do not (1, 37)."""
    _fused_available()
    ext = kn.mlp_ops(torch.zeros(1, dtype=dtype))
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    g = torch.Generator().manual_seed(S * R * W)
    a = torch.randn(S, R, W, generator=g, dtype=dtype)
    b, w3, b3 = (torch.randn(S, W, generator=g, dtype=dtype), torch.randn(S, W, 1, generator=g, dtype=dtype),
                 torch.randn(S, 1, generator=g, dtype=dtype))
    h = a.clone()
    ext.mlp_bias_relu_(h, b)
    ref_h = (a + b.unsqueeze(1)).relu()
    torch.testing.assert_close(h, ref_h, **tol)
    h = a.clone()
    out = ext.mlp_readout_forward_(h, b, w3, b3)
    torch.testing.assert_close(h, ref_h, **tol)
    torch.testing.assert_close(out, (ref_h * w3.transpose(1, 2)).sum(-1, keepdim=True) + b3.unsqueeze(1), **tol)
    gout = torch.randn(S, R, 1, generator=g, dtype=dtype)
    ga, gw3, gb = ext.mlp_readout_backward(gout, ref_h, w3)
    ref_ga = torch.ops.aten.threshold_backward(gout * w3.transpose(1, 2), ref_h, 0)
    assert torch.equal(ga == 0, ref_ga == 0)
    torch.testing.assert_close(ga, ref_ga, **tol)
    torch.testing.assert_close(gw3, (gout * ref_h).sum(1, keepdim=True).transpose(1, 2), **tol)
    torch.testing.assert_close(gb, ref_ga.sum(1), **tol)
    gh = torch.randn(S, R, W, generator=g, dtype=dtype)
    ref = torch.ops.aten.threshold_backward(gh, ref_h, 0)
    gb = ext.mlp_relu_backward_(gh, ref_h)
    torch.testing.assert_close(gh, ref, **tol)
    torch.testing.assert_close(gb, ref.sum(1), **tol)


def test_the_mlp_kernels_pass_nan_through_as_torch_does_and_check_their_inputs():
    """A NaN pre-activation stays NaN after the ReLU (torch.relu) and its mask passes the
    gradient (threshold_backward), so a diverging run still reports a non-finite loss; a
    tensor of the wrong shape or layout is refused, not read out of bounds."""
    _fused_available()
    ext = kn.mlp_ops(torch.zeros(1))
    h = torch.tensor([[[float("nan"), -1.0, 2.0]]])
    out = ext.mlp_readout_forward_(h, torch.zeros(1, 3), torch.ones(1, 3, 1), torch.zeros(1, 1))
    assert torch.isnan(h[0, 0, 0]) and h[0, 0, 1] == 0 and torch.isnan(out).all()
    gh = torch.ones(1, 1, 3)
    ext.mlp_relu_backward_(gh, torch.tensor([[[float("nan"), -1.0, 2.0]]]))
    assert gh.tolist() == [[[1.0, 0.0, 1.0]]]
    ga, gw3, gb = ext.mlp_readout_backward(torch.full((1, 1, 1), 2.0), torch.tensor([[[float("nan"), -1.0, 2.0]]]),
                                           torch.full((1, 3, 1), 3.0))
    assert ga.tolist() == [[[6.0, 0.0, 6.0]]] and gb.tolist() == [[6.0, 0.0, 6.0]]
    assert torch.isnan(gw3[0, 0, 0]) and gw3[0, 1:, 0].tolist() == [-2.0, 4.0]
    with pytest.raises(RuntimeError, match="b must be"):
        ext.mlp_bias_relu_(torch.zeros(2, 3, 4), torch.zeros(2, 5))
    with pytest.raises(RuntimeError, match="h must be"):
        ext.mlp_bias_relu_(torch.zeros(2, 4, 3).transpose(1, 2), torch.zeros(2, 4))
    with pytest.raises(RuntimeError, match="w3 must be"):
        ext.mlp_readout_backward(torch.zeros(2, 3, 1), torch.zeros(2, 3, 4), torch.zeros(2, 4, 1).double())
    with pytest.raises(RuntimeError, match="g must be"):
        ext.mlp_readout_backward(torch.zeros(2, 4, 1), torch.zeros(2, 3, 4), torch.zeros(2, 4, 1))
    with pytest.raises(RuntimeError, match="b3 must be"):
        ext.mlp_readout_forward_(torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.zeros(2, 4, 1), torch.zeros(2, 1).double())
    with pytest.raises(RuntimeError, match="gh must be like h"):
        ext.mlp_relu_backward_(torch.zeros(2, 3, 5), torch.zeros(2, 3, 4))


def test_a_seed_gets_the_same_bits_from_the_mlp_kernels_alone_as_among_other_seeds():
    """Grid batching needs a seed's numbers not to depend on the seeds it shares a call with:
    each of the four passes on 5 seeds against each seed alone, bit for bit (float32)."""
    _fused_available()
    ext = kn.mlp_ops(torch.zeros(1))
    g = torch.Generator().manual_seed(11)
    S, R, W = 5, 17, 45
    a, b = torch.randn(S, R, W, generator=g), torch.randn(S, W, generator=g)
    w3, b3, gout = torch.randn(S, W, 1, generator=g), torch.randn(S, 1, generator=g), torch.randn(S, R, 1, generator=g)
    gh = torch.randn(S, R, W, generator=g)

    def passes(sl):
        h1, h2, g1 = a[sl].clone(), a[sl].clone(), gh[sl].clone()
        ext.mlp_bias_relu_(h1, b[sl].contiguous())
        out = ext.mlp_readout_forward_(h2, b[sl].contiguous(), w3[sl].contiguous(), b3[sl].contiguous())
        back = ext.mlp_readout_backward(gout[sl].contiguous(), h2, w3[sl].contiguous())
        gb1 = ext.mlp_relu_backward_(g1, h2)
        return [h1, out, h2, *back, g1, gb1]

    together = passes(slice(None))
    for s in range(S):
        alone = passes(slice(s, s + 1))
        assert all(torch.equal(x[s:s + 1], y) for x, y in zip(together, alone)), s


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_fused_mlp_step_with_the_kernels_matches_its_torch_code(dtype, monkeypatch):
    """models._MLPSGD forward, backward and in-place update with mlp_step.cpp against the same
    step with ICL_KINETICS_KERNEL=torch: float64 to 1e-12, float32 to rounding."""
    _fused_available()
    S, R, T, W = 4, 33, 9, 40
    x0 = torch.randn(S, R, T, generator=torch.Generator().manual_seed(1), dtype=dtype)
    res = {}
    for mode in ("cpp", "torch"):
        monkeypatch.setenv(kn.KERNEL_ENV, mode)
        p = {k: v.requires_grad_(True) for k, v in _mlp_params(dtype, S, T, W, seed=2).items()}
        x = x0.clone().requires_grad_(True)
        q = mm.SGDStep(p, [(0, 1, 0.3, 0.0), (1, S, 0.1, 0.05)])
        out = mm.mlp(q, x)
        loss = torch.nn.functional.softplus(-out).sum()
        grads = torch.autograd.grad(loss, [x, p["b1"], p["b2"], p["W3"], p["b3"]])
        res[mode] = [out.detach(), *grads, p["W1"].detach(), p["W2"].detach()]
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for u, v in zip(res["cpp"], res["torch"]):
        torch.testing.assert_close(u, v, **tol)
    assert (res["cpp"][-1] - _mlp_params(dtype, S, T, W, seed=2)["W2"]).abs().max() > 1e-4  # the step moved W2


@pytest.mark.parametrize("per_seed", [False, True])
def test_transformer_fast_with_the_kernel_matches_the_full_attention_oracle(per_seed):
    """float64, 1e-12: logits, attention weights and every parameter gradient, with token
    tables shared by the seeds or one per seed."""
    _fused_available()
    S, B, N, K, D = 3, 6, 13, 40, 7
    cfg = mm.ModelConfig(token_dim=D + 2, D=D, width=16)
    p = mm.stack_params([mm.init_params(cfg, torch.Generator().manual_seed(i)) for i in range(S)],
                        dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    p["ln_w"] = 1 + 0.5 * torch.randn(p["ln_w"].shape, generator=g, dtype=torch.float64)
    p["ln_b"] = 0.3 * torch.randn(p["ln_b"].shape, generator=g, dtype=torch.float64)
    for v in p.values():
        v.requires_grad_(True)
    shape = (S, K, D) if per_seed else (K, D)
    items = torch.randn(*shape, generator=g, dtype=torch.float64) / math.sqrt(D)
    lab = torch.randint(0, 2, shape[:-1], generator=g).double() * 2 - 1
    ct = torch.cat([items, torch.stack([(lab < 0).double(), (lab > 0).double()], -1)], -1)
    tt = torch.cat([items, torch.zeros(*shape[:-1], 2, dtype=torch.float64)], -1)
    ctx = torch.randint(0, K, (S, B, N), generator=g)
    tgt = ctx[:, :, 2]
    ar = torch.arange(S)[:, None]
    if per_seed:
        tok = torch.cat([ct[ar[..., None], ctx], tt[ar, tgt].unsqueeze(2)], 2)
    else:
        tok = torch.cat([ct[ctx], tt[tgt].unsqueeze(2)], 2)
    ref, (rc, rt) = mm.transformer_reference(p, tok, return_attention=True)
    fast, (fc, ft) = mm.transformer_fast(p, mm.normalize_tokens(ct), mm.normalize_tokens(tt), ctx, tgt,
                                         return_attention=True)
    assert (ref - fast).abs().max() < 1e-12 and (rc - fc).abs().max() < 1e-12 and (rt - ft).abs().max() < 1e-12
    gr = torch.autograd.grad(ref.sum(), list(p.values()))
    gf = torch.autograd.grad(fast.sum(), list(p.values()))
    assert max((x - y).abs().max().item() for x, y in zip(gr, gf)) < 1e-12


def _cached_build(tmp_path):
    """A copy of this machine's kernel build folder (sources' objects, ninja file and
    module, modification times kept, so nothing is recompiled) under ``tmp_path``:
    (name, folder), without the built marker."""
    import shutil
    from pathlib import Path

    _fused_available()
    mod = kn._STATE["ext"]
    name = mod.__name__
    build = tmp_path / name
    shutil.copytree(Path(mod.__file__).parent, build,
                    ignore=shutil.ignore_patterns("lock", "icl_kinetics.lock", kn.BUILT_MARKER + "*"))
    return name, build


_HOLD_AND_DIE = """
import fcntl, os, signal, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[2], "w").write("")  # torch's baton, as a build killed mid-way leaves it
print("held", flush=True)
time.sleep(float(sys.argv[3]))
"""


_NEXT_PROCESS = """
import sys, time
from pathlib import Path
from icl_kinetics.simulate import kernels as kn
t0 = time.perf_counter()
mod = kn._build_or_load(Path(sys.argv[1]), sys.argv[2])
print(hasattr(mod, "forward"), round(time.perf_counter() - t0, 1))
"""


def test_a_build_killed_while_holding_the_locks_never_blocks_the_next_process(tmp_path):
    import subprocess
    import sys

    name, build = _cached_build(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_AND_DIE, str(build / "icl_kinetics.lock"),
                             str(build / "lock"), "600"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()  # SIGKILL while holding both locks
    proc.wait()
    # the next process (a fresh one, as a sweep's next worker): torch's baton alone would
    # make it wait forever; the build is up to date, so nothing is recompiled
    r = subprocess.run([sys.executable, "-c", _NEXT_PROCESS, str(build), name], capture_output=True, text=True,
                       timeout=300)
    ok, seconds = r.stdout.split()
    assert ok == "True" and float(seconds) < 30, (r.stdout, r.stderr)
    assert "left by an interrupted build" in r.stderr and "compiling" not in r.stderr
    assert (build / kn.BUILT_MARKER).is_file() and not (build / "lock").exists()


def test_a_completed_build_is_imported_without_waiting_for_a_live_lock_holder(tmp_path):
    import subprocess
    import sys
    import time

    name, build = _cached_build(tmp_path)
    (build / kn.BUILT_MARKER).write_text(name)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_AND_DIE, str(build / "icl_kinetics.lock"),
                             str(tmp_path / "unused"), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        mod = kn._build_or_load(build, name)  # a live process holds the lock: no wait on it
        assert time.perf_counter() - t0 < 10 and hasattr(mod, "backward")
    finally:
        proc.kill()
        proc.wait()
