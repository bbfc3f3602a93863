"""The tidy-table schema that the validation layer reads.

One row per (run, seed, evaluation).  A table made by ``icl-kinetics sweep collect``
(or ``train``'s ``metrics.csv``) follows it; so can a table written by hand from any
training code (another transformer, optimizer or task variant).  :func:`read_table`
reads one from a CSV file, a pandas DataFrame, a list of row dicts or a dict of
columns, all by the same rules.  Published in ``docs/validation.md``.  Which checks a
table allows, and what it lacks for the others: :mod:`icl_kinetics.validate.requirements`.
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

#: weight decay on the in-context pathway (``wd_attn``, per learning-rate time) at or below
#: this is no decay.  The paper's runs without decay log 1e-10 ("effectively zero"): decay
#: shrinks the weights by exp(-wd_attn lr t), so over 1e5 iterations at lr = 0.1 (lr t = 1e4)
#: 1e-10 takes off a fraction 1e-6 and the floor itself 1e-4, below anything a check can see.
#: The checks of transience read a run with wd_attn <= WD_ATTN_FLOOR as a run without decay.
WD_ATTN_FLOOR = 1e-8

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
    "K": _number("items", lo=2, k_items=True),  # K = -1: see _k_items
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


def _check_names(names: list, fail) -> None:
    """Every column named, and no name twice (``fail(what)``: the error to raise)."""
    if "" in names:
        raise fail(f"column {names.index('') + 1} of the header has no name")
    dup = [c for c in dict.fromkeys(names) if names.count(c) > 1]
    if dup:
        raise fail("the header names " + ", ".join(describe(c, 40) for c in dup[:3]) + " more than once")


def _header(reader, name: str, where: str) -> list[str]:
    """The column names of a CSV's first non-blank line, checked (named, unique)."""
    header = next((r for r in reader if any(f.strip() for f in r)), None)
    if header is None:
        raise path_error(name, where, "a CSV with a header and at least one row (the file holds no fields)")
    names = [h.strip() for h in header]
    _check_names(names, lambda what: _bad_line(name, where, reader, what))
    return names


@dataclass(frozen=True)
class _Options:
    """How a table's columns are read (:func:`read_table`'s keyword options), checked."""

    column_map: dict
    iterations_per_epoch: int | None
    k_minus_one_is_inf: bool

    @classmethod
    def make(cls, column_map=None, iterations_per_epoch=None, k_minus_one_is_inf=False) -> "_Options":
        from collections.abc import Mapping

        if column_map is None:
            column_map = {}
        if not isinstance(column_map, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                          for k, v in column_map.items()):
            raise ParameterError("column_map", column_map, "a dict {source column: schema column} of names (text)")
        column_map = {k.strip(): v.strip() for k, v in column_map.items()}
        empty = [k for k, v in column_map.items() if not k or not v]
        if empty:
            raise ParameterError("column_map", column_map, "non-empty column names on both sides")
        dst = list(column_map.values())
        twice = [d for d in dict.fromkeys(dst) if dst.count(d) > 1]
        if twice:
            srcs = [k for k, v in column_map.items() if v == twice[0]]
            raise ParameterError("column_map", column_map, f"one source column per destination ({' and '.join(srcs)} "
                                 f"are both mapped onto {twice[0]})")
        if iterations_per_epoch is not None:
            from icl_kinetics.errors import positive_int

            iterations_per_epoch = positive_int("iterations_per_epoch", iterations_per_epoch)
        if not isinstance(k_minus_one_is_inf, bool):
            raise ParameterError("k_minus_one_is_inf", k_minus_one_is_inf, "True or False")
        return cls(dict(column_map), iterations_per_epoch, k_minus_one_is_inf)

    def columns(self, header: list, fail, in_memory: bool) -> tuple[list, list, list]:
        """(the schema's column names, one converter per column, the source column each
        was read from) for a table whose own column names are ``header``; ``fail(what)``
        is the error for a header the options do not fit."""
        unknown = [c for c in self.column_map if c not in header]
        if unknown:
            raise ParameterError("column_map", unknown[0], "a column of the table (it has: "
                                 + ", ".join(describe(c, 30) for c in header[:20])
                                 + (", ..." if len(header) > 20 else "") + ")")
        names = [self.column_map.get(c, c) for c in header]
        kept = [c for c in header if c not in self.column_map]
        clash = [self.column_map[c] for c in self.column_map if self.column_map[c] in kept]
        if clash:
            raise ParameterError("column_map", self.column_map, f"destinations that are not already columns of the "
                                 f"table ({clash[0]} is one: map it away too, or drop it)")
        convs = [_RULES.get(c) or _text() for c in names]
        if "K" in names:
            convs[names.index("K")] = _k_items(self.k_minus_one_is_inf, in_memory)
        if self.iterations_per_epoch is not None:
            if "epoch" not in names:
                raise fail(f"a table with an 'epoch' column, since iterations_per_epoch = {self.iterations_per_epoch} "
                           "is given (it converts epochs into iterations)")
            if "iteration" in names:
                raise fail("either an 'iteration' column or an 'epoch' column with iterations_per_epoch, not both "
                           "(drop one, or leave iterations_per_epoch out)")
            j = names.index("epoch")
            names[j], convs[j] = "iteration", _epochs(self.iterations_per_epoch)
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            hint = "; see docs/validation.md"
            if "iteration" in missing and "epoch" in names:
                hint = ("; this one counts epochs: give iterations per epoch (--iterations-per-epoch E, or "
                        "iterations_per_epoch=E) to convert them")
            elif self.column_map:
                hint = "; after column_map"
            raise fail("a table with the required columns " + ", ".join(REQUIRED)
                       + f" (missing: {', '.join(missing)}{hint})")
        return names, convs, list(header)


def _k_items(minus_one_is_inf: bool, in_memory: bool):
    """The K column's converter: :data:`_RULES`'s, with K = -1 read as inf when asked, and,
    for a table given in memory, NaN refused (pandas reads an empty CSV cell as NaN, so
    there NaN could mean "not given" or K = inf: write inf, or None, for fresh items)."""
    base = _RULES["K"]

    def conv(v: str) -> float:
        t = v.strip()
        if in_memory and t in ("nan", "NaN"):
            raise _Bad("a number of items >= 2, or inf (or None) for fresh items every sequence; NaN is "
                       "ambiguous here (pandas reads an empty CSV cell as NaN): for fresh items write inf, e.g. "
                       "df['K'] = df['K'].fillna(float('inf'))")
        if minus_one_is_inf:
            try:
                if float(t) == -1.0:
                    return math.inf
            except ValueError:
                pass
        try:
            return base(v)
        except _Bad as e:
            try:
                minus_one = float(t) == -1.0
            except ValueError:
                minus_one = False
            if minus_one:  # the paper's code's K = inf: read so only when the user says
                raise _Bad("a number of items >= 2, or inf (or empty) for fresh items every sequence; the paper's "
                           "code writes K = -1 for K = inf: to read it so, pass --k-minus-one-is-inf "
                           "(k_minus_one_is_inf=True), or write inf") from None
            raise e from None

    return conv


def _epochs(per_epoch: int):
    """The converter of an ``epoch`` column into iterations: epoch x ``per_epoch``, to the
    nearest whole iteration (halves rounded up); epochs may be fractional."""
    base = _number("epochs", lo=0, required=True, note=f" (converted to iterations: x {per_epoch} per epoch)")

    def conv(v: str) -> float:
        return float(math.floor(base(v) * per_epoch + 0.5))

    conv.column = "epoch"  # a bad value is named by the column it is in (epochs), not "iteration"
    return conv


def _converted(names: list, convs: list, origin: list, row, where: str) -> list:
    """One row's text cells typed by ``convs``, or a :class:`ParameterError` naming the
    column, the value and ``where`` the row is."""
    out = []
    for j, conv in enumerate(convs):
        try:
            out.append(conv(row[j]))
        except _Bad as e:
            col = getattr(conv, "column", names[j])
            read = f", read from column {origin[j]}" if origin[j] != col else ""
            raise ParameterError(col, row[j], f"{e.allowed} (in {where}, column {col}{read})") from None
    return out


def _cells(reader, names: list, convs: list, origin: list, name: str, where: str,
           ends_with_newline: bool) -> list[list]:
    """A CSV's rows after the header as typed columns; blank lines skipped."""
    cols = [[] for _ in names]
    ncol = len(names)
    place = _one_line(where)
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
        try:
            for j in range(ncol):
                cols[j].append(convs[j](row[j]))
        except _Bad:  # named as _converted names it (the columns of this row so far are dropped with the table)
            _converted(names, convs, origin, row, f"{place}, line {reader.line_num}")
            raise  # pragma: no cover - _converted raised above
    return cols


class Table(dict):
    """A table as :func:`read_table` and :func:`read_tables` return it: column name -> list,
    every value already typed and checked.  Given to them again (or to ``validate_runs``),
    it is taken as it is; with reading options, it is read again by its cells, where a NaN
    K is "not given" (as :func:`read_tables` fills it for a table without a K column)."""


def _read_csv(path, opts: _Options, name: str) -> dict:
    where, text, ends_with_newline = _file_text(path, name)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = _header(reader, name, where)
        names, convs, origin = opts.columns(header, lambda what: path_error(name, where, what), in_memory=False)
        cols = _cells(reader, names, convs, origin, name, where, ends_with_newline)
    except csv.Error as e:
        why = str(e)
        if "unexpected end of data" in why:
            why += " (a quoted field is never closed: is the file truncated?)"
        raise _bad_line(name, where, reader, why) from None
    if not cols[0]:
        raise path_error(name, where, "a CSV with a header and at least one row (it has a header only)")
    return Table(zip(names, cols))


# -- tables given in memory: a DataFrame, a list of row dicts, a dict of columns --------------
_SOURCES = ("a CSV file's path (.csv or .csv.gz), a pandas DataFrame, a list of row dicts or a dict of columns "
            "(name -> list of values)")


def _is_frame(x) -> bool:
    """A pandas DataFrame, or anything shaped like one (``columns`` and ``to_dict``); pandas
    is never imported."""
    return not isinstance(x, (dict, str, bytes)) and hasattr(x, "columns") and callable(getattr(x, "to_dict", None))


def _is_scalar_cell(v) -> bool:
    return isinstance(v, (str, bytes)) or not (hasattr(v, "__len__") or hasattr(v, "__iter__")) \
        or getattr(v, "ndim", None) == 0


def _is_rows(x, among_sources: bool = False) -> bool:
    """A list of row dicts.  ``among_sources`` (``read_tables``): as opposed to a list of
    sources, which may be dicts of columns too: then the first row's values must be cells,
    not lists."""
    from collections.abc import Mapping

    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(r, Mapping) for r in x) \
        and (not among_sources or all(_is_scalar_cell(v) for v in x[0].values()))


def _cell_text(v, kind: str) -> str:
    """A value given in memory as the text a CSV would hold, so that it meets the same rules:
    None -> '' (not given; K = inf in the K column), NaN -> 'nan' ('' in a ``kind`` "text"
    or "other" column, as pandas marks missing text and reads an empty cell), floats
    exactly (repr), whole ones without a decimal point in a "text" column (a seed 3.0 is
    seed 3).  A list, array or other non-scalar raises :class:`_Bad`."""
    text_column = kind != "number"
    import numbers

    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if type(v).__name__ in ("NAType", "NaTType"):  # pandas' missing-value markers
        return "" if text_column else "nan"
    if getattr(v, "ndim", None) == 0 and callable(getattr(v, "item", None)):  # numpy or torch scalar
        v = v.item()
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        x = float(v)
        if math.isnan(x):
            return "" if text_column else "nan"
        if kind == "text" and x.is_integer() and abs(x) < 2 ** 53:
            return str(int(x))
        return repr(x)
    raise _Bad(f"one number or text per cell (this cell holds {describe(v, 40)}, a {type(v).__name__})")


def _memory_columns(source, name: str) -> tuple[str, list, list, list]:
    """(what the source is, its column names, its columns as lists, a label per row) of a
    DataFrame, list of row dicts or dict of columns, with its shape checked."""
    from collections.abc import Mapping

    if _is_frame(source):
        what = f"the DataFrame given as {name}"
        header = list(source.columns)
        bad = [c for c in header if not isinstance(c, str)]
        if bad:
            raise ParameterError(name, f"a DataFrame with column {describe(bad[0], 40)}",
                                 "a DataFrame whose column names are text (flatten a MultiIndex, name the columns)")
        _check_names([c.strip() for c in header], lambda what_: ParameterError(name, "a DataFrame", what_))
        data = source.to_dict(orient="list")
        cols = [list(data[c]) for c in header]
        index = list(getattr(source, "index", range(len(cols[0]) if cols else 0)))
        labels = [f"row {i}" + ("" if lab == i else f" (index {describe(lab, 30)})") for i, lab in enumerate(index)]
    elif _is_rows(source):
        what = f"the list of rows given as {name}"
        header = list(source[0].keys())
        for i, r in enumerate(source):
            if list(r.keys()) != header and set(r.keys()) != set(header):
                miss, extra = [c for c in header if c not in r], [c for c in r if c not in header]
                raise ParameterError(name, f"row {i}", "rows with the same keys as row 0 ("
                                     + ("; ".join(s for s in (f"lacks {', '.join(map(str, miss[:5]))}" if miss else "",
                                                              f"adds {', '.join(map(str, extra[:5]))}" if extra else "")
                                                 if s)) + ")")
        bad = [c for c in header if not isinstance(c, str)]
        if bad:
            raise ParameterError(name, describe(bad[0], 40), "row dicts whose keys are column names (text)")
        cols = [[r[c] for r in source] for c in header]
        labels = [f"row {i}" for i in range(len(source))]
    elif isinstance(source, Mapping):
        what = f"the dict of columns given as {name}"
        header = list(source.keys())
        bad = [c for c in header if not isinstance(c, str)]
        if bad:
            raise ParameterError(name, describe(bad[0], 40), "a dict whose keys are column names (text)")
        cols = []
        for c in header:
            v = source[c]
            if _is_scalar_cell(v) or isinstance(v, Mapping):
                raise ParameterError(c, v, f"a list (or array) of values, one per row (in {what})")
            cols.append(list(v))
        lens = {len(c) for c in cols}
        if len(lens) > 1:
            n0 = len(cols[0])
            c = next(h for h, col in zip(header, cols) if len(col) != n0)
            raise ParameterError(c, f"{len(source[c])} values", f"as many values as column {header[0]} ({n0}) "
                                 f"(in {what})")
        labels = [f"row {i}" for i in range(len(cols[0]) if cols else 0)]
    else:
        raise ParameterError(name, describe(source, 60) if isinstance(source, (int, float, bool)) or source is None
                             else type(source).__name__, _SOURCES)
    header = [c.strip() for c in header]
    _check_names(header, lambda what_: ParameterError(name, what, what_))
    return what, header, cols, labels


def _read_memory(source, opts: _Options, name: str) -> dict:
    what, header, cols, labels = _memory_columns(source, name)
    if not cols or not cols[0]:
        raise ParameterError(name, what, "a table with at least one row")
    names, convs, origin = opts.columns(header, lambda w: ParameterError(name, what, w),
                                        in_memory=not isinstance(source, Table))
    # a text column of the schema (seed, run_id, model, contexts); a column outside the
    # schema is kept as text too, its floats written as Python's csv writes them
    kinds = [("text" if COLUMNS[c].kind == "str" else "number") if c in COLUMNS else "other" for c in names]
    out = [[] for _ in names]
    for i, row in enumerate(zip(*cols)):
        cells = []
        for j, v in enumerate(row):
            try:
                cells.append(_cell_text(v, kinds[j]))
            except _Bad as e:
                raise ParameterError(names[j], v, f"{e.allowed} (in {what}, {labels[i]}, column {names[j]})") from None
        for c, x in zip(out, _converted(names, convs, origin, cells, f"{what}, {labels[i]}")):
            c.append(x)
    return Table(zip(names, out))



def read_table(source, *, column_map=None, iterations_per_epoch=None, k_minus_one_is_inf=False,
               name: str = "runs") -> dict:
    """Read one tidy table into columns (name -> list), typed by :data:`COLUMNS`.

    Args:
        source: a CSV file's path (``.csv``, or ``.csv.gz`` read as gzip-compressed), a
            pandas DataFrame (or any object with ``columns`` and ``to_dict("list")``;
            pandas is never imported), a list of row dicts (the same keys in every row) or
            a dict of columns (name -> list or 1-D array, all the same length).  A table
            given in memory is written cell by cell as a CSV's text (None -> empty, whole
            numbers without a decimal point, other floats exactly) and meets the same
            rules; a NaN in its K column is refused (pandas reads an empty cell as NaN,
            where a CSV's empty K means inf: write inf, or None, for fresh items).
        column_map: ``{source column: schema column}``, applied to the header before any
            check (for example ``{"icl_val_acc": "icl_acc"}``).  Every source column must
            exist; two sources onto one destination, or onto a column the table already
            has, are refused.
        iterations_per_epoch: a positive integer: the table's ``epoch`` column (epochs,
            possibly fractional) becomes ``iteration`` = epoch x this, to the nearest
            whole iteration (halves rounded up).  A table with both columns is refused.
        k_minus_one_is_inf: read K = -1 (the paper's code's convention for fresh items)
            as K = inf.  Without it K = -1 is refused, naming this option; any other
            K < 2 is always refused.
        name: the option that gave the table, named in file-level errors.

    Returns:
        :class:`Table` (a dict) of column name -> list: numbers as floats (NaN where not
        given; K = inf for fresh items), text columns and columns outside the schema as
        text.  A :class:`Table` given as ``source`` without options is taken as it is
        (a copy): it was checked when it was read.

    Raises:
        ParameterError: the source is unreadable or not a table of the schema.  A
            file-level fault is named ``name`` with the path; a bad value is named by its
            column (the schema's name, after ``column_map``), with the file and line, or
            the row (counted from 0, with its DataFrame index label), and the value; a bad
            option is named by the option.  The file is untrusted input: see
            docs/validation.md for every rule; its expanded size (``.gz``) is checked
            against the memory available before it is expanded.
    """
    opts = _Options.make(column_map, iterations_per_epoch, k_minus_one_is_inf)
    return _read_one(source, opts, name)


def _read_one(source, opts: _Options, name: str) -> dict:
    import os

    if isinstance(source, (str, os.PathLike)):
        return _read_csv(source, opts, name)
    if isinstance(source, Table) and opts == _Options.make():  # read and checked already
        return Table((c, list(v)) for c, v in source.items())
    return _read_memory(source, opts, name)


def _sources(sources) -> list:
    """The list of sources that ``read_tables`` was given (a single source made a list)."""
    import os
    from collections.abc import Mapping

    if isinstance(sources, (str, os.PathLike, Mapping)) or _is_frame(sources) or _is_rows(sources, True):
        return [sources]
    if isinstance(sources, (list, tuple)):
        return list(sources)
    return [sources]  # read_table names what it is


def _source_label(i: int, source) -> str:
    import os

    if isinstance(source, (str, os.PathLike)):
        return f"{i}:{Path(source).name}"
    return f"{i}:" + ("DataFrame" if _is_frame(source) else "rows" if _is_rows(source) else "columns")


def read_tables(sources, *, column_map=None, iterations_per_epoch=None, k_minus_one_is_inf=False,
                name: str = "runs") -> dict:
    """Read one or more tidy tables (:func:`read_table`, with the same options applied to
    each) into one table.

    Args:
        sources: one source of :func:`read_table` (a path, a DataFrame, a list of row
            dicts, a dict of columns), or a list of them.  A list whose items are all
            row dicts is one table (its rows), not a list of tables.
        column_map, iterations_per_epoch, k_minus_one_is_inf, name: as in
            :func:`read_table`.

    Returns:
        A :class:`Table`: the tables stacked row by row.  A column that one table lacks is filled with NaN
        there ('' for a text column), K included: a row without a K column is "K not
        given", never K = inf (fresh items), so it takes part in no check that needs K.
        A table without ``run_id`` gets one naming it (``<i>:<file name>``, or
        ``<i>:DataFrame`` / ``rows`` / ``columns``), so rows of different tables never
        merge into one run, and a table without ``status`` (sweep bookkeeping) counts as
        done.  Typical use: standalone-MLP runs in one file and the ICL model's runs in
        another.

    Raises:
        ParameterError: as :func:`read_table`; also no source at all, and the same file
            (or the same object) given twice (its seeds would count twice).
    """
    opts = _Options.make(column_map, iterations_per_epoch, k_minus_one_is_inf)
    import os

    srcs = _sources(sources)
    if not srcs:
        raise ParameterError(name, "[]", "at least one table: " + _SOURCES)
    seen, seen_obj = {}, {}
    for p in srcs:
        if not isinstance(p, (str, os.PathLike)):
            if id(p) in seen_obj:
                raise ParameterError(name, f"{type(p).__name__} given twice", "each table given once (its runs "
                                     "would count twice)")
            seen_obj[id(p)] = p
            continue
        try:
            key = Path(p).resolve()
        except (TypeError, OSError):
            continue  # read_table names it
        if key in seen:
            raise path_error(name, p, f"given once (it is also given as {_one_line(seen[key])}: its runs would "
                             "count twice)")
        seen[key] = str(p)
    tables = [_read_one(p, opts, name) for p in srcs]
    if len(tables) == 1:
        return tables[0]
    names = list(dict.fromkeys(c for t in tables for c in t))
    names += [c for c in ("run_id",) if c not in names]
    out = Table((c, []) for c in names)
    for i, (p, t) in enumerate(zip(srcs, tables)):
        n = len(next(iter(t.values())))
        for c in names:
            if c in t:
                out[c] += t[c]
            elif c == "run_id":  # rows of different tables never merge into one run
                out[c] += [_source_label(i, p)] * n
            elif c == "status":  # a table without sweep bookkeeping holds finished runs
                out[c] += ["done"] * n
            else:
                kind = COLUMNS[c].kind if c in COLUMNS else "str"
                out[c] += ["" if kind == "str" else math.nan] * n
    return out

