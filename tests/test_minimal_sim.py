"""Tests of icl_kinetics.simulate.minimal against independent references.

The oracle for gradients is a naive float64 implementation of the model written here
(D-dim items, full softmax over context + target, torch autograd)."""

import math

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

from icl_kinetics.errors import ParameterError  # noqa: E402
from icl_kinetics.simulate import MinimalConfig, run_minimal  # noqa: E402
from icl_kinetics.simulate import minimal as mm  # noqa: E402


# ------------------------------------------------------------------ naive oracle
def _oracle_loss(x_ctx, lab, x_t, y, w, beta, mlp=None):
    """Naive model: tokens = N context + target (label 0); full softmax; float64."""
    keys = torch.cat([x_ctx, x_t[:, None, :]], dim=1)  # (n, N+1, D)
    labels = torch.cat([lab, torch.zeros_like(lab[:, :1])], dim=1)
    att = torch.softmax(beta * torch.einsum("nd,njd->nj", x_t, keys), dim=1)
    logit = w * (att * labels).sum(1)
    if mlp is not None:
        W1, b1, W2, b2, W3, b3 = mlp
        h = torch.relu(x_t @ W1.T + b1)
        h = torch.relu(h @ W2.T + b2)
        logit = logit + (h @ W3.T)[:, 0] + b3[0]
    return torch.nn.functional.softplus(-y * logit).mean()


def test_general_gradients_match_autograd():
    rng = np.random.default_rng(1)
    n, N, D, h = 7, 5, 6, 4
    X = rng.standard_normal((n, N, D)) / math.sqrt(D)
    xt = X[np.arange(n), rng.integers(0, N, n)]  # target copies a context item
    lab = rng.choice([-1.0, 1.0], (n, N))
    y = rng.choice([-1.0, 1.0], n)
    w, beta = 0.7, 1.3
    Ws = [rng.standard_normal(s) * 0.5 for s in [(h, D), (h,), (h, h), (h,), (1, h), (1,)]]
    # oracle
    tX, txt, tlab, ty = (torch.tensor(a, dtype=torch.float64) for a in (X, xt, lab, y))
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    tm = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in Ws]
    loss = _oracle_loss(tX, tlab, txt, ty, tw, tb, tm)
    loss.backward()
    # module: analytic (w, beta) terms and hand-written MLP backward (float64 inputs, S = 1)
    s = torch.einsum("nd,njd->nj", txt, tX)[None]
    r = (txt * txt).sum(1)[None]
    m, dm = mm._icl_terms(s, tlab[None], r, torch.tensor([beta], dtype=torch.float64), torch)
    params = [torch.tensor(a, dtype=torch.float64)[None] for a in Ws]
    phi, cache = mm._mlp_forward(params, txt[None], torch)
    logit = w * m + phi
    g = -ty * torch.sigmoid(-ty * logit)
    gw = (g * m).mean()
    gb = (g * dm).mean() * w
    grads = mm._mlp_backward(params, cache, g / n, torch)
    assert abs(gw.item() - tw.grad.item()) < 1e-10
    assert abs(gb.item() - tb.grad.item()) < 1e-10
    for got, ref in zip(grads, tm):
        np.testing.assert_allclose(got[0].reshape(ref.shape).numpy(), ref.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("betas", [(0.9, -1.7), (150.0, -1.7)])  # unstabilised / stabilised exp
def test_fast_path_sgd_step_matches_oracle(betas):
    """One fast-path SGD step vs autograd on the explicit token list (float64 oracle)."""
    N, D, B, lr, wd = 9, 8, 5, 0.3, 0.01
    cfg = MinimalConfig(N=N, seeds=2, batch_size=B, eval_size=3, D=D, lr=lr, wd_icl=wd, w0=0.4)
    grp = mm._FastGroup(cfg, [0, 1], np.array(betas), torch)
    w0, b0 = grp.w.copy(), grp.beta.copy()
    grp.step()
    P = grp.P
    # the draws this step used: raw words, agree counts, r
    i32 = torch.from_numpy(grp.raws[:, 0].view(np.int32)).view(2, 2, B * P)
    z = torch.empty(2, 2, B * P)
    mm._box_muller(i32, z, torch.empty(2, 2, B * P))
    z = z.view(2, 2, B, P)
    for si in range(2):
        k = torch.from_numpy(grp.ks[si, 0]).double()
        r = torch.from_numpy(grp.rs[si, 0]).double()
        zz = z[si].double().permute(1, 0, 2).reshape(B, 2 * P)[:, : N - 1]
        s_oth = zz * torch.sqrt(2 * r / D)[:, None]
        l_oth = torch.where(torch.arange(N - 1)[None, :] < k[:, None], 1.0, -1.0).double()
        s_all = torch.cat([r[:, None], s_oth, r[:, None]], 1)  # copy, others, target
        one = torch.ones(B, 1, dtype=torch.float64)
        l_all = torch.cat([one, l_oth, 0 * one], 1)
        tw = torch.tensor(w0[si], dtype=torch.float64, requires_grad=True)
        tb = torch.tensor(b0[si], dtype=torch.float64, requires_grad=True)
        logit = tw * (torch.softmax(tb * s_all, 1) * l_all).sum(1)
        y = 1.0  # labels are relative to the target's (the loss depends on y * l only)
        loss = torch.nn.functional.softplus(-y * logit).mean() + 0.5 * wd * (tw**2 + tb**2)
        loss.backward()
        w_ref = w0[si] - lr * tw.grad.item()
        b_ref = b0[si] - lr * tb.grad.item()
        assert abs(grp.w[si] - w_ref) < 1e-6 * (1 + abs(w_ref))
        assert abs(grp.beta[si] - b_ref) < 1e-6 * (1 + abs(b_ref))
        assert abs(grp.w[si] - w0[si]) > 1e-4  # the step did something


# ------------------------------------------------------------------ samplers
def test_overlap_sampler_exact_in_distribution():
    """Sampled r and non-copy overlaps vs explicitly drawn D-dim items (KS, moments)."""
    D, N, n = 63, 21, 4000
    cfg = MinimalConfig(N=N, D=D, seeds=1, eval_size=n)
    grp = mm._FastGroup(cfg, [0], np.zeros(1), torch)
    r = grp.er[0].double().numpy()
    sig = np.sqrt(2 * r / D)
    zz = grp.ez[0].double().numpy()  # (2, n, P)
    s = (zz.transpose(1, 0, 2).reshape(n, -1)[:, : N - 1] * sig[:, None])
    rng = np.random.default_rng(5)
    xt = rng.standard_normal((n, D)) / math.sqrt(D)
    xo = rng.standard_normal((n, D)) / math.sqrt(D)
    r_ref = (xt**2).sum(1)
    s_ref = (xt * xo).sum(1)
    assert stats.ks_2samp(r, r_ref).pvalue > 1e-3
    assert stats.ks_2samp(s[:, 0], s_ref).pvalue > 1e-3
    assert stats.ks_2samp(s[:, N - 2], s_ref).pvalue > 1e-3
    # exact moments: E r = 1, Var r = 2/D; E s^2 = 1/D; E s^4 = 3 E[r^2]/D^2 = 3(1 + 2/D)/D^2
    assert abs(r.mean() - 1) < 5 * math.sqrt(2 / D / n)
    assert abs(r.var() - 2 / D) < 0.15 * 2 / D
    allv = s.ravel()
    assert abs((allv**2).mean() * D - 1) < 0.02
    assert abs((allv**4).mean() * D**2 / (3 * (1 + 2 / D)) - 1) < 0.05
    # overlaps of a sequence given r are uncorrelated with each other
    c = np.corrcoef(s[:, 0], s[:, 1])[0, 1]
    assert abs(c) < 4 / math.sqrt(n)


def test_agree_counts_binomial_chi_square():
    cfg = MinimalConfig(N=12, seeds=1, eval_size=20000, D=5)
    grp = mm._FastGroup(cfg, [0], np.zeros(1), torch)
    k = (grp.esgn[0] > 0).sum(dim=(0, 2)).numpy().astype(int)  # agreeing non-copy tokens per sequence
    counts = np.bincount(k, minlength=12)
    expected = stats.binom(11, 0.5).pmf(np.arange(12)) * k.size
    # pool sparse tails
    obs = np.array([counts[:2].sum(), *counts[2:10], counts[10:].sum()])
    exp = np.array([expected[:2].sum(), *expected[2:10], expected[10:].sum()])
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    # general-path K -> infinity sampler uses the same law
    g = mm._GeneralGroup(MinimalConfig(N=12, seeds=1, eval_size=10, D=5, mlp_width=3), [0], np.zeros(1), torch)
    _, y, _, lab, _ = g._seq_inf(np.random.Generator(np.random.SFC64(9)), 20000, True)
    npos = (lab * y[:, None] > 0).sum(1) - 1  # exclude the copy
    c2 = np.bincount(npos, minlength=12)
    obs2 = np.array([c2[:2].sum(), *c2[2:10], c2[10:].sum()])
    assert stats.chisquare(obs2, exp).pvalue > 1e-3


def test_data_modes_finite_k():
    cfg = MinimalConfig(N=10, K=8, seeds=2, D=6, eval_size=300, mlp_width=3)
    g = mm._GeneralGroup(cfg, [0, 1], np.zeros(2), torch)
    for j in range(2):
        assert g.L[j].sum() == 0 and set(np.unique(g.L[j])) == {-1.0, 1.0}
    gen = np.random.Generator(np.random.SFC64(2))
    ctx, tgt = g._draw_indices(gen, g.L[0], 3000)
    assert (ctx == tgt[:, None]).any(1).all()  # target always present in context
    # ICL test set: target's item present (an overlap equal to r within fp error)
    xt, y, s, lab, r = (t.numpy() for t in g.icl_set)
    assert (np.abs(s - r[..., None]) < 1e-5).any(-1).all()
    # IWL test set: target's index absent -> no overlap equals r (items distinct a.s.)
    xt, y, s, lab, r = (t.numpy() for t in g.iwl_set)
    assert not (np.abs(s - r[..., None]) < 1e-6).any()
    # equalized contexts
    cfg2 = MinimalConfig(N=10, K=8, seeds=1, D=6, eval_size=50, equalize=True)
    g2 = mm._GeneralGroup(cfg2, [0], np.zeros(1), torch)
    ctx, tgt = g2._draw_indices(gen, g2.L[0], 2000)
    assert ((g2.L[0][ctx] > 0).sum(1) == 5).all()
    assert (ctx == tgt[:, None]).any(1).all()
    # equalized K -> infinity (fast path): n_plus = N/2 exactly
    g3 = mm._FastGroup(MinimalConfig(N=10, seeds=1, equalize=True, eval_size=100), [0], np.zeros(1), torch)
    assert ((g3.esgn[0] > 0).sum(dim=(0, 2)) + 1 == 5).all()
    assert ((g3.esgn[0] < 0).sum(dim=(0, 2)) == 5).all()


# ------------------------------------------------------------------ runs
def _small(**kw):
    base = dict(N=10, beta0=1.0, lr=0.5, seeds=3, batch_size=16, eval_size=200, max_iterations=400, progress=None)
    base.pop("progress")
    base.update(kw)
    return MinimalConfig(**base)


def test_determinism_bitwise():
    cfg = _small(stop_on_acquire=False, max_iterations=60, log_every=20)
    a = run_minimal(cfg, progress=False)
    b = run_minimal(cfg, progress=False)
    ha, hb = a.to_json()["history"], b.to_json()["history"]  # NaN -> None so == is exact
    assert len(ha) == 12 and ha == hb and a.t_icl == b.t_icl


def test_seed_alone_equals_seed_in_batch():
    cfg = _small(stop_on_acquire=False, max_iterations=60, log_every=20, seeds=3, beta0=[1.0, 0.5, 0.2])
    batch = run_minimal(cfg, progress=False)
    alone = run_minimal(_small(stop_on_acquire=False, max_iterations=60, log_every=20, seeds=1, seed_offset=2, beta0=0.2), progress=False)
    rb = [r for r in batch.history if r["seed"] == 2]
    assert len(rb) == len(alone.history) > 1
    for x, y in zip(rb, alone.history):
        assert abs(x["w"] - y["w"]) < 1e-5 and abs(x["beta"] - y["beta"]) < 1e-5
    # the general path too (MLP, finite K)
    kw = dict(stop_on_acquire=False, max_iterations=20, log_every=10, K=20, mlp_width=4, D=6)
    batch = run_minimal(_small(seeds=2, **kw), progress=False)
    alone = run_minimal(_small(seeds=1, seed_offset=1, **kw), progress=False)
    rb = [r for r in batch.history if r["seed"] == 1]
    for x, y in zip(rb, alone.history):
        for key in ("w", "beta", "icl_acc", "iwl_acc", "c1"):
            assert abs(x[key] - y[key]) < 1e-5


def test_short_run_acquires_and_censoring():
    res = run_minimal(_small(max_iterations=2000), progress=False)
    assert all(t is not None for t in res.t_icl)
    assert all(t % res.config.eval_every == 0 for t in res.t_icl)
    for s, t in enumerate(res.t_icl):
        rows = [r for r in res.history if r["seed"] == s]
        assert rows[-1]["iteration"] == t and rows[-1]["icl_acc"] > 0.95  # stopped at acquisition
        assert all(r["icl_acc"] <= 0.95 for r in rows[:-1])  # logged rows before t_ICL did not pass
    assert res.median_t_icl == float(np.median(res.t_icl))
    never = run_minimal(_small(max_iterations=3), progress=False)
    assert never.t_icl == [None, None, None]
    assert never.median_t_icl is None
    assert never.to_json()["t_icl"] == [None, None, None]


def test_tidy_history_general_path_metrics():
    res = run_minimal(_small(K=20, mlp_width=4, D=6, max_iterations=20, log_every=10, stop_on_acquire=False), progress=False)
    iters = sorted({r["iteration"] for r in res.history})
    assert iters == [0, 10, 20]
    assert all(np.isfinite(r["c1"]) and 0 < r["c1"] < 1 and np.isfinite(r["iwl_acc"]) for r in res.history)


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(N=0), "N"),
        (dict(N=2.5), "N"),
        (dict(lr=0.0), "lr"),
        (dict(lr=-1), "lr"),
        (dict(seeds=0), "seeds"),
        (dict(K=7), "K"),
        (dict(K=0), "K"),
        (dict(N=11, equalize=True), "N"),
        (dict(beta0=[0.0, 1.0]), "beta0"),
        (dict(acc_threshold=1.5), "acc_threshold"),
    ],
)
def test_bad_input_raises(kw, name):
    with pytest.raises(ParameterError) as ei:
        run_minimal(MinimalConfig(**kw), progress=False)
    assert ei.value.name == name


def test_early_terminating_eval_agrees_with_full_eval():
    """The chunked early-stopping accuracy check == (full-test-set accuracy > threshold)."""
    cfg = MinimalConfig(N=20, seeds=12, eval_size=1000, D=63)
    grp = mm._FastGroup(cfg, list(range(12)), np.zeros(12), torch)
    grp.beta[:] = np.linspace(-1.0, 12.0, 12)
    grp.w[:] = np.where(np.arange(12) % 5 == 0, -1.0, 1.0)
    sel = np.arange(12)
    for thr in (0.6, 0.9, 0.95):
        mc = mm._min_correct(cfg.eval_size, thr)
        acc, _ = grp.evaluate(sel, True, mc)
        quick = grp.evaluate(sel, False, mc)
        assert list(quick) == list(acc > thr)
        assert quick.any() and not quick.all()
        sub = sel[::3]  # a subset goes through the gathering branch
        assert list(grp.evaluate(sub, False, mc)) == list(acc[::3] > thr)


def test_process_workers_give_the_same_numbers_as_threads():
    """The forked-process path (used automatically for long runs) equals the thread path."""
    kw = dict(stop_on_acquire=False, max_iterations=60, log_every=20, seeds=4, threads=2, beta0=[1.0, 0.5, 0.2, 2.0])
    a = run_minimal(_small(processes=False, **kw), progress=False)
    b = run_minimal(_small(processes=True, **kw), progress=False)
    assert a.to_json()["history"] == b.to_json()["history"] and a.t_icl == b.t_icl
    assert len(b.history) >= 16  # every 20 iterations, plus any acquisition rows


# ------------------------------------------------------------------ divergence (as the engine)
DIVERGED = r"^non-finite (training loss|w or beta) at iteration [1-9][0-9]*$"


@pytest.mark.parametrize("kw", [dict(), dict(K=20, mlp_width=4, D=6), dict(seeds=4, threads=2, processes=True)],
                         ids=["fast path", "general path", "worker processes"])
def test_a_huge_learning_rate_diverges_every_seed_like_the_engine(kw):
    """lr = 1e30: every seed is "diverged" with the engine's reason, its t_ICL None, and
    it is never counted as "never acquired" (the median is undefined, not censored)."""
    import re

    from icl_kinetics.simulate.engine import TrainConfig, train

    res = run_minimal(_small(lr=1e30, max_iterations=50, **kw), progress=False)
    assert res.status == ["diverged"] * res.config.seeds
    assert all(re.match(DIVERGED, r) for r in res.reasons), res.reasons
    assert res.t_icl == [None] * res.config.seeds and res.median_t_icl is None
    j = res.to_json()
    assert j["status"] == res.status and j["reasons"] == res.reasons
    # the reference: the engine's own minimal model at the same learning rate
    eng = train(TrainConfig(model="minimal", N=9, D=16, lr=1e30, batch_size=16, seeds=2, iterations=50,
                            eval_every=10, eval_size=100, workers=1), progress=False)
    assert eng.status == ["diverged"] * 2 and all(re.match(DIVERGED, r) for r in eng.reasons), eng.reasons
    # it diverged at the reported SGD step, not later: one step fewer leaves finite w and beta
    it = int(res.reasons[0].rsplit(" ", 1)[1])
    before = run_minimal(_small(lr=1e30, max_iterations=it - 1, seeds=1, **{k: v for k, v in kw.items()
                                                                            if k not in ("seeds", "threads")}),
                         progress=False)
    assert before.status == ["running"]
    last = before.history[-1]
    assert last["iteration"] == it - 1 and np.isfinite(last["w"]) and np.isfinite(last["beta"])


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_one_diverging_seed_leaves_the_others_alone():
    """beta0 = 1e39 overflows the fast path's float32 overlaps at the first step: that seed
    diverges, the others train on (as they would alone) and the median is over them."""
    cfg = _small(beta0=[0.5, 1e39, 0.2], max_iterations=2000)
    res = run_minimal(cfg, progress=False)
    assert res.status[1] == "diverged" and res.reasons[1] == "non-finite training loss at iteration 1"
    assert res.t_icl[1] is None and res.t_icl[0] is not None and res.t_icl[2] is not None
    assert res.status[0] == res.status[2] == "stopped" and res.reasons[0] == res.reasons[2] == ""
    assert res.median_t_icl == float(np.median([res.t_icl[0], res.t_icl[2]]))
    alone = run_minimal(_small(beta0=0.2, seeds=1, seed_offset=2, max_iterations=2000), progress=False)
    assert abs(alone.t_icl[0] - res.t_icl[2]) <= cfg.eval_every  # float32 roundoff may move one evaluation


def test_status_of_seeds_that_do_not_diverge():
    res = run_minimal(_small(max_iterations=300, beta0=[2.0, 0.0, -4.0]), progress=False)
    assert [("stopped" if t is not None else "running") for t in res.t_icl] == res.status
    assert "stopped" in res.status and "running" in res.status and res.reasons == ["", "", ""]
    res = run_minimal(_small(max_iterations=30, stop_on_acquire=False), progress=False)
    assert res.status == ["running"] * 3


# ------------------------------------------------------------------ memory, refused up front
@pytest.mark.parametrize("kw,name", [(dict(seeds=10**8), "seeds"), (dict(batch_size=10**9), "batch_size"),
                                     (dict(N=10**9), "N"), (dict(K=10**12), "K"), (dict(eval_size=10**9), "eval_size"),
                                     (dict(K=1000, mlp_width=10**6), "mlp_width"),
                                     (dict(K=10**6, D=10**5), "K"),
                                     (dict(max_iterations=10**10, log_every=1), "max_iterations")])
def test_sizes_that_cannot_fit_are_refused_before_allocating(monkeypatch, kw, name):
    from icl_kinetics import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 8 << 30)
    with pytest.raises(ParameterError) as e:
        run_minimal(MinimalConfig(**kw), progress=False)
    assert e.value.name == name and "memory" in str(e.value) and "minimal-model simulator" in str(e.value)


def test_ordinary_sizes_are_not_refused(monkeypatch):
    from icl_kinetics import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 4 << 30)
    for kw in (dict(), dict(seeds=100, max_iterations=10_000, stop_on_acquire=False),  # benchmarks/bench_minimal.py
               dict(N=200, seeds=64), dict(K=4096, mlp_width=256, seeds=16), dict(K=100_000, N=99, seeds=8)):
        MinimalConfig(**kw).validate()


def test_memory_refusal_through_the_cli(monkeypatch, cli):
    from icl_kinetics import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 8 << 30)
    for argv, name in ((["--seeds", "1e8"], "seeds"), (["--batch-size", "1e9"], "batch_size"), (["--N", "1e9"], "N"),
                       (["--K", "1e12"], "K")):
        code, out, err = cli(["minimal", "--quiet", *argv])
        assert code == 2 and len(err.strip().splitlines()) == 1 and name in err and "memory" in err, err
        assert "Traceback" not in err


def test_memory_estimate_matches_the_measured_peak(tmp_path):
    """The estimate against the measured growth of the anonymous resident memory of a
    real run (a subprocess, sampled every 2 ms; library pages left out): within a factor
    2 either way, for the fast path and the general path."""
    import json
    import os
    import subprocess
    import sys

    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads RssAnon from Linux's /proc/self/status")
    script = tmp_path / "peak.py"
    script.write_text(
        "import json, sys, threading, time\n"
        "from icl_kinetics.simulate.minimal import MinimalConfig, run_minimal\n"
        "def anon():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return next(int(l.split()[1]) * 1024 for l in f if l.startswith('RssAnon:'))\n"
        "run_minimal(MinimalConfig(N=10, seeds=2, max_iterations=20, eval_size=100, threads=1), progress=False)\n"
        "cfg = MinimalConfig(threads=1, processes=False, stop_on_acquire=False, **json.loads(sys.argv[1]))\n"
        "base = anon(); peak = [base]; done = threading.Event()\n"
        "def poll():\n"
        "    while not done.is_set():\n"
        "        peak[0] = max(peak[0], anon()); time.sleep(0.002)\n"
        "t = threading.Thread(target=poll); t.start()\n"
        "run_minimal(cfg, progress=False).to_json()\n"
        "done.set(); t.join()\n"
        "print(json.dumps([cfg.memory_estimate()[0], max(peak[0], anon()) - base]))\n")
    for kw in (dict(seeds=8, N=400, batch_size=512, eval_size=2000, max_iterations=10),
               dict(seeds=4, K=50_000, D=200, N=50, max_iterations=10)):
        out = subprocess.run([sys.executable, str(script), json.dumps(kw)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        est, measured = json.loads(out.stdout.strip().splitlines()[-1])
        assert measured > 50 * 2**20, measured  # the run's own arrays dominate the measurement
        assert 0.5 < est / measured < 2, (kw, est / 2**20, measured / 2**20)
