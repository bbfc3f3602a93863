"""Engine benchmark (issue 4): the fast seed-batched engine (S = 16) against the naive
one-seed-at-a-time reference with full causal attention, measured side by side in one
run, at the paper's shapes (N = 99 context tokens + target, K = 20000, D = 63, 65-dim
tokens, MLP width 512, batch 128), data generation included; plus the matmul-bound floor.

    .venv/bin/python benchmarks/bench_engine.py [--quick] [--json] [--seeds 16] [--workers W] [--device cuda]

The same measurement is `icl-kinetics bench engine [--quick] --json`.  See docs/performance.md.
"""

import argparse
import json

from icl_kinetics.simulate.bench import bench_engine, format_bench


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    r = bench_engine(quick=a.quick, seeds=a.seeds, workers=a.workers, device=a.device)
    print(json.dumps(r, indent=2) if a.json else format_bench(r))


if __name__ == "__main__":
    main()
