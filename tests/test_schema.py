"""The published tidy-table schema: reading a hand-written table, and the columns each
check needs."""

import math

import pytest

from icl_kinetics.errors import ParameterError
from icl_kinetics.validate.requirements import REQUIREMENTS
from icl_kinetics.validate.schema import COLUMNS, REQUIRED, read_table

DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_handwritten_table_is_read_with_types_and_fresh_items_as_inf():
    t = read_table(DATA / "handwritten_runs.csv")
    assert t["seed"] == ["a", "a", "b", "b", "c", "c"]
    assert t["iteration"][1] == 1000.0 and t["icl_acc"][3] == 0.97
    assert t["K"][0] == 1000.0 and math.isinf(t["K"][2]) and math.isinf(t["K"][4])  # 'inf' and empty
    assert math.isnan(t["iwl_acc"][2])


def test_every_check_needs_only_known_columns():
    for req in REQUIREMENTS.values():
        assert set(req.columns) <= set(COLUMNS), req.check
    assert set(REQUIRED) <= set(COLUMNS)


def test_bad_tables_give_clear_errors(tmp_path):
    with pytest.raises(ParameterError) as e:
        read_table(tmp_path / "nope.csv")
    assert e.value.name == "runs"
    (tmp_path / "a.csv").write_text("iteration,icl_acc\n0,0.5\n")
    with pytest.raises(ParameterError) as e:
        read_table(tmp_path / "a.csv")
    assert "seed" in str(e.value)
    (tmp_path / "b.csv").write_text("seed,iteration,icl_acc\n0,0,half\n")
    with pytest.raises(ParameterError) as e:
        read_table(tmp_path / "b.csv")
    assert e.value.name == "icl_acc"
