"""Parameter checks shared by every layer.

Every public entry point validates its inputs with these helpers, so a bad value
raises :class:`ParameterError` whose message names the parameter, the value given
and what is allowed.  The CLI turns it into a one-line message and exit code 2.
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
        super().__init__(f"{name}={describe(value)} is not allowed: {name} must be {allowed}")


def describe(value, limit: int = 80) -> str:
    """A one-line, bounded ``repr`` of a parameter value (arrays are summarized)."""
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


def positive_int(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, np.integer):
        value = int(value)
    if not _is_int(value) or value < minimum:
        raise ParameterError(name, value, f"an integer >= {minimum}")
    return int(value)


def positive_float(name: str, value, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """Return ``value`` as a float, or raise if it is not > 0 (>= 0 with ``allow_zero``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(name, value, "a number > 0") from None
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf) or (v < 0 if allow_zero else v <= 0)
    if bad:
        rng = ">= 0" if allow_zero else "> 0"
        rng += "" if allow_inf else " and finite"
        raise ParameterError(name, value, f"a number {rng}")
    return v


def finite_float(name: str, value) -> float:
    """Return ``value`` as a finite float, or raise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(name, value, "a finite number") from None
    if not math.isfinite(v):
        raise ParameterError(name, value, "a finite number")
    return v


def probability(name: str, value, *, open_interval: bool = True) -> float:
    """Return ``value`` as a float in (0, 1) (or [0, 1] with ``open_interval=False``)."""
    v = finite_float(name, value)
    ok = 0.0 < v < 1.0 if open_interval else 0.0 <= v <= 1.0
    if not ok:
        raise ParameterError(name, value, "in (0, 1)" if open_interval else "in [0, 1]")
    return v


def one_of(name: str, value, allowed) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise."""
    if value not in allowed:
        raise ParameterError(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value
