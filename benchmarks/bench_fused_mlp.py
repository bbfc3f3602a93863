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

import contextlib

import torch
from _rounds import at_least_1, finish, interleaved, rounds_parser


def main(argv=None) -> dict:
    ap = rounds_parser(__doc__, rounds=5)
    ap.add_argument("--seeds", type=at_least_1("--seeds"), default=16)
    a = ap.parse_args(argv)

    from unittest import mock

    from icl_kinetics.simulate import group, kernels
    from icl_kinetics.simulate.engine import TrainConfig

    cfg = TrainConfig(model="transformer", N=99, K=20_000, width=512, batch_size=128, seeds=a.seeds,
                      lr=0.01, eval_size=256, label_map="shared")
    if kernels.mlp_ops(torch.zeros(1)) is None:
        raise SystemExit("bench_fused_mlp: the compiled kernels are not available on this machine "
                         f"({kernels._STATE['error'] or kernels.KERNEL_ENV + '=torch'}); nothing to compare")

    def variant(fused: bool, compiled: bool):
        @contextlib.contextmanager
        def context():
            group._Group.fused_mlp = fused
            try:
                with mock.patch.object(kernels, "mlp_ops", kernels.mlp_ops if compiled else (lambda x: None)):
                    yield
            finally:
                group._Group.fused_mlp = True
        return context

    r = interleaved(cfg, [("fused", variant(True, True)), ("fused_torch_passes", variant(True, False)),
                          ("autograd", variant(False, True))], a.rounds, a.iterations)
    shapes = {"N": 99, "K": 20_000, "width": 512, "batch_size": 128, "seeds": a.seeds}
    return finish(r, a, shapes, {"compiled_passes_speedup_of_medians": ("fused_torch_passes", "fused"),
                                 "speedup_of_medians": ("autograd", "fused")})


if __name__ == "__main__":
    main()
