"""The fused gather-attention kernel, side by side in one run: as shipped (software
prefetch of the rows ahead), the same source built without prefetching, and the torch
reference (gather into a buffer, batched products, softmax).

Each variant computes the forward and the backward pass of the transformer's last-token
attention at the paper's shapes (8 seeds x batch 128 = 1024 sequences, N = 99 context
rows of T = 65 out of a K = 20000 row table), one intra-op thread, as one engine worker
runs it.  The variants are timed in interleaved rounds (so drifting load on a shared
machine hits them alike); the median and the best round are printed, with the ratios.
The two builds agree to float32 rounding (the prefetches change how the compiler
arranges the loops, so sums may round differently; the largest difference is printed).

Building the two kernel variants takes about a minute each, once per machine (cached
under the torch extensions folder, like the engine's own build).

    .venv/bin/python benchmarks/bench_kernel.py [--rounds 7] [--json]
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch


def _build(name: str, defines: list):
    from torch.utils.cpp_extension import get_default_build_root, load

    from icl_kinetics.simulate import kernels

    build = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name
    build.mkdir(parents=True, exist_ok=True)
    # the engine's whole extension (gather_attention.cpp with the MLP's passes and the bindings)
    return load(name=name, sources=[str(p) for p in kernels._SOURCES], extra_cflags=kernels._CFLAGS + defines,
                build_directory=str(build),
                verbose=False)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20, help="forward+backward calls per round")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from icl_kinetics.simulate import kernels

    shipped = _build("icl_kinetics_bench_kernel_prefetch", [])
    plain = _build("icl_kinetics_bench_kernel_noprefetch", ["-DICL_KINETICS_NO_PREFETCH"])
    g = torch.Generator().manual_seed(0)
    R, N, T, M = 1024, 99, 65, 20000
    q = torch.randn(R, T, generator=g)
    ct, tt = torch.randn(M, T, generator=g), torch.randn(M, T, generator=g)
    ci, ti = torch.randint(0, M, (R, N), generator=g), torch.randint(0, M, (R,), generator=g)
    gm = torch.randn(R, T, generator=g)
    buf = torch.empty(R * N * T)

    def ext_pass(ext):
        p, m = ext.forward(q, ct, tt, ci, ti)
        return p, m, ext.backward(None, gm, p, ct, tt, ci, ti)

    def ref_pass():
        a_ = q.clone().requires_grad_(True)
        p, m = kernels.gather_attention_reference(a_, ct, tt, ci, ti, buffer=buf)
        (ga,) = torch.autograd.grad(m, a_, gm)
        return p, m, ga

    outs = [ext_pass(shipped), ext_pass(plain)]
    diff = max(float(((x - y).abs() / y.abs().clamp_min(1e-6)).max()) for x, y in zip(*outs))
    variants = {"prefetch (shipped)": lambda: ext_pass(shipped), "no prefetch": lambda: ext_pass(plain),
                "torch reference": ref_pass}
    times = {k: [] for k in variants}
    for _ in range(a.rounds):
        for k, f in variants.items():
            f()
            t0 = time.perf_counter()
            for _ in range(a.calls):
                f()
            times[k].append((time.perf_counter() - t0) / a.calls * 1e3)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    res = {"shapes": {"sequences": R, "N": N, "T": T, "table_rows": M}, "threads": 1, "rounds": a.rounds,
           "ms_forward_backward_median": med, "ms_forward_backward_best": best,
           "speedup_prefetch_median": med["no prefetch"] / med["prefetch (shipped)"],
           "speedup_prefetch_best": best["no prefetch"] / best["prefetch (shipped)"],
           "speedup_over_reference_median": med["torch reference"] / med["prefetch (shipped)"],
           "max_relative_difference_prefetch_vs_not": diff, "torch": torch.__version__, "cpu_count": os.cpu_count()}
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"gather-attention forward + backward, {R} sequences x {N + 1} rows of {T} from {M} rows, 1 thread "
              f"({a.rounds} interleaved rounds of {a.calls} calls)")
        for k in variants:
            print(f"  {k:20s} median {med[k]:7.2f} ms   best {best[k]:7.2f} ms")
        print(f"  prefetch speed-up: {res['speedup_prefetch_median']:.2f}x (median), {res['speedup_prefetch_best']:.2f}x "
              f"(best); over the torch reference: {res['speedup_over_reference_median']:.2f}x (median); "
              f"largest relative difference with and without prefetch: {diff:.1e}")
    return res


if __name__ == "__main__":
    main()
