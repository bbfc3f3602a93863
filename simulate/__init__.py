"""The simulation layer (requires torch).

* :mod:`~icl_kinetics.simulate.data`: the seeded data generator (every sequence mode).
* :mod:`~icl_kinetics.simulate.models`: the seed-batched models (the paper's transformer
  with its naive oracle and fast path, the two-layer control, the minimal model, the MLP).
* :mod:`~icl_kinetics.simulate.engine`: :func:`train` with :class:`TrainConfig`.
* :mod:`~icl_kinetics.simulate.minimal`: a fast exact SGD simulator of the minimal model
  (:func:`run_minimal`), overlaps sampled in distribution.
* :mod:`~icl_kinetics.simulate.bench`: the engine benchmark.

N counts context tokens only throughout (the paper's code counts the target too).
"""

from .engine import METRIC_COLUMNS, TrainConfig, TrainResult, train
from .minimal import MinimalConfig, MinimalResult, run_minimal

__all__ = ["METRIC_COLUMNS", "MinimalConfig", "MinimalResult", "TrainConfig", "TrainResult", "run_minimal",
           "train"]
