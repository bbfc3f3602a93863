"""icl-kinetics: the learning kinetics of in-context learning (theory, simulation, validation).

Subcommands (every one takes ``--json``; ``--plot PATH`` where a picture fits)::

    demo        the main job: headline predictions (K* vs N, t_ICL distributions)
                and a quick theory-vs-SGD check on the minimal model
    threshold   K*(N) for I_K(inf) = A K^nu, and the log-log slope
    onset       t_ICL quantiles per N for a Gaussian spread of beta0
    minimal     SGD on the minimal model, many seeds at once: per-seed t_ICL
                ('train --model minimal' with the minimal model's defaults)
    transience  w_tr and the predicted loss of ICL for a c3(t) curve and wd_attn
    compare     theory vs minimal-model SGD on a grid of N x beta0 (table + figure)
    train       the seed-batched training engine: the paper's transformer, the
                two-layer control, the minimal model or the standalone MLP
    bench       benchmarks users can run on their own hardware (bench engine)
    sweep       named, resumable sweeps of training runs (presets or --spec FILE): run, resume, status, collect, list
    validate    the theory's predictions against trained models: report.md + figures

Throughout, N counts **context tokens only** (the paper's code counts the target
too: its ``len_context = 100`` is ``--N 99`` here).  Importing this module does not
import torch; commands that train import the simulation layer on demand.

Each command is a pair: ``cmd_X(args) -> dict`` computes, ``_print_X(result)`` prints
(``--json`` prints the dict instead).  The flags of ``train`` and ``minimal`` are made
from :class:`icl_kinetics.simulate.engine.TrainConfig`'s fields (:mod:`icl_kinetics._flags`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from icl_kinetics._flags import (
    N_HELP,
    TRAIN_FLAGS,
    LenContext,
    Parser,
    add_config_flags,
    add_deprecated,
    common,
    config_kwargs,
    deprecation_notes,
    float_type,
    int_type,
)


# ----------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="icl-kinetics", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Run 'icl-kinetics COMMAND --help' for a command's options.")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    ap.commands = sub.choices  # name -> parser (for naming flags in errors)
    for add in (_parser_demo, _parser_threshold, _parser_onset, _parser_minimal, _parser_transience,
                _parser_compare, _parser_train, _parser_sweep, _parser_validate, _parser_bench):
        add(sub)
    return ap


def _version() -> str:
    from icl_kinetics import __version__

    return f"icl-kinetics {__version__}"


def _parser_demo(sub):
    p = sub.add_parser("demo", help="headline predictions and a quick theory-vs-SGD check")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--no-sim", action="store_true", help="skip the minimal-model SGD check")
    common(p, plot=False)


_C1_TABLE_HELP = ("a measured memorization curve: CSV (.csv or .csv.gz) with columns 'iteration' and 'c1' "
                  "(the schema's MLP rows: model = mlp, one K per curve, c1 averaged over seeds; 'lr' "
                  "column or --lr converts iterations to learning-rate time)")
_BETA0_EFF_HELP = ("the route from a transformer: its effective beta0 (validate's beta0, the effective beta at "
                   "the first evaluation) is put on the theory's scale as beta0 = S * beta0_eff with a FITTED "
                   "scale S: --beta0-scale S, or --onset-slope s (validate's per-seed d log t_ICL / d beta0_eff "
                   "at K = inf) giving S = s / (the theory's d log t_ICL / d beta0)")


def _add_memorization_flags(p, what: str) -> None:
    p.add_argument("--amplitude-ci", nargs=2, type=float_type("amplitude-ci", 0.0), metavar=("LO", "HI"),
                   help="95%% interval of A (propagated into " + what + ")")
    p.add_argument("--nu-ci", nargs=2, type=float_type("nu-ci", 0.0), metavar=("LO", "HI"),
                   help="95%% interval of nu (propagated into " + what + ")")
    p.add_argument("--ci-method", choices=["delta", "monte_carlo"], default="delta",
                   help="propagation of the intervals: delta (analytic, default) or monte_carlo "
                        "(20000 seeded draws, --seed)")


def _add_calibration_flags(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--beta0-scale", type=float_type("beta0-scale", 0.0), metavar="S",
                   help="fitted scale S in beta0 = S * beta0_eff (e.g. about 0.4 for the paper's one-layer "
                        "transformer, docs/validation.md)")
    g.add_argument("--onset-slope", type=float_type("onset-slope", hi=0.0), metavar="SLOPE",
                   help="validate's measured d log t_ICL / d beta0_eff (< 0); the scale S is fitted from it")


def _parser_threshold(sub):
    p = sub.add_parser("threshold", help="diversity threshold K*(N) for I_K(inf) = A K^nu",
                       description="K* = (N tau_star(beta0) / A)^(1/nu) items.  The memorization law comes from "
                                   "--amplitude/--nu (with optional CIs) or from a measured c1 table (A, nu and "
                                   "their t intervals fitted over its memorized K).  " + _BETA0_EFF_HELP + ".")
    p.add_argument("--N", nargs="+", type=int_type("N", 1), required=True, help=N_HELP)
    p.add_argument("--nu", type=float_type("nu", 0.0), help="memorization exponent nu > 0")
    p.add_argument("--amplitude", type=float_type("amplitude", 0.0),
                   help="A in I_K(inf) = A K^nu, learning-rate time units (> 0)")
    p.add_argument("--c1-table", metavar="CSV", help=_C1_TABLE_HELP + "; A and nu are fitted over its finite K "
                   "memorized by the end of their runs (the rule of validate's memorization_law: mean final c1 "
                   "below MEMORIZED_C1), >= 3 of them")
    p.add_argument("--lr", type=float_type("lr", 0.0), help="learning rate of the c1 table's run (if it has no "
                   "'lr' column)")
    _add_memorization_flags(p, "K*")
    p.add_argument("--seed", type=int_type("seed", 0), default=0, help="Monte Carlo seed (default 0)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--beta0", type=float_type("beta0"), default=None,
                   help="the theory's initial beta of the head (default 0)")
    g.add_argument("--beta0-eff", type=float_type("beta0-eff"), metavar="X",
                   help="a transformer's effective beta0 instead: needs --beta0-scale or --onset-slope")
    _add_calibration_flags(p)
    p.add_argument("--c2", type=float_type("c2", 0.0, strict=False), default=_c2_default(),
                   help="constant c2 of the context-label noise (default 1/2: an untrained MLP, the least noise "
                        "a memorizing MLP has); 0 drops the noise: the paper's closed form")
    common(p)


def _c2_default() -> float:
    from icl_kinetics.theory.closed_form import C2_DEFAULT

    return C2_DEFAULT


def _ci_resamples_default() -> int:
    from icl_kinetics.theory.onset import CI_RESAMPLES

    return CI_RESAMPLES


def _parser_onset(sub):
    p = sub.add_parser("onset", help="t_ICL distribution per N (quantiles, histogram, violins)",
                       description="Without memorization flags this is K = inf (the MLP memorizes nothing: "
                                   "c1 = c2 = 1/2).  Finite K: --c1-table (a measured c1 curve times each "
                                   "seed's onset), or --K with --amplitude/--nu (these fix I_K(inf) only, so "
                                   "they give the fraction that acquires, with its range from the CIs, and "
                                   "lower bounds on the times, not the times).  " + _BETA0_EFF_HELP + ".")
    p.add_argument("--N", nargs="+", type=int_type("N", 1), required=True, help=N_HELP)
    p.add_argument("--lr", type=float_type("lr", 0.0), required=True, help="learning rate > 0")
    p.add_argument("--beta0-mean", type=float_type("beta0-mean"),
                   help="mean of the seeds' initial beta0 ~ Normal(mean, std^2), on the theory's scale")
    p.add_argument("--beta0-std", type=float_type("beta0-std", 0.0, strict=False),
                   help="standard deviation of the seeds' beta0 (>= 0; 0: one onset for all seeds)")
    p.add_argument("--beta0-eff-mean", type=float_type("beta0-eff-mean"),
                   help="instead: mean of a transformer's effective beta0 (needs --beta0-scale or --onset-slope)")
    p.add_argument("--beta0-eff-std", type=float_type("beta0-eff-std", 0.0, strict=False),
                   help="instead: standard deviation of the effective beta0")
    _add_calibration_flags(p)
    p.add_argument("--c2", type=float_type("c2", 0.0, strict=False), default=_c2_default(),
                   help="constant c2 (default 1/2)")
    p.add_argument("--c1-table", metavar="CSV", help=_C1_TABLE_HELP + "; finite K: the onsets it drives")
    p.add_argument("--ci-resamples", type=int_type("ci-resamples", 100), default=None,
                   help=f"with --c1-table: bootstrap resamples over the table's seeds (default "
                        f"{_ci_resamples_default()}, seeded by --seed) for 95%% intervals of the closed-form "
                        "quantiles; needs >= 3 seeds in the table")
    p.add_argument("--K", type=float_type("K", 1.0, strict=False),
                   help="finite K (items): selects the c1 table's K, or with --amplitude/--nu gives I_K(inf) = A K^nu")
    p.add_argument("--amplitude", type=float_type("amplitude", 0.0), help="A of I_K(inf) = A K^nu (with --K, --nu)")
    p.add_argument("--nu", type=float_type("nu", 0.0), help="nu of I_K(inf) = A K^nu (with --K, --amplitude)")
    _add_memorization_flags(p, "the fraction that acquires ICL")
    p.add_argument("--samples", type=int_type("samples", 1), default=100_000, help="samples per N (default 100000)")
    p.add_argument("--seed", type=int_type("seed", 0), default=0,
                   help="seed of the sampling and of the c1 bootstrap (default 0)")
    p.add_argument("--regime", choices=["exact", "signal", "noise"], default="exact",
                   help="escape-time formula (default exact: noise included, numeric)")
    common(p)


class _FollowThreshold:
    """``minimal``'s default early stop: the t_ICL threshold (stop each seed at acquisition)."""

    def __repr__(self):
        return "the --t-icl-threshold"


FOLLOW_THRESHOLD = _FollowThreshold()

#: ``minimal``'s defaults where they differ from TrainConfig's (those of the old simulator)
MINIMAL_DEFAULTS = dict(N=100, width=0, lr=0.1, eval_every=10, log_every=100, early_stop=FOLLOW_THRESHOLD,
                        iterations=10_000, seeds=8, D=63, batch_size=128, eval_size=2000, beta0=0.0, w0=0.0)

#: ``minimal``'s deprecated flags, kept for one release: old flag -> (field, what replaces it,
#: and for a flag without a value the field's value it stands for)
MINIMAL_ALIASES = {
    "--wd-icl": ("wd_attn", "--wd-attn"),
    "--max-iterations": ("iterations", "--iterations"),
    "--mlp-width": ("width", "--width"),
    "--acc-threshold": ("t_icl_threshold", "--t-icl-threshold"),
    "--equalize": ("contexts", "--contexts equalized", "equalized"),
    "--no-early-stop": ("early_stop", "--early-stop none", None),
}


def _config_flags(p, defaults=None, skip=(), shown=None, aliases=None):
    """The TrainConfig flags, ``--len-context`` beside ``--N``, and deprecated ``aliases``
    (each exclusive with the flag that replaces it)."""
    aliases = aliases or {}
    groups = {f: p.add_mutually_exclusive_group() for f in ("N", *(v[0] for v in aliases.values()))}
    add_config_flags(p, defaults, skip=skip, groups=groups, shown=shown)
    groups["N"].add_argument("--len-context", dest="N", action=LenContext, type=int_type("len-context", 2),
                             default=argparse.SUPPRESS, metavar="LEN_CONTEXT",
                             help="the paper code's sequence length, target included (N = len_context - 1)")
    for old, (field, new, *const) in aliases.items():
        kw = {"no_value": True, "const": const[0]} if const else \
            {"type": TRAIN_FLAGS[field]["type"], "metavar": old[2:].upper().replace("-", "_")}
        add_deprecated(groups[field], old, field, new, **kw)


def _run_flags(p, out_default, out_help):
    p.add_argument("--out", default=out_default, help=out_help)
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT has a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    common(p)


def _parser_minimal(sub):
    p = sub.add_parser("minimal", help="SGD on the minimal model: per-seed t_ICL (iterations)",
                       description="'train --model minimal' with the minimal model's defaults (no MLP, K -> inf, "
                       "N = 100, lr 0.1, each seed stopped at acquisition), its median t_ICL and the theory's.")
    _config_flags(p, MINIMAL_DEFAULTS, skip=("model",), aliases=MINIMAL_ALIASES,
                  shown={"early_stop": "the --t-icl-threshold: each seed stops at acquisition"})
    _run_flags(p, None, "folder for config.json, metrics.csv, summary.json, checkpoint.pt (default: none)")


def _parser_train(sub):
    p = sub.add_parser("train", help="train S seeds of a model in one process (tidy metrics, checkpoints)",
                       description="Train seed-batched models with plain SGD. --N counts context tokens, NOT the "
                       "target; --len-context counts the target too, as the paper's code does "
                       "(--len-context 100 == --N 99).")
    _config_flags(p)
    _run_flags(p, "runs/train", "folder for config.json, metrics.csv, checkpoint.pt (default runs/train)")


def _parser_transience(sub):
    p = sub.add_parser("transience", help="w_tr and the predicted loss of ICL for c3(t) and wd_attn")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--wd-attn", type=float_type("wd-attn", 0.0), dest="wd_attn",
                   help="L2 weight decay on w and beta, per unit learning-rate time (> 0)")
    add_deprecated(g, "--lam", "wd_attn", "--wd-attn", type=float_type("wd-attn", 0.0))
    p.add_argument("--N", type=int_type("N", 1), default=100, help=N_HELP + " (default 100)")
    p.add_argument("--lr", type=float_type("lr", 0.0), default=0.01, help="learning rate (default 0.01)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--c3-power", nargs=3, type=float_type("c3-power", 0.0), metavar=("C0", "S0", "ALPHA"),
                   help="c3(s) = C0 (1 + s/S0)^-ALPHA, s = lr * iterations")
    g.add_argument("--c3-table", metavar="CSV", help="CSV with columns 'iteration' (or 's' in learning-rate time) "
                   "and 'c3'")
    p.add_argument("--iterations", type=float_type("iterations", 0.0), default=None,
                   help="horizon in iterations (default: end of the c3 table, or 1e7)")
    common(p)


def _parser_compare(sub):
    p = sub.add_parser("compare", help="theory vs minimal-model SGD on an N x beta0 grid")
    p.add_argument("--N", nargs="+", type=int_type("N", 2), default=[50, 100, 200], help=N_HELP)
    p.add_argument("--beta0", nargs="+", type=float_type("beta0"), default=[-2.0, -1.0, 0.0, 1.0])
    p.add_argument("--lr", type=float_type("lr", 0.0), default=0.1)
    p.add_argument("--seeds", type=int_type("seeds", 1), default=8)
    p.add_argument("--seed", type=int_type("seed", 0), default=0)
    p.add_argument("--out", default="out/compare", help="folder for table.csv, table.md, figure")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    common(p)


def _parser_sweep(sub):
    p = sub.add_parser("sweep", help="named, resumable sweeps of training runs (run, resume, status, collect, list)")
    ss = p.add_subparsers(dest="sweep_cmd", metavar="SWEEP_COMMAND", parser_class=Parser, required=True)
    p.commands = ss.choices
    q = ss.add_parser("run", help="run (or resume) a preset sweep, or a grid declared in a spec file; skips "
                      "finished runs", description="Run a preset (a spec file shipped with the package) or "
                      "--spec FILE, a grid over any TrainConfig field (docs/sweeps.md, 'Spec files').  Flags "
                      "given here win over the spec's [execution] table.")
    q.add_argument("preset", nargs="?", default=None, help="preset name (see 'icl-kinetics sweep list')")
    q.add_argument("--spec", default=None, metavar="FILE",
                   help="a .toml (or .json) spec file instead of a preset; recorded in the sweep's folder")
    q.add_argument("--scale", default=None,
                   help="small or paper for a preset (default small); for a spec, one of its [scale.NAME] "
                        "tables (default: its first, or 'custom' when it declares none)")
    q.add_argument("--out", default=None, help="the sweep's folder (default runs/NAME-SCALE)")
    _sweep_execution_flags(q)
    for name, what in (("status", "done, failed and pending runs, and the time left"),
                       ("collect", "one tidy table (CSV) for the whole sweep"),
                       ("resume", "run a sweep folder's pending runs (no preset or spec file needed)")):
        q = ss.add_parser(name, help=what)
        q.add_argument("dir", help="the sweep's folder")
        if name == "collect":
            q.add_argument("--out", default=None, help="CSV path (default DIR/collected.csv)")
            common(q, plot=False)
        elif name == "resume":
            _sweep_execution_flags(q, device=False)
        else:
            common(q, plot=False)
    q = ss.add_parser("list", help="the presets (or a spec file's scales), their sizes and estimated CPU (or GPU) time")
    q.add_argument("--cores", type=int_type("cores", 1), default=2, help="cores for the wall-time estimate")
    q.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu (default): core-hours and wall hours on --cores cores; cuda: hours on one H200, "
                        "from its measured rates (docs/sweeps.md, 'Estimates')")
    q.add_argument("--spec", default=None, metavar="FILE", help="list this spec file's scales instead")
    common(q, plot=False)


def _sweep_execution_flags(q, device: bool = True):
    """How a sweep's runs execute (never part of a run's id); default: the spec's [execution]."""
    q.add_argument("--executor", choices=["local", "slurm"], default=None,
                   help="local (default): a process pool on this machine; slurm: a submitit job array")
    q.add_argument("--processes", type=int_type("processes", 1), default=None,
                   help="local worker processes (default: one per core)")
    if device:
        q.add_argument("--device", choices=["cpu", "cuda"], default=None,
                       help="where the runs train (default: the spec's device field, else cpu)")
    q.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    q.add_argument("--only", action="append", default=None, metavar="FIELD=V1,V2",
                   help="train only the runs whose config FIELD is one of the values (e.g. --only N=9,19; "
                        "K=inf for fresh items); repeatable (all must hold); the rest stay pending, and the "
                        "exit code says whether the runs asked for finished")
    q.add_argument("--from-table", action="append", default=None, metavar="TABLE",
                   help="first take the finished runs that this collected table (sweep collect's CSV, or a "
                        ".csv.gz committed under docs/results/) holds, after verifying them, so that only the "
                        "rest trains (a sweep carried over machines); repeatable; a NAME.timing.json beside "
                        "it gives their run times")
    q.add_argument("--slurm-partition", default=None)
    q.add_argument("--slurm-time", type=int_type("slurm-time", 1), default=None, help="minutes per job (default 600)")
    q.add_argument("--slurm-gpus", type=int_type("slurm-gpus", 0), default=None, help="GPUs per job (default 0)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    common(q, plot=False)


def _parser_validate(sub):
    p = sub.add_parser("validate", help="check the theory's predictions against trained models (report.md)",
                       description="Check the theory against the preset sweeps (run or reused) or against "
                       "your own tidy table (--runs; schema in docs/validation.md).")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", choices=["small", "paper", "scale_ladder", "zipf_rung2"], default="small",
                   help="scale of the preset sweeps, or scale_ladder: the K* ladder in N and width, or zipf_rung2: "
                   "K*(alpha) under Zipf item frequencies on rung 2 (each its own sweep and report; "
                   "docs/validation.md)")
    g.add_argument("--runs", metavar="CSV", nargs="+", default=None,
                   help="your own runs as one or more tidy tables (stacked; e.g. MLP runs and ICL runs)")
    p.add_argument("--sweeps", default=None, help="folder of the preset sweeps (default runs/PRESET), or of their "
                   "collected tables SWEEP.csv.gz (with --no-run; e.g. docs/results/validation_small/tables)")
    p.add_argument("--no-run", action="store_true", help="only read sweeps that exist; never train")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the preset sweeps train (cuda: one process on the GPU)")
    p.add_argument("--out", default="out/validate", help="folder for report.md, report.json and figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--plan", action="store_true", help="with --runs: only list each check, whether the table meets "
                   "its minimum data and what it lacks (columns, values of N or K, seeds); nothing is fitted")
    p.add_argument("--map", metavar="SRC=DST", action="append", default=None,
                   help="with --runs: read column SRC as the schema's column DST (repeatable; e.g. icl_val_acc=icl_acc)")
    p.add_argument("--iterations-per-epoch", type=int_type("iterations-per-epoch", 1), default=None, metavar="E",
                   help="with --runs: the table has an 'epoch' column; iteration = epoch x E")
    p.add_argument("--k-minus-one-is-inf", action="store_true",
                   help="with --runs: read K = -1 (the paper's code's convention) as K = inf (fresh items)")
    common(p, plot=False)


def _parser_bench(sub):
    p = sub.add_parser("bench", help="benchmarks to run on your own hardware")
    p.add_argument("what", choices=["engine"], help="engine: fast seed-batched engine vs naive reference")
    p.add_argument("--quick", action="store_true", help="fewer iterations (seconds instead of a minute)")
    p.add_argument("--seeds", type=int_type("seeds", 1), default=16)
    p.add_argument("--workers", type=int_type("workers", 1), default=None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    common(p, plot=False)


# ----------------------------------------------------------------------------- theory commands
def _c1_curves(path, lr, name: str = "c1-table", by_seed: bool = False) -> dict:
    """The measured c1 curves of a CSV: K (float, inf for K = inf or -1 is refused) -> (learning-rate
    times s, c1 averaged over seeds at each iteration).  Only the schema's MLP rows are kept when the
    table has a 'model' column with any; rows with an empty c1 are skipped.  ``by_seed``: K -> {seed
    (its run_id and seed columns, those it has) -> (s, c1 of that seed, averaged over its rows at
    each iteration)} instead.  The file is read by :func:`icl_kinetics.io.read_csv_numbers`."""
    import math

    from icl_kinetics.errors import ParameterError
    from icl_kinetics.io import read_csv_numbers

    cols = read_csv_numbers(path, name, need=("iteration", "c1"), optional=("K", "lr"),
                            text=("model", "run_id", "seed"))
    n = len(cols["c1"])
    keep = range(n)
    if "model" in cols and "mlp" in cols["model"]:
        keep = [i for i in keep if cols["model"][i] == "mlp"]
    groups: dict = {}
    for i in keep:
        c1 = cols["c1"][i]
        if math.isnan(c1):
            continue
        k = cols["K"][i] if "K" in cols and not math.isnan(cols["K"][i]) else math.inf
        if k < 2 and math.isfinite(k):
            raise ParameterError(name, str(path), f"K >= 2 items or inf (a row has K = {k:g})")
        run_lr = cols["lr"][i] if "lr" in cols and not math.isnan(cols["lr"][i]) else lr
        if run_lr is None:
            raise ParameterError("lr", None, "a learning rate > 0: the c1 table has no 'lr' column, so give --lr")
        if math.isnan(cols["iteration"][i]):
            raise ParameterError(name, str(path), "an 'iteration' in every row with a c1 value")
        g = groups.setdefault(k, {})
        if by_seed:
            g = g.setdefault(tuple(cols[c][i] if c in cols else None for c in ("run_id", "seed")), {})
        g.setdefault(cols["iteration"][i], []).append((c1, run_lr))
    if not groups:
        raise ParameterError(name, str(path), "at least one row with a c1 value")

    def curve(g):
        its = sorted(g)
        return [it * g[it][0][1] for it in its], [sum(v for v, _ in g[it]) / len(g[it]) for it in its]

    if by_seed:
        return {k: {sd: curve(g) for sd, g in gs.items()} for k, gs in groups.items()}
    return {k: curve(g) for k, g in groups.items()}


def _memorization_law(a) -> dict:
    """A, nu and their intervals: from --amplitude/--nu (and --amplitude-ci/--nu-ci) or fitted to the
    c1 table's I_K at its horizon (t intervals) over its finite K memorized by then, by the rule of
    ``validate``'s memorization_law (:func:`icl_kinetics.validate.memorization.memorized`)."""
    from icl_kinetics.errors import ParameterError
    from icl_kinetics.theory import Tabulated, memorization_law_fit

    if a.c1_table:
        from icl_kinetics.validate.memorization import MEMORIZED_C1, memorized

        if a.amplitude is not None or a.nu is not None:
            raise ParameterError("c1-table", a.c1_table, "given alone: A and nu are fitted from it (drop "
                                 "--amplitude/--nu)")
        curves = {k: v for k, v in _c1_curves(a.c1_table, a.lr).items() if k != float("inf")}
        ks = sorted(curves)
        ik = [float(Tabulated(*curves[k]).integral(curves[k][0][-1])) for k in ks]
        c1_final = [curves[k][1][-1] for k in ks]
        mem = memorized(c1_final)
        left = [ks[i] for i in range(len(ks)) if i not in mem]
        if len(mem) < 3:
            raise ParameterError("c1-table", a.c1_table, f"at least 3 finite K memorized by the end of their runs "
                                 f"(final c1 < {MEMORIZED_C1}; has {len(mem)} of {len(ks)}"
                                 + (f", not memorized: K = {', '.join(f'{k:g}' for k in left)}" if left else "")
                                 + "): run longer or add K")
        fit = memorization_law_fit([ks[i] for i in mem], [ik[i] for i in mem])
        return {**fit, "source": "c1 table", "K": ks, "i_k": ik, "c1_final": c1_final,
                "K_fitted": [ks[i] for i in mem], "K_not_memorized": left}
    if a.amplitude is None or a.nu is None:
        raise ParameterError("amplitude" if a.amplitude is None else "nu", None,
                             "given (with --nu / --amplitude), or a --c1-table")
    return {"amplitude": a.amplitude, "nu": a.nu, "amplitude_ci": a.amplitude_ci and tuple(a.amplitude_ci),
            "nu_ci": a.nu_ci and tuple(a.nu_ci), "source": "given"}


def _theory_beta0(a, value, eff, name: str):
    """(beta0 on the theory's scale, calibration dict or None): ``value`` as given, or ``eff``
    (a transformer's effective beta0) times the fitted scale of --beta0-scale / --onset-slope."""
    from icl_kinetics.errors import ParameterError
    from icl_kinetics.theory import calibrate_beta0

    if eff is None:
        if a.beta0_scale is not None or a.onset_slope is not None:
            raise ParameterError("beta0-scale" if a.beta0_scale is not None else "onset-slope",
                                 a.beta0_scale if a.beta0_scale is not None else a.onset_slope,
                                 f"used with --{name} (a transformer's effective beta0) only")
        return value, None
    if a.beta0_scale is not None:
        cal = {"scale": a.beta0_scale, "source": "--beta0-scale", "fitted": True}
    elif a.onset_slope is not None:
        cal = {**calibrate_beta0(a.onset_slope, eff, c2=a.c2), "source": "--onset-slope"}
    else:
        raise ParameterError(name, eff, "used with --beta0-scale or --onset-slope (the fitted scale from the "
                             "effective beta0 to the theory's)")
    return cal["scale"] * eff, cal


def cmd_threshold(a) -> dict:
    import numpy as np

    from icl_kinetics.theory import k_star_interval

    beta0, cal = _theory_beta0(a, 0.0 if a.beta0 is None else a.beta0, a.beta0_eff, "beta0-eff")
    law = _memorization_law(a)
    Ns = np.array(a.N)
    ki = k_star_interval(Ns, beta0, law["amplitude"], law["nu"], amplitude_ci=law["amplitude_ci"],
                         nu_ci=law["nu_ci"], method=a.ci_method, seed=a.seed, c2=a.c2)
    ks = ki["k_star"]
    slope = float(np.polyfit(np.log(Ns), np.log(ks), 1)[0]) if len(set(a.N)) > 1 else None
    has_ci = law["amplitude_ci"] is not None or law["nu_ci"] is not None
    res = {"N": a.N, "k_star": ks.tolist(), "k_star_lo": ki["lo"].tolist() if has_ci else None,
           "k_star_hi": ki["hi"].tolist() if has_ci else None, "below_one_item": ki["below_one"].tolist(),
           "ci_method": ki["method"] if has_ci else None, "ci_draws": ki["draws"] if has_ci else None,
           "slope": slope, "predicted_slope": 1.0 / law["nu"], "nu": law["nu"], "amplitude": law["amplitude"],
           "nu_ci": law["nu_ci"], "amplitude_ci": law["amplitude_ci"], "memorization_source": law["source"],
           "memorization_K_fitted": law.get("K_fitted"), "memorization_K_not_memorized": law.get("K_not_memorized"),
           "beta0": beta0, "beta0_eff": a.beta0_eff, "calibration": cal, "c2": a.c2,
           "units": {"N": "context tokens (target not counted)", "amplitude": "learning-rate time",
                     "k_star": "items"}}
    if a.plot:
        from icl_kinetics.validate.figures import k_star_figure, save

        res["plot"] = save(k_star_figure({"N": Ns, "k_star": ks}, nu=law["nu"], amplitude=law["amplitude"],
                                         beta0=beta0, c2=a.c2), a.plot)
    return res


def _print_threshold(r):
    b = f"beta0 = {r['beta0']:g}"
    if r["calibration"]:
        c = r["calibration"]
        b += f" (= {c['scale']:.3g} x beta0_eff {r['beta0_eff']:g}; scale FITTED from {c['source']})"
    ci = "" if r["amplitude_ci"] is None else f", A in [{r['amplitude_ci'][0]:.4g}, {r['amplitude_ci'][1]:.4g}]"
    ci += "" if r["nu_ci"] is None else f", nu in [{r['nu_ci'][0]:.4g}, {r['nu_ci'][1]:.4g}]"
    print(f"K* for I_K(inf) = {r['amplitude']:.4g} K^{r['nu']:.4g} ({r['memorization_source']}{ci}), {b}, "
          f"c2 = {r['c2']:g}")
    if r.get("memorization_K_fitted") is not None:
        from icl_kinetics.validate.memorization import MEMORIZED_C1

        left = r["memorization_K_not_memorized"]
        print(f"A and nu fitted over the K memorized by the end of their runs (final c1 < {MEMORIZED_C1}): K = "
              + ", ".join(f"{k:g}" for k in r["memorization_K_fitted"])
              + ("; left out (not memorized): K = " + ", ".join(f"{k:g}" for k in left) if left else ""))
    lo_hi = r["k_star_lo"] is not None
    print(f"{'N':>8} {'K* (items)':>14}" + (f" {'95% interval':>25}" if lo_hi else ""))
    for i, (n, k) in enumerate(zip(r["N"], r["k_star"])):
        rng = f" [{r['k_star_lo'][i]:>10.4g}, {r['k_star_hi'][i]:>10.4g}]" if lo_hi else ""
        note = "  < 1 item: every K >= 1 acquires ICL (no threshold in range)" if r["below_one_item"][i] else ""
        print(f"{n:>8} {k:>14.6g}{rng}{note}")
    if lo_hi:
        how = "delta method" if r["ci_method"] == "delta" else f"Monte Carlo, {r['ci_draws']} seeded draws"
        print(f"interval: A and nu's intervals propagated ({how}, A and nu independent)")
    if r["slope"] is not None:
        print(f"log-log slope d log K*/d log N = {r['slope']:.4f}  (1/nu = {r['predicted_slope']:.4f})")


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _onset_beta0(a):
    """(mean, std, calibration) of the seeds' beta0 on the theory's scale."""
    from icl_kinetics.errors import ParameterError

    eff = a.beta0_eff_mean is not None or a.beta0_eff_std is not None
    if eff and (a.beta0_mean is not None or a.beta0_std is not None):
        raise ParameterError("beta0-eff-mean", a.beta0_eff_mean, "given instead of --beta0-mean/--beta0-std, "
                             "not with them")
    if eff:
        if a.beta0_eff_mean is None or a.beta0_eff_std is None:
            raise ParameterError("beta0-eff-std" if a.beta0_eff_std is None else "beta0-eff-mean", None,
                                 "given with --beta0-eff-mean / --beta0-eff-std (both)")
        mean, cal = _theory_beta0(a, None, a.beta0_eff_mean, "beta0-eff-mean")
        return mean, cal["scale"] * a.beta0_eff_std, cal
    if a.beta0_mean is None or a.beta0_std is None:
        raise ParameterError("beta0-mean" if a.beta0_mean is None else "beta0-std", None,
                             "given: --beta0-mean and --beta0-std (the theory's scale), or --beta0-eff-mean and "
                             "--beta0-eff-std with a scale")
    _theory_beta0(a, a.beta0_mean, None, "beta0-eff-mean")
    return a.beta0_mean, a.beta0_std, None


def _onset_finite_k(a):
    """The finite-K inputs: ('table', per-seed c1 curves {seed: (s, c1)}, K) / ('law', memorization law,
    K) / (None, None, None)."""
    from icl_kinetics.errors import ParameterError
    from icl_kinetics.theory.onset import mean_c1_curve

    if a.c1_table:
        if a.amplitude is not None or a.nu is not None:
            raise ParameterError("c1-table", a.c1_table, "given without --amplitude/--nu (one memorization input)")
        curves = _c1_curves(a.c1_table, a.lr, by_seed=True)
        if a.K is not None:
            if a.K not in curves:
                raise ParameterError("K", a.K, f"one of the c1 table's K: {sorted(curves)}")
            k = a.K
        elif len(curves) == 1:
            k = next(iter(curves))
        else:
            raise ParameterError("K", None, f"given to pick one of the c1 table's K: {sorted(curves)}")
        try:
            mean_c1_curve(curves[k])  # the checks of the curve every onset below is driven by
        except ParameterError as e:
            raise ParameterError("c1-table", a.c1_table, f"c1 curves at K = {k:g} with {e.allowed} "
                                 f"({e.name})") from None
        return "table", curves[k], k
    if a.amplitude is not None or a.nu is not None or a.K is not None:
        if None in (a.amplitude, a.nu, a.K):
            missing = next(n for n, v in (("K", a.K), ("amplitude", a.amplitude), ("nu", a.nu)) if v is None)
            raise ParameterError(missing, None, "given: a finite-K onset from the memorization law needs --K, "
                                 "--amplitude and --nu")
        return "law", _memorization_law(a), a.K
    if a.amplitude_ci or a.nu_ci:
        raise ParameterError("amplitude-ci" if a.amplitude_ci else "nu-ci", a.amplitude_ci or a.nu_ci,
                             "used with --K, --amplitude and --nu")
    return None, None, None


def _fraction_range(law, K, N, mean, std, a):
    """P(ICL | K, N) at the law's point and over its CIs (delta method on ln I_K(inf) =
    ln A + nu ln K, or Monte Carlo), the beta0 spread on top."""
    import math
    from statistics import NormalDist

    import numpy as np

    from icl_kinetics.theory import p_icl
    from icl_kinetics.theory.closed_form import CI_DRAWS, _ci_sd

    z = NormalDist().inv_cdf(0.975)
    sd_la = _ci_sd("amplitude_ci", law["amplitude_ci"], law["amplitude"], True, z)
    sd_nu = _ci_sd("nu_ci", law["nu_ci"], law["nu"], False, z)
    ln_i = math.log(law["amplitude"]) + law["nu"] * math.log(K)
    p = lambda li: float(p_icl(math.exp(li), N, mean, std, c2=a.c2, regime=a.regime))  # noqa: E731
    point = p(ln_i)
    if sd_la == 0 and sd_nu == 0:
        return point, None
    if a.ci_method == "delta":
        sd = math.hypot(sd_la, sd_nu * math.log(K))
        return point, (p(ln_i - z * sd), p(ln_i + z * sd))
    rng = np.random.default_rng(a.seed)
    li = ln_i + rng.normal(0, sd_la, CI_DRAWS) + rng.normal(0, sd_nu, CI_DRAWS) * math.log(K)
    ps = np.array([p(v) for v in np.percentile(li, [2.5, 97.5])])  # p_icl is monotone in I_K(inf)
    return point, (float(ps[0]), float(ps[1]))


def cmd_onset(a) -> dict:
    import math

    import numpy as np

    from icl_kinetics.theory import FiniteKOnset, OnsetDistribution
    from icl_kinetics.theory.onset import mean_c1_curve, onset_quantile_ci

    mean, std, cal = _onset_beta0(a)
    kind, memo, K = _onset_finite_k(a)
    c1_mean = mean_c1_curve(memo) if kind == "table" else None
    if a.ci_resamples is not None and kind != "table":
        from icl_kinetics.errors import ParameterError

        raise ParameterError("ci-resamples", a.ci_resamples, "used with --c1-table (the bootstrap resamples its "
                             "seeds)")
    resamples = _ci_resamples_default() if a.ci_resamples is None else a.ci_resamples
    rows, per_n, curves = [], [], []
    for N in a.N:
        inf_d = OnsetDistribution(N=N, lr=a.lr, beta0_mean=mean, beta0_std=std, c2=a.c2, regime=a.regime)
        d = FiniteKOnset(N=N, lr=a.lr, c1=c1_mean, beta0_mean=mean, beta0_std=std, c2=a.c2,
                         regime=a.regime) if kind == "table" else inf_d
        x = d.sample(a.samples, seed=a.seed + N)
        if kind == "law":  # a seed acquires iff N tau_star(beta0) < I_K(inf), i.e. t_inf < 2 I_K(inf) / lr
            x = np.where(x < 2 * memo["amplitude"] * K ** memo["nu"] / a.lr, x, np.inf)
        q_th = d.quantile(np.array(QUANTILES)) if std > 0 else np.full(len(QUANTILES), float(d.onset_of(mean)))
        fin = x[np.isfinite(x)]
        q_emp = np.quantile(np.where(np.isfinite(x), x, np.inf), QUANTILES, method="inverted_cdf")
        row = {"N": N, "median": float(q_emp[2]), "mean": float(fin.mean()) if fin.size == x.size else None,
               "quantiles": dict(zip(map(str, QUANTILES), q_emp.tolist())),
               "closed_form_quantiles": dict(zip(map(str, QUANTILES), q_th.tolist()))}
        if kind == "table":
            row["fraction_acquired"] = d.fraction_acquired()
            row["i_k_inf"] = d.i_k_inf()
            ci = onset_quantile_ci(memo, QUANTILES, N=N, lr=a.lr, beta0_mean=mean, beta0_std=std, c2=a.c2,
                                   regime=a.regime, resamples=resamples, seed=a.seed)
            row["closed_form_quantiles_ci"] = None if ci["lo"] is None else {
                str(q): [float(lo), float(hi)] for q, lo, hi in zip(QUANTILES, ci["lo"], ci["hi"])}
            row["ci"] = {"method": "bootstrap over the c1 table's seeds", "level": ci["level"],
                         "resamples": ci["resamples"], "seed": ci["seed"], "seeds": ci["seeds"],
                         "reason": ci["reason"]}
        if kind == "law":
            pt, rng = _fraction_range(memo, K, N, mean, std, a)
            row["fraction_acquired"], row["fraction_acquired_range"] = pt, rng
            row["closed_form_quantiles"] = {str(q): (v if q < pt else math.inf) for q, v in zip(QUANTILES, q_th)}
            row["quantiles_are_lower_bounds"] = True
        per_n.append(row)
        if a.plot:
            rows.extend({"N": N, "t_icl": t} for t in fin[: min(fin.size, 20000)])
            if std > 0 and kind is None:
                tt = np.geomspace(q_th[0] / 3, q_th[-1] * 3, 200)
                curves.extend({"N": N, "t_icl": t, "density": dd * t * np.log(10)}
                              for t, dd in zip(tt, d.pdf(tt)))
    res = {"N": a.N, "lr": a.lr, "beta0_mean": mean, "beta0_std": std, "calibration": cal, "c2": a.c2,
           "K": "inf" if kind is None else K, "memorization": kind,
           "memorization_law": memo if kind == "law" else None,
           "regime": a.regime, "samples": a.samples, "seed": a.seed, "units": "iterations",
           "per_N": per_n}
    if len(a.N) > 1 and all(math.isfinite(p["median"]) for p in per_n):
        slope, icpt = np.polyfit(a.N, [p["median"] for p in per_n], 1)
        res["median_linear_fit"] = {"slope_per_token": float(slope), "intercept": float(icpt)}
    if a.plot:
        from icl_kinetics.validate.figures import onset_figure, save

        title = f"lr = {a.lr:g}, beta0 ~ N({mean:.3g}, {std:.3g}^2), K = {res['K']}"
        res["plot"] = save(onset_figure(rows, curves or None, title=title), a.plot)
    return res


def _print_onset(r):
    b = f"beta0 ~ N({r['beta0_mean']:.4g}, {r['beta0_std']:.4g}^2)"
    if r["calibration"]:
        b += f" (= {r['calibration']['scale']:.3g} x beta0_eff; scale FITTED from {r['calibration']['source']})"
    k = "K = inf (c1 = c2 = 1/2)" if r["memorization"] is None else f"K = {r['K']:g} ({r['memorization']})"
    print(f"t_ICL (iterations), lr = {r['lr']:g}, {b}, {k}, c2 = {r['c2']:g}, {r['samples']} samples per N, "
          f"regime = {r['regime']}")
    f = lambda v: "never" if v == float("inf") else f"{v:.5g}"  # noqa: E731
    hdr = "".join(f"{'q' + k:>11}" for k in map(str, QUANTILES))
    print(f"{'N':>6} {'':>11}{hdr}")
    for p in r["per_N"]:
        print(f"{p['N']:>6} {'sampled':>11}" + "".join(f"{f(v):>11}" for v in p["quantiles"].values()))
        print(f"{'':>6} {'closed form':>11}" + "".join(f"{f(v):>11}" for v in p["closed_form_quantiles"].values()))
        if p.get("closed_form_quantiles_ci"):
            lvl = f"{p['ci']['level']:.0%}"
            for j, side in ((0, "low"), (1, "high")):
                print(f"{'':>6} {lvl + ' CI ' + side:>11}"
                      + "".join(f"{f(v[j]):>11}" for v in p["closed_form_quantiles_ci"].values()))
        elif "ci" in p:
            print(f"{'':>6} no interval for the closed form: {p['ci']['reason']}")
        if "fraction_acquired" in p:
            rng = p.get("fraction_acquired_range")
            print(f"{'':>6} fraction that acquires ICL: {p['fraction_acquired']:.3f}"
                  + (f" (range from the CIs: {rng[0]:.3f} - {rng[1]:.3f})" if rng else ""))
    if r["memorization"] == "law":
        print("A and nu fix I_K(inf) only, not I_K(t): the times above are the K = inf onsets, LOWER BOUNDS of "
              "the finite-K onsets (c1 <= 1/2 while the MLP memorizes); 'never': quantile levels above the "
              "fraction that acquires.  Give --c1-table for the times.")
    if r["memorization"] == "table":
        print("onsets driven by the table's c1 (averaged over its seeds); beyond its last iteration c1 is taken "
              "as 0 (nothing claimed), so 'never' means not within the table's horizon")
        ci = next((p["ci"] for p in r["per_N"] if p.get("closed_form_quantiles_ci")), None)
        if ci:
            print(f"CI: bootstrap over the table's {ci['seeds']} seeds ({ci['resamples']} resamples, seed "
                  f"{ci['seed']}): the scatter of the measured c1 curve, beta0's spread held fixed")
    if "median_linear_fit" in r:
        fit = r["median_linear_fit"]
        sign = "+" if fit["intercept"] >= 0 else "-"
        print(f"median ~ {fit['slope_per_token']:.4g} * N {sign} {abs(fit['intercept']):.3g}")


def cmd_transience(a) -> dict:
    import numpy as np

    from icl_kinetics.theory import PowerLaw, transience_flow, w_tr

    if a.c3_power:
        c3, s_max = PowerLaw(*a.c3_power), (a.iterations or 1e7) * a.lr
    else:
        c3, s_max = _c3_table(a.c3_table, a.lr)
        s_max = a.iterations * a.lr if a.iterations else s_max
    sol = transience_flow(c3, a.wd_attn, a.N, s_max)
    t = sol.s / a.lr
    t_loss = None if sol.s_loss is None else sol.s_loss / a.lr
    pick = np.unique(np.geomspace(1, len(t), 12).astype(int) - 1)
    res = {"wd_attn": a.wd_attn, "N": a.N, "lr": a.lr, "w_tr_initial": float(w_tr(float(c3(0.0)), a.wd_attn)),
           "w_tr_final": float(sol.w_tr[-1]), "t_icl_loss": t_loss, "horizon_iterations": float(t[-1]),
           "trajectory": [{"iteration": float(t[i]), "c3": float(sol.c3[i]), "w": float(sol.w[i]),
                           "w_tr": float(sol.w_tr[i]), "beta": float(sol.beta[i]),
                           "icl_accuracy": float(sol.icl_accuracy[i])} for i in pick],
           "units": {"t_icl_loss": "iterations after acquisition", "wd_attn": "per unit learning-rate time"}}
    if a.plot:
        from icl_kinetics.validate.figures import save, transience_figure

        tab = {"t": t, "w": sol.w, "w_tr": sol.w_tr, "beta": sol.beta, "icl_accuracy": sol.icl_accuracy,
               "t_loss": np.full(t.size, np.nan if t_loss is None else t_loss)}
        res["plot"] = save(transience_figure(tab), a.plot)
    return res


def _c3_table(path, lr):
    """The c3 curve of a CSV (columns 'c3' and 's', learning-rate time, or 'iteration') and its last s."""
    from icl_kinetics.errors import ParameterError
    from icl_kinetics.io import read_csv_numbers
    from icl_kinetics.theory import Tabulated

    cols = read_csv_numbers(path, "c3-table", need=("c3",), one_of=("s", "iteration"))
    s = cols["s"] if "s" in cols else [it * lr for it in cols["iteration"]]
    try:
        curve = Tabulated(s, cols["c3"], extrapolate="hold")
    except ParameterError as e:
        raise ParameterError("c3-table", path, f"a valid c3 curve ({e})") from None
    return curve, s[-1]


def _print_transience(r):
    print(f"wd_attn = {r['wd_attn']:g}, N = {r['N']}, lr = {r['lr']:g}")
    print(f"w_tr at acquisition: {r['w_tr_initial']:.4g}; at the horizon: {r['w_tr_final']:.4g}")
    tl = r["t_icl_loss"]
    print("predicted loss of ICL: " + ("not within the horizon" if tl is None else
                                       f"{tl:.4g} iterations after acquisition"))
    print(f"{'iteration':>12} {'c3':>10} {'w':>9} {'w_tr':>9} {'beta':>9} {'ICL acc':>8}")
    for row in r["trajectory"]:
        print(f"{row['iteration']:>12.4g} {row['c3']:>10.4g} {row['w']:>9.4g} {row['w_tr']:>9.4g} "
              f"{row['beta']:>9.4g} {row['icl_accuracy']:>8.3f}")


def cmd_compare(a) -> dict:
    from icl_kinetics.validate.compare import compare_minimal_onset

    return compare_minimal_onset(Ns=a.N, beta0s=a.beta0, lr=a.lr, seeds=a.seeds, seed=a.seed,
                                 out=a.out, plot=a.plot, progress=not (a.quiet or a.json))


def _print_compare(r):
    from icl_kinetics.validate.compare import format_onset_table

    print(format_onset_table(r["rows"]))
    print(f"\ntable: {r['table_csv']}  figure: {r.get('plot')}")


# ----------------------------------------------------------------------------- training commands
def _train_config(a, **fixed):
    """The TrainConfig of the parsed flags (``fixed``: fields the command sets), validated."""
    from icl_kinetics.simulate.config import TrainConfig

    cfg = TrainConfig(**{**config_kwargs(a), **fixed})
    cfg.validate()
    return cfg


def _train(a, cfg) -> tuple:
    """Train ``cfg`` as the flags say: the result and its summary (the command's output)."""
    from icl_kinetics.simulate.engine import train

    res = train(cfg, out=a.out, progress=not (a.quiet or a.json), resume=not a.no_resume)
    out = res.summary()
    out["out"] = a.out
    out["failure"] = _diverged(res.status, res.reasons, cfg.seed_offset)
    out["seed_iterations_per_s"] = res.seed_iterations / res.seconds if res.seconds > 0 else None
    if a.plot:
        from icl_kinetics.validate.figures import save, training_curves_figure

        K = "inf" if cfg.K is None else cfg.K
        title = f"{cfg.model}, N = {cfg.N}, K = {K}, width {cfg.width}, lr {cfg.lr:g}, wd_attn {cfg.wd_attn:g}"
        out["plot"] = save(training_curves_figure(res.rows, threshold=cfg.t_icl_threshold, title=title), a.plot)
    return res, out


def _diverged(status, reasons, offset: int = 0) -> dict | None:
    """The failure record (exit 3) when any seed diverged: a result no script should take for
    a success (a sweep records such a run as failed)."""
    div = [(offset + i, why) for i, (s, why) in enumerate(zip(status, reasons)) if s == "diverged"]
    if not div:
        return None
    return {"exit_code": 3, "message": f"{len(div)} of {len(status)} seeds diverged (seed {div[0][0]}: "
            f"{div[0][1]}); lower --lr"}


def cmd_train(a) -> dict:
    return _train(a, _train_config(a))[1]


def _print_train(r):
    c = r["config"]
    print(f"{c['model']}: N = {c['N']} context tokens, K = {c['K'] if c['K'] is not None else 'inf'}, "
          f"{c['seeds']} seeds, {r['iterations_done']} iterations")
    print(f"{'seed':>5} {'t_ICL':>8} {'final ICL acc':>14} {'final IWL acc':>14}  status")
    f = (lambda v: "n/a" if v is None or v != v else f"{v:.3f}")
    for i, (t, s) in enumerate(zip(r["t_icl"], r["status"])):
        print(f"{c['seed_offset'] + i:>5} {('never' if t is None else t):>8} {f(r['final_icl_acc'][i]):>14} "
              f"{f(r['final_iwl_acc'][i]):>14}  {s}" + (f" ({r['reasons'][i]})" if r["reasons"][i] else ""))
    rate = r.get("seed_iterations_per_s")
    print(f"wall time {r['seconds']:.1f} s" + (f", {rate:.1f} seed-iterations/s" if rate else "")
          + f"; metrics: {r['out']}/metrics.csv")
    if r.get("plot"):
        print(f"figure: {r['plot']}")


def cmd_minimal(a) -> dict:
    """``train --model minimal`` (minimal's defaults), with the median t_ICL and the theory's."""
    t0 = time.perf_counter()
    cfg = _minimal_config(a)
    res, out = _train(a, cfg)
    from icl_kinetics.validate.compare import median_t_icl

    out.update(median_t_icl=median_t_icl(res.t_icl, res.status), rows=res.rows, **_theory_t_icl(cfg))
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def _minimal_config(a):
    """The TrainConfig of ``minimal``'s flags: model "minimal"; unless ``--early-stop`` is given,
    each seed stops at acquisition (early stop = the t_ICL threshold, as the old simulator)."""
    stop = a.t_icl_threshold if a.early_stop is FOLLOW_THRESHOLD else a.early_stop
    return _train_config(a, model="minimal", early_stop=stop)


def _theory_t_icl(cfg) -> dict:
    """The theory's t_ICL (iterations) where it applies to the run: no phi, K -> inf, iid
    contexts, w0 >= 0 and one beta0 for every seed; else nothing."""
    if cfg.K is not None or cfg.width or cfg.contexts != "iid" or cfg.w0 < 0 or not isinstance(cfg.beta0, float):
        return {}
    from icl_kinetics.theory import icl_threshold_beta, solve_flow, t_icl

    acc = cfg.t_icl_threshold
    beta_c = icl_threshold_beta(cfg.N, accuracy=acc)
    return {"theory_t_icl": float(t_icl(cfg.N, cfg.beta0, cfg.lr, w0=cfg.w0, beta_c=beta_c)),
            "theory_t_icl_full_flow": solve_flow(cfg.N, cfg.beta0, cfg.lr, w0=cfg.w0, stage="full",
                                                 accuracy=acc).t_icl}


def _print_minimal(r):
    status, reasons = r["status"], r["reasons"]
    ts = ["diverged" if s == "diverged" else "never" if t is None else str(t) for t, s in zip(r["t_icl"], status)]
    print("t_ICL per seed (iterations): " + ", ".join(ts))
    div = [(r["config"]["seed_offset"] + i, why) for i, (s, why) in enumerate(zip(status, reasons))
           if s == "diverged"]
    for i, why in div[:3]:
        print(f"  seed {i} diverged: {why}")
    if len(div) > 3:
        print(f"  ... and {len(div) - 3} more seeds diverged")
    med = r["median_t_icl"]
    if med is None:
        med_text = ("undefined (every seed diverged: lower --lr)" if len(div) == len(status)
                    else "undefined (most seeds never acquired ICL)")
    else:
        med_text = f"{med:g}" + (f" (over the {len(status) - len(div)} seeds that did not diverge)" if div else "")
    print(f"median t_ICL: {med_text}")
    if "theory_t_icl" in r:
        acc = r["config"]["t_icl_threshold"]
        it = (lambda t: "< 1 (at the first evaluation)" if t < 1 else f"{t:.0f}")
        print(f"theory t_ICL, reduced ODEs (exact regime, accuracy {acc:g}): {it(r['theory_t_icl'])}")
        if r.get("theory_t_icl_full_flow") is not None:
            print(f"theory t_ICL, full data-averaged flow (large D):       {it(r['theory_t_icl_full_flow'])}")
    print(f"wall time: {r['wall_seconds']:.1f} s" + (f"; metrics: {r['out']}/metrics.csv" if r.get("out") else ""))
    if r.get("plot"):
        print(f"figure: {r['plot']}")


def _require_device(device: str) -> None:
    """Refuse ``--device cuda`` on a machine without a CUDA GPU (one line, exit 2)."""
    if device == "cuda":
        import torch

        from icl_kinetics.errors import ParameterError

        if not torch.cuda.is_available():
            raise ParameterError("device", "cuda", "'cpu': no CUDA GPU is available on this machine")


def cmd_bench(a) -> dict:
    from icl_kinetics.simulate.bench import bench_engine

    _require_device(a.device)
    return bench_engine(quick=a.quick, seeds=a.seeds, workers=a.workers, device=a.device)


def _print_bench(r):
    from icl_kinetics.simulate.bench import format_bench

    print(format_bench(r))


# ----------------------------------------------------------------------------- sweeps and validation
def _unfinished(r: dict) -> dict | None:
    """The failure record (exit 3) of a sweep summary in which not every run is done."""
    if r["done"] == r["runs"]:
        return None
    parts = [f"{r[k]} {k}" for k in ("failed", "damaged", "running", "pending") if r.get(k)]
    first = next(((k, v) for k, v in {**r.get("failed_runs", {}), **r.get("damaged_runs", {}),
                                      **r.get("pending_runs", {})}.items() if v), None)
    why = f"; e.g. {first[0]}: {first[1]}" if first else ""
    return {"exit_code": 3, "message": f"unfinished: {r['done']} of {r['runs']} runs done, "
            f"{', '.join(parts)}{why} (run 'icl-kinetics sweep run' again to resume"
            + (", with --retry-failed for failed runs" if r.get("failed") else "") + ")"}


def cmd_sweep(a) -> dict:
    from icl_kinetics.simulate import sweeps

    if a.sweep_cmd == "list":
        from icl_kinetics.simulate.sweeps.presets import estimate, list_presets

        if a.spec is not None:
            from icl_kinetics.simulate.sweeps.specfile import load_spec, read_spec_file, scales_of

            specs = [load_spec(a.spec, s, record=False) for s in scales_of(read_spec_file(a.spec)[0])]
            rows = [{"preset": specs[0].name, "figure": specs[0].paper, "description": specs[0].description,
                     **{sp.scale: estimate(sp, a.cores, a.device) for sp in specs}}]
        else:
            rows = list_presets(a.cores, a.device)
        if a.device == "cuda":
            return {"presets": rows, "device": "cuda", "units": {"gpu_hours": "hours on one H200"}}
        return {"presets": rows, "cores": a.cores, "device": "cpu",
                "units": {"cpu_core_hours": "hours of one core", "wall_hours_on_cores": "hours"}}
    if a.sweep_cmd in ("run", "resume"):
        return _sweep_run(a)
    store = sweeps.SweepStore(a.dir)
    if a.sweep_cmd == "status":
        return {**store.summary(check_checkpoints=True), "dir": a.dir}
    return _sweep_collect(a, store)


def _sweep_spec(a):
    """The sweep that ``sweep run`` / ``sweep resume`` asks for (built once, kept on ``a``)."""
    if getattr(a, "_sweep", None) is not None:
        return a._sweep
    from icl_kinetics.errors import ParameterError

    if a.sweep_cmd == "resume":
        from icl_kinetics.simulate.sweeps import SweepStore

        a._sweep = SweepStore(a.dir).spec  # the folder's own record: no preset or spec file needed
    elif a.spec is not None:
        from icl_kinetics.simulate.sweeps.specfile import load_spec

        if a.preset is not None:
            raise ParameterError("spec", a.spec, f"a spec file or a preset, not both (preset {a.preset!r} given)")
        a._sweep = load_spec(a.spec, a.scale, device=a.device)
    else:
        from icl_kinetics.simulate.sweeps.presets import check_scale_preset, preset

        if a.preset is None:
            raise ParameterError("preset", None, "a preset name (see 'icl-kinetics sweep list') or --spec FILE")
        scale = a.scale or "small"
        check_scale_preset(a.preset, scale)
        a._sweep = preset(a.preset, scale, device=a.device or "cpu")
    return a._sweep


def _sweep_default_out(a) -> str:
    spec = _sweep_spec(a)
    return f"runs/{spec.name}-{spec.scale}"


def _sweep_run(a) -> dict:
    from icl_kinetics.errors import one_of, positive_int
    from icl_kinetics.simulate import sweeps
    from icl_kinetics.simulate.sweeps.specfile import execution_of

    spec = _sweep_spec(a)
    out = a.dir if a.sweep_cmd == "resume" else a.out  # run: _check_outputs filled in the default
    for dev in {r.config.device for r in spec.runs}:
        _require_device(dev)
    ex = execution_of(spec)  # the spec's [execution]; the flags win
    executor = one_of("executor", a.executor or ex.get("executor", "local"), sweeps.EXECUTORS)
    processes = a.processes if a.processes is not None else ex.get("processes")
    if processes is not None:
        processes = positive_int("processes", processes)
    slurm = {"timeout_min": positive_int("slurm_time", a.slurm_time or ex.get("slurm_time", 600)),
             "gpus_per_node": positive_int("slurm_gpus", a.slurm_gpus if a.slurm_gpus is not None
                                           else ex.get("slurm_gpus", 0), 0)}
    part = a.slurm_partition or ex.get("slurm_partition")
    if part:
        slurm["slurm_partition"] = str(part)
    only = _only_runs(spec, a.only or [])
    adopted = _adopt_tables(spec, out, a.from_table or [])
    res = sweeps.run_sweep(spec, out, executor=executor, progress=not (a.quiet or a.json),
                           retry_failed=a.retry_failed, processes=processes, slurm=slurm, only=only)
    res = {**res, "dir": str(out)}
    if adopted is not None:
        res["adopted"] = adopted
    if only is None:
        res["failure"] = _unfinished(res)
        return res
    # --only: the runs asked for decide the exit code; the others are reported, not failed
    sts = sweeps.SweepStore(out).statuses()
    sub = {"runs": len(only), **{k: sum(sts[r]["status"] == k for r in only)
                                 for k in ("done", "failed", "damaged", "running", "pending")}}
    for k in ("failed", "damaged", "pending"):
        sub[f"{k}_runs"] = {r: sts[r].get("reason", "") for r in only if sts[r]["status"] == k}
    res["only"] = {"filters": list(a.only), **{k: v for k, v in sub.items() if not k.endswith("_runs")}}
    res["failure"] = _unfinished(sub)
    return res


def _only_runs(spec, filters) -> set | None:
    """The run ids that ``--only FIELD=V1,V2`` filters select (None: no filter)."""
    if not filters:
        return None
    import math
    from dataclasses import fields as dc_fields

    from icl_kinetics.errors import ParameterError
    from icl_kinetics.simulate.config import TrainConfig

    names = {f.name for f in dc_fields(TrainConfig)}
    keep = {r.id for r in spec.runs}
    for f in filters:
        field, sep, vals = str(f).partition("=")
        field = field.strip().replace("-", "_")
        if not sep or field not in names or not vals.strip():
            raise ParameterError("only", f, "FIELD=V1,V2,... with FIELD a TrainConfig field (e.g. N=9,19, K=inf, "
                                 "model=transformer)")
        want = set()
        for v in vals.split(","):
            v = v.strip()
            if v.lower() in ("inf", "none"):
                want.add(None)
                continue
            try:
                want.add(float(v))
            except ValueError:
                want.add(v)

        def match(x):
            if x is None or (isinstance(x, float) and math.isinf(x)):
                return None in want
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                return float(x) in want
            return str(x) in want

        keep &= {r.id for r in spec.runs if match(getattr(r.config, field))}
    if not keep:
        raise ParameterError("only", list(filters), f"filters that select at least one of the sweep's "
                             f"{len(spec.runs)} runs")
    return keep


def _adopt_tables(spec, out, tables) -> dict | None:
    """Take the finished runs of collected ``tables`` into the sweep folder ``out`` (made if
    new) before it runs (``--from-table``); what was adopted, kept and refused, per table."""
    if not tables:
        return None
    from icl_kinetics.simulate.sweeps import SweepStore

    store = SweepStore.create(out, spec)
    res = {}
    for t in tables:
        base = str(t)
        for ext in (".csv.gz", ".csv"):
            if base.endswith(ext):
                base = base[: -len(ext)]
                break
        timing = Path(base + ".timing.json")
        r = store.adopt(t, timing if timing.is_file() else None)
        res[str(t)] = {"adopted": len(r["adopted"]), "kept": len(r["kept"]), "refused": r["refused"],
                       "not_in_sweep": r["not_in_sweep"], "timing": str(timing) if timing.is_file() else None}
    store.write_index()
    return res


def _sweep_collect(a, store) -> dict:
    c = store.collect(a.out)
    res = {"table": c.path, "rows": c.rows, "runs": c.runs, "included": len(c.included), "left_out": c.left_out,
           "unfinished": c.unfinished, "dir": a.dir, "failure": None}
    if c.left_out:
        rid, why = next(iter(c.left_out.items()))
        res["failure"] = {"exit_code": 3, "message": f"{len(c.left_out)} damaged run(s) left out of {c.path}: "
                          f"{rid}: {why}"}
    elif c.unfinished:
        nf = sum(v == "failed" for v in c.unfinished.values())
        res["failure"] = {"exit_code": 3, "message": f"{c.path} is partial: {len(c.unfinished) - nf} of {c.runs} "
                          f"runs are unfinished and {nf} failed (their rows are in it, with their status); run "
                          "'icl-kinetics sweep run' to finish them"
                          + (" (--retry-failed runs failed ones again)" if nf else "")}
    return res


def _print_sweep(r):
    if "presets" in r:
        _print_presets(r)
    elif "table" in r:
        print(f"wrote {r['rows']} rows from {r['included']} of {r['runs']} runs to {r['table']}")
        if r["unfinished"]:
            print(f"  {len(r['unfinished'])} run(s) unfinished: their rows so far are included, with their status")
        for rid, why in r["left_out"].items():
            print(f"  left out {rid}: {why}")
    else:
        _print_sweep_status(r)


def _print_presets(r):
    if r.get("device") == "cuda":
        cols = [("packs", "packs", 5, "d"), ("seeds", "seeds", 6, "d"), ("seed-its", "seed_iterations", 10, ".3g"),
                ("gpu-h", "gpu_hours", 8, ".3g")]
        note = "one H200 at its measured rates"
    else:
        cols = [("seeds", "seeds", 6, "d"), ("seed-its", "seed_iterations", 10, ".3g"),
                ("core-h", "cpu_core_hours", 8, ".3g"), ("wall-h", "wall_hours_on_cores", 7, ".3g")]
        note = f"{r['cores']} cores"
    print(f"{'preset':12} {'figure':14} {'scale':6} {'runs':>5} " + " ".join(f"{h:>{w}}" for h, _, w, _ in cols)
          + f"  (upper bounds: every seed to its cap, {note})")
    for p in r["presets"]:
        scales = [k for k, v in p.items() if isinstance(v, dict)]  # small, paper; a spec's own scales
        for s in scales:
            e, first = p[s], s == scales[0]
            print(f"{p['preset'] if first else '':12} {p['figure'] if first else '':14} {s:6} {e['runs']:>5} "
                  + " ".join(f"{e[k]:>{w}{f}}" for _, k, w, f in cols))


def _print_sweep_status(r):
    for t, v in (r.get("adopted") or {}).items():
        print(f"from {t}: adopted {v['adopted']} finished run(s) after verifying them; {v['kept']} already had a "
              f"status here; {v['not_in_sweep']} are not runs of this sweep")
        for rid, why in v["refused"].items():
            print(f"  not adopted {rid} (it trains here): {why}")
    print(f"sweep {r['sweep']} ({r['scale']}) in {r['dir']}: {r['runs']} runs: {r['done']} done, {r['failed']} failed, "
          f"{r['damaged']} damaged, {r['running']} running, {r['pending']} pending")
    left = r.get("estimated_seconds_left_per_process")
    if r["pending"] + r["running"] + r["damaged"]:
        print(f"seed-iterations left: {r['seed_iterations_left']:.3g}"
              + (f"; about {left / 60:.1f} min left for one process (divide by the processes in use)"
                 if left is not None else "; no finished run to estimate the time left from yet"))
    for what, key in (("failed", "failed_runs"), ("damaged", "damaged_runs"), ("pending", "pending_runs"),
                      ("checkpoint of", "checkpoint_problems")):
        for rid, why in r.get(key, {}).items():
            if why or what != "pending":
                print(f"  {what} {rid}: {why}")


def _column_map(pairs) -> dict | None:
    """``--map SRC=DST`` options as {SRC: DST} (None when none is given)."""
    from icl_kinetics.errors import ParameterError

    if not pairs:
        return None
    out = {}
    for p in pairs:
        src, eq, dst = p.partition("=")
        if not eq or not src.strip() or not dst.strip() or src.strip() in out:
            raise ParameterError("--map", p, "SRC=DST: a column of the table and the schema column it is read as, "
                                 "each source column once")
        out[src.strip()] = dst.strip()
    return out


def cmd_validate(a) -> dict:
    from icl_kinetics.errors import ParameterError
    from icl_kinetics.validate.report import run_validation

    if a.runs is None:
        for flag, given in (("--plan", a.plan), ("--map", a.map), ("--iterations-per-epoch", a.iterations_per_epoch),
                            ("--k-minus-one-is-inf", a.k_minus_one_is_inf)):
            if given:
                raise ParameterError(flag, given, "used with --runs TABLE... (it applies to your own table)")
    if not a.no_run and a.runs is None:
        _require_device(a.device)
    return run_validation(preset=a.preset, sweeps=a.sweeps, runs=a.runs, out=a.out, run=not a.no_run,
                          progress=not (a.quiet or a.json), device=a.device, plan=a.plan,
                          column_map=_column_map(a.map), iterations_per_epoch=a.iterations_per_epoch,
                          k_minus_one_is_inf=a.k_minus_one_is_inf or None)


def _print_plan(r):
    print(f"{r['title']}: {r['rows']} rows, {r['seeds']} seeds; N = "
          f"{', '.join(f'{n:g}' for n in r['N']) or '-'}; K = {', '.join(f'{k:g}' for k in r['K']) or '-'}")
    for c in r["checks"]:
        print(f"- {c['check']}: {'can run' if c['runnable'] else 'cannot run at its minimum'}")
        if not c["runnable"]:
            print(f"    lacks: {'; '.join(c['lacks'])}")
        print(f"    needs: columns {', '.join(c['columns'])}; {c['minimum']}")


def _print_validate(r):
    if "checks" in r:  # --plan
        return _print_plan(r)
    print(r["title"])
    for v in r["verdicts"]:
        if v["verdict"] == "skipped":  # a reason, never "predicted -; measured -; -"
            print(f"- {v['prediction']} [{v['rung']}]: SKIPPED: {v['reason']}")
            continue
        shown = [f"{k} {v[k]}" for k in ("predicted", "measured") if v[k] != "-"] + \
            ([v["metric"]] if v["metric"] != "-" else [])
        print(f"- {v['prediction']} [{v['rung']}]: {v['verdict'].upper()}" + (f": {'; '.join(shown)}" if shown else ""))
        print(f"    {v['reason']}")
    for k, why in r.get("figures_not_drawn", {}).items():
        print(f"- figure not drawn: {k}: {why}")
    for k, why in r["skipped"].items():
        print(f"- {k}: skipped ({why})")
    for k, why in r.get("problems", {}).items():
        print(f"- data problem: {k}: {why}")
    print(f"report: {r['report']}")


def cmd_demo(a) -> dict:
    from icl_kinetics.validate.demo import run_demo

    return run_demo(out=a.out, simulate=not a.no_sim, progress=not a.json)


def _print_demo(r):
    from icl_kinetics.validate.demo import format_demo

    print(format_demo(r))


COMMANDS = {
    "demo": (cmd_demo, _print_demo),
    "threshold": (cmd_threshold, _print_threshold),
    "onset": (cmd_onset, _print_onset),
    "minimal": (cmd_minimal, _print_minimal),
    "transience": (cmd_transience, _print_transience),
    "compare": (cmd_compare, _print_compare),
    "train": (cmd_train, _print_train),
    "bench": (cmd_bench, _print_bench),
    "sweep": (cmd_sweep, _print_sweep),
    "validate": (cmd_validate, _print_validate),
}


# ----------------------------------------------------------------------------- main
#: (command, option) pairs whose value is an output folder; --plot is always an output figure
_OUT_DIRS = {"demo", "minimal", "compare", "train", "validate", ("sweep", "run")}


def _command_parser(parser, a):
    p = parser.commands.get(a.command)
    if a.command == "sweep" and getattr(a, "sweep_cmd", None):
        p = p.commands.get(a.sweep_cmd, p)
    return p


def _check_outputs(a) -> None:
    """Refuse output paths that cannot be written before any computation starts."""
    from icl_kinetics.io import FIGURE_SUFFIXES, check_output_dir, check_output_file

    if getattr(a, "plot", None) is not None:
        check_output_file("--plot", a.plot, FIGURE_SUFFIXES)
    key = (a.command, getattr(a, "sweep_cmd", None)) if a.command == "sweep" else a.command
    if key == ("sweep", "run") and a.out is None:
        a.out = _sweep_default_out(a)  # runs/NAME-SCALE, checked like a given one
    if key in _OUT_DIRS and getattr(a, "out", None) is not None:
        check_output_dir("--out", a.out)
    if key == ("sweep", "collect"):  # the default, DIR/collected.csv, is checked like a given path
        check_output_file("--out", a.out if a.out is not None else str(Path(a.dir) / "collected.csv"), (".csv",))


#: API parameter names whose command-line option is not the name with '-' for '_'
_FLAG_OF = {"column_map": "map"}


def _flag_message(cmd_parser, e) -> str:
    """A ParameterError's message, prefixed with the command-line option when the API name
    (``beta0_mean``) has one (``--beta0-mean``; ``column_map``: ``--map``, and the message
    names the option too)."""
    from icl_kinetics.errors import ParameterError

    msg = str(e)
    name = str(getattr(e, "name", ""))
    if cmd_parser is not None and name in _FLAG_OF:
        name = _FLAG_OF[name]
        msg = str(ParameterError(name, e.value, e.allowed))
    if cmd_parser is not None and name and not name.startswith("-"):
        flag = "--" + name.replace("_", "-")
        opts = {o for act in cmd_parser._actions for o in act.option_strings}
        if flag in opts:
            return f"argument {flag}: {msg}"
    return msg


def _debug() -> bool:
    """``ICL_KINETICS_DEBUG`` set to anything but '', 0, false, no or off."""
    import os

    return os.environ.get("ICL_KINETICS_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def _internal_error(cmd: str, e: BaseException, what: str = "") -> int:
    if _debug():
        raise e
    text = " ".join(f"{type(e).__name__}: {e}".split())[:300]
    sys.stderr.write(f"icl-kinetics {cmd}: internal error{what} (a bug in icl-kinetics; please report it): "
                     f"{text}; run again with ICL_KINETICS_DEBUG=1 to see the traceback\n")
    return 1


def _compute(parser, a, run) -> tuple[dict | None, int]:
    """Run a command: (its result, 0), or (None, exit code) with one line on stderr."""
    from icl_kinetics.errors import EnvironmentFailure, ParameterError, Terminated

    def fail(msg: str, code: int):
        sys.stderr.write(f"icl-kinetics {a.command}: {msg}\n")
        return None, code

    try:
        _check_outputs(a)
        return run(a), 0
    except ParameterError as e:
        return fail("error: " + " ".join(_flag_message(_command_parser(parser, a), e).split()), 2)
    except Terminated:
        return fail(TERMINATED, 143)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except EnvironmentFailure as e:
        return fail(f"error: {' '.join(str(e).split())}", 1)
    except MemoryError:
        if _debug():
            raise
        return fail("error: out of memory (reduce the sizes: seeds, batch, samples, K or N)", 1)
    except OSError as e:  # a disk that fills up, a file that vanishes: not a bug, not bad input
        if _debug():
            raise
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        return fail(f"error: input/output failed on{where}: {e.strerror or type(e).__name__}", 1)
    except Exception as e:  # never a raw traceback; ICL_KINETICS_DEBUG=1 shows it
        return None, _internal_error(a.command, e)


def _emit(a, res, show) -> int:
    """Print a result (JSON, or ``show``'s text): 0, or the exit code of a failure to print."""
    try:
        if a.json:
            from icl_kinetics.io import dumps

            print(dumps(res))
        else:
            show(res)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt as e:
        from icl_kinetics.errors import Terminated

        term = isinstance(e, Terminated)
        sys.stderr.write(f"icl-kinetics {a.command}: {TERMINATED if term else 'interrupted'}\n")
        return 143 if term else 130
    except Exception as e:  # never a raw traceback (ICL_KINETICS_DEBUG=1 shows it)
        return _internal_error(a.command, e, " while printing")
    return 0


#: the one line a command prints when it was sent SIGTERM (exit code 143)
TERMINATED = "terminated (SIGTERM); what finished is kept: run the same command again to resume"


def _on_sigterm(signum, frame):
    from icl_kinetics.errors import Terminated

    raise Terminated()


def main(argv=None) -> int:
    """The console script: exit 0 on success, 2 on bad input (one line naming the
    parameter or file), 3 when the work is unfinished or damaged (one-line summary on
    stderr), 1 on an environment failure or a bug (one line; ICL_KINETICS_DEBUG=1 shows
    the traceback), 130 when interrupted (Ctrl-C), 143 when sent SIGTERM (stopped as on
    Ctrl-C: a sweep keeps its finished runs and stops its workers).  A deprecated flag
    prints one warning line."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return _main(argv)
    from icl_kinetics.errors import Terminated

    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    except Terminated:  # between a command's end and this handler's removal
        sys.stderr.write(f"icl-kinetics: {TERMINATED}\n")
        return 143
    finally:
        signal.signal(signal.SIGTERM, old)


def _main(argv) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 2
    for note in deprecation_notes(a):
        sys.stderr.write(f"icl-kinetics {a.command}: warning: {note}\n")
    run, show = COMMANDS[a.command]
    res, code = _compute(parser, a, run)
    if code:
        return code
    code = _emit(a, res, show)
    if code:
        return code
    failure = res.get("failure") if isinstance(res, dict) else None
    if failure:
        sys.stderr.write(f"icl-kinetics {a.command}: {failure['message']}\n")
        return int(failure["exit_code"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
