"""Device check for the training engine: the fast path's agreement with the oracle and
its throughput at large seed batches, in one command (under 5 minutes on a GPU).

    python benchmarks/gpu_check.py [--device cuda] [--seeds 64,256,1024] [--json]
                                   [--tiny] [--minutes M --out DIR]

1. **Agreement with the oracle, on the device.**
   - The fast last-token path (:func:`models.transformer_fast`) against the full
     causal-attention reference (:func:`models.transformer_reference`) in float64:
     the largest absolute difference of the logits and of every parameter gradient
     (must be <= 1e-12).
   - A seed trained alone against the same seed inside a batch (float32, the engine's
     dtype): the largest difference of its logged metrics (must be <= 1e-5).
2. **Throughput** of the fast engine at the paper's shapes (N = 99 context tokens,
   K = 20000, width 512, batch 128) for each seed count in ``--seeds``: seed-iterations
   per second (one SGD step of one seed on 128 sequences, data generation included),
   and the peak device memory per seed (CUDA only; on CPU the engine's own estimate).
3. Optionally (``--minutes M``, default 0: skipped), a real run: the transformer at
   K = inf, N = 49, width 512, lr 0.01, 64 seeds, for about M minutes; writes
   metrics.csv and a figure to ``--out``.

``--tiny`` shrinks every shape (N = 9, K = 200, width 32, batch 16, seeds 2,4) so that
the whole check runs in seconds on a CPU (tests/test_gpu_check.py runs it that way).
The process exits 1 if an agreement check fails or a step errors, else 0.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import replace

PAPER = dict(N=99, K=20_000, width=512, batch_size=128)
TINY = dict(N=9, K=200, width=32, batch_size=16)
#: agreement bars: fast path against the oracle in float64; a seed alone against in a batch (float32)
ORACLE_TOL, SEED_TOL = 1e-12, 1e-5


def agreement(device: str) -> dict:
    """Fast path against the oracle (float64) and a seed alone against in a batch (float32)."""
    import torch

    from icl_kinetics.simulate import models as mm
    from icl_kinetics.simulate.engine import TrainConfig, train

    dev = torch.device(device)
    S, B, N, K, D = 3, 8, 49, 200, 63
    cfg = mm.ModelConfig(token_dim=D + 2, D=D, width=64)
    p = mm.stack_params([mm.init_params(cfg, torch.Generator().manual_seed(i)) for i in range(S)],
                        device=dev, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)  # drawn on CPU: the same inputs on every device
    p["ln_w"] = (1 + 0.5 * torch.randn(p["ln_w"].shape, generator=g, dtype=torch.float64)).to(dev)
    p["ln_b"] = (0.3 * torch.randn(p["ln_b"].shape, generator=g, dtype=torch.float64)).to(dev)
    for v in p.values():
        v.requires_grad_(True)
    items = (torch.randn(K, D, generator=g, dtype=torch.float64) / math.sqrt(D)).to(dev)
    lab = (torch.randint(0, 2, (K,), generator=g).double() * 2 - 1).to(dev)
    ct = torch.cat([items, torch.stack([(lab < 0).double(), (lab > 0).double()], 1)], 1)
    tt = torch.cat([items, torch.zeros(K, 2, device=dev, dtype=torch.float64)], 1)
    ctx = torch.randint(0, K, (S, B, N), generator=g).to(dev)
    tgt = ctx[:, :, 3]
    tok = torch.cat([ct[ctx], tt[tgt].unsqueeze(2)], 2)
    ref = mm.transformer_reference(p, tok)
    fast = mm.transformer_fast(p, mm.normalize_tokens(ct), mm.normalize_tokens(tt), ctx, tgt)
    gr = torch.autograd.grad(ref.sum(), list(p.values()))
    gf = torch.autograd.grad(fast.sum(), list(p.values()))
    logit_err = (ref - fast).abs().max().item()
    grad_err = max((a - b).abs().max().item() for a, b in zip(gr, gf))
    # one worker on CPU for both runs: a one-seed run would otherwise get both cores' intra-op
    # threads, and MKL's two-thread products round differently from the one-thread ones in the
    # batch (docs/engine.md, "Seeds"); this check is about seed batching, not thread counts
    tiny = TrainConfig(model="transformer", K=200, N=19, width=64, seeds=3, iterations=60, eval_every=20,
                       eval_size=256, lr=0.1, early_stop=None, device=device,
                       workers=1 if device == "cpu" else None)
    batch = train(tiny, progress=False)
    alone = train(replace(tiny, seeds=1, seed_offset=2), progress=False)
    rb = [r for r in batch.rows if r["seed"] == 2]
    seed_err = max(abs(x[k] - y[k]) for x, y in zip(rb, alone.rows) for k in ("train_loss", "icl_acc", "w", "beta")
                   if not (math.isnan(x[k]) and math.isnan(y[k])))
    ok = logit_err <= ORACLE_TOL and grad_err <= ORACLE_TOL and seed_err <= SEED_TOL
    return {"step": "agreement", "logit_err_float64": logit_err, "grad_err_float64": grad_err,
            "oracle_tolerance": ORACLE_TOL, "seed_alone_vs_batch_err_float32": seed_err, "seed_tolerance": SEED_TOL,
            "ok": ok}


def throughput(device: str, seeds: list, shapes: dict, iterations: int) -> dict:
    """Seed-iterations per second of the fast engine for each seed count (and peak memory per seed)."""
    import torch

    from icl_kinetics.simulate.engine import TrainConfig, time_steps

    rows = []
    for S in seeds:
        # one shared label map: the setting of the recorded H200 figures (docs/performance.md)
        cfg = TrainConfig(model="transformer", seeds=S, lr=0.01, eval_size=256, device=device,
                          label_map="shared", **shapes)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t = time_steps(cfg, iterations, warmup=3)
        rate = t["seed_iterations"] / t["seconds"]
        row = {"seeds": S, "workers": t["workers"], "iterations": iterations,
               "seed_iterations_per_s": rate, "ms_per_seed_iteration": 1e3 / rate}
        if device == "cuda":
            row["peak_bytes_per_seed"] = (torch.cuda.max_memory_allocated() - base) / S
            row["memory_source"] = "torch.cuda.max_memory_allocated"
        else:
            row["peak_bytes_per_seed"] = cfg.estimate_bytes()[0] / S
            row["memory_source"] = "TrainConfig.estimate_bytes (not measured)"
        rows.append(row)
    return {"step": "throughput", "shapes": shapes, "rows": rows}


def real_run(device: str, out: str, minutes: float) -> dict:
    """The transformer at K = inf, N = 49, width 512, lr 0.01, 64 seeds for about ``minutes``."""
    from icl_kinetics.simulate.engine import TrainConfig, train
    from icl_kinetics.validate.figures import save, training_curves_figure

    probe = TrainConfig(model="transformer", K=None, N=49, width=512, lr=0.01, seeds=64, iterations=200,
                        eval_every=100, device=device, early_stop=None)
    t = time.perf_counter()
    train(probe, progress=False)
    rate = 64 * 200 / (time.perf_counter() - t)
    iters = int(rate * minutes * 60 / 64 / 1000) * 1000
    cfg = replace(probe, iterations=max(iters, 1000), eval_every=500, early_stop=0.99, checkpoint_every=10**9)
    res = train(cfg, out=out, progress=False)
    save(training_curves_figure(res.rows, threshold=0.95, title=f"transformer, K = inf, N = 49, width 512, "
                                f"lr 0.01 ({device})"), f"{out}/curves.png")
    return {"step": "real_run", "iterations": cfg.iterations, "seed_iterations_per_s": rate,
            "t_icl": res.t_icl, "acquired": sum(t is not None for t in res.t_icl), "seconds": res.seconds}


def _seed_list(text: str) -> list:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--seeds={text!r}: expected comma-separated positive integers, e.g. 64,256")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--seeds", type=_seed_list, default=None, help="seed counts (default 64,256,1024; --tiny 2,4)")
    ap.add_argument("--iterations", type=int, default=None, help="timed steps per seed count (default 30; --tiny 3)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: seconds on a CPU")
    ap.add_argument("--minutes", type=float, default=0.0, help="length of the optional real run (0: skip)")
    ap.add_argument("--out", default="out/gpu_check", help="folder of the real run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: --device cuda but no CUDA device is available (use --device cpu)", file=sys.stderr)
            return 2
    seeds = a.seeds or ([2, 4] if a.tiny else [64, 256, 1024])
    iterations = a.iterations or (3 if a.tiny else 30)
    shapes = TINY if a.tiny else PAPER
    steps = [("agreement", lambda: agreement(a.device)),
             ("throughput", lambda: throughput(a.device, seeds, shapes, iterations))]
    if a.minutes > 0:
        steps.append(("real_run", lambda: real_run(a.device, a.out, a.minutes)))
    report = {"device": a.device, "steps": []}
    if a.device == "cuda":
        import torch

        report["device_name"] = torch.cuda.get_device_name()
    t_all = time.perf_counter()
    failed = False
    for name, f in steps:
        t = time.perf_counter()
        try:
            r = f()
        except Exception as e:  # report it and go on to the next step; the exit code says it failed
            r = {"step": name, "error": f"{type(e).__name__}: {e}"}
        r["wall_s"] = time.perf_counter() - t
        failed |= ("error" in r) or (r.get("ok") is False)
        report["steps"].append(r)
        if not a.json:
            print(_line(r), flush=True)
    report["wall_s"] = time.perf_counter() - t_all
    report["ok"] = not failed
    if a.json:
        print(json.dumps(report, indent=2))
    return 1 if failed else 0


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['step']}: FAILED: {r['error']}"
    if r["step"] == "agreement":
        return (f"agreement: fast vs oracle (float64) logits {r['logit_err_float64']:.1e}, gradients "
                f"{r['grad_err_float64']:.1e} (bar {ORACLE_TOL:g}); seed alone vs in a batch (float32) "
                f"{r['seed_alone_vs_batch_err_float32']:.1e} (bar {SEED_TOL:g}): {'ok' if r['ok'] else 'FAILED'}")
    if r["step"] == "throughput":
        return "\n".join(f"throughput: S = {x['seeds']:5d}: {x['seed_iterations_per_s']:10.0f} seed-it/s "
                         f"({x['ms_per_seed_iteration']:.3f} ms per seed-iteration), "
                         f"{x['peak_bytes_per_seed'] / 2**20:.1f} MiB per seed ({x['memory_source']})"
                         for x in r["rows"])
    return json.dumps(r)


if __name__ == "__main__":
    raise SystemExit(main())
