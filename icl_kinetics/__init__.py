"""icl-kinetics: the learning kinetics of in-context learning.

Three layers, with dependencies pointing one way::

    icl_kinetics.theory    numpy / scipy / sympy only (never torch)
    icl_kinetics.simulate  torch, plus a numpy/torch minimal-model simulator
    icl_kinetics.validate  fits, comparisons, figures and reports

Importing ``icl_kinetics`` imports nothing heavy; import the layer you need.  It sets
``OMP_WAIT_POLICY=PASSIVE`` unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is already
set: torch's OpenMP threads then sleep instead of spinning while they wait, which keeps
two-thread runs from collapsing on a shared machine, at some cost on an idle one
(``ICL_KINETICS_OMP=default`` turns it off; see
:func:`icl_kinetics._threads.configure_openmp` and docs/performance.md).
"""

from ._threads import configure_openmp

configure_openmp()  # before any layer imports torch: libgomp reads it once, when it loads

__version__ = "0.1.0"

__all__ = ["__version__"]
