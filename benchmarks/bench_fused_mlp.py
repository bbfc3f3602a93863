"""The fused MLP step against autograd's, side by side in one run, through the engine.

The training engine's step at the paper's shapes (N = 99 context tokens, K = 20000,
width 512, batch 128, the transformer, 16 seeds in one worker group per core, data
included, as ``icl-kinetics bench engine`` times it), three ways:

* ``fused``: the readout MLP trained by ``models.SGDStep`` (its update fused into its
  backward pass), its elementwise passes the compiled ``mlp_step.cpp``: the default;
* ``fused_torch_passes``: the same step with those passes in torch (the reference code
  of ``models._MLPSGD``, which CUDA runs; here by making ``kernels.mlp_ops`` answer None);
* ``autograd``: autograd's gradients and the separate SGD update for every parameter
  (the engine before the fused step, kept as ``group._Group.fused_mlp = False``).

The variants are timed in interleaved rounds (so drifting load on a shared machine hits
them alike); the median and the best round of each are printed, with the ratios of the
medians.

    .venv/bin/python benchmarks/bench_fused_mlp.py [--rounds 5] [--iterations 30] [--json]
"""

import argparse
import json
import statistics

import torch


def main(argv=None) -> dict:
    def at_least_1(name):
        def parse(v):
            try:
                n = int(v)
            except ValueError:
                n = 0
            if n < 1:
                raise argparse.ArgumentTypeError(f"{name} = {v!r}: allowed is a whole number >= 1")
            return n
        return parse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=at_least_1("--rounds"), default=5)
    ap.add_argument("--iterations", type=at_least_1("--iterations"), default=30,
                    help="timed steps per round and variant")
    ap.add_argument("--seeds", type=at_least_1("--seeds"), default=16)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    from unittest import mock

    from icl_kinetics.simulate import group, kernels
    from icl_kinetics.simulate.engine import TrainConfig, time_steps

    cfg = TrainConfig(model="transformer", N=99, K=20_000, width=512, batch_size=128, seeds=a.seeds,
                      lr=0.01, eval_size=256, label_map="shared")
    if kernels.mlp_ops(torch.zeros(1)) is None:
        raise SystemExit("bench_fused_mlp: the compiled kernels are not available on this machine "
                         f"({kernels._STATE['error'] or kernels.KERNEL_ENV + '=torch'}); nothing to compare")
    variants = (("fused", True, True), ("fused_torch_passes", True, False), ("autograd", False, True))
    ms = {name: [] for name, _, _ in variants}
    try:
        for _ in range(a.rounds):
            for name, fused, compiled in variants:
                group._Group.fused_mlp = fused
                with mock.patch.object(kernels, "mlp_ops", kernels.mlp_ops if compiled else (lambda x: None)):
                    t = time_steps(cfg, a.iterations, warmup=2)
                ms[name].append(1e3 * t["seconds"] / t["seed_iterations"])
    finally:
        group._Group.fused_mlp = True
    med = {k: statistics.median(v) for k, v in ms.items()}
    r = {"ms_per_seed_iteration": ms, "median": med, "best": {k: min(v) for k, v in ms.items()},
         "speedup_of_medians": med["autograd"] / med["fused"],
         "compiled_passes_speedup_of_medians": med["fused_torch_passes"] / med["fused"],
         "shapes": {"N": 99, "K": 20_000, "width": 512, "batch_size": 128, "seeds": a.seeds},
         "rounds": a.rounds, "iterations": a.iterations}
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        for k in ms:
            print(f"{k:18s}: median {med[k]:.2f} ms per seed-iteration, best {r['best'][k]:.2f} "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in ms[k])})")
        print(f"fused_torch_passes / fused: {r['compiled_passes_speedup_of_medians']:.3f} x; "
              f"autograd / fused: {r['speedup_of_medians']:.3f} x (medians, interleaved rounds)")
    return r


if __name__ == "__main__":
    main()
