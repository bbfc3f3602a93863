"""The engine's compiled kernels releasing the GIL against holding it, side by side in one
run, through the engine.

The training engine's step at the paper's shapes (N = 99 context tokens, K = 20000,
width 512, batch 128, the transformer, 16 seeds in one worker thread per core, data included, as
``icl-kinetics bench engine`` times it), once with the extension as shipped (every
function of ``bindings.cpp`` releases the GIL while it runs) and once with the same
sources built with ``-DICL_KINETICS_HOLD_GIL`` (each call holds the GIL, so the other
worker thread cannot run Python code meanwhile).  The variants are timed in interleaved
rounds; the median and the best round of each are printed, with the ratio of the medians.

Building the second variant takes about a minute, once per machine (cached under the
torch extensions folder).

    .venv/bin/python benchmarks/bench_gil.py [--rounds 7] [--iterations 30] [--json]
"""

import os
from pathlib import Path

from _rounds import finish, interleaved, rounds_parser


def main(argv=None) -> dict:
    a = rounds_parser(__doc__, rounds=7).parse_args(argv)

    from unittest import mock

    import torch
    from torch.utils.cpp_extension import get_default_build_root, load

    from icl_kinetics.simulate import kernels
    from icl_kinetics.simulate.engine import TrainConfig

    shipped = kernels.mlp_ops(torch.zeros(1))
    if shipped is None:
        raise SystemExit("bench_gil: the compiled kernels are not available on this machine "
                         f"({kernels._STATE['error'] or kernels.KERNEL_ENV + '=torch'}); nothing to compare")
    name = "icl_kinetics_bench_gil_held"
    build = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name
    build.mkdir(parents=True, exist_ok=True)
    held = load(name=name, sources=[str(p) for p in kernels._SOURCES],
                extra_cflags=kernels._CFLAGS + ["-DICL_KINETICS_HOLD_GIL"], build_directory=str(build), verbose=False)
    cfg = TrainConfig(model="transformer", N=99, K=20_000, width=512, batch_size=128, seeds=16,
                      lr=0.01, eval_size=256, label_map="shared")

    def variant(ext):
        return lambda: mock.patch.dict(kernels._STATE, {"ext": ext})

    r = interleaved(cfg, [("released", variant(shipped)), ("held", variant(held))], a.rounds, a.iterations)
    shapes = {"N": 99, "K": 20_000, "width": 512, "batch_size": 128, "seeds": 16}
    return finish(r, a, shapes, {"speedup_of_medians": ("held", "released")})


if __name__ == "__main__":
    main()
