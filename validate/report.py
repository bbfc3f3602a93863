"""The validation report: every implemented prediction checked on the sweeps (or on a
user's own table), written as ``report.md`` + figures + ``report.json``.

``validate_sweeps`` reads (and, unless told not to, first runs) the preset sweeps each
prediction needs; ``validate_runs`` runs every prediction that a user's tidy table has
the columns for, and names the ones it had to skip with the columns each lacked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from icl_kinetics.io import atomic_write_text, write_json
from icl_kinetics.validate.p_icl import bimodality, p_icl_from_c1, p_icl_from_k_star
from icl_kinetics.validate.core import Verdict, number, seed_summaries
from icl_kinetics.validate.drive import drive_at_onset
from icl_kinetics.validate.equalized import acquisition_by_k, equalized_contexts
from icl_kinetics.validate.k_star import (
    final_accuracy_by_k, k_star_at_horizon, k_star_from_c1, k_star_scaling, sigmoid_panels,
)
from icl_kinetics.validate.memorization import c1_tails, coefficient_curves, measured_nu, memorization_law
from icl_kinetics.validate.onset import onset_times, p_icl_spreads
from icl_kinetics.validate.rung1 import rung1_onset
from icl_kinetics.validate.schema import read_table, read_tables
from icl_kinetics.validate.transient_icl import transience, transience_tracking

#: which preset sweeps each implemented check reads
SWEEPS_FOR = {
    "memorization_law": ("fig5",),
    "k_star_from_c1": ("rung2mlp", "rung2"),
    "k_star_scaling": ("fig6a", "fig5"),
    "onset_times": ("fig6b",),
    "drive_at_onset": ("fig6a", "fig6b"),
    "bimodality": ("fig6c",),
    "equalized_contexts": ("fig6e",),
    "transience": ("fig2e", "figA6"),
    "panels": ("fig2bc", "fig2d", "figA8"),  # figures only (paper Fig. 2b-d, A8)
    "two_layer": ("figA5",),
    "rung2_more": ("rung2bimodal", "rung2eq", "rung2trans"),
}
#: the scale ladder's preset (issue 14; ``validate --preset scale_ladder``): one sweep, its own report
#: (:mod:`icl_kinetics.validate.ladder`), at its small scale
LADDER = "scale_ladder"
#: Zipf item frequencies on rung 2 (``validate --preset zipf_rung2``): one sweep, its own report
#: (:func:`icl_kinetics.validate.zipf.zipf_k_star`), at its small scale
ZIPF = "zipf_rung2"
#: rung 1 (the minimal model without MLP, ``validate.compare``): N, beta0 and seeds per scale
RUNG1 = {"small": {"Ns": (25, 50, 100, 200), "beta0s": (-1.0, 0.0), "seeds": 8, "lr": 0.1},
         "paper": {"Ns": (50, 100, 200), "beta0s": (-2.0, -1.0, 0.0), "seeds": 16, "lr": 0.1}}


def _table(sweeps: Path, name: str, problems: dict):
    """Collected table of sweep ``name`` under ``sweeps`` (None and the reason when there is none):
    the sweep ``sweeps/<name>/`` if there is one, else its collected table
    ``sweeps/<name>.csv.gz`` (or ``.csv``), as committed under ``docs/results/``.

    Every run is verified by ``collect``; a damaged run is left out of the table and
    recorded in ``problems`` (``"<sweep>/<run_id>" -> reason``)."""
    from icl_kinetics.simulate.sweeps import SweepStore

    d = sweeps / name
    if not (d / "sweep.json").is_file():
        for packed in (sweeps / f"{name}.csv.gz", sweeps / f"{name}.csv"):  # a committed collected table
            if packed.is_file():
                return read_table(packed, name="sweeps"), ""
        return None, f"sweep {name} not found in {sweeps} (run without --no-run to make it)"
    store = SweepStore(d)
    s = store.summary()
    c = store.collect()
    for rid, why in c.left_out.items():
        problems[f"{name}/{rid}"] = f"left out: {why}"
    unf = s["pending"] + s["running"] + s["failed"] + s["damaged"]
    note = "" if unf == 0 else f"{unf} of {s['runs']} runs unfinished, failed or damaged"
    if c.rows == 0:
        return None, f"sweep {name} in {sweeps} has no metrics yet ({note or 'no run started'})"
    return read_table(c.path), note


def _rung1(sweeps: Path, scale: str, run: bool, progress: bool, problems: dict):
    """Rung 1's summary (``validate.compare``'s JSON) from ``sweeps/rung1``, made first if asked
    and missing (or made with other parameters, or damaged); (None, reason) when there is none."""
    import json

    from icl_kinetics.validate.compare import compare_minimal_onset

    d, par = sweeps / "rung1", RUNG1[scale]
    f = d / "summary.json"
    res, same = None, False
    if f.is_file():
        try:
            res = json.loads(f.read_text(encoding="utf-8"))
            same = (list(res["N"]), list(res["beta0"]), res["seeds"], res["lr"]) == \
                (list(par["Ns"]), list(par["beta0s"]), par["seeds"], par["lr"]) and isinstance(res["rows"], list)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            why = f"{f} cannot be read ({type(e).__name__})"
            if not run:
                problems["rung1"] = f"left out: {why}; run without --no-run to make it again"
                return None, why
            res = None
    if not same and run:
        res, same = compare_minimal_onset(**par, out=d, progress=progress), True
    if not same:
        return None, (f"rung 1 in {d} was made with other parameters than the {scale} preset's" if res is not None
                      else f"rung 1 not found in {d}") + " (run without --no-run to make it)"
    return res, ""


def _run_preset(sweeps: Path, names: list, scale: str, device: str, progress: bool, problems: dict) -> None:
    """Run every needed sweep's pending runs in one pool, longest first (docs/validation.md,
    "Time"); every run that did not finish goes into ``problems``."""
    from icl_kinetics.simulate.sweeps import SweepStore, run_local_many
    from icl_kinetics.simulate.sweeps.presets import preset

    summ = run_local_many([SweepStore.create(sweeps / n, preset(n, scale, device)) for n in names],
                          progress=progress, desc=f"validate --preset {scale}: sweeps")
    for name, sm in summ.items():
        for kind in ("failed", "damaged", "pending"):
            for rid, why in sm[f"{kind}_runs"].items():
                problems[f"{name}/{rid}"] = f"{kind}: {why}"


def validate_sweeps(sweeps, scale: str = "small", run: bool = True, progress: bool = True,
                    device: str = "cpu", problems: dict | None = None) -> tuple[list, dict]:
    """All implemented checks on the preset sweeps under ``sweeps`` (DIR/<preset>).

    Returns (verdicts, tables): the tables (preset name -> collected table, or None) feed
    the paper-panel figures.  ``problems`` (a dict, filled in) receives every damaged run
    left out of a table and, after running, every run that did not finish."""
    problems = {} if problems is None else problems
    sweeps = Path(sweeps)
    names = preset_sweep_names()
    if run:
        _run_preset(sweeps, names, scale, device, progress, problems)
    tables, notes = {}, {}
    for name in names:
        tables[name], notes[name] = _table(sweeps, name, problems)
    tables["rung1"], notes["rung1"] = _rung1(sweeps, scale, run, progress, problems)
    out = []
    for needs, prediction, rung, check in _preset_checks(tables):
        missing = [n for n in needs if tables.get(n) is None]
        if missing:
            out.append(Verdict.skipped(prediction, rung, notes.get(missing[-1])))
        else:
            out += check()
    for v in out:
        v.details.setdefault("sweep_notes", {k: n for k, n in notes.items() if n})
    return out, tables


def _relabel(verdicts: list, rung: str) -> list:
    for v in verdicts:
        v.rung = rung
    return verdicts


def _preset_checks(tables: dict) -> list:
    """The preset report's checks, in report order: (sweeps each reads, prediction and rung
    named when one is missing, the check: a function returning its verdicts)."""
    # nu from the MLP alone, measured once: the memorization check, the K* slope and the
    # transformer's P(ICL) all use it
    mem5 = memorization_law(tables["fig5"]) if tables.get("fig5") is not None else None
    nu5 = measured_nu(mem5)
    # fig6b's onset checks, computed once: their spread of log t_ICL (and per-seed slope
    # d log t / d beta0_eff) also set the threshold spread of the transformer's P(ICL)
    onset6b = onset_times(tables["fig6b"]) if tables.get("fig6b") is not None else None

    def memorization(name, rung):
        return _relabel([mem5 if name == "fig5" else memorization_law(tables[name])], rung)

    def p_icl_transformer():
        if nu5 is None:
            return [Verdict.skipped("p_icl", "transformer", "needs nu from fig5 (the memorization law holding)")]
        # K* of fig6a at fig6c's own horizon: I_K(T) grows with T, so K* depends on the cap
        horizon = max(number(t) for t in tables["fig6c"]["iteration"])
        return p_icl_from_k_star(tables["fig6c"], k_star_at_horizon(tables["fig6a"], horizon), nu5.value, nu5.ci,
                                 **p_icl_spreads(onset6b or []))

    def transient(name, rung):
        return transience(tables[name], rung=rung) + [transience_tracking(tables[name], rung=rung)]

    r2 = "minimal model + MLP"
    return [
        (("rung1",), "t_icl_absolute", "minimal model, no MLP", lambda: rung1_onset(tables["rung1"]["rows"])),
        (("fig5",), "memorization_law", "MLP alone (fig5)", lambda: memorization("fig5", "MLP alone (fig5)")),
        (("rung2mlp",), "memorization_law", "MLP alone (rung-2 MLP)",
         lambda: memorization("rung2mlp", "MLP alone (rung-2 MLP)")),
        (("rung2mlp", "rung2"), "k_star_from_c1", r2, lambda: k_star_from_c1(tables["rung2mlp"], tables["rung2"])),
        (("fig6a",), "k_star_scaling", "transformer",
         lambda: [k_star_scaling(tables["fig6a"], nu=nu5 and nu5.value, nu_ci=nu5 and nu5.ci)]),
        (("fig6a", "fig6b"), "drive_at_onset", "transformer", lambda: drive_at_onset(tables["fig6a"], tables["fig6b"])),
        (("fig6b",), "onset_times_linear", "transformer", lambda: onset6b),
        (("figA5",), "onset_times_linear", "two-layer transformer (figA5)",
         lambda: onset_times(tables["figA5"], rung="two-layer transformer (figA5)")),
        (("fig6c",), "bimodality", "transformer", lambda: bimodality(tables["fig6c"])),
        (("fig6a", "fig5", "fig6c"), "p_icl", "transformer", p_icl_transformer),
        (("fig6e",), "equalized_contexts", "transformer", lambda: [equalized_contexts(tables["fig6e"])]),
        (("fig2e",), "transience", "transformer (fig2e)", lambda: transient("fig2e", "transformer (fig2e)")),
        (("figA6",), "transience", "transformer (figA6)", lambda: transient("figA6", "transformer (figA6)")),
        (("rung2bimodal",), "bimodality", r2,
         lambda: bimodality(tables["rung2bimodal"], rung=r2) + p_icl_from_c1(tables.get("rung2mlp"),
                                                                             tables["rung2bimodal"])),
        (("rung2eq",), "equalized_contexts", r2, lambda: [equalized_contexts(tables["rung2eq"], rung=r2)]),
        (("rung2trans",), "transience", r2, lambda: transient("rung2trans", f"{r2} (rung2trans)")),
    ]


def _panel_figures(tables: dict, verdicts, out: Path) -> dict:
    """Figures of paper panels drawn straight from the sweep tables (no verdict of their own)."""
    from icl_kinetics.validate import figures as F

    paths = {}
    r1 = tables.get("rung1")
    if r1 is not None and r1.get("plot") and Path(r1["plot"]).is_file():
        import shutil

        dst = out / "rung1_t_icl_vs_theory.png"
        shutil.copyfile(r1["plot"], dst)
        paths["rung1"] = str(dst)
    if tables.get("fig2bc") is not None:
        paths["fig2bc"] = F.save(F.accuracy_vs_k_figure(final_accuracy_by_k(tables["fig2bc"]), "Fig. 2b, 2c: final "
                                                        "ICL and IWL accuracy against K"), out / "fig2bc_accuracy_vs_K.png")
    if tables.get("fig5") is not None:
        paths["figA2"] = F.save(F.mlp_coefficients_figure(coefficient_curves(tables["fig5"])),
                                out / "figA2_mlp_coefficients.png")
        paths["figA3"] = F.save(F.c1_power_law_figure(c1_tails(tables["fig5"])), out / "figA3_c1_power_law.png")
    if tables.get("fig6e") is not None:
        paths["fig6e"] = F.save(F.equalized_figure(acquisition_by_k(tables["fig6e"])), out / "fig6e_equalized.png")
    if tables.get("rung2eq") is not None:
        # the theory's bound, as the rung-2 equalized verdict computed it
        ceiling = next((v.details.get("theory_ceiling_equalized") for v in verdicts
                        if v.prediction == "equalized_contexts" and v.rung.startswith("minimal model")), None)
        lab = f"theory: equalized <= P(beta0 > 0) = {ceiling:.2f}" if ceiling is not None else ""
        paths["rung2eq"] = F.save(F.equalized_figure(acquisition_by_k(tables["rung2eq"]), ceiling, lab,
                                                     "Rung 2 (minimal model + MLP): equalized against i.i.d. "
                                                     "contexts"), out / "rung2eq_equalized.png")
    for name, title in (("fig2d", "Fig. 2d: training at one K"), ("figA8", "Fig. A8: equalized contexts at one K"),
                        ("fig2e", "Fig. 2e: transient ICL under attention weight decay")):
        if tables.get(name) is not None:
            paths[name] = F.save(F.training_curves_figure(tables[name], threshold=0.95, title=title),
                                 out / f"{name}_training.png")
    if tables.get("fig2e") is not None:
        paths["fig6d"] = F.save(F.icl_vs_iwl_figure(tables["fig2e"], "Fig. 6d: ICL against IWL accuracy "
                                                    "(transient runs)"), out / "fig6d_icl_vs_iwl.png")
    if tables.get("fig6b") is not None:
        seeds = [s for s in seed_summaries(tables["fig6b"]) if s.observed]
        if seeds:
            paths["figA4"] = F.save(F.onset_figure([{"N": s.N, "t_icl": s.t_icl} for s in seeds]),
                                    out / "figA4_t_icl_distributions.png")
    for v in verdicts:
        if v.prediction == "k_star_scaling" and "k_star" in v.details and tables.get("fig6a") is not None:
            paths["figA7"] = F.save(F.sigmoid_fits_figure(sigmoid_panels(tables["fig6a"], v.details["k_star"])),
                                    out / "figA7_sigmoid_fits.png")
    return paths


def _ladder_expected(scale: str = "small") -> dict:
    """{(model, width): [N, ...]} of the ICL-model points the ``scale_ladder`` preset declares."""
    from icl_kinetics.simulate.sweeps.presets import preset

    out: dict = {}
    for r in preset(LADDER, scale).runs:
        c = r.config
        if c.model != "mlp":
            out.setdefault((c.model, float(c.width)), set()).add(float(c.N))
    return {g: sorted(v) for g, v in out.items()}


def _one_sweep_checks(name: str):
    """(checks on the collected table, the prediction and rung named when it is absent, the
    report's title) of a preset that is one sweep of its own (``validate --preset NAME``)."""
    if name == LADDER:
        from icl_kinetics.validate.ladder import ladder_checks

        return (lambda t: ladder_checks(t, _ladder_expected("small"), full=True), "k_star_in_situ",
                "scale ladder", f"Scale ladder (issue 14): preset {LADDER}")
    from icl_kinetics.validate.zipf import zipf_k_star

    return zipf_k_star, "zipf_k_star", "minimal model + MLP, Zipf", f"Zipf item frequencies on rung 2: preset {ZIPF}"


def _one_sweep_report(name: str, sweeps: Path, out, run: bool, progress: bool, device: str, problems: dict,
                      t0: float) -> dict:
    """``validate --preset scale_ladder`` or ``zipf_rung2``: the preset's checks
    (:func:`icl_kinetics.validate.ladder.ladder_checks`, with memorization_law per MLP width
    and drive_at_onset per model and width; :func:`icl_kinetics.validate.zipf.zipf_k_star`) on
    the sweep ``sweeps/NAME`` (run or resumed first unless ``run`` is False) or its collected
    table ``sweeps/NAME.csv.gz``.  Points without data yet are "inconclusive: needs ..."; an
    absent table gives one skipped verdict, never a crash."""
    checks, prediction, rung, title = _one_sweep_checks(name)
    if run:
        _run_preset(sweeps, [name], "small", device, progress, problems)
    table, note = _table(sweeps, name, problems)
    if table is None:
        verdicts = [Verdict.skipped(prediction, rung, note)]
    else:
        verdicts = checks(table)
        for v in verdicts:
            if note:
                v.details.setdefault("sweep_notes", {name: note})
    return write_report(verdicts, out, f"{title}, sweeps in {sweeps}", None, time.perf_counter() - t0,
                        problems=problems, compute=sweep_compute(sweeps, name))


def sweep_compute(sweeps: Path, name: str) -> dict | None:
    """What the runs of sweep ``name`` cost: runs finished out of the preset's, and the CPU time
    of the finished runs whose time is known (each run trains on one core: process-seconds are
    core-seconds), from the sweep folder ``sweeps/NAME`` or from ``sweeps/NAME.timing.json``
    beside a committed table (``tools/pack_tables.py``); None when neither is there.  The file
    is read as untrusted: entries that are not finite, non-negative numbers are not counted."""
    import json
    import math

    from icl_kinetics.simulate.sweeps import SweepStore
    from icl_kinetics.simulate.sweeps.presets import preset

    total = len(preset(name, "small").runs)
    if (sweeps / name / "sweep.json").is_file():
        done = [st for st in SweepStore(sweeps / name).statuses().values() if st["status"] == "done"]
        secs = [st["seconds"] for st in done if isinstance(st.get("seconds"), (int, float))]
        return {"source": str(sweeps / name), "runs": total, "done": len(done), "timed_runs": len(secs),
                "cpu_core_hours": sum(secs) / 3600}
    f = sweeps / f"{name}.timing.json"
    if not f.is_file():
        return None
    try:
        t = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {"source": str(f), "runs": total, "unreadable": True}
    if not isinstance(t, dict):
        return {"source": str(f), "runs": total, "unreadable": True}
    secs = [v.get("seconds") for v in t.values() if isinstance(v, dict)]
    secs = [x for x in secs if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0]
    return {"source": str(f), "runs": total, "timed_runs": len(secs), "cpu_core_hours": sum(secs) / 3600}


def source_names(source) -> str:
    """The source of a table in words, for titles: the file names, or what kind of object it is."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, dict):
        return "a table (dict of columns)"
    if type(source).__name__ == "DataFrame":
        return "a DataFrame"
    if isinstance(source, (list, tuple)) and source and all(isinstance(x, (str, Path)) for x in source):
        if len(source) <= 3:
            return ", ".join(map(str, source))
        return f"{len(source)} tables in {os.path.commonpath([os.path.abspath(x) for x in source])}"
    if isinstance(source, (list, tuple)) and source and all(isinstance(x, dict) for x in source):
        return "a list of rows"
    return "several tables"


def read_source(source, read_options: dict | None = None) -> dict:
    """A table of the schema from anything :func:`read_tables` takes (CSV paths, a DataFrame,
    a list of row dicts, a dict of columns), read with ``read_options`` (``column_map``,
    ``iterations_per_epoch``, ``k_minus_one_is_inf``; those left at None are not passed).

    Raises:
        ParameterError: an unknown reading option, or a source that is not a table of the schema."""
    opts = {k: v for k, v in (read_options or {}).items() if v is not None}
    unknown = sorted(set(opts) - {"column_map", "iterations_per_epoch", "k_minus_one_is_inf"})
    if unknown:
        from icl_kinetics.errors import ParameterError

        raise ParameterError(unknown[0], opts[unknown[0]], "one of the reading options column_map, "
                             "iterations_per_epoch, k_minus_one_is_inf")
    return read_tables(source, **opts)


def validate_runs(source, **read_options) -> tuple[list, dict]:
    """Every check of :data:`~icl_kinetics.validate.requirements.REQUIREMENTS` that a user's
    table allows; returns (verdicts, skipped) with skipped = {check: reason} for each check
    whose columns or rows the table lacks (never silently absent).  A check whose rows are
    there but below its stated minimum gives "inconclusive: needs ..." instead.

    Args:
        source: one CSV (.csv or .csv.gz), a list of CSVs stacked into one table, a pandas
            DataFrame, a list of row dicts, or a dict of columns (whatever
            :func:`read_tables` takes; each goes through the same typed checks).
        read_options: ``column_map`` ({"src": "dst"}), ``iterations_per_epoch`` (an
            ``epoch`` column in epochs -> ``iteration``), ``k_minus_one_is_inf`` (read
            K = -1 as K = inf), passed to :func:`read_tables`.

    When the table's MLP runs give a memorization law that holds, its nu (and CI) is the
    predicted K* slope's 1/nu and P(ICL)'s nu, as in the preset report.

    Raises:
        ParameterError: the source is not a table of the schema (docs/validation.md)."""
    from icl_kinetics.validate.requirements import REQUIREMENTS

    t = read_source(source, read_options)
    have = set(t)
    seeds = seed_summaries(t)
    skipped = {}
    for name, req in REQUIREMENTS.items():
        miss = [c for c in req.columns if c not in have]
        if miss:
            skipped[name] = "missing columns: " + ", ".join(miss)
    runs = [n for n in REQUIREMENTS if n not in skipped]
    out = []
    nu = mem = None
    if "memorization_law" in runs:
        mem = memorization_law(t)
        out.append(mem)
        nu = measured_nu(mem)
    if "k_star_from_c1" in runs:
        out += k_star_from_c1(t, t)
    if "k_star_scaling" in runs:
        out.append(k_star_scaling(t, nu=nu and nu.value, nu_ci=nu and nu.ci))
    if "drive_at_onset" in runs:
        out += drive_at_onset(t, t)
    if "k_star_in_situ" in runs or "k_star_local_slope" in runs:
        from icl_kinetics.validate.ladder import ladder_checks

        out += [v for v in ladder_checks(t) if v.prediction in runs]
    onsets = []
    if "onset_times_linear" in runs or "onset_times_shape" in runs:
        onsets = onset_times(t)
        out += [v for v in onsets if v.prediction in runs]
    if "bimodality" in runs:
        out += bimodality(t)
    if "p_icl" in runs:
        out += _p_icl_of_table(t, seeds, mem, nu, onsets)
    if "equalized_contexts" in runs:
        out.append(equalized_contexts(t))
    if "transience" in runs or "icl_iwl_loss_relation" in runs:
        out += [v for v in transience(t) if v.prediction in runs]
    if "transience_tracking" in runs:
        out.append(transience_tracking(t))
    return out, skipped


def _p_icl_of_table(t: dict, seeds: list, mem, nu, onsets: list) -> list:
    """P(ICL) on one user table: from the MLP's I_K for the minimal model's runs (rung 2),
    else from K*(N) measured on the table's own finite-K runs at their horizon, nu from its
    MLP runs and the threshold spread of its K = inf onsets (rung 3)."""
    if any(s.model == "minimal" and s.finite_k for s in seeds):
        return p_icl_from_c1(t, t)
    if nu is None:
        why = ("needs nu from memorization_law holding on this table's MLP runs (model = mlp)" if mem is None else
               f"needs nu from memorization_law holding; it is {mem.verdict} here ({mem.reason})")
        return [Verdict(prediction="p_icl", rung="transformer", verdict="inconclusive", reason=why)]
    fin = [s for s in seeds if s.icl_model and s.finite_k]
    if not fin:
        return [Verdict.skipped("p_icl", "transformer", "needs ICL-model runs at finite K")]
    horizon = max(s.cap for s in fin)
    return p_icl_from_k_star(t, k_star_at_horizon(t, horizon), nu.value, nu.ci, **p_icl_spreads(onsets))


def _verdict_figure(v, out: Path, F) -> dict:
    """The figure of one verdict (its figure_data), {} when it has none."""
    paths = {}
    fd = v.figure_data
    if not fd:
        return paths
    if v.prediction == "memorization_law":
        tag = "fig5" if "fig5" in v.rung else ("rung2_mlp" if "rung-2" in v.rung else "mlp")
        tag += f"_width{v.rung.split('width ')[-1]}" if tag == "mlp" and "width " in v.rung else ""
        paths[f"memorization_law:{tag}"] = F.save(F.memorization_figure(fd["i_k"], fd.get("fit"), fd.get("fitted")),
                                                  out / f"{tag}_memorization.png")
    elif v.prediction == "k_star_scaling" and "fits" in fd:
        Ns = fd["N"]
        paths["k_star_scaling"] = F.save(F.k_star_scaling_figure(
            Ns, [fd["fits"][N]["k_star"] for N in Ns], [fd["fits"][N]["k_star_ci"] for N in Ns],
            fd["predicted_slope"], fd.get("slope")), out / "fig6a_k_star_vs_N.png")
    elif v.prediction == "onset_times_linear" and "samples" in fd:
        tag = "figA5" if "figA5" in v.rung else "fig6b"
        paths[f"onset_times_linear:{tag}"] = F.save(
            F.onset_times_figure(fd["samples"], fd["median"], fd.get("fit")), out / f"{tag}_t_icl_vs_N.png")
    elif v.prediction == "bimodality" and "acc" in fd and v.verdict != "inconclusive":
        tag = f"N{fd['N']:g}_K{fd['K']:g}" + ("_minimal" if "minimal" in v.rung else "")
        paths[f"bimodality:{tag}"] = F.save(F.bimodality_figure(fd["acc"], fd["observed"], fd["N"], fd["K"],
                                                                fd.get("xlabel", "final ICL accuracy")),
                                            out / f"fig6c_bimodality_{tag}.png")
    elif v.prediction == "transience" and "rows" in fd:
        tag = v.rung.split("(")[-1].rstrip(")") if "(" in v.rung else "runs"
        paths[f"transience:{tag}"] = F.save(F.transience_runs_figure(fd["rows"]), out / f"{tag}_transience.png")
    elif v.prediction == "onset_times_shape" and "resid" in fd:
        tag = "figA5" if "figA5" in v.rung else "fig6b"
        paths[f"onset_times_shape:{tag}"] = F.save(F.onset_shape_figure(fd["resid"], fd["sd_beta0"]),
                                                   out / f"{tag}_onset_shape.png")
    return paths


def _figures(verdicts, out: Path, not_drawn: dict | None = None) -> dict:
    """Every verdict's figure; one that cannot be drawn from its data is left out and named in
    ``not_drawn`` ({verdict: why}), never a crash of the report."""
    not_drawn = {} if not_drawn is None else not_drawn
    from icl_kinetics.validate import figures as F

    def why(e) -> str:  # a figure's own "nothing to plot" is already in words
        return str(e) if isinstance(e, F.NothingToPlot) else f"{type(e).__name__}: {e}"

    paths = {}
    rung2 = [v.figure_data for v in verdicts if v.prediction == "k_star_from_c1" and v.figure_data]
    if rung2:
        paths["k_star_from_c1"] = F.save(F.k_star_prediction_figure(rung2), out / "rung2_k_star.png")
    zipf = [v.figure_data for v in verdicts if v.prediction == "zipf_k_star" and v.figure_data]
    for N in sorted({p["N"] for p in zipf}):
        try:
            paths[f"zipf_k_star:N{N:g}"] = F.save(F.zipf_k_star_figure([p for p in zipf if p["N"] == N]),
                                                  out / f"zipf_k_star_N{N:g}.png")
        except (ValueError, TypeError, KeyError, ZeroDivisionError) as e:  # degenerate data: say so
            not_drawn[f"zipf_k_star:N{N:g}"] = why(e)
    drv = [{**v.figure_data, **({"title": v.rung} if ", N = " in v.rung else {})}  # a ladder group's panel
           for v in verdicts if v.prediction == "drive_at_onset" and v.figure_data]
    if drv:
        paths["drive_at_onset"] = F.save(F.drive_figure(drv), out / "fig6a_drive_at_onset.png")
    ratio = {v.rung: [v.details.get("ratio", float("nan")), *v.details.get("ratio_ci", (float("nan"),) * 2)]
             for v in verdicts if v.prediction == "drive_at_onset"}  # drive_at_onset's, beside the ladder's
    lad = [{**v.figure_data, **({"drive_ratio_all_k": ratio[v.rung]} if v.rung in ratio else {})}
           for v in verdicts if v.prediction == "k_star_in_situ" and v.figure_data]
    for key, draw, name in (("k_star_in_situ", "ladder_k_star_figure", "ladder_k_star_vs_N.png"),
                            ("drive_ratio", "drive_ratio_figure", "ladder_drive_ratio.png")):
        try:
            if lad:
                paths[key] = F.save(getattr(F, draw)(lad), out / name)
        except (ValueError, TypeError, KeyError, ZeroDivisionError) as e:  # degenerate data: say so
            not_drawn[key] = why(e)
    for v in verdicts:
        try:
            paths.update(_verdict_figure(v, out, F))
        except (ValueError, TypeError, KeyError, ZeroDivisionError) as e:  # degenerate data: say so, draw the rest
            not_drawn[f"{v.prediction} [{v.rung}]"] = why(e)
    return paths


def write_report(verdicts, out, title: str, skipped: dict | None = None, seconds: float | None = None,
                 tables: dict | None = None, problems: dict | None = None, compute: dict | None = None) -> dict:
    """Write ``report.md``, ``report.json`` and the figures into ``out``; returns the JSON.

    ``problems`` (runs left out as damaged, or unfinished after running) are listed in
    the report and make the result carry a ``failure`` (the CLI's exit code 3); ``compute``
    (:func:`sweep_compute`) is reported under "Compute"."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    not_drawn: dict = {}
    figs = _figures(verdicts, out, not_drawn)
    if tables:
        figs.update(_panel_figures(tables, verdicts, out))
    lines = [f"# {title}", "",
             "Each row: what the theory predicts, what the runs measured, the agreement metric and the "
             "verdict with its reason. Metrics are explained in docs/validation.md.", "",
             "| prediction | rung | predicted | measured | metric | verdict | reason |", "|---|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.prediction} | {v.rung} | {v.predicted} | {v.measured} | {v.metric} | **{v.verdict}** | "
                     f"{v.reason} |")
    from icl_kinetics.validate.ladder import summary, summary_markdown

    ladder = summary(verdicts)
    lines += summary_markdown(ladder)
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- `{k}`: {r}" for k, r in skipped.items()]
    if problems:
        lines += ["", "## Data problems", "",
                  "These runs are not in the tables above; `icl-kinetics sweep run` re-runs them.", ""]
        lines += [f"- `{k}`: {r}" for k, r in problems.items()]
    if not_drawn:
        lines += ["", "## Figures not drawn", "", "Their data are degenerate; the verdicts above stand.", ""]
        lines += [f"- {k}: {r}" for k, r in not_drawn.items()]
    if figs:
        lines += ["## Figures", ""] + [f"![{k}]({Path(p).name})" for k, p in figs.items()]
    if compute:
        lines += ["", "## Compute", ""]
        if compute.get("unreadable"):
            lines.append(f"{compute['source']} cannot be read; the runs' CPU time is not reported.")
        else:
            done = (f"{compute['done']} of the preset's {compute['runs']} runs finished; the "
                    if "done" in compute else f"Of the preset's {compute['runs']} runs, the ")
            lines.append(f"{done}{compute['timed_runs']} finished runs with a recorded time took "
                         f"{compute['cpu_core_hours']:.2f} CPU core-hours (each run trains on one core, a pack's "
                         f"time shared among its runs by their seed-iterations; from {compute['source']}).")
    if seconds is not None:
        lines += ["", f"Made in {seconds:.0f} s."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    res = {"title": title, "verdicts": [v.to_dict() for v in verdicts], "skipped": skipped or {},
           "figures": figs, "report": str(out / "report.md")}
    if compute:
        res["compute"] = compute
    if not_drawn:
        res["figures_not_drawn"] = not_drawn
    if ladder:
        res["ladder"] = ladder
    if problems:
        res["problems"] = dict(problems)
    write_json(out / "report.json", res)
    if problems:
        k, why = next(iter(problems.items()))
        res["failure"] = {"exit_code": 3, "message": f"{len(problems)} run(s) damaged or unfinished, not in the "
                          f"report's tables (e.g. {k}: {why}); see {out / 'report.md'}"}
    return res


def _preset_sweeps_found(sweeps: Path, names: list | None = None) -> list[str]:
    """The preset's sweeps (``names``; default: the small/paper report's, and rung 1) that
    folder ``sweeps`` holds."""
    return [n for n in names or preset_sweep_names() if (sweeps / n / "sweep.json").is_file()] + \
        _committed_tables(sweeps, names) + \
        (["rung1"] if names is None and (sweeps / "rung1" / "summary.json").is_file() else [])


def preset_sweep_names() -> list[str]:
    """The preset sweeps the report reads (:data:`SWEEPS_FOR`), sorted."""
    return sorted({s for v in SWEEPS_FOR.values() for s in v})


def _committed_tables(sweeps: Path, names: list | None = None) -> list[str]:
    """The preset's sweeps (``names``; default: the small/paper report's) that folder ``sweeps``
    holds as collected tables (``<sweep>.csv.gz`` or ``.csv``, as committed under docs/results/)
    rather than as sweep folders."""
    return [n for n in names or preset_sweep_names() if not (sweeps / n / "sweep.json").is_file()
            and any((sweeps / f"{n}{x}").is_file() for x in (".csv.gz", ".csv"))]


def run_validation(preset: str | None = "small", sweeps=None, runs=None, out="out/validate", run: bool = True,
                   progress: bool = True, device: str = "cpu", plan: bool = False, **read_options) -> dict:
    """The ``icl-kinetics validate`` command.

    ``preset``: ``"small"`` or ``"paper"`` (the scale of the preset sweeps of every check), or
    ``"scale_ladder"`` (the ladder of issue 14, one sweep ``sweeps/scale_ladder`` or its collected
    table ``sweeps/scale_ladder.csv.gz``, and its own report: docs/validation.md, "The scale ladder"), or
    ``"zipf_rung2"`` (Zipf item frequencies on rung 2: ``sweeps/zipf_rung2`` or
    ``sweeps/zipf_rung2.csv.gz``; docs/validation.md, "Zipf item frequencies (rung 2)").
    ``runs``: the user's table (anything :func:`validate_runs` takes), read with
    ``read_options`` (``column_map``, ``iterations_per_epoch``, ``k_minus_one_is_inf``).
    ``plan=True`` (``--plan``): only read it and return the plan
    (:func:`icl_kinetics.validate.requirements.plan_table`); nothing is fitted or written.

    Every input is checked before any work: the tables of ``runs`` are read whole (a file
    that is not a table of the schema is refused, naming it); with ``run=False`` the
    ``sweeps`` folder must exist and hold at least one of the preset's sweeps (else
    there would be nothing to check and every check would be "skipped"); ``out`` (and,
    with ``run=True``, ``sweeps``) must be folders that can be written.  Each fault is a
    :class:`~icl_kinetics.errors.ParameterError` naming the parameter and the path."""
    from icl_kinetics.errors import ParameterError, one_of
    from icl_kinetics.io import check_output_dir
    from icl_kinetics.validate.schema import path_error

    t0 = time.perf_counter()
    if runs is not None:
        table = read_source(runs, read_options)
        if plan:
            from icl_kinetics.validate.requirements import plan_table

            return plan_table(table, f"Plan for {source_names(runs)}")
        check_output_dir("out", out)
        verdicts, skipped = validate_runs(table)
        return write_report(verdicts, out, f"Validation of {source_names(runs)}", skipped, time.perf_counter() - t0)
    if plan:
        raise ParameterError("plan", True, "--plan with --runs TABLE... (a plan is made for a table)")
    one_of("preset", preset, (*RUNG1, LADDER, ZIPF))
    names = [preset] if preset in (LADDER, ZIPF) else None
    sweeps = Path(sweeps or f"runs/{preset}")
    if sweeps.exists() and not sweeps.is_dir():
        raise path_error("sweeps", sweeps, "a folder of preset sweeps (this is a file)")
    if not run:
        if not sweeps.is_dir():
            raise path_error("sweeps", sweeps, "an existing folder of preset sweeps with --no-run "
                             "(run without --no-run to make them)")
        if not _preset_sweeps_found(sweeps, names):
            raise path_error("sweeps", sweeps, f"a folder holding at least one of the {preset} preset's sweeps "
                             "(DIR/<sweep>/sweep.json, a collected table DIR/<sweep>.csv.gz, or "
                             "DIR/rung1/summary.json) with --no-run; it holds none (run without --no-run to make them)")
    check_output_dir("out", out)
    if run:
        if sweeps.is_dir() and _committed_tables(sweeps, names):
            raise path_error("sweeps", sweeps, "a folder of sweeps to run or resume; this one holds collected "
                             "tables (e.g. " + _committed_tables(sweeps, names)[0] + ".csv.gz): read it with --no-run")
        check_output_dir("sweeps", sweeps)
    problems: dict = {}
    if preset in (LADDER, ZIPF):
        return _one_sweep_report(preset, sweeps, out, run, progress, device, problems, t0)
    verdicts, tables = validate_sweeps(sweeps, preset, run=run, progress=progress, device=device,
                                       problems=problems)
    return write_report(verdicts, out, f"Validation report: preset {preset}, sweeps in {sweeps}", None,
                        time.perf_counter() - t0, tables=tables, problems=problems)


__all__ = ["LADDER", "SWEEPS_FOR", "run_validation", "validate_runs", "validate_sweeps",
           "write_report"]
