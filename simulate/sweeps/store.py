"""The results store: one folder per sweep, one sub-folder per run, atomic writes.

Layout::

    DIR/sweep.json                 the sweep's specification (every run's config; for a sweep
                                   made from a spec file, that file resolved, under "spec")
    DIR/index.json                 run_id -> status ("done", "failed", "running", "pending",
                                   "damaged"), reason, seconds, seed_iterations (derived; never
                                   read back)
    DIR/runs/<run_id>/config.json  the engine's files: config, metrics.csv (one row per
                      metrics.csv  seed x evaluation), summary.json, checkpoint.pt
                      status.json  written by the process that executes the run
                      lock         held (flock) while a process executes the run
    DIR/collected.csv              one tidy table for the whole sweep (``collect``)

Every file is written to a temporary file and renamed.  A run's status lives in its
own ``status.json``, written only by the process executing it; ``index.json`` is
derived from those files, so no two processes ever write the same file.

**Integrity.**  Everything read back is verified.  When a run finishes, its status
records the row count and SHA-256 of its ``metrics.csv``; ``status``, ``collect``,
``run`` and ``validate`` check them.  A finished run whose metrics are missing or do
not match, and a run whose ``status.json`` cannot be read or holds an unknown state,
is ``damaged``: it is named with the reason, left out of ``collect``'s table, and
re-run by ``sweep run`` (from its checkpoint, which verifies itself, or from scratch).
Only that run is affected.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from icl_kinetics.errors import ParameterError, describe
from icl_kinetics.io import atomic_write_text, write_csv, write_json
from icl_kinetics.simulate.config import METRIC_COLUMNS
from icl_kinetics.simulate.sweeps.spec import GRID_COLUMNS, RunSpec, SweepSpec

STATUSES = ("done", "failed", "running", "pending", "damaged")
COLLECT_COLUMNS = ("sweep", "run_id", "status") + GRID_COLUMNS + METRIC_COLUMNS
#: the columns before METRIC_COLUMNS in a run's metrics.csv (the engine's metrics_table)
RUN_COLUMNS = ("run_id",) + GRID_COLUMNS


def metrics_record(path) -> dict:
    """What a finished run's status records about its ``metrics.csv``: rows, bytes, SHA-256."""
    import hashlib

    data = Path(path).read_bytes()  # one read for all three (a metrics table is small)
    return {"rows": data.count(b"\n") - 1, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def check_metrics_csv(path, eval_every: int | None = None, cap: int | None = None,
                      ends: dict | None = None) -> str:
    """'' if ``path`` is a complete engine metrics table, else why not.

    Checks what needs no recorded hash (unfinished runs, and runs finished by a version
    that kept none): a complete last line, the engine's header, the field count and
    numbers in every row; with ``eval_every`` (and the cap ``cap``), that each seed's
    evaluations are 0, eval_every, 2 eval_every, ... with none missing; with ``ends``
    (seed -> its last iteration, from ``summary.json``), that no seed's tail is missing.
    A run extended by raising its cap has an evaluation at the old cap too; sweeps never
    do that (the cap is part of a run's id), so this check does not allow for it.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        return f"{p} cannot be read ({e.strerror})"
    if not data.endswith(b"\n"):
        return f"{p} is cut off (its last line is incomplete)"
    try:
        rows = list(csv.reader(data.decode("utf-8").splitlines()))
    except (UnicodeDecodeError, csv.Error) as e:
        return f"{p} is not a readable CSV ({type(e).__name__})"
    # the engine's header: run_id and the grid columns, then the metrics (a run made before
    # metrics.csv carried its grid columns has the metrics alone)
    lead = len(rows[0]) - len(METRIC_COLUMNS) if rows else -1
    if lead < 0 or tuple(rows[0][lead:]) != METRIC_COLUMNS or tuple(rows[0][:lead]) not in ((), RUN_COLUMNS):
        return f"{p} does not have the engine's header"
    last: dict = {}
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(rows[0]):
            return f"{p} line {i} has {len(r)} fields, not {len(rows[0])}"
        try:
            seed, it = int(r[lead]), int(r[lead + 1])
            [float(v) for v in r[lead:]]
        except ValueError:
            return f"{p} line {i} holds a non-number"
        if eval_every:  # the engine evaluates at 0, eval_every, 2 eval_every, ... and at the cap
            want = 0 if seed not in last else last[seed] + eval_every
            if cap is not None and seed in last:
                want = min(want, cap)
            if it != want:
                return f"{p} line {i}: seed {seed} jumps from iteration {last.get(seed)} to {it} (rows are missing)"
        last[seed] = it
    for seed, end in (ends or {}).items():
        if last.get(seed) != end:
            return f"{p}: seed {seed} ends at iteration {last.get(seed)}, not {end} (rows are missing)"
    return ""


@dataclass
class Collected:
    """What :meth:`SweepStore.collect` wrote: the table's path and rows, the runs it
    includes, and the runs it left out or that are unfinished, each with the reason."""

    path: str
    rows: int
    runs: int
    included: list = field(default_factory=list)
    left_out: dict = field(default_factory=dict)    # run_id -> why (damaged metrics)
    unfinished: dict = field(default_factory=dict)  # run_id -> status (its rows so far are included)

    @property
    def ok(self) -> bool:
        """True when no run had to be left out."""
        return not self.left_out


class SweepStore:
    """A sweep's folder.  ``SweepStore.create(dir, spec)`` makes or reopens one."""

    def __init__(self, root):
        self.root = Path(root)
        p = self.root / "sweep.json"
        if not p.is_file():
            raise ParameterError("sweep folder", str(self.root), "a folder made by 'icl-kinetics sweep run' "
                                 "(it has no sweep.json)")
        self.spec = _read_spec(p)
        self.runs = {r.id: r for r in self.spec.runs}
        self._verified: dict = {}  # (run, mtime, size, recorded hash) -> verdict of verify_finished

    @classmethod
    def create(cls, root, spec: SweepSpec) -> "SweepStore":
        """Write ``spec`` into a new folder, or reopen a folder made with the same spec."""
        root = Path(root)
        p = root / "sweep.json"
        if p.is_file():
            old = _read_spec(p).to_dict()
            old.pop("spec", None)  # the recorded spec file (if any) only informs: the runs decide
            new = json.loads(json.dumps(spec.to_dict()))
            new.pop("spec", None)
            if old != new:
                raise ParameterError("out", str(root), f"a new folder, or one made by the same sweep "
                                     f"({_difference(old, new)})")
        else:
            write_json(p, spec.to_dict())
        (root / "runs").mkdir(parents=True, exist_ok=True)
        return cls(root)

    # -- per run ------------------------------------------------------------------------
    def run_dir(self, rid: str) -> Path:
        return self.root / "runs" / rid

    def read_status(self, rid: str) -> dict:
        """The run's status, verified: ``damaged`` (with the reason, naming the file) when
        ``status.json`` is unreadable, holds an unknown state or a field of the wrong type,
        or when a run's ``metrics.csv`` differs from what was recorded when it finished
        (or, with no record, is not a complete table)."""
        p = self.run_dir(rid) / "status.json"
        if not p.is_file():
            return {"status": "pending"}
        try:
            st = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            why = " ".join(str(e).split())[:120]
            return {"status": "damaged", "reason": f"{p} cannot be read ({type(e).__name__}: {why}); re-run"}
        if not isinstance(st, dict) or st.get("status") not in STATUSES or st.get("status") == "damaged":
            val = st.get("status") if isinstance(st, dict) else type(st).__name__
            return {"status": "damaged", "reason": f"{p} holds an unknown state {describe(val)} "
                    f"(allowed: {', '.join(STATUSES[:4])}); re-run"}
        bad = _bad_field(st)
        if bad:
            return {"status": "damaged", "reason": f"{p}: {bad}; re-run"}
        if st["status"] == "running" and not self.is_locked(rid):
            st = {**st, "status": "pending", "reason": "interrupted; resumes from its last checkpoint"}
        if st["status"] in ("done", "failed") and (st["status"] == "done" or isinstance(st.get("metrics"), dict)):
            why = self.verify_finished(rid, st)
            if why:
                st = {**st, "status": "damaged", "reason": why + "; re-run"}
        return st

    def verify_finished(self, rid: str, st: dict) -> str:
        """'' if a finished run's ``metrics.csv`` matches the record in its status, else why."""
        m = self.run_dir(rid) / "metrics.csv"
        if not m.is_file():
            return f"{m} is missing"
        rec = st.get("metrics")
        if not isinstance(rec, dict):  # finished by a version that kept no record: check its shape
            cfg = self.runs[rid].config
            return check_metrics_csv(m, cfg.eval_every, cfg.iterations, self._seed_ends(rid))
        st_ = m.stat()
        key = (rid, st_.st_mtime_ns, st_.st_size, rec.get("sha256"))
        if key in self._verified:  # hashed before and unchanged since (write_index runs after every run)
            return self._verified[key]
        now = metrics_record(m)
        why = ""
        if now["sha256"] != rec.get("sha256"):
            why = (f"{m} does not match the SHA-256 recorded when the run finished "
                   f"({now['rows']} rows now, {rec.get('rows')} recorded)")
        self._verified[key] = why
        return why

    def _seed_ends(self, rid: str) -> dict:
        """seed -> last evaluated iteration of seeds that trained to the end, from summary.json
        (empty when it cannot be read: then only the rows' own sequence is checked)."""
        try:
            sm = json.loads((self.run_dir(rid) / "summary.json").read_text(encoding="utf-8"))
            off, done = int(sm["config"]["seed_offset"]), int(sm["iterations_done"])
            return {off + i: done for i, s in enumerate(sm["status"]) if s == "running"}
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return {}

    def check_checkpoint(self, rid: str) -> str:
        """'' if the run has no checkpoint or one that reads and verifies, else why (the run
        will set it aside and restart from scratch).  Reads the file: used by ``status``."""
        from icl_kinetics.errors import EnvironmentFailure
        from icl_kinetics.simulate.checkpoint import CheckpointError, _load_checkpoint

        ck = self.run_dir(rid) / "checkpoint.pt"
        if not ck.is_file():
            return ""
        try:
            _load_checkpoint(ck)
        except EnvironmentFailure as e:
            return str(e)
        except CheckpointError as e:
            return f"{ck}: {e}; the run will set it aside and restart from iteration 0"
        return ""

    def write_status(self, rid: str, status: dict) -> None:
        write_json(self.run_dir(rid) / "status.json", {**status, "updated": time.time()})

    @contextmanager
    def lock(self, rid: str, wait: float = 2.0):
        """Hold the run's lock; yields False if another process holds it for ``wait`` seconds
        (a ``status`` probing the lock holds it for a moment: that is not a run executing)."""
        d = self.run_dir(rid)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / "lock", os.O_CREAT | os.O_RDWR)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
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
        try:
            fd = os.open(p, os.O_RDONLY)  # flock needs no write access: a read-only copy works
        except OSError:
            return False
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
        try:
            write_json(self.root / "index.json", idx)
        except OSError:  # a read-only copy of a sweep: the index is derived, so reading goes on
            pass
        return idx

    def pending(self, retry_failed: bool = False) -> list[RunSpec]:
        """Runs still to execute, in the spec's order."""
        todo = ("pending", "damaged", "failed") if retry_failed else ("pending", "damaged")
        return [r for rid, r in self.runs.items() if self.read_status(rid)["status"] in todo]

    def summary(self, check_checkpoints: bool = False) -> dict:
        """Counts by status, seed-iterations done and left, an estimate of the time left, and
        the time spent: ``run_seconds`` (summed over finished runs, process-seconds) and
        ``span_seconds`` (wall time from the first run's start to the last one's finish)."""
        idx = self.write_index()
        counts = {s: 0 for s in STATUSES}
        for v in idx.values():
            counts[v["status"]] += 1
        done_si = sum(v["seed_iterations"] for v in idx.values() if v["status"] in ("done", "failed"))
        left_si = sum(v["seed_iterations"] for v in idx.values() if v["status"] in ("pending", "running", "damaged"))
        secs = [v["seconds"] for v in idx.values() if v["status"] == "done" and v["seconds"]]
        si = [v["seed_iterations"] for v in idx.values() if v["status"] == "done" and v["seconds"]]
        rate = sum(si) / sum(secs) if secs else None  # seed-iterations per second of one process
        fin = [v for v in idx.values() if v["status"] in ("done", "failed") and v.get("started") and v.get("finished")]
        reasons = {f"{s}_runs": {k: v["reason"] for k, v in idx.items() if v["status"] == s}
                   for s in ("failed", "damaged", "pending")}
        if check_checkpoints:  # reads every unfinished run's checkpoint: only for `sweep status`
            unfinished = [k for k, v in idx.items() if v["status"] not in ("done", "failed")]
            problems = {k: self.check_checkpoint(k) for k in unfinished}
            reasons["checkpoint_problems"] = {k: why for k, why in problems.items() if why}
        return {"sweep": self.spec.name, "scale": self.spec.scale, "runs": len(idx), **counts,
                # process-seconds spent in finished runs, and the span from the first start to the last finish
                "run_seconds": sum(v["seconds"] or 0.0 for v in fin),
                "span_seconds": (max(v["finished"] for v in fin) - min(v["started"] for v in fin)) if fin else None,
                "seed_iterations_done": done_si, "seed_iterations_left": left_si,
                "seed_iterations_per_s_per_process": rate,
                "estimated_seconds_left_per_process": None if rate is None else left_si / rate,
                **reasons}

    def adopt(self, table, timing=None) -> dict:
        """Take finished runs from a collected table (``collect``'s CSV, or its ``.csv.gz`` as
        committed under ``docs/results/``) into this sweep, so a sweep can go on over more
        than one machine: ``sweep run ... --from-table FILE`` trains only what the table lacks.

        A run is adopted when it is in this sweep, has no status yet (pending: a run this
        folder has started, finished or found damaged is never overwritten), and the table
        holds it as ``done`` with rows that verify: every grid column equal to the run's
        config, exactly the run's seeds, each seed's evaluations 0, eval_every, ... with none
        missing and at most the cap, numbers in every metric column.  Its ``metrics.csv`` is
        written from those rows (the run's header, the table's values as they are) and its
        status records ``adopted_from`` (the table's path and SHA-256) and the metrics
        record, as a run finished here would; ``seconds`` come from ``timing`` (the JSON
        ``tools/pack_tables.py`` writes beside the table: run_id -> seconds, started,
        finished), else stay unknown.  Runs the table holds unfinished, or that fail a
        check, are left pending (trained from scratch) and named with the reason.

        Raises:
            ParameterError: ``table`` (or ``timing``) cannot be read as a collected table.
        Returns:
            ``{"adopted": [run ids], "refused": {run id: why}, "kept": [run ids that already
            had a status], "not_in_sweep": count of the table's runs that are not this sweep's}``.
        """
        import gzip
        import hashlib
        import zlib

        from icl_kinetics.simulate.engine import metrics_table

        path = Path(table)
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
            reader = csv.DictReader(text.splitlines())
            head = tuple(reader.fieldnames or ())
        except (OSError, EOFError, UnicodeDecodeError, csv.Error, ValueError, gzip.BadGzipFile, zlib.error) as e:
            raise ParameterError("--from-table", str(path), f"a readable collected table (CSV or .csv.gz; "
                                 f"{type(e).__name__})") from None
        if head != COLLECT_COLUMNS:
            raise ParameterError("--from-table", str(path), "a table written by 'icl-kinetics sweep collect' "
                                 f"(columns {', '.join(COLLECT_COLUMNS[:4])}, ...); its header differs")
        times = {}
        if timing is not None:
            try:
                times = json.loads(Path(timing).read_text(encoding="utf-8"))
                if not isinstance(times, dict):
                    raise ValueError("not an object")
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
                raise ParameterError("timing", str(timing), f"a JSON object run_id -> timing ({e})") from None
        by_run: dict = {}
        try:
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise ValueError(f"line {reader.line_num} has the wrong number of fields")
                by_run.setdefault(row["run_id"], []).append(row)
        except (csv.Error, ValueError) as e:
            raise ParameterError("--from-table", str(path), f"a complete collected table ({e})") from None
        out = {"adopted": [], "refused": {}, "kept": [], "not_in_sweep": sum(1 for r in by_run if r not in self.runs)}
        if by_run and out["not_in_sweep"] == len(by_run):
            names = sorted({r["sweep"] for rows in by_run.values() for r in rows})
            raise ParameterError("--from-table", str(path), f"a table of this sweep ({self.spec.name} at scale "
                                 f"{self.spec.scale}); none of its {len(by_run)} runs (sweep "
                                 f"{', '.join(names)}) is a run of it")
        digest = hashlib.sha256(raw).hexdigest()
        for rid, rows in by_run.items():
            if rid not in self.runs:
                continue
            if (self.run_dir(rid) / "status.json").exists():
                out["kept"].append(rid)
                continue
            why = self._adoptable(rid, rows)
            if why:
                out["refused"][rid] = why
                continue
            d = self.run_dir(rid)
            d.mkdir(parents=True, exist_ok=True)
            cfg = self.runs[rid].config
            write_json(d / "config.json", {**cfg.to_dict(), "config_hash": cfg.config_hash()})
            # the engine's own file: run_id and grid columns from the config, the metrics as they are
            write_csv(d / "metrics.csv", metrics_table(cfg, [{k: r[k] for k in METRIC_COLUMNS} for r in rows]))
            t = times.get(rid) if isinstance(times.get(rid), dict) else {}
            st = {"status": "done", "reason": "", "metrics": metrics_record(d / "metrics.csv"),
                  "adopted_from": {"table": str(path), "sha256": digest},
                  "notes": [f"adopted from {path} (trained elsewhere)"]}
            for k in ("seconds", "started", "finished"):
                v = t.get(k)
                if isinstance(v, float) and math.isfinite(v) and v >= 0:  # JSON numbers: a float (or an int)
                    st[k] = v
                elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 53:
                    st[k] = float(v)
            self.write_status(rid, st)
            out["adopted"].append(rid)
        return out

    def _adoptable(self, rid: str, rows: list) -> str:
        """'' if a table's rows of run ``rid`` are a finished, complete run of this sweep, else why."""
        cfg = self.runs[rid].config
        if any(r["status"] != "done" for r in rows):
            return "the table holds it unfinished; it trains here"
        want = cfg.to_dict()
        for k in GRID_COLUMNS:
            v = math.inf if (k == "K" and want[k] is None) else want[k]
            got = {r[k] for r in rows}
            if len(got) != 1:
                return f"its rows disagree on {k}"
            (g,) = got
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    ok = float(g) == float(v)
                except ValueError:
                    ok = False
            else:
                ok = g == ("" if v is None else str(v))
            if not ok:
                return f"its {k} is {g!r} in the table, {v!r} in this sweep"
        cap, every, log = cfg.iterations, cfg.eval_every, cfg.log_every

        def stopped(r):  # the engine stops a seed once its ICL accuracy exceeds early_stop
            return cfg.early_stop is not None and float(r["icl_acc"]) > cfg.early_stop

        last, final, seen = {}, {}, {}
        for i, r in enumerate(rows):
            try:
                seed, it = int(r["seed"]), int(r["iteration"])
                [float(r[k]) for k in METRIC_COLUMNS]  # nan is a number here (train_loss at 0, K = inf's IWL)
            except (ValueError, OverflowError):
                return f"its row {i + 1} holds a non-number"
            if seed in last and (last[seed] == cap or stopped(final[seed])):
                return f"seed {seed} has rows after its end at iteration {last[seed]}"
            if log is None:  # every evaluation is logged: 0, eval_every, ... and the cap
                ok = it == (0 if seed not in last else min(last[seed] + every, cap))
            else:  # logging iterations, plus the evaluations at which a seed acquires or stops
                ok = ((it == 0) if seed not in last else (last[seed] < it <= cap)) and (it % every == 0 or it == cap)
            if not ok:
                return f"seed {seed} jumps from iteration {last.get(seed)} to {it} (rows are missing)"
            last[seed], final[seed] = it, r
            seen.setdefault(seed, set()).add(it)
        if set(last) != set(range(cfg.seed_offset, cfg.seed_offset + cfg.seeds)):
            return f"it holds seeds {sorted(last)}, not {cfg.seed_offset} ... {cfg.seed_offset + cfg.seeds - 1}"
        for seed, it in last.items():  # a seed ends at the cap, or where it stopped early (above early_stop)
            if it < cap and not stopped(final[seed]):
                return f"seed {seed} ends at iteration {it}, before the cap {cap}, without stopping early"
            if log is not None:  # every logging iteration up to its end is there
                gap = next((j for j in range(0, it + 1, log) if j not in seen[seed]), None)
                if gap is not None:
                    return f"seed {seed} has no row at logging iteration {gap} (rows are missing)"
        return ""

    def collect(self, path=None) -> Collected:
        """Write one tidy table for the whole sweep (default ``DIR/collected.csv``).

        One row per run x seed x evaluation: the sweep, run_id, run status, the grid
        parameters (:data:`GRID_COLUMNS`; K = inf for fresh items) and the engine's
        metrics (:data:`METRIC_COLUMNS`).  Every run is verified first: a damaged run
        (see :meth:`read_status`) or an unfinished run whose ``metrics.csv`` is not a
        complete table is left out, never half-read, and named in the result with the
        reason.  Unfinished runs' verified rows so far are included, with their status.
        """
        rows, res = [], Collected("", 0, len(self.runs))
        for rid, r in self.runs.items():
            st = self.read_status(rid)
            p = self.run_dir(rid) / "metrics.csv"
            if st["status"] == "damaged":
                res.left_out[rid] = st["reason"]
                continue
            if st["status"] != "done":
                res.unfinished[rid] = st["status"]
                if not p.is_file():
                    continue
                why = "" if isinstance(st.get("metrics"), dict) else check_metrics_csv(p, r.config.eval_every,
                                                                                       r.config.iterations)
                if why:
                    res.left_out[rid] = why + "; re-run with 'sweep run'"
                    continue
            cfg = r.config.to_dict()
            grid = {k: (math.inf if (k == "K" and cfg[k] is None) else cfg[k]) for k in GRID_COLUMNS}
            with open(p, newline="", encoding="utf-8") as f:
                for m in csv.DictReader(f):
                    rows.append({"sweep": self.spec.name, "run_id": rid, "status": st["status"], **grid,
                                 **{k: m[k] for k in METRIC_COLUMNS}})
            res.included.append(rid)
        out = Path(path) if path else self.root / "collected.csv"
        if rows:
            write_csv(out, rows)
        else:
            atomic_write_text(out, ",".join(COLLECT_COLUMNS) + "\n")
        res.path, res.rows = str(out), len(rows)
        return res


def _bad_field(st: dict) -> str:
    """'' if a status file's fields have their types, else which one does not."""
    for k in ("seconds", "started", "finished", "updated"):
        v = st.get(k)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)):
            return f"field {k!r} holds {describe(v)}, not a number"
    if not isinstance(st.get("reason", ""), str):
        return "field 'reason' is not text"
    for k in ("metrics",):
        v = st.get(k)
        if v is not None and not (isinstance(v, dict) and isinstance(v.get("sha256"), str)):
            return f"field {k!r} is not a metrics record"
    if not isinstance(st.get("notes", []), list):
        return "field 'notes' is not a list"
    return ""


def _difference(old: dict, new: dict) -> str:
    """What differs between the sweep in a folder (``old``) and the one asked for (``new``)."""
    there = f"{old.get('name')} at scale {old.get('scale')} is there"
    for k in ("name", "scale", "description", "paper"):
        if old.get(k) != new.get(k):
            return f"{there}; its {k} differs: {old.get(k)!r} there, {new.get(k)!r} asked for"
    a = {r["run_id"]: r for r in old.get("runs", [])}
    b = {r["run_id"]: r for r in new.get("runs", [])}
    only_new, only_old = [k for k in b if k not in a], [k for k in a if k not in b]
    if only_new or only_old:
        eg = b[only_new[0]]["point"] if only_new else a[only_old[0]]["point"]
        return (f"{there} with {len(a)} runs; {len(only_new)} of the {len(b)} runs asked for are not in it and "
                f"{len(only_old)} of its runs are not asked for (e.g. the run at {eg})")
    for k, r in b.items():
        if r != a[k]:
            diff = sorted(f for f in set(r["config"]) | set(a[k]["config"])
                          if r["config"].get(f) != a[k]["config"].get(f)) or ["point"]
            return (f"{there}; run {k} has other {', '.join(diff)} there: {a[k]['config'].get(diff[0])!r} there, "
                    f"{r['config'].get(diff[0])!r} asked for" if diff != ["point"] else f"{there}; run {k} has "
                    f"another grid point there")
    return f"{there}, with the same runs in another order"


def _read_spec(p: Path) -> SweepSpec:
    """The sweep's specification from ``sweep.json``, or a ParameterError naming the file."""
    try:
        return SweepSpec.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as e:
        raise ParameterError("sweep folder", str(p.parent), f"a folder with a readable sweep.json ({p}: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
