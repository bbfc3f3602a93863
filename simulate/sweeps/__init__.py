"""Sweeps: every paper experiment as a named, resumable grid of training runs.

* :mod:`.spec`: :class:`SweepSpec`, :class:`RunSpec`, :func:`grid`, :func:`run_id`.
* :mod:`.specfile`: :func:`load_spec`: a sweep declared in a TOML spec file (a grid over
  any TrainConfig field; docs/sweeps.md, "Spec files").
* :mod:`.presets`: the named presets (``fig2bc`` ... ``figA8``) at two scales: the spec
  files in ``preset_specs/``.
* :mod:`.store`: :class:`SweepStore`, the results folder (atomic writes, status, collect).
* :mod:`.executors`: :func:`run_sweep` with the local process pool or submitit (SLURM);
  :func:`run_local_many`: several sweeps' runs in one pool, longest first;
  :func:`plan_packs` / :func:`execute_pack`: compatible runs trained as one seed-batched
  pack (grid batching, docs/engine.md).
"""

from .executors import (EXECUTORS, execute_pack, execute_run, plan_packs, run_local, run_local_many, run_submitit,
                        run_sweep)
from .spec import GRID_COLUMNS, RunSpec, SweepSpec, grid, run_id
from .specfile import load_spec
from .store import COLLECT_COLUMNS, SweepStore

__all__ = ["COLLECT_COLUMNS", "EXECUTORS", "GRID_COLUMNS", "RunSpec", "SweepSpec", "SweepStore", "execute_pack",
           "execute_run", "grid", "load_spec", "plan_packs", "run_id", "run_local", "run_local_many", "run_submitit",
           "run_sweep"]
