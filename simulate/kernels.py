"""The compiled CPU kernels of the training engine, and the torch references they are
tested against.  One extension (``gather_attention.cpp``, ``mlp_step.cpp`` and
``bindings.cpp``), compiled once per machine with ``torch.utils.cpp_extension``.

**The attention of the one-layer transformer's last-token path over gathered token
rows.**  Sequence r reads L = N + 1 rows: ``ctx_table[ctx_idx[r, j]]`` (j < N), then
``tgt_table[tgt_idx[r]]`` (the target itself).  With a query-key vector a_r (one per
sequence)::

    s_rj = a_r . x_rj,    p_r = softmax_j(s_r),    m_r = sum_j p_rj x_rj

:func:`gather_attention` returns (p, m) and is differentiable in ``a`` (the tables are
constants: normalized tokens, :func:`icl_kinetics.simulate.models.normalize_tokens`).
Two implementations of the one function:

* :func:`gather_attention_reference` (torch): gathers the (R, N, D) rows into a
  buffer, then two batched products forward and two backward, each a pass over that
  buffer (26 MB per 8 seeds at the paper's shapes): memory-bound on a CPU.
* The fused kernel (``gather_attention.cpp``): reads each sequence's rows straight from
  the token tables (which stay in cache), once per direction, and never writes the
  gathered rows.  ``benchmarks/bench_engine.py`` measures both.

**The readout MLP's elementwise passes** (``mlp_step.cpp``): the bias and ReLU after
each of the MLP's products, the scalar readout, and the backward pass's ReLU masks and
bias and readout gradients, each in one pass over the (S, B, width) activations.
:class:`icl_kinetics.simulate.models._MLPSGD` calls them through :func:`mlp_ops`; its
torch code is their reference.

The compiled functions release the GIL while they run (the engine's worker threads call
them at the same time).

Which one runs: ``ICL_KINETICS_KERNEL=auto`` (the default) uses the compiled kernels for
float32/float64 CPU tensors when they compile, else the torch references with a
one-line warning; ``cpp`` requires them (an error if they cannot be built); ``torch``
always uses the references.  CUDA tensors always use the references.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import torch

from icl_kinetics.errors import ParameterError

#: environment variable choosing the implementation: "auto", "cpp" or "torch"
KERNEL_ENV = "ICL_KINETICS_KERNEL"
_MODES = ("auto", "cpp", "torch")
#: the extension's sources; bindings.cpp holds the module definition
_SOURCES = tuple(Path(__file__).with_name(n) for n in ("gather_attention.cpp", "mlp_step.cpp", "bindings.cpp"))
_CFLAGS = ["-O3", "-march=native", "-fopenmp-simd"]
_LOCK = threading.Lock()
_STATE: dict = {"ext": None, "error": None, "warned": False}


def kernel_mode() -> str:
    """The implementation asked for by ``ICL_KINETICS_KERNEL`` ("auto" when unset)."""
    mode = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ParameterError(KERNEL_ENV, mode, "auto, cpp or torch")
    return mode


def _cpu_signature() -> str:
    """What the compiled code depends on: -march=native builds for this CPU's flags."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        import platform

        return platform.processor()


#: the marker written once a build has loaded: later processes import the cached module
#: directly, without torch's build lock
BUILT_MARKER = "built.ok"


def _import_module(path: Path, name: str):
    """Import a compiled extension module from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build_or_load(build: Path, name: str):
    """The compiled module ``name`` in folder ``build``: imported straight from the cache
    once a build has been completed and loaded (``BUILT_MARKER``), else compiled (or
    loaded) by torch under a lock that the operating system releases when its holder
    dies, so a process killed while compiling never leaves the others waiting.

    torch's own build lock (``build/lock``, a ``FileBaton`` that never times out) is only
    ever taken by a process holding this lock, so a ``lock`` file found while holding it
    was left by a killed process, and is removed (with a note)."""
    import fcntl

    from torch.utils.cpp_extension import load

    so, marker = build / f"{name}.so", build / BUILT_MARKER
    if marker.is_file() and so.is_file():
        return _import_module(so, name)
    with open(build / "icl_kinetics.lock", "a+") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # blocks while another process builds; freed if it dies
        try:
            if marker.is_file() and so.is_file():  # built while we waited
                return _import_module(so, name)
            baton = build / "lock"
            if baton.exists():
                print(f"icl-kinetics: removing a kernel build lock left by an interrupted build: {baton}",
                      file=sys.stderr, flush=True)
                baton.unlink(missing_ok=True)
            if not so.exists():
                print("icl-kinetics: compiling the engine's CPU kernels for this machine (once, about a "
                      f"minute; cached in {build})", file=sys.stderr, flush=True)
            mod = load(name=name, sources=[str(p) for p in _SOURCES], extra_cflags=_CFLAGS, build_directory=str(build),
                       verbose=False)
            tmp = build / f"{BUILT_MARKER}.{os.getpid()}"
            tmp.write_text(name)
            os.replace(tmp, marker)
            return mod
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def extension():
    """The compiled kernels (one module), or None when the references are to be used (mode
    "torch", or mode "auto" and the kernels could not be built).

    The first call on a machine compiles it (about a minute; a note goes to stderr);
    later calls and later processes load the cached build.  Thread-safe.

    Raises:
        ParameterError: a bad ``ICL_KINETICS_KERNEL``.
        RuntimeError: mode "cpp" and the kernel cannot be built.
    """
    mode = kernel_mode()
    if mode == "torch":
        return None
    with _LOCK:
        if _STATE["ext"] is None and _STATE["error"] is None:
            # one build per source text, source file, torch installation, flags and CPU: the
            # ninja file names the sources' and torch's paths, so two checkouts or two
            # environments sharing one build folder would keep recompiling each other's
            srcs = [part for p in _SOURCES for part in (p.read_text(), str(p.resolve()))]
            key = hashlib.sha256("\0".join([*srcs, torch.__version__,
                                            str(Path(torch.__file__).resolve().parent), " ".join(_CFLAGS),
                                            _cpu_signature()]).encode()).hexdigest()[:12]
            try:
                from torch.utils.cpp_extension import get_default_build_root

                name = f"icl_kinetics_kernels_{key}"
                build = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name
                build.mkdir(parents=True, exist_ok=True)
                _STATE["ext"] = _build_or_load(build, name)
            except Exception as exc:  # no compiler, no ninja, ...: the reference still works
                _STATE["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if _STATE["ext"] is None:
            if mode == "cpp":
                raise RuntimeError(f"{KERNEL_ENV}=cpp but the engine's CPU kernels cannot be built: "
                                   f"{_STATE['error']}")
            if not _STATE["warned"]:
                _STATE["warned"] = True
                print(f"icl-kinetics: the engine's CPU kernels are not available ({_STATE['error']}); using the "
                      f"torch references (slower, same numbers to rounding)", file=sys.stderr, flush=True)
        return _STATE["ext"]


def gather_attention_reference(a, ctx_table, tgt_table, ctx_idx, tgt_idx, buffer=None):
    """The torch implementation of :func:`gather_attention` (any device; autograd).

    ``buffer``: optional scratch tensor (>= R * N * D elements, the tables' dtype) reused
    for the gathered rows; it must not be overwritten before the backward pass.
    """
    R, N = ctx_idx.shape
    D = ctx_table.shape[-1]
    flat = ctx_idx.reshape(-1)
    if buffer is not None and buffer.numel() >= flat.numel() * D and buffer.dtype == ctx_table.dtype:
        G = buffer.view(-1)[: flat.numel() * D].view(flat.numel(), D)
        torch.index_select(ctx_table, 0, flat, out=G)  # a reused buffer: fresh pages cost ~3x
    else:
        G = ctx_table.index_select(0, flat)
    G = G.view(R, N, D)
    xt = tgt_table.index_select(0, tgt_idx)  # (R, D)
    # (1, D) x (D, N) products on a transposed view of G: much faster on CPU than the
    # equivalent (N, D) x (D, 1) matrix-vector bmm
    s_ctx = torch.bmm(a.unsqueeze(1), G.transpose(1, 2)).squeeze(1)
    s_tgt = (xt * a).sum(-1, keepdim=True)
    p = torch.cat([s_ctx, s_tgt], dim=-1).softmax(-1)
    m = torch.bmm(p[:, None, :N], G).squeeze(1) + p[:, N:] * xt
    return p, m


class _Fused(torch.autograd.Function):
    """Autograd wrapper of the compiled kernel (gradient in ``a`` only)."""

    @staticmethod
    def forward(ctx, a, ctx_table, tgt_table, ctx_idx, tgt_idx):
        ext = _STATE["ext"]
        p, m = ext.forward(a.contiguous(), ctx_table, tgt_table, ctx_idx, tgt_idx)
        ctx.save_for_backward(p, ctx_table, tgt_table, ctx_idx, tgt_idx)
        return p, m

    @staticmethod
    def backward(ctx, gp, gm):
        p, ctx_table, tgt_table, ctx_idx, tgt_idx = ctx.saved_tensors
        if gm is None:
            gm = torch.zeros(p.shape[0], ctx_table.shape[1], dtype=p.dtype, device=p.device)
        ga = _STATE["ext"].backward(None if gp is None else gp.contiguous(), gm.contiguous(), p, ctx_table,
                                    tgt_table, ctx_idx, tgt_idx)
        return ga, None, None, None, None


def gather_attention(a, ctx_table, tgt_table, ctx_idx, tgt_idx, buffer=None):
    """Attention of each sequence's query-key vector over its gathered token rows.

    Args:
        a: (R, D) query-key vectors, one per sequence (differentiable).
        ctx_table: (Mc, D) context token rows; tgt_table: (Mt, D) target token rows
            (constants: no gradient flows into them).
        ctx_idx: (R, N) int64 rows of ``ctx_table``; tgt_idx: (R,) int64 rows of
            ``tgt_table``.
        buffer: scratch for the reference implementation's gathered rows (ignored by
            the fused kernel).

    Returns:
        (p, m): p (R, N + 1) the attention weights over the N context rows and then the
        target row (each row sums to 1); m (R, D) = sum_j p_j x_j.

    Raises:
        RuntimeError: an index out of range (fused kernel), or ``ICL_KINETICS_KERNEL=cpp``
            without a buildable kernel.
    """
    fused = (a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64)
             and ctx_table.dtype == a.dtype and tgt_table.dtype == a.dtype and extension() is not None)
    if not fused:
        return gather_attention_reference(a, ctx_table, tgt_table, ctx_idx, tgt_idx, buffer)
    return _Fused.apply(a, ctx_table.contiguous(), tgt_table.contiguous(), ctx_idx.contiguous(),
                        tgt_idx.contiguous())


def mlp_ops(x: torch.Tensor):
    """The compiled module whose ``mlp_*`` functions do the readout MLP's elementwise passes
    for activations like ``x`` (``mlp_step.cpp``), or None where the torch reference is to
    be used: a non-CPU or non-float32/64 tensor, mode "torch", or no buildable kernel.

    Raises:
        ParameterError: a bad ``ICL_KINETICS_KERNEL``.
        RuntimeError: ``ICL_KINETICS_KERNEL=cpp`` without a buildable kernel.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    return extension()
