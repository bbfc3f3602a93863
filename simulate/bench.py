"""Engine benchmark: the fast seed-batched engine against the naive one-seed reference,
measured side by side in one run, plus the machine's matmul-bound floor.

Used by ``benchmarks/bench_engine.py`` and ``icl-kinetics bench engine``.  All times
are wall-clock seconds on this machine; throughput is in seed-iterations per second
(one SGD step of one seed on ``batch_size`` sequences, data generation included).
"""

from __future__ import annotations

import os
import threading
import time


def mlp_flops(batch: int, token_dim: int, width: int) -> float:
    """FLOPs of one MLP forward + backward pass (T -> width -> width -> 1) for one seed.

    Forward 2 B (T w + w w + w); backward twice that, less the input gradient of the
    first layer (not needed), i.e. weight gradients for all three layers and input
    gradients for the last two.
    """
    fwd = 2 * batch * (token_dim * width + width * width + width)
    bwd = 2 * batch * (token_dim * width + width * width + width) + 2 * batch * (width * width + width)
    return float(fwd + bwd)


def matmul_peak(seeds: int, workers: int, batch: int, width: int, seconds: float = 1.0, device="cpu") -> float:
    """Peak float32 GFLOP/s of the engine's largest matmul shape, (S/W, B, w) x (S/W, w, w),
    run the way the engine runs it: ``workers`` threads with one intra-op thread each."""
    import torch

    per = max(1, seeds // workers)
    xs = [torch.randn(per, batch, width, device=device) for _ in range(workers)]
    ws = [torch.randn(per, width, width, device=device) for _ in range(workers)]
    counts = [0] * workers
    stop = [False]

    def run(i):
        n = 0
        while not stop[0]:
            torch.bmm(xs[i], ws[i])
            n += 1
        counts[i] = n

    for i in range(workers):  # warm up
        torch.bmm(xs[i], ws[i])
    t0 = time.perf_counter()
    ths = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in ths:
        t.start()
    time.sleep(seconds)
    stop[0] = True
    for t in ths:
        t.join()
    if str(device) != "cpu":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return sum(counts) * per * 2 * batch * width * width / dt / 1e9


def bench_engine(quick: bool = False, seeds: int = 16, workers: int | None = None, device: str = "cpu",
                 N: int = 99, K: int = 20_000, width: int = 512, batch_size: int = 128) -> dict:
    """Measure the fast engine and the naive reference at the paper's shapes.

    Returns a dict with ``seed_iterations_per_s`` (fast engine), ``speedup`` (fast /
    naive, measured in this run), ``floor_fraction`` (the matmul-bound time per
    seed-iteration over the measured one) and the absolute figures behind them.
    """
    import torch

    from icl_kinetics.simulate import data as dm
    from icl_kinetics.simulate import models as mm
    from icl_kinetics.simulate.engine import TrainConfig, time_steps

    # one shared label map: the setting every recorded figure in docs/performance.md was measured
    # with (a map per seed, the default, trains the same shapes from a context table twice as tall)
    cfg = TrainConfig(model="transformer", N=N, K=K, width=width, batch_size=batch_size, seeds=seeds,
                      lr=0.01, workers=workers, device=device, eval_size=256, label_map="shared")
    cfg.validate()
    dev = torch.device(device)
    old = torch.get_num_threads()
    fast_iters = 5 if quick else 60
    naive_iters = 3 if quick else 10
    try:
        # -- fast engine: S seeds in W single-threaded worker groups, as train() runs them ----
        timed = time_steps(cfg, fast_iters, warmup=2)
        W = timed["workers"]
        fast_s = timed["seconds"]
        fast_rate = seeds * fast_iters / fast_s
        # -- matmul floor, measured the same way ---------------------------------------------
        torch.set_num_threads(1 if (W > 1 and device == "cpu") else old)
        peak = matmul_peak(seeds, W, batch_size, width, seconds=0.5 if quick else 2.0, device=dev)
        flops = mlp_flops(batch_size, cfg.model_config().token_dim, width)
        floor_ms = flops / (peak * 1e9) * 1e3
        # -- naive reference: one seed at a time, full causal attention, all threads ---------
        torch.set_num_threads(old)
        mcfg = cfg.model_config()
        gens = dm.seed_generators(cfg.seed, 0, device=dev)
        p = mm.stack_params([mm.init_params(mcfg, dm.seed_generators(cfg.seed, 0)["init"])], device=dev)
        for v in p.values():
            v.requires_grad_(True)
        items, labels = dm.make_item_set(K, cfg.D, dm.item_generator(cfg.item_seed, device=dev), device=dev)
        sampler = dm.SequenceSampler(cfg.data_config(), items, labels, gens["data"], device=dev)

        def naive_step():
            b = sampler.sample(batch_size)
            tok = b.tokens(cfg.labels).unsqueeze(0)
            y = b.y().unsqueeze(0)
            loss = torch.nn.functional.softplus(-y * mm.transformer_reference(p, tok)).mean()
            grads = torch.autograd.grad(loss, list(p.values()))
            with torch.no_grad():
                for v, g in zip(p.values(), grads):
                    v.sub_(g, alpha=cfg.lr)

        naive_step()
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(naive_iters):
            naive_step()
        if device != "cpu":
            torch.cuda.synchronize()
        naive_s = time.perf_counter() - t0
        naive_rate = naive_iters / naive_s
    finally:
        torch.set_num_threads(old)
    ms = 1e3 / fast_rate
    return {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "shapes": {"N": N, "K": K, "D": cfg.D, "token_dim": cfg.model_config().token_dim, "width": width,
                   "batch_size": batch_size, "seeds": seeds, "workers": W},
        "seed_iterations_per_s": fast_rate,
        "ms_per_seed_iteration": ms,
        "naive_seed_iterations_per_s": naive_rate,
        "naive_ms_per_iteration": 1e3 / naive_rate,
        "speedup": fast_rate / naive_rate,
        "matmul_peak_gflops": peak,
        "mlp_gflop_per_seed_iteration": flops / 1e9,
        "floor_ms_per_seed_iteration": floor_ms,
        "floor_fraction": floor_ms / ms,
        "iterations": {"fast": fast_iters, "naive": naive_iters},
        "naive_threads": old,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def format_bench(r: dict) -> str:
    s = r["shapes"]
    omp = r.get("omp_wait_policy") or "unset"
    return "\n".join([
        f"engine benchmark on {r['device']} (torch {r['torch']}), N = {s['N']} context tokens, K = {s['K']}, "
        f"T = {s['token_dim']}, width {s['width']}, batch {s['batch_size']}",
        f"fast engine  : {s['seeds']} seeds, {s['workers']} workers: {r['seed_iterations_per_s']:8.1f} seed-it/s "
        f"= {r['ms_per_seed_iteration']:.2f} ms per seed-iteration (data included)",
        f"naive ref    : 1 seed, full causal attention, {r['naive_threads']} threads: "
        f"{r['naive_seed_iterations_per_s']:8.1f} it/s = {r['naive_ms_per_iteration']:.1f} ms per iteration",
        f"speedup      : {r['speedup']:.1f}x over the naive reference (measured side by side)",
        f"matmul floor : peak {r['matmul_peak_gflops']:.1f} GFLOP/s x {r['mlp_gflop_per_seed_iteration']:.3f} GFLOP "
        f"= {r['floor_ms_per_seed_iteration']:.2f} ms; floor fraction {r['floor_fraction']:.2f}",
        f"OMP_WAIT_POLICY {omp} (docs/performance.md, 'Threads on a shared machine')",
    ])
