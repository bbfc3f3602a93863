"""The fused gather-attention kernel (simulate/gather_attention.cpp) against its torch
reference (simulate/kernels.py) and against finite differences; the fallback when it
cannot be built; and the transformer's fast path with it against the full-attention
oracle."""

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
    monkeypatch.setattr(kn, "_SOURCE", broken)
    monkeypatch.setattr(kn, "_STATE", {"ext": None, "error": None, "warned": False})
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv(kn.KERNEL_ENV, "auto")
    p, m = kn.gather_attention(a, ct, tt, ci, ti)
    pr, mr = kn.gather_attention_reference(a, ct, tt, ci, ti)
    assert torch.equal(p, pr) and torch.equal(m, mr)
    kn.gather_attention(a, ct, tt, ci, ti)
    assert capsys.readouterr().err.count("not available") == 1
    monkeypatch.setenv(kn.KERNEL_ENV, "cpp")
    with pytest.raises(RuntimeError, match="cannot be built"):
        kn.extension()


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
