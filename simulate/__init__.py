"""Simulations of the minimal model (SGD, many seeds at once). Requires torch."""

from .minimal import MinimalConfig, MinimalResult, run_minimal

__all__ = ["MinimalConfig", "MinimalResult", "run_minimal"]
