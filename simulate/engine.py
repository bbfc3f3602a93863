"""The seed-batched training engine: S independent seeds trained in one process.

This module is the loop (:func:`train`, :func:`train_packed`, worker threads and
processes, packing, results); the configuration is :mod:`~icl_kinetics.simulate.config`
(:class:`TrainConfig`, :class:`TrainResult`, re-exported here), a seed group's step and
evaluation :mod:`~icl_kinetics.simulate.group`, and checkpoints
:mod:`~icl_kinetics.simulate.checkpoint`.

:func:`train` runs plain SGD (per-group coupled L2 weight decay, logistic loss) on
one of the models of :mod:`icl_kinetics.simulate.models`, and logs a tidy metrics
table (one row per seed x logged evaluation).  It checkpoints atomically and resumes
after a kill with no lost progress and the same numbers.

**Backends** (``TrainConfig.backend``).  ``"autograd"``: the model of
:mod:`~icl_kinetics.simulate.models` on sequences from the data generator of
:mod:`~icl_kinetics.simulate.data`, gradients by torch autograd.  ``"overlaps"``: the
exact K -> infinity overlap sampler of :mod:`~icl_kinetics.simulate.overlaps`, valid for
``model="minimal"``, ``K=None``, ``width=0`` on the CPU, where it is two orders of
magnitude faster.  ``"auto"`` (the default) picks ``"overlaps"`` where it is valid.  Both
go through the one loop here (:func:`_run_group`): the same evaluation, t_ICL, early
stop, divergence handling, logging, checkpoints and result.

**Seeds.**  Seed index ``i`` of base seed ``seed`` draws its initialization and its
training-data stream from generators derived only from ``(seed, i)``
(:func:`~icl_kinetics.simulate.data.seed_generators`,
:func:`~icl_kinetics.simulate.data.overlap_streams`), so a seed gives the same numbers
alone or inside any batch.  With autograd the item set and the test sets come from
``item_seed`` and are shared by every seed (as in the paper's code, whose training item
vectors use a fixed seed).  With ``label_map="per-seed"`` (the default) each seed draws
its own item -> label map from its own stream
(:func:`~icl_kinetics.simulate.data.seed_label_map`), as the paper's code, which redraws
it in every run, does in effect; with ``"shared"`` the map comes from ``item_seed`` too.  The
overlap sampler draws each seed's own test set from its own stream.

**Grid batching.**  :func:`train_packed` trains several runs that share every tensor shape
(:func:`pack_key`) as one seed-batched group: each run keeps its own item table, test sets,
hyperparameters, evaluations, early stopping and out folder, and gets the numbers it gets
alone; :func:`train` is a pack of one (docs/engine.md, "Grid batching").

**Parallelism.**  On CPU the seeds are split into ``workers`` groups; each group runs
in its own thread with one intra-op thread (small matmuls run much slower with two
threads each than with two single-threaded workers).  The overlap sampler's groups run
in forked worker processes instead for runs of >= 2e5 seed-iterations on Linux (its
step is short and GIL-bound: two threads lose 10-30 % to each other); a process runs
its group for one checkpoint segment and sends the group's state back through a pipe.
The numbers are the same either way.  On CUDA one group holds all seeds.

**Time** is counted in iterations (one SGD step on ``batch_size`` sequences each);
``lr`` and the weight decays are per iteration (learning-rate time is lr * t).
"""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

import numpy as np

from icl_kinetics.errors import ParameterError, positive_int
from icl_kinetics.simulate.checkpoint import (CheckpointError, _check_state, _load_checkpoint, _restore, _save,
                                              _set_aside)
from icl_kinetics.simulate.config import (BACKENDS, METRIC_COLUMNS, TrainConfig, TrainResult, _resolve_workers,
                                          _use_processes)
from icl_kinetics.simulate.group import _KINDS, _Group, _make_group, _Shared, _Tables, _units
from icl_kinetics.simulate.workers import run_in_threads

__all__ = ["TrainConfig", "TrainResult", "train", "train_packed", "pack_key", "pack_check", "pack_bytes",
           "PACK_FIELDS", "time_steps", "metrics_table", "METRIC_COLUMNS", "BACKENDS"]


# ----------------------------------------------------------------------------- the loop
def _run_group(grp, start: int, stop: int, counter: list, lock, errors: list):
    """Advance one group (either backend) from step ``start`` to ``stop``, evaluating on the
    way.  Each run in the group (:func:`_units`) is at iteration step + ``shift`` and is
    evaluated on its own schedule."""
    try:
        units = _units(grp)
        n = start
        while grp.active:
            for m in units:
                it, cfg = n + m.shift, m.cfg
                if (it % cfg.eval_every == 0 or it == cfg.iterations) and m.last_eval != it and m.active():
                    _evaluate_and_stop(grp, it, m)
                    m.last_eval = it
            if not grp.active or n >= stop:
                break
            bad = grp.step()
            n += 1
            if bad:
                for j, what in bad.items():
                    m = next(u for u in units if not hasattr(u, "lo") or u.lo <= j < u.hi)
                    grp.status[j] = "diverged"
                    grp.reasons[j] = f"non-finite {what} at iteration {n + m.shift}"
                grp.deactivate(list(bad))
            with lock:
                counter[0] += len(grp.active) + len(bad)
    except BaseException as exc:  # re-raised in the main thread
        errors.append(exc)


def _evaluate_and_stop(grp, it: int, m=None):
    """One evaluation of unit ``m`` (a run's seeds in the group; None: the whole group): t_ICL
    for the seeds that exceed ``t_icl_threshold`` for the first time, early stop for those
    above ``early_stop`` (both strict), and the logged rows: every active seed at a logging
    iteration, else only the seeds that acquire or stop."""
    m = m if m is not None else _units(grp)[0]
    cfg = m.cfg
    act = m.active()
    m.begin_eval(it)
    logged = set(act) if cfg.log_every is None or it % cfg.log_every == 0 or it == cfg.iterations else set()
    stop = []
    if _KINDS[cfg.model].icl:
        thr, es = cfg.t_icl_threshold, cfg.early_stop
        pending = [j for j in act if grp.t_icl[j] is None]
        newly = [j for j, ok in zip(pending, grp.passes(pending, thr)) if ok]
        for j in newly:
            grp.t_icl[j] = it
        if es is not None:
            sure = newly if es <= thr else []  # above thr >= es
            rest = [j for j in act if j not in sure and (es < thr or grp.t_icl[j] is not None)]
            stop = sure + [j for j, ok in zip(rest, grp.passes(rest, es)) if ok]
        logged.update(newly, stop)
    grp.log(sorted(logged), it)
    if stop:
        for j in stop:
            grp.status[j] = "stopped"
        grp.deactivate(stop)


class _ProcCounter:
    """``counter[0]`` over a shared ``multiprocessing.Value`` (one per worker process)."""

    def __init__(self, value):
        self.value = value

    def __getitem__(self, i):
        return self.value.value

    def __setitem__(self, i, v):
        self.value.value = v


def _proc_main(grp, start: int, stop: int, value, conn):
    """Worker process: advance one group (inherited through fork) and send its state back."""
    import torch

    torch.set_num_threads(1)
    errors: list = []
    _run_group(grp, start, stop, _ProcCounter(value), threading.Lock(), errors)
    try:
        if errors:
            conn.send_bytes(b"E" + f"{type(errors[0]).__name__}: {errors[0]}".encode())
        else:  # torch.save'd bytes: the parent reads them with weights_only=True, like a checkpoint
            import io

            buf = io.BytesIO()
            torch.save(grp.state(), buf)
            conn.send_bytes(b"S" + buf.getvalue())
    finally:
        conn.close()


def _run_in_processes(groups, start: int, stop: int, bar):
    """Advance every group from ``start`` to ``stop``, each in a forked process that sends
    the group's state back through a pipe (:meth:`state` / :meth:`load`; nothing is read
    from files)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    vals = [ctx.Value("q", 0, lock=False) for _ in groups]
    pipes = [ctx.Pipe(duplex=False) for _ in groups]
    procs = [ctx.Process(target=_proc_main, args=(g, start, stop, v, w), daemon=True)
             for g, v, (_, w) in zip(groups, vals, pipes)]
    for p in procs:
        p.start()
    for _, w in pipes:
        w.close()  # the children hold the write ends: a dead child reads as EOF
    results = [None] * len(groups)
    last = 0
    try:
        while any(r is None for r in results):
            for i, (r, _) in enumerate(pipes):
                if results[i] is None and r.poll(0.1):
                    try:
                        results[i] = r.recv_bytes()
                    except EOFError:
                        procs[i].join()
                        raise RuntimeError(f"training worker {i} died (exit code {procs[i].exitcode})") from None
            if bar is not None:
                c = sum(v.value for v in vals)
                bar.update(c - last)
                last = c
    finally:
        for p in procs:
            if p.is_alive() and any(r is None for r in results):
                p.terminate()
            p.join()
    import io

    import torch

    for g, res in zip(groups, results):
        if res[:1] != b"S":
            raise RuntimeError(f"training worker failed: {res[1:].decode(errors='replace')}")
        g.load(torch.load(io.BytesIO(res[1:]), map_location="cpu", weights_only=True))


def _run_segment(groups, start: int, stop: int, processes: bool, counter: list, bar):
    """The one runner: advance every group from ``start`` to ``stop``, in threads (one per
    group) or in forked processes (``processes``)."""
    import sys

    if processes:
        _run_in_processes(groups, start, stop, bar)
        return
    lock, errors = threading.Lock(), []
    old = sys.getswitchinterval()
    try:
        if len(groups) > 1 and groups[0].backend == "overlaps":
            sys.setswitchinterval(2e-4)  # short GIL-bound steps: hand the GIL over sooner
        run_in_threads([partial(_run_group, g, start, stop, counter, lock, errors) for g in groups], counter, bar)
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]


def _build(cfg: TrainConfig, device):
    """The seed groups of a run, one per worker (nothing trained yet)."""
    return _build_pack([cfg], device)[0]


def _pack_workers(cfgs: list) -> int:
    """Worker groups of a pack: ``workers`` of its runs (all cores when None), at most one
    per seed; one on CUDA."""
    return max(1, min(_resolve_workers(cfgs[0]), sum(c.seeds for c in cfgs))) if len(cfgs) > 1 else \
        _resolve_workers(cfgs[0])


def _build_pack(cfgs: list, device):
    """The seed groups of a pack of runs, one per worker, and each run's units
    ``[(group, member)]`` (member None: the overlap sampler's group of the one run).

    The seeds of all runs, in run order, are split into contiguous groups as one run's seeds
    are, so a run's seeds are a contiguous block of each group they fall in."""
    workers = _pack_workers(cfgs)
    if cfgs[0].resolve_backend() == "overlaps":  # one run (pack_check refuses more)
        cfg = cfgs[0]
        parts = [list(map(int, p)) for p in np.array_split(np.arange(cfg.seeds), workers)]
        groups = [_make_group(cfg, None, p, device) for p in parts]
        return groups, [[(g, None) for g in groups]]
    shareds = [_Shared(c, device) for c in cfgs]
    tables = _Tables(shareds)
    seeds = [(r, i) for r, c in enumerate(cfgs) for i in range(c.seeds)]
    groups = []
    for part in np.array_split(np.arange(len(seeds)), workers):
        runs: dict = {}
        for q in part:
            r, i = seeds[int(q)]
            runs.setdefault(r, []).append(i)
        groups.append(_Group([(r, cfgs[r], shareds[r], idx) for r, idx in runs.items()], device, tables))
    units = [[(g, m) for g in groups for m in g.members if m.run == r] for r in range(len(cfgs))]
    return groups, units


def time_steps(cfg: TrainConfig, iterations: int, warmup: int = 2) -> dict:
    """Time ``iterations`` SGD steps of every seed of ``cfg`` as :func:`train` runs them
    (one worker thread per group, one intra-op thread each on CPU), data generation
    included, evaluation left out.  For benchmarks (:mod:`icl_kinetics.simulate.bench`).

    Returns ``{"seconds": wall seconds of the timed steps, "workers": groups,
    "seed_iterations": seeds x iterations}``; ``warmup`` untimed steps run first.  The
    process's malloc settings are :func:`train`'s (``allocator.tune_malloc``), so the steps
    timed are the steps a run takes.
    """
    import torch

    from icl_kinetics.simulate.allocator import tune_malloc

    if not isinstance(cfg, TrainConfig):
        raise ParameterError("cfg", type(cfg).__name__, "a TrainConfig")
    cfg.validate()
    iterations = positive_int("iterations", iterations, 1)
    warmup = positive_int("warmup", warmup, 0)
    tune_malloc()
    device = torch.device(cfg.device)
    old = torch.get_num_threads()
    try:
        workers = _resolve_workers(cfg)
        if cfg.device == "cpu":
            torch.set_num_threads(1 if workers > 1 else (cfg.workers or old))
        groups = _build(cfg, device)

        def run(n):
            run_in_threads([lambda g=g: [g.step() for _ in range(n)] for g in groups], [0])
            if cfg.device != "cpu":
                torch.cuda.synchronize()

        run(warmup)
        t0 = time.perf_counter()
        run(iterations)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    return {"seconds": seconds, "workers": len(groups), "seed_iterations": cfg.seeds * iterations}


#: TrainConfig fields that set a tensor shape, the model or where it runs, and the label map
#: (per-seed maps need a context table with two rows per item): equal in a pack
#: (:func:`pack_key`).  Everything else may differ between the runs of a pack: K (finite),
#: item_seed, zipf_alpha, beta0, w0, lr, weight decays, seeds, seed, seed_offset, iterations,
#: eval_every, log_every, early_stop, t_icl_threshold, checkpoint_every.
PACK_FIELDS = ("model", "N", "D", "width", "labels", "contexts", "batch_size", "eval_size", "device", "workers",
               "label_map")


def pack_key(cfg: TrainConfig) -> tuple:
    """The compatibility key of grid batching: runs with equal keys can train as one
    seed-batched group (:func:`train_packed`).  The fields of :data:`PACK_FIELDS`, whether K
    is finite (K = inf draws fresh items per seed, finite K indexes a stored table) and the
    backend; the overlap sampler's runs are never packed (their key holds the run's id)."""
    if not isinstance(cfg, TrainConfig):
        raise ParameterError("cfg", type(cfg).__name__, "a TrainConfig")
    key = tuple((f, cfg.label_map_in_use if f == "label_map" else getattr(cfg, f))
                for f in PACK_FIELDS) + (("finite K", cfg.K is not None),)
    backend = cfg.resolve_backend()
    return key + (("backend", backend),) + ((("run", cfg.config_hash()),) if backend == "overlaps" else ())


def pack_check(cfgs) -> list:
    """Raise :class:`ParameterError` unless ``cfgs`` (a non-empty list of valid TrainConfig)
    can train as one pack: equal :func:`pack_key`, no two runs with the same seeds
    (``seed``, ``seed_offset + i``) and ``item_seed`` and K.  Returns the list."""
    if isinstance(cfgs, TrainConfig) or not isinstance(cfgs, (list, tuple)) or not cfgs:
        raise ParameterError("cfgs", type(cfgs).__name__, "a non-empty list of TrainConfig")
    cfgs = list(cfgs)
    for c in cfgs:
        if not isinstance(c, TrainConfig):
            raise ParameterError("cfgs", type(c).__name__, "a list of TrainConfig")
        c.validate()
    k0 = dict(pack_key(cfgs[0]))
    for c in cfgs[1:]:
        k = dict(pack_key(c))
        # finiteness of K first: it also decides whether label_map counts (K = inf has no map)
        for f in ["finite K"] + [f for f in k0 if f != "finite K"]:
            if k[f] != k0[f]:
                if f == "run":
                    raise ParameterError("backend", "overlaps", "runs of the 'autograd' backend (the overlap "
                                         "sampler trains one run at a time)")
                if f == "finite K":
                    raise ParameterError("K", c.K, f"{'a finite K' if k0[f] else 'None (K = inf)'}, as in the "
                                         "pack's first run: runs of a pack all have finite K or all K = inf")
                raise ParameterError(f, k[f], f"{k0[f]!r}, as in the pack's first run: runs of a pack share "
                                     f"{', '.join(PACK_FIELDS)}")
    ids = [c.config_hash() for c in cfgs]
    if len(set(ids)) < len(ids):
        raise ParameterError("cfgs", "the same run twice", "distinct runs")
    return cfgs


def pack_bytes(cfgs) -> tuple[float, str]:
    """Estimated peak memory of a pack: the sum of its runs' (:meth:`TrainConfig.estimate_bytes`;
    each run's shared tables once, its seeds' parameters and activations), and the parameter
    that dominates the largest."""
    est = [c.estimate_bytes() for c in cfgs]
    return float(sum(e[0] for e in est)), max(est)[1]


def train(cfg: TrainConfig, out=None, progress: bool = True, resume: bool = True) -> TrainResult:
    """Train ``cfg.seeds`` seeds; see the module docstring.  A pack of one run
    (:func:`train_packed`).

    Args:
        cfg: the configuration.
        out: folder for ``config.json``, ``metrics.csv``, ``summary.json`` and
            ``checkpoint.pt`` (None: nothing is written and nothing resumes).
        progress: show a progress bar (tqdm) over seed-iterations.
        resume: continue from ``out/checkpoint.pt`` if it exists.  A checkpoint that cannot
            be read, fails its SHA-256 digest or belongs to another configuration (or
            backend) is renamed ``checkpoint.pt.rejected-<time>`` (a one-line warning on
            stderr, and a note in the result) and training starts from iteration 0.

    Raises:
        ParameterError: a bad configuration, a size whose memory cannot fit (naming it),
            an ``out`` that cannot be written, or an ``iterations`` cap below the
            checkpoint's iteration.

    Returns:
        :class:`TrainResult`.
    """
    if not isinstance(cfg, TrainConfig):
        raise ParameterError("cfg", type(cfg).__name__, "a TrainConfig")
    return train_packed([cfg], None if out is None else [out], progress=progress, resume=resume)[0]


def train_packed(cfgs, outs=None, progress: bool = True, resume: bool = True, on_result=None) -> list:
    """Train several runs as one seed-batched group (grid batching; docs/engine.md, "Grid
    batching").

    The runs must share every tensor shape (:func:`pack_key`); they may differ in K (and
    item_seed, zipf_alpha), lr, weight decays, seeds, initial beta / w, iterations,
    eval_every, log_every, early_stop, t_icl_threshold and checkpoint_every.  Each run keeps
    its own item table, test sets, seed streams, hyperparameters, evaluations, t_ICL, early
    stopping and out folder, written exactly as :func:`train` writes them, and its metrics
    equal the run's trained alone (bitwise on CPU while at least two seeds of the pack are
    active; docs/engine.md).  A run's checkpoint resumes alone or in any pack.

    Args:
        cfgs: the runs' configurations (list of :class:`TrainConfig`).
        outs: one folder per run (as ``out`` of :func:`train`), or None (nothing written).
        progress: a progress bar over seed-iterations (all runs).
        resume: continue each run from its ``checkpoint.pt`` (as :func:`train`).  Runs may
            resume at different iterations.
        on_result: called as ``on_result(i, result)`` when run ``i`` finishes (its files
            written), before the others have.

    Raises:
        ParameterError: a bad configuration or ``outs``; runs that cannot share a pack
            (naming the field that differs); a pack whose memory cannot fit; an ``iterations``
            cap below a run's checkpoint.

    Returns:
        list of :class:`TrainResult`, one per run, in order; ``seconds`` is the run's share
        of the pack's wall time (by its seed-iterations).
    """
    cfgs = pack_check(cfgs)
    if outs is not None:
        from icl_kinetics.io import check_output_dir

        if isinstance(outs, (str, Path)) or not isinstance(outs, (list, tuple)) or len(outs) != len(cfgs):
            raise ParameterError("outs", outs if isinstance(outs, (str, Path)) else type(outs).__name__,
                                 f"None or a list of {len(cfgs)} folders (one per run)")
        outs = [Path(o) for o in outs]
        if len({o.resolve() for o in outs}) < len(outs):
            raise ParameterError("outs", "the same folder twice", "one folder per run")
        for o in outs:
            check_output_dir("out", o)
    if len(cfgs) == 1:
        cfgs[0].require_memory()
    else:
        from icl_kinetics.resources import require_memory

        need, name = pack_bytes(cfgs)
        require_memory(name, getattr(cfgs[0], name), need, f"training a pack of {len(cfgs)} runs "
                       f"({sum(c.seeds for c in cfgs)} seeds) of {cfgs[0].model!r}")
    import torch

    from icl_kinetics.io import write_csv, write_json
    from icl_kinetics.simulate.allocator import tune_malloc

    tune_malloc()
    t0 = time.perf_counter()
    device = torch.device(cfgs[0].device)
    workers = _pack_workers(cfgs)
    processes = len(cfgs) == 1 and _use_processes(cfgs[0], workers)
    old_threads = torch.get_num_threads()
    R = len(cfgs)
    ckpts = [None] * R if outs is None else [o / "checkpoint.pt" for o in outs]
    results: list = [None] * R
    try:
        if cfgs[0].device == "cpu":
            torch.set_num_threads(1 if workers > 1 else (cfgs[0].workers or old_threads))
        groups, units, its, notes = _resume_pack(cfgs, ckpts if resume else [None] * R, device)
        if outs is not None:
            for c, o in zip(cfgs, outs):
                write_json(o / "config.json", {**c.to_dict(), "config_hash": c.config_hash()})
        bar = None
        if progress:
            from tqdm.auto import tqdm

            desc = f"train {cfgs[0].model}" + (f" ({R} runs)" if R > 1 else "")
            bar = tqdm(total=sum(c.seeds * c.iterations for c in cfgs), initial=sum(sum(g.its) for g in groups),
                       unit="seed-it", desc=desc, smoothing=0.05)
        counter = [0]
        live = list(range(R))

        def boundary(r):  # the run's next checkpoint (train's segment end)
            c = cfgs[r]
            return min(c.iterations, (its[r] // c.checkpoint_every + 1) * c.checkpoint_every)

        def idle(r):  # no seed of run r steps any more
            return not any(g.active if m is None else m.active() for g, m in units[r])

        def save(r):
            if ckpts[r] is not None:
                _save(ckpts[r], cfgs[r], units[r], its[r])
                write_csv(outs[r] / "metrics.csv", metrics_table(cfgs[r], _run_rows(units[r])))

        def finish(r):
            save(r)
            live.remove(r)
            for g, m in units[r]:  # a finished run's seeds step no more
                if m is not None and m.active():
                    g.deactivate(m.active())
            done = sum(sum(g.its) for g in groups)
            res = _result(cfgs[r], units[r], its[r], 0.0)
            res.seconds = (time.perf_counter() - t0) * (res.seed_iterations / done if done else 1.0 / R)
            res.notes = notes[r]
            if outs is not None:
                write_json(outs[r] / "summary.json", res.summary())
            results[r] = res
            if on_result is not None:
                on_result(r, res)

        while live:
            for r in list(live):  # a run with no seed left ends at its next checkpoint, as alone
                if idle(r):
                    its[r] = boundary(r)
                    finish(r)
            if not live:
                break
            ends = {r: boundary(r) for r in live}
            L = min(ends[r] - its[r] for r in live)
            base = its[live[0]]
            for r in live:
                for g, m in units[r]:
                    if m is not None:
                        m.shift = its[r] - base
            _run_segment(groups, base, base + L, processes, counter, bar)
            for r in live:
                its[r] += L
            for r in list(live):
                if its[r] == ends[r]:
                    if its[r] >= cfgs[r].iterations or idle(r):
                        finish(r)
                    else:
                        save(r)
        if bar is not None:
            bar.close()
    finally:
        torch.set_num_threads(old_threads)
    return results


def _run_rows(units) -> list:
    rows = [r for g, m in units for r in (g.rows if m is None else m.rows)]
    rows.sort(key=lambda r: (r["seed"], r["iteration"]))
    return rows


def _rows(groups) -> list:
    return _run_rows([(g, None) for g in groups])


def metrics_table(cfg: TrainConfig, rows: list) -> list:
    """The rows of a run's ``metrics.csv``: each metrics row (:data:`METRIC_COLUMNS`) after
    ``run_id`` (the run's sweep id, :func:`icl_kinetics.simulate.sweeps.run_id`) and the
    grid columns (:data:`icl_kinetics.simulate.sweeps.GRID_COLUMNS`; K = inf for fresh
    items), with the values ``sweep collect`` writes, so that the file is a table of the
    validation schema as it stands (``icl-kinetics validate --runs OUT/metrics.csv``).

    Args:
        cfg: the run's configuration.
        rows: its metrics rows (``TrainResult.rows``; iterations, nats, ...: docs/engine.md).

    Returns:
        list of dicts, one per row, keys in the file's column order.
    """
    # imported here: the sweeps package imports this module
    from icl_kinetics.simulate.sweeps.spec import GRID_COLUMNS, run_id

    d = cfg.to_dict()
    head = {"run_id": run_id(cfg), **{k: (float("inf") if (k == "K" and d[k] is None) else d[k])
                                      for k in GRID_COLUMNS}}
    return [{**head, **r} for r in rows]


def _result(cfg, units, it, seconds) -> TrainResult:
    t_icl, status, reasons, its = [], [], [], 0
    for g, m in units:
        lo, hi = (0, len(g.t_icl)) if m is None else (m.lo, m.hi)
        t_icl += g.t_icl[lo:hi]
        status += g.status[lo:hi]
        reasons += g.reasons[lo:hi]
        its += sum(g.its[lo:hi])
    return TrainResult(cfg, t_icl, status, reasons, it, _run_rows(units), seconds, its)


def _resume_pack(cfgs: list, ckpts: list, device):
    """Build a pack's groups and restore each run from its checkpoint (None: none):
    (groups, units per run, iteration per run, notes per run).

    A checkpoint that cannot be read, is damaged or belongs to another configuration is
    renamed (:func:`_set_aside`), a one-line warning naming it goes to stderr, and that run
    starts from scratch (iteration 0, a note); the pack is then built afresh, so nothing of
    a half-loaded state remains."""
    import sys

    notes: list = [[] for _ in cfgs]
    while True:
        groups, units = _build_pack(cfgs, device)
        its = [0] * len(cfgs)
        bad = None
        for r, path in enumerate(ckpts):
            if path is None or not path.exists():
                continue
            try:
                st = _load_checkpoint(path)
                _check_state(st, cfgs[r], [g for g, _ in units[r]])
                try:
                    its[r] = _restore(units[r], st)
                except Exception as e:  # a state that passed the checks but does not fit together
                    raise CheckpointError(f"inconsistent state ({type(e).__name__}: {e})") from None
            except CheckpointError as e:
                bad = (r, _set_aside(path, str(e)))
                break
        if bad is None:
            return groups, units, its, notes
        r, note = bad
        notes[r].append(note)
        sys.stderr.write(f"icl-kinetics: warning: {note}\n")
