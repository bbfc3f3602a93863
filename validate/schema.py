"""The tidy-table schema that the validation layer reads, and the check of which
predictions a given table allows.

One row per (run, seed, evaluation).  A table made by ``icl-kinetics sweep collect``
follows it; so can a table written by hand from any training code (another
transformer, optimizer or task variant).  Published in ``docs/validation.md``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from icl_kinetics.errors import ParameterError, describe
from icl_kinetics.resources import require_memory


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


#: text that reads as "no value" in a numeric column (NaN; for K, '' / None / null mean K = inf)
_MISSING = ("", "nan", "NaN", "None", "null")
_K_INF = ("", "None", "null")


class _Bad(Exception):
    """A cell that breaks its column's rule (caught by :func:`read_table`, which adds the
    file, line and column)."""

    def __init__(self, allowed: str):
        self.allowed = allowed


def _number(unit: str, *, lo=None, lo_open=False, hi=None, integer=False, inf="", required=False,
            k_items=False, note=""):
    """A converter for a numeric column: text -> float (NaN where empty, unless ``required``),
    raising :class:`_Bad` with the rule when the value breaks it.  ``inf``: which infinities
    are allowed ("", "+" or "+-").  ``k_items``: the K column (empty / None / null = K = inf)."""
    what = "a whole number" if integer else "a number"
    if lo is not None and hi is not None:
        rule = f"{what} in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    elif lo is not None:
        rule = f"{what} {'>' if lo_open else '>='} {lo:g}"
    else:
        rule = what
    if unit != "-":
        rule += f" ({unit})"
    if k_items:
        rule += ", or inf (or empty) for fresh items every sequence"
    elif inf == "+":
        rule += ", inf, or empty for 'not given'" if not required else ""
    elif not required:
        rule += ", or empty for 'not given'"
    rule += note

    def conv(v: str) -> float:
        t = v.strip()
        if t in _MISSING:
            if k_items and t in _K_INF:
                return math.inf
            if required:
                raise _Bad(rule + "; every row needs one")
            return math.nan
        try:
            x = float(t)
        except ValueError:
            raise _Bad(rule) from None
        if math.isnan(x):
            if required:
                raise _Bad(rule + "; every row needs one")
            return x
        if math.isinf(x):
            if (x > 0 and (k_items or inf)) or inf == "+-":
                return x
            raise _Bad(rule)
        if (lo is not None and (x <= lo if lo_open else x < lo)) or (hi is not None and x > hi) \
                or (integer and not x.is_integer()):
            raise _Bad(rule)
        return x

    return conv


def _text(rule: str | None = None, allowed: tuple | None = None, nonempty: bool = False):
    """A converter for a text column: kept as written (``allowed``: one of these, stripped)."""
    def conv(v: str) -> str:
        if nonempty and not v.strip():
            raise _Bad(rule)
        if allowed is not None:
            t = v.strip()
            if t not in allowed:
                raise _Bad(rule)
            return t
        return v

    return conv


#: what each column's values must be (docs/validation.md, "The tidy-table schema").  A
#: column not listed here takes any number (or text, for a text column).
_RULES = {
    "seed": _text("a non-empty identifier: every row needs its seed", nonempty=True),
    "iteration": _number("SGD steps", lo=0, integer=True, required=True),
    # fractions of correct answers: a value above 1 is a percentage or a broken table
    "icl_acc": _number("-", lo=0, hi=1, note=": a fraction of correct answers, not a percentage"),
    "iwl_acc": _number("-", lo=0, hi=1, note=": a fraction of correct answers, not a percentage"),
    "N": _number("context tokens, not counting the target", lo=1, integer=True),
    "K": _number("items", lo=2, k_items=True,
                 note="; the paper's code writes K = -1 for K = inf: write inf or leave it empty instead"),
    "contexts": _text("'iid' or 'equalized' (or empty for 'not given')", allowed=("", "iid", "equalized")),
    "lr": _number("1/iteration", lo=0, lo_open=True),
    "wd_attn": _number("-", lo=0),
    "icl_loss": _number("nats", lo=0, inf="+"), "iwl_loss": _number("nats", lo=0, inf="+"),
    "train_loss": _number("nats", lo=0, inf="+"),
    "c1": _number("-", lo=0, hi=1), "c3": _number("-", lo=0, inf="+"),
}
for _c in COLUMNS.values():  # any other numeric column (c2, w, beta): any number, or empty
    _RULES.setdefault(_c.name, _number(_c.unit, inf="+-") if _c.kind != "str" else _text())

#: bytes of memory per byte of CSV that reading a table takes at its peak: the file's bytes
#: and text (2 per byte) and the typed column lists (32 bytes per numeric cell, a Python float
#: and its pointer).  Measured peak RSS: 10.4 per byte on a 60 MiB table of a sweep's columns
#: (2e5 rows); up to 22 for one-character cells ("0,1,1"), which no real table is made of.
_READ_BYTES_PER_BYTE = 12

#: the first bytes of file types that are sometimes given by mistake
_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\x1f\x8b", "gzip-compressed data (decompress it first)"),
          (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook? save it as CSV)"), (b"%PDF", "a PDF document"),
          (b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file"),
          (b"\xff\xfe", "UTF-16 text (save it as UTF-8)"), (b"\xfe\xff", "UTF-16 text (save it as UTF-8)"))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def path_error(name: str, path, allowed: str) -> ParameterError:
    """A :class:`ParameterError` about file or folder ``path`` given as ``name``; the path
    is named whole even where the value in the message is cut short (long paths)."""
    where = str(path)
    if len(describe(where)) < len(repr(where)):  # describe() shortened it
        allowed += f" [path: {_one_line(where)}]"
    return ParameterError(name, where, allowed)


def _one_line(text: str) -> str:
    return text if text.isprintable() else ascii(text)


def _decode(name: str, where: str, data: bytes) -> str:
    """The text of a CSV file's bytes, or a :class:`ParameterError` saying why it is not one."""
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise path_error(name, where, f"a UTF-8 text CSV file (this is {what})")
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise path_error(name, where, f"a UTF-8 text CSV file (a NUL byte at line {line}: binary data, not text)")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise path_error(name, where, f"a UTF-8 text CSV file (byte {data[e.start]:#04x} at line {line} is not "
                         "UTF-8: binary data, or text in another encoding; save it as UTF-8)") from None
    m = _CONTROL.search(text)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        raise path_error(name, where, f"a UTF-8 text CSV file (control character {ord(m.group()):#04x} at line "
                         f"{line}: binary data, not text)")
    return text


def _file_text(path, name: str) -> tuple[str, str, bool]:
    """(the path as text, the file's text, whether its bytes end with a line break), or a
    :class:`ParameterError` saying why the file cannot be read as a CSV's text."""
    where = str(path)
    try:
        p = Path(path)
    except TypeError:
        raise ParameterError(name, path, "a path to a CSV file") from None
    if p.is_dir():
        raise path_error(name, where, "a CSV file, not a folder")
    if not p.is_file():
        raise path_error(name, where, "a regular CSV file (this is a device, pipe or socket)" if p.exists()
                         else "an existing CSV file")
    try:
        size = p.stat().st_size
        require_memory(name, where, _READ_BYTES_PER_BYTE * size, f"reading this {size / 2**20:.3g} MiB table")
        data = p.read_bytes()
    except OSError as e:
        raise path_error(name, where, f"a readable CSV file ({e.strerror or type(e).__name__})") from None
    if p.name.endswith(".gz"):
        data = _gunzip(name, where, data)
    if not data.strip():
        raise path_error(name, where, "a CSV with a header and at least one row (the file is empty)")
    return where, _decode(name, where, data), data.endswith((b"\n", b"\r"))


def _gunzip(name: str, where: str, data: bytes) -> bytes:
    """The bytes of a gzip-compressed table (a file named ``*.gz``), decompressed in steps so
    that a file which expands beyond what this machine can read (a "gzip bomb") is refused
    before it is expanded, or a :class:`ParameterError` saying why it is not gzip data."""
    import zlib

    from icl_kinetics.resources import available_memory

    limit = max(1, available_memory() // _READ_BYTES_PER_BYTE)
    dec, parts, size = zlib.decompressobj(wbits=31), [], 0  # 31: gzip header and trailer
    try:
        chunk = dec.decompress(data, 1 << 24)
        while True:
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise path_error(name, where, f"a gzip-compressed CSV that fits in memory (it expands to more "
                                 f"than {limit / 2**20:.0f} MiB)")
            if not dec.unconsumed_tail:
                break
            chunk = dec.decompress(dec.unconsumed_tail, 1 << 24)
        parts.append(dec.flush())
    except zlib.error as e:
        raise path_error(name, where, f"gzip-compressed data that decompresses ({e}; is the file damaged?)") from None
    if not dec.eof:
        raise path_error(name, where, "gzip-compressed data that decompresses (it ends early: is the file truncated?)")
    if dec.unused_data:
        raise path_error(name, where, "one gzip stream holding one CSV (bytes follow the end of the stream)")
    return b"".join(parts)


def _bad_line(name: str, where: str, reader, what: str) -> ParameterError:
    return path_error(name, where, f"a well-formed CSV table (line {reader.line_num}: {what})")


def _header(reader, name: str, where: str) -> list[str]:
    """The column names of the first non-blank line, checked (named, unique, REQUIRED present)."""
    header = next((r for r in reader if any(f.strip() for f in r)), None)
    if header is None:
        raise path_error(name, where, "a CSV with a header and at least one row (the file holds no fields)")
    names = [h.strip() for h in header]
    if "" in names:
        raise _bad_line(name, where, reader, f"column {names.index('') + 1} of the header has no name")
    dup = [c for c in dict.fromkeys(names) if names.count(c) > 1]
    if dup:
        raise _bad_line(name, where, reader, "the header names " + ", ".join(describe(c, 40) for c in dup[:3])
                        + " more than once")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise path_error(name, where, "a table with the required columns " + ", ".join(REQUIRED)
                         + f" (missing: {', '.join(missing)}; see docs/validation.md)")
    return names


def _cells(reader, names: list, name: str, where: str, ends_with_newline: bool) -> list[list]:
    """The rows after the header as typed columns (:data:`_RULES`); blank lines skipped."""
    convs = [_RULES.get(c) or _text() for c in names]
    cols = [[] for _ in names]
    ncol = len(names)
    for row in reader:
        if len(row) != ncol:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            line = reader.line_num
            last = next(reader, None) is None
            why = f"{len(row)} fields, the header has {ncol}"
            if len(row) < ncol and last and not ends_with_newline:
                why += "; the last line is cut short: is the file truncated?"
            elif len(row) > ncol and not any(f.strip() for f in row[ncol:]):
                why += " (trailing commas?)"
            raise path_error(name, where, f"a well-formed CSV table (line {line}: {why})")
        j = 0
        try:
            for j in range(ncol):
                cols[j].append(convs[j](row[j]))
        except _Bad as e:
            raise ParameterError(names[j], row[j], f"{e.allowed} (in {_one_line(where)}, line {reader.line_num}, "
                                 f"column {names[j]})") from None
    return cols


def read_table(path, name: str = "runs") -> dict:
    """Read a tidy CSV into columns (name -> list), typed by :data:`COLUMNS`.

    The file is untrusted input: anything that is not a UTF-8 CSV table whose rows each
    have the header's fields, with every value allowed in its column (:data:`_RULES`;
    docs/validation.md), raises :class:`ParameterError`.  A file-level fault is named
    ``name`` (the option that gave the file) with the path; a bad value is named by its
    column, with the file, line and value in the message.  Unknown columns are kept as
    strings.  A file whose name ends in ``.gz`` is read as gzip-compressed (committed
    tables are stored so); its expanded size is checked against the memory available
    before it is expanded.
    """
    where, text, ends_with_newline = _file_text(path, name)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        names = _header(reader, name, where)
        cols = _cells(reader, names, name, where, ends_with_newline)
    except csv.Error as e:
        why = str(e)
        if "unexpected end of data" in why:
            why += " (a quoted field is never closed: is the file truncated?)"
        raise _bad_line(name, where, reader, why) from None
    if not cols[0]:
        raise path_error(name, where, "a CSV with a header and at least one row (it has a header only)")
    return dict(zip(names, cols))


def read_tables(paths, name: str = "runs") -> dict:
    """Read one or more tidy CSVs (:func:`read_table`) into one table.

    Several files are stacked row by row; a column that one file lacks is filled with
    NaN there ('' for a text column), K included: a row without a K column is "K not
    given", never K = inf (fresh items), so it takes part in no check that needs K.  A
    file without ``run_id`` gets one naming the file, so rows of different files never
    merge into one run, and a file without ``status`` (sweep bookkeeping) counts as done.
    Typical use: standalone-MLP runs in one file and the ICL model's runs in another.
    The same file given twice is refused (its seeds would count twice).
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ParameterError(name, "[]", "at least one CSV file")
    seen = {}
    for p in paths:
        try:
            key = Path(p).resolve()
        except (TypeError, OSError):
            continue  # read_table names it
        if key in seen:
            raise path_error(name, p, f"given once (it is also given as {_one_line(seen[key])}: its runs would "
                             "count twice)")
        seen[key] = str(p)
    tables = [read_table(p, name) for p in paths]
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
