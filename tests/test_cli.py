"""The console script: JSON output, and one-line errors with exit code 2 on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from icl_kinetics.theory import OnsetDistribution, k_star


# Bad input to every subcommand (exit 2, one line naming the parameter): tests/test_bad_input.py.


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
