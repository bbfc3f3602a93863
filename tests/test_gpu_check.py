"""benchmarks/gpu_check.py on a CPU at tiny shapes: it runs end to end, prints one JSON
object with the throughput per seed count and the oracle agreement, and fails (exit 1)
when the fast path disagrees with the oracle."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_runs_on_cpu_and_reports_agreement_and_throughput():
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["device"] == "cpu"
    agree, thr = rep["steps"]
    assert agree["step"] == "agreement" and agree["ok"]
    assert agree["logit_err_float64"] <= 1e-12 and agree["grad_err_float64"] <= 1e-12
    assert agree["seed_alone_vs_batch_err_float32"] <= 1e-5
    assert [x["seeds"] for x in thr["rows"]] == [2, 4]
    for x in thr["rows"]:
        assert x["seed_iterations_per_s"] > 0 and abs(x["ms_per_seed_iteration"] * x["seed_iterations_per_s"] - 1e3) < 1e-6
        assert x["peak_bytes_per_seed"] > 0


def test_gpu_check_fails_when_the_fast_path_disagrees(monkeypatch, capsys):
    mod = _load()
    from icl_kinetics.simulate import models as mm

    real = mm.transformer_fast

    def off(*a, **k):  # the fast path, off by one part in 10^9
        out = real(*a, **k)
        return (out[0] * (1 + 1e-9), out[1]) if isinstance(out, tuple) else out * (1 + 1e-9)

    monkeypatch.setattr(mm, "transformer_fast", off)
    assert mod.main(["--device", "cpu", "--tiny", "--json", "--seeds", "2", "--iterations", "1"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert not rep["ok"] and not rep["steps"][0]["ok"] and rep["steps"][0]["logit_err_float64"] > 1e-12


def test_gpu_check_refuses_cuda_without_a_device(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _load().main(["--device", "cuda", "--tiny"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
