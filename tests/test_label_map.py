"""Per-seed label maps (``label_map="per-seed"``): each seed its own balanced item -> label
map over the shared items, drawn from its own stream, as the paper's code (which redraws the
map in every run) does in effect.  The default ``"shared"`` keeps every run id and hash.

References: maps counted with plain loops; a "shared" run whose item set carries the seed's
own map (the engine's established path, whose item set is swapped in by hand), which must give
the seed's metrics bit for bit; dense tokens built by ``data.Batch.tokens`` through the naive
oracle ``models.transformer_reference``.  Tiny shapes only."""

import json
import math
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from icl_kinetics.errors import ParameterError  # noqa: E402
from icl_kinetics.simulate import data, engine, train_packed  # noqa: E402
from icl_kinetics.simulate.engine import TrainConfig, pack_check, pack_key, train  # noqa: E402
from icl_kinetics.simulate.models import transformer_reference  # noqa: E402

TINY = dict(N=7, D=10, width=16, batch_size=16, eval_size=120, iterations=30, eval_every=10, lr=0.1,
            early_stop=None, workers=1, checkpoint_every=10)
CPU = torch.device("cpu")


def _seed_rows(rows, seed):
    return [r for r in rows if r["seed"] == seed]


def _seed_map(g, q):
    """Seed position q's label map as the engine holds it (group g)."""
    a = int(g.lstart[q])
    K = g.samplers[q].cfg.K if hasattr(g.samplers[q], "cfg") else g.samplers[q].K
    return g.lab[a:a + K]


# ----------------------------------------------------------------------------- (a) balanced, distinct
def test_each_seeds_map_is_balanced_and_the_seeds_maps_differ():
    K = 40
    maps = [data.seed_label_map(K, 3, i) for i in range(6)]
    for m in maps:
        vals = m.tolist()
        assert len(vals) == K and m.dtype == torch.float32
        plus = sum(1 for v in vals if v == 1.0)
        minus = sum(1 for v in vals if v == -1.0)
        assert plus == minus == K // 2  # exactly K/2 of each, nothing else
    for i in range(6):
        for j in range(i + 1, 6):
            assert not torch.equal(maps[i], maps[j]), (i, j)
    # other base seeds give other maps; the shared map (from item_seed) is none of them
    assert not torch.equal(data.seed_label_map(K, 4, 0), maps[0])
    _, shared = data.make_item_set(K, 10, data.item_generator(10))
    assert all(not torch.equal(shared, m) for m in maps)


def test_the_engine_gives_every_seed_its_own_balanced_map():
    cfg = TrainConfig(model="transformer", K=40, seeds=4, label_map="per-seed", **TINY)
    (g,) = engine._build(cfg, CPU)
    for q in range(4):
        m = _seed_map(g, q)
        assert torch.equal(m, data.seed_label_map(40, cfg.seed, q))
        assert int((m == 1).sum()) == int((m == -1).sum()) == 20
        assert g.samplers[q].labels.data_ptr() == m.data_ptr()  # the sampler reads the seed's own map
    assert g.tables[0].shape == (80, g.tables[1].shape[1])  # two context rows per item, one table


# ----------------------------------------------------------------------------- (b) reproducible
def test_a_seeds_map_depends_only_on_its_seed_index():
    assert torch.equal(data.seed_label_map(40, 0, 2), data.seed_label_map(40, 0, 2))
    base = TrainConfig(model="transformer", K=40, seeds=4, label_map="per-seed", **{**TINY, "workers": 2})
    groups = engine._build(base, CPU)  # two groups of two seeds
    inside = [_seed_map(g, q) for g in groups for q in range(len(g.active))]
    for i in range(4):
        (alone,) = engine._build(replace(base, seeds=1, seed_offset=i, workers=1), CPU)
        assert torch.equal(_seed_map(alone, 0), inside[i]), i
        assert torch.equal(inside[i], data.seed_label_map(40, 0, i))


def test_a_seed_trains_the_same_alone_as_inside_a_batch():
    """Seed 2 alone (seeds=1, seed_offset=2) against seed 2 of a 4-seed batch: 1e-5 (relative;
    one active seed takes torch's one-matrix path, docs/engine.md "Grid batching")."""
    cfg = TrainConfig(model="transformer", K=40, seeds=4, label_map="per-seed", **{**TINY, "workers": 2})
    batch = train(cfg, progress=False)
    alone = train(replace(cfg, seeds=1, seed_offset=2, workers=1), progress=False)
    a, b = _seed_rows(batch.rows, 2), alone.rows
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        for k, v in x.items():
            if math.isnan(v):
                assert math.isnan(y[k]), k
            else:
                assert abs(v - y[k]) <= 1e-5 * (1 + abs(v)), (k, v, y[k])


# ----------------------------------------------------------------------------- (c) = a shared run with the seed's map
def _shared_with_map(cfg, i, monkeypatch):
    """Seed i of ``cfg`` trained as a "shared" run whose item set carries seed i's own map:
    the item stream draws exactly what it draws (items, then the ICL and IWL test sets), and
    only the training labels are replaced.  The same seeds at the same positions (the other
    seeds train on seed i's map too; only seed i's rows are compared): a seed's slice of the
    batched matmuls is rounded the same only at the same position when T is odd (pm1)."""
    orig = data.make_item_set
    own = data.seed_label_map(cfg.K, cfg.seed, cfg.seed_offset + i)
    calls = []

    def patched(K, D, generator, device="cpu"):
        items, labels = orig(K, D, generator, device)
        calls.append(K)
        return (items, own.to(items.device)) if len(calls) == 1 else (items, labels)  # the ICL test's: untouched

    with monkeypatch.context() as mp:
        mp.setattr(data, "make_item_set", patched)
        ref = train(replace(cfg, label_map="shared"), progress=False)
    assert calls[0] == cfg.K
    return _seed_rows(ref.rows, cfg.seed_offset + i)


@pytest.mark.parametrize("model,contexts,labels", [
    ("transformer", "iid", "onehot"), ("transformer", "equalized", "onehot"), ("transformer", "iid", "pm1"),
    ("minimal", "iid", "onehot"), ("minimal", "equalized", "onehot"), ("mlp", "iid", "onehot"),
    ("transformer2", "iid", "onehot"), ("transformer_itemblind", "iid", "onehot"),
    ("transformer_split", "iid", "onehot"), ("transformer_noln", "iid", "onehot")])
def test_each_seed_gets_the_metrics_of_a_shared_run_with_its_own_map(model, contexts, labels, monkeypatch):
    """Bitwise: the two-row token table holds the rows the seed's own one-row table would, the
    other models read the same numbers through per-seed tables of the batch's items, the IWL
    sequences are those the item stream draws for the seed's map, and both sides run the same
    seeds at the same positions."""
    N = 8 if contexts == "equalized" else 7
    cfg = TrainConfig(model=model, K=40, seeds=2, label_map="per-seed", contexts=contexts, labels=labels,
                      **{**TINY, "N": N})
    res = train(cfg, progress=False)
    assert [r["iteration"] for r in _seed_rows(res.rows, 0)] == [0, 10, 20, 30]
    for i in range(2):
        mine, ref = _seed_rows(res.rows, i), _shared_with_map(cfg, i, monkeypatch)
        assert json.dumps(mine) == json.dumps(ref), (model, contexts, labels, i)
    # the seeds' maps matter: the same seed with the shared map trains differently
    shared = train(replace(cfg, label_map="shared"), progress=False)
    assert json.dumps(_seed_rows(shared.rows, 0)) != json.dumps(_seed_rows(res.rows, 0))
    # the ICL test set (novel items, fresh labels) is the one the shared run uses: at iteration 0
    # (same initial parameters) the ICL columns agree
    if model != "mlp":
        assert _seed_rows(shared.rows, 0)[0]["icl_acc"] == _seed_rows(res.rows, 0)[0]["icl_acc"]


def test_per_seed_runs_in_a_pack_equal_the_runs_alone():
    base = TrainConfig(model="transformer", label_map="per-seed", **TINY)
    cfgs = [replace(base, K=40, seeds=2), replace(base, K=60, seeds=3, seed=1, seed_offset=2, lr=0.05)]
    packed = train_packed(cfgs, progress=False)
    for cfg, res in zip(cfgs, packed):
        assert json.dumps(res.rows) == json.dumps(train(cfg, progress=False).rows), cfg
    # a pack holds one label-map kind (the context table has two rows per item or one)
    with pytest.raises(ParameterError, match="label_map"):
        pack_check([cfgs[0], replace(cfgs[1], label_map="shared")])


# ----------------------------------------------------------------------------- (d) default, legacy files, hashes
def test_default_is_per_seed_and_files_without_the_field_read_as_shared():
    import hashlib

    cfg = TrainConfig(model="transformer", K=40, seeds=2, **TINY)
    assert cfg.label_map == "per-seed"  # the paper's: each seed its own map
    assert cfg.to_dict()["label_map"] == "per-seed" and cfg.identity()["label_map"] == "per-seed"
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # a shared run is written, and hashed, exactly as every run before the field existed
    shared = replace(cfg, label_map="shared")
    old = shared.to_dict()
    assert "label_map" not in old and "label_map" not in shared.identity()
    ident = {k: v for k, v in old.items() if k not in ("iterations", "workers", "checkpoint_every", "w0",
                                                         "log_every", "backend")}
    assert shared.config_hash() == hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    # a config.json / sweep.json entry without the field (any file written before it) is shared
    back = TrainConfig.from_dict(old)
    assert back == shared and back.label_map == "shared" and back.config_hash() == shared.config_hash()
    assert cfg.config_hash() != shared.config_hash()


@pytest.mark.parametrize("model,width", [("transformer", 16), ("minimal", 0)])
def test_k_inf_accepts_either_map_with_one_id_and_the_same_numbers(model, width):
    """K = inf has no label map: either value validates, neither enters the run id or the
    pack key, and both train the same numbers; a legacy file (no field) reads as shared."""
    kw = dict(model=model, K=None, beta0=0.0, **{**TINY, "width": width, "iterations": 20})
    a, b = TrainConfig(label_map="per-seed", **kw), TrainConfig(label_map="shared", **kw)
    a.validate()
    b.validate()
    assert a.config_hash() == b.config_hash() and pack_key(a) == pack_key(b)
    assert TrainConfig.from_dict(a.to_dict()) == a and TrainConfig.from_dict(b.to_dict()) == b
    assert "label_map" not in b.to_dict()
    assert json.dumps(train(a, progress=False).rows) == json.dumps(train(b, progress=False).rows)
    # a grid over K from a K = inf base keeps the base's map at every finite K
    assert replace(a, K=40).label_map == "per-seed" and replace(b, K=40).label_map == "shared"


def test_presets_pin_their_map_and_the_ladder_takes_the_default():
    from pathlib import Path

    from icl_kinetics.simulate.sweeps.presets import preset

    fx = json.loads((Path(__file__).parent / "data" / "preset_runs_before_specs.json").read_text())["presets"]
    # small scale: the shared map its committed tables were measured with, so its ids are the pinned ones
    assert [r.id for r in preset("smoke", "small").runs] == fx["smoke/small"]["run_ids"]
    assert {r.config.label_map for r in preset("fig6a", "small").runs} == {"shared"}
    ladder = preset("scale_ladder", "small").runs
    assert {r.config.label_map for r in ladder} == {"per-seed"}


# ----------------------------------------------------------------------------- (e) bad values
@pytest.mark.parametrize("value", ["perseed", "per_seed", "", None, 1])
def test_bad_label_maps_are_refused_naming_label_map(value):
    with pytest.raises(ParameterError, match="label_map") as e:
        TrainConfig(model="transformer", K=40, label_map=value).validate()
    assert "shared" in str(e.value) and "per-seed" in str(e.value)


def test_seed_label_map_refuses_bad_arguments():
    for bad in (("K", 7), ("seed", -1), ("index", -2)):
        kw = {"K": 40, "seed": 0, "index": 0, bad[0]: bad[1]}
        with pytest.raises(ParameterError, match=bad[0]):
            data.seed_label_map(**kw)


def test_the_flag_and_spec_files(cli, tmp_path):
    from icl_kinetics._flags import TRAIN_FLAGS

    assert tuple(TRAIN_FLAGS["label_map"]["choices"]) == data.LABEL_MAPS
    code, out, err = cli(["train", "--help"])
    assert code == 0 and "--label-map" in out and "per-seed" in out
    flags = ["train", "--model", "transformer", "--K", "40", "--N", "7", "--D", "10", "--width", "16",
             "--batch-size", "16", "--eval-size", "120", "--seeds", "2", "--iterations", "20", "--eval-every", "10",
             "--lr", "0.1", "--early-stop", "none", "--workers", "1", "--json"]
    code, out, err = cli(flags + ["--label-map", "per-seed", "--out", str(tmp_path / "a")])
    assert code == 0, err
    got = json.loads(out)
    assert got["config"]["label_map"] == "per-seed"
    api = train(TrainConfig(model="transformer", K=40, seeds=2, label_map="per-seed",
                            **{**TINY, "iterations": 20}), progress=False)
    assert got["final_iwl_acc"] == api.summary()["final_iwl_acc"]
    code, out, err = cli(flags + ["--label-map", "perseed", "--out", str(tmp_path / "b")])
    assert code == 2 and "label-map" in err
    # without the flag: the default, a map per seed (the same numbers)
    code, out, err = cli(flags + ["--out", str(tmp_path / "d")])
    assert code == 0 and json.loads(out)["final_iwl_acc"] == got["final_iwl_acc"]
    # K = inf has no map: the flag is accepted and the run is the same as without it
    inf = [f if f != "40" else "inf" for f in flags]
    code, out, err = cli(inf + ["--label-map", "per-seed", "--out", str(tmp_path / "c")])
    code2, out2, err2 = cli(inf + ["--label-map", "shared", "--out", str(tmp_path / "e")])
    assert code == 0 and code2 == 0, err + err2
    a, b = json.loads(out), json.loads(out2)
    assert a["final_icl_acc"] == b["final_icl_acc"]
    assert {k: v for k, v in a["config"].items() if k != "label_map"} == b["config"]
    # a spec file takes label_map like any TrainConfig field, in [fixed] or as an axis
    from icl_kinetics.simulate.sweeps.specfile import load_spec

    spec = tmp_path / "s.toml"
    spec.write_text('name = "lm"\nseeds = 2\n[fixed]\nmodel = "transformer"\nK = 40\nN = 7\nD = 10\nwidth = 16\n'
                    '[grid]\nlabel_map = ["shared", "per-seed"]\n')
    runs = load_spec(spec).runs
    assert [r.config.label_map for r in runs] == ["shared", "per-seed"]
    assert runs[0].id != runs[1].id
    spec.write_text('name = "lm"\nseeds = 2\n[fixed]\nK = 40\nlabel_map = "bogus"\n')
    with pytest.raises(ParameterError, match="label_map"):
        load_spec(spec)


# ----------------------------------------------------------------------------- (f) drawn batches
def test_drawn_batches_carry_each_seeds_labels_and_match_the_dense_oracle():
    cfg = TrainConfig(model="transformer", K=40, seeds=3, label_map="per-seed", **TINY)
    (g,) = engine._build(cfg, CPU)
    with torch.no_grad():
        inp, y = g._draw()
        _, items, _, rows, tgt = inp
        logit, _ = g._logits(g.p, inp)
        for q in range(3):
            own = data.seed_label_map(40, cfg.seed, q)
            item = rows[q] // 2
            assert torch.equal(y[q], own[tgt[q]])  # y is the seed's map at the target's item
            assert torch.equal(rows[q] % 2, (own[item] > 0).long())  # context rows carry its labels
            assert all(int(t) in set(c.tolist()) for c, t in zip(item, tgt[q]))  # target in its context
            tok = data.Batch(items, own, item, tgt[q]).tokens("onehot")  # [x, onehot(own label)], target [x, 0]
            ref = transformer_reference({k: v[q:q + 1] for k, v in g.p.items()}, tok[None])[0]
            assert (logit[q] - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())


def test_a_pack_draws_each_seeds_labels_at_its_runs_rows():
    base = TrainConfig(model="mlp", label_map="per-seed", **TINY)
    cfgs = [replace(base, K=40, seeds=2), replace(base, K=60, seeds=2, seed=1)]
    (g,), _ = engine._build_pack(cfgs, CPU)
    (_, idx), y = g._draw()
    for q, (cfg, i, off) in enumerate([(cfgs[0], 0, 0), (cfgs[0], 1, 0), (cfgs[1], 0, 40), (cfgs[1], 1, 40)]):
        own = data.seed_label_map(cfg.K, cfg.seed, i)
        local = idx[q] - off
        assert bool(((local >= 0) & (local < cfg.K)).all())
        assert torch.equal(y[q], own[local])


def test_equalized_iwl_sequences_follow_each_seeds_map():
    """Per seed: the target is absent from the context and the context holds exactly N/2 items
    of each of the seed's own labels (counted with loops)."""
    cfg = TrainConfig(model="transformer", K=40, seeds=2, label_map="per-seed", contexts="equalized",
                      **{**TINY, "N": 8})
    (g,) = engine._build(cfg, CPU)
    assert g.iwl_seq[0][0] is not g.iwl_seq[1][0]
    for q in range(2):
        own = data.seed_label_map(40, cfg.seed, q).tolist()
        ctx, tgt = g.iwl_seq[q]
        assert ctx.shape == (cfg.eval_size, 8)
        for c, t in zip(ctx.tolist(), tgt.tolist()):
            assert t not in c
            assert sum(1 for j in c if own[j] > 0) == 4
    # iid contexts: the IWL sequences do not depend on the labels, one set serves every seed
    (h,) = engine._build(replace(cfg, contexts="iid", N=7), CPU)
    assert h.iwl_seq[0][0] is h.iwl_seq[1][0] is h.members[0].shared.iwl.ctx


def test_memory_estimate_counts_the_second_table():
    cfg = TrainConfig(model="transformer", K=400_000, seeds=8, label_map="shared")
    assert replace(cfg, label_map="per-seed").estimate_bytes()[0] > cfg.estimate_bytes()[0]
