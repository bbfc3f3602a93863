"""The published tidy-table schema: reading a hand-written table, and naming what each
prediction would still need."""

import math

import pytest

from icl_kinetics.errors import ParameterError
from icl_kinetics.validate.schema import COLUMNS, PREDICTIONS, REQUIRED, available_predictions, read_table

DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_handwritten_table_is_read_with_types_and_fresh_items_as_inf():
    t = read_table(DATA / "handwritten_runs.csv")
    assert t["seed"] == ["a", "a", "b", "b", "c", "c"]
    assert t["iteration"][1] == 1000.0 and t["icl_acc"][3] == 0.97
    assert t["K"][0] == 1000.0 and math.isinf(t["K"][2]) and math.isinf(t["K"][4])  # 'inf' and empty
    assert math.isnan(t["iwl_acc"][2])


def test_available_predictions_name_the_missing_columns():
    t = read_table(DATA / "handwritten_runs.csv")
    ok, skipped = available_predictions(t)
    assert set(ok) == {"k_star_scaling", "onset_times", "bimodality"}
    assert skipped["equalized_contexts"] == ["contexts"]
    assert skipped["transience"] == ["wd_attn"]
    assert skipped["transience_tracking"] == ["wd_attn", "w", "c3"]
    assert skipped["memorization_law"] == ["model", "c1"]
    assert set(ok) | set(skipped) == set(PREDICTIONS)


def test_every_prediction_needs_only_known_columns():
    for need in PREDICTIONS.values():
        assert set(need) <= set(COLUMNS)
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
