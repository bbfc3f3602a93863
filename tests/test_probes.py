"""The probes (theory.correct_margin / theory.effective_head and validate.probes) against
independent references: the engine's own logged metrics on its own model (the same function
gives the same w, beta and c1), naive loops, hand-built attention whose (w, beta) is known, numpy vs torch."""

import math

import numpy as np
import pytest

from icl_kinetics.errors import ParameterError
from icl_kinetics.theory import correct_margin, effective_head
from icl_kinetics.validate.probes import AttentionRecorder, coefficients_from_logits, head_from_attention

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------- the engine's own metrics
@pytest.mark.parametrize("model, rtol", [
    # the engine evaluates "transformer" with its fast last-token path (float32), the probe
    # input comes from the naive full-attention oracle (float32): they agree to float32
    # rounding, amplified at most ~10x by the slope and the log ratio
    ("transformer", 2e-5),
    # "transformer2" is evaluated with the same oracle by the engine: the same numbers
    ("transformer2", 1e-12),
])
def test_probes_reproduce_the_engines_logged_w_beta_c1(tmp_path, model, rtol):
    from icl_kinetics.simulate import models as mm
    from icl_kinetics.simulate.engine import TrainConfig, _load_checkpoint, _Shared, train

    S, its = 2, 200
    # one shared label map: the test sets' labels below are the map every seed trains on
    cfg = TrainConfig(model=model, K=40, N=9, D=12, width=16, batch_size=16, eval_size=128, iterations=its,
                      eval_every=100, lr=0.1, early_stop=None, workers=1, seeds=S, backend="autograd",
                      checkpoint_every=100, label_map="shared")
    res = train(cfg, out=tmp_path, progress=False)
    state = _load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["iteration"] == its and state["seed_index"] == [[0, 1]]
    p = state["groups"][0]["store"]  # the parameters the last logged row was evaluated with
    sh = _Shared(cfg, torch.device("cpu"))  # the engine's test sets (from item_seed)
    icl, iwl = sh.icl, sh.iwl
    with torch.no_grad():
        logit, (p_ctx, p_tgt) = mm.transformer_reference(
            p, icl.tokens(cfg.labels).expand(S, -1, -1, -1), return_attention=True)
        iwl_logit = mm.transformer_reference(p, iwl.tokens(cfg.labels).expand(S, -1, -1, -1))
    head = head_from_attention(p_ctx, icl.ctx == icl.tgt[:, None], icl.labels[icl.ctx], icl.labels[icl.tgt],
                               logit, attention_target=p_tgt)
    coef = coefficients_from_logits(iwl_logit, iwl.labels[iwl.tgt])
    last = {r["seed"]: r for r in res.rows if r["iteration"] == its}
    for s in range(S):
        for name, got in (("w", head["w"][s]), ("beta", head["beta"][s]), ("c1", coef["c1"][s]),
                          ("c2", coef["c2"][s]), ("c3", coef["c3"][s])):
            assert got == pytest.approx(last[s][name], rel=rtol, abs=rtol), (s, name)
    assert np.all(np.abs([last[s]["w"] for s in range(S)]) > 0.1)  # a head that is not trivially 0


# ----------------------------------------------------------------------------- the margin
def _softmax(z):
    e = [math.exp(v - max(z)) for v in z]
    return [v / sum(e) for v in e]


def test_multiclass_margin_with_two_classes_is_the_binary_margin():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(3, 50, 2))
    cls = rng.integers(0, 2, 50)
    binary = correct_margin(z[..., 1] - z[..., 0], 2.0 * cls - 1)
    np.testing.assert_allclose(correct_margin(z, cls), binary, rtol=1e-12, atol=1e-12)


def test_multiclass_margin_gives_one_minus_p_y_against_a_naive_softmax():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(40, 5))
    cls = rng.integers(0, 5, 40)
    phi = correct_margin(z, cls)
    for i in range(40):  # sigma(-phi_plus) = 1 - p_y, exactly (to rounding)
        p_y = _softmax(list(z[i]))[cls[i]]
        assert 1.0 / (1.0 + math.exp(phi[i])) == pytest.approx(1.0 - p_y, rel=1e-12, abs=1e-15)


def test_coefficients_from_logits_against_a_naive_loop():
    rng = np.random.default_rng(2)
    z = rng.normal(0.5, 2, size=(3, 64))
    y = rng.choice([-1.0, 1.0], 64)
    c = coefficients_from_logits(z, y)
    for s in range(3):
        phi = [y[i] * z[s, i] for i in range(64)]
        sig = [1.0 / (1.0 + math.exp(v)) for v in phi]
        c1 = sum(sig) / 64
        assert c["c1"][s] == pytest.approx(c1, rel=1e-12)
        assert c["c2"][s] == pytest.approx(1 - sum(v * v for v in sig) / 64 / c1, rel=1e-12)
        assert c["c3"][s] == pytest.approx(sum(math.exp(-v) for v in phi) / 64, rel=1e-12)
    one = coefficients_from_logits(z[1], y)  # unbatched: floats
    assert isinstance(one["c1"], float) and one["c1"] == pytest.approx(c["c1"][1], rel=1e-15)
    # multi-class: c1 is the mean probability of error
    zm = rng.normal(0, 2, size=(30, 4))
    cls = rng.integers(0, 4, 30)
    cm = coefficients_from_logits(zm, cls)
    assert cm["c1"] == pytest.approx(sum(1 - _softmax(list(zm[i]))[cls[i]] for i in range(30)) / 30, rel=1e-12)


# ----------------------------------------------------------------------------- the head
def _hand_built(rng, n, N, beta, w, offset=0.3):
    """Sequences whose target attends with softmax(beta * overlap) (overlap 1 on its copies
    and on itself, 0 elsewhere) and whose margin is w * readout + offset."""
    match = rng.random((n, N)) < 0.3
    match[:, 0] = False  # at least one other position
    match[:, 1] = True  # at least one copy
    lab = rng.choice([-1.0, 1.0], (n, N))
    y = rng.choice([-1.0, 1.0], n)
    scores = np.concatenate([beta * match, np.full((n, 1), beta)], axis=1)
    att = np.exp(scores - scores.max(1, keepdims=True))
    att /= att.sum(1, keepdims=True)
    m = (att[:, :N] * lab).sum(1) * y
    return att[:, :N], att[:, N], match, lab, y, w * m + offset


def test_effective_head_recovers_beta_and_w_of_hand_built_attention():
    rng = np.random.default_rng(3)
    for beta, w in ((2.5, 4.0), (-1.0, 0.7), (0.0, -3.0)):
        pc, pt, match, lab, y, margin = _hand_built(rng, 200, 12, beta, w)
        h = effective_head(pc, match, lab, y, margin, attention_target=pt)
        assert h["beta"] == pytest.approx(beta, abs=1e-12) and h["w"] == pytest.approx(w, rel=1e-10)
        # without the target's own weight: the copies in the context alone give the same ratio
        h0 = effective_head(pc, match, lab, y, margin)
        assert h0["beta"] == pytest.approx(beta, abs=1e-12) and h0["w"] == pytest.approx(w, rel=1e-10)


def test_effective_head_batches_over_leading_axes_like_single_calls():
    rng = np.random.default_rng(4)
    pc0, pt0, match, lab, y, _ = _hand_built(rng, 60, 8, 1.0, 1.0)
    pc = rng.dirichlet(np.ones(9), size=(2, 3, 60))  # (2, 3, n, N + 1), rows sum to 1
    margin = rng.normal(size=(2, 3, 60))
    h = effective_head(pc[..., :8], match, lab, y, margin, attention_target=pc[..., 8])
    assert h["w"].shape == (2, 3)
    for i in range(2):
        for j in range(3):
            one = effective_head(pc[i, j, :, :8], match, lab, y, margin[i, j], attention_target=pc[i, j, :, 8])
            assert h["w"][i, j] == pytest.approx(one["w"], rel=1e-12)
            assert h["beta"][i, j] == pytest.approx(one["beta"], rel=1e-12)


def test_numpy_and_torch_give_the_same_numbers():
    rng = np.random.default_rng(5)
    pc = rng.dirichlet(np.ones(11), size=(3, 50))
    _, _, match, lab, y, _ = _hand_built(rng, 50, 10, 1.0, 1.0)
    z = rng.normal(size=(3, 50))
    zm = rng.normal(size=(3, 50, 4))
    cls = rng.integers(0, 4, 50)
    t = torch.from_numpy
    # theory layer: a tensor in, a tensor out, the same values
    hn = effective_head(pc[..., :10], match, lab, y, correct_margin(z, y), attention_target=pc[..., 10])
    ht = effective_head(t(pc[..., :10]), t(match), t(lab), t(y), correct_margin(t(z), t(y)),
                        attention_target=t(pc[..., 10]))
    assert isinstance(ht["w"], torch.Tensor)
    for k in ("w", "beta"):
        np.testing.assert_allclose(ht[k].numpy(), hn[k], rtol=1e-12, atol=1e-14)
    mt = correct_margin(t(zm), t(cls))
    assert isinstance(mt, torch.Tensor)
    np.testing.assert_allclose(mt.numpy(), correct_margin(zm, cls), rtol=1e-12, atol=1e-14)
    # validate layer: tensors (float32 too) are converted; the same results as numpy
    a = head_from_attention(pc[..., :10], match, lab, y, z, attention_target=pc[..., 10])
    b = head_from_attention(t(pc[..., :10]), t(match), t(lab), t(y), t(z), attention_target=t(pc[..., 10]))
    for k in ("w", "beta"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12)
    np.testing.assert_allclose(coefficients_from_logits(t(zm), t(cls))["c1"],
                               coefficients_from_logits(zm, cls)["c1"], rtol=1e-12)


def test_multiclass_head_uses_same_class_agreement():
    """Multi-class: a context label counts +1 where it is the target's class."""
    rng = np.random.default_rng(6)
    n, N, L = 80, 6, 3
    pc = rng.dirichlet(np.ones(N + 1), size=n)
    match = np.zeros((n, N), bool)
    match[:, 2] = True
    ccls = rng.integers(0, L, (n, N))
    cls = rng.integers(0, L, n)
    z = rng.normal(size=(n, L))
    h = head_from_attention(pc[:, :N], match, ccls, cls, z, attention_target=pc[:, N])
    agree = np.where(ccls == cls[:, None], 1.0, -1.0)
    ref = effective_head(pc[:, :N], match, agree, np.ones(n), correct_margin(z, cls), attention_target=pc[:, N])
    assert h == pytest.approx(ref, rel=1e-15)


# ----------------------------------------------------------------------------- bad input
def _good(n=20, N=5):
    rng = np.random.default_rng(7)
    pc, pt, match, lab, y, margin = _hand_built(rng, n, N, 1.0, 2.0)
    return dict(attention=pc, match=match, context_labels=lab, labels=y, logits=margin * y, attention_target=pt)


@pytest.mark.parametrize("change, name, words", [
    (lambda g: g.update(labels=(g["labels"] > 0).astype(float)), "labels", "2 * labels - 1"),
    (lambda g: g.update(attention=g["attention"] * 2), "attention", "sum to at most 1"),
    (lambda g: g["attention"].__setitem__((0, 0), -0.1), "attention", ">= 0"),
    (lambda g: g["logits"].__setitem__(3, np.nan), "logits", "finite"),
    (lambda g: g.update(match=g["match"][:, :-1]), "match", "shape"),
    (lambda g: g.update(match=g["match"] * 2.0), "match", "booleans"),
    (lambda g: g.update(context_labels=g["context_labels"] * 0.5), "context_labels", "-1 or +1"),
    (lambda g: g.update(logits=g["logits"][:-1]), "logits", "shape"),
    (lambda g: g.update(attention_target=g["attention_target"][:-1]), "attention_target", "shape"),
    (lambda g: (g.update(attention_target=None), g["match"].__setitem__((slice(None), slice(1, None)), False)),
     "match", "no copy of the target"),
    (lambda g: g["match"].__setitem__(4, True), "match", "no other keys"),
])
def test_bad_probe_input_names_the_argument(change, name, words):
    g = _good()
    change(g)
    with pytest.raises(ParameterError) as e:
        head_from_attention(**g)
    assert e.value.name == name and words in str(e.value), str(e.value)


def test_bad_multiclass_labels_and_logits_are_refused():
    z = np.zeros((4, 3))
    with pytest.raises(ParameterError, match="class indices 0..2") as e:
        coefficients_from_logits(z, [0, 1, 3, 2])
    assert e.value.name == "labels"
    with pytest.raises(ParameterError) as e:
        coefficients_from_logits(np.zeros((4, 1)), [0, 0, 0, 0])
    assert e.value.name == "logits" and "L >= 2" in str(e.value)
    with pytest.raises(ParameterError) as e:  # (n, n): both readings fit and the labels do not tell
        coefficients_from_logits(np.zeros((2, 2)), [1, 1])
    assert e.value.name == "multiclass"
    assert coefficients_from_logits(np.zeros((2, 2)), [1, 1], multiclass=False)["c1"] == pytest.approx([0.5, 0.5])
    with pytest.raises(ParameterError) as e:
        coefficients_from_logits(np.zeros(5), np.ones(4))
    assert e.value.name == "logits" and "n = 4" in str(e.value)


# ----------------------------------------------------------------------------- hooks
def test_attention_recorder_records_multihead_attention_and_removes_its_hooks():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(5, 7, 8)
    with AttentionRecorder(mha) as rec, torch.no_grad():
        _, ref = mha(x, x, x, need_weights=True)
        mha(x, x, x, need_weights=True, average_attn_weights=False)
    assert len(rec.weights) == 2 and rec.modules == [mha, mha]
    torch.testing.assert_close(rec.weights[0], ref, rtol=0, atol=0)
    assert tuple(rec.last.shape) == (5, 2, 7, 7)
    torch.testing.assert_close(rec.last.mean(1), ref, rtol=1e-6, atol=1e-7)  # heads averaged = the default
    with torch.no_grad():
        mha(x, x, x)
    assert len(rec.weights) == 2  # the hooks are gone
    with pytest.raises(ParameterError) as e, AttentionRecorder(mha), torch.no_grad():
        mha(x, x, x, need_weights=False)
    assert e.value.name == "need_weights"
    # a custom extract, e.g. a hook point whose output is the pattern itself
    ident = torch.nn.Identity()
    with AttentionRecorder([ident], extract=lambda mod, inp, out: out * 1) as rec2:
        ident(ref)
    torch.testing.assert_close(rec2.last, ref)
    with pytest.raises(ParameterError) as e:
        AttentionRecorder("attn")
    assert e.value.name == "modules"
