"""The tidy-table schema that the validation layer reads, and the check of which
predictions a given table allows.

One row per (run, seed, evaluation).  A table made by ``icl-kinetics sweep collect``
follows it; so can a table written by hand from any training code (another
transformer, optimizer or task variant).  Published in ``docs/validation.md``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from icl_kinetics.errors import ParameterError


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    meaning: str
    kind: str = "float"  # "float", "int", "str"


#: every column the validation layer understands; only ``REQUIRED`` must be present
COLUMNS = {c.name: c for c in [
    Column("seed", "-", "identifies one independent training run within a grid point", "str"),
    Column("iteration", "iterations", "SGD steps when the row was evaluated", "float"),
    Column("icl_acc", "-", "accuracy on sequences of novel items whose target is in the context", "float"),
    Column("run_id", "-", "groups rows into runs (default: the grid columns)", "str"),
    Column("model", "-", "'mlp' marks standalone-MLP memorization runs; anything else is an ICL model", "str"),
    Column("N", "tokens", "context tokens per sequence, NOT counting the target (the paper's code's "
           "len_context - 1)", "float"),
    Column("K", "items", "number of training items; inf (or empty) for fresh items every sequence", "float"),
    Column("contexts", "-", "'iid' or 'equalized' (exactly N/2 context labels of each kind)", "str"),
    Column("lr", "1/iteration", "SGD learning rate (converts iterations to learning-rate time)", "float"),
    Column("wd_attn", "-", "L2 weight decay on the in-context pathway (attention, LayerNorm)", "float"),
    Column("iwl_acc", "-", "accuracy on training items whose target is absent from the context", "float"),
    Column("icl_loss", "nats", "logistic loss on the ICL test set", "float"),
    Column("iwl_loss", "nats", "logistic loss on the IWL test set", "float"),
    Column("train_loss", "nats", "training loss", "float"),
    Column("c1", "-", "<sigma(-phi_plus)>: the memorizing network's residual error on training items", "float"),
    Column("c2", "-", "1 - <sigma(-phi_plus)^2> / c1", "float"),
    Column("c3", "-", "<exp(-phi_plus)>", "float"),
    Column("w", "-", "readout strength of the induction head (effective, for a transformer)", "float"),
    Column("beta", "1/overlap", "inverse temperature of item matching (effective, for a transformer)", "float"),
]}
REQUIRED = ("seed", "iteration")

#: each prediction and the columns it needs (beyond REQUIRED)
PREDICTIONS = {
    "memorization_law": ("model", "K", "c1", "lr"),
    "k_star_scaling": ("icl_acc", "K", "N"),
    "onset_times": ("icl_acc", "K", "N"),
    "drive_at_onset": ("icl_acc", "K", "N", "c1", "lr"),
    "bimodality": ("icl_acc", "K", "N"),
    "equalized_contexts": ("icl_acc", "K", "contexts"),
    "transience": ("icl_acc", "wd_attn"),
    "transience_tracking": ("icl_acc", "wd_attn", "w", "c3"),
    "icl_iwl_loss_relation": ("icl_loss", "iwl_loss", "wd_attn"),
}


def _parse(col: Column, v: str):
    if col.kind == "str":
        return v
    if v in ("", "nan", "NaN", "None", "null"):
        return math.inf if col.name == "K" and v in ("", "None", "null") else math.nan
    try:
        return float(v)
    except ValueError:
        raise ParameterError(col.name, v, f"a number ({col.unit})") from None


def read_table(path) -> dict:
    """Read a tidy CSV into columns (name -> list), typed by :data:`COLUMNS`.

    Unknown columns are kept as strings.  Raises :class:`ParameterError` if the file is
    missing, empty, lacks a required column, or holds a non-number in a numeric column.
    """
    p = Path(path)
    if not p.is_file():
        raise ParameterError("runs", str(path), "an existing CSV file")
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ParameterError("runs", str(path), "a CSV with a header and at least one row")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        raise ParameterError("runs", str(path), "a table with the required columns " + ", ".join(REQUIRED)
                             + f" (missing: {', '.join(missing)}; see docs/validation.md)")
    cols = {}
    for name in rows[0]:
        spec = COLUMNS.get(name, Column(name, "?", "unknown column", "str"))
        cols[name] = [_parse(spec, r[name]) for r in rows]
    return cols


def read_tables(paths) -> dict:
    """Read one or more tidy CSVs (:func:`read_table`) into one table.

    Several files are stacked row by row; a column that one file lacks is filled with
    NaN there ('' for a text column), K included: a row without a K column is "K not
    given", never K = inf (fresh items), so it takes part in no check that needs K.  A
    file without ``run_id`` gets one naming the file, so rows of different files never
    merge into one run, and a file without ``status`` (sweep bookkeeping) counts as done.
    Typical use: standalone-MLP runs in one file and the ICL model's runs in another.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ParameterError("runs", "[]", "at least one CSV file")
    tables = [read_table(p) for p in paths]
    if len(tables) == 1:
        return tables[0]
    names = list(dict.fromkeys(c for t in tables for c in t))
    names += [c for c in ("run_id",) if c not in names]
    out = {c: [] for c in names}
    for i, (p, t) in enumerate(zip(paths, tables)):
        n = len(next(iter(t.values())))
        for c in names:
            if c in t:
                out[c] += t[c]
            elif c == "run_id":  # rows of different files never merge into one run
                out[c] += [f"{i}:{Path(p).name}"] * n
            elif c == "status":  # a file without sweep bookkeeping holds finished runs
                out[c] += ["done"] * n
            else:
                kind = COLUMNS[c].kind if c in COLUMNS else "str"
                out[c] += ["" if kind == "str" else math.nan] * n
    return out


def available_predictions(columns) -> tuple[list[str], dict]:
    """Which predictions a table's columns allow: (runnable, {skipped: [missing columns]})."""
    have = set(columns)
    ok, skipped = [], {}
    for name, need in PREDICTIONS.items():
        miss = [c for c in need if c not in have]
        if miss:
            skipped[name] = miss
        else:
            ok.append(name)
    return ok, skipped
