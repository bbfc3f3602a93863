"""One error contract for every subcommand: a bad input gives exit code 2 and ONE line on
stderr that names the parameter (or file), nothing on stdout, no traceback, and nothing
computed first.  Table-driven; the theory API's cases are in test_bad_input_api.py and
the table readers' in test_bad_input_tables.py.

``{FILE}`` is a regular file, ``{DIR}`` a folder, ``{BIN}`` random bytes, ``{NOCOLS}`` a CSV
without the needed columns, ``{NONNUM}`` a CSV with a non-number, ``{BADSWEEP}`` a folder
whose sweep.json is cut off (made per test in tmp_path).
"""

import json
import os
import re
import subprocess
import sys

import pytest

T = ["threshold", "--N", "50", "100", "--nu", "0.7", "--amplitude", "0.2"]
O = ["onset", "--N", "50", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1"]
TR = ["transience", "--wd-attn", "1e-3"]
TRAIN = ["train", "--N", "9", "--D", "12", "--width", "16", "--batch-size", "16", "--eval-size", "64",
         "--iterations", "20", "--seeds", "1", "--quiet"]

CASES = [
    # --- threshold
    (T[:1] + ["--N", "0"] + T[4:], "N"),
    (T[:1] + ["--N", "-5"] + T[4:], "N"),
    (T[:1] + ["--N", "1.5"] + T[4:], "N"),
    (T[:1] + ["--N", "ten"] + T[4:], "N"),
    (T[:5] + ["0"] + T[6:], "nu"),
    (T[:5] + ["-0.7"] + T[6:], "nu"),
    (T[:5] + ["nan"] + T[6:], "nu"),
    (T[:5] + ["inf"] + T[6:], "nu"),
    (T[:5] + ["1e-300"] + T[6:], "nu"),
    (T[:7] + ["0"], "amplitude"),
    (T[:7] + ["-1"], "amplitude"),
    (T[:7] + ["abc"], "amplitude"),
    (T + ["--beta0", "1e308"], "beta0"),
    (T + ["--beta0", "nan"], "beta0"),
    (T + ["--beta0", "-inf"], "beta0"),
    (T + ["--c2", "-0.1"], "c2"),
    (T + ["--c2", "nan"], "c2"),
    (T + ["--c2", "1e300"], "c2"),
    (T[:7] + ["1e308"], "amplitude"),
    (T + ["--plot", "/proc/icl/k.png"], "plot"),
    (T + ["--plot", "{DIR}/k.gif"], "plot"),
    (T + ["--plot", "{DIR}"], "plot"),
    (T + ["--plot", "{FILE}/k.png"], "plot"),
    (T[:6], "amplitude"),
    (T + ["--bogus"], "--bogus"),
    # --- onset
    (["onset", "--N", "0"] + O[3:], "N"),
    (O[:3] + ["--lr", "0"] + O[5:], "lr"),
    (O[:3] + ["--lr", "-1"] + O[5:], "lr"),
    (O[:3] + ["--lr", "nan"] + O[5:], "lr"),
    (O[:3] + ["--lr", "1e-300"] + O[5:], "lr"),
    (O[:5] + ["--beta0-mean", "nan"] + O[7:], "beta0-mean"),
    (O[:5] + ["--beta0-mean", "inf"] + O[7:], "beta0-mean"),
    (O[:5] + ["--beta0-mean", "1e6"] + O[7:], "beta0-mean"),
    (O[:7] + ["--beta0-std", "-1"], "beta0-std"),
    (O[:7] + ["--beta0-std", "1e6"], "beta0-std"),
    (O + ["--samples", "0"], "samples"),
    (O + ["--samples", "1e9"], "samples"),
    (O + ["--samples", "2.5"], "samples"),
    (O + ["--seed", "-1"], "seed"),
    (O + ["--regime", "bogus"], "regime"),
    (O + ["--plot", "/proc/icl/o.png"], "plot"),
    (O[:3] + O[5:], "lr"),
    # --- minimal (train --model minimal with its own defaults)
    (["minimal", "--N", "0"], "N"),
    (["minimal", "--N", "2.5"], "N"),
    (["minimal", "--lr", "0"], "lr"),
    (["minimal", "--seeds", "0"], "seeds"),
    (["minimal", "--seeds", "-3"], "seeds"),
    (["minimal", "--K", "7"], "K"),
    (["minimal", "--K", "1"], "K"),
    (["minimal", "--N", "7", "--contexts", "equalized"], "N"),
    (["minimal", "--frobnicate"], "--frobnicate"),
    (["minimal", "--model", "transformer"], "--model"),
    (["minimal", "--seeds", "1e8"], "seeds"),
    (["minimal", "--batch-size", "1e9"], "batch"),
    (["minimal", "--N", "1e9"], "N"),
    (["minimal", "--K", "1e12", "--width", "8"], "K"),
    (["minimal", "--out", "/proc/icl/m"], "out"),
    (["minimal", "--out", "{FILE}"], "out"),
    (["minimal", "--plot", "/proc/icl/m.png"], "plot"),
    (["minimal", "--D", "0"], "D"),
    (["minimal", "--eval-every", "0"], "eval-every"),
    (["minimal", "--iterations", "0"], "iterations"),
    (["minimal", "--wd-attn", "-1"], "wd-attn"),
    (["minimal", "--width", "-1"], "width"),
    (["minimal", "--beta0", "nan"], "beta0"),
    (["minimal", "--w0", "inf"], "w0"),
    (["minimal", "--t-icl-threshold", "1.5"], "t-icl-threshold"),
    (["minimal", "--early-stop", "2"], "early-stop"),
    (["minimal", "--log-every", "15"], "log-every"),  # not a multiple of --eval-every 10
    (["minimal", "--log-every", "0"], "log-every"),
    (["minimal", "--backend", "overlaps", "--K", "8"], "backend"),
    (["minimal", "--backend", "overlaps", "--width", "8"], "backend"),
    (["minimal", "--backend", "bogus"], "backend"),
    (["minimal", "--len-context", "1"], "len-context"),
    # --- minimal's deprecated flags: a bad value is named by the flag given
    (["minimal", "--max-iterations", "0"], "max-iterations"),
    (["minimal", "--wd-icl", "-1"], "wd-icl"),
    (["minimal", "--mlp-width", "-1"], "mlp-width"),
    (["minimal", "--acc-threshold", "1.5"], "acc-threshold"),
    (["minimal", "--acc-threshold", "nan"], "acc-threshold"),
    (["minimal", "--max-iterations", "10", "--iterations", "10"], "iterations"),
    (["minimal", "--contexts", "equalized", "--equalize"], "equalize"),
    (["minimal", "--no-early-stop", "--early-stop", "0.9"], "early-stop"),
    (["minimal", "--wd-icl", "1e-3", "--wd-attn", "1e-3"], "wd-attn"),
    # --- transience
    (["transience", "--wd-attn", "0", "--c3-power", "1", "100", "1"], "wd-attn"),
    (["transience", "--lam", "0", "--c3-power", "1", "100", "1"], "lam"),
    (["transience", "--lam", "1e-3", "--wd-attn", "1e-3", "--c3-power", "1", "100", "1"], "wd-attn"),
    (["transience", "--c3-power", "1", "100", "1"], "wd-attn"),
    (TR + ["--c3-power", "1", "100", "1", "--N", "0"], "N"),
    (TR + ["--c3-power", "1", "0", "1"], "c3-power"),
    (TR + ["--c3-power", "1", "100", "nan"], "c3-power"),
    (TR + ["--c3-table", "/nonexistent.csv"], "c3-table"),
    (TR + ["--c3-table", "{BIN}"], "c3-table"),
    (TR + ["--c3-table", "{NOCOLS}"], "c3-table"),
    (TR + ["--c3-table", "{NONNUM}"], "c3-table"),
    (TR + ["--c3-table", "{DIR}"], "c3-table"),
    (TR, "c3"),
    (TR + ["--c3-power", "1", "100", "1", "--c3-table", "{NOCOLS}"], "c3-table"),
    (TR + ["--c3-power", "1", "100", "1", "--lr", "0"], "lr"),
    (TR + ["--c3-power", "1", "100", "1", "--iterations", "-5"], "iterations"),
    (TR + ["--c3-power", "1", "100", "1", "--plot", "{DIR}/t.txt"], "plot"),
    # --- compare
    (["compare", "--seeds", "0"], "seeds"),
    (["compare", "--N", "1"], "N"),
    (["compare", "--beta0", "nan"], "beta0"),
    (["compare", "--lr", "0"], "lr"),
    (["compare", "--out", "/proc/icl/c"], "out"),
    (["compare", "--out", "{FILE}"], "out"),
    (["compare", "--plot", "/proc/icl/c.png"], "plot"),
    # --- train
    (TRAIN + ["--model", "bogus"], "model"),
    (TRAIN + ["--K", "7"], "K"),
    (TRAIN + ["--K", "-1"], "K"),
    (TRAIN + ["--K", "1e12"], "K"),
    (TRAIN[:1] + ["--N", "1e9"] + TRAIN[3:], "N"),
    (TRAIN + ["--batch-size", "1e9"], "batch_size"),
    (TRAIN + ["--seeds", "1e8"], "seeds"),
    (TRAIN + ["--lr", "0"], "lr"),
    (TRAIN + ["--lr", "nan"], "lr"),
    (TRAIN + ["--early-stop", "1.5"], "early-stop"),
    (TRAIN + ["--early-stop", "abc"], "early-stop"),
    (TRAIN + ["--width", "-1"], "width"),
    (TRAIN + ["--model", "mlp"], "K"),
    (TRAIN[:1] + ["--N", "7"] + TRAIN[3:] + ["--contexts", "equalized"], "N"),
    (TRAIN + ["--out", "/proc/icl/t"], "out"),
    (TRAIN + ["--out", "{FILE}"], "out"),
    (TRAIN + ["--plot", "{DIR}/t.bmp"], "plot"),
    (TRAIN + ["--len-context", "10"], "len-context"),
    (TRAIN + ["--device", "tpu"], "device"),
    (TRAIN + ["--zipf-alpha", "-1"], "zipf-alpha"),
    (TRAIN + ["--wd-attn", "-1"], "wd-attn"),
    (TRAIN + ["--eval-every", "0"], "eval-every"),
    (TRAIN + ["--workers", "0"], "workers"),
    (TRAIN + ["--labels", "bogus"], "labels"),
    (TRAIN + ["--iterations", "0"], "iterations"),
    (TRAIN + ["--beta0", "inf", "--model", "minimal"], "beta0"),
    (TRAIN + ["--w0", "nan", "--model", "minimal"], "w0"),
    (TRAIN + ["--log-every", "150"], "log-every"),  # not a multiple of --eval-every 100
    (TRAIN + ["--log-every", "abc"], "log-every"),
    (TRAIN + ["--backend", "overlaps"], "backend"),  # the transformer has no overlap sampler
    (TRAIN + ["--backend", "overlaps", "--model", "minimal", "--width", "0", "--K", "20"], "backend"),
    (TRAIN + ["--t-icl-threshold", "-0.1"], "t-icl-threshold"),
    (TRAIN + ["--max-iterations", "10"], "--max-iterations"),  # minimal's old flags were never train's
    # --- bench
    (["bench", "bogus"], "what"),
    (["bench", "engine", "--seeds", "0"], "seeds"),
    (["bench", "engine", "--workers", "-1"], "workers"),
    # --- sweep
    (["sweep", "run", "fig99"], "preset"),
    (["sweep", "run", "smoke", "--scale", "huge"], "scale"),
    (["sweep", "run", "smoke", "--executor", "bogus"], "executor"),
    (["sweep", "run", "smoke", "--processes", "0"], "processes"),
    (["sweep", "run", "smoke", "--out", "/proc/icl/s"], "out"),
    (["sweep", "run", "smoke", "--out", "{FILE}"], "out"),
    (["sweep", "run", "smoke", "--slurm-time", "0"], "slurm-time"),
    (["sweep", "status", "{DIR}"], "sweep folder"),
    (["sweep", "status", "{BADSWEEP}"], "sweep.json"),
    (["sweep", "collect", "{BADSWEEP}"], "sweep.json"),
    (["sweep", "collect", "{DIR}"], "sweep folder"),
    (["sweep", "list", "--cores", "0"], "cores"),
    (["sweep", "frobnicate"], "frobnicate"),
    # --- validate
    (["validate", "--no-run", "--sweeps", "/nonexistent/sweeps"], "sweeps"),
    (["validate", "--runs", "/nope.csv"], "runs"),
    (["validate", "--runs", "{BIN}"], "runs"),
    (["validate", "--runs", "{DIR}"], "runs"),
    (["validate", "--preset", "huge"], "preset"),
    (["validate", "--no-run", "--out", "/proc/icl/v"], "out"),
    (["validate", "--runs", "{NONNUM}", "--out", "{FILE}"], "out"),
    # --- demo, and the top level
    (["demo", "--out", "/proc/icl/d"], "out"),
    (["demo", "--out", "{FILE}"], "out"),
    (["nonsense"], "nonsense"),
]


@pytest.fixture
def files(tmp_path):
    f = tmp_path / "regular.txt"
    f.write_text("not a folder\n")
    d = tmp_path / "folder"
    d.mkdir()
    b = tmp_path / "random.csv"
    b.write_bytes(os.urandom(2048))
    nc = tmp_path / "nocols.csv"
    nc.write_text("a,b\n1,2\n")
    nn = tmp_path / "nonnum.csv"
    nn.write_text("iteration,c3,model,K,seed\n0,abc,mlp,64,0\n")
    bs = tmp_path / "badsweep"
    bs.mkdir()
    (bs / "sweep.json").write_text('{"name": "x", "runs": [')
    return {"{FILE}": str(f), "{DIR}": str(d), "{BIN}": str(b), "{NOCOLS}": str(nc), "{NONNUM}": str(nn),
            "{BADSWEEP}": str(bs)}


def _fill(argv, files):
    out = []
    for a in argv:
        for k, v in files.items():
            a = a.replace(k, v)
        out.append(a)
    return out


def test_the_suite_is_large_and_distinct():
    keys = [tuple(a) for a, _ in CASES]
    assert len(keys) == len(set(keys)) and len(keys) >= 120


def argparse_values(argv):
    from icl_kinetics.cli import build_parser

    return build_parser().parse_args(argv)


def _names(name: str, line: str) -> bool:
    """``name`` appears as a whole word (``K`` in "argument --K:", not in "KiB")."""
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", line) is not None


@pytest.mark.parametrize("argv,name", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_gives_exit_2_and_one_line_naming_it(argv, name, files, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default outputs (out/..., runs/...) would land here
    before = set(os.listdir(tmp_path))
    code, out, err = cli(_fill(argv, files))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert _names(name, lines[0]), lines[0]
    assert out == "" and "Traceback" not in err
    assert len(lines[0]) < 600
    assert set(os.listdir(tmp_path)) == before  # nothing written, no temp file left


def test_a_deprecated_flag_warns_in_one_line_before_the_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["minimal", "--mlp-width", "8", "--K", "1e12"])  # K's memory cannot fit
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 2 and "Traceback" not in err
    assert lines[0] == "icl-kinetics minimal: warning: --mlp-width is deprecated; use --width"
    assert _names("K", lines[1]) and "error" in lines[1]
    assert os.listdir(tmp_path) == []


def test_negative_numbers_are_values(cli):
    code, out, err = cli(T + ["--beta0", "-1e-3", "--json"])
    assert code == 0, err
    assert json.loads(out)["beta0"] == -1e-3
    p = argparse_values(["compare", "--beta0", "-2", "-1.5e0", "0"])
    assert p.beta0 == [-2.0, -1.5, 0.0]
    code, out, err = cli(O[:5] + ["--beta0-mean", "-2.5E-1"] + O[7:] + ["--samples", "1000", "--json"])
    assert code == 0, err
    assert json.loads(out)["beta0_mean"] == -0.25


def test_internal_error_is_one_line_saying_bug_and_debug_shows_the_traceback(tmp_path):
    # a bug injected through the module's own function table
    script = ("import sys, icl_kinetics.cli as c\n"
              "def boom(a): raise TypeError('injected')\n"
              "c.COMMANDS['threshold'] = (boom, None)\n"
              "sys.exit(c.main(['threshold', '--N', '5', '--nu', '1', '--amplitude', '1']))\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "bug" in p.stderr and "ICL_KINETICS_DEBUG=1" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={**os.environ, "ICL_KINETICS_DEBUG": "1"})
    assert p.returncode == 1 and "Traceback" in p.stderr and "injected" in p.stderr


def test_no_temp_file_is_left_when_a_write_fails(tmp_path):
    from icl_kinetics.io import atomic_write_text

    target = tmp_path / "x.json"
    target.mkdir()  # os.replace onto a folder fails after the temp file is written
    with pytest.raises(OSError):
        atomic_write_text(target, "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("argv", [TRAIN + ["--K", "20", "--lr", "1e30", "--json"],
                                  ["minimal", "--lr", "1e30", "--seeds", "2", "--iterations", "20", "--json",
                                   "--quiet"]])
def test_divergence_is_reported_per_seed_and_exits_3(argv, cli):
    code, out, err = cli(argv)
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1 and "diverged" in lines[0] and "--lr" in lines[0]
    r = json.loads(out)
    assert r["status"] == ["diverged"] * len(r["status"]) and all("non-finite" in w for w in r["reasons"])
    assert all(t is None for t in r["t_icl"])


def _api_cases():
    from icl_kinetics.simulate.engine import TrainConfig, train
    from icl_kinetics.simulate.sweeps import SweepStore, grid
    from icl_kinetics.validate.report import run_validation, validate_runs
    from icl_kinetics.validate.schema import read_tables

    tiny = dict(N=9, D=12, width=16, batch_size=16, eval_size=64, iterations=20, seeds=1)

    def cfg(**kw):
        return TrainConfig(**{**tiny, **kw})

    return [
        (lambda: cfg(model="bogus").validate(), "model"),
        (lambda: cfg(K=7).validate(), "K"),
        (lambda: cfg(K=-1).validate(), "K"),
        (lambda: cfg(K="20").validate(), "K"),
        (lambda: cfg(lr=float("nan")).validate(), "lr"),
        (lambda: cfg(lr="0.1").validate(), "lr"),
        (lambda: cfg(seeds=0).validate(), "seeds"),
        (lambda: cfg(early_stop=2.0).validate(), "early_stop"),
        (lambda: cfg(wd_attn=-1e-3).validate(), "wd_attn"),
        (lambda: cfg(device="tpu").validate(), "device"),
        (lambda: cfg(model="mlp").validate(), "K"),
        (lambda: cfg(beta0=float("inf"), model="minimal").validate(), "beta0"),
        (lambda: cfg(beta0=(0.0, 1.0), seeds=3, model="minimal", width=0).validate(), "beta0"),
        (lambda: cfg(w0=float("nan"), model="minimal").validate(), "w0"),
        (lambda: cfg(log_every=15, eval_every=10).validate(), "log_every"),
        (lambda: cfg(backend="overlaps").validate(), "backend"),
        (lambda: cfg(backend="overlaps", model="minimal", width=0, K=20).validate(), "backend"),
        (lambda: cfg(backend="bogus").validate(), "backend"),
        (lambda: train(cfg(seeds=10 ** 8)), "seeds"),
        (lambda: train(cfg(K=10 ** 12)), "K"),
        (lambda: train(cfg(K=20), out="/proc/icl/x"), "out"),
        (lambda: train({"model": "transformer"}), "cfg"),
        (lambda: TrainConfig.from_dict({"modle": "transformer"}), "config"),
        (lambda: grid("g", "small", cfg(K=20), {"K": [7]}), "K"),
        (lambda: grid("g", "small", cfg(K=20), seeds=0), "seeds"),
        (lambda: SweepStore("/nonexistent/sweep"), "sweep folder"),
        (lambda: read_tables([]), "runs"),
        (lambda: read_tables(["/nonexistent.csv"]), "runs"),
        (lambda: validate_runs("/nonexistent.csv"), "runs"),
        (lambda: run_validation(preset="huge", run=False), "preset"),
        (lambda: run_validation(preset="small", sweeps="/nonexistent/sweeps", run=False), "sweeps"),
    ]


@pytest.mark.parametrize("i", range(31))
def test_simulate_and_validate_api_raise_one_parameter_error_naming_it(i):
    from icl_kinetics.errors import ParameterError

    fn, name = _api_cases()[i]
    with pytest.raises(ParameterError) as e:
        fn()
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and _names(name, msg), msg


def test_integer_valued_floats_are_one_configuration():
    from icl_kinetics.simulate.engine import TrainConfig

    a, b = TrainConfig(K=20, N=9), TrainConfig(K=20.0, N=9.0)
    assert a.config_hash() == b.config_hash() and isinstance(b.K, int)
