"""Shared by the benchmarks that time variants of the engine's step side by side
(``bench_fused_mlp.py``, ``bench_gil.py``): their command line, and the interleaved rounds.

Each round times every variant once, in order, through ``engine.time_steps`` (the steps
``train`` takes, data included, one worker thread per core), so drifting load on a shared
machine hits the variants alike; each variant's median and best round are reported.
"""

import argparse
import statistics


def at_least_1(name: str):
    """An argparse type: a whole number >= 1, else one line naming ``name`` and the value."""
    def parse(v):
        try:
            n = int(v)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"{name} = {v!r}: allowed is a whole number >= 1")
        return n
    return parse


def rounds_parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    """``--rounds``, ``--iterations`` (timed steps per round and variant, default 30) and ``--json``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rounds", type=at_least_1("--rounds"), default=rounds)
    ap.add_argument("--iterations", type=at_least_1("--iterations"), default=30,
                    help="timed steps per round and variant")
    ap.add_argument("--json", action="store_true")
    return ap


def interleaved(cfg, variants, rounds: int, iterations: int) -> dict:
    """Time ``variants`` [(name, context manager factory)] in ``rounds`` interleaved rounds of
    ``iterations`` steps of ``cfg``, each inside its context.  Returns ``{"ms_per_seed_iteration":
    {name: [per round]}, "median", "best", "workers"}`` (milliseconds per seed-iteration)."""
    from icl_kinetics.simulate.engine import time_steps

    ms = {name: [] for name, _ in variants}
    for _ in range(rounds):
        for name, context in variants:
            with context():
                t = time_steps(cfg, iterations, warmup=2)
            ms[name].append(1e3 * t["seconds"] / t["seed_iterations"])
    return {"ms_per_seed_iteration": ms, "median": {k: statistics.median(v) for k, v in ms.items()},
            "best": {k: min(v) for k, v in ms.items()}, "workers": t["workers"]}


def finish(r: dict, a, shapes: dict, ratios: dict) -> dict:
    """Add to ``r`` (from :func:`interleaved`) each ratio of medians ``{key: (slower, faster)}``,
    the shapes and the round counts; print it (JSON with ``a.json``, else a line per variant and
    one for the ratios).  Returns ``r``."""
    med = r["median"]
    r.update({key: med[num] / med[den] for key, (num, den) in ratios.items()})
    r.update({"shapes": shapes, "rounds": a.rounds, "iterations": a.iterations})
    if a.json:
        import json

        print(json.dumps(r, indent=2))
        return r
    width = max(map(len, med))
    for k, v in r["ms_per_seed_iteration"].items():
        print(f"{k:{width}s}: median {med[k]:.2f} ms per seed-iteration, best {r['best'][k]:.2f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in v)})")
    print("; ".join(f"{num} / {den}: {r[key]:.3f} x" for key, (num, den) in ratios.items())
          + f" (medians, interleaved rounds, {r['workers']} worker threads)")
    return r
