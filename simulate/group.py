"""The seed group of the autograd backend: the seeds of one run, or of several runs packed
together (grid batching), trained as one seed-batched tensor program.  A group draws its
training batches, takes the SGD step (the readout MLP's update fused into its backward
pass, :class:`icl_kinetics.simulate.models.SGDStep`), evaluates on the test sets, and
holds the per-model forward passes and the shared item and token tables.
:mod:`~icl_kinetics.simulate.engine` drives it (docs/engine.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icl_kinetics.simulate.config import METRIC_COLUMNS, TrainConfig

#: the training loss is computed on rows padded to a multiple of this many floats.  torch's
#: CPU kernels run an elementwise op in vector chunks from the start of the tensor and its
#: remainder in scalar code, and their vector and scalar exp/log round differently; on rows
#: of whole chunks a seed's softplus (and its backward) takes the same path in a group of any
#: size, so a seed gets the same bits alone, in a larger group or in a pack (grid batching).
#: 64 covers AVX-512 (32-float chunks) and AVX2 (16).  Batch sizes that are multiples of 64
#: (the paper's 128) are not padded.
_LANES = 64
# ----------------------------------------------------------------------------- per-model work
def _forward_transformer(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    _, items, labels, ctx, tgt = inp
    if tables is not None:
        n_c, n_t = tables
    elif items.dim() == 2 and grp.tables is not None and items is grp.items:
        n_c, n_t = grp.tables  # the training tables (of every run in the group, stacked)
    else:
        n_c, n_t = grp.shared.token_tables(items, labels)
    need = ctx.numel() * n_c.shape[-1]
    if grp._gbuf is None or grp._gbuf.numel() < need:
        grp._gbuf = grp.torch.empty(need, device=grp.device, dtype=n_c.dtype)
    return mm.transformer_fast(p, n_c, n_t, ctx, tgt, return_attention=attention, buffer=grp._gbuf)


def _dense_tokens(grp, inp):
    """The sequences' dense tokens (S, B, N+1, T), the target last (label slot zero)."""
    from icl_kinetics.simulate import data as dm

    torch = grp.torch
    _, items, labels, ctx, tgt = inp
    if items.dim() == 2:
        c, t = dm.token_table(items, labels, grp.cfg.labels)
        return torch.cat([c[ctx], t[tgt].unsqueeze(2)], dim=2)
    ct = [dm.token_table(i, l, grp.cfg.labels) for i, l in zip(items, labels)]
    return torch.stack([torch.cat([c[cx], t[tg].unsqueeze(1)], dim=1) for (c, t), cx, tg in zip(ct, ctx, tgt)])


def _forward_transformer2(grp, p, inp, attention, tables):
    """Every position is needed (see models.py): dense tokens."""
    from icl_kinetics.simulate import models as mm

    return mm.transformer_reference(p, _dense_tokens(grp, inp), return_attention=attention)


def _forward_itemblind(grp, p, inp, attention, tables):
    """The ablations (rung 2.5, models.py) run on dense tokens."""
    from icl_kinetics.simulate import models as mm

    return mm.transformer_itemblind(p, _dense_tokens(grp, inp), grp.cfg.D, return_attention=attention)


def _forward_split(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    return mm.transformer_split(p, _dense_tokens(grp, inp), return_attention=attention)


def _forward_noln(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    return mm.transformer_noln(p, _dense_tokens(grp, inp), return_attention=attention)


def _forward_minimal(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    _, items, labels, ctx, tgt = inp
    return mm.minimal_forward(p, items, labels, ctx, tgt, return_attention=attention)


def _forward_mlp(grp, p, inp, attention, tables):
    from icl_kinetics.simulate import models as mm

    return mm.mlp_forward(p, grp.items[inp[1]])


@dataclass(frozen=True)
class _Kind:
    """What the engine does differently per model (the one place that depends on it).

    forward(group, params, inputs, attention, tables): logits (S, n) [, attention].
    icl: trained on sequences with an ICL readout (t_ICL, early stop, the ICL test set and
        the attention diagnostics); False: on bare items (the standalone MLP).
    coefficients: where c1, c2, c3 come from: ``"iwl"`` (phi_plus = y * logit on the IWL
        test set), ``"probe"`` (phi_plus = y * phi on up to 10^4 training items, when the
        model has an MLP phi and K is finite) or None.
    token_tables: normalize the token tables once per run (the fast transformer path).
    params_wb: the w and beta columns are the model's own parameters.
    """

    forward: object
    icl: bool = True
    coefficients: str | None = "iwl"
    token_tables: bool = False
    params_wb: bool = False


_KINDS = {
    "transformer": _Kind(_forward_transformer, token_tables=True),
    "transformer2": _Kind(_forward_transformer2),
    "minimal": _Kind(_forward_minimal, coefficients="probe", params_wb=True),
    "mlp": _Kind(_forward_mlp, icl=False, coefficients="probe"),
    # the ablations: c1..c3 and the effective (w, beta) measured as for the transformer
    "transformer_itemblind": _Kind(_forward_itemblind),
    "transformer_split": _Kind(_forward_split),
    "transformer_noln": _Kind(_forward_noln),
}


def _coefficients(phi_plus, weights=None) -> tuple:
    """c1, c2, c3 (S,) of correct-label logits phi_plus (S, n), float64: the theory's one
    definition, :func:`icl_kinetics.theory.mlp_coefficients`; ``weights`` (n,): the items'
    frequencies under the run's item distribution (Zipf), None: plain means."""
    from icl_kinetics.theory import mlp_coefficients

    c = mlp_coefficients(phi_plus, axis=-1, weights=weights)
    return c["c1"], c["c2"], c["c3"]


# ----------------------------------------------------------------------------- shared data
class _Shared:
    """What every seed shares (autograd backend): the item set, test sets and their
    normalized token tables.

    With per-seed label maps (``label_map="per-seed"``, finite K) the item set, its shared
    label map and the test sets are drawn from ``item_seed`` exactly as with a shared map (so
    the ICL test set is the same), and the training context table holds every item with
    either label (``rows`` = 2: row ``2 i + c`` is item i with label 2 c - 1,
    :func:`~icl_kinetics.simulate.data.class_token_tables`), shared by every seed; each seed's
    IWL test sequences are :meth:`iwl_for` its own map."""

    def __init__(self, cfg: TrainConfig, device):
        import torch

        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate.models import normalize_tokens

        kind = _KINDS[cfg.model]
        self.dcfg = dcfg = cfg.data_config()
        self.device = device
        self.per_seed = cfg.label_map_in_use == "per-seed"
        self.rows = 2 if self.per_seed else 1  # context-table rows per item
        gen = dm.item_generator(cfg.item_seed, device=device)
        self.items = self.labels = None
        if cfg.K is not None:
            self.items, self.labels = dm.make_item_set(cfg.K, cfg.D, gen, device=device)
        enc = cfg.labels
        self.tables = None
        self.icl = self.iwl = None
        if kind.icl:
            # novel items with fresh balanced labels, from the shared item stream
            self.icl = dm.icl_test_set(dcfg, None, gen, device=device)
            self._iwl_state = gen.get_state() if self.per_seed else None  # where iwl_for draws from
            self.iwl = dm.iwl_test_set(dcfg, self.items, self.labels, gen, device=device) if cfg.K else None
            if cfg.K is not None and kind.token_tables:
                c, t = (dm.class_token_tables(self.items, enc) if self.per_seed
                        else dm.token_table(self.items, self.labels, enc))
                self.tables = (normalize_tokens(c), normalize_tokens(t))
        # memorization probe: phi_plus on (up to) 10^4 training items; under Zipf item
        # frequencies c1, c2, c3 are expectations under the item distribution, p(k) ~ (k+1)^-alpha
        # renormalized over the probed items (the most frequent ones); None: plain means
        self.probe = self.probe_weights = None
        if cfg.K is not None and kind.coefficients == "probe" and cfg.width:
            n = min(cfg.K, 10_000)
            self.probe = torch.arange(n, device=device)
            if cfg.zipf_alpha > 0:
                self.probe_weights = dm.zipf_weights(n, float(cfg.zipf_alpha)).numpy()
        self.enc = enc
        self._norm = normalize_tokens
        self.test_tables = {}
        if kind.token_tables:  # normalized once, not at every evaluation
            for name, b in (("icl", self.icl), ("iwl", self.iwl)):
                if b is None or (name == "iwl" and self.per_seed):  # per seed: on self.tables
                    continue
                if name == "iwl" and b.items is self.items and b.labels is self.labels and self.tables:
                    # the IWL sequences run over the training items and map: their tables are
                    # the training tables (a second copy was K x 2T floats, 208 MB at K = 4e5)
                    self.test_tables[name] = self.tables
                else:
                    self.test_tables[name] = self.token_tables(b.items, b.labels)

    def iwl_for(self, labels):
        """The IWL test sequences ``(ctx (n, N), tgt (n,))`` of a seed whose label map is
        ``labels`` (K,): those a run with that map as its shared map draws.  With iid
        contexts the draws do not depend on the labels, so they are the shared ones; with
        equalized contexts they are drawn with ``labels`` from the item stream at the point
        where the shared IWL set was drawn (the draws' count does not depend on the labels)."""
        if self.dcfg.contexts == "iid":
            return self.iwl.ctx, self.iwl.tgt
        import torch

        from icl_kinetics.simulate import data as dm

        gen = torch.Generator(device=self.device)
        gen.set_state(self._iwl_state)
        b = dm.iwl_test_set(self.dcfg, self.items, labels, gen, device=self.device)
        return b.ctx, b.tgt

    def token_tables(self, items, labels):
        """Normalized (context, target) token tables for an item table (M, D) or (S, M, D)."""
        from icl_kinetics.simulate import data as dm

        if items.dim() == 2:
            c, t = dm.token_table(items, labels, self.enc)
        else:
            ct = [dm.token_table(i, l, self.enc) for i, l in zip(items, labels)]
            import torch

            c, t = torch.stack([x[0] for x in ct]), torch.stack([x[1] for x in ct])
        return self._norm(c), self._norm(t)


# ----------------------------------------------------------------------------- grid batching
class _Tables:
    """The training item tables of the runs in a pack, stacked once: run ``r``'s rows are
    ``off[r] : off[r] + K_r`` of ``items`` (M, D), ``labels`` (M,) and the normalized token
    ``tables`` (M, T) x 2 (with per-seed label maps the context table has two rows per item:
    run ``r``'s are ``2 off[r] : 2 (off[r] + K_r)``).  Each run's :class:`_Shared` is rebound
    to views of these rows, so no table is held twice and none per seed.  One run: its own
    tensors, offset 0."""

    def __init__(self, shareds: list):
        import torch

        first = shareds[0]
        self.off = [0] * len(shareds)
        self.items, self.labels, self.tables = first.items, first.labels, first.tables
        if len(shareds) == 1 or first.items is None:  # one run, or K = inf (fresh items per seed)
            return
        ks = [sh.items.shape[0] for sh in shareds]
        self.off = [int(v) for v in np.cumsum([0] + ks[:-1])]
        self.items = torch.cat([sh.items for sh in shareds])
        self.labels = torch.cat([sh.labels for sh in shareds])
        if first.tables is not None:
            self.tables = (torch.cat([sh.tables[0] for sh in shareds]), torch.cat([sh.tables[1] for sh in shareds]))
        for sh, a, k in zip(shareds, self.off, ks):
            old = sh.items
            sh.items, sh.labels = self.items[a:a + k], self.labels[a:a + k]
            if self.tables is not None:
                r = sh.rows  # context-table rows per item (equal in a pack: label_map is a PACK_FIELD)
                sh.tables = (self.tables[0][r * a:r * (a + k)], self.tables[1][a:a + k])
            if sh.iwl is not None and sh.iwl.items is old:
                sh.iwl.items, sh.iwl.labels = sh.items, sh.labels


class _Member:
    """One run's seeds inside a seed group: group positions ``lo:hi`` are the run's seed
    positions ``idx``; what the run decides on its own (evaluation schedule, rows, t_ICL,
    early stop) is kept here.  ``shift``: the run's iteration minus the segment's step
    count (runs of a pack may resume at different iterations)."""

    def __init__(self, grp, run: int, cfg: TrainConfig, shared, idx: list[int], lo: int, off: int):
        self.grp, self.run, self.cfg, self.shared, self.idx = grp, run, cfg, shared, list(idx)
        self.lo, self.hi, self.off = lo, lo + len(idx), off
        self.loss_n, self.last_eval, self.shift = 0, -1, 0
        self.rows: list = []
        self._cols, self._pos = {}, {}

    def active(self) -> list[int]:
        return [j for j in self.grp.active if self.lo <= j < self.hi]

    def begin_eval(self, it: int):
        self.grp.begin_eval(it, self)


class _Whole:
    """A group without members (the overlap sampler's) seen as one unit of the loop."""

    shift = 0

    def __init__(self, grp):
        self.grp, self.cfg = grp, grp.cfg

    @property
    def last_eval(self):
        return self.grp.last_eval

    @last_eval.setter
    def last_eval(self, v):
        self.grp.last_eval = v

    def active(self) -> list[int]:
        return list(self.grp.active)

    def begin_eval(self, it: int):
        self.grp.begin_eval(it)


def _units(grp) -> list:
    return grp.members if hasattr(grp, "members") else [_Whole(grp)]


# ----------------------------------------------------------------------------- seed group
class _Group:
    """A group of seeds trained together (one worker), autograd backend.

    The seeds may belong to several runs of one pack (grid batching,
    :func:`~icl_kinetics.simulate.engine.train_packed`):
    ``parts`` lists ``(run, cfg, shared, idx)`` per run, and each becomes a
    :class:`_Member`.  Every run's seeds draw from their own generators and their own item
    table (rows ``off`` of the stacked tables), and are updated with their own lr and weight
    decays; only the batched matmuls are shared.

    The interface that :func:`icl_kinetics.simulate.engine._run_group` drives (the overlap sampler's
    :class:`~icl_kinetics.simulate.overlaps.OverlapGroup` has the same, for one run):
    ``step()``, ``begin_eval(it[, member])`` / ``passes(sel, threshold)`` / ``log(sel, it)``,
    ``deactivate(local)``, the per-seed lists ``active``, ``t_icl``, ``status``,
    ``reasons``, ``its``, and ``state()`` / ``load()`` (one run) or
    ``state_of(member)`` / ``load_member(member, state)``.
    """

    backend = "autograd"
    #: train the readout MLP by :class:`~icl_kinetics.simulate.models.SGDStep` (its update
    #: fused into its backward pass); False: autograd's gradients and :func:`_sgd_update` for
    #: every parameter, the reference that tests/test_fused_mlp.py and bench_engine compare
    fused_mlp = True

    def __init__(self, parts: list, device, tables: _Tables | None = None):
        import torch
        from dataclasses import replace

        from icl_kinetics.simulate import data as dm
        from icl_kinetics.simulate import models as mm

        self.torch, self.device = torch, device
        run0, self.cfg, self.shared, idx0 = parts[0]
        tables = tables or _Tables([self.shared])
        self.items, self.labels, self.tables = tables.items, tables.labels, tables.tables
        self.kind = _KINDS[self.cfg.model]
        # per-seed label maps (label_map="per-seed", equal in a pack): seed position q's map is
        # lab[lstart[q] : lstart[q] + K] over its run's items; iwl_seq[q]: its IWL sequences
        self.per_seed, self.lab, self.lstart, self.iwl_seq, maps = self.shared.per_seed, None, None, [], None
        if self.per_seed:
            maps = [dm.seed_label_map(cfg.K, cfg.seed, cfg.seed_offset + i, device=device)
                    for _, cfg, _, idx in parts for i in idx]
            starts = [int(v) for v in np.cumsum([0] + [len(v) for v in maps[:-1]])]
            self.lab = torch.cat(maps)
            self.lstart = torch.tensor(starts, dtype=torch.long, device=device)
            maps = [self.lab[a:a + len(v)] for a, v in zip(starts, maps)]  # views: one copy of each map
        per_seed, self.gens, self.samplers, self.members, offs = [], [], [], [], []
        for run, cfg, shared, idx in parts:
            m = _Member(self, run, cfg, shared, idx, len(per_seed), tables.off[run] if len(tables.off) > run else 0)
            self.members.append(m)
            mcfg = cfg.model_config()
            for i in idx:
                g = dm.seed_generators(cfg.seed, cfg.seed_offset + i, device=device)
                # parameters are always drawn on CPU, so a seed starts the same on every device
                gi = g["init"] if device.type == "cpu" else dm.seed_generators(cfg.seed, cfg.seed_offset + i)["init"]
                per_seed.append(mm.init_params(replace(mcfg, beta0=cfg.beta0_of(i)), gi))
                self.gens.append(g["data"])
                labels = shared.labels if maps is None else maps[len(per_seed) - 1]
                if self.kind.icl:
                    self.samplers.append(dm.SequenceSampler(shared.dcfg, shared.items, labels, g["data"],
                                                            device=device))
                    if maps is not None:
                        self.iwl_seq.append(shared.iwl_for(labels))
                else:
                    self.samplers.append(dm.ItemSampler(cfg.K, cfg.zipf_alpha, g["data"], device=device))
                offs.append(m.off)
        self.idx = idx0 if len(parts) == 1 else None  # seed positions of the one run
        # row offset of each seed's item table in the stacked tables (None: all 0)
        self.offs = torch.tensor(offs, dtype=torch.long, device=device) if any(offs) else None
        self.store = mm.stack_params(per_seed, device=device)
        self.att_names, self.mlp_names = mm.param_groups(self.store)
        S = len(per_seed)
        self.active = list(range(S))
        self._segs = None
        self.p = self._select()
        self.t_icl = [None] * S
        self.status = ["running"] * S
        self.reasons = [""] * S
        self.loss_sum = torch.zeros(S, dtype=torch.float64, device=device)
        self._gbuf = None  # reused scratch for the gathered tokens (fresh pages cost ~3x)
        self.its = [0] * S  # iterations trained, per seed
        self._cur = None  # the member evaluated last

    @property
    def rows(self) -> list:
        return [r for m in self.members for r in m.rows]

    # -- parameters ------------------------------------------------------------------
    def _select(self):
        self._segs = None
        t = self.torch.tensor(self.active, dtype=self.torch.long, device=self.device)
        return {k: v[t].clone().requires_grad_(True) for k, v in self.store.items()}

    def _write_back(self):
        if not self.active:  # every seed stopped: the store already holds their parameters
            return
        t = self.torch.tensor(self.active, dtype=self.torch.long, device=self.device)
        with self.torch.no_grad():
            for k, v in self.p.items():
                self.store[k][t] = v.detach()

    def deactivate(self, local: list[int]):
        """Stop seeds (positions in this group); their parameters are kept in the store."""
        self._write_back()
        self.active = [j for j in self.active if j not in set(local)]
        self.p = self._select() if self.active else {}
        self._segs = None

    def _span(self, m: _Member) -> tuple[int, int]:
        """Where member ``m``'s active seeds are in ``active`` (and in ``p``): a contiguous range."""
        act = [q for q, j in enumerate(self.active) if m.lo <= j < m.hi]
        return (act[0], act[-1] + 1) if act else (0, 0)

    def _segments(self) -> list:
        """The active seeds as runs of equal (lr, wd_attn, wd_mlp): [(a, b, lr, wd_attn, wd_mlp)]
        over positions in ``active``."""
        if self._segs is None:
            segs = []
            for m in self.members:
                a, b = self._span(m)
                if a == b:
                    continue
                h = (m.cfg.lr, m.cfg.wd_attn, m.cfg.wd_mlp)
                if segs and segs[-1][1] == a and segs[-1][2:] == h:
                    segs[-1] = (segs[-1][0], b, *h)
                else:
                    segs.append((a, b, *h))
            self._segs = segs
            self._live = [m for m in self.members if self._span(m)[1] > self._span(m)[0]]
            self._o = None if self.offs is None else \
                self.offs[self.torch.tensor(self.active, dtype=self.torch.long, device=self.device)]
            self._ls = None if self.lstart is None else \
                self.lstart[self.torch.tensor(self.active, dtype=self.torch.long, device=self.device)]
        return self._segs

    # -- forward -----------------------------------------------------------------------
    def _draw(self):
        """A training batch for the active seeds: (logits fn inputs, y).  Each seed's indices
        point into its own run's rows of the stacked tables."""
        torch = self.torch
        B = self.cfg.batch_size
        self._segments()
        o = self._o  # each active seed's row offset (None: all 0)
        if not self.kind.icl:
            idx = torch.stack([self.samplers[j].sample(B) for j in self.active])
            y = None if self._ls is None else self.lab[idx + self._ls[:, None]]  # the seed's own labels
            if o is not None:
                idx += o[:, None]
            return ("items", idx), (self.labels[idx] if y is None else y)
        batches = [self.samplers[j].sample(B) for j in self.active]
        ctx = torch.stack([b.ctx for b in batches])
        tgt = torch.stack([b.tgt for b in batches])
        if self.per_seed:
            return self._seed_inputs(self.items, ctx, tgt, o, self._ls)
        if self.cfg.K is None:
            items = torch.stack([b.items for b in batches])
            labels = torch.stack([b.labels for b in batches])
            ar = torch.arange(len(batches), device=self.device)[:, None]
            y = labels[ar, tgt]
        else:
            if o is not None:
                ctx += o[:, None, None]
                tgt += o[:, None]
            items, labels = self.items, self.labels
            y = labels[tgt]
        return ("seq", items, labels, ctx, tgt), y

    def _seed_inputs(self, items, ctx, tgt, o, ls):
        """The forward's inputs and y for seeds with their own label maps: ``ctx`` (S, n, N),
        ``tgt`` (S, n) index the rows of their run's items, seed q's at row offset ``o[q]`` of
        ``items`` (o None: 0) and its labels at ``lab[ls[q]:]``.  Returns ``(inputs, y)``.

        The fast transformer (``token_tables``) reads context rows ``2 (index) + c`` of the
        context table with both labels of every item (c = 1 for label +1), target rows as
        ever; every other model gets a table per seed of the batch's own items and labels,
        (S, n (N + 1), D) and (S, n (N + 1)), the form of K = inf's fresh items, with each
        sequence's context at positions (N + 1) b + j and its target at (N + 1) b + N.  Either
        way each seed sees the numbers of a run whose shared map is its own."""
        torch = self.torch
        S, n, N = ctx.shape
        lab_ctx = self.lab[ctx + ls[:, None, None]]
        y = self.lab[tgt + ls[:, None]]
        if o is not None:
            ctx = ctx + o[:, None, None]
            tgt = tgt + o[:, None]
        if self.kind.token_tables:
            return ("seq", items, None, 2 * ctx + (lab_ctx > 0), tgt), y
        idx = torch.cat([ctx, tgt[..., None]], -1).reshape(S, n * (N + 1))
        lab = torch.cat([lab_ctx, y[..., None]], -1).reshape(S, n * (N + 1))
        pos = torch.arange(n * (N + 1), device=ctx.device).view(n, N + 1)
        return ("seq", items[idx], lab, pos[:, :N].expand(S, n, N), pos[:, N].expand(S, n)), y

    def _logits(self, p, inp, attention=False, tables=None):
        out = self.kind.forward(self, p, inp, attention, tables)
        return out if attention else (out, None)

    def step(self) -> dict:
        """One SGD iteration for every active seed, each with its run's lr and weight decays
        (updated in slices of equal hyperparameters: the same float32 operations as a run
        trained alone).  Returns {group position: "training loss"} for the seeds whose
        training loss was not finite."""
        from icl_kinetics.simulate.models import FUSED_PARAMS, MLP_PARAMS, SGDStep

        torch = self.torch
        inp, y = self._draw()
        segs = self._segments()
        # the readout MLP updates itself in its backward pass (models.SGDStep, docs/engine.md,
        # "The fused MLP step"); autograd differentiates the rest
        fused = self.fused_mlp and all(k in self.p for k in MLP_PARAMS)
        p = SGDStep(self.p, [(a, b, lr, wd_mlp) for a, b, lr, _, wd_mlp in segs]) if fused else self.p
        logit, _ = self._logits(p, inp)
        z = -y * logit
        B = z.shape[1]
        if B % _LANES:  # see _LANES: every seed's losses on whole vector lanes, as in any batch
            z = torch.nn.functional.pad(z, (0, -B % _LANES))
        per_seed = torch.nn.functional.softplus(z)[:, :B].mean(1)
        # with the fused step autograd still differentiates the MLP's biases and readout, so the
        # MLP's backward pass (and with it the update of W1, W2) runs wherever the MLP is used
        names = [k for k in self.p if not (fused and k in FUSED_PARAMS)]
        grads = torch.autograd.grad(per_seed.sum(), [self.p[k] for k in names])
        _sgd_update(self.p, dict(zip(names, grads)), segs, self.att_names)
        with torch.no_grad():
            t = torch.tensor(self.active, dtype=torch.long, device=self.device)
            self.loss_sum[t] += per_seed.detach().double()
        for m in self._live:  # the members with active seeds
            m.loss_n += 1
        for j in self.active:
            self.its[j] += 1
        bad = np.flatnonzero(~np.isfinite(per_seed.detach().cpu().numpy()))
        return {self.active[q]: "training loss" for q in bad}

    # -- evaluation ----------------------------------------------------------------------
    def _eval_set(self, p, batch, attention: bool, tables=None):
        """Accuracy, loss, and (transformer/minimal) effective (w, beta) on a test set: the
        theory's definitions, :func:`icl_kinetics.theory.correct_margin` and
        :func:`icl_kinetics.theory.effective_head`."""
        from icl_kinetics.theory.probes import correct_margin, effective_head

        torch = self.torch
        S = next(iter(p.values())).shape[0]
        ctx = batch.ctx.unsqueeze(0).expand(S, -1, -1)
        tgt = batch.tgt.unsqueeze(0).expand(S, -1)
        y = batch.labels[batch.tgt]
        outs, atts = [], []
        C = 250
        for s0 in range(0, ctx.shape[1], C):
            inp = ("seq", batch.items, batch.labels, ctx[:, s0:s0 + C], tgt[:, s0:s0 + C])
            lo, at = self._logits(p, inp, attention=attention, tables=tables)
            outs.append(lo)
            atts.append(at)
        logit = torch.cat(outs, 1).double()
        yl = correct_margin(logit, y.double(), multiclass=False)  # y * logit
        res = {"acc": (yl > 0).double().mean(1), "loss": torch.nn.functional.softplus(-yl).mean(1), "yl": yl}
        if attention and atts[0] is not None:
            p_ctx = torch.cat([a[0] for a in atts], 1).double()
            p_tgt = torch.cat([a[1] for a in atts], 1).double()
            match = (batch.ctx == batch.tgt[:, None])  # (n, N): copies of the target
            # the one definition of the effective (w, beta), shared with validate.probes
            head = effective_head(p_ctx, match, batch.labels[batch.ctx].double(), y.double(), yl,
                                  attention_target=p_tgt)
            logp = torch.cat([p_ctx, p_tgt[..., None]], -1).clamp_min(1e-300).log()
            res.update(w=head["w"], beta=head["beta"], attn_logit_std=logp.std(-1).mean(1))
        return res

    def _probe_phi_plus(self, p, sh, S, ls=None):
        """phi_plus = y * phi(x) on the probe items, (S, n) float64; y from each seed's own
        label map (at ``lab[ls[q]:]``) when ``ls`` is given."""
        from icl_kinetics.simulate import models as mm

        idx = sh.probe.unsqueeze(0).expand(S, -1)
        y = sh.labels[idx] if ls is None else self.lab[idx + ls[:, None]]
        return mm.mlp_forward(p, sh.items[idx]).double() * y.double()

    def _eval_iwl_seeds(self, p, sh, act, ls):
        """The IWL test of seeds ``act`` (group positions) with their own label maps (at
        ``lab[ls[q]:]``), each on its own IWL sequences (:meth:`_Shared.iwl_for`), in the
        chunks of :meth:`_eval_set`: accuracy, loss and phi_plus = y * logit."""
        from icl_kinetics.theory.probes import correct_margin

        torch = self.torch
        S = len(act)
        seqs = [self.iwl_seq[j] for j in act]
        if all(c is seqs[0][0] for c, _ in seqs):  # iid contexts: one set of sequences
            ctx, tgt = seqs[0][0].unsqueeze(0).expand(S, -1, -1), seqs[0][1].unsqueeze(0).expand(S, -1)
        else:
            ctx, tgt = torch.stack([c for c, _ in seqs]), torch.stack([t for _, t in seqs])
        tables = sh.tables if self.kind.token_tables else None
        outs, C = [], 250
        for s0 in range(0, ctx.shape[1], C):
            inp, _ = self._seed_inputs(sh.items, ctx[:, s0:s0 + C], tgt[:, s0:s0 + C], None, ls)
            outs.append(self._logits(p, inp, tables=tables)[0])
        logit = torch.cat(outs, 1).double()
        y = self.lab[tgt + ls[:, None]].double()
        yl = torch.stack([correct_margin(logit[q], y[q], multiclass=False) for q in range(S)])  # y * logit
        return {"acc": (yl > 0).double().mean(1), "loss": torch.nn.functional.softplus(-yl).mean(1), "yl": yl}

    def _member(self, m):
        if m is None:
            if len(self.members) != 1:
                raise ValueError("a group of several runs evaluates one member at a time")
            return self.members[0]
        return m

    def begin_eval(self, it: int, m: _Member | None = None):
        """Evaluate every active seed of member ``m`` (the one run when None) on its run's own
        test sets (all of :data:`METRIC_COLUMNS`); :meth:`passes` and :meth:`log` read the
        result."""
        torch = self.torch
        m = self._member(m)
        kind = self.kind
        sh = m.shared
        a, b = self._span(m)
        act = self.active[a:b]
        S = len(act)
        p = {k: v[a:b] for k, v in self.p.items()} if len(self.members) > 1 else self.p
        cols = {c: [float("nan")] * S for c in METRIC_COLUMNS[2:]}
        c = None
        with torch.no_grad():
            t = torch.tensor(act, dtype=torch.long, device=self.device)
            ls = None if self.lstart is None else self.lstart[t]  # per-seed label maps
            if m.loss_n:
                cols["train_loss"] = (self.loss_sum[t] / m.loss_n).tolist()
            if not kind.icl:  # memorization of the training items
                php = self._probe_phi_plus(p, sh, S, ls)
                cols["iwl_acc"] = (php > 0).double().mean(1).tolist()
                cols["iwl_loss"] = torch.nn.functional.softplus(-php).mean(1).tolist()
                c = _coefficients(php, sh.probe_weights)
            else:
                r = self._eval_set(p, sh.icl, attention=True, tables=sh.test_tables.get("icl"))
                cols["icl_acc"], cols["icl_loss"] = r["acc"].tolist(), r["loss"].tolist()
                for k in ("w", "beta", "attn_logit_std"):
                    if k in r:
                        cols[k] = r[k].tolist()
                if sh.iwl is not None:
                    ri = self._eval_set(p, sh.iwl, attention=False, tables=sh.test_tables.get("iwl")) \
                        if ls is None else self._eval_iwl_seeds(p, sh, act, ls)
                    cols["iwl_acc"], cols["iwl_loss"] = ri["acc"].tolist(), ri["loss"].tolist()
                    if kind.coefficients == "iwl":  # phi_plus = y * logit with the target absent
                        c = _coefficients(ri["yl"])
                if kind.params_wb:
                    cols["w"] = p["w"].double().tolist()
                    cols["beta"] = p["beta"].double().tolist()
                if kind.coefficients == "probe" and sh.probe is not None:
                    c = _coefficients(self._probe_phi_plus(p, sh, S, ls), sh.probe_weights)
            if c is not None:
                cols["c1"], cols["c2"], cols["c3"] = (x.tolist() for x in c)
            self.loss_sum[m.lo:m.hi] = 0.0
        m.loss_n = 0
        m._cols = cols
        m._pos = {j: q for q, j in enumerate(act)}
        self._cur = m

    def passes(self, sel: list[int], threshold: float) -> list[bool]:
        """Whether each seed of ``sel`` had ICL accuracy > ``threshold`` at this evaluation."""
        m = self._cur
        return [m._cols["icl_acc"][m._pos[j]] > threshold for j in sel]

    def log(self, sel: list[int], it: int):
        """Append the metric rows of seeds ``sel`` evaluated at iteration ``it``."""
        m = self._cur
        for j in sel:
            q = m._pos[j]
            row = {"seed": m.cfg.seed_offset + m.idx[j - m.lo], "iteration": it}
            row.update({k: float(v[q]) for k, v in m._cols.items()})
            m.rows.append(row)

    # -- checkpoint state ------------------------------------------------------------------
    def state_of(self, m: _Member) -> dict:
        """Member ``m``'s state, in the form of a one-run group's (:meth:`state`)."""
        self._write_back()
        lo, hi = m.lo, m.hi
        whole = lo == 0 and hi == len(self.its)
        cut = (lambda v: v.detach().cpu()) if whole else (lambda v: v[lo:hi].detach().cpu().clone())
        return {"store": {k: cut(v) for k, v in self.store.items()},
                "active": [j - lo for j in self.active if lo <= j < hi],
                "t_icl": self.t_icl[lo:hi], "status": self.status[lo:hi], "reasons": self.reasons[lo:hi],
                "gens": [g.get_state() for g in self.gens[lo:hi]], "loss_sum": cut(self.loss_sum),
                "loss_n": m.loss_n, "last_eval": m.last_eval, "rows": list(m.rows), "its": self.its[lo:hi]}

    def load_member(self, m: _Member, st: dict):
        """Load a one-run state (:meth:`state_of`) into member ``m``."""
        self._write_back()
        lo, hi = m.lo, m.hi
        with self.torch.no_grad():
            for k, v in st["store"].items():
                self.store[k][lo:hi] = v.to(self.device, self.store[k].dtype)
        self.active = sorted([j for j in self.active if not lo <= j < hi] + [lo + a for a in st["active"]])
        self._segs = None
        self.t_icl[lo:hi], self.status[lo:hi] = list(st["t_icl"]), list(st["status"])
        self.reasons[lo:hi], self.its[lo:hi] = list(st["reasons"]), list(st["its"])
        for g, s in zip(self.gens[lo:hi], st["gens"]):
            g.set_state(s)
        self.loss_sum[lo:hi] = st["loss_sum"].to(self.device)
        m.loss_n, m.last_eval, m.rows = st["loss_n"], st["last_eval"], list(st["rows"])
        self.p = self._select() if self.active else {}

    def state(self) -> dict:
        return self.state_of(self._member(None))

    def load(self, st: dict):
        self.load_member(self._member(None), st)

    @property
    def last_eval(self):
        return self._member(None).last_eval

    @last_eval.setter
    def last_eval(self, v):
        self._member(None).last_eval = v


def _sgd_update(p: dict, grads: dict, segs: list, att_names) -> None:
    """SGD with coupled L2 weight decay, in place: ``v -= lr * (g + wd * v)`` on each slice
    ``a:b`` of seeds of ``segs`` [(a, b, lr, wd_attn, wd_mlp)], wd_attn on ``att_names``, wd_mlp
    on the rest.  torch's ``add``/``sub`` with ``alpha`` (one rounding of ``x + alpha * y``), so
    a slice gets the float32 numbers of its run updated alone (docs/engine.md, "Grid batching")."""
    import torch

    with torch.no_grad():
        for k, g in grads.items():
            att = k in att_names
            v = p[k]
            for a, b, lr, wd_attn, wd_mlp in segs:
                wd = wd_attn if att else wd_mlp
                vs, gs = (v, g) if len(segs) == 1 else (v[a:b], g[a:b])
                if wd:
                    gs = gs.add(vs, alpha=wd)
                vs.sub_(gs, alpha=lr)


def _make_group(cfg: TrainConfig, shared, idx: list[int], device):
    """The seed group of the configuration's backend, for seed positions ``idx`` of one run."""
    if cfg.resolve_backend() == "overlaps":
        from icl_kinetics.simulate.overlaps import OverlapGroup

        return OverlapGroup(cfg, idx, _initial_betas(cfg, idx))
    return _Group([(0, cfg, shared, idx)], device)


def _initial_betas(cfg: TrainConfig, idx: list[int]) -> list:
    """beta0 of seed positions ``idx``; a drawn one (beta0=None) is the autograd backend's
    draw, N(0, 1) from the seed's "init" generator."""
    import torch

    from icl_kinetics.simulate import data as dm

    out = []
    for i in idx:
        b = cfg.beta0_of(i)
        if b is None:
            b = float(torch.randn((), generator=dm.seed_generators(cfg.seed, cfg.seed_offset + i)["init"]))
        out.append(float(b))
    return out
