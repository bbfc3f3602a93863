"""icl-kinetics: the learning kinetics of in-context learning (theory, simulation, validation).

Subcommands (every one takes ``--json``; ``--plot PATH`` where a picture fits)::

    demo        the main job: headline predictions (K* vs N, t_ICL distributions)
                and a quick theory-vs-SGD check on the minimal model
    threshold   K*(N) for I_K(inf) = A K^nu, and the log-log slope
    onset       t_ICL quantiles per N for a Gaussian spread of beta0
    minimal     SGD on the minimal model, many seeds at once: per-seed t_ICL
    transience  w_tr and the predicted loss of ICL for a c3(t) curve and lambda
    compare     theory vs minimal-model SGD on a grid of N x beta0 (table + figure)
    train       the seed-batched training engine: the paper's transformer, the
                two-layer control, the minimal model or the standalone MLP
    bench       benchmarks users can run on their own hardware (bench engine)
    sweep       named, resumable sweeps of training runs: run, status, collect, list
    validate    the theory's predictions against trained models: report.md + figures

Throughout, N counts **context tokens only** (the paper's code counts the target
too: its ``len_context = 100`` is ``--N 99`` here).  Importing this module does not
import torch; commands that train import the simulation layer on demand.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

N_HELP = "context length(s): context tokens, NOT counting the target (paper code's len_context - 1)"


# ----------------------------------------------------------------------------- arg types
def _int_type(name: str, lo: int):
    def parse(s: str) -> int:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= {lo}, got {s!r}") from None
        if not v.is_integer() or v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= {lo}, got {s!r}")
        return int(v)

    return parse


def _float_type(name: str, lo: float | None = None, strict: bool = True, hi: float | None = None):
    def parse(s: str) -> float:
        import math

        rng = []
        if lo is not None:
            rng.append(f"{'>' if strict else '>='} {lo:g}")
        if hi is not None:
            rng.append(f"< {hi:g}")
        allowed = "a finite number" + (" " + " and ".join(rng) if rng else "")
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {s!r}") from None
        if not math.isfinite(v) or (lo is not None and (v <= lo if strict else v < lo)) or \
                (hi is not None and v >= hi):
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {s!r}")
        return v

    return parse


#: what argparse may take for a negative number value (``--beta0 -1e-3``, ``-inf``): its own
#: matcher only knows ``-1`` and ``-.5``, so ``-1e-3`` was read as an unknown option
_NEGATIVE_NUMBER = __import__("re").compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", 2)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2) instead of usage dumps, and negative
    numbers in any notation accepted as values."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str):  # noqa: D401
        if message.startswith("unrecognized arguments"):
            message += f" (see '{self.prog} --help' for the allowed options)"
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _common(p: argparse.ArgumentParser, plot: bool = True):
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    if plot:
        p.add_argument("--plot", metavar="PATH", help="write a figure (PNG) to PATH")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="icl-kinetics", description=__doc__.split("\n\n")[0],
                 formatter_class=argparse.RawDescriptionHelpFormatter,
                 epilog="Run 'icl-kinetics COMMAND --help' for a command's options.")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    ap.commands = sub.choices  # name -> parser (for naming flags in errors)

    p = sub.add_parser("demo", help="headline predictions and a quick theory-vs-SGD check")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--no-sim", action="store_true", help="skip the minimal-model SGD check")
    _common(p, plot=False)

    p = sub.add_parser("threshold", help="diversity threshold K*(N) for I_K(inf) = A K^nu")
    p.add_argument("--N", nargs="+", type=_int_type("N", 1), required=True, help=N_HELP)
    p.add_argument("--nu", type=_float_type("nu", 0.0), required=True, help="memorization exponent nu > 0")
    p.add_argument("--amplitude", type=_float_type("amplitude", 0.0), required=True,
                   help="A in I_K(inf) = A K^nu, learning-rate time units (> 0)")
    p.add_argument("--beta0", type=_float_type("beta0"), default=0.0, help="initial beta (default 0)")
    p.add_argument("--c2", type=_float_type("c2", 0.0, strict=False), default=0.0,
                   help="constant c2 of the context-label noise; 0 (default) = paper's closed form")
    _common(p)

    p = sub.add_parser("onset", help="t_ICL distribution per N (quantiles, histogram, violins)")
    p.add_argument("--N", nargs="+", type=_int_type("N", 1), required=True, help=N_HELP)
    p.add_argument("--lr", type=_float_type("lr", 0.0), required=True, help="learning rate > 0")
    p.add_argument("--beta0-mean", type=_float_type("beta0-mean"), required=True)
    p.add_argument("--beta0-std", type=_float_type("beta0-std", 0.0, strict=False), required=True)
    p.add_argument("--samples", type=_int_type("samples", 1), default=100_000,
                   help="samples per N (default 100000)")
    p.add_argument("--seed", type=_int_type("seed", 0), default=0, help="sampling seed (default 0)")
    p.add_argument("--regime", choices=["exact", "signal", "noise"], default="exact",
                   help="escape-time formula (default exact: noise included, numeric)")
    _common(p)

    p = sub.add_parser("minimal", help="SGD on the minimal model: per-seed t_ICL (iterations)")
    p.add_argument("--N", type=_int_type("N", 1), default=100, help=N_HELP + " (default 100)")
    p.add_argument("--beta0", type=_float_type("beta0"), default=0.0)
    p.add_argument("--w0", type=_float_type("w0"), default=0.0)
    p.add_argument("--lr", type=_float_type("lr", 0.0), default=0.1)
    p.add_argument("--seeds", type=_int_type("seeds", 1), default=8)
    p.add_argument("--seed", type=_int_type("seed", 0), default=0, help="base seed (default 0)")
    p.add_argument("--batch-size", type=_int_type("batch-size", 1), default=128)
    p.add_argument("--D", type=_int_type("D", 1), default=63, help="item dimension (default 63)")
    p.add_argument("--K", type=_int_type("K", 2), default=None,
                   help="number of items (even); default: K -> infinity (fresh items)")
    p.add_argument("--mlp-width", type=_int_type("mlp-width", 1), default=None,
                   help="width of the MLP phi on the target item (default: no MLP)")
    p.add_argument("--equalize", action="store_true", help="exactly N/2 context labels of each kind")
    p.add_argument("--wd-icl", type=_float_type("wd-icl", 0.0, strict=False), default=0.0,
                   help="L2 weight decay on (w, beta)")
    p.add_argument("--max-iterations", type=_int_type("max-iterations", 1), default=10_000)
    p.add_argument("--eval-every", type=_int_type("eval-every", 1), default=10)
    p.add_argument("--no-early-stop", action="store_true", help="train every seed to max-iterations")
    p.add_argument("--out", default=None, help="folder for config.json and metrics.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)

    p = sub.add_parser("transience", help="w_tr and the predicted loss of ICL for c3(t) and lambda")
    p.add_argument("--lam", type=_float_type("lam", 0.0), required=True,
                   help="L2 weight decay on w and beta (per unit learning-rate time), > 0")
    p.add_argument("--N", type=_int_type("N", 1), default=100, help=N_HELP + " (default 100)")
    p.add_argument("--lr", type=_float_type("lr", 0.0), default=0.01, help="learning rate (default 0.01)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--c3-power", nargs=3, type=_float_type("c3-power", 0.0), metavar=("C0", "S0", "ALPHA"),
                   help="c3(s) = C0 (1 + s/S0)^-ALPHA, s = lr * iterations")
    g.add_argument("--c3-table", metavar="CSV",
                   help="CSV with columns 'iteration' (or 's' in learning-rate time) and 'c3'")
    p.add_argument("--iterations", type=_float_type("iterations", 0.0), default=None,
                   help="horizon in iterations (default: end of the c3 table, or 1e7)")
    _common(p)

    p = sub.add_parser("compare", help="theory vs minimal-model SGD on an N x beta0 grid")
    p.add_argument("--N", nargs="+", type=_int_type("N", 2), default=[50, 100, 200], help=N_HELP)
    p.add_argument("--beta0", nargs="+", type=_float_type("beta0"), default=[-2.0, -1.0, 0.0, 1.0])
    p.add_argument("--lr", type=_float_type("lr", 0.0), default=0.1)
    p.add_argument("--seeds", type=_int_type("seeds", 1), default=8)
    p.add_argument("--seed", type=_int_type("seed", 0), default=0)
    p.add_argument("--out", default="out/compare", help="folder for table.csv, table.md, figure")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _common(p)

    p = sub.add_parser("train", help="train S seeds of a model in one process (tidy metrics, checkpoints)",
                       description="Train seed-batched models with plain SGD. --N counts context tokens, NOT the "
                       "target; --len-context counts the target too, as the paper's code does "
                       "(--len-context 100 == --N 99).")
    p.add_argument("--model", choices=["transformer", "transformer2", "minimal", "mlp"], default="transformer",
                   help="transformer (paper), transformer2 (Fig. A5), minimal (phi + (w, beta)), mlp (Fig. 5)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--N", type=_int_type("N", 1), default=None,
                   help="context tokens, NOT counting the target (default 99 = the paper's len_context 100)")
    g.add_argument("--len-context", type=_int_type("len-context", 2), default=None,
                   help="the paper code's sequence length, target included (N = len_context - 1)")
    p.add_argument("--K", type=_k_type, default=None,
                   help="training items (even integer >= 2) or 'inf' for fresh items every sequence (default inf)")
    p.add_argument("--D", type=_int_type("D", 1), default=63, help="item dimension (default 63)")
    p.add_argument("--width", type=_int_type("width", 0), default=512, help="MLP width (default 512; "
                   "0 = no phi for --model minimal)")
    p.add_argument("--labels", choices=["onehot", "pm1"], default="onehot",
                   help="label encoding in the tokens: onehot (paper code, 65-dim tokens) or pm1 (paper text)")
    p.add_argument("--contexts", choices=["iid", "equalized"], default="iid",
                   help="equalized: exactly N/2 context labels of each kind")
    p.add_argument("--zipf-alpha", type=_float_type("zipf-alpha", 0.0, strict=False), default=0.0,
                   help="item frequencies p(k) ~ k^-alpha (default 0: uniform; an extension)")
    p.add_argument("--beta0", type=_float_type("beta0"), default=None,
                   help="initial beta of --model minimal (default: N(0, 1) per seed)")
    p.add_argument("--lr", type=_float_type("lr", 0.0), default=0.01, help="SGD learning rate (default 0.01)")
    p.add_argument("--batch-size", type=_int_type("batch-size", 1), default=128)
    p.add_argument("--wd-attn", type=_float_type("wd-attn", 0.0, strict=False), default=0.0,
                   help="L2 weight decay on LayerNorm and q/k/v (and w, beta); paper transience: 3e-3")
    p.add_argument("--wd-mlp", type=_float_type("wd-mlp", 0.0, strict=False), default=0.0,
                   help="L2 weight decay on the MLPs (default 0; the paper's 1e-10 is effectively 0)")
    p.add_argument("--seeds", type=_int_type("seeds", 1), default=8)
    p.add_argument("--seed", type=_int_type("seed", 0), default=0, help="base seed (init and data streams)")
    p.add_argument("--seed-offset", type=_int_type("seed-offset", 0), default=0,
                   help="index of the first seed (seeds=1, seed-offset=i reproduces seed i of a batch)")
    p.add_argument("--item-seed", type=_int_type("item-seed", 0), default=10,
                   help="seed of the item set and test sets, shared by every seed (default 10)")
    p.add_argument("--iterations", type=_int_type("iterations", 1), default=20_000, help="iteration cap")
    p.add_argument("--eval-every", type=_int_type("eval-every", 1), default=100,
                   help="iterations between evaluations (default 100; the paper: 469, one epoch)")
    p.add_argument("--eval-size", type=_int_type("eval-size", 1), default=2000)
    p.add_argument("--early-stop", type=_early_stop_type, default=0.99,
                   help="stop a seed once its ICL accuracy exceeds this, or 'none' (default 0.99, as the paper)")
    p.add_argument("--checkpoint-every", type=_int_type("checkpoint-every", 1), default=5000,
                   help="iterations between checkpoints (default 5000)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--workers", type=_int_type("workers", 1), default=None,
                   help="CPU worker threads (default: one per core)")
    p.add_argument("--out", default="runs/train", help="folder for config.json, metrics.csv, checkpoint.pt")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT has a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)

    p = sub.add_parser("sweep", help="named, resumable sweeps of training runs (run, status, collect, list)")
    ss = p.add_subparsers(dest="sweep_cmd", metavar="SWEEP_COMMAND", parser_class=_Parser, required=True)
    p.commands = ss.choices
    q = ss.add_parser("run", help="run (or resume) a preset sweep; skips finished runs")
    q.add_argument("preset", help="preset name (see 'icl-kinetics sweep list')")
    q.add_argument("--scale", choices=["small", "paper"], default="small")
    q.add_argument("--executor", choices=["local", "slurm"], default="local",
                   help="local: a process pool on this machine; slurm: a submitit job array")
    q.add_argument("--out", default=None, help="the sweep's folder (default runs/PRESET-SCALE)")
    q.add_argument("--processes", type=_int_type("processes", 1), default=None,
                   help="local worker processes (default: one per core)")
    q.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    q.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    q.add_argument("--slurm-partition", default=None)
    q.add_argument("--slurm-time", type=_int_type("slurm-time", 1), default=600, help="minutes per job")
    q.add_argument("--slurm-gpus", type=_int_type("slurm-gpus", 0), default=0, help="GPUs per job")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(q, plot=False)
    q = ss.add_parser("status", help="done, failed and pending runs, and the time left")
    q.add_argument("dir", help="the sweep's folder")
    _common(q, plot=False)
    q = ss.add_parser("collect", help="one tidy table (CSV) for the whole sweep")
    q.add_argument("dir", help="the sweep's folder")
    q.add_argument("--out", default=None, help="CSV path (default DIR/collected.csv)")
    _common(q, plot=False)
    q = ss.add_parser("list", help="the presets, their sizes and estimated CPU time")
    q.add_argument("--cores", type=_int_type("cores", 1), default=2, help="cores for the wall-time estimate")
    _common(q, plot=False)

    p = sub.add_parser("validate", help="check the theory's predictions against trained models (report.md)",
                       description="Check the theory against the preset sweeps (run or reused) or against "
                       "your own tidy table (--runs; schema in docs/validation.md).")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", choices=["small", "paper"], default="small", help="scale of the preset sweeps")
    g.add_argument("--runs", metavar="CSV", nargs="+", default=None,
                   help="your own runs as one or more tidy tables (stacked; e.g. MLP runs and ICL runs)")
    p.add_argument("--sweeps", default=None, help="folder of the preset sweeps (default runs/PRESET)")
    p.add_argument("--no-run", action="store_true", help="only read sweeps that exist; never train")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the preset sweeps train (cuda: one process on the GPU)")
    p.add_argument("--out", default="out/validate", help="folder for report.md, report.json and figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _common(p, plot=False)

    p = sub.add_parser("bench", help="benchmarks to run on your own hardware")
    p.add_argument("what", choices=["engine"], help="engine: fast seed-batched engine vs naive reference")
    p.add_argument("--quick", action="store_true", help="fewer iterations (seconds instead of a minute)")
    p.add_argument("--seeds", type=_int_type("seeds", 1), default=16)
    p.add_argument("--workers", type=_int_type("workers", 1), default=None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    _common(p, plot=False)
    return ap


def _k_type(s: str):
    if s.lower() in ("inf", "none", "infinity"):
        return None
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"K must be an even integer >= 2 or 'inf', got {s!r}") from None
    if not v.is_integer() or v < 2 or v % 2:
        raise argparse.ArgumentTypeError(f"K must be an even integer >= 2 or 'inf', got {s!r}")
    return int(v)


def _early_stop_type(s: str):
    if s.lower() == "none":
        return None
    try:
        v = float(s)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"early-stop must be a number in [0, 1] or 'none', got {s!r}")
    return v


def _version() -> str:
    from icl_kinetics import __version__

    return f"icl-kinetics {__version__}"


# ----------------------------------------------------------------------------- commands
def cmd_threshold(a) -> dict:
    import numpy as np

    from icl_kinetics.theory import k_star

    Ns = np.array(a.N)
    ks = k_star(Ns, a.beta0, a.amplitude, a.nu, c2=a.c2)
    slope = float(np.polyfit(np.log(Ns), np.log(ks), 1)[0]) if len(set(a.N)) > 1 else None
    res = {"N": a.N, "k_star": ks.tolist(), "slope": slope, "predicted_slope": 1.0 / a.nu,
           "nu": a.nu, "amplitude": a.amplitude, "beta0": a.beta0, "c2": a.c2,
           "units": {"N": "context tokens (target not counted)", "amplitude": "learning-rate time",
                     "k_star": "items"}}
    if a.plot:
        from icl_kinetics.validate.figures import k_star_figure, save

        res["plot"] = save(k_star_figure({"N": Ns, "k_star": ks}, nu=a.nu), a.plot)
    return res


def _print_threshold(r):
    print(f"K* for I_K(inf) = {r['amplitude']:g} K^{r['nu']:g}, beta0 = {r['beta0']:g}, c2 = {r['c2']:g}")
    print(f"{'N':>8} {'K*':>14}")
    for n, k in zip(r["N"], r["k_star"]):
        print(f"{n:>8} {k:>14.6g}")
    if r["slope"] is not None:
        print(f"log-log slope d log K*/d log N = {r['slope']:.4f}  (1/nu = {r['predicted_slope']:.4f})")


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def cmd_onset(a) -> dict:
    import numpy as np

    from icl_kinetics.theory import OnsetDistribution

    rows, per_n, curves = [], [], []
    for N in a.N:
        d = OnsetDistribution(N=N, lr=a.lr, beta0_mean=a.beta0_mean, beta0_std=a.beta0_std, regime=a.regime)
        x = d.sample(a.samples, seed=a.seed + N)
        q_emp = np.quantile(x, QUANTILES)
        q_th = d.quantile(np.array(QUANTILES)) if a.beta0_std > 0 else np.full(len(QUANTILES), d.median())
        per_n.append({"N": N, "median": float(np.median(x)), "mean": float(x.mean()),
                      "quantiles": dict(zip(map(str, QUANTILES), q_emp.tolist())),
                      "closed_form_quantiles": dict(zip(map(str, QUANTILES), q_th.tolist()))})
        if a.plot:
            rows.extend({"N": N, "t_icl": t} for t in x[: min(a.samples, 20000)])
            if a.beta0_std > 0:
                tt = np.geomspace(q_th[0] / 3, q_th[-1] * 3, 200)
                curves.extend({"N": N, "t_icl": t, "density": dd * t * np.log(10)}
                              for t, dd in zip(tt, d.pdf(tt)))
    res = {"N": a.N, "lr": a.lr, "beta0_mean": a.beta0_mean, "beta0_std": a.beta0_std,
           "regime": a.regime, "samples": a.samples, "seed": a.seed, "units": "iterations",
           "per_N": per_n}
    if len(a.N) > 1:
        med = [p["median"] for p in per_n]
        slope, icpt = np.polyfit(a.N, med, 1)
        res["median_linear_fit"] = {"slope_per_token": float(slope), "intercept": float(icpt)}
    if a.plot:
        from icl_kinetics.validate.figures import onset_figure, save

        res["plot"] = save(onset_figure(rows, curves or None), a.plot)
    return res


def _print_onset(r):
    print(f"t_ICL (iterations), lr = {r['lr']:g}, beta0 ~ N({r['beta0_mean']:g}, {r['beta0_std']:g}^2), "
          f"{r['samples']} samples per N, regime = {r['regime']}")
    hdr = "".join(f"{'q' + k:>12}" for k in map(str, QUANTILES))
    print(f"{'N':>6}{hdr}")
    for p in r["per_N"]:
        print(f"{p['N']:>6}" + "".join(f"{v:>12.5g}" for v in p["quantiles"].values()))
    if "median_linear_fit" in r:
        f = r["median_linear_fit"]
        print(f"median ~ {f['slope_per_token']:.4g} * N + {f['intercept']:.3g}")


def _minimal_config(a):
    from icl_kinetics.simulate.minimal import MinimalConfig

    cfg = MinimalConfig(N=a.N, beta0=a.beta0, w0=a.w0, lr=a.lr, seeds=a.seeds, seed=a.seed,
                        batch_size=a.batch_size, D=a.D, K=a.K, mlp_width=a.mlp_width,
                        equalize=a.equalize, wd_icl=a.wd_icl, max_iterations=a.max_iterations,
                        eval_every=a.eval_every, stop_on_acquire=not a.no_early_stop)
    cfg.validate()
    return cfg


def cmd_minimal(a) -> dict:
    import numpy as np

    from icl_kinetics.io import write_csv, write_json
    from icl_kinetics.simulate.minimal import run_minimal
    from icl_kinetics.theory import icl_threshold_beta, solve_flow, t_icl

    cfg = _minimal_config(a)
    t0 = time.perf_counter()
    result = run_minimal(cfg, progress=not (a.quiet or a.json))
    res = result.to_json()
    res["wall_seconds"] = time.perf_counter() - t0
    if a.K is None and a.mlp_width is None and not a.equalize and a.w0 >= 0:
        res["theory_t_icl"] = float(t_icl(a.N, a.beta0, a.lr, w0=a.w0, beta_c=icl_threshold_beta(a.N)))
        res["theory_t_icl_full_flow"] = solve_flow(a.N, a.beta0, a.lr, w0=a.w0, stage="full").t_icl
    res["failure"] = _diverged(res.get("status", []), res.get("reasons", []))
    if a.out:
        out = Path(a.out)
        write_json(out / "config.json", res.get("config", {}))
        if result.history:
            write_csv(out / "metrics.csv", result.history)
        res["out"] = str(out)
    if a.plot:
        from icl_kinetics.validate.figures import columns
        import matplotlib.pyplot as plt
        from icl_kinetics.validate.figures import save

        c = columns(result.history)
        fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
        for s in np.unique(c["seed"]):
            m = c["seed"] == s
            ax.plot(c["iteration"][m], c["icl_acc"][m], lw=1)
        ax.axhline(cfg.acc_threshold, color="k", ls=":", lw=1)
        if "theory_t_icl" in res:
            ax.axvline(res["theory_t_icl"], color="k", ls="--", lw=1, label="theory t_ICL")
            ax.legend(fontsize=8)
        ax.set_xlabel("iteration")
        ax.set_ylabel("ICL accuracy")
        ax.set_title(f"minimal model, N = {a.N}, beta0 = {a.beta0:g}", fontsize=10)
        res["plot"] = save(fig, a.plot)
    return res


def _diverged(status, reasons, offset: int = 0) -> dict | None:
    """The failure record (exit 3) when any seed diverged: a result no script should take for
    a success (a sweep records such a run as failed)."""
    div = [(offset + i, why) for i, (s, why) in enumerate(zip(status, reasons)) if s == "diverged"]
    if not div:
        return None
    return {"exit_code": 3, "message": f"{len(div)} of {len(status)} seeds diverged (seed {div[0][0]}: "
            f"{div[0][1]}); lower --lr"}


def _print_minimal(r):
    status = r.get("status") or ["running"] * len(r["t_icl"])
    ts = ["diverged" if s == "diverged" else "never" if t is None else str(t) for t, s in zip(r["t_icl"], status)]
    print("t_ICL per seed (iterations): " + ", ".join(ts))
    div = [(i, why) for i, (s, why) in enumerate(zip(status, r.get("reasons") or [""] * len(status)))
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
        it = (lambda t: "< 1 (at the first evaluation)" if t < 1 else f"{t:.0f}")
        print(f"theory t_ICL, reduced ODEs (exact regime, accuracy 0.95): {it(r['theory_t_icl'])}")
        if r.get("theory_t_icl_full_flow") is not None:
            print(f"theory t_ICL, full data-averaged flow (large D):       {it(r['theory_t_icl_full_flow'])}")
    print(f"wall time: {r['wall_seconds']:.1f} s")


def cmd_transience(a) -> dict:
    import numpy as np

    from icl_kinetics.theory import PowerLaw, transience_flow, w_tr

    if a.c3_power:
        c0, s0, alpha = a.c3_power
        c3 = PowerLaw(c0, s0, alpha)
        s_max = (a.iterations or 1e7) * a.lr
    else:
        c3, s_max = _read_c3_table(a.c3_table, a.lr)
        if a.iterations:
            s_max = a.iterations * a.lr
    sol = transience_flow(c3, a.lam, a.N, s_max)
    t = sol.s / a.lr
    t_loss = None if sol.s_loss is None else sol.s_loss / a.lr
    pick = np.unique(np.geomspace(1, len(t), 12).astype(int) - 1)
    res = {"lam": a.lam, "N": a.N, "lr": a.lr, "w_tr_initial": float(w_tr(float(c3(0.0)), a.lam)),
           "w_tr_final": float(sol.w_tr[-1]), "t_icl_loss": t_loss,
           "horizon_iterations": float(t[-1]),
           "trajectory": [{"iteration": float(t[i]), "c3": float(sol.c3[i]), "w": float(sol.w[i]),
                           "w_tr": float(sol.w_tr[i]), "beta": float(sol.beta[i]),
                           "icl_accuracy": float(sol.icl_accuracy[i])} for i in pick],
           "units": {"t_icl_loss": "iterations after acquisition", "lam": "per unit learning-rate time"}}
    if a.plot:
        from icl_kinetics.validate.figures import save, transience_figure

        tab = {"t": t, "w": sol.w, "w_tr": sol.w_tr, "beta": sol.beta, "icl_accuracy": sol.icl_accuracy,
               "t_loss": np.full(t.size, np.nan if t_loss is None else t_loss)}
        res["plot"] = save(transience_figure(tab), a.plot)
    return res


def _read_c3_table(path, lr):
    import csv

    from icl_kinetics.errors import ParameterError
    from icl_kinetics.theory import Tabulated

    p = Path(path)
    if not p.is_file():
        raise ParameterError("c3-table", path, "an existing CSV file")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ParameterError("c3-table", path, f"a text CSV file ({type(e).__name__}: not readable as UTF-8 CSV)") \
            from None
    if not rows or "c3" not in rows[0] or not ({"iteration", "s"} & set(rows[0])):
        raise ParameterError("c3-table", path, "a CSV with columns 'c3' and 'iteration' (or 's')")
    try:
        if "s" in rows[0]:
            s = [float(r["s"]) for r in rows]
        else:
            s = [float(r["iteration"]) * lr for r in rows]
        v = [float(r["c3"]) for r in rows]
    except (ValueError, TypeError) as e:
        raise ParameterError("c3-table", path, f"numeric columns ({e})") from None
    try:
        curve = Tabulated(s, v, extrapolate="hold")
    except ParameterError as e:
        raise ParameterError("c3-table", path, f"a valid c3 curve ({e})") from None
    return curve, s[-1]


def _print_transience(r):
    print(f"lambda = {r['lam']:g}, N = {r['N']}, lr = {r['lr']:g}")
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


def _train_config(a):
    from icl_kinetics.simulate.engine import TrainConfig

    N = a.N if a.N is not None else (a.len_context - 1 if a.len_context is not None else 99)
    cfg = TrainConfig(model=a.model, N=N, K=a.K, D=a.D, width=a.width, labels=a.labels, contexts=a.contexts,
                      zipf_alpha=a.zipf_alpha, beta0=a.beta0, lr=a.lr, batch_size=a.batch_size,
                      wd_attn=a.wd_attn, wd_mlp=a.wd_mlp, seeds=a.seeds, seed=a.seed, seed_offset=a.seed_offset,
                      item_seed=a.item_seed, iterations=a.iterations, eval_every=a.eval_every,
                      eval_size=a.eval_size, early_stop=a.early_stop, checkpoint_every=a.checkpoint_every,
                      device=a.device, workers=a.workers)
    cfg.validate()
    return cfg


def cmd_train(a) -> dict:
    from icl_kinetics.simulate.engine import train

    cfg = _train_config(a)
    res = train(cfg, out=a.out, progress=not (a.quiet or a.json), resume=not a.no_resume)
    out = res.summary()
    out["out"] = a.out
    out["failure"] = _diverged(res.status, res.reasons, cfg.seed_offset)
    out["seed_iterations_per_s"] = res.seed_iterations / res.seconds if res.seconds > 0 else None
    if a.plot:
        from icl_kinetics.validate.figures import save, training_curves_figure

        out["plot"] = save(training_curves_figure(res.rows, threshold=cfg.t_icl_threshold,
                                                  title=_train_title(cfg)), a.plot)
    return out


def _train_title(cfg) -> str:
    K = "inf" if cfg.K is None else cfg.K
    return f"{cfg.model}, N = {cfg.N}, K = {K}, width {cfg.width}, lr {cfg.lr:g}, wd_attn {cfg.wd_attn:g}"


def _print_train(r):
    c = r["config"]
    print(f"{c['model']}: N = {c['N']} context tokens, K = {c['K'] if c['K'] is not None else 'inf'}, "
          f"{c['seeds']} seeds, {r['iterations_done']} iterations")
    print(f"{'seed':>5} {'t_ICL':>8} {'final ICL acc':>14} {'final IWL acc':>14}  status")
    for i, (t, s) in enumerate(zip(r["t_icl"], r["status"])):
        ia, wa = r["final_icl_acc"][i], r["final_iwl_acc"][i]
        f = (lambda v: "n/a" if v is None or v != v else f"{v:.3f}")
        print(f"{c['seed_offset'] + i:>5} {('never' if t is None else t):>8} {f(ia):>14} {f(wa):>14}  {s}"
              + (f" ({r['reasons'][i]})" if r["reasons"][i] else ""))
    rate = r.get("seed_iterations_per_s")
    print(f"wall time {r['seconds']:.1f} s" + (f", {rate:.1f} seed-iterations/s" if rate else "")
          + f"; metrics: {r['out']}/metrics.csv")
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
        from icl_kinetics.simulate.sweeps.presets import list_presets

        return {"presets": list_presets(a.cores), "cores": a.cores,
                "units": {"cpu_core_hours": "hours of one core", "wall_hours_on_cores": "hours"}}
    if a.sweep_cmd == "run":
        from icl_kinetics.simulate.sweeps.presets import check_scale_preset, preset

        check_scale_preset(a.preset, a.scale)
        _require_device(a.device)
        spec = preset(a.preset, a.scale, device=a.device)
        out = a.out  # _check_outputs has filled in and checked the default, runs/PRESET-SCALE
        slurm = {"timeout_min": a.slurm_time, "gpus_per_node": a.slurm_gpus}
        if a.slurm_partition:
            slurm["slurm_partition"] = a.slurm_partition
        res = sweeps.run_sweep(spec, out, executor=a.executor, progress=not (a.quiet or a.json),
                               retry_failed=a.retry_failed, processes=a.processes, slurm=slurm)
        res = {**res, "dir": out}
        res["failure"] = _unfinished(res)
        return res
    store = sweeps.SweepStore(a.dir)
    if a.sweep_cmd == "status":
        return {**store.summary(check_checkpoints=True), "dir": a.dir}
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
        print(f"{'preset':12} {'figure':14} {'scale':6} {'runs':>5} {'seeds':>6} {'seed-its':>10} "
              f"{'core-h':>8} {'wall-h':>7}  (upper bounds: every seed to its cap, {r['cores']} cores)")
        for p in r["presets"]:
            for s in ("small", "paper"):
                e = p[s]
                print(f"{p['preset'] if s == 'small' else '':12} {p['figure'] if s == 'small' else '':14} {s:6} "
                      f"{e['runs']:>5} {e['seeds']:>6} {e['seed_iterations']:>10.3g} {e['cpu_core_hours']:>8.3g} "
                      f"{e['wall_hours_on_cores']:>7.3g}")
        return
    if "table" in r:
        print(f"wrote {r['rows']} rows from {r['included']} of {r['runs']} runs to {r['table']}")
        if r["unfinished"]:
            print(f"  {len(r['unfinished'])} run(s) unfinished: their rows so far are included, with their status")
        for rid, why in r["left_out"].items():
            print(f"  left out {rid}: {why}")
        return
    print(f"sweep {r['sweep']} ({r['scale']}) in {r['dir']}: {r['runs']} runs: {r['done']} done, {r['failed']} failed, "
          f"{r['damaged']} damaged, {r['running']} running, {r['pending']} pending")
    left = r.get("estimated_seconds_left_per_process")
    if r["pending"] + r["running"] + r["damaged"]:
        print(f"seed-iterations left: {r['seed_iterations_left']:.3g}"
              + (f"; about {left / 60:.1f} min left for one process (divide by the processes in use)"
                 if left is not None else "; no finished run to estimate the time left from yet"))
    for rid, why in r["failed_runs"].items():
        print(f"  failed {rid}: {why}")
    for rid, why in r["damaged_runs"].items():
        print(f"  damaged {rid}: {why}")
    for rid, why in r["pending_runs"].items():
        if why:
            print(f"  pending {rid}: {why}")
    for rid, why in r.get("checkpoint_problems", {}).items():
        print(f"  checkpoint of {rid}: {why}")


def cmd_validate(a) -> dict:
    from icl_kinetics.validate.report import run_validation

    if not a.no_run and a.runs is None:
        _require_device(a.device)
    return run_validation(preset=a.preset, sweeps=a.sweeps, runs=a.runs, out=a.out, run=not a.no_run,
                          progress=not (a.quiet or a.json), device=a.device)


def _print_validate(r):
    print(r["title"])
    for v in r["verdicts"]:
        print(f"- {v['prediction']} [{v['rung']}]: {v['verdict'].upper()}: predicted {v['predicted']}; "
              f"measured {v['measured']}; {v['metric']}")
        print(f"    {v['reason']}")
    for k, why in r["skipped"].items():
        print(f"- {k}: skipped ({why})")
    for k, why in r.get("problems", {}).items():
        print(f"- data problem: {k}: {why}")
    if r["not_checked"]:
        print(f"not checked by this version: {', '.join(r['not_checked'])}")
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
        a.out = f"runs/{a.preset}-{a.scale}"  # the default, checked like a given one
    if key in _OUT_DIRS and getattr(a, "out", None) is not None:
        check_output_dir("--out", a.out)
    if key == ("sweep", "collect"):  # the default, DIR/collected.csv, is checked like a given path
        check_output_file("--out", a.out if a.out is not None else str(Path(a.dir) / "collected.csv"), (".csv",))


def _flag_message(cmd_parser, e) -> str:
    """A ParameterError's message, prefixed with the command-line option when the API name
    (``beta0_mean``) has one (``--beta0-mean``)."""
    msg = str(e)
    name = str(getattr(e, "name", ""))
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


def main(argv=None) -> int:
    """The console script: exit 0 on success, 2 on bad input (one line naming the
    parameter or file), 3 when the work is unfinished or damaged (one-line summary on
    stderr), 1 on an environment failure or a bug (one line; ICL_KINETICS_DEBUG=1 shows
    the traceback), 130 when interrupted."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 2
    run, show = COMMANDS[a.command]
    from icl_kinetics.errors import EnvironmentFailure, ParameterError

    try:
        _check_outputs(a)
        res = run(a)
    except ParameterError as e:
        msg = " ".join(_flag_message(_command_parser(parser, a), e).split())
        sys.stderr.write(f"icl-kinetics {a.command}: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"icl-kinetics {a.command}: interrupted\n")
        return 130
    except EnvironmentFailure as e:
        sys.stderr.write(f"icl-kinetics {a.command}: error: {' '.join(str(e).split())}\n")
        return 1
    except MemoryError:
        if _debug():
            raise
        sys.stderr.write(f"icl-kinetics {a.command}: error: out of memory (reduce the sizes: seeds, batch, "
                         "samples, K or N)\n")
        return 1
    except OSError as e:  # a disk that fills up, a file that vanishes: not a bug, not bad input
        if _debug():
            raise
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        sys.stderr.write(f"icl-kinetics {a.command}: error: input/output failed on{where}: "
                         f"{e.strerror or type(e).__name__}\n")
        return 1
    except Exception as e:  # never a raw traceback; ICL_KINETICS_DEBUG=1 shows it
        return _internal_error(a.command, e)
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
    except KeyboardInterrupt:
        sys.stderr.write(f"icl-kinetics {a.command}: interrupted\n")
        return 130
    except Exception as e:  # never a raw traceback (ICL_KINETICS_DEBUG=1 shows it)
        return _internal_error(a.command, e, " while printing")
    failure = res.get("failure") if isinstance(res, dict) else None
    if failure:
        sys.stderr.write(f"icl-kinetics {a.command}: {failure['message']}\n")
        return int(failure["exit_code"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
