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

import argparse
import json
import os
import statistics
from pathlib import Path


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
    ap.add_argument("--rounds", type=at_least_1("--rounds"), default=7)
    ap.add_argument("--iterations", type=at_least_1("--iterations"), default=30,
                    help="timed steps per round and variant")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    from unittest import mock

    import torch
    from torch.utils.cpp_extension import get_default_build_root, load

    from icl_kinetics.simulate import kernels
    from icl_kinetics.simulate.engine import TrainConfig, time_steps

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
    ms = {"released": [], "held": []}
    for _ in range(a.rounds):
        for key, ext in (("released", shipped), ("held", held)):
            with mock.patch.dict(kernels._STATE, {"ext": ext}):
                t = time_steps(cfg, a.iterations, warmup=2)
            ms[key].append(1e3 * t["seconds"] / t["seed_iterations"])
    med = {k: statistics.median(v) for k, v in ms.items()}
    r = {"ms_per_seed_iteration": ms, "median": med, "best": {k: min(v) for k, v in ms.items()},
         "speedup_of_medians": med["held"] / med["released"], "workers": t["workers"],
         "shapes": {"N": 99, "K": 20_000, "width": 512, "batch_size": 128, "seeds": 16},
         "rounds": a.rounds, "iterations": a.iterations}
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        for k in ms:
            print(f"GIL {k:8s}: median {med[k]:.2f} ms per seed-iteration, best {r['best'][k]:.2f} "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in ms[k])})")
        print(f"held / released: {r['speedup_of_medians']:.3f} x (medians, interleaved rounds, "
              f"{t['workers']} worker threads)")
    return r


if __name__ == "__main__":
    main()
