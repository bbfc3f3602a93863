"""tools/: the maintainers' scripts (diff_reports.py compares two report.json files)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _diff_reports():
    spec = importlib.util.spec_from_file_location("diff_reports", TOOLS / "diff_reports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report(value):
    return {"verdicts": [{"prediction": "p", "rung": "r", "verdict": "holds", "details": {"x": value}}]}


@pytest.mark.parametrize("old, new, differs", [
    (math.nan, 0.5, True), (0.5, math.nan, True), (math.nan, math.nan, False), (math.inf, 1e300, True),
    (math.inf, math.inf, False), (-math.inf, math.inf, True), (1.0, 1.0 + 1e-12, False), (1.0, 1.1, True),
])
def test_diff_reports_numbers(tmp_path, capsys, old, new, differs):
    """A number that becomes NaN or inf (or back) is a difference; the same NaN is not."""
    paths = []
    for name, v in (("old.json", old), ("new.json", new)):
        p = tmp_path / name
        p.write_text(json.dumps(_report(v)))  # Python's json writes NaN and Infinity
        paths.append(str(p))
    assert _diff_reports().main(paths) == 0  # the verdicts are the same either way
    out = capsys.readouterr().out
    assert ("number .details.x" in out) is differs, out
