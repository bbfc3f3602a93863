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
    code, out, _ = cli(["transience", "--wd-attn", "3e-3", "--c3-table", str(csv), "--lr", "0.01", "--json"])
    assert code == 0
    r = json.loads(out)
    code2, out2, _ = cli(["transience", "--wd-attn", "3e-3", "--c3-power", "1", "100", "1", "--lr", "0.01",
                          "--json"])
    r2 = json.loads(out2)
    # the tabulated curve samples the same power law: the same predicted loss time within 2 %
    assert abs(r["t_icl_loss"] / r2["t_icl_loss"] - 1) < 0.02
    # the same curve in learning-rate time (column s = lr * iteration) is the same curve
    csv.write_text("s,c3\n" + "\n".join(f"{0.01 * i},{1 / (1 + 0.01 * i / 100)}" for i in it))
    code3, out3, _ = cli(["transience", "--wd-attn", "3e-3", "--c3-table", str(csv), "--lr", "0.01", "--json"])
    assert code3 == 0 and abs(json.loads(out3)["t_icl_loss"] / r["t_icl_loss"] - 1) < 1e-9
    assert r["wd_attn"] == 3e-3 and "lam" not in r


def test_transience_lam_is_a_deprecated_alias(cli):
    argv = ["--c3-power", "1", "100", "1", "--lr", "0.01", "--json"]
    code, out, err = cli(["transience", "--lam", "3e-3", *argv])
    code2, out2, err2 = cli(["transience", "--wd-attn", "3e-3", *argv])
    assert code == code2 == 0 and json.loads(out) == json.loads(out2)
    assert err.strip().splitlines() == ["icl-kinetics transience: warning: --lam is deprecated; use --wd-attn"]
    assert err2 == ""


def test_help_does_not_import_torch():
    p = subprocess.run([sys.executable, "-c",
                        "import sys; from icl_kinetics.cli import build_parser; build_parser();"
                        "import icl_kinetics.theory, icl_kinetics.validate.figures;"
                        "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert p.stdout.strip() == "False", p.stderr


# ----------------------------------------------------------------------------- train / minimal flags
def _parse(argv):
    from icl_kinetics.cli import build_parser

    return build_parser().parse_args(argv)


def _config(argv):
    from icl_kinetics._flags import config_kwargs
    from icl_kinetics.simulate.engine import TrainConfig

    return TrainConfig(**config_kwargs(_parse(argv)))


def test_train_flags_are_the_config_fields():
    """Every TrainConfig field is a flag of train (its name with dashes, its default), every
    field has its help entry, and train with no flags is TrainConfig()."""
    from dataclasses import fields

    from icl_kinetics._flags import TRAIN_FLAGS
    from icl_kinetics.cli import build_parser
    from icl_kinetics.simulate.engine import TrainConfig

    names = [f.name for f in fields(TrainConfig)]
    assert set(TRAIN_FLAGS) == set(names)
    p = build_parser().commands["train"]
    by_flag = {o: act for act in p._actions for o in act.option_strings}
    for f in fields(TrainConfig):
        act = by_flag["--" + f.name.replace("_", "-")]
        assert act.dest == f.name and act.default == f.default, f.name
        assert act.help and "(default " in act.help
    assert _config(["train"]) == TrainConfig()
    # a non-default value of each kind reaches its field
    cfg = _config(["train", "--model", "minimal", "--width", "0", "--K", "inf", "--batch-size", "7",
                   "--wd-attn", "1e-3", "--early-stop", "none", "--len-context", "100", "--contexts", "equalized"])
    assert (cfg.model, cfg.width, cfg.K, cfg.batch_size, cfg.wd_attn, cfg.early_stop, cfg.N, cfg.contexts) == \
        ("minimal", 0, None, 7, 1e-3, None, 99, "equalized")


def test_flag_choices_are_the_simulate_layers():
    from icl_kinetics._flags import TRAIN_FLAGS
    from icl_kinetics.simulate.data import CONTEXT_MODES, LABEL_ENCODINGS
    from icl_kinetics.simulate.models import KINDS

    assert tuple(TRAIN_FLAGS["model"]["choices"]) == tuple(KINDS)
    assert tuple(TRAIN_FLAGS["labels"]["choices"]) == tuple(LABEL_ENCODINGS)
    assert tuple(TRAIN_FLAGS["contexts"]["choices"]) == tuple(CONTEXT_MODES)


def test_minimal_is_train_model_minimal_with_its_own_defaults():
    from dataclasses import fields

    from icl_kinetics.cli import FOLLOW_THRESHOLD, MINIMAL_DEFAULTS, build_parser
    from icl_kinetics.simulate.engine import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    assert set(MINIMAL_DEFAULTS) <= names
    # the defaults of the former stand-alone minimal-model simulator (MinimalConfig)
    assert MINIMAL_DEFAULTS == dict(N=100, width=0, lr=0.1, eval_every=10, log_every=100,
                                    early_stop=FOLLOW_THRESHOLD, iterations=10_000, seeds=8, D=63, batch_size=128,
                                    eval_size=2000, beta0=0.0, w0=0.0)
    train_flags = {o for act in build_parser().commands["train"]._actions for o in act.option_strings}
    minimal_flags = {o for act in build_parser().commands["minimal"]._actions for o in act.option_strings}
    old = {"--wd-icl", "--max-iterations", "--mlp-width", "--acc-threshold", "--equalize", "--no-early-stop"}
    assert minimal_flags - old == train_flags - {"--model"}
    a = _parse(["minimal"])
    assert a.early_stop is FOLLOW_THRESHOLD
    assert {n: getattr(a, n) for n in MINIMAL_DEFAULTS} == MINIMAL_DEFAULTS


@pytest.mark.parametrize("old,new", [
    (["--wd-icl", "1e-3"], ["--wd-attn", "1e-3"]),
    (["--max-iterations", "300"], ["--iterations", "300"]),
    (["--mlp-width", "16"], ["--width", "16"]),
    (["--acc-threshold", "0.9"], ["--t-icl-threshold", "0.9"]),
    (["--equalize"], ["--contexts", "equalized"]),
    (["--no-early-stop"], ["--early-stop", "none"]),
])
def test_minimal_deprecated_flags_set_the_new_field(old, new):
    a, b = _parse(["minimal", *old]), _parse(["minimal", *new])
    use = " ".join(new) if len(old) == 1 else new[0]  # a flag without a value is replaced by flag and value
    assert a.deprecations == [f"{old[0]} is deprecated; use {use}"]
    assert not getattr(b, "deprecations", None)
    del a.deprecations
    assert vars(a) == vars(b)


def test_median_t_icl_counts_never_as_inf_and_leaves_diverged_out():
    from icl_kinetics.validate.compare import median_t_icl

    run, stop, div = "running", "stopped", "diverged"
    assert median_t_icl([30, 10, 20], [stop] * 3) == 20.0
    assert median_t_icl([10, 20, 30, None], [stop, stop, stop, run]) == 25.0  # (20 + 30) / 2
    assert median_t_icl([10, None, None], [stop, run, run]) is None  # censored: no number claimed
    assert median_t_icl([10, 20, None, None], [stop, stop, run, run]) is None  # (20 + inf) / 2
    assert median_t_icl([10, None, None], [stop, div, div]) == 10.0  # diverged: onset unknown, left out
    assert median_t_icl([None, None], [div, div]) is None
    assert median_t_icl([40, None], [div, run]) is None  # acquired, then diverged: its t_ICL counts


def test_minimal_runs_train_and_reports_seeds_median_and_theory(cli, tmp_path):
    """minimal = train --model minimal: per-seed t_ICL, their median, the theory's t_ICL;
    each seed stops at acquisition (early stop = the t_ICL threshold)."""
    from icl_kinetics.theory import icl_threshold_beta, solve_flow, t_icl

    argv = ["minimal", "--N", "20", "--seeds", "4", "--iterations", "3000", "--quiet", "--out", str(tmp_path / "m"),
            "--plot", str(tmp_path / "m.png")]
    code, out, err = cli(argv + ["--json"])
    assert code == 0, err
    r = json.loads(out)
    c = r["config"]
    assert (c["model"], c["N"], c["width"], c["K"], c["lr"], c["early_stop"]) == ("minimal", 20, 0, None, 0.1, 0.95)
    assert len(r["t_icl"]) == len(r["status"]) == len(r["reasons"]) == 4
    acquired = sorted(t for t in r["t_icl"] if t is not None)
    assert len(acquired) >= 3 and all(s == "stopped" for s, t in zip(r["status"], r["t_icl"]) if t is not None)
    assert r["median_t_icl"] == (float(np.median(acquired)) if len(acquired) == 4 else float(acquired[1]))
    # the theory's numbers are the theory layer's own, at accuracy 0.95
    assert r["theory_t_icl"] == pytest.approx(float(t_icl(20, 0.0, 0.1, w0=0.0, beta_c=icl_threshold_beta(20))),
                                              rel=1e-12)
    assert r["theory_t_icl_full_flow"] == pytest.approx(solve_flow(20, 0.0, 0.1, stage="full").t_icl, rel=1e-9)
    # SGD's median onset within a factor 2 of the full flow's (rung 1 holds it to a few %, at 8+ seeds)
    assert 0.5 < r["median_t_icl"] / r["theory_t_icl_full_flow"] < 2
    assert {"seed", "iteration", "icl_acc", "w", "beta"} <= set(r["rows"][0])
    assert (tmp_path / "m" / "metrics.csv").stat().st_size > 100 and (tmp_path / "m.png").stat().st_size > 1000
    code, text, _ = cli(argv[:-2] + ["--no-resume"])
    assert code == 0 and "median t_ICL:" in text and "theory t_ICL, reduced ODEs" in text


def test_minimal_deprecated_flags_work_and_warn_once_each(cli):
    code, out, err = cli(["minimal", "--N", "20", "--seeds", "2", "--max-iterations", "40", "--wd-icl", "0",
                          "--mlp-width", "0", "--acc-threshold", "0.9", "--no-early-stop", "--quiet", "--json"])
    assert code == 0, err
    assert err.strip().splitlines() == [f"icl-kinetics minimal: warning: {o} is deprecated; use {n}" for o, n in [
        ("--max-iterations", "--iterations"), ("--wd-icl", "--wd-attn"), ("--mlp-width", "--width"),
        ("--acc-threshold", "--t-icl-threshold"), ("--no-early-stop", "--early-stop none")]]
    c = json.loads(out)["config"]
    assert (c["iterations"], c["wd_attn"], c["width"], c["t_icl_threshold"], c["early_stop"]) == (40, 0, 0, 0.9, None)


def test_acc_threshold_moves_the_early_stop_unless_early_stop_is_given():
    from icl_kinetics.cli import _minimal_config

    assert _minimal_config(_parse(["minimal"])).early_stop == 0.95
    cfg = _minimal_config(_parse(["minimal", "--acc-threshold", "0.9"]))
    assert (cfg.t_icl_threshold, cfg.early_stop) == (0.9, 0.9)
    cfg = _minimal_config(_parse(["minimal", "--t-icl-threshold", "0.9", "--early-stop", "0.99"]))
    assert (cfg.t_icl_threshold, cfg.early_stop) == (0.9, 0.99)
    assert _minimal_config(_parse(["minimal", "--early-stop", "none"])).early_stop is None


# ---------------------------------------------------------------- threshold / onset: measured inputs, text
def _mlp_table(path, Ks=(100, 300, 1000, 3000), lr=0.01):
    """Schema-like MLP rows: c1(t) = 0.5 / (1 + t / t0(K)), cut at 4000 iterations, plus transformer rows
    without c1 (skipped)."""
    lines = ["run_id,model,K,lr,seed,iteration,c1"]
    for K in Ks:
        for it in np.linspace(0, 4000, 81):
            lines.append(f"m{K},mlp,{K},{lr},0,{it:g},{0.5 / (1 + it / (0.3 * K)):.10g}")
        lines.append(f"t{K},transformer,{K},{lr},0,0,")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_threshold_text_flags_k_star_below_one_and_prints_interval(cli):
    code, out, _ = cli(["threshold", "--N", "50", "100", "--nu", "0.7", "--amplitude", "1000"])
    assert code == 0 and out.count("< 1 item: every K >= 1 acquires ICL") == 2
    code, out, _ = cli(["threshold", "--N", "50", "--nu", "0.7", "--amplitude", "0.2", "--amplitude-ci", "0.15",
                        "0.27", "--nu-ci", "0.66", "0.74", "--json"])
    r = json.loads(out)
    from icl_kinetics.theory import k_star_interval

    ref = k_star_interval([50], 0.0, 0.2, 0.7, amplitude_ci=(0.15, 0.27), nu_ci=(0.66, 0.74))
    assert np.allclose(r["k_star_lo"], ref["lo"]) and np.allclose(r["k_star_hi"], ref["hi"])
    assert r["c2"] == 0.5


def test_threshold_beta0_eff_route_is_labelled_fitted(cli):
    code, out, _ = cli(["threshold", "--N", "50", "--nu", "0.7", "--amplitude", "0.2", "--beta0-eff", "1.0",
                        "--beta0-scale", "0.4"])
    assert code == 0 and "0.4 x beta0_eff 1; scale FITTED" in out
    ref = k_star(50, 0.4, 0.2, 0.7)
    code, out, _ = cli(["threshold", "--N", "50", "--nu", "0.7", "--amplitude", "0.2", "--beta0-eff", "1.0",
                        "--beta0-scale", "0.4", "--json"])
    assert json.loads(out)["k_star"][0] == pytest.approx(ref, rel=1e-12)
    code, _, err = cli(["threshold", "--N", "50", "--nu", "0.7", "--amplitude", "0.2", "--beta0-eff", "1.0"])
    assert code == 2 and "--beta0-scale or --onset-slope" in err


def test_threshold_from_a_c1_table(cli, tmp_path):
    """A, nu fitted from the MLP rows' I_K at the horizon (independently: trapezoids of c1 * lr dt), over
    the K memorized by then: c1(4000) < 0.05 leaves K = 3000 (c1 = 0.092) out."""
    path = _mlp_table(tmp_path / "mlp.csv")
    code, out, _ = cli(["threshold", "--N", "50", "--c1-table", str(path), "--json"])
    assert code == 0
    r = json.loads(out)
    Ks = np.array([100, 300, 1000.0])
    t = np.linspace(0, 4000, 81)
    ik = [np.trapezoid(0.5 / (1 + t / (0.3 * K)), 0.01 * t) for K in Ks]
    nu, la = np.polyfit(np.log(Ks), np.log(ik), 1)
    assert r["nu"] == pytest.approx(nu, rel=1e-8) and r["amplitude"] == pytest.approx(np.exp(la), rel=1e-8)
    assert r["k_star_lo"][0] < r["k_star"][0] < r["k_star_hi"][0]
    assert r["memorization_K_fitted"] == [100, 300, 1000] and r["memorization_K_not_memorized"] == [3000]
    code, out, _ = cli(["threshold", "--N", "50", "--c1-table", str(path)])
    assert code == 0 and "K = 100, 300, 1000; left out (not memorized): K = 3000" in out


def test_threshold_c1_table_fits_the_same_k_as_validate(cli, tmp_path):
    """One table with an un-memorized K (3000): the CLI's nu is validate's memorization_law's nu."""
    from icl_kinetics.validate import memorization_law, read_table

    path = _mlp_table(tmp_path / "mlp.csv", Ks=(100, 200, 400, 1000, 3000))
    code, out, _ = cli(["threshold", "--N", "50", "--c1-table", str(path), "--json"])
    assert code == 0
    r = json.loads(out)
    v = memorization_law(read_table(path))
    assert v.details["K_fitted"] == r["memorization_K_fitted"] == [100, 200, 400, 1000]
    assert r["nu"] == pytest.approx(v.details["fit"]["exponent"], rel=1e-9)
    assert r["amplitude"] == pytest.approx(v.details["fit"]["amplitude"], rel=1e-9)


def test_threshold_c1_table_with_too_few_memorized_k(cli, tmp_path):
    path = _mlp_table(tmp_path / "mlp.csv", Ks=(100, 3000, 5000))
    code, out, err = cli(["threshold", "--N", "50", "--c1-table", str(path)])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--c1-table" in err and "has 1 of 3" in err and "K = 3000, 5000" in err


def test_c1_table_short_row_is_refused_by_line(cli, tmp_path):
    """A row with fewer fields than the header: exit 2, one line naming the option, file and line."""
    path = tmp_path / "short.csv"
    path.write_text("c1,iteration,K\n0.4\n")
    for argv in (["threshold", "--N", "50", "--c1-table", str(path)],
                 ["onset", "--N", "20", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1", "--c1-table", str(path),
                  "--K", "100"]):
        code, out, err = cli(argv)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "--c1-table" in err and "short.csv" in err and "line 2 has 1 fields" in err
        assert "internal error" not in err


def test_c3_table_can_be_gzip_compressed(cli, tmp_path):
    """A .csv.gz c3 table gives what the same .csv gives; a gzip file named .csv is refused in one line."""
    import gzip

    text = "iteration,c3\n" + "\n".join(f"{i},{1 / (1 + i / 1e4)}" for i in np.geomspace(1, 1e7, 60)) + "\n"
    plain, packed = tmp_path / "c3.csv", tmp_path / "c3.csv.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    runs = [cli(["transience", "--wd-attn", "3e-3", "--c3-table", str(p), "--lr", "0.01", "--json"])
            for p in (plain, packed)]
    assert runs[0][0] == runs[1][0] == 0 and json.loads(runs[0][1]) == json.loads(runs[1][1])
    wrong = tmp_path / "gz.csv"
    wrong.write_bytes(gzip.compress(text.encode()))
    code, _, err = cli(["transience", "--wd-attn", "3e-3", "--c3-table", str(wrong), "--lr", "0.01"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--c3-table" in err and "UTF-8" in err
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(text.encode())[:40])
    code, _, err = cli(["transience", "--wd-attn", "3e-3", "--c3-table", str(broken), "--lr", "0.01"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--c3-table" in err


def test_onset_text_shows_closed_form_quantiles_and_signs(cli):
    code, out, _ = cli(["onset", "--N", "2", "3", "--lr", "0.5", "--beta0-mean", "2", "--beta0-std", "0.3",
                        "--samples", "2000"])
    assert code == 0 and out.count("closed form") == 2 and "K = inf" in out
    assert "+ -" not in out


def test_onset_finite_k(cli, tmp_path):
    """--K with --amplitude/--nu: the fraction that acquires (p_icl) and 'never' above it;
    --c1-table: onsets of FiniteKOnset on the table's curve."""
    from icl_kinetics.theory import FiniteKOnset, Tabulated, p_icl

    code, out, _ = cli(["onset", "--N", "50", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1", "--K", "3000",
                        "--amplitude", "0.2", "--nu", "0.7", "--nu-ci", "0.65", "0.75", "--samples", "5000", "--json"])
    r = json.loads(out)["per_N"][0]
    assert r["fraction_acquired"] == pytest.approx(p_icl(0.2 * 3000**0.7, 50, 0.0, 1.0), rel=1e-9)
    lo, hi = r["fraction_acquired_range"]
    assert lo < r["fraction_acquired"] < hi
    assert r["closed_form_quantiles"]["0.95"] is None and r["quantiles_are_lower_bounds"]  # never: null in JSON
    path = _mlp_table(tmp_path / "mlp.csv", lr=0.1)
    code, out, _ = cli(["onset", "--N", "20", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1",
                        "--c1-table", str(path), "--K", "1000", "--samples", "2000", "--json"])
    assert code == 0
    r = json.loads(out)["per_N"][0]
    t = np.linspace(0, 4000, 81)
    d = FiniteKOnset(N=20, lr=0.1, c1=Tabulated(0.1 * t, 0.5 / (1 + t / 300.0)))
    assert 0.05 < d.fraction_acquired() < 0.95
    assert r["closed_form_quantiles"]["0.05"] == pytest.approx(float(d.quantile(0.05)), rel=1e-9)
    assert r["fraction_acquired"] == pytest.approx(d.fraction_acquired(), rel=1e-9)
    code, _, err = cli(["onset", "--N", "20", "--lr", "0.1", "--beta0-mean", "0", "--beta0-std", "1",
                        "--c1-table", str(path)])
    assert code == 2 and "--K" in err
