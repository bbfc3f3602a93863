"""GPU checks for the engine (run on a CUDA machine; CI has none).

    python benchmarks/gpu_check.py [--out DIR] [--minutes M]

1. Exactness on CUDA: the fast last-token path against the full-attention reference
   (float64 logits and gradients, 1e-5), and a seed alone against the same seed in a
   batch (engine, float32, 1e-5).
2. Throughput at the paper's shapes for S = 16, 64 and 256 seeds (seed-iterations/s),
   with the naive reference measured in the same run (`bench_engine`).
3. A real run: the paper's transformer at K = inf, N = 49 context tokens, width 512,
   lr 0.01, batch 128, 64 seeds, for as many iterations as fit in M minutes; writes
   metrics.csv and a figure to DIR.

Prints one JSON object per step.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import replace


def exactness():
    import torch

    from icl_kinetics.simulate import models as mm
    from icl_kinetics.simulate.engine import TrainConfig, train

    dev = "cuda"
    S, B, N, K, D = 3, 8, 49, 200, 63
    cfg = mm.ModelConfig(token_dim=D + 2, D=D, width=64)
    p = mm.stack_params([mm.init_params(cfg, torch.Generator().manual_seed(i)) for i in range(S)],
                        device=dev, dtype=torch.float64)
    g = torch.Generator(device=dev).manual_seed(0)
    p["ln_w"] = 1 + 0.5 * torch.randn(p["ln_w"].shape, generator=g, device=dev, dtype=torch.float64)
    p["ln_b"] = 0.3 * torch.randn(p["ln_b"].shape, generator=g, device=dev, dtype=torch.float64)
    for v in p.values():
        v.requires_grad_(True)
    items = torch.randn(K, D, generator=g, device=dev, dtype=torch.float64) / math.sqrt(D)
    lab = torch.randint(0, 2, (K,), generator=g, device=dev).double() * 2 - 1
    ct = torch.cat([items, torch.stack([(lab < 0).double(), (lab > 0).double()], 1)], 1)
    tt = torch.cat([items, torch.zeros(K, 2, device=dev, dtype=torch.float64)], 1)
    ctx = torch.randint(0, K, (S, B, N), generator=g, device=dev)
    tgt = ctx[:, :, 3]
    tok = torch.cat([ct[ctx], tt[tgt].unsqueeze(2)], 2)
    ref = mm.transformer_reference(p, tok)
    fast = mm.transformer_fast(p, mm.normalize_tokens(ct), mm.normalize_tokens(tt), ctx, tgt)
    gr = torch.autograd.grad(ref.sum(), list(p.values()))
    gf = torch.autograd.grad(fast.sum(), list(p.values()))
    logit_err = (ref - fast).abs().max().item()
    grad_err = max((a - b).abs().max().item() for a, b in zip(gr, gf))
    tiny = TrainConfig(model="transformer", K=200, N=19, width=64, seeds=3, iterations=60, eval_every=20,
                       eval_size=256, lr=0.1, early_stop=None, device=dev)
    batch = train(tiny, progress=False)
    alone = train(replace(tiny, seeds=1, seed_offset=2), progress=False)
    rb = [r for r in batch.rows if r["seed"] == 2]
    seed_err = max(abs(x[k] - y[k]) for x, y in zip(rb, alone.rows) for k in ("train_loss", "icl_acc", "w", "beta")
                   if not (math.isnan(x[k]) and math.isnan(y[k])))
    ok = logit_err < 1e-5 and grad_err < 1e-5 and seed_err < 1e-5
    return {"step": "exactness", "device": torch.cuda.get_device_name(), "logit_err": logit_err,
            "grad_err": grad_err, "seed_alone_vs_batch_err": seed_err, "ok": ok}


def throughput():
    from icl_kinetics.simulate.bench import bench_engine

    out = []
    for S in (16, 64, 256):
        r = bench_engine(seeds=S, device="cuda")
        out.append({"seeds": S, "seed_iterations_per_s": r["seed_iterations_per_s"],
                    "ms_per_seed_iteration": r["ms_per_seed_iteration"],
                    "naive_ms_per_iteration": r["naive_ms_per_iteration"], "speedup": r["speedup"],
                    "floor_fraction": r["floor_fraction"], "matmul_peak_gflops": r["matmul_peak_gflops"]})
    return {"step": "throughput", "device": r["device"], "rows": out}


def real_run(out, minutes):
    from icl_kinetics.simulate.engine import TrainConfig, train
    from icl_kinetics.validate.figures import save, training_curves_figure

    probe = TrainConfig(model="transformer", K=None, N=49, width=512, lr=0.01, seeds=64, iterations=200,
                        eval_every=100, device="cuda", early_stop=None)
    t = time.perf_counter()
    train(probe, progress=False)
    rate = 64 * 200 / (time.perf_counter() - t)
    iters = int(rate * minutes * 60 / 64 / 1000) * 1000
    cfg = replace(probe, iterations=max(iters, 1000), eval_every=500, early_stop=0.99, checkpoint_every=10**9)
    res = train(cfg, out=out, progress=False)
    save(training_curves_figure(res.rows, threshold=0.95, title="transformer, K = inf, N = 49, width 512, "
                                "lr 0.01 (H200)"), f"{out}/curves.png")
    return {"step": "real_run", "iterations": cfg.iterations, "seed_iterations_per_s": rate,
            "t_icl": res.t_icl, "acquired": sum(t is not None for t in res.t_icl), "seconds": res.seconds}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/gpu")
    ap.add_argument("--minutes", type=float, default=3.0)
    a = ap.parse_args()
    for f in (exactness, throughput, lambda: real_run(a.out, a.minutes)):
        t = time.perf_counter()
        try:
            r = f()
        except Exception as e:  # report and go on to the next check
            r = {"step": getattr(f, "__name__", "real_run"), "error": f"{type(e).__name__}: {e}"}
        r["wall_s"] = time.perf_counter() - t
        print(json.dumps(r), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
