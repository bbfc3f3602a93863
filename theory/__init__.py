"""The theory layer: the reduced model of two independent sub-circuits, solved
analytically and numerically.  numpy / scipy / sympy only, never torch.

Public surface (each quantity has one name; see ``docs/theory.md``):

* definitions: :func:`readout`, :func:`n_plus_distribution`, :func:`icl_accuracy`,
  :func:`icl_threshold_beta`;
* loss: :func:`averaged_loss`, :func:`averaged_gradient`;
* flows: :func:`solve_flow` (full / linear / reduced), :func:`rhs_linear`, :func:`rhs_reduced`;
* closed forms: :func:`trajectory_invariant`, :func:`escape_time`,
  :func:`scaled_escape_time`, :func:`escape_condition`, :func:`t_icl`, :func:`k_star`,
  :func:`critical_beta0`, :func:`p_icl`;
* memorization: :func:`mlp_coefficients`, :func:`i_k`, curve models
  :class:`Constant`, :class:`PowerLaw`, :class:`Tabulated`;
* onset distribution: :class:`OnsetDistribution`;
* transience: :func:`w_tr`, :func:`icl_loss_from_iwl_loss`, :func:`transience_flow`,
  :func:`t_icl_loss`.

Errors: every public function and class refuses a bad argument with
:class:`icl_kinetics.errors.ParameterError` (a ValueError) whose one-line message names
the parameter, the value and what is allowed; NaN is never turned into a number, and
degenerate results (an escape time, t_ICL or K* that overflows or underflows, a median
onset below one iteration) are refused naming the parameter responsible.  Each
docstring's "Raises:" section lists the rules.

The sympy derivation lives in :mod:`icl_kinetics.theory.symbolic` (imported on demand:
it takes a few seconds).
"""

from icl_kinetics.theory.closed_form import (
    critical_beta0,
    escape_condition,
    escape_time,
    escape_time_reference,
    k_star,
    p_icl,
    scaled_escape_time,
    t_icl,
    trajectory_invariant,
)
from icl_kinetics.theory.flow import FlowSolution, rhs_linear, rhs_reduced, solve_flow
from icl_kinetics.theory.loss import averaged_gradient, averaged_loss
from icl_kinetics.theory.memorization import Constant, PowerLaw, Tabulated, i_k, mlp_coefficients
from icl_kinetics.theory.minimal import icl_accuracy, icl_threshold_beta, n_plus_distribution, readout
from icl_kinetics.theory.onset import OnsetDistribution
from icl_kinetics.theory.transience import (
    icl_loss_from_iwl_loss,
    quasi_static_state,
    t_icl_loss,
    transience_flow,
    w_tr,
)

__all__ = [
    "Constant", "FlowSolution", "OnsetDistribution", "PowerLaw", "Tabulated",
    "averaged_gradient", "averaged_loss", "critical_beta0", "escape_condition", "escape_time",
    "escape_time_reference", "i_k", "icl_accuracy", "icl_loss_from_iwl_loss",
    "icl_threshold_beta", "k_star", "mlp_coefficients", "n_plus_distribution", "p_icl",
    "quasi_static_state", "readout", "rhs_linear", "rhs_reduced", "scaled_escape_time",
    "solve_flow", "t_icl", "t_icl_loss", "trajectory_invariant", "transience_flow", "w_tr",
]
