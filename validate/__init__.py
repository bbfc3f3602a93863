"""The validation layer: the theory's predictions checked against trained models.

Scripts import what they need from here::

    from icl_kinetics.validate import read_table, validate_runs

    verdicts, skipped = validate_runs("my_runs.csv")   # every prediction the table allows
    for v in verdicts:
        print(v.prediction, v.rung, v.verdict, v.reason)

Modules, one per prediction family, on a typed core:

* :mod:`~icl_kinetics.validate.core`: :class:`Verdict`, :class:`SeedSummary` (one (run,
  seed) of a tidy table), :func:`seed_summaries`, :func:`i_k` (the integrated residual
  error of a seed's rows, learning-rate time);
* :mod:`~icl_kinetics.validate.fits`: the statistics (sigmoid, power-law and linear fits,
  Kaplan-Meier, KS, bimodality coefficient, Wilson interval);
* predictions: :mod:`.memorization`, :mod:`.k_star`, :mod:`.onset`, :mod:`.p_icl`
  (bimodality and P(ICL)), :mod:`.equalized`, :mod:`.transient_icl` (transience), :mod:`.drive`,
  :mod:`.rung1`, :mod:`.ladder` (the scale ladder: K* at a relative horizon, predicted from
  in-situ c1, local slopes), :mod:`.zipf` (Zipf item frequencies on rung 2: K*(alpha) predicted
  from the MLP's frequency-weighted c1, then measured) (no module is named like a function the package exports, which would hide
  it);
* :mod:`.schema` (the tidy-table schema, :func:`read_table`), :mod:`.report` (the
  report: :func:`validate_runs`, :func:`write_report`, :func:`run_validation`),
  :mod:`.requirements` (each check's minimum data, :data:`REQUIREMENTS`, and
  :func:`plan`: what a table allows, before any fit),
  :mod:`.figures`, :mod:`.compare` (rung 1's SGD runs), :mod:`.demo`.
* anyone's model: :mod:`.probes` (:func:`coefficients_from_logits`,
  :func:`head_from_attention`, :class:`AttentionRecorder`: c1, c2, c3 and the effective
  (w, beta) from logits and attention weights, numpy or torch) and :mod:`.logger`
  (:class:`RunLogger`: schema rows appended and checked as they are logged).

Nothing here imports torch except :mod:`.compare` and the report's sweep runner, when run.
"""

import importlib

#: where each public name lives (imported on first use: ``import icl_kinetics.validate.figures``
#: stays light, without scipy.stats and the predictions)
_WHERE = {
    "validate_runs": "report", "write_report": "report", "run_validation": "report",
    "read_table": "schema", "read_tables": "schema", "plan": "requirements", "REQUIREMENTS": "requirements",
    "RunLogger": "logger",
    "coefficients_from_logits": "probes", "head_from_attention": "probes", "AttentionRecorder": "probes",
    "Verdict": "core", "SeedSummary": "core", "Estimate": "core", "seed_summaries": "core", "i_k": "core",
    **dict.fromkeys(("sigmoid_fit", "power_law_fit", "linear_fit", "censored_quantile", "kaplan_meier", "ks_compare",
                     "bimodality_coefficient", "wilson_interval"), "fits"),
    "memorization_law": "memorization", "i_k_table": "memorization", "measured_nu": "memorization",
    "k_star_from_c1": "k_star", "k_star_scaling": "k_star", "k_star_at_horizon": "k_star",
    "onset_times": "onset", "p_icl_spreads": "onset",
    "bimodality": "p_icl", "p_icl_from_c1": "p_icl", "p_icl_from_k_star": "p_icl",
    "equalized_contexts": "equalized", "transience": "transient_icl", "transience_tracking": "transient_icl",
    "drive_at_onset": "drive", "rung1_onset": "rung1",
    **dict.fromkeys(("relative_horizon", "in_situ_drive", "predicted_k_star_in_situ", "local_slopes", "ladder_checks",
                     "memorization_in_situ"),
                    "ladder"),
    "zipf_k_star": "zipf",
}

__all__ = [
    # checking tables
    "validate_runs", "read_table", "read_tables", "write_report", "run_validation", "plan", "REQUIREMENTS",
    # measuring and logging anyone's model
    "RunLogger", "coefficients_from_logits", "head_from_attention", "AttentionRecorder",
    # the typed core
    "Verdict", "SeedSummary", "Estimate", "seed_summaries", "i_k",
    # the fits
    "sigmoid_fit", "power_law_fit", "linear_fit", "censored_quantile", "kaplan_meier", "ks_compare",
    "bimodality_coefficient", "wilson_interval",
    # the predictions
    "memorization_law", "i_k_table", "measured_nu", "k_star_from_c1", "k_star_scaling", "k_star_at_horizon",
    "onset_times", "p_icl_spreads", "bimodality", "p_icl_from_c1", "p_icl_from_k_star", "equalized_contexts",
    "transience", "transience_tracking", "drive_at_onset", "rung1_onset",
    # the scale ladder
    "relative_horizon", "in_situ_drive", "predicted_k_star_in_situ", "local_slopes", "ladder_checks",
    "memorization_in_situ",
    # Zipf item frequencies (rung 2)
    "zipf_k_star",
]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
