"""The report (validate/report.py): a hand-written table through validate_runs, several tables
stacked, the preset report read from existing sweeps, and bad input at the command line."""

import csv
import math

import numpy as np

from icl_kinetics.validate import read_table, run_validation, seed_summaries, validate_runs
from validate_tables import cols, kstar_table, mlp_table, write_csv


def test_handwritten_table_through_validate_runs(tmp_path):
    """A table written by hand in the published schema (no training code) gives the expected
    verdicts: onset times linear in N, K* slope consistent with the paper's nu."""
    rows = []
    rng = np.random.default_rng(3)
    for N in (10, 20, 30, 40):
        for s in range(12):
            t = 100 * N * math.exp(-rng.normal(0, 0.3))
            rows += [{"seed": f"s{s}", "iteration": 0, "N": N, "K": "inf", "icl_acc": 0.5},
                     {"seed": f"s{s}", "iteration": round(t), "N": N, "K": "inf", "icl_acc": 0.97}]
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    verdicts, skipped = validate_runs(path)
    byname = {v.prediction: v for v in verdicts}
    assert byname["onset_times_linear"].verdict == "holds"
    assert skipped["onset_times_shape"] == "missing columns: beta"
    assert byname["k_star_scaling"].verdict == "skipped"  # no finite K
    assert skipped["memorization_law"] == "missing columns: model, c1, lr"
    # every check is either run or named with its reason: none is silently absent
    from icl_kinetics.validate.requirements import REQUIREMENTS

    assert set(REQUIREMENTS) <= set(byname) | set(skipped)
    r = run_validation(runs=path, out=tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "onset_times_linear" in text and "**holds**" in text and "missing columns" in text
    assert read_table(path)["K"][0] == math.inf and r["figures"]


def test_validate_runs_stacks_several_tables_and_takes_nu_from_their_mlp_runs(tmp_path):
    """MLP runs in one file (nu = 0.4 by construction), K* runs in another (slope 2.5 =
    1/nu), and a third file with no K column at all: the stacked table must predict the
    slope from the measured nu (not the paper's 0.7, whose 1/nu = 1.43 misses it), and
    the K-less rows must not be taken for K = inf runs."""
    mlp = write_csv(tmp_path / "mlp.csv", mlp_table(nu=0.4, T=200_000, every=200))
    ks = write_csv(tmp_path / "kstar.csv", kstar_table(slope=2.5))
    nok = [{"seed": s, "iteration": float(it), "N": float(N), "icl_acc": 0.99 if it else 0.5}
           for N in (10, 20, 30) for s in range(4) for it in (0, 100 * N)]
    nok = write_csv(tmp_path / "no_k.csv", cols(nok))
    from icl_kinetics.validate import read_tables

    t = read_tables([mlp, ks, nok])
    assert len(t["seed"]) == sum(len(read_table(p)["seed"]) for p in (mlp, ks, nok))
    assert math.isnan(t["K"][-1]) and math.isnan(t["c1"][-1]) and t["model"][-1] == ""
    verdicts, skipped = validate_runs([mlp, ks, nok])
    by = {v.prediction: v for v in verdicts}
    assert by["memorization_law"].verdict == "holds"
    assert abs(by["memorization_law"].details["fit"]["exponent"] - 0.4) < 0.03
    ksv = by["k_star_scaling"]
    assert not ksv.details["nu_assumed"] and ksv.verdict == "holds", ksv.reason
    # the same K* runs alone fall back to the paper's nu = 0.7, which the slope 2.5 misses
    alone = {v.prediction: v for v in validate_runs(ks)[0]}["k_star_scaling"]
    assert alone.details["nu_assumed"] and alone.verdict == "does not hold", alone.reason
    # no K = inf runs anywhere: the K-less rows are not onset data
    assert by["onset_times_linear"].verdict == "skipped"
    # a file with sweep bookkeeping (status) beside one without, holding the same grid
    # values and seed ids: no run is dropped and none merges with another file's
    a = {"seed": [0, 0, 1, 1], "iteration": [0.0, 500.0, 0.0, 500.0], "N": [9.0] * 4, "K": [math.inf] * 4,
         "icl_acc": [0.5, 0.99, 0.5, 0.99]}
    with_status = write_csv(tmp_path / "a.csv", {**a, "status": ["done"] * 4, "run_id": ["r1"] * 4})
    plain = write_csv(tmp_path / "b.csv", a)
    stacked = read_tables([with_status, plain])
    assert len(seed_summaries(stacked)) == 4
    r = run_validation(runs=[mlp, ks], out=tmp_path / "report")
    assert "mlp.csv, " in r["title"] and "kstar.csv" in r["title"]


def test_preset_report_reads_existing_sweeps_without_training(tmp_path):
    """`validate --preset ... --no-run` reads the sweep folders it finds, checks what they
    allow, names the sweeps that are missing, and writes report.md with the figures."""
    from icl_kinetics.simulate.engine import TrainConfig
    from icl_kinetics.simulate.sweeps import grid, run_sweep

    mlp = TrainConfig(model="mlp", N=1, D=8, width=16, batch_size=16, lr=0.5, iterations=600, eval_every=20,
                      early_stop=None, workers=1)
    run_sweep(grid("fig5", "small", mlp, {"K": [8, 16, 32, 64]}, seeds=1, seeds_per_run=1), tmp_path / "fig5",
              progress=False, processes=2)
    r = run_validation(preset="small", sweeps=tmp_path, out=tmp_path / "report", run=False, progress=False)
    by = {(v["prediction"], v["rung"]): v for v in r["verdicts"]}
    assert by[("memorization_law", "MLP alone (fig5)")]["verdict"] in ("holds", "does not hold", "inconclusive")
    assert by[("onset_times_linear", "transformer")]["verdict"] == "skipped"
    assert "fig6b not found" in by[("onset_times_linear", "transformer")]["reason"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "memorization_law" in text and "figA2_mlp_coefficients.png" in text


def test_validate_cli_bad_input_is_one_line_exit_2(tmp_path, cli):
    """Bad input to `validate`: one line naming the parameter, exit code 2, nothing trained."""
    import torch

    cases = [(["validate", "--preset", "huge"], "preset"),
             (["validate", "--runs", str(tmp_path / "missing.csv")], "runs")]
    if not torch.cuda.is_available():
        cases.append((["validate", "--preset", "small", "--sweeps", str(tmp_path / "s"), "--device", "cuda"], "device"))
    for argv, name in cases:
        code, out, err = cli(argv)
        assert code == 2 and name in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "s").exists()
