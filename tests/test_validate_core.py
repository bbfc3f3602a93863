"""The typed core of the validation layer (validate/core.py): seed summaries (censoring
explicit), I_K from a seed's rows against closed forms, the Verdict type, the head's escape
against the theory's definition, and the package's public surface."""

import ast
import importlib
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import icl_kinetics.validate as V
from icl_kinetics.theory import T_ICL_THRESHOLD, icl_threshold_beta
from icl_kinetics.validate.core import SeedSummary, Verdict, i_k, seed_summaries


def _table(rows):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k, math.nan) for r in rows] for k in keys}


def test_seed_summaries_censor_at_the_last_evaluation_and_never_call_the_cap_t_icl():
    rows = []
    for it, acc in ((0, 0.5), (10, 0.9), (20, T_ICL_THRESHOLD), (30, 0.97), (40, 0.99)):  # 0.95 itself is not above
        rows.append({"seed": "a", "iteration": float(it), "N": 19, "K": math.inf, "icl_acc": acc, "beta": 0.3})
    for it in (0, 10, 20, 30, 40, 50):  # never acquires: censored at 50
        rows.append({"seed": "b", "iteration": float(it), "N": 19, "K": math.inf, "icl_acc": 0.6, "beta": -0.2})
    rows = [dict(r, status="done") for r in rows]
    rows.append({"seed": "c", "iteration": 0.0, "N": 19, "K": math.inf, "icl_acc": 0.99, "status": "running"})
    a, b = seed_summaries(_table(rows))  # the unfinished run is left out
    assert (a.seed, a.t_icl, a.observed, a.time, a.cap) == ("a", 30.0, True, 30.0, 40.0)
    assert (b.seed, b.t_icl, b.observed, b.time, b.cap) == ("b", None, False, 50.0, 50.0)
    assert a.beta0 == 0.3 and b.beta0 == -0.2 and a.final_icl_acc == 0.99 and math.isnan(a.final_iwl_acc)
    # grid values as floats (N given as an int), missing columns NaN / None
    assert a.N == 19.0 and isinstance(a.N, float) and a.infinite_k and not a.finite_k
    assert math.isnan(a.lr) and math.isnan(a.wd_attn) and a.model is None and a.icl_model
    np.testing.assert_array_equal(b.series("iteration"), [0, 10, 20, 30, 40, 50])
    # a seed id shared by two grid points is two seeds
    two = seed_summaries(_table([{"seed": 0, "iteration": 0.0, "K": k, "icl_acc": 0.5} for k in (64.0, 128.0)]))
    assert [s.K for s in two] == [64.0, 128.0] and all(s.finite_k for s in two)


def test_i_k_matches_the_closed_form_integral():
    """c1 = 1/2 e^{-t / tau} every 10 iterations: I_K(T) = lr tau / 2 (1 - e^{-T / tau}); the
    trapezoid rule's relative error is about (step / tau)^2 / 12 = 8e-6 here (tolerance 2e-5).
    A c1 missing everywhere and replaced by 1/2 gives lr t / 2 exactly (linear integrand)."""
    lr, tau, step, T = 0.05, 1000.0, 10.0, 4000.0
    its = np.arange(0.0, T + step, step)
    rows = [{"seed": 0, "iteration": t, "lr": lr, "c1": 0.5 * math.exp(-t / tau), "icl_acc": 0.5} for t in its]
    (s,) = seed_summaries(_table(rows))
    exact = lr * 0.5 * tau * (1 - math.exp(-T / tau))
    assert abs(i_k(s) / exact - 1) < 2e-5
    half = lr * 0.5 * tau * (1 - math.exp(-2000.0 / tau))
    assert abs(i_k(s, until=2000.0) / half - 1) < 2e-5
    missing = [dict(r, c1=math.nan) for r in rows]
    (m,) = seed_summaries(_table(missing))
    assert math.isnan(i_k(m))  # rows without c1 are left out: nothing to integrate
    assert abs(i_k(m, until=1234.0, c1_missing=0.5) - lr * 0.5 * 1230.0) < 1e-12  # last evaluation <= 1234: 1230
    (one,) = seed_summaries(_table(rows[:1]))
    assert math.isnan(i_k(one))


def test_head_escaped_is_the_theory_definition_and_false_without_a_head():
    N = 19
    bc = icl_threshold_beta(N)
    cases = {(1.0, bc + 0.01): True, (1.0, bc - 0.01): False, (-1.0, bc + 5): False, (0.5, math.inf): True,
             (math.nan, bc + 1): False, (1.0, math.nan): False}
    for (w, beta), want in cases.items():
        (s,) = seed_summaries(_table([{"seed": 0, "iteration": 0.0, "N": N, "icl_acc": 0.5, "w": w, "beta": beta}]))
        assert s.head_escaped() is want, (w, beta)
    (s,) = seed_summaries(_table([{"seed": 0, "iteration": 0.0, "N": N, "icl_acc": 0.5}]))
    assert not s.head_escaped() and not s.has_head()


def test_verdict_is_keyword_only_and_its_dict_leaves_out_the_figure_data():
    with pytest.raises(TypeError):
        Verdict("p", "r", "-", "-", "-", "holds", "why")  # noqa: the point: positional is refused
    v = Verdict(prediction="p", rung="r", verdict="holds", reason="why", details={"x": 1}, figure_data={"big": [1]})
    assert v.to_dict() == {"prediction": "p", "rung": "r", "predicted": "-", "measured": "-", "metric": "-",
                           "verdict": "holds", "reason": "why", "details": {"x": 1}}
    s = Verdict.skipped("p", "r", "needs columns")
    assert (s.verdict, s.reason, s.details) == ("skipped", "needs columns", {})
    with pytest.raises(TypeError):
        SeedSummary(None, None)  # keyword-only too


def test_the_package_exports_what_scripts_call_and_no_submodule_hides_one():
    """Every name in ``__all__`` resolves; no module of the package is named like an exported
    function (``import icl_kinetics.validate.<module> as m`` would then give the function)."""
    for name in V.__all__:
        assert getattr(V, name) is not None, name
    modules = {m.name for m in pkgutil.iter_modules(V.__path__)}
    assert not modules & set(V.__all__), modules & set(V.__all__)
    assert {"validate_runs", "read_table", "Verdict", "SeedSummary", "censored_quantile", "kaplan_meier",
            "wilson_interval", "write_report", "run_validation"} <= set(V.__all__)
    assert "predictions" not in modules


def test_no_module_of_the_package_uses_another_ones_private_names():
    """``from icl_kinetics.validate.x import _y`` or ``x._y`` across modules is refused."""
    pkg = Path(V.__file__).parent
    names = {m.name for m in pkgutil.iter_modules(V.__path__)}
    bad = []
    for f in pkg.glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("icl_kinetics.validate"):
                bad += [f"{f.name}: {a.name}" for a in node.names if a.name.startswith("_")]
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in names | {"P", "F"}):
                bad.append(f"{f.name}: {node.value.id}.{node.attr}")
    assert not bad, bad
    importlib.import_module("icl_kinetics.validate.report")  # and every module still imports
