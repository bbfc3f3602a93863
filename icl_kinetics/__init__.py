"""icl-kinetics: the learning kinetics of in-context learning.

Three layers, with dependencies pointing one way::

    icl_kinetics.theory    numpy / scipy / sympy only (never torch)
    icl_kinetics.simulate  torch, plus a numpy/torch minimal-model simulator
    icl_kinetics.validate  fits, comparisons, figures and reports

Importing ``icl_kinetics`` imports nothing heavy; import the layer you need.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
