"""Zipf item frequencies on rung 2 (validate/zipf.py, the engine's frequency-weighted c1, the
preset zipf_rung2): the weighted coefficients against naive per-item loops, alpha = 0 unchanged
bit for bit, the predictor on synthetic c1 tables whose answer is known by hand, the check's
verdicts and minimums, and the figure."""

from __future__ import annotations

import gzip
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from icl_kinetics.errors import ParameterError
from icl_kinetics.theory import C2_DEFAULT, escape_time, mlp_coefficients
from icl_kinetics.validate.zipf import (
    alpha_of, predicted_k_star, target_copies, zipf_i_k, zipf_k_star, zipf_weights,
)

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "docs" / "results" / "validation_small" / "tables"


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _naive(phi, f):
    """c1, c2, c3 as expectations under f, one item at a time."""
    z = sum(f)
    c1 = sum(fi * _sigmoid(-p) for p, fi in zip(phi, f)) / z
    s2 = sum(fi * _sigmoid(-p) ** 2 for p, fi in zip(phi, f)) / z
    c3 = sum(fi * math.exp(-p) for p, fi in zip(phi, f)) / z
    return c1, 1.0 - s2 / c1, c3


# ----------------------------------------------------------------------------- the weighted coefficients
def test_weighted_coefficients_match_a_naive_loop_numpy_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    phi = rng.normal(0.5, 2.0, size=(3, 40))
    f = zipf_weights(40, 1.2) * 7.0  # unnormalized on purpose: the function normalizes
    for c in (mlp_coefficients(phi, axis=-1, weights=f), mlp_coefficients(phi.T, axis=0, weights=f),
              {k: v.numpy() for k, v in mlp_coefficients(torch.tensor(phi), axis=1, weights=f).items()}):
        for s in range(3):
            want = _naive(phi[s], f)
            got = (c["c1"][s], c["c2"][s], c["c3"][s])
            np.testing.assert_allclose(got, want, rtol=1e-12)
    one = mlp_coefficients(phi[1], weights=f)  # axis None: floats over all logits
    assert isinstance(one["c1"], float)
    np.testing.assert_allclose([one["c1"], one["c2"], one["c3"]], _naive(phi[1], f), rtol=1e-12)
    # a weighted c1 is not the plain mean (the test can fail if the weights are dropped)
    assert abs(one["c1"] - mlp_coefficients(phi[1])["c1"]) > 1e-3
    # uniform weights give the plain means
    u = mlp_coefficients(phi, axis=-1, weights=np.ones(40))
    np.testing.assert_allclose(u["c1"], mlp_coefficients(phi, axis=-1)["c1"], rtol=1e-14)


@pytest.mark.parametrize("weights, why", [([1.0, 2.0], "weights"), (np.full(5, -1.0), "weights"),
                                          (np.zeros(5), "weights"), ([[1.0] * 5], "weights")])
def test_bad_weights_are_refused_naming_the_parameter(weights, why):
    with pytest.raises(ParameterError, match=why):
        mlp_coefficients(np.zeros((2, 5)), axis=-1, weights=weights)


def test_zipf_weights_are_the_data_generators_distribution():
    f = zipf_weights(5, 1.0)
    np.testing.assert_allclose(f, np.array([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]) / (1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5))
    np.testing.assert_allclose(zipf_weights(4, 0.0), 0.25)
    with pytest.raises(ParameterError, match="alpha"):
        zipf_weights(4, -1.0)


# ----------------------------------------------------------------------------- the engine's logged c1
def _train_and_params(tmp_path, **kw):
    from icl_kinetics.simulate import TrainConfig, train
    from icl_kinetics.simulate.checkpoint import _load_checkpoint

    cfg = TrainConfig(lr=0.1, seeds=2, iterations=30, eval_every=30, workers=1, **kw)
    res = train(cfg, out=tmp_path, progress=False)
    st = _load_checkpoint(tmp_path / "checkpoint.pt")
    assert len(st["groups"]) == 1
    return cfg, res, {k: v for k, v in st["groups"][0]["store"].items()}


@pytest.mark.parametrize("label_map", ["shared", "per-seed"])
@pytest.mark.parametrize("model, kw", [("mlp", dict(N=1, early_stop=None)),
                                       ("minimal", dict(N=8, beta0=0.0, eval_size=64))])
def test_engine_logs_the_frequency_weighted_c1_of_a_naive_per_item_loop(tmp_path, model, kw, label_map):
    """c1 = sum_k f_k sigmoid(-y_k phi(x_k)) / sum_k f_k with each seed's own labels y_k (its
    own map with label_map = "per-seed")."""
    torch = pytest.importorskip("torch")
    from icl_kinetics.simulate import data as dm
    from icl_kinetics.simulate.models import mlp_forward

    K, alpha = 48, 1.3
    cfg, res, p = _train_and_params(tmp_path, model=model, K=K, width=8, zipf_alpha=alpha, label_map=label_map, **kw)
    items, labels = dm.make_item_set(K, cfg.D, dm.item_generator(cfg.item_seed))
    if label_map == "per-seed":
        labels = torch.stack([dm.seed_label_map(K, cfg.seed, i) for i in range(2)])
    mlp = {k: v for k, v in p.items() if k not in ("w", "beta")}
    with torch.no_grad():
        phi = mlp_forward(mlp, items.unsqueeze(0).expand(2, -1, -1)).double() * labels.double()
    f = [(k + 1) ** -alpha for k in range(K)]
    last = {r["seed"]: r for r in res.rows if r["iteration"] == cfg.iterations}
    for s in range(2):
        want = _naive(phi[s].tolist(), f)
        got = (last[s]["c1"], last[s]["c2"], last[s]["c3"])
        np.testing.assert_allclose(got, want, rtol=1e-6)  # float32 logits, float64 sums
        plain = float(torch.sigmoid(-phi[s]).mean())
        assert abs(last[s]["c1"] - plain) > 1e-4  # and not the uniform mean


@pytest.mark.parametrize("model, kw", [("mlp", dict(N=1, early_stop=None)),
                                       ("minimal", dict(N=8, beta0=0.0, eval_size=64))])
def test_alpha_zero_metrics_are_the_unweighted_means_bit_for_bit(tmp_path, model, kw):
    """alpha = 0 takes the unweighted path: the logged c1, c2, c3 equal, to the last bit, the plain
    means of the theory's one definition (mlp_coefficients without weights, the code path the
    engine had before the weighting) on the same logits; a weighted sum would round differently."""
    torch = pytest.importorskip("torch")
    from icl_kinetics.simulate import data as dm
    from icl_kinetics.simulate.models import mlp_forward

    K = 48
    cfg, res, p = _train_and_params(tmp_path, model=model, K=K, width=8, zipf_alpha=0.0, label_map="shared", **kw)
    items, labels = dm.make_item_set(K, cfg.D, dm.item_generator(cfg.item_seed))
    mlp = {k: v for k, v in p.items() if k not in ("w", "beta")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine's workers run single-threaded: the same matmul kernels
    try:
        with torch.no_grad():
            phi = mlp_forward(mlp, items[torch.arange(K)].unsqueeze(0).expand(2, -1, -1)).double() * labels.double()
    finally:
        torch.set_num_threads(threads)
    want = mlp_coefficients(phi, axis=-1)
    last = {r["seed"]: r for r in res.rows if r["iteration"] == cfg.iterations}
    for s in range(2):
        assert [last[s][c] for c in ("c1", "c2", "c3")] == [float(want[c][s]) for c in ("c1", "c2", "c3")]
    weighted = mlp_coefficients(phi, axis=-1, weights=np.ones(K))  # the same numbers, summed another way
    np.testing.assert_allclose(weighted["c1"].numpy(), want["c1"].numpy(), rtol=1e-14)


# ----------------------------------------------------------------------------- the predictor, synthetic
A, NU, LR, T, N = 1.1, 0.7, 0.1, 10_000, 50


def _mlp_rows(alpha, Ks, amp=A, seeds=3, spread=0.02, run="m"):
    """MLP seeds whose c1 is constant in time, so I_K(T) = lr c1 T exactly: I_K = amp K^nu x
    (1 + spread (seed - 1))."""
    rows = []
    for K in Ks:
        for s in range(seeds):
            ik = amp * K ** NU * (1 + spread * (s - 1))
            for it in (0, T):
                rows.append(dict(run_id=f"{run}{alpha}-{K}", model="mlp", N=1, K=K, lr=LR, seed=s, iteration=it,
                                 c1=ik / (LR * T), icl_acc=math.nan, w=math.nan, beta=math.nan, zipf_alpha=alpha))
    return rows


def _minimal_rows(alpha, Ks, k_true, seeds=4, run="i"):
    """Minimal-model seeds whose head escaped (w = 1, beta = 5 > beta_c) iff K > k_true."""
    rows = []
    for K in Ks:
        for s in range(seeds):
            esc = K > k_true
            for it, (w, b) in ((0, (0.0, 0.0)), (6000, (1.0, 5.0) if esc else (0.01, 0.1))):
                rows.append(dict(run_id=f"{run}{alpha}-{K}", model="minimal", N=N, K=K, lr=LR, seed=s, iteration=it,
                                 c1=0.1, icl_acc=0.99 if esc and it else 0.5, w=w, beta=b, zipf_alpha=alpha))
    return rows


def _cols(rows):
    return {k: [r[k] for r in rows] for k in rows[0]}


def _hand_k_star(tau, amp=A):
    return (N * tau / amp) ** (1 / NU)


KS = [64, 128, 256, 512, 1024, 2048]


def test_predictor_on_a_power_law_gives_the_hand_computed_k_star():
    from icl_kinetics.validate.core import seed_summaries

    ik = zipf_i_k(seed_summaries(_cols(_mlp_rows(0.0, KS, spread=0.0))))
    np.testing.assert_allclose(ik["i_k"], [A * k ** NU for k in KS], rtol=1e-12)
    taus = sorted([float(escape_time(0.0, c2=0.0)), float(escape_time(0.0, c2=C2_DEFAULT))])
    p = predicted_k_star(ik, N, 0.0, n_boot=50)
    np.testing.assert_allclose(p["point"], [_hand_k_star(t) for t in taus], rtol=1e-9)
    np.testing.assert_allclose([p["lo"], p["hi"]], [_hand_k_star(taus[0]), _hand_k_star(taus[1])], rtol=1e-9)
    # seeds that differ widen the interval, around the same point
    q = predicted_k_star(zipf_i_k(seed_summaries(_cols(_mlp_rows(0.0, KS, spread=0.1)))), N, 0.0, n_boot=300)
    assert q["lo"] < p["lo"] * 0.99 and q["hi"] > p["hi"] * 1.01
    # a drive 4x smaller needs K 4^(1/nu) times larger
    r = predicted_k_star(zipf_i_k(seed_summaries(_cols(_mlp_rows(0.0, [64, 256, 1024, 4096, 16384], amp=A / 4,
                                                                 spread=0.0)))), N, 0.0, n_boot=20)
    np.testing.assert_allclose(np.array(r["point"]) / np.array(p["point"]), 4 ** (1 / NU), rtol=1e-9)


def test_predictor_beyond_the_measured_drive_is_a_bound():
    from icl_kinetics.validate.core import seed_summaries

    low = predicted_k_star(zipf_i_k(seed_summaries(_cols(_mlp_rows(0.0, KS, amp=A / 100, spread=0.0)))), N, 0.0,
                           n_boot=20)
    assert low["point"] == [math.inf, math.inf] and low["hi"] == math.inf and low["lo"] == max(KS)
    high = predicted_k_star(zipf_i_k(seed_summaries(_cols(_mlp_rows(0.0, KS, amp=A * 100, spread=0.0)))), N, 0.0,
                            n_boot=20)
    assert high["point"] == [0.0, 0.0] and high["lo"] == 0.0 and high["hi"] == min(KS)


# ----------------------------------------------------------------------------- the check
def _table(k_true_by_alpha, amp_by_alpha, Ks=KS, seeds=4):
    rows = []
    for a, k in k_true_by_alpha.items():
        rows += _mlp_rows(a, Ks, amp=amp_by_alpha[a]) + _minimal_rows(a, Ks, k, seeds=seeds)
    return _cols(rows)


def test_check_holds_where_the_measured_k_star_matches_and_fails_where_it_is_far():
    k0 = _hand_k_star(1.3)  # inside the predicted interval at amp = A
    t = _table({0.0: k0, 1.0: 1500.0, 1.5: 10.0}, {0.0: A, 1.0: A, 1.5: A / 100})
    v = {x.details["alpha"]: x for x in zipf_k_star(t, n_boot=100, fit_boot=20)}
    assert v[0.0].verdict == "holds", v[0.0].reason
    # the copies heuristic is relative to alpha = 0: there it is the prediction itself
    assert v[0.0].details["predicted_with_copies"] == v[0.0].details["predicted"]["point"]
    assert all(r > 1 for r in v[1.0].details["target_copies"]["relative_to_alpha0"])
    assert v[1.0].verdict == "does not hold", v[1.0].reason  # measured between 1024 and 2048, predicted ~ 300
    # alpha = 1.5: the MLP predicts K* above the grid, but every seed escaped: K* < 64
    assert v[1.5].predicted.startswith("> ") and v[1.5].measured.startswith("< ")
    assert v[1.5].verdict == "does not hold"
    assert v[1.0].details["ratio_to_alpha0"]["predicted"] == pytest.approx([1.0, 1.0])
    assert v[1.0].details["ratio_to_alpha0"]["measured"] > 2
    # both beyond the grid on the same side: consistent
    t2 = _table({0.0: k0, 1.5: 1e9}, {0.0: A, 1.5: A / 100})
    w = {x.details["alpha"]: x for x in zipf_k_star(t2, n_boot=50, fit_boot=20)}
    assert w[1.5].verdict == "holds" and w[1.5].measured.startswith("> "), w[1.5].reason


def test_check_below_its_minimums_is_inconclusive_and_without_runs_skipped():
    k0 = _hand_k_star(1.3)
    few_k = _cols(_mlp_rows(0.0, KS) + _minimal_rows(0.0, KS[:3], k0))  # 3 K for the minimal model
    (v,) = zipf_k_star(few_k, n_boot=20, fit_boot=20)
    assert v.verdict == "inconclusive" and "needs" in v.reason and ">= 4 finite K" in v.reason
    few_mlp = _cols(_mlp_rows(0.0, KS[:2]) + _minimal_rows(0.0, KS, k0))
    (v,) = zipf_k_star(few_mlp, n_boot=20, fit_boot=20)
    assert v.verdict == "inconclusive" and "MLP runs with c1 at >= 3 K" in v.reason
    few_seeds = _cols(_mlp_rows(0.0, KS) + _minimal_rows(0.0, KS[:4], k0, seeds=1))
    (v,) = zipf_k_star(few_seeds, n_boot=20, fit_boot=20)
    assert v.verdict == "inconclusive" and "seeds x K" in v.reason
    (v,) = zipf_k_star(_cols(_minimal_rows(0.0, KS, k0)), n_boot=20, fit_boot=20)
    assert v.verdict == "skipped"


def test_alpha_of_reads_the_column_and_defaults_to_uniform():
    from icl_kinetics.validate.core import seed_summaries

    rows = _minimal_rows(1.5, [64], 1.0, seeds=1)
    assert alpha_of(seed_summaries(_cols(rows))[0]) == 1.5
    for r in rows:
        del r["zipf_alpha"]
    assert alpha_of(seed_summaries(_cols(rows))[0]) == 0.0


def test_target_copies_matches_the_hand_formula_at_alpha_zero_and_grows_with_alpha():
    Nn, K = 20, 50
    # uniform items: the target's item is present w.p. 1 - (1 - 1/K)^N (then Bin(N, 1/K) >= 1
    # copies), else a context item is copied: 1 + Bin(N - 1, 1/(K - 1)) copies
    want = Nn / K + (1 - 1 / K) ** Nn * (1 + (Nn - 1) / (K - 1))
    got = target_copies(Nn, K, 0.0, sequences=40000, seed=1)
    assert abs(got - want) < 0.02, (got, want)
    assert target_copies(Nn, K, 1.5, sequences=4000) > 2 * target_copies(Nn, K, 0.0, sequences=4000)


def test_figure_and_report_build_from_synthetic_tables(tmp_path):
    pytest.importorskip("matplotlib")
    import csv
    import io
    import json

    from icl_kinetics.validate import figures as F
    from icl_kinetics.validate.report import run_validation

    t = _table({0.0: _hand_k_star(1.3), 0.5: 400.0, 1.0: 1e9, 1.5: 10.0}, {0.0: A, 0.5: A * 0.8, 1.0: A / 100,
                                                                             1.5: A})
    vs = zipf_k_star(t, n_boot=50, fit_boot=20)
    fig = F.zipf_k_star_figure([v.figure_data for v in vs])
    assert len(fig.axes) == 2
    F.save(fig, tmp_path / "z.png")
    assert (tmp_path / "z.png").stat().st_size > 10_000
    # the committed-table route: validate --preset zipf_rung2 --sweeps DIR --no-run
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(t))
    w.writeheader()
    for i in range(len(t["seed"])):
        w.writerow({k: t[k][i] for k in t})
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "zipf_rung2.csv.gz").write_bytes(gzip.compress(buf.getvalue().encode()))
    res = run_validation(preset="zipf_rung2", sweeps=tmp_path / "tables", run=False, progress=False,
                         out=tmp_path / "out")
    assert [v["verdict"] for v in res["verdicts"]] == [v.verdict for v in vs]
    assert (tmp_path / "out" / "zipf_k_star_N50.png").is_file()
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["figures"] == {"zipf_k_star:N50": str(tmp_path / "out" / "zipf_k_star_N50.png")}


# ----------------------------------------------------------------------------- the preset
def test_preset_run_ids_are_pinned_and_alpha_zero_is_rung2():
    from icl_kinetics.simulate.sweeps.presets import preset

    z = preset("zipf_rung2", "small")
    ids = [r.id for r in z.runs]
    assert len(ids) == 64
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == \
        "cd250bc20635dbddf7e564a26a3dbe3dd6153fc93d4e2fd423122472e0d15863"
    zero = {r.id for r in z.runs if r.config.model == "minimal" and r.config.zipf_alpha == 0}
    assert zero == {r.id for r in preset("rung2", "small").runs if r.config.N == 50}
    assert {r.config.zipf_alpha for r in z.runs} == {0.0, 0.5, 1.0, 1.5}
    assert len(preset("zipf_rung2", "paper").runs) == 128
