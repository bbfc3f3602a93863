"""The typed core of the validation layer: :class:`Verdict` (one prediction checked on one
rung), :class:`SeedSummary` (one (run, seed) of a tidy table) and :func:`i_k`, the
integrated residual error of a seed's rows.

A tidy table is a dict of columns (name -> list), one row per (run, seed, evaluation), as
:func:`icl_kinetics.validate.schema.read_table` and ``sweep collect`` make it.  Nothing
here trains a model or imports torch.

Per seed (:func:`seed_summaries`):

* ``t_icl``: the first evaluated iteration at which ICL accuracy exceeds
  :data:`icl_kinetics.theory.T_ICL_THRESHOLD` (0.95); ``None`` for a seed that never gets
  there, which is *censored* at ``cap``, its last evaluated iteration (never counted as
  acquiring at the cap);
* ``final_icl_acc``: ICL accuracy at the seed's last evaluation (early-stopped seeds end
  above 0.99).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from icl_kinetics.theory import T_ICL_THRESHOLD

#: the columns that, with ``seed``, name one (run, seed) of a tidy table
GRID = ("run_id", "model", "N", "K", "contexts", "wd_attn", "lr")
#: the verdicts a check can reach
VERDICTS = ("holds", "does not hold", "inconclusive", "skipped")

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


@dataclass(kw_only=True)
class Verdict:
    """One prediction checked on one rung of the ladder: what the theory predicts, what
    was measured, the agreement metric, the verdict (one of :data:`VERDICTS`) and its
    reason.  ``details`` go into ``report.json``; ``figure_data`` only feeds the figures."""

    prediction: str
    rung: str
    predicted: str = "-"
    measured: str = "-"
    metric: str = "-"
    verdict: str
    reason: str
    details: dict = field(default_factory=dict)
    figure_data: dict = field(default_factory=dict, repr=False)

    @classmethod
    def skipped(cls, prediction: str, rung: str, reason: str) -> "Verdict":
        """A check that could not run, and why."""
        return cls(prediction=prediction, rung=rung, verdict="skipped", reason=reason)

    def to_dict(self) -> dict:
        """The fields without ``figure_data`` (the verdict as ``report.json`` holds it)."""
        d = asdict(self)
        d.pop("figure_data")
        return d


class Estimate(NamedTuple):
    """A measured value and its 95 % interval (lo, hi)."""

    value: float
    ci: tuple


def number(v) -> float:
    """A table cell as a float; NaN where it is missing or not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True, kw_only=True)
class SeedSummary:
    """One (run, seed) of a tidy table.

    The grid values (``run_id``, ``model``, ``contexts``, ``seed`` as written; ``N``
    (context tokens), ``K`` (items; inf = fresh items), ``wd_attn``, ``lr`` (per
    iteration) as floats, NaN where the table lacks the column); ``t_icl`` (iterations;
    None when the seed never acquired ICL); ``cap`` (iterations): its last evaluation,
    where a seed that never acquired is censored; ``final_icl_acc``, ``final_iwl_acc``
    at that evaluation; ``beta0``: its beta (for a transformer the effective beta) at its
    first evaluation; ``rows``: its rows, sorted by iteration."""

    run_id: object = None
    model: str | None = None
    N: float = math.nan
    K: float = math.nan
    contexts: str | None = None
    wd_attn: float = math.nan
    lr: float = math.nan
    seed: object
    t_icl: float | None
    cap: float
    final_icl_acc: float
    final_iwl_acc: float
    beta0: float
    rows: tuple = field(default=(), repr=False, compare=False)

    @property
    def observed(self) -> bool:
        """Whether the seed acquired ICL (its t_icl is an event, not censored)."""
        return self.t_icl is not None

    @property
    def time(self) -> float:
        """The event or censoring time (iterations): t_icl, or cap for a censored seed."""
        return self.t_icl if self.t_icl is not None else self.cap

    @property
    def finite_k(self) -> bool:
        return bool(np.isfinite(self.K))

    @property
    def infinite_k(self) -> bool:
        """K = inf (fresh items every sequence); a missing K (NaN) is neither finite nor this."""
        return self.K == math.inf

    @property
    def icl_model(self) -> bool:
        """Not a standalone-MLP memorization run (model 'mlp')."""
        return self.model != "mlp"

    def series(self, column: str) -> np.ndarray:
        """The column over the seed's evaluations, as floats (NaN where missing)."""
        return np.array([number(r.get(column)) for r in self.rows])

    def final(self, column: str) -> float:
        """The column at the seed's last evaluation (NaN where missing)."""
        return number(self.rows[-1].get(column)) if self.rows else math.nan

    def head_escaped(self) -> bool:
        """Whether the head logged at the last evaluation has escaped
        (:func:`icl_kinetics.theory.head_escaped`: w > 0 and beta > beta_c(N)); False
        where w or beta is missing."""
        from icl_kinetics.theory import head_escaped

        w, beta = self.final("w"), self.final("beta")
        if math.isnan(w) or math.isnan(beta):
            return False
        return bool(head_escaped(w, beta, int(self.N)))

    def has_head(self) -> bool:
        """Whether the last evaluation logs the head's parameters w and beta (finite)."""
        return bool(np.isfinite(self.final("w")) and np.isfinite(self.final("beta")))


def columns(table) -> dict[str, np.ndarray]:
    """Normalize a tidy table (mapping of columns or list of row mappings) to a dict of arrays."""
    if isinstance(table, Mapping):
        return {k: np.asarray(v) for k, v in table.items()}
    if isinstance(table, Sequence) and (len(table) == 0 or isinstance(table[0], Mapping)):
        keys = list(table[0].keys()) if table else []
        return {k: np.asarray([r.get(k) for r in table]) for k in keys}
    raise TypeError("a tidy table is a mapping of columns or a list of row mappings")


def table_rows(table) -> list[dict]:
    """A tidy table (dict of columns) as a list of row dicts."""
    keys = list(table)
    n = len(table[keys[0]]) if keys else 0
    return [{k: table[k][i] for k in keys} for i in range(n)]


def seed_summaries(table) -> list[SeedSummary]:
    """One :class:`SeedSummary` per (run, seed) of a tidy table, in the order of their first
    rows.  Rows of a sweep's unfinished or failed runs (``status`` other than 'done') are
    left out."""
    groups = defaultdict(list)
    for r in table_rows(table):
        if r.get("status", "done") != "done":
            continue
        key = tuple(r.get(k) for k in GRID if k in r) + (r["seed"],)
        groups[key].append(r)
    return [_summary(rs) for rs in groups.values()]


def _summary(rs: list[dict]) -> SeedSummary:
    rs.sort(key=lambda r: number(r["iteration"]))
    first, last = rs[0], rs[-1]
    t = next((number(r["iteration"]) for r in rs if number(r.get("icl_acc")) > T_ICL_THRESHOLD), None)
    grid = {k: (number(first[k]) if k in ("N", "K", "wd_attn", "lr") else first[k]) for k in GRID if k in first}
    return SeedSummary(**grid, seed=first["seed"], t_icl=t, cap=number(last["iteration"]),
                       final_icl_acc=number(last.get("icl_acc")), final_iwl_acc=number(last.get("iwl_acc")),
                       beta0=number(first.get("beta")), rows=tuple(rs))


def by_point(seeds) -> dict:
    """Seed summaries grouped by their (N, K) grid point."""
    groups = defaultdict(list)
    for s in seeds:
        groups[(s.N, s.K)].append(s)
    return groups


def i_k(seed: SeedSummary, until: float | None = None, c1_missing: float | None = None) -> float:
    """The integrated residual error I_K(T) = lr * integral_0^T c1 dt (learning-rate time)
    of one seed, by the trapezoid rule over its evaluations up to T = ``until``
    (iterations; default: its last evaluation).

    ``c1_missing`` stands in for c1 where it was not measured (1/2 at K = inf, where fresh
    items cannot be memorized and the engine has no training set to measure c1 on); None
    leaves such rows out.  NaN with fewer than 2 evaluations left."""
    it, c1 = seed.series("iteration"), seed.series("c1")
    if until is not None:
        keep = it <= until
        it, c1 = it[keep], c1[keep]
    if c1_missing is not None:
        c1 = np.where(np.isfinite(c1), c1, c1_missing)
    ok = np.isfinite(c1)
    it, c1 = it[ok], c1[ok]
    if it.size < 2:
        return math.nan
    return float(seed.lr * _trapezoid(c1, it))
