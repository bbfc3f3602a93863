"""The theory layer: the reduced model of two independent sub-circuits, solved
analytically and numerically.  numpy / scipy / sympy only, never torch.

Public surface (each quantity has one name, listed with its unit in the glossary of
``docs/theory.md``):

* the acquisition event: :data:`T_ICL_THRESHOLD` (0.95), :func:`icl_accuracy`,
  :func:`icl_threshold_beta` (``beta_c``), :func:`head_escaped`;
* the loss: :func:`averaged_loss`;
* flows: :func:`solve_flow` (full / linear / reduced) returning :class:`FlowSolution`;
  :func:`reduced_odes_in_range` (the reduced ODEs' range, :func:`reduced_odes_expansion`
  ``= e^beta0 / sqrt(N) <=`` :data:`REDUCED_ODES_RANGE`);
* closed forms: :func:`escape_time`, :func:`escape_condition`, :func:`t_icl`,
  :func:`k_star`, :func:`critical_beta0`, :func:`p_icl`;
* memorization: :func:`mlp_coefficients` (numpy arrays or torch tensors), :func:`i_k`,
  curve models :class:`Constant`, :class:`PowerLaw`, :class:`Tabulated`;
* onset distribution: :class:`OnsetDistribution` (K = infinity), :class:`FiniteKOnset` (a
  measured c1 curve: :func:`inverse_i_k`), :func:`onset_quantile_ci` (its quantiles with a
  bootstrap interval over the seeds of a c1 table, averaged by :func:`mean_c1_curve`);
* measured inputs: :func:`memorization_law_fit` (A, nu with t intervals),
  :func:`k_star_interval` (their CIs propagated into K*), :func:`calibrate_beta0` and
  :func:`onset_slope` (a transformer's effective beta0 onto the theory's scale, fitted);
  :data:`C2_DEFAULT` = 1/2, the one default of c2;
* what a trained network is measured by (numpy arrays or torch tensors):
  :func:`correct_margin` (phi_plus from binary or multi-class logits),
  :func:`effective_head` (the effective (w, beta) from attention weights);
* transience: :func:`w_tr`, :func:`icl_loss_from_iwl_loss`, :func:`transience_flow`,
  :func:`t_icl_loss`.

Internals stay in their submodules: the right-hand sides ``flow.rhs_linear`` and
``flow.rhs_reduced``, ``loss.averaged_gradient``, ``closed_form.escape_time_reference``,
``closed_form.scaled_escape_time``, ``closed_form.trajectory_invariant``,
``minimal.readout``, ``minimal.n_plus_distribution`` and
``transience.quasi_static_state`` (e.g. ``from icl_kinetics.theory.flow import
rhs_reduced``).

Errors: every public function and class refuses a bad argument with
:class:`icl_kinetics.errors.ParameterError` (a ValueError) whose one-line message names
the parameter, the value and what is allowed; NaN is never turned into a number, and
degenerate results (an escape time, t_ICL or K* that overflows or underflows, a median
onset below one iteration) are refused naming the parameter responsible.  Each
docstring's "Raises:" section lists the rules.

The sympy derivation lives in :mod:`icl_kinetics.theory.symbolic` (imported on demand:
it takes a few seconds).
"""

from icl_kinetics.theory.closed_form import critical_beta0, escape_condition, escape_time, k_star, p_icl, t_icl
from icl_kinetics.theory.closed_form import C2_DEFAULT, calibrate_beta0, k_star_interval, onset_slope
from icl_kinetics.theory.flow import REDUCED_ODES_RANGE, FlowSolution, reduced_odes_expansion, reduced_odes_in_range
from icl_kinetics.theory.flow import solve_flow
from icl_kinetics.theory.loss import averaged_loss
from icl_kinetics.theory.memorization import Constant, PowerLaw, Tabulated, i_k, mlp_coefficients
from icl_kinetics.theory.memorization import inverse_i_k, memorization_law_fit
from icl_kinetics.theory.minimal import T_ICL_THRESHOLD, head_escaped, icl_accuracy, icl_threshold_beta
from icl_kinetics.theory.onset import FiniteKOnset, OnsetDistribution, mean_c1_curve, onset_quantile_ci
from icl_kinetics.theory.probes import correct_margin, effective_head
from icl_kinetics.theory.transience import icl_loss_from_iwl_loss, t_icl_loss, transience_flow, w_tr

__all__ = [
    "T_ICL_THRESHOLD", "head_escaped", "icl_accuracy", "icl_threshold_beta",
    "averaged_loss",
    "FlowSolution", "solve_flow",
    "critical_beta0", "escape_condition", "escape_time", "k_star", "p_icl", "t_icl",
    "Constant", "PowerLaw", "Tabulated", "i_k", "mlp_coefficients",
    "OnsetDistribution",
    "correct_margin", "effective_head",
    "C2_DEFAULT", "FiniteKOnset", "calibrate_beta0", "inverse_i_k", "k_star_interval", "memorization_law_fit",
    "onset_slope", "mean_c1_curve", "onset_quantile_ci", "REDUCED_ODES_RANGE", "reduced_odes_expansion",
    "reduced_odes_in_range",
    "icl_loss_from_iwl_loss", "t_icl_loss", "transience_flow", "w_tr",
]
