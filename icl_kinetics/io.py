"""Atomic file writes and up-front output-path checks.

Every file is written to a temporary file in the same folder, then renamed: an
interrupted run never leaves a half-written file behind, and a failed write removes
its temporary file.  :func:`check_output_dir` and :func:`check_output_file` let a
command refuse an output path that cannot be written *before* any computation starts.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path


def atomic_write_text(path, text: str) -> str:
    """Write ``text`` to ``path`` atomically; returns the path as a string."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); returns the path.

    A failure at any step removes the temporary file and re-raises.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return str(p)


def _unlink_quietly(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


#: figure formats matplotlib's Agg backend writes (``--plot`` must end in one of them)
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


def _probe_dir(name: str, value, d: Path, what: str = "a writable folder path") -> None:
    """Raise ParameterError naming ``name`` unless folder ``d`` exists and can be written, or
    can be created (its first existing ancestor is a writable folder).  Creates nothing
    that stays: a probe file is written and removed."""
    from icl_kinetics.errors import ParameterError

    d = Path(os.path.abspath(d))
    e = d
    while not e.exists() and e != e.parent:
        e = e.parent
    if not e.is_dir():
        raise ParameterError(name, str(value), f"{what} ({e} exists and is not a folder)")
    probe = e / f".icl-kinetics-probe{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"")
    except OSError as err:
        where = "write in" if e == d else f"create {d} under"
        raise ParameterError(name, str(value), f"{what} (cannot {where} {e}: "
                             f"{err.strerror or type(err).__name__})") from None
    finally:
        _unlink_quietly(probe)


def check_output_dir(name: str, path) -> str:
    """Make sure folder ``path`` can be written: it is a folder, or can be created.

    Raises :class:`~icl_kinetics.errors.ParameterError` naming ``name`` (the option or
    argument) when it is a file, cannot be created or is not writable.  Call it before
    any computation, so a bad ``--out`` fails in a second, not after the work.
    """
    from icl_kinetics.errors import ParameterError

    if path is None or str(path).strip() == "":
        raise ParameterError(name, path, "a folder path")
    _probe_dir(name, path, Path(path))
    return str(path)


def check_output_file(name: str, path, suffixes=None) -> str:
    """Make sure file ``path`` can be written: its folder can be made and written, it is
    not an existing folder, and (with ``suffixes``) it ends in one of them.

    Raises :class:`~icl_kinetics.errors.ParameterError` naming ``name``.  Nothing is
    created.
    """
    from icl_kinetics.errors import ParameterError

    if path is None or str(path).strip() == "":
        raise ParameterError(name, path, "a file path")
    p = Path(path)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise ParameterError(name, str(path), "a file name ending in one of " + ", ".join(suffixes))
    if p.is_dir():
        raise ParameterError(name, str(path), "a file path (it is an existing folder)")
    _probe_dir(name, path, p.parent if str(p.parent) else Path("."), "a file path in a writable folder")
    if p.exists() and not os.access(p, os.W_OK):
        raise ParameterError(name, str(path), "a writable file (permission denied)")
    return str(path)


def clean(obj):
    """Recursively convert numpy scalars/arrays to Python and NaN/inf to None (valid JSON)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def dumps(obj) -> str:
    """Strict JSON text of ``obj`` (NaN and inf become null)."""
    return json.dumps(clean(obj), indent=2, default=_default, allow_nan=False)


def write_json(path, obj) -> str:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, dumps(obj) + "\n")


def write_csv(path, rows: list[dict]) -> str:
    """Write a tidy table (list of row dicts with the same keys) as CSV, atomically."""
    buf = io.StringIO()
    keys = list(rows[0].keys()) if rows else []
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return atomic_write_text(path, buf.getvalue())


def _default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_csv_numbers(path, name: str, need=(), one_of=(), optional=(), text=()) -> dict:
    """The columns of a small UTF-8 CSV file (``.csv``, or ``.csv.gz`` read as gzip-compressed):
    column name -> list, one value per row.

    Reads the numeric columns of ``need`` (each must be present), those of ``one_of`` that are
    present (at least one must be) and those of ``optional`` that are present, as floats (an
    empty cell is NaN), and the columns of ``text`` that are present as text.  Blank lines
    are skipped.  Raises :class:`~icl_kinetics.errors.ParameterError` naming ``name`` (the
    option that gave the file) and the path for a missing or unreadable file (not UTF-8, not
    gzip data, a damaged archive), a missing column, a row whose number of fields is not the
    header's (with its line) or a value that is not a number (with its line and column).
    """
    import gzip
    import zlib

    from icl_kinetics.errors import ParameterError

    p = Path(path)
    if not p.is_file():
        raise ParameterError(name, str(path), "an existing CSV file (.csv or .csv.gz)")
    opener = gzip.open if p.name.endswith(".gz") else open
    try:
        with opener(p, "rt", newline="", encoding="utf-8") as f:
            lines = [(i, r) for i, r in enumerate(csv.reader(f, strict=True), 1) if any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise ParameterError(name, str(path), "a text CSV file (not readable as UTF-8 CSV; a gzip-compressed "
                             "one must be named .gz)") from None
    except (OSError, EOFError, zlib.error, csv.Error) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ParameterError(name, str(path), f"a readable CSV file ({type(e).__name__}: {why})") from None
    header = [h.strip() for h in lines[0][1]] if lines else []
    rows = lines[1:]
    have = set(header)
    if not rows or not set(need) <= have or (one_of and not set(one_of) & have):
        wanted = " and ".join(f"'{c}'" for c in need)
        if one_of:
            wanted += (" and " if need else "") + " or ".join(f"'{c}'" for c in one_of)
        raise ParameterError(name, str(path), f"a CSV with columns {wanted} and at least one row")
    for line, r in rows:
        if len(r) != len(header):
            raise ParameterError(name, str(path), f"a well-formed CSV (line {line} has {len(r)} fields, the "
                                 f"header {len(header)})")
    out = {}
    for c in dict.fromkeys((*need, *one_of, *optional)):
        if c not in have:
            continue
        j, vals = header.index(c), []
        for line, r in rows:
            v = r[j].strip()
            try:
                vals.append(float(v) if v else math.nan)
            except ValueError:
                raise ParameterError(name, str(path), f"numbers in column '{c}' (line {line} has "
                                     f"{v[:40]!r})") from None
        out[c] = vals
    for c in text:
        if c in have:
            j = header.index(c)
            out[c] = [r[j] for _, r in rows]
    return out
