"""Probes for anyone's model: c1, c2, c3 and the effective induction head (w, beta) from
arrays any training code can produce, with the theory's one definition.

Framework-agnostic: the inputs are numpy arrays (any array-likes) or torch tensors
(detached, on any device), converted to float64 numpy here; torch is imported only if a
tensor is given.  Every input is checked, and a bad one raises
:class:`~icl_kinetics.errors.ParameterError` naming it.

* :func:`coefficients_from_logits`: c1, c2, c3 from the logits and labels of in-weights
  test sequences (training items, target absent from the context), through
  :func:`icl_kinetics.theory.correct_margin` and
  :func:`icl_kinetics.theory.mlp_coefficients`.
* :func:`head_from_attention`: (w_eff, beta_eff) from the target's attention over the
  context on ICL test sequences (novel items, target in the context), through
  :func:`icl_kinetics.theory.effective_head` (the engine's logged ``w``, ``beta``).
* :class:`AttentionRecorder`: forward hooks that record attention weights from torch
  modules (``nn.MultiheadAttention``, or any module with an ``extract`` function, such
  as an interpretability library's attention-pattern hook point).

Recipe (docs/validation.md, "Measuring your own model: probes, hooks and the logger")::

    mha = model.attn                                  # an nn.MultiheadAttention
    with AttentionRecorder(mha) as rec, torch.no_grad():
        logits = model(icl_tokens)                    # (n,) one logit per sequence
    att = rec.last                                    # (n, L_query, L_key), heads averaged
    head = head_from_attention(att[:, -1, ctx_pos], match, context_labels, labels, logits,
                               attention_target=att[:, -1, -1])
"""

from __future__ import annotations

import numpy as np

from icl_kinetics.errors import ParameterError
from icl_kinetics.theory.memorization import mlp_coefficients
from icl_kinetics.theory.probes import correct_margin, effective_head

__all__ = ["coefficients_from_logits", "head_from_attention", "AttentionRecorder"]

#: how far above 1 the attention weights of a sequence (context + target) may sum
#: (float32 softmax rounding)
SUM_TOLERANCE = 1e-6


def _numpy(name: str, x, *, numeric: bool = True) -> np.ndarray:
    """``x`` as a numpy array (float64 when ``numeric``); a torch tensor is detached and
    copied to the host (torch is not imported: the tensor's own methods are used)."""
    if x is None:
        raise ParameterError(name, x, "an array (numpy, or a torch tensor)")
    if not isinstance(x, np.ndarray) and all(hasattr(x, m) for m in ("detach", "cpu", "numpy")):
        t = x.detach().cpu()
        if numeric and t.is_floating_point() and str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()  # numpy has no bfloat16
        x = t.numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):
        raise ParameterError(name, x, "a rectangular array of numbers") from None
    if numeric and a.dtype.kind in "iuf":
        a = a.astype(np.float64)
    return a


def _finite(name: str, a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
        raise ParameterError(name, a, f"{what} (got dtype {a.dtype})")
    bad = ~np.isfinite(a)
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape)
        raise ParameterError(name, a, f"{what}, all finite ({name}[{', '.join(map(str, i))}] = {a[i]})")
    return a


def _classes(name: str, a: np.ndarray, shape: tuple, L: int) -> np.ndarray:
    """Multi-class labels: integers 0..L-1 of ``shape`` (int64)."""
    what = f"class indices 0..{L - 1} (integers) for multi-class logits"
    if a.shape != shape:
        raise ParameterError(name, a, f"{what}, of shape {shape} (got shape {a.shape})")
    if a.dtype.kind not in "iuf":
        raise ParameterError(name, a, f"{what} (got dtype {a.dtype})")
    bad = ~np.isfinite(a) | (a != np.floor(a)) | (a < 0) | (a >= L)
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape)
        raise ParameterError(name, a, f"{what} ({name}[{', '.join(map(str, i))}] = {a[i]})")
    return a.astype(np.int64)


def coefficients_from_logits(logits, labels, *, multiclass: bool | None = None) -> dict:
    """c1, c2, c3 of a model on in-weights test sequences (dimensionless).

    ``phi_plus = correct_margin(logits, labels)`` (binary ``y * logit``; multi-class
    the one-vs-rest margin ``z_y - logsumexp_{j != y} z_j``, so ``c1 = <1 - p_y>``),
    then the theory's ``c1 = <sigma(-phi_plus)>``, ``c2 = 1 - <sigma(-phi_plus)^2> / c1``,
    ``c3 = <exp(-phi_plus)>`` (:func:`icl_kinetics.theory.mlp_coefficients`).  Measure
    them on sequences over the training items whose target is absent from the context,
    so that only the in-weights pathway can answer (the engine's IWL test set).

    Args:
        logits: binary ``(..., n)`` (one logit, positive for label +1) or multi-class
            ``(..., n, L)``; numpy or a torch tensor.  Leading axes (seeds,
            checkpoints) are kept: each gets its own coefficients.
        labels: ``(n,)``: -1 / +1 (binary) or class indices 0..L-1 (multi-class).
        multiclass: None (inferred from the shapes; see
            :func:`icl_kinetics.theory.correct_margin`), True or False.

    Returns:
        ``{"c1", "c2", "c3"}``: floats for logits without leading axes, else float64
        arrays of the leading shape.

    Raises:
        ParameterError: logits not finite numbers, shapes that do not match, labels not
            -1 / +1 or not class indices, fewer than one sequence; a margin so large
            that a coefficient is not a finite number.
    """
    z = _finite("logits", _numpy("logits", logits), "logits: finite numbers")
    y = _numpy("labels", labels)
    phi = correct_margin(z, y, multiclass=multiclass)
    if phi.shape[-1] < 1:
        raise ParameterError("labels", labels, "at least one sequence")
    c = mlp_coefficients(phi, axis=None if phi.ndim == 1 else -1)
    return c if phi.ndim == 1 else {k: np.asarray(v, np.float64) for k, v in c.items()}


def head_from_attention(attention, match, context_labels, labels, logits, attention_target=None) -> dict:
    """The effective induction head (w_eff, beta_eff) of a model on ICL test sequences.

    The engine's definition (:func:`icl_kinetics.theory.effective_head`): beta_eff
    (1/overlap) = mean over sequences of log(mean weight on the positions holding the
    target's item / mean weight on the other context positions); w_eff = the
    least-squares slope of the margin ``y * logit`` on the readout
    ``y * sum_j p_j l_j``.  Use the attention of the layer and head whose output the
    readout reads, at the target position (the query), over the context item positions
    (the keys).

    Args:
        attention: ``(..., n, N)`` weights of the target position over the N context
            positions of n sequences; leading axes (heads, layers, seeds) are kept.
            Each is a probability: >= 0, and a sequence's weights (with
            ``attention_target``) sum to at most 1 (+1e-6): weight on other positions
            (label tokens, a BOS token) is allowed.
        match: ``(n, N)`` booleans (or 0 / 1): context position j of sequence i holds
            the target's item.
        context_labels: ``(n, N)`` labels at the context positions: -1 / +1 (binary) or
            class indices (multi-class).
        labels: ``(n,)`` the targets' labels, in the same form.
        logits: the model's output on these sequences: binary ``(..., n)`` (the shape
            of ``attention`` without its last axis) or multi-class ``(..., n, L)``.
            Multi-class: the margin is the one-vs-rest margin and a context label counts
            +1 where it is the target's class, -1 elsewhere.
        attention_target: ``(..., n)``: the weight the target puts on itself (counted
            as a position holding its item), or None (not recorded / not attended).

    Returns:
        ``{"w": ..., "beta": ...}``: floats for attention of shape (n, N), else float64
        arrays of the leading shape.

    Raises:
        ParameterError: shapes that do not match; NaN or infinite values; attention
            weights below 0, or a sequence's weights summing above 1 + 1e-6; ``match``
            not booleans; labels not -1 / +1 (binary) or not class indices
            (multi-class); with ``attention_target`` None, a sequence without a copy of
            the target; a sequence whose every context position holds the target (no
            contrast: beta_eff undefined).
    """
    att = _finite("attention", _numpy("attention", attention), "attention weights: finite numbers")
    if att.ndim < 2:
        raise ParameterError("attention", attention, f"an array of shape (..., n, N) (got shape {att.shape})")
    n, N = att.shape[-2:]
    lead = att.shape[:-2]
    z = _finite("logits", _numpy("logits", logits), "logits: finite numbers")
    if z.shape == lead + (n,):
        multi = False
    elif z.ndim == att.ndim and z.shape[:-1] == lead + (n,):
        multi = True
    else:
        raise ParameterError("logits", logits, f"an array of shape {lead + (n,)} (binary) or {lead + (n,)} + (L,) "
                             f"(multi-class) for attention of shape {att.shape} (got shape {z.shape})")
    tgt = None
    if attention_target is not None:
        tgt = _finite("attention_target", _numpy("attention_target", attention_target),
                      "attention weights: finite numbers")
        if tgt.shape != lead + (n,):
            raise ParameterError("attention_target", attention_target, f"None or an array of shape {lead + (n,)} "
                                 f"for attention of shape {att.shape} (got shape {tgt.shape})")
    for name, a in (("attention", att), ("attention_target", tgt)):
        if a is not None and (a < 0).any():
            i = np.unravel_index(int(np.flatnonzero(a < 0)[0]), a.shape)
            raise ParameterError(name, a, f"attention weights >= 0 ({name}[{', '.join(map(str, i))}] = {a[i]})")
    total = att.sum(-1) + (0.0 if tgt is None else tgt)
    if (total > 1.0 + SUM_TOLERANCE).any():
        i = np.unravel_index(int(np.argmax(total)), total.shape)
        raise ParameterError("attention", attention, "probabilities: each sequence's weights over the context "
                             f"(and the target) sum to at most 1 + {SUM_TOLERANCE:g} (sequence "
                             f"{', '.join(map(str, i))} sums to {total[i]!r}; pass softmax weights, not scores)")
    m = _numpy("match", match, numeric=False)
    if m.shape != (n, N):
        raise ParameterError("match", match, f"an array of shape {(n, N)} (got shape {m.shape})")
    if m.dtype.kind != "b" and not (m.dtype.kind in "iuf" and np.all((m == 0) | (m == 1))):
        raise ParameterError("match", match, "booleans (or 0 / 1): whether each context position holds the "
                             "target's item")
    m = m.astype(bool)
    if m.all(-1).any():
        i = int(np.flatnonzero(m.all(-1))[0])
        raise ParameterError("match", match, f"at least one False per sequence (every context position of "
                             f"sequence {i} holds the target's item: no other keys to compare with, beta_eff "
                             f"is undefined)")
    cl, y = _numpy("context_labels", context_labels), _numpy("labels", labels)
    if multi:
        L = z.shape[-1]
        y = _classes("labels", y, (n,), L)
        cl = _classes("context_labels", cl, (n, N), L)
        phi = correct_margin(z, y, multiclass=True)
        cl, y = np.where(cl == y[:, None], 1.0, -1.0), np.ones(n)
    else:
        phi = correct_margin(z, y, multiclass=False)
    head = effective_head(att, m, cl, y, phi, attention_target=tgt)
    return head if not lead else {k: np.asarray(v, np.float64) for k, v in head.items()}


def _default_extract(module, inputs, output):
    """The attention weights in a module's output: element 1 of a tuple (what
    ``nn.MultiheadAttention`` returns with ``need_weights=True``), or the output itself
    (a hook point or a module that returns the pattern)."""
    if isinstance(output, (tuple, list)):
        if len(output) < 2 or output[1] is None:
            raise ParameterError("need_weights", False, "True: the module returned no attention weights (call "
                                 "nn.MultiheadAttention with need_weights=True, or give AttentionRecorder an "
                                 "extract function)")
        return output[1]
    return output


class AttentionRecorder:
    """Record attention weights from torch modules during forward passes (forward hooks).

    A context manager: the hooks are registered on entry and removed on exit (also when
    the block raises).  Each forward call of a watched module appends what ``extract``
    returns, detached, to :attr:`weights` (in call order); the tensors stay on their
    device and are not copied, so record under ``torch.no_grad()`` on the evaluation set
    only.

    Args:
        modules: one ``torch.nn.Module`` or a list of them (e.g. the attention of every
            layer).
        extract: ``extract(module, inputs, output) -> weights`` (None: element 1 of a
            tuple output, as ``nn.MultiheadAttention(..., need_weights=True)`` returns
            its weights of shape (batch, L_query, L_key) with
            ``average_attn_weights=True`` or (batch, heads, L_query, L_key) with False;
            any other output is taken as the weights, as from a TransformerLens
            ``hook_pattern`` hook point, (batch, heads, L_query, L_key)).

    Attributes:
        weights: the recorded weights, one per forward call of a watched module.
        modules: the module of each entry of :attr:`weights` (same length).
        last: the last entry of :attr:`weights` (None before the first call).

    Raises:
        ParameterError: ``modules`` not torch modules (anything without
            ``register_forward_hook``), or empty; ``extract`` not callable; during a
            forward pass, a module that returns no weights (``need_weights=False``).
    """

    def __init__(self, modules, extract=None):
        mods = list(modules) if isinstance(modules, (list, tuple)) else [modules]
        if not mods:
            raise ParameterError("modules", modules, "a torch module or a non-empty list of them")
        for i, mo in enumerate(mods):
            if not callable(getattr(mo, "register_forward_hook", None)):
                raise ParameterError("modules", mo, f"torch modules (entry {i} has no register_forward_hook)")
        if extract is not None and not callable(extract):
            raise ParameterError("extract", extract, "None or a function extract(module, inputs, output)")
        self._watched = mods
        self._extract = extract or _default_extract
        self._handles = []
        self.weights, self.modules = [], []

    def _hook(self, module, inputs, output):
        w = self._extract(module, inputs, output)
        self.weights.append(w.detach() if hasattr(w, "detach") else w)
        self.modules.append(module)

    @property
    def last(self):
        return self.weights[-1] if self.weights else None

    def clear(self) -> None:
        """Forget the recorded weights (the hooks stay)."""
        self.weights.clear()
        self.modules.clear()

    def __enter__(self):
        self._handles = [mo.register_forward_hook(self._hook) for mo in self._watched]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False
