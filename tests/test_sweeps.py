"""Sweeps: specs and presets, the results store, failing runs, and the submitit executor (for
real, through submitit's local executor).  Kill-and-resume: tests/test_sweep_spec.py; faults:
tests/test_faults.py.  Tiny shapes only."""

import csv
import json
import os
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from icl_kinetics.errors import ParameterError  # noqa: E402
from icl_kinetics.simulate.engine import TrainConfig  # noqa: E402
from icl_kinetics.simulate.sweeps import SweepSpec, SweepStore, grid, run_sweep  # noqa: E402
from icl_kinetics.simulate.sweeps.presets import PRESETS, SCALES, estimate, preset  # noqa: E402

BASE = TrainConfig(model="transformer", N=9, D=12, width=16, batch_size=16, eval_size=64, iterations=100,
                   eval_every=50, lr=0.1, early_stop=None, checkpoint_every=50, workers=1)


def _table(path):
    with open(path, newline="") as f:
        return sorted((tuple(r.items()) for r in csv.DictReader(f)))


def test_grid_batches_seeds_and_ids_are_stable():
    spec = grid("g", "small", BASE, {"K": [20, 40], "lr": [0.1, 0.2]}, seeds=5, seeds_per_run=2)
    assert len(spec.runs) == 4 * 3  # 4 points x seed batches of 2, 2, 1
    assert sorted({(r.config.seed_offset, r.config.seeds) for r in spec.runs}) == [(0, 2), (2, 2), (4, 1)]
    again = SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert [r.id for r in again.runs] == [r.id for r in spec.runs]
    assert len({r.id for r in spec.runs}) == 12
    # execution details do not change a run's id; anything that changes the numbers does
    r = spec.runs[0]
    assert grid("g", "small", replace(BASE, workers=2, checkpoint_every=7), {"K": [20], "lr": [0.1]},
                seeds=2, seeds_per_run=2).runs[0].id == r.id
    assert grid("g", "small", replace(BASE, eval_size=65), {"K": [20], "lr": [0.1]}, seeds=2,
                seeds_per_run=2).runs[0].id != r.id


@pytest.mark.parametrize("scale", SCALES)
def test_every_preset_builds_at_both_scales(scale):
    for name in PRESETS:
        spec = preset(name, scale)
        assert spec.runs and spec.seed_iterations > 0
        e = estimate(spec)
        assert e["cpu_core_hours"] > 0 and e["runs"] == len(spec.runs)


def test_paper_presets_follow_the_paper_grids():
    ks = sorted({r.config.K for r in preset("fig2bc", "paper").runs})
    assert ks[:3] == [500, 11554, 22610] and ks[-1] == 100_000 and len(ks) == 10  # the paper's Fig. 2b
    a = preset("fig6a", "paper")
    assert sorted({r.config.N for r in a.runs}) == [49, 99, 149, 199, 249]  # len_context 50..250
    assert len({r.config.K for r in a.runs}) == 30 and all(r.config.iterations == 2000 * 469 for r in a.runs)
    e = preset("fig2e", "paper").runs[0].config
    assert (e.K, e.wd_attn, e.iterations, e.early_stop) == (10_000, 3e-3, 50_000 * 469, None)
    b = preset("fig6b", "paper")
    assert sum(r.config.seeds for r in b.runs if r.config.N == 99) == 100 and b.runs[0].config.K is None


def test_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec = grid("fail", "small", replace(BASE, K=20), {"lr": [0.1, 1e30]}, seeds=2, seeds_per_run=2)
    s = run_sweep(spec, tmp_path, progress=False, processes=2)
    assert (s["done"], s["failed"], s["pending"]) == (1, 1, 0)
    (rid, why), = s["failed_runs"].items()
    assert "non-finite training loss" in why and spec.runs[1].id == rid
    idx = json.loads((tmp_path / "index.json").read_text())
    assert idx[rid]["status"] == "failed" and idx[spec.runs[0].id]["status"] == "done"
    # a re-run skips both (failed runs only run again with retry_failed)
    again = run_sweep(spec, tmp_path, progress=False)
    assert (again["done"], again["failed"]) == (1, 1)


def test_reopening_a_folder_with_another_sweep_is_refused(tmp_path):
    run_sweep(grid("a", "small", replace(BASE, K=20), seeds=1, seeds_per_run=1), tmp_path, progress=False)
    with pytest.raises(ParameterError) as e:
        run_sweep(grid("a", "small", replace(BASE, K=40), seeds=1, seeds_per_run=1), tmp_path, progress=False)
    assert e.value.name == "out"


def test_submitit_executor_matches_local_executor(tmp_path):
    submitit = pytest.importorskip("submitit")
    spec = grid("sub", "small", BASE, {"K": [20, 40]}, seeds=2, seeds_per_run=1)
    run_sweep(spec, tmp_path / "local", progress=False, processes=2)
    ex = submitit.LocalExecutor(folder=str(tmp_path / "jobs"))
    ex.update_parameters(timeout_min=10)
    s = run_sweep(spec, tmp_path / "slurm", executor="slurm", submitit_executor=ex, progress=False)
    assert s["done"] == 4
    a = SweepStore(tmp_path / "local").collect().path
    b = SweepStore(tmp_path / "slurm").collect().path
    ta, tb = _table(a), _table(b)
    assert len(ta) == 4 * 3 and ta == tb


def test_sweep_cli_status_collect_list_and_bad_input(tmp_path, cli):
    code, out, err = cli(["sweep", "run", "smoke", "--out", str(tmp_path / "s"), "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert r["done"] == 6 and r["pending"] == 0
    code, out, _ = cli(["sweep", "status", str(tmp_path / "s"), "--json"])
    st = json.loads(out)
    assert code == 0 and st["done"] == 6 and st["estimated_seconds_left_per_process"] == 0
    # time spent: the runs' own seconds summed, and a span no shorter than the longest run
    idx = json.loads((tmp_path / "s" / "index.json").read_text())
    assert abs(st["run_seconds"] - sum(v["seconds"] for v in idx.values())) < 1e-9
    assert max(v["seconds"] for v in idx.values()) <= st["span_seconds"] + 1e-6
    code, out, _ = cli(["sweep", "collect", str(tmp_path / "s"), "--json"])
    c = json.loads(out)
    assert code == 0 and c["rows"] == 6 * 2 * 5 and os.path.isfile(c["table"])
    # the collected table follows the validation layer's published schema
    from icl_kinetics.validate.requirements import REQUIREMENTS
    from icl_kinetics.validate.schema import read_table

    t = read_table(c["table"])
    assert sum(k == float("inf") for k in t["K"]) == 2 * 2 * 5  # the K = None runs
    for check in ("k_star_scaling", "onset_times_linear", "transience"):
        assert set(REQUIREMENTS[check].columns) <= set(t), check
    code, out, _ = cli(["sweep", "list", "--json"])
    assert code == 0 and {p["preset"] for p in json.loads(out)["presets"]} == set(PRESETS)
    for argv, name in ((["sweep", "run", "fig99"], "preset"), (["sweep", "run", "smoke", "--scale", "huge"], "scale"),
                       (["sweep", "status", str(tmp_path)], "sweep folder"), (["sweep", "frobnicate"], "frobnicate")):
        code, _, err = cli(argv)
        assert code == 2 and name in err and len(err.strip().splitlines()) == 1, err


def test_several_sweeps_in_one_pool_match_each_sweep_run_alone(tmp_path):
    """run_local_many (what `validate --preset` uses) schedules runs of several sweeps in
    one pool, longest first; each sweep's table equals that of the sweep run alone."""
    from icl_kinetics.simulate.sweeps import run_local_many

    a = grid("a", "small", BASE, {"K": [20, None]}, seeds=2, seeds_per_run=1)
    b = grid("b", "small", replace(BASE, iterations=150), {"K": [40]}, seeds=2, seeds_per_run=1)
    res = run_local_many([SweepStore.create(tmp_path / "many" / s.name, s) for s in (a, b)], processes=2,
                         progress=False)
    assert res["a"]["done"] == 4 and res["b"]["done"] == 2
    for s in (a, b):
        run_sweep(s, tmp_path / "alone" / s.name, progress=False, processes=2)
        x = SweepStore(tmp_path / "many" / s.name).collect().path
        y = SweepStore(tmp_path / "alone" / s.name).collect().path
        assert _table(x) == _table(y) and len(_table(x)) > 0


def test_the_gpu_estimate_reproduces_the_h200_measurements_and_sweep_list_prices_on_cuda(cli):
    """gpu_ms_per_seed_iteration against the H200 figures in docs/performance.md: the three it
    is fitted to (2461, 5399 and 5352 seed-iterations/s at 16, 64 and 256 seeds, the paper's
    Fig. 2 shapes, no evaluation) within 5 %, and the one it is not fitted to (3160 at K = inf,
    N = 49, 64 seeds, evaluation every 100 iterations on 2000 sequences) within 10 %.
    A one-run sweep of 64 seeds at those shapes is priced at the measured 5399
    seed-iterations/s (plus the per-run overhead); `sweep list --device cuda --json` gives
    GPU hours for the paper's fig6a and fig6b as `estimate` does, and a device it does not
    know is refused (exit 2)."""
    from icl_kinetics.simulate.sweeps.presets import gpu_ms_per_seed_iteration

    ref = TrainConfig(model="transformer", N=99, K=20_000, width=512, batch_size=128, eval_every=10 ** 9)
    for seeds, rate in ((16, 2461), (64, 5399), (256, 5352)):
        assert abs(1e3 / gpu_ms_per_seed_iteration(ref, seeds) / rate - 1) < 0.05, seeds
    n49 = TrainConfig(model="transformer", N=49, K=None, width=512, batch_size=128, eval_every=100, eval_size=2000)
    assert abs(1e3 / gpu_ms_per_seed_iteration(n49, 64) / 3160 - 1) < 0.10
    code, out, _ = cli(["sweep", "list", "--device", "cuda", "--json"])
    assert code == 0
    r = {p["preset"]: p for p in json.loads(out)["presets"]}
    for name in ("fig6a", "fig6b"):
        e = r[name]["paper"]
        assert e["device"] == "cuda" and e["gpu_hours"] > 0 and e == estimate(preset(name, "paper"), device="cuda")
    one = grid("one", "custom", replace(ref, iterations=1000), {"K": [20_000]}, seeds=64, seeds_per_run=64)
    e = estimate(one, device="cuda")
    assert e["packs"] == 1 and abs(e["gpu_hours"] * 3600 / (64_000 / 5399 + 1.5) - 1) < 0.05
    code, _, err = cli(["sweep", "list", "--device", "tpu"])
    assert code == 2 and "device" in err
