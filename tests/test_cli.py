"""The console script: JSON output, and one-line errors with exit code 2 on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from icl_kinetics.theory import OnsetDistribution, k_star


BAD = [
    (["threshold", "--N", "0", "--nu", "0.7", "--amplitude", "1"], "N"),
    (["threshold", "--N", "-5", "--nu", "0.7", "--amplitude", "1"], "N"),
    (["threshold", "--N", "1.5", "--nu", "0.7", "--amplitude", "1"], "N"),
    (["threshold", "--N", "ten", "--nu", "0.7", "--amplitude", "1"], "N"),
    (["threshold", "--N", "50", "--nu", "0", "--amplitude", "1"], "nu"),
    (["threshold", "--N", "50", "--nu", "-0.7", "--amplitude", "1"], "nu"),
    (["threshold", "--N", "50", "--nu", "0.7", "--amplitude", "0"], "amplitude"),
    (["threshold", "--N", "50", "--nu", "0.7", "--amplitude", "1", "--bogus"], "--bogus"),
    (["onset", "--N", "0", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1"], "N"),
    (["onset", "--N", "50", "--lr", "0", "--beta0-mean", "0", "--beta0-std", "1"], "lr"),
    (["onset", "--N", "50", "--lr", "-1", "--beta0-mean", "0", "--beta0-std", "1"], "lr"),
    (["onset", "--N", "50", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "-1"], "beta0-std"),
    (["onset", "--N", "50", "--lr", "0.1", "--beta0-mean", "nan", "--beta0-std", "1"], "beta0-mean"),
    (["onset", "--N", "50", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1", "--samples", "0"],
     "samples"),
    (["minimal", "--N", "0"], "N"),
    (["minimal", "--N", "2.5"], "N"),
    (["minimal", "--lr", "0"], "lr"),
    (["minimal", "--seeds", "0"], "seeds"),
    (["minimal", "--seeds", "-3"], "seeds"),
    (["minimal", "--K", "7"], "K"),
    (["minimal", "--K", "1"], "K"),
    (["minimal", "--N", "7", "--equalize"], "N"),
    (["minimal", "--frobnicate"], "--frobnicate"),
    (["transience", "--lam", "0", "--c3-power", "1", "100", "1"], "lam"),
    (["transience", "--lam", "1e-3", "--c3-power", "1", "100", "1", "--N", "0"], "N"),
    (["transience", "--lam", "1e-3", "--c3-table", "/nonexistent.csv"], "c3-table"),
    (["transience", "--lam", "1e-3"], "c3"),
    (["compare", "--seeds", "0"], "seeds"),
    (["nonsense"], "nonsense"),
]


@pytest.mark.parametrize("argv,name", BAD)
def test_bad_input_gives_one_line_error_and_exit_2(argv, name, cli):
    code, out, err = cli(argv)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert name in lines[0]
    assert "Traceback" not in err


def test_bad_input_subprocess_has_no_traceback():
    p = subprocess.run([sys.executable, "-m", "icl_kinetics.cli", "minimal", "--K", "9"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "K" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_threshold_json_matches_library(cli, tmp_path):
    code, out, err = cli(["threshold", "--N", "50", "100", "200", "--nu", "0.7", "--amplitude", "0.3",
                          "--beta0", "0.5", "--json", "--plot", str(tmp_path / "k.png")])
    assert code == 0
    r = json.loads(out)
    ref = k_star(np.array([50, 100, 200]), 0.5, 0.3, 0.7)
    assert np.allclose(r["k_star"], ref, rtol=1e-12)
    assert abs(r["slope"] - 1 / 0.7) < 1e-9
    assert (tmp_path / "k.png").stat().st_size > 1000


def test_onset_json_quantiles_match_closed_form(cli):
    code, out, _ = cli(["onset", "--N", "50", "100", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1",
                        "--samples", "50000", "--json"])
    assert code == 0
    r = json.loads(out)
    for p in r["per_N"]:
        d = OnsetDistribution(N=p["N"], lr=0.1, beta0_mean=0, beta0_std=1)
        for q, v in p["quantiles"].items():
            # empirical quantile of 5e4 samples vs the closed form: a few percent
            assert abs(v / float(d.quantile(float(q))) - 1) < 0.05


def test_transience_json(cli, tmp_path):
    csv = tmp_path / "c3.csv"
    it = np.geomspace(1, 1e7, 60)
    csv.write_text("iteration,c3\n" + "\n".join(f"{i},{1 / (1 + 0.01 * i / 100)}" for i in it))
    code, out, _ = cli(["transience", "--lam", "3e-3", "--c3-table", str(csv), "--lr", "0.01", "--json"])
    assert code == 0
    r = json.loads(out)
    code2, out2, _ = cli(["transience", "--lam", "3e-3", "--c3-power", "1", "100", "1", "--lr", "0.01",
                          "--json"])
    r2 = json.loads(out2)
    # the tabulated curve samples the same power law: the same predicted loss time within 2 %
    assert abs(r["t_icl_loss"] / r2["t_icl_loss"] - 1) < 0.02


def test_help_does_not_import_torch():
    p = subprocess.run([sys.executable, "-c",
                        "import sys; from icl_kinetics.cli import build_parser; build_parser();"
                        "import icl_kinetics.theory, icl_kinetics.validate.figures;"
                        "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert p.stdout.strip() == "False", p.stderr
