"""The training engine: seed batching, determinism, early stopping, divergence handling,
checkpoint/resume after SIGKILL, and the CLI's bad-input handling.  Tiny shapes only."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from icl_kinetics.errors import ParameterError  # noqa: E402
from icl_kinetics.simulate.engine import METRIC_COLUMNS, TrainConfig, train  # noqa: E402

TINY = dict(N=9, D=12, width=16, batch_size=16, eval_size=128, iterations=60, eval_every=20, lr=0.1,
            early_stop=None, workers=2)


def _by_seed(rows, seed):
    return [r for r in rows if r["seed"] == seed]


def _close(a, b, tol=1e-5):
    for k in METRIC_COLUMNS:
        x, y = a[k], b[k]
        if isinstance(x, float) and math.isnan(x):
            assert math.isnan(y), k
        else:
            assert abs(x - y) <= tol * (1 + abs(x)), (k, x, y)


@pytest.mark.parametrize("model,K", [("transformer", 40), ("transformer", None), ("minimal", 40),
                                     ("mlp", 40), ("transformer2", None)])
def test_seed_alone_equals_seed_in_batch(model, K):
    cfg = TrainConfig(model=model, K=K, seeds=3, **TINY)
    batch = train(cfg, progress=False)
    alone = train(replace(cfg, seeds=1, seed_offset=2, workers=1), progress=False)
    rb, ra = _by_seed(batch.rows, 2), alone.rows
    assert len(rb) == len(ra) == 4  # iterations 0, 20, 40, 60
    for x, y in zip(rb, ra):
        _close(x, y)
    # seeds differ from each other (the streams are really separate)
    assert batch.rows[-1]["train_loss"] != _by_seed(batch.rows, 0)[-1]["train_loss"]


def test_same_seed_same_numbers_bit_for_bit():
    cfg = TrainConfig(model="transformer", K=40, seeds=2, **TINY)
    a, b = train(cfg, progress=False), train(cfg, progress=False)
    assert json.dumps(a.rows) == json.dumps(b.rows)
    c = train(replace(cfg, seed=1), progress=False)
    assert json.dumps(a.rows) != json.dumps(c.rows)


def test_minimal_model_acquires_icl_and_stops_early(tmp_path):
    cfg = TrainConfig(model="minimal", K=None, width=0, beta0=2.0, N=20, D=63, batch_size=64, lr=1.0,
                      seeds=3, iterations=3000, eval_every=10, eval_size=500, early_stop=0.99, workers=2)
    r = train(cfg, out=tmp_path, progress=False)  # every group ends with all its seeds stopped
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == ["stopped"] * 3
    assert all(s == "stopped" for s in r.status)
    for i, t in enumerate(r.t_icl):
        rows = _by_seed(r.rows, i)
        assert t is not None and t % 10 == 0
        first = next(x["iteration"] for x in rows if x["icl_acc"] > 0.95)
        assert first == t  # t_ICL: the first evaluation above 0.95
        assert rows[-1]["icl_acc"] > 0.99 and rows[-1]["iteration"] < 3000  # stopped there
        assert rows[-1]["w"] > 0 and rows[-1]["beta"] > 2.0


def test_mlp_memorizes_and_logs_coefficients():
    cfg = TrainConfig(model="mlp", K=20, D=12, width=32, batch_size=32, lr=0.5, seeds=2, iterations=400,
                      eval_every=100, workers=1)
    r = train(cfg, progress=False)
    rows = _by_seed(r.rows, 0)
    assert rows[-1]["iwl_acc"] == 1.0
    c1 = [x["c1"] for x in rows]
    assert c1[0] == pytest.approx(0.5, abs=0.05) and c1[-1] < 0.2  # residual error falls
    assert all(0 < x["c2"] <= 1 and x["c3"] > 0 for x in rows)
    assert math.isnan(rows[-1]["icl_acc"])  # no ICL for a bare MLP


def test_nonfinite_loss_marks_seed_diverged_and_run_finishes():
    cfg = TrainConfig(model="transformer", K=40, seeds=2, **{**TINY, "lr": 1e30})
    r = train(cfg, progress=False)
    assert r.status == ["diverged", "diverged"]
    assert all("non-finite" in s for s in r.reasons)


def test_checkpoint_with_other_config_is_set_aside_and_run_restarts(tmp_path, capsys):
    cfg = TrainConfig(model="transformer", K=40, seeds=1, **TINY)
    train(cfg, out=tmp_path, progress=False)
    other = replace(cfg, lr=0.2)
    r = train(other, out=tmp_path, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pt" in err[0] and "another configuration" in err[0]
    aside = list(tmp_path.glob("checkpoint.pt.rejected-*"))
    assert len(aside) == 1 and r.notes and aside[0].name in r.notes[0]
    assert json.dumps(r.rows) == json.dumps(train(other, progress=False).rows)  # from scratch


def test_resume_in_process_equals_uninterrupted(tmp_path):
    """Stop after 40 iterations (cap), then extend the cap to 100 from the checkpoint."""
    cfg = TrainConfig(model="transformer", K=40, seeds=3, checkpoint_every=20, **{**TINY, "iterations": 100})
    full = train(cfg, progress=False)
    train(replace(cfg, iterations=40), out=tmp_path, progress=False)
    resumed = train(cfg, out=tmp_path, progress=False)
    assert json.dumps(full.rows) == json.dumps(resumed.rows)


def _cli(out, extra=()):
    return [sys.executable, "-m", "icl_kinetics.cli", "train", "--model", "transformer", "--K", "40",
            "--N", "9", "--D", "12", "--width", "16", "--batch-size", "16", "--eval-size", "64",
            "--seeds", "2", "--iterations", "3000", "--eval-every", "100", "--checkpoint-every", "200",
            "--lr", "0.05", "--early-stop", "none", "--out", str(out), "--quiet", "--json", *extra]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_after_sigkill_gives_the_same_metrics(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cli(ref), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 120
    # The engine writes checkpoint.pt and then metrics.csv (derived from the checkpoint), so
    # poll for the CSV itself: the checkpoint can exist a moment before the CSV does.
    metrics = killed / "metrics.csv"
    while time.time() < deadline and not (ckpt.exists() and metrics.exists() and len(_read(metrics)) >= 10):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _read(killed / "metrics.csv")
    assert 10 <= len(partial) < len(_read(ref / "metrics.csv"))  # really killed part-way
    subprocess.run(_cli(killed), check=True, capture_output=True, timeout=300)
    assert _read(killed / "metrics.csv") == _read(ref / "metrics.csv")
    assert not [p for p in os.listdir(killed) if ".tmp" in p]  # no half-written files left


BAD = [
    (["train", "--K", "7"], "K"),
    (["train", "--K", "1"], "K"),
    (["train", "--N", "0"], "N"),
    (["train", "--width", "0"], "width"),
    (["train", "--lr", "0"], "lr"),
    (["train", "--lr", "-0.1"], "lr"),
    (["train", "--model", "resnet"], "model"),
    (["train", "--device", "tpu"], "device"),
    (["train", "--contexts", "equalized", "--N", "9"], "N"),
    (["train", "--model", "mlp"], "K"),
    (["train", "--early-stop", "2"], "early-stop"),
    (["bench", "gpu"], "what"),
]


@pytest.mark.parametrize("argv,name", BAD)
def test_train_bad_input_one_line_exit_2(argv, name, cli, tmp_path):
    code, _, err = cli([*argv, "--out", str(tmp_path)] if argv[0] == "train" else argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert name in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_gpu_is_a_clear_error(cli, tmp_path):
    code, _, err = cli(["train", "--device", "cuda", "--out", str(tmp_path)])
    assert code == 2 and "device" in err and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt tuning is glibc-only")
def test_malloc_tuning_is_in_effect_and_changes_no_number(tmp_path, monkeypatch):
    """simulate/allocator.py only changes where memory comes from: a K = inf run with
    glibc's default malloc settings and one with the project's give identical metrics."""
    from icl_kinetics.simulate.allocator import tune_malloc

    monkeypatch.delenv("ICL_KINETICS_MALLOC", raising=False)
    assert tune_malloc()  # glibc accepts both settings
    argv = [sys.executable, "-m", "icl_kinetics.cli", "train", "--model", "transformer", "--K", "inf", "--N", "9",
            "--width", "16", "--seeds", "2", "--iterations", "60", "--eval-every", "20", "--eval-size", "64",
            "--early-stop", "none", "--workers", "1"]
    for mode in ("default", "tuned"):
        subprocess.run(argv + ["--out", str(tmp_path / mode)], check=True, capture_output=True, timeout=300,
                       env=dict(os.environ, ICL_KINETICS_MALLOC=mode))
    assert _read(tmp_path / "default" / "metrics.csv") == _read(tmp_path / "tuned" / "metrics.csv")
    assert len(_read(tmp_path / "tuned" / "metrics.csv")) > 0


def test_a_cap_below_the_checkpoint_is_refused_and_the_checkpoint_kept(tmp_path):
    cfg = TrainConfig(model="transformer", K=40, seeds=1, checkpoint_every=20, **{**TINY, "iterations": 60})
    train(cfg, out=tmp_path, progress=False)
    with pytest.raises(ParameterError) as e:
        train(replace(cfg, iterations=40), out=tmp_path, progress=False)
    assert e.value.name == "iterations" and "60" in str(e.value)
    assert (tmp_path / "checkpoint.pt").exists() and not list(tmp_path.glob("checkpoint.pt.rejected-*"))


# ------------------------------------------------------------------ fields added with the overlap backend
def test_per_seed_beta0_and_w0_set_the_minimal_models_start():
    """beta0 as one number per seed and w0 reach the autograd minimal model's parameters
    (the logged w and beta at iteration 0 are the parameters themselves); a seed alone
    with its beta0 equals the seed in the batch."""
    cfg = TrainConfig(model="minimal", K=40, seeds=3, beta0=(0.25, -1.5, 2.0), w0=0.75, **{**TINY, "width": 0})
    batch = train(cfg, progress=False)
    first = [r for r in batch.rows if r["iteration"] == 0]
    assert [r["beta"] for r in first] == [0.25, -1.5, 2.0] and all(r["w"] == 0.75 for r in first)
    alone = train(replace(cfg, seeds=1, seed_offset=2, beta0=2.0, workers=1), progress=False)
    for x, y in zip(_by_seed(batch.rows, 2), alone.rows):
        _close(x, y)
    drawn = train(replace(cfg, beta0=None, w0=0.0), progress=False)  # N(0, 1) from each seed's init stream
    from icl_kinetics.simulate.data import seed_generators

    want = [float(torch.randn((), generator=seed_generators(0, i)["init"])) for i in range(3)]
    assert [r["beta"] for r in drawn.rows if r["iteration"] == 0] == want


@pytest.mark.parametrize("model,K", [("transformer", 40), ("mlp", 40)])
def test_log_every_keeps_a_subset_of_the_rows(model, K):
    """A logged row equals the row of the run that logs every evaluation (train_loss is the
    mean since the previous evaluation either way); the cap's evaluation is logged."""
    cfg = TrainConfig(model=model, K=K, seeds=2, **{**TINY, "iterations": 100, "eval_every": 10})
    every = train(cfg, progress=False)
    thin = train(replace(cfg, log_every=40), progress=False)
    assert [(r["seed"], r["iteration"]) for r in thin.rows] == [(s, i) for s in (0, 1) for i in (0, 40, 80, 100)]
    key = {(r["seed"], r["iteration"]): r for r in every.rows}
    for r in thin.rows:
        _close(r, key[(r["seed"], r["iteration"])], tol=0.0)


def test_a_shared_map_keeps_one_copy_of_its_token_tables():
    """With one label map the IWL test sequences run over the training items and map, so
    their normalized token tables are the training tables themselves (not a second K x 2T
    copy), and they hold the numbers a fresh normalization of those items gives."""
    from icl_kinetics.simulate.group import _Shared

    cfg = TrainConfig(model="transformer", K=64, label_map="shared", **TINY)
    sh = _Shared(cfg, torch.device("cpu"))
    assert sh.test_tables["iwl"] is sh.tables
    fresh = sh.token_tables(sh.iwl.items, sh.iwl.labels)
    assert all(torch.equal(a, b) for a, b in zip(sh.test_tables["iwl"], fresh))
    assert not torch.equal(sh.test_tables["icl"][0], sh.tables[0][: len(sh.test_tables["icl"][0])])  # novel items


def test_memory_estimate_covers_building_a_large_item_table(tmp_path):
    """The transformer's estimate against the measured growth of the resident memory while
    a run with a large item table is built and takes 2 steps (a subprocess, after a tiny run
    has loaded the libraries; the tables dominate): at least 0.95 of it (resident memory
    counts whole pages and the allocator's slack; the estimate is within 1 % on this
    machine) and under twice it, for either label map."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads VmRSS and VmHWM from Linux's /proc/self/status")
    script = tmp_path / "peak.py"
    script.write_text(
        "import json, sys, torch\n"
        "from icl_kinetics.simulate.engine import TrainConfig, _build\n"
        "def kb(key):\n"
        "    with open('/proc/self/status') as f:\n"
        "        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ':'))\n"
        "kw = dict(model='transformer', N=19, D=63, width=64, batch_size=32, seeds=2, eval_size=200, workers=1,\n"
        "          label_map=sys.argv[1])\n"
        "g = _build(TrainConfig(K=64, **kw), torch.device('cpu'))[0]  # libraries and kernels loaded\n"
        "g.step(); del g\n"
        "cfg = TrainConfig(K=200_000, **kw)\n"
        "base = kb('VmRSS')\n"
        "g = _build(cfg, torch.device('cpu'))[0]\n"
        "g.step(); g.step()\n"
        "print(json.dumps([cfg.estimate_bytes()[0], kb('VmHWM') - base]))\n")
    for label_map in ("shared", "per-seed"):
        out = subprocess.run([sys.executable, str(script), label_map], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        est, measured = json.loads(out.stdout.strip().splitlines()[-1])
        assert measured > 100 * 2**20, measured  # the tables dominate the measurement
        assert 0.95 <= est / measured < 2, (label_map, est / 2**20, measured / 2**20)
