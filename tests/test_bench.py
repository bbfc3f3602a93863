"""The engine benchmark reports only what it measured in the run (tiny shapes; no timing
is asserted)."""

import json

import pytest

pytest.importorskip("torch")

from icl_kinetics.simulate.bench import bench_engine, format_bench  # noqa: E402

TINY = dict(seeds=2, workers=1, N=9, K=64, width=16, batch_size=16)


def _keys(d, prefix=""):
    for k, v in d.items():
        yield prefix + k
        if isinstance(v, dict):
            yield from _keys(v, prefix + k + ".")


def test_bench_engine_reports_only_measured_quantities():
    r = bench_engine(quick=True, **TINY)
    r = json.loads(json.dumps(r))  # what `--json` prints
    assert not [k for k in _keys(r) if "paper" in k.lower()]
    for k in ("seed_iterations_per_s", "naive_seed_iterations_per_s", "speedup", "matmul_peak_gflops"):
        assert r[k] > 0
    assert r["speedup"] == pytest.approx(r["seed_iterations_per_s"] / r["naive_seed_iterations_per_s"])
    assert "paper" not in format_bench(r).lower()
