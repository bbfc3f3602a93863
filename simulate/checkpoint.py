"""Checkpoints of the training engine: an atomic save of every group's state in one
envelope, a load that never unpickles (``torch.load(weights_only=True)``) and verifies
what it reads, the checks of a state against the run's configuration, the set-aside of a
damaged file, and the restore into groups of any grouping (docs/engine.md, "Checkpoints").
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path


from icl_kinetics.errors import ParameterError
from icl_kinetics.simulate.config import METRIC_COLUMNS, TrainConfig

#: the checkpoint envelope's format tag (see :func:`_save`)
CHECKPOINT_FORMAT = "icl-kinetics-checkpoint/2"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: unreadable, damaged, or not this run's."""


def _save(path: Path, cfg: TrainConfig, units, it: int):
    """Write the checkpoint atomically, as a self-verifying envelope.

    The state (tensors, lists, numbers and strings only) is serialized with
    ``torch.save``; the file holds ``{"format", "sha256", "payload"}`` where ``payload``
    is those bytes as a uint8 tensor and ``sha256`` their digest.  torch does not check
    its zip records' CRCs on load, so the digest is what catches a flipped bit.
    """
    import io

    import torch

    from icl_kinetics.io import atomic_write_bytes

    state = {"config_hash": cfg.config_hash(), "config": cfg.to_dict(), "iteration": it,
             "backend": units[0][0].backend,
             "groups": [g.state() if m is None else g.state_of(m) for g, m in units],
             "seed_index": [list(g.idx if m is None else m.idx) for g, m in units]}
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    env = {"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
           "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    out = io.BytesIO()
    torch.save(env, out)
    atomic_write_bytes(path, out.getvalue())


def _load_checkpoint(path: Path) -> dict:
    """Read a checkpoint without unpickling code (``weights_only=True``) and verify its digest.

    Raises :class:`CheckpointError` with the reason."""
    import io

    import torch

    if _torch_version() < (2, 10):  # weights_only could still run code or corrupt memory before 2.10
        from icl_kinetics.errors import EnvironmentFailure

        raise EnvironmentFailure(f"torch {torch.__version__} cannot read the checkpoint {path} safely "
                                 "(weights_only loading is sound from torch 2.10 on): upgrade torch, or start "
                                 "afresh with --no-resume")
    try:
        env = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, random bytes, a cut file ...
        raise CheckpointError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
    if isinstance(env, dict) and env.get("format") == CHECKPOINT_FORMAT:
        pl = env.get("payload")
        if not (isinstance(pl, torch.Tensor) and pl.dtype == torch.uint8 and pl.dim() == 1):
            raise CheckpointError("its envelope has no byte payload")
        data = pl.numpy().tobytes()
        if hashlib.sha256(data).hexdigest() != env.get("sha256"):
            raise CheckpointError("its content does not match its SHA-256 digest (damaged)")
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"unreadable payload ({type(e).__name__})")
    if isinstance(env, dict) and "config_hash" in env:  # format 1 (no digest): structure checks only
        return env
    raise CheckpointError("not an icl-kinetics checkpoint")


def _torch_version() -> tuple:
    import re

    import torch

    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _check_state(st, cfg: TrainConfig, groups) -> None:
    """Raise :class:`CheckpointError` unless ``st`` is a checkpoint of exactly this run."""
    import torch

    def need(ok, why):
        if not ok:
            raise CheckpointError(why)

    need(isinstance(st, dict), "not a dict")
    need(st.get("config_hash") == cfg.config_hash(), "it belongs to another configuration")
    made_by = st.get("backend", "autograd")  # checkpoints before the overlap backend: autograd
    need(made_by == groups[0].backend, f"it was made by the {made_by!r} backend, and this run uses "
         f"{groups[0].backend!r}")
    need(isinstance(st.get("iteration"), int) and not isinstance(st["iteration"], bool) and st["iteration"] >= 0,
         "its iteration is not a count")
    gs, si = st.get("groups"), st.get("seed_index")
    need(isinstance(gs, list) and isinstance(si, list) and len(gs) == len(si) and gs, "no seed groups")
    seeds = [i for idx in si for i in (idx if isinstance(idx, list) else [None])]
    need(all(isinstance(i, int) for i in seeds) and sorted(seeds) == list(range(cfg.seeds)),
         "its seeds are not this run's seeds")
    ref = {k: v.shape[1:] for k, v in groups[0].store.items()}
    keys = {"store", "active", "t_icl", "status", "reasons", "gens", "loss_sum", "loss_n", "last_eval",
            "rows", "its"} | ({"block_pos"} if groups[0].backend == "overlaps" else set())
    for g, idx in zip(gs, si):
        need(isinstance(g, dict) and keys <= set(g), "a seed group lacks fields")
        n = len(idx)
        store = g["store"]
        need(isinstance(store, dict) and set(store) == set(ref), "its parameters are not this model's")
        for k, v in store.items():
            need(isinstance(v, torch.Tensor) and tuple(v.shape) == (n, *ref[k]) and v.is_floating_point(),
                 f"parameter {k} has the wrong shape or type")
        for k in ("t_icl", "status", "reasons", "gens", "its"):
            need(isinstance(g[k], list) and len(g[k]) == n, f"field {k} has the wrong length")
        need(all(s in ("running", "stopped", "diverged") for s in g["status"]), "unknown seed status")
        need(all(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 for x in g["gens"]),
             "bad generator states")
        need(all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= st["iteration"] for x in g["its"]),
             "bad iteration counts")
        need(all(t is None or (isinstance(t, int) and 0 <= t <= st["iteration"]) for t in g["t_icl"]),
             "bad t_ICL values")
        need(isinstance(g["active"], list) and all(isinstance(a, int) and 0 <= a < n for a in g["active"]),
             "bad active list")
        need(isinstance(g["loss_sum"], torch.Tensor) and tuple(g["loss_sum"].shape) == (n,), "bad loss sums")
        need(isinstance(g["rows"], list) and all(isinstance(r, dict) and set(r) == set(METRIC_COLUMNS)
                                                 for r in g["rows"]), "bad metric rows")
    if st["iteration"] > cfg.iterations:  # a healthy checkpoint past a lowered cap: the user's call
        raise ParameterError("iterations", cfg.iterations, f">= {st['iteration']}, the iteration of the checkpoint "
                             "in this folder (or start afresh with --no-resume)")


def _set_aside(path: Path, why: str) -> str:
    """Rename a rejected checkpoint (never delete it); return a one-line note naming both files."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest = path.with_name(f"{path.name}.rejected-{stamp}")
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.rejected-{stamp}-{k}")
        k += 1
    os.replace(path, dest)
    return f"checkpoint {path} set aside as {dest.name}: {why}; the run restarts from iteration 0"


def _restore(units, st) -> int:
    """Load a run's checkpoint into its units ``[(group, member)]``; the grouping may differ
    (workers changed, or the run trained alone and now in a pack, or the reverse)."""
    import torch

    by_seed = {}
    for gs, idx in zip(st["groups"], st["seed_index"]):
        for q, i in enumerate(idx):
            by_seed[i] = (gs, q)
    rows = [r for gs in st["groups"] for r in gs["rows"]]
    for g, m in units:
        idx, cfg = (g.idx, g.cfg) if m is None else (m.idx, m.cfg)
        sub = {"store": {}, "active": [], "t_icl": [], "status": [], "reasons": [], "gens": [],
               "rows": [], "its": []}
        stores, loss = [], []
        for q, i in enumerate(idx):
            gs, k = by_seed[i]
            stores.append({n: v[k] for n, v in gs["store"].items()})
            if k in gs["active"]:
                sub["active"].append(q)
            sub["t_icl"].append(gs["t_icl"][k])
            sub["status"].append(gs["status"][k])
            sub["reasons"].append(gs["reasons"][k])
            sub["gens"].append(gs["gens"][k])
            loss.append(gs["loss_sum"][k])
            sub["its"].append(gs["its"][k])
        sub["store"] = {n: torch.stack([s[n] for s in stores]) for n in stores[0]}
        sub["loss_sum"] = torch.stack(loss)
        # every group with active seeds stepped and evaluated at the same iterations
        live = [gs for gs in st["groups"] if gs["active"]] or st["groups"]
        sub["loss_n"], sub["last_eval"] = live[0]["loss_n"], max(gs["last_eval"] for gs in st["groups"])
        if "block_pos" in live[0]:  # the overlap sampler: where live groups are in their random block
            sub["block_pos"] = live[0]["block_pos"]
        seeds = {cfg.seed_offset + i for i in idx}
        sub["rows"] = [r for r in rows if r["seed"] in seeds]
        if m is None:
            g.load(sub)
        else:
            g.load_member(m, sub)
    return int(st["iteration"])
