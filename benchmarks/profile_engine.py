"""Where the training engine's time goes: one worker group at the paper's shapes, profiled.

One engine worker as ``train`` runs it (the transformer, N = 99 context tokens, K = 20000,
width 512, batch 128, 8 seeds, one intra-op thread, data generation included; shared label
map, as ``bench engine``).  It prints

* the step's time unprofiled (ms per step, and per seed-iteration on this one core);
* ``torch.profiler``'s self CPU time over ``--steps`` steps, by part: every profiled event
  is put in one part by its operator name and input shapes (the 512 x 512 layer's
  products, the small products, the attention kernel, the readout MLP's autograd function
  itself (its compiled passes run inside it), the SGD update, data generation (everything
  under the sampler's draw), other elementwise work, and the rest: autograd, views,
  allocation).  The profiler adds about a fifth to the step; the shares are of the
  profiled total.

    .venv/bin/python benchmarks/profile_engine.py [--steps 10] [--seeds 8] [--json]
"""

import argparse
import json
import time

import torch

PARTS = ("512 x 512 products", "small products", "attention kernel", "MLP function and its compiled passes",
         "SGD update (sub_)", "data generation", "other elementwise work", "autograd, views, allocation, rest")
_PRODUCTS = ("aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::mm", "aten::addmm")
_ELEMENTWISE = ("aten::mul", "aten::add", "aten::add_", "aten::sub", "aten::cat", "aten::sum", "aten::copy_",
                "aten::index_select", "aten::softplus", "aten::softplus_backward", "aten::neg", "aten::mean",
                "aten::div", "aten::clamp_min", "aten::threshold_backward", "aten::fill_", "aten::zero_",
                "aten::constant_pad_nd", "aten::mul_", "aten::sigmoid")


def _part(name: str, shapes: str, in_draw: bool) -> str:
    if in_draw:
        return "data generation"
    if name in _PRODUCTS:
        return "512 x 512 products" if "512, 512" in shapes else "small products"
    if name.startswith("_Fused"):
        return "attention kernel"
    if name.startswith("_MLPSGD"):
        return "MLP function and its compiled passes"
    if name == "aten::sub_":
        return "SGD update (sub_)"
    if name in _ELEMENTWISE:
        return "other elementwise work"
    return "autograd, views, allocation, rest"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    for name in ("steps", "seeds"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} = {getattr(a, name)}: allowed is a whole number >= 1")

    from torch.profiler import ProfilerActivity, profile, record_function

    from icl_kinetics.simulate.allocator import tune_malloc
    from icl_kinetics.simulate.engine import TrainConfig, _build

    tune_malloc()
    torch.set_num_threads(1)
    cfg = TrainConfig(model="transformer", N=99, K=20_000, width=512, batch_size=128, seeds=a.seeds, lr=0.01,
                      workers=1, eval_size=256, label_map="shared")
    cfg.validate()
    grp = _build(cfg, torch.device("cpu"))[0]
    draw = grp._draw

    def traced_draw():
        with record_function("icl_kinetics.draw"):
            return draw()

    grp._draw = traced_draw
    for _ in range(3):
        grp.step()
    t0 = time.perf_counter()
    for _ in range(2 * a.steps):
        grp.step()
    ms_step = 1e3 * (time.perf_counter() - t0) / (2 * a.steps)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(a.steps):
            grp.step()
    ms = dict.fromkeys(PARTS, 0.0)
    for e in prof.events():
        node, in_draw = e, False
        while node is not None:
            in_draw = in_draw or node.name == "icl_kinetics.draw"
            node = node.cpu_parent
        ms[_part(e.name, str(e.input_shapes), in_draw)] += e.self_cpu_time_total / 1e3 / a.steps
    total = sum(ms.values())
    r = {"ms_per_step_unprofiled": ms_step, "ms_per_seed_iteration_one_core": ms_step / a.seeds,
         "ms_per_step_profiled": total, "ms_per_step_by_part": ms,
         "share_by_part": {k: v / total for k, v in ms.items()},
         "shapes": {"N": 99, "K": 20_000, "width": 512, "batch_size": 128, "seeds": a.seeds, "threads": 1},
         "steps": a.steps, "torch": torch.__version__}
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"one worker, {a.seeds} seeds, 1 thread: {ms_step:.1f} ms per step unprofiled "
              f"({ms_step / a.seeds:.2f} ms per seed-iteration on this core); {total:.1f} ms profiled")
        print(f"{'part':40s} {'share':>6s} {'ms/step':>8s}")
        for k in PARTS:
            print(f"{k:40s} {100 * ms[k] / total:5.1f}% {ms[k]:8.2f}")
    return r


if __name__ == "__main__":
    main()
