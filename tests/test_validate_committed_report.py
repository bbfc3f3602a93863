"""The committed small-preset report regenerates from the committed collected tables.

``docs/results/validation_small/tables`` holds the collected table of every sweep the
report reads (``tools/pack_tables.py``) and rung 1's summary; ``report.json`` beside it
was written from them by ``icl-kinetics validate --preset small --sweeps
docs/results/validation_small/tables --no-run``.  Reading the tables again must give the
same verdicts, the same reasons and the same numbers (relative 1e-9: the fits are seeded).
"""

import json
import math
from pathlib import Path

import pytest

from icl_kinetics.io import dumps
from icl_kinetics.validate.report import validate_sweeps

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "validation_small"


def _close(a, b, path=""):
    """Paths where two JSON values differ (numbers: relative 1e-9)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_report_json_regenerates_from_the_committed_tables():
    committed = json.loads((RESULTS / "report.json").read_text(encoding="utf-8"))
    problems: dict = {}
    verdicts, _ = validate_sweeps(RESULTS / "tables", "small", run=False, progress=False, problems=problems)
    assert problems == {}
    fresh = json.loads(dumps([v.to_dict() for v in verdicts]))  # as report.json is written
    assert [(v["prediction"], v["rung"], v["verdict"]) for v in fresh] == \
        [(v["prediction"], v["rung"], v["verdict"]) for v in committed["verdicts"]]
    diffs = _close(fresh, committed["verdicts"])
    assert not diffs, diffs[:10]


def test_the_committed_tables_are_all_there():
    from icl_kinetics.validate.report import preset_sweep_names

    names = set(preset_sweep_names())
    have = {p.name[: -len(".csv.gz")] for p in (RESULTS / "tables").glob("*.csv.gz")}
    assert have == names
    assert (RESULTS / "tables" / "rung1" / "summary.json").is_file()
    total = sum(p.stat().st_size for p in (RESULTS / "tables").rglob("*") if p.is_file())
    assert total < 20 * 2**20, total


def test_a_tables_folder_is_never_trained_into(tmp_path):
    from icl_kinetics.errors import ParameterError
    from icl_kinetics.validate.report import run_validation

    with pytest.raises(ParameterError) as e:
        run_validation("small", sweeps=RESULTS / "tables", out=tmp_path / "out", run=True, progress=False)
    assert e.value.name == "sweeps" and "--no-run" in str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# docs/results/scale_ladder regenerates the same way (`icl-kinetics validate --preset scale_ladder
# --sweeps docs/results/scale_ladder/tables --no-run`), but that takes 65 s on 2 cores, which CI's
# 15-minute budget cannot spare; the zipf report checks the same code path (_one_sweep_report).
@pytest.mark.parametrize("preset, folder", [("zipf_rung2", "zipf")])
def test_one_sweep_reports_regenerate_from_their_committed_tables(preset, folder, tmp_path):
    """docs/results/zipf: ``validate --preset zipf_rung2 --sweeps docs/results/zipf/tables
    --no-run`` gives the committed report.json's verdicts and numbers."""
    from icl_kinetics.validate.report import run_validation

    docs = ROOT / "docs" / "results" / folder
    committed = json.loads((docs / "report.json").read_text(encoding="utf-8"))
    res = run_validation(preset, sweeps=docs / "tables", out=tmp_path / "out", run=False, progress=False)
    fresh = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert res.get("failure") is None
    assert [(v["prediction"], v["rung"], v["verdict"]) for v in fresh["verdicts"]] == \
        [(v["prediction"], v["rung"], v["verdict"]) for v in committed["verdicts"]]
    diffs = _close(fresh["verdicts"], committed["verdicts"])
    assert not diffs, diffs[:10]
    assert fresh["compute"]["cpu_core_hours"] == pytest.approx(committed["compute"]["cpu_core_hours"], rel=1e-12)
