"""Atomic file writes: write to a temporary file in the same folder, then rename.

An interrupted run therefore never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path


def atomic_write_text(path, text: str) -> str:
    """Write ``text`` to ``path`` atomically; returns the path as a string."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return str(p)


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
