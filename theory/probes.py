"""What the theory measures in a trained network: the correct-label margin phi_plus and
the effective induction head (w, beta).

Both are plain array functions, the one definition shared by the engine's logged
metrics (``c1``, ``c2``, ``c3``, ``w``, ``beta``) and by anyone's model
(:mod:`icl_kinetics.validate.probes` wraps them with input checks for user arrays).
They accept numpy arrays or torch tensors and return the same kind; the theory layer
never imports torch (a tensor is recognized by its methods, as in
:func:`~icl_kinetics.theory.mlp_coefficients`).

* :func:`correct_margin`: ``phi_plus`` per sequence, from logits and labels; binary
  (one logit, labels +-1) or multi-class (L logits, class indices: the one-vs-rest
  margin ``z_y - logsumexp_{j != y} z_j``, for which ``sigma(-phi_plus) = 1 - p_y``
  exactly, so that ``c1 = <1 - p_y>`` is the residual error and L = 2 is the binary
  case).
* :func:`effective_head`: (w_eff, beta_eff) from the target's attention weights over
  the context (docs/engine.md, "Effective (w, beta) of a transformer seed").
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from icl_kinetics.errors import ParameterError, first_bad, finite_array

#: the floor under attention weights and under the readout's variance before a log or a
#: division (the engine's clamp; a weight of exactly 0 gives a log of about -690.8)
_TINY = 1e-300

__all__ = ["correct_margin", "effective_head"]


def _is_tensor(x) -> bool:
    """A torch tensor, recognized without importing torch."""
    return not isinstance(x, np.ndarray) and all(hasattr(x, m) for m in ("detach", "dim", "new_tensor", "sum"))


def _shape(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _host(name: str, x) -> np.ndarray:
    """A small index/label array as numpy (a tensor is copied to the host)."""
    if _is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _pm1(name: str, value, shape: tuple | None, what: str) -> np.ndarray:
    """``value`` checked to be -1 / +1 of ``shape`` (numpy float64)."""
    raw = _host(name, value)
    if shape is not None and raw.shape != shape:
        raise ParameterError(name, value, f"{what} of shape {shape} (got shape {raw.shape})")
    if raw.dtype.kind == "b":
        raise ParameterError(name, value, f"{what}: -1 or +1, not booleans")
    a = finite_array(name, raw, allowed=f"{what}: -1 or +1")
    bad = (a != 1) & (a != -1)
    if bad.any():
        hint = " (for 0/1 labels pass 2 * labels - 1)" if np.all((a == 0) | (a == 1)) else ""
        raise ParameterError(name, value, f"{what}: -1 or +1{hint}" + first_bad(name, a, bad, " ({})"))
    return a


def _class_indices(name: str, value, shape: tuple, L: int) -> np.ndarray:
    """``value`` checked to be integers in [0, L) of ``shape`` (numpy int64)."""
    raw = _host(name, value)
    what = f"class indices 0..{L - 1} (integers)"
    if raw.shape != shape:
        raise ParameterError(name, value, f"{what} of shape {shape} (got shape {raw.shape})")
    if raw.dtype.kind == "b":
        raise ParameterError(name, value, f"{what}, not booleans")
    a = finite_array(name, raw, allowed=what)
    bad = (a != np.floor(a)) | (a < 0) | (a >= L)
    if bad.any():
        raise ParameterError(name, value, what + first_bad(name, a, bad, " ({})"))
    return a.astype(np.int64)


def _is_multiclass(logits, labels, multiclass) -> bool:
    """Binary ``(..., n)`` or multi-class ``(..., n, L)`` logits, for labels of shape (n,)."""
    if multiclass is not None:
        if not isinstance(multiclass, (bool, np.bool_)):
            raise ParameterError("multiclass", multiclass, "None (inferred from the shapes), True or False")
        return bool(multiclass)
    shape, n = _shape(logits), _shape(labels)
    if len(n) != 1:
        raise ParameterError("labels", labels, f"a 1-D array, one label per sequence (got shape {n})")
    n = n[0]
    binary = len(shape) >= 1 and shape[-1] == n
    multi = len(shape) >= 2 and shape[-2] == n
    if binary and multi:  # (n, n): tell by the values
        v = _host("labels", labels)
        if np.any(v == -1):
            return False
        if np.any(v == 0):
            return True
        raise ParameterError("multiclass", None, f"True or False: logits of shape {shape} with {n} labels "
                             "could be binary (one logit per sequence) or multi-class (one per class)")
    if not (binary or multi):
        raise ParameterError("logits", logits, f"an array of shape (..., n) (binary) or (..., n, L) (multi-class) "
                             f"with n = {n} sequences, as many as the labels (got shape {shape})")
    return multi


def correct_margin(logits, labels, *, multiclass: bool | None = None):
    """The correct-label margin ``phi_plus`` of each sequence (nats, dimensionless).

    Binary: one logit per sequence, positive for label +1: ``phi_plus = y * logit``.
    Multi-class with L >= 2 outputs: the one-vs-rest margin
    ``phi_plus = z_y - logsumexp_{j != y} z_j``, so that ``sigma(-phi_plus) = 1 - p_y``
    exactly (p = softmax(z)): c1 = <sigma(-phi_plus)> is the mean probability of error,
    as in the binary case, and L = 2 with ``z_1 - z_0`` as the binary logit gives the
    binary margin.  This is the stated generalization of the theory's binary readout
    (the theory itself is derived for L = 2).

    Args:
        logits: binary ``(..., n)``, or multi-class ``(..., n, L)``; numpy (any
            array-like) or a floating-point torch tensor.  Leading axes (seeds, heads,
            checkpoints) share the labels.
        labels: ``(n,)``: binary -1 / +1; multi-class class indices 0..L-1.  A tensor
            is read on the host (it is small).
        multiclass: None: inferred from the shapes (``logits.shape[-1] == n``: binary;
            ``logits.shape[-2] == n``: multi-class; both, an (n, n) array: from the
            labels' values, -1 binary and 0 multi-class); or True / False.

    Returns:
        ``phi_plus`` of shape ``logits.shape[:-1]`` (binary: ``logits.shape``), of the
        logits' kind (a tensor stays a tensor, on its device and in its dtype).

    Raises:
        ParameterError: shapes that do not match as above; labels not -1 / +1 (binary)
            or not class indices 0..L-1 (multi-class); L < 2; numpy logits that are not
            finite numbers (a tensor's values are not checked: that would synchronize
            its device).
    """
    multi = _is_multiclass(logits, labels, multiclass)
    shape = _shape(logits)
    n = _shape(labels)
    if len(n) != 1:
        raise ParameterError("labels", labels, f"a 1-D array, one label per sequence (got shape {n})")
    n = n[0]
    need = 2 if multi else 1
    if len(shape) < need or shape[-need] != n:
        form = "(..., n, L)" if multi else "(..., n)"
        raise ParameterError("logits", logits, f"an array of shape {form} with n = {n} (the labels' length; got "
                             f"shape {shape})")
    tensor = _is_tensor(logits)
    if tensor and not logits.is_floating_point():
        raise ParameterError("logits", logits, f"a floating-point tensor (got dtype {logits.dtype})")
    if not multi:
        if tensor:
            y = labels.to(device=logits.device, dtype=logits.dtype) if _is_tensor(labels) else None
            if y is None:
                y = logits.new_tensor(_pm1("labels", labels, (n,), "binary labels"))
            else:
                _pm1("labels", labels, (n,), "binary labels")
            return y * logits
        z = finite_array("logits", logits, allowed="finite numbers")
        return _pm1("labels", labels, (n,), "binary labels") * z
    L = shape[-1]
    if L < 2:
        raise ParameterError("logits", logits, f"multi-class logits with L >= 2 classes on the last axis (got L = {L})")
    y = _class_indices("labels", labels, (n,), L)
    if tensor:
        idx = logits.new_tensor(y).long()
        own = logits.gather(-1, idx.view(n, 1).expand(*shape[:-1], 1))[..., 0]
        cols = idx.new_tensor(list(range(L)))
        rest = logits.masked_fill(idx.view(n, 1) == cols, float("-inf")).logsumexp(-1)
        return own - rest
    z = finite_array("logits", logits, allowed="finite numbers")
    onehot = y[:, None] == np.arange(L)
    own = np.take_along_axis(z, np.broadcast_to(y[:, None], shape[:-1] + (1,)), -1)[..., 0]
    rest = logsumexp(np.where(onehot, -np.inf, z), axis=-1)
    return own - rest


class _NumpyOps:
    @staticmethod
    def log(x):
        return np.log(x)

    @staticmethod
    def clamp_min(x, v):
        return np.maximum(x, v)

    @staticmethod
    def to_float(x):
        return np.asarray(x, dtype=np.float64)


class _TensorOps:
    @staticmethod
    def log(x):
        return x.log()

    @staticmethod
    def clamp_min(x, v):
        return x.clamp_min(v)

    @staticmethod
    def to_float(x):
        return x.double()


def effective_head(attention, match, context_labels, labels, margin, attention_target=None) -> dict:
    """The effective induction head (w_eff, beta_eff) of a model on sequences whose
    target's item may appear in the context (the ICL test set).

    Let p_j be the weight that the target position puts on context position j (the
    attention of the layer that feeds the readout), p_t the weight it puts on itself,
    l_j = +-1 the label at context position j and y the target's label:

    * **beta_eff** (1/overlap) = mean over sequences of ``log(pbar_match / pbar_other)``:
      ``pbar_match`` is the mean weight on the positions that hold the target's item
      (its copies in the context, and the target itself when ``attention_target`` is
      given), ``pbar_other`` the mean weight on the other context positions.  For
      attention exactly ``softmax(beta * overlap)`` with overlap 1 on the matching
      positions and 0 on the others (the minimal model at large D), this is beta.
    * **w_eff** (dimensionless) = the least-squares slope, over sequences, of the margin
      ``y * logit`` on the readout ``m = y * sum_j p_j l_j`` (the attention-weighted
      context label along the target's label).  For ``margin = w * m + phi`` with phi
      uncorrelated with m (the minimal model), this is w.

    These are the engine's logged ``w`` and ``beta`` of a transformer (the engine calls
    this function), and what :func:`icl_kinetics.validate.probes.head_from_attention`
    computes for anyone's model.  Weights are floored at 1e-300 before the log (a weight
    of 0 counts as log(1e-300)); a sequence without a non-matching context position is
    divided by a count of 1 (its ``pbar_other`` is 0); a readout with no spread gives
    w_eff = 0.

    Multi-class outputs: pass ``context_labels[i, j] = +1`` where context position j of
    sequence i carries the target's class and -1 elsewhere, ``labels = +1``, and the
    one-vs-rest margin (:func:`correct_margin`); m is then the weight on same-class
    positions minus the weight on the others.

    Args:
        attention: ``(..., n, N)`` weights of the target position over the N context
            positions of n sequences (leading axes: seeds, heads, layers...).
        match: ``(n, N)`` booleans: context position j of sequence i holds the target's
            item.
        context_labels: ``(n, N)`` -1 / +1 labels at the context positions.
        labels: ``(n,)`` -1 / +1 labels of the targets.
        margin: ``(..., n)`` the correct-label margin ``y * logit`` of the ICL logits
            (:func:`correct_margin`), the shape of ``attention`` without its last axis.
        attention_target: ``(..., n)`` the weight the target puts on itself (counted as
            a matching position), or None when the target does not attend to itself or
            its weight is not recorded.

    Returns:
        ``{"w": ..., "beta": ...}``: Python floats for ``attention`` of shape (n, N);
        otherwise arrays of the leading shape, of the inputs' kind (numpy, or tensors
        on the attention's device).

    Raises:
        ParameterError: shapes that do not match as above; ``match`` not booleans (or
            0 / 1); labels not -1 / +1; with ``attention_target`` None, a sequence whose
            context holds no copy of the target (its beta_eff is undefined).  numpy
            inputs: attention or margin not finite, attention weights outside [0, 1].
            Tensors' values are not checked beyond that (the engine's path; checking
            would synchronize the device).
    """
    shape = _shape(attention)
    if len(shape) < 2:
        raise ParameterError("attention", attention, f"an array of shape (..., n, N) (got shape {shape})")
    n, N = shape[-2:]
    lead = shape[:-2]
    if n < 1 or N < 1:
        raise ParameterError("attention", attention, f"an array of shape (..., n, N) with n >= 1 sequences and "
                             f"N >= 1 context positions (got shape {shape})")
    for name, val, want in (("match", match, (n, N)), ("context_labels", context_labels, (n, N)),
                            ("labels", labels, (n,)), ("margin", margin, lead + (n,))):
        if _shape(val) != want:
            raise ParameterError(name, val, f"an array of shape {want} for attention of shape {shape} (got "
                                 f"shape {_shape(val)})")
    if attention_target is not None and _shape(attention_target) != lead + (n,):
        raise ParameterError("attention_target", attention_target, f"None or an array of shape {lead + (n,)} for "
                             f"attention of shape {shape} (got shape {_shape(attention_target)})")
    tensor = _is_tensor(attention)
    ops = _TensorOps if tensor else _NumpyOps
    mh = _host("match", match)
    if mh.dtype.kind != "b":
        if not (mh.dtype.kind in "iuf" and np.all((mh == 0) | (mh == 1))):
            raise ParameterError("match", match, "booleans (or 0 / 1): whether each context position holds the "
                                 "target's item")
    mh = mh.astype(bool)
    if attention_target is None and not mh.any(-1).all():
        i = int(np.flatnonzero(~mh.any(-1))[0])
        raise ParameterError("match", match, f"at least one True per sequence when attention_target is None "
                             f"(sequence {i} holds no copy of the target, so its beta_eff is undefined)")
    if tensor:
        p_ctx = attention
        lab = context_labels.to(device=p_ctx.device, dtype=p_ctx.dtype) if _is_tensor(context_labels) \
            else p_ctx.new_tensor(_pm1("context_labels", context_labels, (n, N), "context labels"))
        y = labels.to(device=p_ctx.device, dtype=p_ctx.dtype) if _is_tensor(labels) \
            else p_ctx.new_tensor(_pm1("labels", labels, (n,), "target labels"))
        mt = match.to(p_ctx.device).bool() if _is_tensor(match) else p_ctx.new_tensor(mh).bool()
        yl, p_tgt = margin, attention_target
    else:
        p_ctx = finite_array("attention", attention, minimum=0.0, maximum=1.0,
                             allowed="attention weights: finite numbers in [0, 1]")
        lab = _pm1("context_labels", context_labels, (n, N), "context labels")
        y = _pm1("labels", labels, (n,), "target labels")
        mt = mh
        yl = finite_array("margin", margin, allowed="finite numbers")
        p_tgt = None if attention_target is None else finite_array(
            "attention_target", attention_target, minimum=0.0, maximum=1.0,
            allowed="attention weights: finite numbers in [0, 1]")
    # the engine's expressions, in its order (bit-identical for float64 tensors)
    m = (p_ctx * lab).sum(-1) * y  # attention-weighted label sum along y
    if p_tgt is None:
        nm = ops.to_float(mt.sum(-1))
        pm = (p_ctx * mt).sum(-1) / nm
    else:
        nm = ops.to_float(mt.sum(-1)) + 1.0
        pm = ((p_ctx * mt).sum(-1) + p_tgt) / nm
    no = ops.clamp_min(ops.to_float((~mt).sum(-1)), 1.0)
    po = (p_ctx * (~mt)).sum(-1) / no
    beta = (ops.log(ops.clamp_min(pm, _TINY)) - ops.log(ops.clamp_min(po, _TINY))).mean(-1)
    mc = m - m.mean(-1)[..., None]
    w = (mc * (yl - yl.mean(-1)[..., None])).sum(-1) / ops.clamp_min((mc * mc).sum(-1), _TINY)
    if not lead:
        return {"w": float(w), "beta": float(beta)}
    return {"w": w, "beta": beta}
