"""Sweep spec files: a grid over any :class:`~icl_kinetics.simulate.engine.TrainConfig`
field, declared in TOML (or JSON with the same keys), and the presets written the same way.

A spec file (format and a complete example: docs/sweeps.md, "Spec files")::

    name = "lr_scan"                 # the sweep's name: the collected table's `sweep` column
    description = "..."              # optional; `paper` too (the figure it reproduces)
    seeds = 8                        # seeds per grid point
    seeds_per_run = 4                # seeds trained together in one run (default: all of them)

    [fixed]                          # TrainConfig fields held fixed (others: TrainConfig's defaults)
    model = "transformer"
    K = inf                          # K = inf (or "inf"): fresh items; "none" is None elsewhere

    [grid]                           # axes: every combination, in the order written
    lr = [0.02, 0.05]
    N_K = [{ N = 9, K = 256 }, { N = 19, K = 512 }]   # an axis of tables: fields that move together

    [execution]                      # how, never what: executor, processes, slurm_* (CLI flags win)
    processes = 2

    [scale.paper]                    # optional scales: their fixed updates [fixed], their grid,
    seeds = 16                       # seeds, seeds_per_run and execution replace the top level's

Every key is checked against TrainConfig's fields (a typo is a :class:`ParameterError`
naming the key, the file and the allowed names, with the nearest one); every run's values
are checked by :meth:`TrainConfig.validate`, and its error names the file and table.  An
integer given to a float field (``lr = 1``) is that float, so it has the run id of ``1.0``.

The spec as resolved for one scale is recorded in the sweep folder's ``sweep.json`` (key
``spec``, with the file's text), so ``sweep status``, ``collect`` and ``resume`` need only
the folder.  Python 3.10 reads TOML with the ``tomli`` package; JSON needs nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import fields, replace
from pathlib import Path

from icl_kinetics.errors import EnvironmentFailure, ParameterError, positive_int
from icl_kinetics.simulate.config import TrainConfig
from icl_kinetics.simulate.sweeps.spec import SweepSpec, grid

#: keys of a spec's top level, and of one of its ``[scale.NAME]`` tables
TOP_KEYS = ("name", "description", "paper", "seeds", "seeds_per_run", "fixed", "grid", "execution", "scale")
SCALE_KEYS = ("seeds", "seeds_per_run", "fixed", "grid", "execution")
#: keys of ``[execution]``: how the runs are executed (never part of a run's id)
EXECUTION_KEYS = ("executor", "processes", "slurm_partition", "slurm_time", "slurm_gpus")
#: TrainConfig fields set by the seed batching (``seeds``, ``seeds_per_run``), never in [fixed] or [grid]
BATCH_FIELDS = ("seeds", "seed_offset")
#: the scale of a spec that declares no ``[scale.NAME]`` table
DEFAULT_SCALE = "custom"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _field_types() -> dict:
    return {f.name: str(f.type) for f in fields(TrainConfig)}


FIELDS = tuple(f for f in _field_types() if f not in BATCH_FIELDS)


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise EnvironmentFailure("reading a TOML sweep spec needs Python >= 3.11 or the tomli package "
                                     "('pip install tomli'); a .json spec with the same keys needs neither") from None
    return tomllib


def read_spec_file(path) -> tuple[dict, str]:
    """The raw spec (a dict) in the ``.toml`` or ``.json`` file ``path``, and its text.

    Raises:
        ParameterError: (``spec``) the file is missing, unreadable, not TOML/JSON, or not a table.
        EnvironmentFailure: a TOML file on Python 3.10 without ``tomli``.
    """
    p = Path(path)
    if p.suffix not in (".toml", ".json"):
        raise ParameterError("spec", str(path), "a .toml file (or .json with the same keys)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or type(e).__name__
        raise ParameterError("spec", str(path), f"an existing, readable spec file ({why})") from None
    try:
        raw = json.loads(text) if p.suffix == ".json" else _toml().loads(text)
    except ValueError as e:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ParameterError("spec", str(path), f"a valid {p.suffix[1:].upper()} file ({first})") from None
    if not isinstance(raw, dict):
        raise ParameterError("spec", str(path), "a table of keys (name, seeds, fixed, grid, ...)")
    return raw, text


def _unknown(key, where: str, allowed) -> ParameterError:
    near = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ParameterError("key", key, f"one of the keys allowed in {where}{hint}: {', '.join(allowed)}")


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ParameterError(where, value, "a table (TOML [section] or inline { ... })")
    return value


def _value(key: str, v, where: str):
    """A spec value as TrainConfig takes it: K = inf/'inf' -> None, 'none' -> None for fields
    that allow None, an integer given to a float field -> that float."""
    types = _field_types()
    t = types[key]
    if key == "K" and (v == "inf" or (isinstance(v, float) and math.isinf(v) and v > 0)):
        return None
    if isinstance(v, str) and v.lower() == "none":
        if "None" not in t:
            raise ParameterError(key, v, f"a value, not None ({where}: {key} has no 'none')")
        return None
    if t.startswith("float") and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def _check_field(key, where: str):
    if key in BATCH_FIELDS:
        raise ParameterError("key", key, f"not in {where}: the spec's top-level seeds and seeds_per_run "
                             "set each run's seeds and seed_offset")
    if key not in FIELDS:
        raise _unknown(key, where, FIELDS)


def _fixed(table, where: str) -> dict:
    out = {}
    for k, v in _table(table, where).items():
        _check_field(k, where)
        out[k] = _value(k, v, where)
    return out


def _grid(table, where: str) -> dict:
    """Axes: field -> non-empty list of values, or any name -> non-empty list of tables of fields."""
    out, seen = {}, {}
    for axis, values in _table(table, where).items():
        if not isinstance(values, list) or not values:
            raise ParameterError(f"{where} {axis}", values, "a non-empty list of values (or of tables of fields)")
        tables = [isinstance(v, dict) for v in values]
        if any(tables) and not all(tables):
            raise ParameterError(f"{where} {axis}", values, "a list of values, or a list of tables, not both")
        if all(tables):
            keys = list(values[0])
            for k in keys:
                _check_field(k, where)
            vals = []
            for v in values:
                if list(v) != keys:
                    raise ParameterError(f"{where} {axis}", v, f"a table with the keys of the axis' first table: "
                                         f"{', '.join(keys)}")
                vals.append({k: _value(k, x, where) for k, x in v.items()})
            fs = keys
        else:
            _check_field(axis, where)
            vals, fs = [_value(axis, v, where) for v in values], [axis]
        for f in fs:
            if f in seen:
                raise ParameterError(f"{where} {axis}", f, f"a field on one axis only (it is on axis {seen[f]!r} too)")
            seen[f] = axis
        out[axis] = vals
    return out


def _execution(table, where: str) -> dict:
    from icl_kinetics.errors import one_of

    t = _table(table, where)
    for k, v in t.items():
        if k not in EXECUTION_KEYS:
            raise _unknown(k, where, EXECUTION_KEYS)
        try:
            if k == "executor":
                one_of(k, v, ("local", "slurm"))
            elif k == "slurm_partition":
                if not isinstance(v, str):
                    raise ParameterError(k, v, "a SLURM partition name (text)")
            else:
                positive_int(k, v, 0 if k == "slurm_gpus" else 1)
        except ParameterError as e:
            raise ParameterError(e.name, e.value, f"{e.allowed} (in {where})") from None
    return dict(t)


def _name(key: str, v, where: str) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise ParameterError(key, v, f"a name of letters, digits, '_', '.' and '-' (at most 64; {where})")
    return v


def scales_of(raw: dict) -> list:
    """The scales a raw spec declares (``[scale.NAME]`` tables), or ``["custom"]``."""
    return list(raw.get("scale") or {}) or [DEFAULT_SCALE]


def resolve(raw: dict, scale: str | None = None, where: str = "the spec") -> dict:
    """The spec for one scale, checked and normalized: name, description, paper, scale, scales,
    fixed, grid, seeds, seeds_per_run, execution.  ``scale`` None: the first declared.

    Raises:
        ParameterError: an unknown key (named, with the file and the allowed keys), a missing
            name or seeds, an empty axis, a field on two axes or both fixed and on an axis.
    """
    for k in raw:
        if k not in TOP_KEYS:
            raise _unknown(k, f"the top level of {where}", TOP_KEYS)
    if "name" not in raw:
        raise ParameterError("name", None, f"the sweep's name (name = \"...\" at the top of {where})")
    name = _name("name", raw["name"], where)
    scales = _table(raw.get("scale", {}), f"[scale] of {where}")
    for s in scales:
        _name("scale", s, where)
    declared = list(scales) or [DEFAULT_SCALE]
    if scale is None:
        scale = declared[0]
    if scale not in declared:
        raise ParameterError("scale", scale, f"one of the scales {where} declares: {', '.join(declared)}")
    sc = _table(scales.get(scale, {}), f"[scale.{scale}] of {where}")
    for k in sc:
        if k not in SCALE_KEYS:
            raise _unknown(k, f"[scale.{scale}] of {where}", SCALE_KEYS)
    pre = f"[scale.{scale}." if scales else "["
    fixed = _fixed(raw.get("fixed", {}), f"[fixed] of {where}")
    fixed.update(_fixed(sc.get("fixed", {}), f"{pre}fixed] of {where}"))
    gtab, gwhere = (sc["grid"], f"{pre}grid]") if "grid" in sc else (raw.get("grid", {}), "[grid]")
    axes = _grid(gtab, f"{gwhere} of {where}")
    on_axes = {f for v in axes.values() for f in (v[0] if isinstance(v[0], dict) else {})} | set(axes)
    both = sorted(on_axes & set(fixed))
    if both:
        raise ParameterError("key", both[0], f"either fixed or on an axis of {gwhere}, not both ({where})")
    seeds = sc.get("seeds", raw.get("seeds"))
    if seeds is None:
        raise ParameterError("seeds", None, f"the seeds per grid point (seeds = ... in {where})")
    try:
        seeds = positive_int("seeds", seeds)
        per = positive_int("seeds_per_run", sc.get("seeds_per_run", raw.get("seeds_per_run", seeds)))
    except ParameterError as e:
        raise ParameterError(e.name, e.value, f"{e.allowed} (in {where})") from None
    execution = _execution(raw.get("execution", {}), f"[execution] of {where}")
    execution.update(_execution(sc.get("execution", {}), f"{pre}execution] of {where}"))
    text = {}
    for k in ("description", "paper"):
        v = raw.get(k, "")
        if not isinstance(v, str):
            raise ParameterError(k, v, f"text ({where})")
        text[k] = v
    return {"name": name, **text, "scale": scale, "scales": declared, "fixed": fixed, "grid": axes,
            "seeds": seeds, "seeds_per_run": per, "execution": execution}


def build(resolved: dict, where: str = "the spec", device: str | None = None, record: dict | None = None) -> SweepSpec:
    """The :class:`SweepSpec` of a resolved spec (:func:`resolve`), its runs checked by
    :meth:`TrainConfig.validate` on the CPU and then moved to ``device`` (None: the spec's
    ``device``, else cpu).  ``record`` (JSON-able) is kept in the sweep folder as its spec.

    Raises:
        ParameterError: a value TrainConfig refuses, naming the field, the value and the file.
    """
    fixed = dict(resolved["fixed"])
    dev = device or fixed.pop("device", None) or "cpu"
    fixed.pop("device", None)
    try:
        spec = grid(resolved["name"], resolved["scale"], TrainConfig(**fixed), resolved["grid"],
                    seeds=resolved["seeds"], seeds_per_run=resolved["seeds_per_run"])
    except ParameterError as e:
        raise ParameterError(e.name, e.value, f"{e.allowed} (in {where})") from None
    runs = spec.runs
    if dev != "cpu":
        from icl_kinetics.errors import one_of

        one_of("device", dev, ("cpu", "cuda"))
        runs = tuple(type(r)(replace(r.config, device=dev), r.point) for r in runs)
    return SweepSpec(spec.name, spec.scale, runs, resolved["description"], resolved["paper"], source=record)


def load_spec(path, scale: str | None = None, device: str | None = None, record: bool = True) -> SweepSpec:
    """The sweep declared by the spec file ``path`` at ``scale`` (None: its first), on ``device``.

    Arguments:
        path: a ``.toml`` (or ``.json``) spec file (module docstring; docs/sweeps.md).
        scale: one of the ``[scale.NAME]`` tables it declares (``"custom"`` if it declares none).
        device: ``"cpu"`` or ``"cuda"``; None: the spec's ``device`` field, else cpu.
        record: keep the resolved spec and the file's text in the sweep (``SweepSpec.source``),
            which ``sweep.json`` records.
    Returns:
        a :class:`SweepSpec` (its runs in grid order, seed batches innermost).
    Raises:
        ParameterError: a bad file, key or value, naming it and the file.
    """
    raw, text = read_spec_file(path)
    where = str(path)
    res = resolve(raw, scale, where)
    rec = None
    if record:
        rec = {**json.loads(json.dumps(res)), "file": str(path),
               "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "text": text}
    return build(res, where, device, rec)


def execution_of(spec: SweepSpec) -> dict:
    """The ``[execution]`` settings a sweep's recorded spec declares ({} for presets)."""
    return dict((spec.source or {}).get("execution") or {})
