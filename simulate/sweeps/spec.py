"""Sweep specifications: a named grid of training runs, grouped into seed batches.

A *run* is one :class:`~icl_kinetics.simulate.engine.TrainConfig`: one point of the
grid and one batch of seeds (``seeds`` seeds starting at ``seed_offset``), trained in
one process by the engine.  A run is identified by a hash of its configuration
(:func:`run_id`), so re-running a sweep finds its finished runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from icl_kinetics.errors import ParameterError, positive_int
from icl_kinetics.simulate.config import TrainConfig

#: TrainConfig fields that do not change a run's numbers on CPU (how it is executed)
EXECUTION_FIELDS = ("workers", "checkpoint_every")
#: TrainConfig fields copied into the collected table (the grid parameters)
GRID_COLUMNS = ("model", "N", "K", "D", "width", "labels", "contexts", "zipf_alpha", "beta0", "lr",
                "batch_size", "wd_attn", "wd_mlp", "iterations", "eval_every", "eval_size", "early_stop")


def run_id(cfg: TrainConfig) -> str:
    """16-hex-digit hash of everything in ``cfg`` that determines the run's numbers.

    Fields added to TrainConfig later (``w0``, ``log_every``, ``backend``) count only when
    they differ from their defaults (:meth:`TrainConfig.identity`), so a run that does not
    use them keeps the id it had before they existed."""
    d = cfg.identity(exclude=EXECUTION_FIELDS)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its configuration and the grid point it belongs to."""

    config: TrainConfig
    point: dict = field(default_factory=dict)  # the grid coordinates (e.g. {"K": 500, "N": 99})

    @property
    def id(self) -> str:
        return run_id(self.config)

    @property
    def seed_iterations(self) -> int:
        return self.config.seeds * self.config.iterations

    def to_dict(self) -> dict:
        return {"run_id": self.id, "point": self.point, "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(TrainConfig.from_dict(d["config"]), dict(d.get("point", {})))


@dataclass(frozen=True)
class SweepSpec:
    """A named sweep: its runs, and what it reproduces."""

    name: str
    scale: str
    runs: tuple
    description: str = ""
    paper: str = ""  # the paper's figure or experiment
    #: the spec file it was built from, resolved for its scale (``specfile.load_spec``), or None
    #: (a preset by name, a grid built in Python); recorded in sweep.json as ``spec``
    source: dict | None = field(default=None, compare=False)

    def __post_init__(self):
        ids = [r.id for r in self.runs]
        if len(set(ids)) != len(ids):
            raise ParameterError("runs", f"{len(ids) - len(set(ids))} duplicate(s)", "runs with distinct configs")

    @property
    def seed_iterations(self) -> int:
        return sum(r.seed_iterations for r in self.runs)

    @property
    def seeds(self) -> int:
        return sum(r.config.seeds for r in self.runs)

    def to_dict(self) -> dict:
        d = {"name": self.name, "scale": self.scale, "description": self.description, "paper": self.paper,
             "runs": [r.to_dict() for r in self.runs]}
        if self.source is not None:
            d["spec"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        return cls(d["name"], d["scale"], tuple(RunSpec.from_dict(r) for r in d["runs"]),
                   d.get("description", ""), d.get("paper", ""), d.get("spec"))


def grid(name: str, scale: str, base: TrainConfig, axes: dict | None = None, seeds: int = 8,
         seeds_per_run: int = 8, description: str = "", paper: str = "") -> SweepSpec:
    """The Cartesian product of ``axes`` (field -> list of values) over ``base``, each point
    trained with ``seeds`` seeds split into runs of at most ``seeds_per_run`` seeds.

    An axis may also be a list of dicts (several fields that move together, e.g.
    ``[{"K": 500, "iterations": 1000}, ...]``).
    """
    seeds = positive_int("seeds", seeds)
    seeds_per_run = positive_int("seeds_per_run", seeds_per_run)
    points = [{}]
    for key, values in (axes or {}).items():
        new = []
        for p in points:
            for v in values:
                new.append({**p, **(v if isinstance(v, dict) else {key: v})})
        points = new
    runs = []
    for p in points:
        cfg = replace(base, **p)
        for off in range(0, seeds, seeds_per_run):
            c = replace(cfg, seeds=min(seeds_per_run, seeds - off), seed_offset=off)
            c.validate()
            runs.append(RunSpec(c, dict(p)))
    return SweepSpec(name, scale, tuple(runs), description, paper)
