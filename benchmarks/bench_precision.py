"""Reduced precision on this CPU: bfloat16 matmuls against float32, side by side in one run.

Measures, with one intra-op thread (as each engine worker runs):

1. the engine's largest matmul, (S, B, w) x (S, w, w), in float32 and in bfloat16 (GFLOP/s);
2. one forward + backward pass of the fast transformer at the paper's shapes (S seeds,
   N = 99 context tokens, K = 20000, width 512, batch 128) in float32, and under
   ``torch.autocast("cpu", dtype=torch.bfloat16)`` (bfloat16 matmuls, float32 elsewhere).

Prints the absolute times and the ratio bf16 / fp32 for each (below 1 = bf16 faster),
plus whether the CPU reports native bfloat16 instructions (``avx512_bf16`` or
``amx_bf16`` in /proc/cpuinfo).  A bf16-mixed mode would be offered only if it were
faster here; docs/performance.md, "Reduced precision", records the decision.

    .venv/bin/python benchmarks/bench_precision.py [--seeds 8] [--repeats 5] [--json]
"""

import argparse
import json
import time

import torch


def _time(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def cpu_flags() -> list:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return []
    return sorted(x for x in flags if "bf16" in x or x.startswith("amx"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8, help="seeds in one worker (the engine's 16 seeds / 2 workers)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    S, B, w = a.seeds, 128, 512
    g = torch.Generator().manual_seed(0)
    x = torch.randn(S, B, w, generator=g)
    W = torch.randn(S, w, w, generator=g)
    flop = 2 * S * B * w * w
    t32 = _time(lambda: torch.bmm(x, W), a.repeats * 4)
    xb, Wb = x.bfloat16(), W.bfloat16()
    t16 = _time(lambda: torch.bmm(xb, Wb), a.repeats * 4)

    from icl_kinetics.simulate.engine import TrainConfig, _build

    cfg = TrainConfig(model="transformer", N=99, K=20000, width=w, batch_size=B, seeds=S, lr=0.01, workers=1,
                      eval_size=256, label_map="shared")  # the recorded figures' setting
    (grp,) = _build(cfg, torch.device("cpu"))

    def step(autocast: bool):
        inp, y = grp._draw()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logit, _ = grp._logits(grp.p, inp)
        loss = torch.nn.functional.softplus(-y * logit.float()).mean(1).sum()
        torch.autograd.grad(loss, list(grp.p.values()))

    s32 = _time(lambda: step(False), a.repeats)
    s16 = _time(lambda: step(True), a.repeats)
    r = {
        "cpu_bf16_flags": cpu_flags(),
        "threads": 1,
        "matmul_shape": [S, B, w, w],
        "matmul_fp32_gflops": flop / t32 / 1e9,
        "matmul_bf16_gflops": flop / t16 / 1e9,
        "matmul_ratio_bf16_over_fp32_time": t16 / t32,
        "step_seeds": S,
        "step_fp32_ms": s32 * 1e3,
        "step_bf16_autocast_ms": s16 * 1e3,
        "step_ratio_bf16_over_fp32_time": s16 / s32,
        "torch": torch.__version__,
    }
    if a.json:
        print(json.dumps(r, indent=2))
        return
    print(f"CPU bfloat16 instructions reported: {', '.join(r['cpu_bf16_flags']) or 'none'} (torch {r['torch']}, 1 thread)")
    print(f"matmul ({S}, {B}, {w}) x ({S}, {w}, {w}): fp32 {r['matmul_fp32_gflops']:.1f} GFLOP/s, "
          f"bf16 {r['matmul_bf16_gflops']:.1f} GFLOP/s; time ratio bf16/fp32 {r['matmul_ratio_bf16_over_fp32_time']:.2f}")
    print(f"forward + backward, {S} seeds: fp32 {r['step_fp32_ms']:.1f} ms, bf16 autocast "
          f"{r['step_bf16_autocast_ms']:.1f} ms; time ratio bf16/fp32 {r['step_ratio_bf16_over_fp32_time']:.2f}")


if __name__ == "__main__":
    main()
