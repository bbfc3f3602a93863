"""Grid batching: runs that share every tensor shape train as one seed-batched pack
(``train_packed``), each with its own items, test sets, hyperparameters, early stopping,
metrics and out folder.  The reference is each run trained alone with ``train`` (the
engine as it was; tests/test_engine.py checks it).  Tiny shapes only."""

import csv
import json
import math
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from icl_kinetics.errors import ParameterError  # noqa: E402
from icl_kinetics.simulate import train_packed  # noqa: E402
from icl_kinetics.simulate.engine import METRIC_COLUMNS, TrainConfig, pack_check, pack_key, train  # noqa: E402

TINY = dict(N=7, D=10, width=16, batch_size=16, eval_size=120, iterations=60, eval_every=20, lr=0.1,
            early_stop=None, workers=1, checkpoint_every=20)


def _pack(model, **kw):
    """Three runs that differ in K, wd_attn (or wd_mlp), lr and seed, with 2, 3 and 2 seeds."""
    base = TrainConfig(model=model, **{**TINY, **kw})
    return [replace(base, K=40, seeds=2),
            replace(base, K=80, wd_attn=1e-3, wd_mlp=2e-3, seed=1, seeds=3, seed_offset=3),
            replace(base, K=60, lr=0.05, seed=2, seeds=2)]


def _max_diff(a, b):
    """Largest relative difference between two lists of metric rows (same keys and order)."""
    assert [(r["seed"], r["iteration"]) for r in a] == [(r["seed"], r["iteration"]) for r in b]
    worst = 0.0
    for x, y in zip(a, b):
        for k in METRIC_COLUMNS:
            u, v = x[k], y[k]
            if isinstance(u, float) and math.isnan(u):
                assert math.isnan(v), k
                continue
            worst = max(worst, abs(u - v) / (1 + abs(u)))
    return worst


@pytest.mark.parametrize("labels", ["onehot", "pm1"])
@pytest.mark.parametrize("model", ["transformer", "mlp", "minimal"])
def test_a_pack_gives_each_run_its_alone_metrics_bit_for_bit(model, labels):
    """Bitwise: every seed draws the numbers it draws alone, the batched matmuls compute
    each seed's slice with the same kernels (2 or more seeds active on both sides), the loss
    rows are padded to whole vector chunks (batch 16 here: group._LANES), and the SGD update
    runs on slices of equal (lr, wd) with the same float32 operations.  Both label modes."""
    kw = {"width": 8} if model == "minimal" else {}
    cfgs = _pack(model, labels=labels, **kw)
    packed = train_packed(cfgs, progress=False)
    for cfg, res in zip(cfgs, packed):
        alone = train(cfg, progress=False)
        assert json.dumps(res.rows) == json.dumps(alone.rows), cfg
        assert (res.t_icl, res.status, res.iterations_done, res.seed_iterations) == \
            (alone.t_icl, alone.status, alone.iterations_done, alone.seed_iterations)
    # the runs really differ (their own items, hyperparameters and seeds)
    assert packed[0].rows[-1]["train_loss"] != packed[1].rows[-1]["train_loss"]


def test_own_schedules_caps_and_early_stop_per_run():
    """Runs with their own eval_every, log_every, iterations, early_stop and threshold: each
    run's rows, t_ICL, status and iterations done are those of the run alone.  Tolerance
    1e-5 (relative): once a run alone is down to one active seed its matmuls may round
    differently from the batched ones (about 1e-8 on an earlier machine; equal bit for bit on
    the AMX machine of 2026-12-03, docs/engine.md)."""
    base = TrainConfig(model="minimal", **{**TINY, "width": 0, "lr": 0.5, "iterations": 400, "eval_every": 10,
                                           "checkpoint_every": 100})
    cfgs = [replace(base, K=40, seeds=3, early_stop=0.9, t_icl_threshold=0.8),
            replace(base, K=200, seeds=2, seed=4, eval_every=25, log_every=50, iterations=150),
            replace(base, K=20, seeds=2, seed=5, early_stop=0.95, wd_attn=1e-2, beta0=(0.5, 2.0))]
    packed = train_packed(cfgs, progress=False)
    stopped = 0
    for cfg, res in zip(cfgs, packed):
        alone = train(cfg, progress=False)
        assert _max_diff(res.rows, alone.rows) <= 1e-5
        assert (res.t_icl, res.status, res.iterations_done) == (alone.t_icl, alone.status, alone.iterations_done)
        stopped += res.status.count("stopped")
    assert stopped >= 2  # early stopping really happened inside the pack
    r1 = packed[1]  # its own cap, evaluations every 25 and rows every 50 (and where a seed acquires ICL)
    assert r1.iterations_done == 150 and r1.seed_iterations == 300
    assert {r["iteration"] for r in r1.rows if r["iteration"] % 50} <= set(r1.t_icl) - {None}
    assert {r["iteration"] % 25 for r in r1.rows} == {0}


def test_the_sgd_update_on_slices_equals_todays_update_bit_for_bit():
    """The pack's update (group._sgd_update: one slice per run of equal lr and weight decays)
    against each run's parameters updated alone as the engine did before packs, the whole
    tensor at once: ``g.add(v, alpha=wd)`` then ``v.sub_(g, alpha=lr)``.  The per-seed tensor
    form (lr and wd as (S, 1, 1) tensors) is not bitwise equal: its products round separately."""
    from icl_kinetics.simulate.group import _sgd_update

    gen = torch.Generator().manual_seed(3)
    shapes = {"wq": (65, 65), "ln_w": (65,), "W2": (33, 33), "b3": (1,)}
    v = {k: torch.randn(9, *sh, generator=gen) for k, sh in shapes.items()}
    g = {k: torch.randn(9, *sh, generator=gen) for k, sh in shapes.items()}
    runs = [(0, 2, 0.05, 3e-4, 0.0), (2, 7, 0.01, 0.0, 2e-3), (7, 9, 0.05, 1e-2, 1e-2)]
    att = ("wq", "ln_w")
    ref = {}
    for k in shapes:
        parts = []
        for a, b, lr, wa, wm in runs:  # each run alone: its own (b - a, ...) tensors
            wd, x, gr = (wa if k in att else wm), v[k][a:b].clone(), g[k][a:b].clone()
            if wd:
                gr = gr.add(x, alpha=wd)
            parts.append(x.sub_(gr, alpha=lr))
        ref[k] = torch.cat(parts)
    out = {k: x.clone() for k, x in v.items()}
    _sgd_update(out, g, runs, att)
    assert all(torch.equal(out[k], ref[k]) for k in shapes)
    lr_t = torch.tensor([r[2] for r in runs for _ in range(r[1] - r[0])]).view(9, 1, 1)
    wd_t = torch.tensor([r[3] for r in runs for _ in range(r[1] - r[0])]).view(9, 1, 1)
    assert not torch.equal(v["wq"] - lr_t * (g["wq"] + wd_t * v["wq"]), ref["wq"])


def test_pack_key_and_refusals():
    a = TrainConfig(model="transformer", K=40, **TINY)
    same = [replace(a, K=80), replace(a, wd_attn=1e-3, seed=3), replace(a, lr=0.2, iterations=10, eval_every=5),
            replace(a, item_seed=4, early_stop=0.9, t_icl_threshold=0.6)]
    assert all(pack_key(c) == pack_key(a) for c in same)
    for field, value in [("N", 9), ("width", 32), ("D", 12), ("batch_size", 8), ("eval_size", 64),
                         ("labels", "pm1"), ("model", "transformer2"), ("contexts", "equalized"), ("K", None)]:
        a = replace(a, N=8) if field == "contexts" else TrainConfig(model="transformer", K=40, **TINY)
        b = replace(a, **{field: value})
        assert pack_key(b) != pack_key(a), field
        with pytest.raises(ParameterError) as e:
            train_packed([a, b], progress=False)
        assert e.value.name == field and "as in the pack's first run" in str(e.value), field
    a = TrainConfig(model="transformer", K=40, **TINY)
    k_inf = TrainConfig(model="minimal", K=None, **{**TINY, "width": 0})  # the overlap sampler: never packed
    assert pack_key(k_inf) != pack_key(replace(k_inf, seed=1))
    with pytest.raises(ParameterError, match="backend"):
        pack_check([k_inf, replace(k_inf, seed=1)])
    with pytest.raises(ParameterError, match="distinct runs"):
        pack_check([a, replace(a, iterations=7)])
    with pytest.raises(ParameterError, match="cfgs"):
        train_packed([], progress=False)
    with pytest.raises(ParameterError, match="outs"):
        train_packed([a, same[0]], outs=["x"], progress=False)


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pack_files_resume_alone_and_in_a_pack(tmp_path):
    """A pack writes each run's folder as train() does; a pack stopped at a checkpoint resumes
    to the uninterrupted numbers, and a run's packed checkpoint resumes alone."""
    cfgs = _pack("transformer", iterations=80)
    ref = [tmp_path / f"ref{i}" for i in range(3)]
    outs = [tmp_path / f"pack{i}" for i in range(3)]
    for c, o in zip(cfgs, ref):
        train(c, out=o, progress=False)
    seen = []
    res = train_packed(cfgs, outs, progress=False, on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2]
    for o, r in zip(outs, ref):
        assert (o / "metrics.csv").read_bytes() == (r / "metrics.csv").read_bytes()
        assert json.loads((o / "config.json").read_text()) == json.loads((r / "config.json").read_text())
        s, t = json.loads((o / "summary.json").read_text()), json.loads((r / "summary.json").read_text())
        for k in ("t_icl", "status", "iterations_done", "final_icl_acc", "seed_iterations"):
            assert s[k] == t[k], k
    # interrupted: the pack trained to 40 (a checkpoint), then resumed with the full caps
    part = [tmp_path / f"part{i}" for i in range(3)]
    train_packed([replace(c, iterations=40) for c in cfgs], part, progress=False)
    resumed = train_packed(cfgs, part, progress=False)
    for a, b in zip(resumed, res):
        assert json.dumps(a.rows) == json.dumps(b.rows)
    # a packed run's checkpoint resumes alone, and runs resume in a pack at different iterations
    alone = [tmp_path / f"alone{i}" for i in range(3)]
    train_packed([replace(cfgs[0], iterations=40)], alone[:1], progress=False)
    train(replace(cfgs[1], iterations=20), out=alone[1], progress=False)
    mixed = train_packed(cfgs, alone, progress=False)
    for a, b in zip(mixed, res):
        assert json.dumps(a.rows) == json.dumps(b.rows)
    for o, r in zip(alone, ref):
        assert (o / "metrics.csv").read_bytes() == (r / "metrics.csv").read_bytes()


def test_plan_packs_groups_compatible_runs_and_balances_the_pool():
    from icl_kinetics.simulate.sweeps import grid, plan_packs

    base = TrainConfig(model="transformer", **TINY)
    spec = grid("p", "small", base, {"N": [7, 9], "K": [20, 40, 60, 80]}, seeds=4, seeds_per_run=2)
    packs = plan_packs(spec.runs, processes=1, max_seeds=8)
    assert sorted(r.id for p in packs for r in p) == sorted(r.id for r in spec.runs)  # every run once
    for p in packs:
        assert len({pack_key(r.config) for r in p}) == 1 and sum(r.config.seeds for r in p) <= 8
    assert len(packs) == 4  # 16 seeds per N, at most 8 per pack
    assert len(plan_packs(spec.runs, processes=8, max_seeds=64)) == 16  # >= 2 packs per process: 1 run each
    assert len(plan_packs(spec.runs, processes=1, max_seeds=64)) == 2  # one pack per N
    tight = plan_packs(spec.runs, processes=1, max_seeds=64, memory=1.5 * spec.runs[0].config.estimate_bytes()[0])
    assert all(len(p) == 1 for p in tight)  # memory for one run per pack


def test_the_local_executor_packs_a_sweep_and_collects_the_unpacked_table(tmp_path):
    """The pool trains a spec sweep as packs (one worker process: 2 packs of 3 runs); its
    collected table (store API) equals, byte for byte, the table of the same sweep run one
    run at a time (execute_run), and resuming a packed sweep leaves it unchanged."""
    from icl_kinetics.simulate.sweeps import SweepStore, execute_run, load_spec, plan_packs, run_sweep

    spec_file = tmp_path / "g.toml"
    spec_file.write_text("""
name = "gb"
[scale.small]
seeds = 2
seeds_per_run = 2
[scale.small.fixed]
model = "transformer"
N = 7
D = 10
width = 16
batch_size = 16
eval_size = 120
iterations = 60
eval_every = 20
lr = 0.1
early_stop = 0.9
checkpoint_every = 20
workers = 1
[scale.small.grid]
K = [20, 40, 80]
wd_attn = [0.0, 0.001]
""")
    spec = load_spec(spec_file, "small")
    assert [len(p) for p in plan_packs(spec.runs, processes=1)] == [3, 3]
    res = run_sweep(spec, tmp_path / "packed", progress=False, processes=1)
    assert res["done"] == 6
    alone = SweepStore.create(tmp_path / "alone", spec)
    for r in spec.runs:
        assert execute_run(str(alone.root), r.id)["status"] == "done"
    a, b = SweepStore(tmp_path / "packed").collect(), alone.collect()
    assert a.ok and b.ok and a.rows == b.rows > 0
    assert open(a.path, "rb").read() == open(b.path, "rb").read()
    again = run_sweep(spec, tmp_path / "packed", progress=False, processes=1)  # all done: nothing runs
    assert again["done"] == 6 and open(SweepStore(tmp_path / "packed").collect().path, "rb").read() == \
        open(b.path, "rb").read()
