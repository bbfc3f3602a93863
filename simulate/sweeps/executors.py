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


def execute_run(sweep_dir: str, rid: str, workers: int = 1) -> dict:
    """Train run ``rid`` of the sweep in ``sweep_dir`` (resuming from its checkpoint) and
    record its status.  Skips a run that is done or failed, or locked by another process.

    A run whose training loss became non-finite for any seed is recorded as ``failed``
    with the engine's reason; an exception is recorded as ``failed`` with its message.
    Returns the run's status dict.
    """
    from dataclasses import replace

    from icl_kinetics.simulate.engine import train

    store = SweepStore(sweep_dir)
    if rid not in store.runs:
        raise ParameterError("run_id", rid, f"a run of sweep {store.spec.name}")
    with store.lock(rid) as mine:
        if not mine:
            return {"status": "running", "reason": "another process is executing it"}
        st = store.read_status(rid)
        if st["status"] in ("done", "failed"):
            return st
        notes = [f"re-run: {st['reason']}"] if st["status"] == "damaged" else []
        cfg = replace(store.runs[rid].config, workers=workers)
        t0 = time.time()
        _clear_stale_temp_files(store.run_dir(rid))
        store.write_status(rid, {"status": "running", "pid": os.getpid(), "started": t0, "notes": notes})
        try:
            try:
                cfg.require_memory()
            except ParameterError as e:  # not the run's fault: the machine is busy now; try again later
                if not is_memory_refusal(e):
                    raise
                st = {"status": "pending", "reason": f"not started: {e}", "notes": notes}
                store.write_status(rid, st)
                return st
            res = train(cfg, out=store.run_dir(rid), progress=False, resume=True)
            bad = [f"seed {cfg.seed_offset + i}: {r}" for i, (s, r) in enumerate(zip(res.status, res.reasons))
                   if s == "diverged"]
            notes += res.notes
            st = {"status": "failed" if bad else "done", "reason": "; ".join(bad),
                  "seconds": res.seconds, "t_icl": res.t_icl,
                  "metrics": metrics_record(store.run_dir(rid) / "metrics.csv")}
        except Exception as e:  # recorded, and the sweep goes on
            st = {"status": "failed", "reason": f"{type(e).__name__}: {e}", "seconds": time.time() - t0}
        st.update(started=t0, finished=time.time(), pid=os.getpid(), notes=notes)
        store.write_status(rid, st)
        return st


def _clear_stale_temp_files(d) -> None:
    """Remove temporary files a killed process left in a run folder (``.NAME.tmpPID``)."""
    from pathlib import Path

    for p in Path(d).glob(".*.tmp*"):
        try:
            p.unlink()
        except OSError:
            pass


def run_local(store: SweepStore, processes: int | None = None, progress: bool = True,
              retry_failed: bool = False) -> dict:
    """Execute the pending runs in a pool of ``processes`` worker processes (default: one
    per core), each with one thread, so the cores are used once and not oversubscribed.

    Each run's engine always uses one worker thread on CPU: the grouping of seeds into
    batched matmuls changes the last bits of the numbers, so a fixed grouping makes a
    run's metrics independent of the executor and of the machine's core count."""
    run_local_many([store], processes=processes, progress=progress, retry_failed=retry_failed,
                   desc=f"sweep {store.spec.name}")
    return store.summary()


def run_local_many(stores, processes: int | None = None, progress: bool = True, retry_failed: bool = False,
                   desc: str = "sweeps") -> dict:
    """Execute the pending runs of several sweeps in ONE pool, longest first (estimated
    cost), so the cores stay busy to the end instead of each sweep finishing a long tail
    on one core before the next begins.  Returns {sweep name: summary}."""
    from icl_kinetics.simulate.sweeps.presets import ms_per_seed_iteration

    names = [s.spec.name for s in stores]
    if len(set(names)) < len(names):
        raise ParameterError("stores", names, "sweeps with distinct names")
    todo = []  # (store, run)
    for store in stores:
        pend = store.pending(retry_failed)
        if retry_failed:
            for r in pend:
                if store.read_status(r.id)["status"] == "failed":
                    store.write_status(r.id, {"status": "pending", "reason": "retrying"})
        todo += [(store, r) for r in pend]
    todo.sort(key=lambda sr: -sr[1].seed_iterations * ms_per_seed_iteration(sr[1].config))
    cores = os.cpu_count() or 1
    if any(r.config.device == "cuda" for _, r in todo):
        processes = 1
    else:
        processes = max(1, min(processes or cores, len(todo) or 1))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(r.seed_iterations for s in stores for r in s.runs.values())
        bar = tqdm(total=total, unit="seed-it", desc=desc, smoothing=0.1,
                   initial=total - sum(r.seed_iterations for _, r in todo))
    if todo:
        _run_pool(todo, processes, bar)
    if bar is not None:
        bar.close()
    return {s.spec.name: s.summary() for s in stores}


def _worker_main(conn, threads: int) -> None:
    """A pool worker: execute runs sent over ``conn`` until told to stop (None).  Ctrl-C goes
    to the driver, which stops the workers; a worker ignores it (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pool_init(threads)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            conn.send(("ok", execute_run(*task)))
        except BaseException as e:  # execute_run records failures itself; this is a bug or a kill
            conn.send(("error", f"{type(e).__name__}: {e}"))


def _ignore_sigint():
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def _restore_sigint(old) -> None:
    if old is not None:
        signal.signal(signal.SIGINT, old)


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
        self.job = None  # (store, run, started)
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
    """Execute ``todo`` [(store, run)] in ``processes`` spawned worker processes, in order.

    Each worker is told one run at a time, so a worker that dies is matched to its run;
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
                    store, r = queue[0]
                    try:
                        if not w.proc.is_alive():
                            raise BrokenPipeError
                        w.conn.send((str(store.root), r.id))
                    except (OSError, ValueError):  # died while idle: replace it, keep the run queued
                        w.proc.join()
                        replace(i, f"idle worker process {w.proc.pid} {describe_exit(w.proc.exitcode)}; "
                                   "starting a new one")
                        continue
                    queue.popleft()
                    w.job = (store, r, time.time())
            busy = [w for w in workers if w.job]
            if not busy:
                continue
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
            for i, w in enumerate(workers):
                if w.job is None or (w.conn not in ready and w.proc.sentinel not in ready):
                    continue
                store, r, started = w.job
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
                    res = _worker_died(store, r, w, started)
                    replace(i, "")
                else:
                    kind, res = msg
                    if kind != "ok":
                        res = _record_lost(store, r, f"the worker could not execute it: {res}")
                    w.job = None
                    w.done_any = True
                    failed_starts[0] = 0
                store.write_index()
                if bar is not None:
                    bar.update(r.seed_iterations)
                    bar.set_postfix_str(f"{store.spec.name}/{r.id}: {res['status']}")
    finally:
        for w in workers:
            w.tell_stop()
        deadline = time.monotonic() + 5.0
        for w in workers:
            w.stop(deadline)


def run_submitit(store: SweepStore, executor=None, progress: bool = True, retry_failed: bool = False,
                 slurm: dict | None = None, poll: float = 2.0) -> dict:
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
    todo = store.pending(retry_failed)
    if executor is None:
        executor = submitit.AutoExecutor(folder=str(store.root / "submitit"))
        executor.update_parameters(**(slurm or {}))
    if todo:
        jobs = executor.map_array(execute_run, [str(store.root)] * len(todo), [r.id for r in todo])
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
                    except Exception as e:  # the job itself died (e.g. preempted): record it
                        store.write_status(r.id, {"status": "failed", "reason": f"job {j.job_id}: {e}"})
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
              processes: int | None = None, submitit_executor=None, slurm: dict | None = None) -> dict:
    """Create (or reopen) the sweep's folder ``out`` and execute its pending runs."""
    one_of("executor", executor, EXECUTORS)
    if executor == "slurm" and submitit_executor is None:
        require_slurm()
    store = SweepStore.create(out, spec)
    if executor == "local":
        return run_local(store, processes=processes, progress=progress, retry_failed=retry_failed)
    return run_submitit(store, executor=submitit_executor, progress=progress, retry_failed=retry_failed,
                        slurm=slurm)
