"""The simulation layer (requires torch).

What users call:

* :func:`train` with :class:`TrainConfig`, returning :class:`TrainResult` (per-seed
  t_ICL in iterations, status, and the tidy metrics rows of :data:`METRIC_COLUMNS`);
  ``backend="auto"`` runs the minimal model without MLP at K -> infinity on the exact
  overlap sampler, everything else on the autograd models.

Submodules (imported on demand):

* :mod:`~icl_kinetics.simulate.engine`: the training loop, parallelism, grid batching,
  :func:`~icl_kinetics.simulate.engine.time_steps` for benchmarks.
* :mod:`~icl_kinetics.simulate.config`: :class:`TrainConfig` and :class:`TrainResult`,
  the metrics columns, the memory estimate.
* :mod:`~icl_kinetics.simulate.group`: a seed group's data draws, SGD step, evaluation and
  per-model forward passes.
* :mod:`~icl_kinetics.simulate.checkpoint`: checkpoints (save, verified load, restore).
* :mod:`~icl_kinetics.simulate.overlaps`: the exact K -> infinity overlap sampler of
  the minimal model (the ``"overlaps"`` backend).
* :mod:`~icl_kinetics.simulate.data`: the seeded data generator (every sequence mode)
  and every seed -> stream rule.
* :mod:`~icl_kinetics.simulate.models`: the seed-batched models (the paper's transformer
  with its naive oracle and fast path, the two-layer control, the minimal model, the MLP).
* :mod:`~icl_kinetics.simulate.bench`: the engine benchmark.
* :mod:`~icl_kinetics.simulate.sweeps`: grids of runs.

N counts context tokens only throughout (the paper's code counts the target too).
Time is in iterations; learning rates and weight decays are per iteration.
"""

from .engine import METRIC_COLUMNS, TrainConfig, TrainResult, pack_key, train, train_packed

__all__ = ["METRIC_COLUMNS", "TrainConfig", "TrainResult", "pack_key", "train", "train_packed"]
