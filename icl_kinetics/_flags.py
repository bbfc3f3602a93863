"""Command-line flags: value types, the parser class, deprecated aliases, and the flags of
``train`` and ``minimal`` generated from :class:`icl_kinetics.simulate.engine.TrainConfig`.

A ``TrainConfig`` field ``batch_size`` is the flag ``--batch-size`` with the field's default
(or the command's own, e.g. ``minimal``'s), so a flag and the field it sets cannot drift
apart; :data:`TRAIN_FLAGS` adds each field's help text and the check made while parsing.
Importing this module does not import torch (``simulate.engine`` imports it lazily).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import MISSING, fields

N_HELP = "context length(s): context tokens, NOT counting the target (paper code's len_context - 1)"


# ----------------------------------------------------------------------------- value types
def int_type(name: str, lo: int | None = None):
    """An integer (``1e3`` is 1000) >= ``lo``."""

    def parse(s: str) -> int:
        allowed = "an integer" + (f" >= {lo}" if lo is not None else "")
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {s!r}") from None
        if not v.is_integer() or (lo is not None and v < lo):
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {s!r}")
        return int(v)

    return parse


def float_type(name: str, lo: float | None = None, strict: bool = True, hi: float | None = None,
               hi_strict: bool = True):
    """A finite number above ``lo`` (``strict``: >, else >=) and below ``hi`` (``hi_strict``: <, else <=)."""

    def parse(s: str) -> float:
        rng = []
        if lo is not None:
            rng.append(f"{'>' if strict else '>='} {lo:g}")
        if hi is not None:
            rng.append(f"{'<' if hi_strict else '<='} {hi:g}")
        allowed = "a finite number" + (" " + " and ".join(rng) if rng else "")
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {s!r}") from None
        bad_lo = lo is not None and (v <= lo if strict else v < lo)
        bad_hi = hi is not None and (v >= hi if hi_strict else v > hi)
        if not math.isfinite(v) or bad_lo or bad_hi:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {s!r}")
        return v

    return parse


def k_type(s: str):
    """Training items: an even integer >= 2, or 'inf' (None: fresh items every sequence)."""
    if s.lower() in ("inf", "none", "infinity"):
        return None
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"K must be an even integer >= 2 or 'inf', got {s!r}") from None
    if not v.is_integer() or v < 2 or v % 2:
        raise argparse.ArgumentTypeError(f"K must be an even integer >= 2 or 'inf', got {s!r}")
    return int(v)


def early_stop_type(s: str):
    """An ICL accuracy in [0, 1], or 'none' (None: never stop early)."""
    if s.lower() == "none":
        return None
    try:
        v = float(s)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"early-stop must be a number in [0, 1] or 'none', got {s!r}")
    return v


def log_every_type(s: str):
    """Iterations between logged rows (an integer >= 1), or 'none' (None: every evaluation)."""
    return None if s.lower() == "none" else int_type("log-every", 1)(s)


# ----------------------------------------------------------------------------- the parser
#: what argparse may take for a negative number value (``--beta0 -1e-3``, ``-inf``): its own
#: matcher only knows ``-1`` and ``-.5``, so ``-1e-3`` was read as an unknown option
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
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


def common(p: argparse.ArgumentParser, plot: bool = True) -> None:
    """``--json`` (every subcommand) and ``--plot PATH`` (where a picture fits)."""
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    if plot:
        p.add_argument("--plot", metavar="PATH", help="write a figure (PNG) to PATH")


# ----------------------------------------------------------------------------- deprecated aliases
class _Deprecated(argparse.Action):
    """An old flag that sets a new flag's destination (``const``: the value it stands for, for
    a flag without a value) and records "OLD is deprecated; use NEW" in ``namespace.deprecations``
    (printed on stderr once parsing succeeded: see :func:`deprecation_notes`)."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        notes = list(getattr(namespace, "deprecations", None) or [])
        notes.append(f"{option_string} is deprecated; use {self.new}")
        namespace.deprecations = notes


def add_deprecated(p, old: str, dest: str, new: str, *, no_value: bool = False, const=None, **kwargs) -> None:
    """Add ``old`` as a deprecated alias of ``new`` (the flag, and its value for a flag without
    one) that sets ``dest``: to its own value, or with ``no_value`` to ``const``."""
    if no_value:
        kwargs.update(nargs=0, const=const)
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, default=argparse.SUPPRESS,
                   help=f"deprecated: use {new}", **kwargs)


def deprecation_notes(a) -> list[str]:
    """The "OLD is deprecated; use NEW" lines of the deprecated flags given, in order."""
    return list(getattr(a, "deprecations", None) or [])


# ----------------------------------------------------------------------------- TrainConfig flags
def train_config_fields() -> dict:
    """TrainConfig's fields, name -> dataclasses.Field, in declaration order."""
    from icl_kinetics.simulate.config import TrainConfig

    return {f.name: f for f in fields(TrainConfig)}


#: per TrainConfig field: its help text (units stated), the check made while parsing (stricter
#: than the annotation where the value has a range), choices, and how a None default reads.
#: The flag's name and default come from the field.  Every field must be here
#: (tests/test_cli.py checks); choices are checked against the simulate layer's there too.
TRAIN_FLAGS = {
    "model": dict(choices=("transformer", "transformer2", "minimal", "mlp", "transformer_itemblind",
                           "transformer_split", "transformer_noln"),
                  help="transformer (paper), transformer2 (Fig. A5), minimal (phi + (w, beta)), mlp (Fig. 5); "
                       "ablations of transformer (docs/engine.md): transformer_itemblind (score beta * item overlap), "
                       "transformer_split (MLP(h_t) + u . attn), transformer_noln (no LayerNorm)"),
    "N": dict(type=int_type("N", 1), help="context tokens, NOT counting the target"),
    "K": dict(type=k_type, none="inf",
              help="training items (even integer >= 2) or 'inf' for fresh items every sequence"),
    "D": dict(type=int_type("D", 1), help="item dimension"),
    "width": dict(type=int_type("width", 0), help="MLP width (0: no phi, --model minimal only)"),
    "labels": dict(choices=("onehot", "pm1"),
                   help="label encoding in the tokens: onehot (paper code, D + 2 dims) or pm1 (paper text)"),
    "contexts": dict(choices=("iid", "equalized"), help="equalized: exactly N/2 context labels of each kind"),
    "zipf_alpha": dict(type=float_type("zipf-alpha", 0.0, strict=False),
                       help="item frequencies p(k) ~ k^-alpha (0: uniform; an extension)"),
    "beta0": dict(type=float_type("beta0"), none="N(0, 1) per seed",
                  help="initial beta of --model minimal or transformer_itemblind (1/overlap units)"),
    "w0": dict(type=float_type("w0"), help="initial w of --model minimal"),
    "lr": dict(type=float_type("lr", 0.0), help="SGD learning rate (per iteration; learning-rate time = lr * t)"),
    "batch_size": dict(type=int_type("batch-size", 1), help="sequences per iteration"),
    "wd_attn": dict(type=float_type("wd-attn", 0.0, strict=False),
                    help="L2 weight decay on the in-context pathway: LayerNorm and q/k/v (and beta of "
                         "transformer_itemblind, u of transformer_split), or (w, beta) of "
                         "--model minimal; per unit learning-rate time (paper transience: 3e-3)"),
    "wd_mlp": dict(type=float_type("wd-mlp", 0.0, strict=False),
                   help="L2 weight decay on the MLPs, per unit learning-rate time (the paper's 1e-10 is "
                        "effectively 0)"),
    "seeds": dict(type=int_type("seeds", 1), help="independent seeds trained at once"),
    "seed": dict(type=int_type("seed", 0), help="base seed (init and data streams)"),
    "seed_offset": dict(type=int_type("seed-offset", 0),
                        help="index of the first seed (--seeds 1 --seed-offset i reproduces seed i of a batch)"),
    "item_seed": dict(type=int_type("item-seed", 0),
                      help="seed of the item set and test sets, shared by every seed (and of the label map with "
                           "--label-map shared)"),
    "iterations": dict(type=int_type("iterations", 1), help="iteration cap"),
    "eval_every": dict(type=int_type("eval-every", 1),
                       help="iterations between evaluations (the paper: 469, one epoch)"),
    "log_every": dict(type=log_every_type, none="every evaluation",
                      help="iterations between logged metric rows, a multiple of --eval-every, or 'none' (t_ICL "
                           "is still decided at every evaluation)"),
    "eval_size": dict(type=int_type("eval-size", 1), help="sequences per test set"),
    "early_stop": dict(type=early_stop_type, none="none",
                       help="stop a seed once its ICL accuracy exceeds this, or 'none'"),
    "t_icl_threshold": dict(type=float_type("t-icl-threshold", 0.0, strict=False, hi=1.0, hi_strict=False),
                            help="ICL accuracy that defines t_ICL (iterations: the first evaluation above it)"),
    "checkpoint_every": dict(type=int_type("checkpoint-every", 1), help="iterations between checkpoints (with --out)"),
    "device": dict(choices=("cpu", "cuda"), help="where to train"),
    "workers": dict(type=int_type("workers", 1), none="one per core", help="CPU worker threads"),
    "backend": dict(choices=("auto", "overlaps", "autograd"),
                    help="overlaps: the exact K -> infinity overlap sampler (--model minimal, --K inf, --width 0); "
                         "autograd: the general path; auto: overlaps where it applies"),
    "label_map": dict(choices=("shared", "per-seed"),
                      help="item -> label map: per-seed (default: each seed its own balanced map over the shared "
                           "items, as the paper's code redraws it in every run) or shared (drawn with the items from "
                           "--item-seed, the same for every seed, as every run before this option); K = inf has no "
                           "map and accepts either"),
}


def flag(name: str) -> str:
    """The command-line flag of an API name: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _type_from_annotation(name: str, annotation) -> dict:
    """The parse-time type of a field without a :data:`TRAIN_FLAGS` entry, from its annotation."""
    text = str(annotation)
    if "float" in text:
        return {"type": float_type(name.replace("_", "-"))}
    if "int" in text:
        return {"type": int_type(name.replace("_", "-"))}
    return {}


def default_text(value, none: str = "none") -> str:
    return none if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def add_config_flags(p, defaults: dict | None = None, skip=(), groups: dict | None = None,
                     shown: dict | None = None) -> None:
    """Add one flag per TrainConfig field (but ``skip``) to parser ``p``.

    ``defaults`` overrides the fields' defaults (a command's own), ``shown`` how a default
    reads in the help; ``groups`` maps a field to the argument group (e.g. mutually
    exclusive) its flag goes in."""
    defaults, groups, shown = defaults or {}, groups or {}, shown or {}
    for name, f in train_config_fields().items():
        if name in skip:
            continue
        spec = dict(TRAIN_FLAGS.get(name) or _type_from_annotation(name, f.type))
        none = spec.pop("none", "none")
        default = defaults[name] if name in defaults else (f.default if f.default is not MISSING else None)
        spec["help"] = f"{spec.get('help', name)} (default {shown.get(name) or default_text(default, none)})"
        groups.get(name, p).add_argument(flag(name), dest=name, default=default, **spec)


class LenContext(argparse.Action):
    """``--len-context L``: the paper code's sequence length, target included; sets N = L - 1."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.N = values - 1


def config_kwargs(a, names=None) -> dict:
    """The TrainConfig keyword arguments in namespace ``a`` (every field it has a value for)."""
    names = names if names is not None else train_config_fields()
    return {n: getattr(a, n) for n in names if hasattr(a, n)}
