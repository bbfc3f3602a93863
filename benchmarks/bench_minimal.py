"""Benchmark of the minimal model on the engine's exact overlap sampler against a naive reference.

    python benchmarks/bench_minimal.py [--quick] [--json] [--workers W] [--seeds S]

Engine: ``train(TrainConfig(model="minimal", width=0, K=None, ...))`` (backend "auto",
which is the overlap sampler here), 100 seeds x 10^4 iterations (quick: 100 seeds x 500
iterations), N = 100 context tokens, D = 63, batch 128, lr 0.1, beta0 = 0, evaluation
every 10 iterations on 2000 sequences, metrics logged every 100 iterations, no early
stopping.  Naive reference (same run): torch, explicit D-dim items, full softmax over
context + target, autograd, one seed at a time, a few iterations.  Prints absolute
throughput in seed-iterations per second for both, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def naive_reference(iterations: int, N: int = 100, D: int = 63, B: int = 128, lr: float = 0.1, seed: int = 0):
    """One seed, plain torch: fresh D-dim items, full softmax, autograd (seconds, w, beta)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    w = torch.zeros((), requires_grad=True)
    beta = torch.zeros((), requires_grad=True)
    t0 = time.perf_counter()
    for _ in range(iterations):
        X = torch.randn(B, N, D, generator=g) / math.sqrt(D)
        lab = torch.randint(0, 2, (B, N), generator=g).float() * 2 - 1
        j = torch.randint(0, N, (B,), generator=g)
        xt = X[torch.arange(B), j]
        y = lab[torch.arange(B), j]
        keys = torch.cat([X, xt[:, None]], 1)
        labels = torch.cat([lab, torch.zeros(B, 1)], 1)
        att = torch.softmax(beta * torch.einsum("bd,bjd->bj", xt, keys), 1)
        logit = w * (att * labels).sum(1)
        loss = torch.nn.functional.softplus(-y * logit).mean()
        gw, gb = torch.autograd.grad(loss, (w, beta))
        with torch.no_grad():
            w -= lr * gw
            beta -= lr * gb
        # evaluation every 10 iterations on 2000 sequences (as in the fast path)
        if _ % 10 == 0:
            with torch.no_grad():
                Xe = torch.randn(2000, N, D, generator=g) / math.sqrt(D)
                le = torch.randint(0, 2, (2000, N), generator=g).float() * 2 - 1
                je = torch.randint(0, N, (2000,), generator=g)
                xe = Xe[torch.arange(2000), je]
                ye = le[torch.arange(2000), je]
                ke = torch.cat([Xe, xe[:, None]], 1)
                la = torch.cat([le, torch.zeros(2000, 1)], 1)
                a = torch.softmax(beta * torch.einsum("bd,bjd->bj", xe, ke), 1)
                ((ye * w * (a * la).sum(1)) > 0).float().mean()
    return time.perf_counter() - t0, float(w.detach()), float(beta.detach())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 iterations instead of 10^4")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--workers", type=int, default=None, help="seed groups (default: one per core)")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--parallel", choices=("auto", "threads", "processes"), default="auto",
                    help="how the engine runs its seed groups (auto: forked processes from 2e5 seed-iterations)")
    args = ap.parse_args(argv)

    import torch

    from icl_kinetics.simulate import TrainConfig, config, train
    from icl_kinetics.simulate.config import _resolve_workers, _use_processes

    if args.parallel != "auto":  # the engine's switch-over point (a private knob, for measuring)
        config._PROCESS_MIN_SEED_ITERATIONS = 0 if args.parallel == "processes" else float("inf")

    iters = 500 if args.quick else 10_000
    cfg = TrainConfig(model="minimal", width=0, K=None, N=100, D=63, beta0=0.0, lr=0.1, batch_size=128,
                      seeds=args.seeds, iterations=iters, eval_every=10, eval_size=2000, log_every=100,
                      early_stop=None, checkpoint_every=iters, workers=args.workers)
    t0 = time.perf_counter()
    res = train(cfg, progress=False)
    fast_s = time.perf_counter() - t0
    fast_rate = args.seeds * iters / fast_s
    workers = _resolve_workers(cfg)

    naive_iters = 20 if args.quick else 50
    naive_s, _, _ = naive_reference(naive_iters)
    naive_rate = naive_iters / naive_s
    v = np.array([np.inf if x is None else float(x) for x in res.t_icl])  # never acquired: +inf
    med = float(np.median(v))
    out = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "fast": {"seeds": args.seeds, "iterations": iters, "seconds": fast_s, "seed_iterations_per_s": fast_rate,
                 "projected_seconds_100x1e4": 100 * 10_000 / fast_rate, "backend": cfg.resolve_backend(),
                 "workers": workers, "processes": _use_processes(cfg, workers)},
        "naive": {"seeds": 1, "iterations": naive_iters, "seconds": naive_s, "seed_iterations_per_s": naive_rate},
        "speedup": fast_rate / naive_rate,
        "acceptance_under_60s": 100 * 10_000 / fast_rate < 60,
        "median_t_icl": med if np.isfinite(med) else None,
    }
    if args.json:
        print(json.dumps(out))
    else:
        f = out["fast"]
        print(f"engine    : {args.seeds} seeds x {iters} it in {fast_s:.1f} s = {fast_rate:,.0f} seed-it/s "
              f"({f['backend']} backend, {workers} {'processes' if f['processes'] else 'threads'}; "
              f"100 x 10^4 projected {f['projected_seconds_100x1e4']:.1f} s)")
        print(f"naive ref : 1 seed x {naive_iters} it in {naive_s:.2f} s = {naive_rate:,.1f} seed-it/s")
        print(f"speed-up  : {out['speedup']:,.0f}x")


if __name__ == "__main__":
    main()
