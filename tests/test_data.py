"""Tests of icl_kinetics.simulate.data: each checks one claimed property of the task's
data generator, with the tolerance stated in the test.  Statistical tests use a
chi-square goodness-of-fit test (bins with expected count < 5 pooled) and require
p > 1e-3; all draws are seeded, so the outcomes are deterministic."""

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

from icl_kinetics.errors import ParameterError  # noqa: E402
from icl_kinetics.simulate import data as dm  # noqa: E402
from icl_kinetics.simulate.data import (  # noqa: E402
    Batch,
    DataConfig,
    SequenceSampler,
    icl_test_set,
    item_generator,
    iwl_test_set,
    make_item_set,
    n_from_len_context,
    seed_generators,
    token_table,
)

P_MIN = 1e-3


# ------------------------------------------------------------------ helpers
def _chi2_p(obs, exp, ddof=0):
    """Chi-square goodness-of-fit p-value; bins with expected count < 5 are pooled into
    one bin (merged with the smallest remaining bin if still < 5)."""
    obs = np.asarray(obs, dtype=float)
    exp = np.asarray(exp, dtype=float)
    assert abs(obs.sum() - exp.sum()) < 1e-6 * exp.sum()
    small = exp < 5
    o, e = list(obs[~small]), list(exp[~small])
    if small.any():
        po, pe = obs[small].sum(), exp[small].sum()
        if pe < 5 and e:
            j = int(np.argmin(e))
            o[j] += po
            e[j] += pe
        else:
            o.append(po)
            e.append(pe)
    o, e = np.array(o), np.array(e)
    stat = ((o - e) ** 2 / e).sum()
    dof = len(e) - 1 - ddof
    assert dof >= 1
    return stats.chi2.sf(stat, dof)


def _zipf_pmf(K, alpha):
    w = np.arange(1, K + 1, dtype=float) ** -alpha
    return w / w.sum()


def _setup(cfg, item_seed=10, seed=0, index=0):
    gens = seed_generators(seed, index)
    if cfg.K is None:
        items = labels = None
    else:
        items, labels = make_item_set(cfg.K, cfg.D, item_generator(item_seed))
    return items, labels, gens


def _sampler(cfg, **kw):
    items, labels, gens = _setup(cfg, **kw)
    return SequenceSampler(cfg, items, labels, gens["data"]), items, labels, gens


# ------------------------------------------------------------------ conventions
def test_n_from_len_context():
    assert n_from_len_context(100) == 99
    assert n_from_len_context(2) == 1
    with pytest.raises(ParameterError) as e:
        n_from_len_context(1)
    assert e.value.name == "len_context"


def test_token_dim():
    assert DataConfig(N=4).token_dim == 65
    assert DataConfig(N=4, labels="pm1").token_dim == 64
    assert DataConfig(N=4, D=5).token_dim == 7


# ------------------------------------------------------------------ items and labels
def test_item_set_balanced_and_moments():
    K, D = 4000, 63
    items, labels = make_item_set(K, D, item_generator(3))
    assert items.shape == (K, D) and items.dtype == torch.float32
    assert labels.shape == (K,) and labels.dtype == torch.float32
    assert int((labels == 1).sum()) == K // 2 and int((labels == -1).sum()) == K // 2
    # labels are permuted, not blocked: each half holds both labels
    assert 0 < int((labels[: K // 2] == 1).sum()) < K // 2
    # entry std 1/sqrt(63) = 0.126 -> std of the mean over K*D entries = 2.5e-4; tol 2e-3
    assert abs(items.double().mean().item()) < 2e-3
    # |x|^2 has std sqrt(2/D) = 0.178 -> std of its mean over K items = 2.8e-3; tol 0.015
    assert abs((items.double() ** 2).sum(1).mean().item() - 1.0) < 0.015
    # per-coordinate variance 1/D within 10%
    var = items.double().var(0).mean().item()
    assert abs(var * D - 1.0) < 0.1


def test_icl_novel_items_balanced_and_novel():
    cfg = DataConfig(N=20, K=300, eval_size=200)
    items, labels, gens = _setup(cfg)
    b = icl_test_set(cfg, None, gens["eval"])
    assert b.items.shape == (300, 63)
    assert int((b.labels == 1).sum()) == 150 and int((b.labels == -1).sum()) == 150
    # novel: no test item equals a training item
    assert not (b.items[:, None, :] == items[None, :, :]).all(-1).any()
    # capped at max_novel_items
    cfg2 = DataConfig(N=20, K=1000, eval_size=200, max_novel_items=200)
    b2 = icl_test_set(cfg2, None, seed_generators(0, 1)["eval"])
    assert b2.items.shape == (200, 63)
    assert int((b2.labels == 1).sum()) == 100 and int((b2.labels == -1).sum()) == 100
    # paper-code convention: labels read by index from the training map (M == K: balanced)
    b3 = icl_test_set(cfg, labels, seed_generators(0, 2)["eval"])
    assert torch.equal(b3.labels, labels)
    assert int((b3.labels == 1).sum()) == 150


# ------------------------------------------------------------------ target presence
PRESENT_CONFIGS = [
    dict(N=10, K=50),  # fix-up needed in ~80% of sequences
    dict(N=10, K=5000),  # fix-up needed almost always
    dict(N=30, K=200, zipf_alpha=1.5),
    dict(N=10, K=50, contexts="equalized"),
    dict(N=12, K=200, contexts="equalized", zipf_alpha=1.0),
    dict(N=10),
    dict(N=10, contexts="equalized"),
]


@pytest.mark.parametrize("kw", PRESENT_CONFIGS)
def test_target_present_train_and_icl(kw):
    cfg = DataConfig(eval_size=300, **kw)
    s, items, labels, gens = _sampler(cfg)
    for b in (s.sample(500), icl_test_set(cfg, None, gens["eval"])):
        assert b.ctx.dtype == torch.int64 and b.tgt.dtype == torch.int64
        assert b.ctx.shape[1] == cfg.N and b.ctx.shape[0] == b.tgt.shape[0]
        M = b.items.shape[0]
        assert int(b.ctx.min()) >= 0 and int(b.ctx.max()) < M
        assert bool((b.ctx == b.tgt[:, None]).any(1).all())
        assert torch.equal(b.y(), b.labels[b.tgt])


def test_fixup_target_uniform_over_context_positions():
    # K >> N: the target is almost always a fix-up copy; its position must be uniform
    # over the N context positions (chi-square, p > 1e-3)
    cfg = DataConfig(N=10, K=100000)
    s, *_ = _sampler(cfg)
    b = s.sample(5000)
    hits = b.ctx == b.tgt[:, None]
    one = hits.sum(1) == 1
    pos = hits[one].int().argmax(1)
    obs = np.bincount(pos.numpy(), minlength=cfg.N)
    assert _chi2_p(obs, np.full(cfg.N, obs.sum() / cfg.N)) > P_MIN


def test_k_none_fresh_distinct_items():
    cfg = DataConfig(N=10)
    s, *_ = _sampler(cfg)
    b = s.sample(50)
    assert b.items.shape == (500, 63)
    assert torch.equal(b.ctx, torch.arange(500).view(50, 10))
    a, c = s.sample(50), s.sample(50)
    assert not torch.equal(a.items, c.items)  # fresh every batch


@pytest.mark.parametrize(
    "kw",
    [
        dict(N=10, K=20),
        dict(N=10, K=2),
        dict(N=30, K=50, zipf_alpha=2.0),
        dict(N=10, K=40, contexts="equalized"),
        dict(N=10, K=4, contexts="equalized"),
        dict(N=10, K=40, contexts="equalized", zipf_alpha=1.5),
    ],
)
def test_iwl_target_absent(kw):
    cfg = DataConfig(eval_size=500, **kw)
    items, labels, gens = _setup(cfg)
    b = iwl_test_set(cfg, items, labels, gens["eval"])
    assert b.ctx.shape == (500, cfg.N)
    assert not bool((b.ctx == b.tgt[:, None]).any())
    # no context item vector identical to the target's vector
    same = (b.items[b.ctx] == b.items[b.tgt][:, None, :]).all(-1)
    assert not bool(same.any())
    if cfg.contexts == "equalized":
        assert bool((b.labels[b.ctx].sum(1) == 0).all())


def test_iwl_exclusion_distribution_zipf():
    # given the target t, context items follow p restricted to k != t (chi-square)
    K, alpha, N = 10, 1.0, 40
    cfg = DataConfig(N=N, K=K, zipf_alpha=alpha, eval_size=2000)
    items, labels, gens = _setup(cfg)
    b = iwl_test_set(cfg, items, labels, gens["eval"])
    p = _zipf_pmf(K, alpha)
    tgt = b.tgt.numpy()
    # the target itself follows p
    assert _chi2_p(np.bincount(tgt, minlength=K), p * len(tgt)) > P_MIN
    obs, exp = [], []
    for t in range(K):
        rows = tgt == t
        n = rows.sum() * N
        if n == 0:
            continue
        cnt = np.bincount(b.ctx.numpy()[rows].ravel(), minlength=K)
        assert cnt[t] == 0
        q = p.copy()
        q[t] = 0
        q /= q.sum()
        keep = np.arange(K) != t
        obs.append(cnt[keep])
        exp.append(n * q[keep])
    obs, exp = np.concatenate(obs), np.concatenate(exp)
    # each target value's block sums to its own total: dof = bins - number of blocks
    n_blocks = len(np.unique(tgt))
    assert _chi2_p(obs, exp, ddof=n_blocks - 1) > P_MIN


# ------------------------------------------------------------------ equalized
@pytest.mark.parametrize("K", [40, None])
def test_equalized_exact_half(K):
    cfg = DataConfig(N=16, K=K, contexts="equalized", eval_size=300, max_novel_items=20)
    s, items, labels, gens = _sampler(cfg)
    batches = [s.sample(400), icl_test_set(cfg, None, gens["eval"])]
    if K is not None:
        # paper-code label map with M < K: still label-balanced contexts (docs/engine.md)
        batches.append(icl_test_set(cfg, labels, seed_generators(0, 5)["eval"]))
    for b in batches:
        lab = b.labels[b.ctx]
        assert bool(((lab == 1).sum(1) == 8).all()) and bool(((lab == -1).sum(1) == 8).all())
        assert bool((b.ctx == b.tgt[:, None]).any(1).all())


def test_equalized_order_permuted():
    # labels per position are not blocked: position 0 holds +1 in about half the rows
    cfg = DataConfig(N=16, K=40, contexts="equalized")
    s, *_ = _sampler(cfg)
    b = s.sample(2000)
    frac = (b.labels[b.ctx] == 1).float().mean(0)  # per position, binomial std 0.011
    assert bool(((frac - 0.5).abs() < 0.06).all())


def test_equalized_zipf_class_restricted():
    # within each class, context items follow p restricted to that class (chi-square)
    K, alpha = 30, 1.0
    cfg = DataConfig(N=20, K=K, contexts="equalized", zipf_alpha=alpha)
    s, items, labels, _ = _sampler(cfg)
    b = s.sample(1000)
    p = _zipf_pmf(K, alpha)
    cnt = np.bincount(b.ctx.numpy().ravel(), minlength=K)
    lab = labels.numpy()
    for sign in (1, -1):
        m = lab == sign
        n = cnt[m].sum()
        assert n == 1000 * 10
        assert _chi2_p(cnt[m], n * p[m] / p[m].sum()) > P_MIN


# ------------------------------------------------------------------ frequencies
@pytest.mark.parametrize("alpha", [0.0, 1.2])
def test_context_frequencies_match_pmf(alpha):
    K, N, B = 40, 50, 400
    cfg = DataConfig(N=N, K=K, zipf_alpha=alpha)
    s, *_ = _sampler(cfg)
    b = s.sample(B)
    obs = np.bincount(b.ctx.numpy().ravel(), minlength=K)
    p = _zipf_pmf(K, alpha)
    assert _chi2_p(obs, p * N * B) > P_MIN
    # and the mismatched hypothesis is rejected (the test can fail)
    other = _zipf_pmf(K, 1.2 if alpha == 0 else 0.0)
    assert _chi2_p(obs, other * N * B) < P_MIN


@pytest.mark.parametrize("K", [100000, None])
def test_agreeing_labels_binomial(K):
    # n_plus - 1 (non-copy context tokens with the target's label) ~ Binomial(N-1, 1/2)
    N, B = 20, 4000
    cfg = DataConfig(N=N, K=K)
    s, *_ = _sampler(cfg)
    b = s.sample(B)
    agree = (b.labels[b.ctx] == b.y()[:, None]).sum(1) - 1
    obs = np.bincount(agree.numpy(), minlength=N)[:N]
    assert obs.sum() == B
    exp = stats.binom.pmf(np.arange(N), N - 1, 0.5) * B
    assert _chi2_p(obs, exp) > P_MIN


# ------------------------------------------------------------------ tokens
@pytest.mark.parametrize("encoding", ["onehot", "pm1"])
@pytest.mark.parametrize("K", [30, None])
def test_tokens(encoding, K):
    cfg = DataConfig(N=7, K=K, D=5, labels=encoding)
    s, *_ = _sampler(cfg)
    b = s.sample(11)
    tok = b.tokens(encoding)
    L = 2 if encoding == "onehot" else 1
    assert tok.shape == (11, 8, 5 + L) and tok.shape[-1] == cfg.token_dim
    assert tok.dtype == torch.float32
    assert bool((tok[:, -1, 5:] == 0).all())  # target label slot zero
    assert torch.equal(tok[:, :7, :5], b.items[b.ctx])
    assert torch.equal(tok[:, 7, :5], b.items[b.tgt])
    lab = b.labels[b.ctx]
    if encoding == "pm1":
        assert torch.equal(tok[:, :7, 5], lab)
    else:  # -1 -> [1, 0], +1 -> [0, 1]
        assert torch.equal(tok[:, :7, 5], (lab == -1).float())
        assert torch.equal(tok[:, :7, 6], (lab == 1).float())
    ctx_tok, tgt_tok = token_table(b.items, b.labels, encoding)
    ref = torch.cat([ctx_tok[b.ctx], tgt_tok[b.tgt][:, None]], dim=1)
    assert torch.equal(tok, ref)


# ------------------------------------------------------------------ seeding
MODES = [
    dict(N=10, K=40),
    dict(N=10, K=40, zipf_alpha=1.0),
    dict(N=10, K=40, contexts="equalized"),
    dict(N=10),
    dict(N=10, contexts="equalized"),
]


def _batches_equal(a: Batch, b: Batch):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("items", "labels", "ctx", "tgt"))


@pytest.mark.parametrize("kw", MODES)
def test_same_seed_bitwise_identical(kw):
    cfg = DataConfig(eval_size=50, **kw)
    out = []
    for _ in range(2):
        s, items, labels, gens = _sampler(cfg, seed=4, index=2)
        bs = [s.sample(32), s.sample(32), icl_test_set(cfg, None, gens["eval"])]
        if cfg.K is not None:
            bs.append(iwl_test_set(cfg, items, labels, seed_generators(4, 2)["eval"]))
        out.append(bs)
    for a, b in zip(*out):
        assert _batches_equal(a, b)
    # different data seed -> different batches
    s2, *_ = _sampler(cfg, seed=4, index=3)
    assert not _batches_equal(out[0][0], s2.sample(32))
    # successive batches of one stream differ
    assert not _batches_equal(out[0][0], out[0][1])


def test_item_set_shared_across_runs():
    a = make_item_set(40, 63, item_generator(10))
    b = make_item_set(40, 63, item_generator(10))
    c = make_item_set(40, 63, item_generator(11))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_seed_generators_independent_of_run_count():
    alone = seed_generators(7, 3)
    many = [seed_generators(7, i) for i in range(6)]
    for key in ("init", "data", "eval"):
        x = torch.randint(0, 2**31, (8,), generator=alone[key])
        y = torch.randint(0, 2**31, (8,), generator=many[3][key])
        assert torch.equal(x, y)
    # seeds follow the documented SeedSequence derivation
    kids = np.random.SeedSequence([7, 3]).spawn(3)
    for key, kid in zip(("init", "data", "eval"), kids):
        want = int(kid.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)
        assert alone[key].initial_seed() == want
    # all streams distinct: across keys and across run indices
    seeds = {g.initial_seed() for run in many for g in run.values()}
    assert len(seeds) == 18
    assert seed_generators(8, 3)["data"].initial_seed() != alone["data"].initial_seed()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(N=10, K=7), "K"),
        (dict(N=10, K=0), "K"),
        (dict(N=10, K=1), "K"),
        (dict(N=10, K=2.5), "K"),
        (dict(N=0), "N"),
        (dict(N=-3, K=7), "N"),
        (dict(N=9, contexts="equalized"), "N"),
        (dict(N=10, labels="binary"), "labels"),
        (dict(N=10, contexts="bursty"), "contexts"),
        (dict(N=10, K=10, zipf_alpha=-0.5), "zipf_alpha"),
        (dict(N=10, zipf_alpha=1.0), "zipf_alpha"),
        (dict(N=10, D=0), "D"),
        (dict(N=10, eval_size=0), "eval_size"),
        (dict(N=10, max_novel_items=3), "max_novel_items"),
    ],
)
def test_bad_config_raises(kw, name):
    with pytest.raises(ParameterError) as e:
        DataConfig(**kw)
    assert e.value.name == name
    assert f"{name}={kw[name]!r}" in str(e.value)  # message names parameter and value


def test_bad_calls_raise():
    g = item_generator(0)
    for args, name in [((7, 63), "K"), ((1, 63), "K"), ((4, 0), "D")]:
        with pytest.raises(ParameterError) as e:
            make_item_set(*args, g)
        assert e.value.name == name
    cfg = DataConfig(N=10, eval_size=10)
    with pytest.raises(ParameterError) as e:
        iwl_test_set(cfg, None, None, g)
    assert e.value.name == "K"
    cfgk = DataConfig(N=10, K=20)
    items, labels = make_item_set(20, 63, g)
    with pytest.raises(ParameterError) as e:
        SequenceSampler(cfgk, items[:10], labels, g)
    assert e.value.name == "items"
    with pytest.raises(ParameterError) as e:
        SequenceSampler(cfgk, items, labels * 2, g)
    assert e.value.name == "labels"
    s = SequenceSampler(cfgk, items, labels, g)
    with pytest.raises(ParameterError) as e:
        s.sample(0)
    assert e.value.name == "batch_size"
    with pytest.raises(ParameterError) as e:
        Batch(items, labels, torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.long)).tokens("bits")
    assert e.value.name == "encoding"
    for bad, name in [((-1, 0), "seed"), ((0, -1), "index")]:
        with pytest.raises(ParameterError) as e:
            seed_generators(*bad)
        assert e.value.name == name
    assert dm.n_from_len_context(100) == 99


def test_overlap_streams_are_children_2_and_3_of_the_seed_sequence():
    """The overlap sampler's streams, from their definition (independent of any batch)."""
    from icl_kinetics.simulate.data import overlap_streams

    for seed, index in ((0, 0), (7, 12)):
        st = overlap_streams(seed, index)
        kids = np.random.SeedSequence([seed, index]).spawn(4)
        for name, k in (("data", 2), ("eval", 3)):
            ref = np.random.Generator(np.random.SFC64(kids[k]))
            assert np.array_equal(st[name].integers(0, 2**62, 50), ref.integers(0, 2**62, 50))
    a, b = overlap_streams(0, 0)["data"].random(4), overlap_streams(0, 1)["data"].random(4)
    assert not np.array_equal(a, b)
    with pytest.raises(ParameterError):
        overlap_streams(-1, 0)


def test_item_sampler_uniform_is_the_plain_randint_stream_and_zipf_follows_the_pmf():
    from icl_kinetics.simulate.data import ItemSampler

    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = ItemSampler(40, 0.0, g1).sample(500)
    assert torch.equal(got, torch.randint(0, 40, (500,), generator=g2))  # the MLP's former draws
    K, alpha, n = 20, 1.3, 100_000
    idx = ItemSampler(K, alpha, torch.Generator().manual_seed(4)).sample(n).numpy()
    assert idx.min() >= 0 and idx.max() < K
    counts = np.bincount(idx, minlength=K)
    assert stats.chisquare(counts, _zipf_pmf(K, alpha) * n).pvalue > 1e-3
    with pytest.raises(ParameterError):
        ItemSampler(7, 0.0, g1)
