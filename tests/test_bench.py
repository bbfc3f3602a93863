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


@pytest.mark.parametrize("script,argv,name", [
    ("bench_fused_mlp.py", ["--rounds", "0"], "--rounds"),
    ("bench_fused_mlp.py", ["--seeds", "x"], "--seeds"),
    ("bench_gil.py", ["--iterations", "-3"], "--iterations"),
    ("profile_engine.py", ["--steps", "0"], "--steps"),
])
def test_side_by_side_benchmarks_refuse_bad_counts_in_one_line(script, argv, name):
    """The interleaved-round benchmarks (benchmarks/_rounds.py) and the profiler refuse a count
    below 1 with one line naming the flag and the value (exit 2), before any build or training."""
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    r = subprocess.run([sys.executable, str(path), *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert name in r.stderr.strip().splitlines()[-1] and argv[-1] in r.stderr


def test_interleaved_rounds_time_every_variant_in_its_context():
    """benchmarks/_rounds.py at a tiny shape: every variant runs inside its own context in every
    round, and the ratio of medians is the medians' ratio."""
    import contextlib
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import _rounds
    finally:
        sys.path.pop(0)
    from icl_kinetics.simulate.engine import TrainConfig

    seen = []

    def variant(name):
        @contextlib.contextmanager
        def context():
            seen.append(name)
            yield
        return context

    cfg = TrainConfig(model="transformer", N=9, K=64, width=16, batch_size=16, seeds=2, workers=1, eval_size=64)
    r = _rounds.interleaved(cfg, [("a", variant("a")), ("b", variant("b"))], rounds=2, iterations=2)
    assert seen == ["a", "b", "a", "b"] and all(len(v) == 2 for v in r["ms_per_seed_iteration"].values())
    out = _rounds.finish(r, SimpleNamespace(json=True, rounds=2, iterations=2), {"N": 9}, {"ratio": ("b", "a")})
    assert out["ratio"] == pytest.approx(r["median"]["b"] / r["median"]["a"]) and out["shapes"] == {"N": 9}
