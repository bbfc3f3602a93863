"""The results store: one folder per sweep, one sub-folder per run, atomic writes.

Layout::

    DIR/sweep.json                 the sweep's specification (every run's config)
    DIR/index.json                 run_id -> status ("done", "failed", "running", "pending"),
                                   reason, seconds, seed_iterations (rewritten by the driver)
    DIR/runs/<run_id>/config.json  the engine's files: config, metrics.csv (one row per
                      metrics.csv  seed x evaluation), summary.json, checkpoint.pt
                      status.json  written by the process that executes the run
                      lock         held (flock) while a process executes the run
    DIR/collected.csv              one tidy table for the whole sweep (``collect``)

Every file is written to a temporary file and renamed.  A run's status lives in its
own ``status.json``, written only by the process executing it; ``index.json`` is
derived from those files, so no two processes ever write the same file.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

from icl_kinetics.errors import ParameterError
from icl_kinetics.io import atomic_write_text, write_csv, write_json
from icl_kinetics.simulate.engine import METRIC_COLUMNS
from icl_kinetics.simulate.sweeps.spec import GRID_COLUMNS, RunSpec, SweepSpec

STATUSES = ("done", "failed", "running", "pending")
COLLECT_COLUMNS = ("sweep", "run_id", "status") + GRID_COLUMNS + METRIC_COLUMNS


class SweepStore:
    """A sweep's folder.  ``SweepStore.create(dir, spec)`` makes or reopens one."""

    def __init__(self, root):
        self.root = Path(root)
        p = self.root / "sweep.json"
        if not p.is_file():
            raise ParameterError("sweep folder", str(self.root), "a folder made by 'icl-kinetics sweep run' "
                                 "(it has no sweep.json)")
        self.spec = SweepSpec.from_dict(json.loads(p.read_text()))
        self.runs = {r.id: r for r in self.spec.runs}

    @classmethod
    def create(cls, root, spec: SweepSpec) -> "SweepStore":
        """Write ``spec`` into a new folder, or reopen a folder made with the same spec."""
        root = Path(root)
        p = root / "sweep.json"
        if p.is_file():
            old = json.loads(p.read_text())
            if old != json.loads(json.dumps(spec.to_dict())):
                raise ParameterError("out", str(root), f"a new folder, or one made by the same sweep "
                                     f"({old.get('name')} at scale {old.get('scale')} is there, with other runs)")
        else:
            write_json(p, spec.to_dict())
        (root / "runs").mkdir(parents=True, exist_ok=True)
        return cls(root)

    # -- per run ------------------------------------------------------------------------
    def run_dir(self, rid: str) -> Path:
        return self.root / "runs" / rid

    def read_status(self, rid: str) -> dict:
        p = self.run_dir(rid) / "status.json"
        if not p.is_file():
            return {"status": "pending"}
        st = json.loads(p.read_text())
        if st.get("status") == "running" and not self.is_locked(rid):
            st = {**st, "status": "pending", "reason": "interrupted; resumes from its last checkpoint"}
        return st

    def write_status(self, rid: str, status: dict) -> None:
        write_json(self.run_dir(rid) / "status.json", {**status, "updated": time.time()})

    @contextmanager
    def lock(self, rid: str):
        """Hold the run's lock (non-blocking); yields False if another process holds it."""
        d = self.run_dir(rid)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / "lock", os.O_CREAT | os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def is_locked(self, rid: str) -> bool:
        p = self.run_dir(rid) / "lock"
        if not p.exists():
            return False
        fd = os.open(p, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # -- the sweep ------------------------------------------------------------------------
    def statuses(self) -> dict:
        return {rid: self.read_status(rid) for rid in self.runs}

    def write_index(self) -> dict:
        """Rewrite ``index.json`` from the runs' status files; returns it."""
        idx = {}
        for rid, st in self.statuses().items():
            r = self.runs[rid]
            idx[rid] = {"status": st["status"], "reason": st.get("reason", ""), "seconds": st.get("seconds"),
                        "started": st.get("started"), "finished": st.get("finished"),
                        "seed_iterations": r.seed_iterations, "point": r.point}
        write_json(self.root / "index.json", idx)
        return idx

    def pending(self, retry_failed: bool = False) -> list[RunSpec]:
        """Runs still to execute, in the spec's order."""
        todo = ("pending", "failed") if retry_failed else ("pending",)
        return [r for rid, r in self.runs.items() if self.read_status(rid)["status"] in todo]

    def summary(self) -> dict:
        """Counts by status, seed-iterations done and left, an estimate of the time left, and
        the time spent: ``run_seconds`` (summed over finished runs, process-seconds) and
        ``span_seconds`` (wall time from the first run's start to the last one's finish)."""
        idx = self.write_index()
        counts = {s: 0 for s in STATUSES}
        for v in idx.values():
            counts[v["status"]] += 1
        done_si = sum(v["seed_iterations"] for v in idx.values() if v["status"] in ("done", "failed"))
        left_si = sum(v["seed_iterations"] for v in idx.values() if v["status"] in ("pending", "running"))
        secs = [v["seconds"] for v in idx.values() if v["status"] == "done" and v["seconds"]]
        si = [v["seed_iterations"] for v in idx.values() if v["status"] == "done" and v["seconds"]]
        rate = sum(si) / sum(secs) if secs else None  # seed-iterations per second of one process
        fin = [v for v in idx.values() if v["status"] in ("done", "failed") and v.get("started") and v.get("finished")]
        return {"sweep": self.spec.name, "scale": self.spec.scale, "runs": len(idx), **counts,
                # process-seconds spent in finished runs, and the span from the first start to the last finish
                "run_seconds": sum(v["seconds"] or 0.0 for v in fin),
                "span_seconds": (max(v["finished"] for v in fin) - min(v["started"] for v in fin)) if fin else None,
                "seed_iterations_done": done_si, "seed_iterations_left": left_si,
                "seed_iterations_per_s_per_process": rate,
                "estimated_seconds_left_per_process": None if rate is None else left_si / rate,
                "failed_runs": {k: v["reason"] for k, v in idx.items() if v["status"] == "failed"}}

    def collect(self, path=None) -> tuple[str, int]:
        """Write one tidy table for the whole sweep (default ``DIR/collected.csv``).

        One row per run x seed x evaluation: the sweep, run_id, run status, the grid
        parameters (:data:`GRID_COLUMNS`; K = inf for fresh items) and the engine's
        metrics (:data:`METRIC_COLUMNS`).  Runs without metrics yet contribute nothing.
        Returns (path, number of rows).
        """
        rows = []
        for rid, r in self.runs.items():
            p = self.run_dir(rid) / "metrics.csv"
            if not p.is_file():
                continue
            st = self.read_status(rid)["status"]
            cfg = r.config.to_dict()
            grid = {k: (math.inf if (k == "K" and cfg[k] is None) else cfg[k]) for k in GRID_COLUMNS}
            with open(p, newline="") as f:
                for m in csv.DictReader(f):
                    rows.append({"sweep": self.spec.name, "run_id": rid, "status": st, **grid,
                                 **{k: m[k] for k in METRIC_COLUMNS}})
        out = Path(path) if path else self.root / "collected.csv"
        if rows:
            write_csv(out, rows)
        else:
            atomic_write_text(out, ",".join(COLLECT_COLUMNS) + "\n")
        return str(out), len(rows)
