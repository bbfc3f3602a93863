"""Executors: run a sweep's pending runs locally (a process pool) or on SLURM (submitit).

Both call :func:`execute_run` for each run, which trains it with the engine into the
store's run folder and records its status; so both share one results layout and one
``collect`` step.  A run is protected by a file lock while it executes, and resumes
from its last checkpoint when it was interrupted.

**Failures.**  The local pool knows which run each worker process holds.  A worker that
dies (the out-of-memory killer's SIGKILL, a crash in native code) is reported with its
run, its exit signal and the likely cause; that run stays pending (it resumes from its
checkpoint on the next ``sweep run``; it is not retried at once, since an OOM kill would
repeat), a new worker takes its place, and the sweep goes on.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque

from icl_kinetics.errors import EnvironmentFailure, ParameterError, one_of
from icl_kinetics.resources import is_memory_refusal
from icl_kinetics.simulate.sweeps.store import SweepStore, metrics_record

EXECUTORS = ("local", "slurm")


def _die_with_parent():
    """Linux: have the kernel kill this worker when the process that started it dies, so a
    SIGKILLed sweep leaves no orphan that keeps writing into the store."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - other platforms: the run lock still protects the store
        pass


def _pool_init(threads: int):
    _die_with_parent()
    import torch

    torch.set_num_threads(threads)


#: most seeds in one pack (grid batching) on CPU and on CUDA: beyond a few dozen seeds a CPU
#: step's per-iteration overhead is already spread thin, and smaller packs balance the pool
PACK_MAX_SEEDS = {"cpu": 32, "cuda": 1024}
#: the local pool aims for at least this many packs per worker process (when there are runs
#: enough), so that a pack finishing early, or stopping early, leaves no core idle for long
PACKS_PER_PROCESS = 2


def plan_packs(runs, processes: int = 1, max_seeds: int | None = None, memory: float | None = None) -> list[list]:
    """Group runs (:class:`~icl_kinetics.simulate.sweeps.spec.RunSpec`) into packs that train
    as one seed-batched group (grid batching, :func:`icl_kinetics.simulate.engine.train_packed`).

    Runs pack together when their configurations, as executed (``workers=1``), have equal
    :func:`~icl_kinetics.simulate.engine.pack_key`.  A pack holds at most ``max_seeds`` seeds
    (default :data:`PACK_MAX_SEEDS` for the device) and an estimated peak memory
    (:func:`~icl_kinetics.simulate.engine.pack_bytes`) of at most ``memory`` / ``processes``
    bytes (``memory`` None: no limit; the executors pass the memory available).  Compatible
    runs are split into more packs while there are fewer than :data:`PACKS_PER_PROCESS` x
    ``processes`` packs.  Runs are dealt to a key's packs longest first, onto the pack with the
    least estimated cost that has room (a new pack when none has).

    Returns:
        list of packs (lists of runs), longest (estimated cost) first.
    """
    import math
    from dataclasses import replace

    from icl_kinetics.simulate.engine import pack_key
    from icl_kinetics.simulate.sweeps.presets import pack_seconds, run_cost

    runs = list(runs)
    processes = max(1, int(processes))
    by_key: dict = {}
    for r in runs:
        by_key.setdefault(pack_key(replace(r.config, workers=1)), []).append(r)
    cost = {r.id: run_cost(r.config) for r in runs}
    nbytes = {r.id: r.config.estimate_bytes()[0] for r in runs}
    budget = math.inf if memory is None else memory / processes
    n = {}
    for k, rs in by_key.items():
        cap = max_seeds or PACK_MAX_SEEDS[rs[0].config.device]
        seeds = sum(r.config.seeds for r in rs)
        need = sum(nbytes[r.id] for r in rs)
        n[k] = min(len(rs), max(math.ceil(seeds / cap), math.ceil(need / budget) if budget > 0 else 1, 1))
    while sum(n.values()) < PACKS_PER_PROCESS * processes:
        can = [k for k in by_key if n[k] < len(by_key[k])]
        if not can:
            break
        k = max(can, key=lambda k: sum(cost[r.id] for r in by_key[k]) / n[k])
        n[k] += 1
    packs = []
    for k, rs in by_key.items():
        cap = max_seeds or PACK_MAX_SEEDS[rs[0].config.device]
        bins = [[] for _ in range(n[k])]
        load, seeds, mem = [0.0] * n[k], [0] * n[k], [0.0] * n[k]
        for r in sorted(rs, key=lambda r: -cost[r.id]):
            b = nbytes[r.id]
            fit = [i for i in range(len(bins)) if not bins[i] or (seeds[i] + r.config.seeds <= cap
                                                                 and mem[i] + b <= budget)]
            if not fit:  # no pack has room: a new one
                bins.append([])
                load.append(0.0)
                seeds.append(0)
                mem.append(0.0)
                fit = [len(bins) - 1]
            i = min(fit, key=lambda i: (load[i], len(bins[i])))
            bins[i].append(r)
            load[i] += cost[r.id]
            seeds[i] += r.config.seeds
            mem[i] += b
        order = {r.id: q for q, r in enumerate(rs)}
        packs += [sorted(b, key=lambda r: order[r.id]) for b in bins if b]
    packs.sort(key=lambda p: -pack_seconds([r.config for r in p]))
    return packs


def execute_run(sweep_dir: str, rid: str, workers: int = 1) -> dict:
    """Train run ``rid`` of the sweep in ``sweep_dir`` alone: :func:`execute_pack` of one run.
    Returns the run's status dict."""
    return execute_pack(sweep_dir, [rid], workers)[rid]


def execute_pack(sweep_dir: str, rids, workers: int = 1) -> dict:
    """Train the runs ``rids`` of the sweep in ``sweep_dir`` as one pack (grid batching;
    :func:`icl_kinetics.simulate.engine.train_packed`), each resuming from its checkpoint,
    and record each run's status as it finishes.  Skips runs that are done or failed, or
    locked by another process; the rest must share a pack key (``plan_packs``).

    A run whose training loss became non-finite for any seed is recorded as ``failed`` with
    the engine's reason; an exception fails every run of the pack not yet finished, with its
    message; a pack refused for memory leaves its runs pending.  A run's ``seconds`` is its
    share of the pack's time (by seed-iterations).

    Returns:
        {run_id: status dict}.
    """
    from contextlib import ExitStack
    from dataclasses import replace

    from icl_kinetics.simulate.engine import pack_bytes, train_packed

    store = SweepStore(sweep_dir)
    rids = [rids] if isinstance(rids, str) else list(rids)
    for rid in rids:
        if rid not in store.runs:
            raise ParameterError("run_id", rid, f"a run of sweep {store.spec.name}")
    out: dict = {}
    with ExitStack() as stack:
        todo, notes = [], {}
        for rid in rids:
            if not stack.enter_context(store.lock(rid)):
                out[rid] = {"status": "running", "reason": "another process is executing it"}
                continue
            st = store.read_status(rid)
            if st["status"] in ("done", "failed"):
                out[rid] = st
                continue
            todo.append(rid)
            notes[rid] = [f"re-run: {st['reason']}"] if st["status"] == "damaged" else []
        if not todo:
            return out
        cfgs = [replace(store.runs[rid].config, workers=workers) for rid in todo]
        t0 = time.time()
        for rid in todo:
            _clear_stale_temp_files(store.run_dir(rid))
            store.write_status(rid, {"status": "running", "pid": os.getpid(), "started": t0, "notes": notes[rid]})

        def record(i, res):
            rid, cfg = todo[i], cfgs[i]
            bad = [f"seed {cfg.seed_offset + q}: {r}" for q, (s, r) in enumerate(zip(res.status, res.reasons))
                   if s == "diverged"]
            st = {"status": "failed" if bad else "done", "reason": "; ".join(bad), "seconds": res.seconds,
                  "t_icl": res.t_icl, "metrics": metrics_record(store.run_dir(rid) / "metrics.csv"),
                  "started": t0, "finished": time.time(), "pid": os.getpid(), "notes": notes[rid] + res.notes}
            store.write_status(rid, st)
            out[rid] = st

        try:
            try:
                if len(cfgs) == 1:
                    cfgs[0].require_memory()
                else:
                    from icl_kinetics.resources import require_memory

                    need, name = pack_bytes(cfgs)
                    require_memory(name, getattr(cfgs[0], name), need, f"training a pack of {len(cfgs)} runs")
            except ParameterError as e:  # not the runs' fault: the machine is busy now; try again later
                if not is_memory_refusal(e):
                    raise
                for rid in todo:
                    out[rid] = {"status": "pending", "reason": f"not started: {e}", "notes": notes[rid]}
                    store.write_status(rid, out[rid])
                return out
            train_packed(cfgs, [store.run_dir(rid) for rid in todo], progress=False, resume=True, on_result=record)
        except Exception as e:  # recorded, and the sweep goes on
            for rid in todo:
                if rid not in out:
                    out[rid] = {"status": "failed", "reason": f"{type(e).__name__}: {e}", "seconds": time.time() - t0,
                                "started": t0, "finished": time.time(), "pid": os.getpid(), "notes": notes[rid]}
                    store.write_status(rid, out[rid])
        return out


def _clear_stale_temp_files(d) -> None:
    """Remove temporary files a killed process left in a run folder (``.NAME.tmpPID``)."""
    from pathlib import Path

    for p in Path(d).glob(".*.tmp*"):
        try:
            p.unlink()
        except OSError:
            pass


def run_local(store: SweepStore, processes: int | None = None, progress: bool = True,
              retry_failed: bool = False, only=None) -> dict:
    """Execute the pending runs in a pool of ``processes`` worker processes (default: one
    per core), each with one thread, so the cores are used once and not oversubscribed.

    Each run's engine always uses one worker thread on CPU: the grouping of seeds into
    batched matmuls changes the last bits of the numbers, so a fixed grouping makes a
    run's metrics independent of the executor and of the machine's core count."""
    run_local_many([store], processes=processes, progress=progress, retry_failed=retry_failed,
                   desc=f"sweep {store.spec.name}", only=only)
    return store.summary()


def run_local_many(stores, processes: int | None = None, progress: bool = True, retry_failed: bool = False,
                   desc: str = "sweeps", only=None) -> dict:
    """Execute the pending runs of several sweeps in ONE pool, longest first (estimated
    cost), so the cores stay busy to the end instead of each sweep finishing a long tail
    on one core before the next begins; with ``only`` (a collection of run ids), only those
    (the rest stay pending).  Returns {sweep name: summary}."""
    from icl_kinetics.resources import available_memory
    from icl_kinetics.simulate.sweeps.presets import pack_seconds

    names = [s.spec.name for s in stores]
    if len(set(names)) < len(names):
        raise ParameterError("stores", names, "sweeps with distinct names")
    todo = []  # (store, run)
    for store in stores:
        pend = [r for r in store.pending(retry_failed) if only is None or r.id in only]
        if retry_failed:
            for r in pend:
                if store.read_status(r.id)["status"] == "failed":
                    store.write_status(r.id, {"status": "pending", "reason": "retrying"})
        todo += [(store, r) for r in pend]
    cores = os.cpu_count() or 1
    cuda = any(r.config.device == "cuda" for _, r in todo)
    want = 1 if cuda else max(1, processes or cores)
    try:
        memory = available_memory()
    except Exception:  # pragma: no cover - no figure for the memory: the seed cap alone
        memory = None
    # grid batching: each sweep's compatible runs train as packs, one pack per worker process
    packs = [(store, p) for store in stores
             for p in plan_packs([r for s, r in todo if s is store], processes=want, memory=memory)]
    packs.sort(key=lambda sp: -pack_seconds([r.config for r in sp[1]]))
    processes = 1 if cuda else max(1, min(want, len(packs) or 1))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(r.seed_iterations for s in stores for r in s.runs.values() if only is None or r.id in only)
        bar = tqdm(total=total, unit="seed-it", desc=desc, smoothing=0.1,
                   initial=total - sum(r.seed_iterations for _, r in todo))
    todo = packs
    if todo:
        _run_pool(todo, processes, bar)
    if bar is not None:
        bar.close()
    return {s.spec.name: s.summary() for s in stores}


def _worker_main(conn, threads: int) -> None:
    """A pool worker: execute runs sent over ``conn`` until told to stop (None).  Ctrl-C goes
    to the driver, which stops the workers; a worker ignores it (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # born blocked (_ignore_sigint); ignored now
    _pool_init(threads)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            conn.send(("ok", execute_pack(*task)))
        except BaseException as e:  # execute_run records failures itself; this is a bug or a kill
            conn.send(("error", f"{type(e).__name__}: {e}"))


def _ignore_sigint():
    """Ignore Ctrl-C while a worker is born (it inherits the ignored disposition), with
    SIGINT also blocked: Linux keeps a blocked signal pending even while it is ignored, so a
    Ctrl-C in this window reaches the driver when :func:`_restore_sigint` unblocks it, and is
    not lost (the sweep would then run on to the end and exit 0)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    return signal.signal(signal.SIGINT, signal.SIG_IGN), mask


def _restore_sigint(old) -> None:
    if old is not None:
        handler, mask = old
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C that came meanwhile is delivered now


class _Worker:
    """One worker process of the local pool and the run it holds."""

    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, 1), daemon=True)
        # born with Ctrl-C ignored (an ignored signal stays ignored across exec, and Python
        # then installs no KeyboardInterrupt handler): the driver alone handles it, and no
        # worker prints a traceback while it is still importing
        old = _ignore_sigint()
        try:
            self.proc.start()
        finally:
            _restore_sigint(old)
        child.close()
        self.job = None  # (store, pack (runs), started)
        self.born, self.done_any = time.time(), False

    def stop(self, deadline: float):
        """Wait for the worker to exit until ``deadline`` (``time.monotonic``), then kill it."""
        self.proc.join(max(0.0, deadline - time.monotonic()))
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(1.0)
        self.conn.close()

    def tell_stop(self):
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass


def describe_exit(code) -> str:
    """Words for a dead worker's exit code, with the likely cause."""
    if code is None:
        return "vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        cause = {"SIGKILL": "likely the out-of-memory killer (see 'dmesg') or a kill by hand",
                 "SIGSEGV": "a crash in native code", "SIGBUS": "a crash in native code (or a full /dev/shm)",
                 "SIGTERM": "terminated by the system or a scheduler", "SIGABRT": "aborted in native code"}
        return f"killed by {name}" + (f" ({cause[name]})" if name in cause else "")
    return f"exited with code {code}"


def _record_lost(store: SweepStore, run, why: str) -> dict:
    """A run whose worker was lost: record it as pending with ``why`` (unless it finished:
    a worker can die after writing its status) and say so on stderr."""
    import sys

    with store.lock(run.id) as mine:
        if mine:
            st = store.read_status(run.id)
            if st["status"] in ("done", "failed"):
                return st
            store.write_status(run.id, {"status": "pending", "reason": why})
    sys.stderr.write(f"icl-kinetics: warning: run {store.spec.name}/{run.id}: {why}\n")
    return {"status": "pending", "reason": why}


def _worker_died(store: SweepStore, run, worker: _Worker, started: float) -> dict:
    """Record a dead worker's run as pending with the cause (it resumes from its checkpoint)."""
    what = describe_exit(worker.proc.exitcode)
    return _record_lost(store, run, f"worker process {worker.proc.pid} {what} after {time.time() - started:.0f} s; "
                        "resumes from its last checkpoint on the next 'sweep run'")


#: a worker that dies within this many seconds of starting, before finishing a run, died "at start"
START_GRACE = 20.0
#: that many such deaths in a row abort the sweep: the installation, not a run, is at fault
MAX_FAILED_STARTS = 3


def _run_pool(todo, processes: int, bar) -> None:
    """Execute ``todo`` [(store, pack)] (a pack: a list of runs, :func:`plan_packs`) in
    ``processes`` spawned worker processes, in order.

    Each worker is told one pack at a time, so a worker that dies is matched to its runs;
    a new worker replaces it and the queue goes on."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # fresh interpreters: no torch state inherited through fork
    queue = deque(todo)
    workers = [_Worker(ctx) for _ in range(processes)]
    failed_starts = [0]  # consecutive workers that died before finishing any run

    def replace(i: int, why: str) -> None:
        """Replace dead worker ``i``; abort the sweep when new workers keep dying at start."""
        w = workers[i]
        w.conn.close()
        if not w.done_any and time.time() - w.born < START_GRACE:
            failed_starts[0] += 1
            if failed_starts[0] >= MAX_FAILED_STARTS:
                raise EnvironmentFailure(f"{failed_starts[0]} worker processes in a row died at start "
                                         f"({describe_exit(w.proc.exitcode)}): this installation cannot run them "
                                         f"(try: {sys.executable} -c 'import icl_kinetics.simulate')")
        else:
            failed_starts[0] = 0
        if why:
            sys.stderr.write(f"icl-kinetics: warning: {why}\n")
        workers[i] = _Worker(ctx)

    try:
        while queue or any(w.job for w in workers):
            for i in range(len(workers)):
                while workers[i].job is None and queue:  # retry this slot until a worker takes the run
                    w = workers[i]
                    store, pack = queue[0]
                    try:
                        if not w.proc.is_alive():
                            raise BrokenPipeError
                        w.conn.send((str(store.root), [r.id for r in pack]))
                    except (OSError, ValueError):  # died while idle: replace it, keep the run queued
                        w.proc.join()
                        replace(i, f"idle worker process {w.proc.pid} {describe_exit(w.proc.exitcode)}; "
                                   "starting a new one")
                        continue
                    queue.popleft()
                    w.job = (store, pack, time.time())
            busy = [w for w in workers if w.job]
            if not busy:
                continue
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
            for i, w in enumerate(workers):
                if w.job is None or (w.conn not in ready and w.proc.sentinel not in ready):
                    continue
                store, pack, started = w.job
                msg = None
                try:
                    if w.conn.poll():
                        msg = w.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is None:
                    if w.proc.is_alive():  # a spurious wake-up: the sentinel is not ready yet
                        continue
                    w.proc.join()
                    res = {r.id: _worker_died(store, r, w, started) for r in pack}
                    replace(i, "")
                else:
                    kind, res = msg
                    if kind != "ok":
                        res = {r.id: _record_lost(store, r, f"the worker could not execute it: {res}") for r in pack}
                    w.job = None
                    w.done_any = True
                    failed_starts[0] = 0
                store.write_index()
                if bar is not None:
                    bar.update(sum(r.seed_iterations for r in pack))
                    what = pack[0].id + (f" (+{len(pack) - 1} packed)" if len(pack) > 1 else "")
                    bar.set_postfix_str(f"{store.spec.name}/{what}: {res.get(pack[0].id, {}).get('status')}")
    finally:
        for w in workers:
            w.tell_stop()
        deadline = time.monotonic() + 5.0
        for w in workers:
            w.stop(deadline)


def run_submitit(store: SweepStore, executor=None, progress: bool = True, retry_failed: bool = False,
                 slurm: dict | None = None, poll: float = 2.0, only=None) -> dict:
    """Execute the pending runs as one submitit job array and wait for it.

    Args:
        executor: a submitit executor (e.g. ``submitit.LocalExecutor(folder)`` for tests);
            default ``submitit.AutoExecutor(DIR/submitit)`` with ``slurm`` parameters
            (e.g. ``{"slurm_partition": "gpu", "timeout_min": 600, "gpus_per_node": 1}``).
    """
    try:
        import submitit
    except ImportError:  # pragma: no cover - depends on the install
        raise ParameterError("executor", "slurm", "'local' (submitit is not installed: "
                             "pip install 'icl-kinetics[cluster]')") from None
    pend = [r for r in store.pending(retry_failed) if only is None or r.id in only]
    if retry_failed:
        for r in pend:
            if store.read_status(r.id)["status"] == "failed":
                store.write_status(r.id, {"status": "pending", "reason": "retrying"})
    if executor is None:
        executor = submitit.AutoExecutor(folder=str(store.root / "submitit"))
        executor.update_parameters(**(slurm or {}))
    # one job per pack (grid batching); a job's packs are planned for a one-process job
    packs = plan_packs(pend, processes=1)
    todo = [p[0] for p in packs]  # a pack is named by its first run
    if todo:
        jobs = executor.map_array(execute_pack, [str(store.root)] * len(packs), [[r.id for r in p] for p in packs])
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), unit="run", desc=f"sweep {store.spec.name} (submitit)")
        done = set()
        while len(done) < len(jobs):
            for j, r in zip(jobs, todo):
                if r.id not in done and j.done():
                    done.add(r.id)
                    try:
                        j.result()
                    except Exception as e:  # the job itself died (e.g. preempted): record its runs
                        for q in packs[todo.index(r)]:
                            if store.read_status(q.id)["status"] not in ("done", "failed"):
                                store.write_status(q.id, {"status": "failed", "reason": f"job {j.job_id}: {e}"})
                    if bar is not None:
                        bar.update(1)
            store.write_index()
            if len(done) < len(jobs):
                time.sleep(poll)
        if bar is not None:
            bar.close()
    return store.summary()


def require_slurm() -> None:
    """Refuse ``executor='slurm'`` where SLURM is absent (submitit would quietly run local
    processes instead)."""
    import shutil

    if shutil.which("sbatch") is None:
        raise ParameterError("executor", "slurm", "'local' on this machine: SLURM's sbatch is not on PATH "
                             "(ask for --executor local to run here)")


def run_sweep(spec, out, executor: str = "local", progress: bool = True, retry_failed: bool = False,
              processes: int | None = None, submitit_executor=None, slurm: dict | None = None,
              only=None) -> dict:
    """Create (or reopen) the sweep's folder ``out`` and execute its pending runs (with
    ``only``, a collection of run ids: those of them; the rest stay pending)."""
    one_of("executor", executor, EXECUTORS)
    if executor == "slurm" and submitit_executor is None:
        require_slurm()
    store = SweepStore.create(out, spec)
    if executor == "local":
        return run_local(store, processes=processes, progress=progress, retry_failed=retry_failed, only=only)
    return run_submitit(store, executor=submitit_executor, progress=progress, retry_failed=retry_failed,
                        slurm=slurm, only=only)
