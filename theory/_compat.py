"""Deprecated keyword aliases of the theory API, accepted for one release."""

from __future__ import annotations

import functools
import inspect
import warnings

from icl_kinetics.errors import ParameterError


def renamed_keywords(**old_to_new: str):
    """Let a function accept ``old=`` for its parameter ``new`` (for one release).

    ``old=`` is passed on as ``new=`` with a :class:`DeprecationWarning` naming the new
    name; giving both (by keyword, or ``new`` by position) is a ParameterError naming
    ``old``.  The signature shown by :func:`inspect.signature` is the new one.
    """
    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                value = kwargs.pop(old)
                if new in sig.bind_partial(*args, **kwargs).arguments:
                    raise ParameterError(old, value, f"not given together with {new} ({old} is the deprecated "
                                         f"name of {new})")
                warnings.warn(f"{fn.__name__}(): the keyword '{old}' is deprecated and will be removed in the "
                              f"next release; use '{new}'", DeprecationWarning, stacklevel=2)
                kwargs[new] = value
            return fn(*args, **kwargs)

        return wrapper

    return deco
