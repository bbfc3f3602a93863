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


def read_csv_numbers(path, name: str, need=(), one_of=()) -> dict:
    """The numeric columns of a small UTF-8 CSV file: column name -> list of floats.

    Reads the columns of ``need`` (each must be present) and those of ``one_of`` that are
    present (at least one must be).  Raises :class:`~icl_kinetics.errors.ParameterError`
    naming ``name`` (the option that gave the file) for a missing or unreadable file, a
    missing column or a value that is not a number.
    """
    from icl_kinetics.errors import ParameterError

    p = Path(path)
    if not p.is_file():
        raise ParameterError(name, str(path), "an existing CSV file")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ParameterError(name, str(path), f"a text CSV file ({type(e).__name__}: not readable as UTF-8 CSV)") \
            from None
    have = set(rows[0]) if rows else set()
    if not rows or not set(need) <= have or (one_of and not set(one_of) & have):
        wanted = " and ".join(f"'{c}'" for c in need)
        if one_of:
            wanted += (" and " if need else "") + " or ".join(f"'{c}'" for c in one_of)
        raise ParameterError(name, str(path), f"a CSV with columns {wanted} and at least one row")
    keep = [c for c in (*need, *one_of) if c in have]
    try:
        return {c: [float(r[c]) for r in rows] for c in keep}
    except (ValueError, TypeError) as e:
        raise ParameterError(name, str(path), f"numeric columns ({e})") from None
