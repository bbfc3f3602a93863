#!/usr/bin/env python
"""Validate your own transformer against the theory: a worked example.

This file is what a user of icl-kinetics writes.  The model is a plain PyTorch
transformer (``nn.LayerNorm``, ``nn.MultiheadAttention`` and an MLP), NOT the toolkit's
engine; the data and the training loop are the user's own.  The toolkit comes in at
three points only:

1. **probes** (``icl_kinetics.validate.probes``): c1, c2, c3 from the logits on in-weights
   test sequences, and the effective induction head (w, beta) from the attention weights,
   recorded with a forward hook (``AttentionRecorder``);
2. **the logger** (``icl_kinetics.validate.RunLogger``): one schema row per evaluation,
   checked as it is written;
3. **validation** (``icl_kinetics.validate.run_validation``): every check the tables allow,
   with a report and figures.

Run it::

    python docs/examples/own_model.py                  # default size: <= 10 min on 2 CPU cores
    python docs/examples/own_model.py --tiny --out /tmp/own   # seconds (tests/test_own_model_example.py)

What it trains (all at lr 0.05, batch 128, D = 63, one-hot labels, MLP width 128):

* the MLP alone on K items (``model = "mlp"``) at several K: c1(t) for the memorization law;
* the transformer at K = inf (fresh items in every sequence) at several N: ICL onset times;
* the transformer at one N and a few finite K: c1(t) in situ, which K acquire ICL, and
  12 seeds near the threshold for bimodality and P(ICL) (K = 640 items at N = 9, where
  4 of 12 seeds acquired ICL by 4000 iterations in a trial run).

The report lands in ``OUT/report/`` (``report.md``, ``report.json``, figures); the
tables in ``OUT/tables/``.  A check that the tables cannot support says so
("inconclusive: needs ..." or "skipped"), and ``icl-kinetics validate --plan
OUT/tables/*.csv`` says what each check would need.
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from icl_kinetics.validate import RunLogger, run_validation
from icl_kinetics.validate.probes import AttentionRecorder, coefficients_from_logits, head_from_attention

D = 63  # item dimension (the paper's)


# ----------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class Task:
    """The in-context classification task: sequences of N (item, label) context tokens and
    a target item whose label is to be predicted; K training items (None: fresh items in
    every sequence)."""

    N: int
    K: int | None
    item_seed: int = 10  # the training items are the same for every run (as in the paper)

    def items(self):
        """The K training items ~ N(0, I/D) and their balanced +-1 labels."""
        g = torch.Generator().manual_seed(self.item_seed)
        x = torch.randn(self.K, D, generator=g) / math.sqrt(D)
        y = torch.ones(self.K)
        y[: self.K // 2] = -1
        return x, y[torch.randperm(self.K, generator=g)]


def tokens(x, y):
    """Tokens [item, one-hot label] of a batch of sequences (B, N + 1); the target's label
    slot (the last position) is zeroed."""
    lab = torch.stack([(y < 0).float(), (y > 0).float()], -1)
    lab[:, -1] = 0
    return torch.cat([x, lab], -1)


def sample(task: Task, table, B: int, g: torch.Generator, absent: bool = False):
    """B sequences: (tokens (B, N+1, D+2), labels (B, N+1) in +-1, item ids (B, N+1)).

    Finite K: items i.i.d. uniform from ``table``; the target copies a context item
    (``absent=False``, the training and ICL-test sequences) or is a training item absent
    from the context (``absent=True``: the in-weights test, where only memorization can
    answer).  K = None: N fresh items per sequence, labels fair coins, the target copies
    one context position."""
    N = task.N
    if table is None:
        x = torch.randn(B, N, D, generator=g) / math.sqrt(D)
        y = torch.randint(0, 2, (B, N), generator=g).float() * 2 - 1
        j = torch.randint(0, N, (B,), generator=g)
        rows = torch.arange(B)
        x = torch.cat([x, x[rows, j][:, None]], 1)
        y = torch.cat([y, y[rows, j][:, None]], 1)
        ids = torch.cat([torch.arange(N).expand(B, N), j[:, None]], 1)
        return tokens(x, y), y, ids
    items, labels = table
    K = items.shape[0]
    ids = torch.randint(0, K, (B, N + 1), generator=g)
    if absent:  # context items from the other K - 1 items
        shift = torch.randint(1, K, (B, N), generator=g)
        ids[:, :N] = (ids[:, N:] + shift) % K
    else:
        present = (ids[:, :N] == ids[:, N:]).any(1)
        pick = ids[torch.arange(B), torch.randint(0, N, (B,), generator=g)]
        ids[:, N] = torch.where(present, ids[:, N], pick)
    return tokens(items[ids], labels[ids]), labels[ids], ids


# ----------------------------------------------------------------------------- the model
class Transformer(nn.Module):
    """LayerNorm, one attention head (the target position attends over the whole
    sequence, itself included) and a 3-layer MLP on the target's residual stream."""

    def __init__(self, width: int):
        super().__init__()
        d = D + 2
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, num_heads=1, bias=False, batch_first=True)
        self.mlp = MLP(d, width)

    def forward(self, x):
        h = self.norm(x)
        q = h[:, -1:]
        out, _ = self.attn(q, h, h, need_weights=True)  # weights: (B, 1, N + 1)
        return self.mlp(h[:, -1] + out[:, 0])


class MLP(nn.Module):
    def __init__(self, d: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


# ----------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Run:
    model: str  # "transformer" or "mlp"
    N: int
    K: int | None
    seed: int
    iterations: int
    eval_every: int
    eval_size: int
    width: int = 128
    lr: float = 0.05
    batch: int = 128

    @property
    def run_id(self) -> str:
        k = "inf" if self.K is None else self.K
        return f"{self.model}-N{self.N}-K{k}"


def train_transformer(run: Run, path: Path) -> dict:
    """Train one seed; log a schema row every ``eval_every`` iterations; stop early once
    ICL accuracy passes 0.99 (as the paper does)."""
    task = Task(run.N, run.K)
    table = task.items() if run.K is not None else None
    torch.manual_seed(run.seed)  # initialization
    model = Transformer(run.width)
    opt = torch.optim.SGD(model.parameters(), lr=run.lr)
    g = torch.Generator().manual_seed(1000 + run.seed)  # training data
    # fixed test sets: novel items for ICL; training items (target absent) for IWL
    ge = torch.Generator().manual_seed(2000 + run.seed)
    novel = None if run.K is None else Task(run.N, run.K, item_seed=100).items()
    icl_set = sample(task, novel, run.eval_size, ge)
    iwl_set = sample(task, table, run.eval_size, ge, absent=True) if table is not None else None
    t_icl = None
    with RunLogger(path, run_id=run.run_id, seed=run.seed, N=run.N, K=run.K, lr=run.lr,
                   model="transformer") as log, AttentionRecorder(model.attn) as rec:
        for it in range(run.iterations + 1):
            if it % run.eval_every == 0:
                m = evaluate(model, rec, icl_set, iwl_set)
                log.log(it, **m)
                if t_icl is None and m["icl_acc"] > 0.95:
                    t_icl = it
                if m["icl_acc"] > 0.99 or it == run.iterations:
                    break
            x, y, _ = sample(task, table, run.batch, g)
            loss = nn.functional.softplus(-y[:, -1] * model(x)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {"t_icl": t_icl, "iterations": it}


@torch.no_grad()
def evaluate(model, rec, icl_set, iwl_set) -> dict:
    """The schema's metrics at one evaluation: ICL accuracy and loss, the effective head
    (w, beta) from the recorded attention, and (finite K) IWL accuracy and c1, c2, c3."""
    x, y, ids = icl_set
    rec.clear()
    logit = model(x)
    att = rec.last[:, 0]  # (B, N + 1): the target's attention weights
    label = y[:, -1]
    out = {"icl_acc": float(((label * logit) > 0).float().mean()),
           "icl_loss": float(nn.functional.softplus(-label * logit).mean())}
    out.update(head_from_attention(att[:, :-1], ids[:, :-1] == ids[:, -1:], y[:, :-1], label, logit,
                                   attention_target=att[:, -1]))
    if iwl_set is not None:
        x, y, _ = iwl_set
        logit = model(x)
        out["iwl_acc"] = float(((y[:, -1] * logit) > 0).float().mean())
        out.update(coefficients_from_logits(logit, y[:, -1]))
    return out


def train_mlp(run: Run, path: Path) -> dict:
    """The MLP alone memorizing K items (the paper's Fig. 5): c1(t) on the training items."""
    items, labels = Task(run.N, run.K).items()
    torch.manual_seed(run.seed)
    model = MLP(D, run.width)
    opt = torch.optim.SGD(model.parameters(), lr=run.lr)
    g = torch.Generator().manual_seed(1000 + run.seed)
    with RunLogger(path, run_id=run.run_id, seed=run.seed, N=run.N, K=run.K, lr=run.lr, model="mlp") as log:
        for it in range(run.iterations + 1):
            if it % run.eval_every == 0:
                with torch.no_grad():
                    logit = model(items)
                log.log(it, iwl_acc=float(((labels * logit) > 0).float().mean()),
                        **coefficients_from_logits(logit, labels))
                if it == run.iterations:
                    break
            i = torch.randint(0, run.K, (run.batch,), generator=g)
            loss = nn.functional.softplus(-labels[i] * model(items[i])).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {"iterations": it}


# ----------------------------------------------------------------------------- the plan
SIZES = {
    # MLP alone: K (items); transformer: N at K = inf, seeds; finite K at one N: {K: seeds}
    "default": dict(mlp_K=(64, 128, 256, 512, 1024), mlp_seeds=2, mlp_iterations=8000,
                    N=(9, 13, 17, 21), seeds=5, iterations=6000,
                    finite_N=9, finite_K={256: 3, 640: 12, 1024: 3, 4096: 3}, finite_iterations=4000,
                    eval_every=100, eval_size=500),
    "tiny": dict(mlp_K=(16, 32, 64), mlp_seeds=1, mlp_iterations=200,
                 N=(3, 5, 7), seeds=2, iterations=150,
                 finite_N=3, finite_K={32: 2}, finite_iterations=150, eval_every=50, eval_size=100),
}


def plan(size: str) -> list[Run]:
    p = SIZES[size]
    ev, es = p["eval_every"], p["eval_size"]
    runs = [Run("mlp", 1, K, s, p["mlp_iterations"], ev, es) for K in p["mlp_K"] for s in range(p["mlp_seeds"])]
    runs += [Run("transformer", N, None, s, p["iterations"], ev, es) for N in p["N"] for s in range(p["seeds"])]
    runs += [Run("transformer", p["finite_N"], K, s, p["finite_iterations"], ev, es)
             for K, seeds in p["finite_K"].items() for s in range(seeds)]
    return runs


def train_one(run: Run, tables: Path) -> dict:
    """Train one run into its own table ``tables/<run_id>-seed<seed>.csv`` (made afresh)."""
    path = tables / f"{run.run_id}-seed{run.seed}.csv"
    path.unlink(missing_ok=True)
    return (train_mlp if run.model == "mlp" else train_transformer)(run, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a seconds-long run (for tests)")
    ap.add_argument("--out", default="out/own_model", help="folder for tables/ and report/")
    ap.add_argument("--workers", type=int, default=2, help="runs trained at once, one process each")
    a = ap.parse_args(argv)
    out = Path(a.out)
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    runs = plan("tiny" if a.tiny else "default")
    t0 = time.perf_counter()
    # the longest runs first, one process per run; each writes its own table
    runs.sort(key=lambda r: -(r.N if r.model == "transformer" else 0.5))
    with ProcessPoolExecutor(a.workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        jobs = {pool.submit(train_one, run, tables): run for run in runs}
        for i, job in enumerate(as_completed(jobs)):
            run, res = jobs[job], job.result()
            print(f"[{i + 1}/{len(runs)} {time.perf_counter() - t0:4.0f} s] {run.run_id} seed {run.seed}: "
                  + ", ".join(f"{k} {v}" for k, v in res.items()), flush=True)
    report = run_validation(preset=None, runs=sorted(tables.glob("*.csv")), out=out / "report", progress=False)
    for v in report["verdicts"]:
        print(f"{v['prediction']:22s} {v['rung']:12s} {v['verdict']:14s} {v['reason']}")
    for k, r in report.get("skipped", {}).items():
        print(f"{k:22s} {'':12s} {'skipped':14s} {r}")
    print(f"report: {report['report']}  ({time.perf_counter() - t0:.0f} s)")
    return 3 if "failure" in report else 0


if __name__ == "__main__":
    raise SystemExit(main())
