"""Parameter checks shared by every layer.

Every public entry point validates its inputs with these helpers, so a bad value
raises :class:`ParameterError` whose message names the parameter, the value given
and what is allowed.  The CLI turns it into a one-line message and exit code 2.

Scalars: :func:`positive_int`, :func:`positive_float`, :func:`finite_float`,
:func:`real_float` (bounds, +-inf optional), :func:`probability`, :func:`one_of`,
:func:`boolean`.  Arrays: :func:`finite_array` (NaN always refused, naming the index of
the first bad element; inf, bounds optional), :func:`int_array`, :func:`broadcast_shape`.
All of them refuse type confusion (``None``, strings, booleans, complex numbers, lists
where a scalar is expected) with the same :class:`ParameterError`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


class ParameterError(ValueError):
    """A parameter value is outside its allowed range.

    The one exception type of the public API: its message names the parameter (or
    file), the value given (summarized to one short line) and what is allowed.
    """

    def __init__(self, name: str, value, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        allowed = " ".join(str(allowed).split())  # the message is one line
        super().__init__(f"{name}={describe(value)} is not allowed: {name} must be {allowed}")


class EnvironmentFailure(RuntimeError):
    """The machine or the installation cannot do what was asked (not bad input, not a bug):
    e.g. worker processes that die at start, a torch too old to read a checkpoint safely.
    The CLI prints its message on one line with exit code 1."""


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM (``kill``, a scheduler's time limit, a shutdown).  The CLI
    raises it from its SIGTERM handler and stops as on Ctrl-C: a sweep's finished runs are
    kept, its workers are stopped, and the same command resumes it; exit code 143."""


def describe(value, limit: int = 80) -> str:
    """A one-line, bounded ``repr`` of a parameter value (arrays are summarized, numpy
    scalars shown as plain numbers; a path, a string naming a file, is shown whole up to
    240 characters)."""
    import os

    if isinstance(value, os.PathLike) or (isinstance(value, str) and os.sep in value):
        limit = max(limit, 240)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray) or (isinstance(value, (list, tuple)) and len(value) > 8):
        a = np.asarray(value, dtype=object).ravel()
        head = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in a[:3])
        text = f"[{head}{', ...' if a.size > 3 else ''}] ({a.size} values)"
    else:
        text = repr(value)
    text = " ".join(text.split())  # one line
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _not_a(value) -> str:
    """``", not str"``-style suffix naming a confused type (empty for a real number)."""
    if isinstance(value, (bool, np.bool_)):
        return ", not a bool"
    if isinstance(value, np.ndarray):
        if value.ndim == 0 and value.dtype.kind in "iuf":
            return ""
        return f", not an array of shape {value.shape}" if value.ndim else f", not {value.dtype}"
    if isinstance(value, numbers.Real):
        return ""
    return f", not {type(value).__name__}"


def _scalar(name: str, value, allowed: str) -> float:
    """``float(value)`` for a real number; a ParameterError for anything else (None, str,
    bytes, bool, complex, a list or an array with ndim > 0, an int too large for a float)."""
    bad = (value is None or isinstance(value, (str, bytes, bool, np.bool_, complex, np.complexfloating,
                                                list, tuple, dict, set))
           or (isinstance(value, np.ndarray) and (value.ndim != 0 or value.dtype.kind not in "iuf")))
    if not bad:
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    raise ParameterError(name, value, allowed + _not_a(value))


def positive_int(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``.

    Integer-valued floats (``3.0``, ``1e9``) are accepted; booleans, strings and
    fractional or non-finite numbers are not.
    """
    allowed = f"an integer >= {minimum}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, np.integer):
        value = int(value)
    if not _is_int(value):
        raise ParameterError(name, value, allowed + _not_a(value))
    if value < minimum:
        raise ParameterError(name, value, allowed)
    return int(value)


def positive_float(name: str, value, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """Return ``value`` as a float, or raise if it is not > 0 (>= 0 with ``allow_zero``)."""
    rng = (">= 0" if allow_zero else "> 0") + ("" if allow_inf else " and finite")
    v = _scalar(name, value, f"a number {rng}")
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf) or (v < 0 if allow_zero else v <= 0)
    if bad:
        raise ParameterError(name, value, f"a number {rng}")
    return v


def _bounds_text(minimum, maximum, exclusive_minimum, exclusive_maximum) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if exclusive_maximum else '<='} {maximum:g}")
    return " and ".join(parts)


def _out_of_bounds(a, minimum, maximum, exclusive_minimum, exclusive_maximum):
    """Boolean mask (or bool for scalars) of values outside the bounds."""
    bad = np.zeros(np.shape(a), bool)
    if minimum is not None:
        bad = bad | ((a <= minimum) if exclusive_minimum else (a < minimum))
    if maximum is not None:
        bad = bad | ((a >= maximum) if exclusive_maximum else (a > maximum))
    return bad


def real_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
               exclusive_minimum: bool = False, exclusive_maximum: bool = False,
               allow_inf: bool = False, allowed: str | None = None) -> float:
    """Return ``value`` as a float within the bounds; NaN is always refused, +-inf unless
    ``allow_inf`` (and then still subject to the bounds).  ``allowed`` overrides the
    generated description of what is allowed."""
    b = _bounds_text(minimum, maximum, exclusive_minimum, exclusive_maximum)
    b = f" {b}" if b else ""
    text = allowed or (f"a number{b} (inf allowed)" if allow_inf else f"a finite number{b}")
    v = _scalar(name, value, text)
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or \
            _out_of_bounds(v, minimum, maximum, exclusive_minimum, exclusive_maximum):
        raise ParameterError(name, value, text)
    return v


def finite_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """Return ``value`` as a finite float (optionally within ``[minimum, maximum]``), or raise."""
    return real_float(name, value, minimum=minimum, maximum=maximum)


def probability(name: str, value, *, open_interval: bool = True) -> float:
    """Return ``value`` as a float in (0, 1) (or [0, 1] with ``open_interval=False``)."""
    allowed = "in (0, 1)" if open_interval else "in [0, 1]"
    v = _scalar(name, value, "a number " + allowed)
    ok = math.isfinite(v) and (0.0 < v < 1.0 if open_interval else 0.0 <= v <= 1.0)
    if not ok:
        raise ParameterError(name, value, "a finite number" if not math.isfinite(v) else allowed)
    return v


def one_of(name: str, value, allowed) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise."""
    try:
        ok = isinstance(value, str) and value in allowed
    except TypeError:  # pragma: no cover - allowed is always a tuple of str here
        ok = False
    if not ok:
        raise ParameterError(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def boolean(name: str, value) -> bool:
    """Return ``value`` if it is a bool (``True``/``False``, numpy's included), else raise."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(name, value, "True or False" + _not_a(value))
    return bool(value)


# ----------------------------------------------------------------------------- arrays
def index_text(name: str, flat_index: int, shape) -> str:
    """``"beta0[3]"`` (``"beta0[1, 2]"`` for 2-D, ``"beta0"`` for a scalar) for element
    ``flat_index`` of an array of ``shape``."""
    if len(shape) == 0:
        return name
    idx = np.unravel_index(int(flat_index), shape)
    return f"{name}[{', '.join(str(int(i)) for i in idx)}]"


def first_bad(name: str, a, mask, fmt: str = "{}") -> str:
    """``"beta0[3] = -800.0"``: the first element of ``a`` where ``mask`` is True, formatted
    into ``fmt``; empty for a scalar (its value is already in the message)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return ""
    mask = np.broadcast_to(mask, a.shape)
    i = int(np.flatnonzero(mask)[0])
    return fmt.format(f"{index_text(name, i, a.shape)} = {describe(a.ravel()[i], 40)}")


def _first_bool(seq, prefix=()):
    """Index of the first bool inside nested lists/tuples (numpy would silently make it 0/1)."""
    for i, v in enumerate(seq):
        if isinstance(v, (bool, np.bool_)):
            return prefix + (i,)
        if isinstance(v, (list, tuple)):
            hit = _first_bool(v, prefix + (i,))
            if hit is not None:
                return hit
    return None


def _as_numeric_array(name: str, value, allowed: str) -> np.ndarray:
    """``np.asarray(value, float)`` for real array-likes; a ParameterError naming ``name``
    for None, strings, booleans, complex numbers, ragged or non-numeric sequences."""
    if value is None or isinstance(value, (str, bytes, bool, np.bool_, dict, set)):
        raise ParameterError(name, value, allowed + _not_a(value))
    try:
        raw = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError, OverflowError):  # ragged lists and the like
        raise ParameterError(name, value, allowed + " (a rectangular array of numbers)") from None
    kind = raw.dtype.kind
    hit = _first_bool(value) if isinstance(value, (list, tuple)) and kind != "b" else None
    if hit is not None:
        raise ParameterError(name, value, f"{allowed}, but {name}[{', '.join(map(str, hit))}] is a bool")
    if kind == "b" or kind in "cUSVMm":
        what = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes"}.get(kind, str(raw.dtype))
        raise ParameterError(name, value, f"{allowed}, not {what}")
    if kind == "O":
        for i, v in enumerate(raw.ravel()):
            if v is None or isinstance(v, (str, bytes, bool, np.bool_, complex)) or not isinstance(
                    v, (numbers.Real, np.ndarray)):
                raise ParameterError(name, value, f"{allowed}, but {index_text(name, i, raw.shape)} = {v!r}")
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError) as e:
        raise ParameterError(name, value, f"{allowed} ({type(e).__name__}: {e})") from None


def finite_array(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False, exclusive_maximum: bool = False,
                 allow_inf: bool = False, allow_empty: bool = True, max_ndim: int | None = None,
                 allowed: str | None = None) -> np.ndarray:
    """Return ``np.asarray(value, float)`` (the same object for a float64 array), or raise.

    A scalar or any array-like of real numbers.  NaN is always refused, +-inf unless
    ``allow_inf`` (bounds still apply); the message names the first bad element
    (``beta0[3] = nan``).  ``max_ndim`` limits the dimensions, ``allow_empty=False``
    refuses an empty array.  ``allowed`` overrides the generated description.
    """
    b = _bounds_text(minimum, maximum, exclusive_minimum, exclusive_maximum)
    b = f" {b}" if b else ""
    one = f"a number{b} (inf allowed)" if allow_inf else f"a finite number{b}"
    many = f"numbers{b} (inf allowed)" if allow_inf else f"finite numbers{b}"
    a = _as_numeric_array(name, value, allowed or f"{one} or an array of them")
    text = allowed or (many if a.ndim else one)
    if max_ndim is not None and a.ndim > max_ndim:
        raise ParameterError(name, value, f"{text}, at most {max_ndim}-D (got shape {a.shape})")
    if not allow_empty and a.size == 0:
        raise ParameterError(name, value, f"{text}, at least one value")
    finite = np.isfinite(a)
    if not finite.all():
        bad = np.isnan(a) if allow_inf else ~finite
        if bad.any():
            raise ParameterError(name, value, text + first_bad(name, a, bad, " ({})"))
    if minimum is not None or maximum is not None:
        out = _out_of_bounds(a, minimum, maximum, exclusive_minimum, exclusive_maximum)
        if np.any(out):
            raise ParameterError(name, value, text + first_bad(name, a, out, " ({})"))
    return a


def int_array(name: str, value, minimum: int = 1) -> np.ndarray:
    """Check that ``value`` is an integer (or an array-like of integers) >= ``minimum``,
    each representable as a float; integer-valued floats are accepted.  Returns
    ``np.asarray(value)`` unchanged."""
    allowed = f"integers >= {minimum}"
    big = " and below ~1.8e308 (the float range)"
    if value is None or isinstance(value, (str, bytes, bool, np.bool_, dict, set)):
        raise ParameterError(name, value, allowed + _not_a(value))
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(name, value, allowed + " (a rectangular array of numbers)") from None
    hit = _first_bool(value) if isinstance(value, (list, tuple)) and raw.dtype.kind != "b" else None
    if hit is not None:
        raise ParameterError(name, value, f"{allowed}, but {name}[{', '.join(map(str, hit))}] is a bool")
    if raw.dtype.kind in "iu":
        bad = raw < minimum
    elif raw.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(raw) | (raw != np.floor(raw)) | (raw < minimum)
    elif raw.dtype.kind == "O":
        bad = np.zeros(raw.shape, bool)
        for i, v in enumerate(raw.ravel()):
            try:
                positive_int(name, v, minimum)
                bad.flat[i] = not math.isfinite(float(v))  # an int too large for a float
            except (ParameterError, OverflowError):
                bad.flat[i] = True
    else:
        what = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes"}.get(raw.dtype.kind,
                                                                                        str(raw.dtype))
        raise ParameterError(name, value, f"{allowed}, not {what}")
    if np.any(bad):
        text = (allowed if raw.ndim else f"an integer >= {minimum}") + (big if raw.dtype.kind == "O" else "")
        raise ParameterError(name, value, text + first_bad(name, raw, bad, " ({})"))
    return raw


def broadcast_shape(**arrays) -> tuple:
    """The broadcast shape of named arrays, or a ParameterError naming the first array
    whose shape does not broadcast with the ones before it."""
    shape = ()
    seen = []
    for n, a in arrays.items():
        try:
            shape = np.broadcast_shapes(shape, np.shape(a))
        except ValueError:
            others = ", ".join(f"{m} {np.shape(b)}" for m, b in seen)
            raise ParameterError(n, a, f"an array whose shape {np.shape(a)} broadcasts with {others}") from None
        seen.append((n, a))
    return shape
