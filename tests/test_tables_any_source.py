"""Tables from any source: a CSV, a pandas DataFrame (real, and a
minimal stand-in that always runs), a list of row dicts and a dict of columns are read by
the same rules into the same typed table; column_map, iterations_per_epoch and the K = -1
convention; and train's metrics.csv carries the grid columns as sweep collect writes them,
while a sweep stored before that still verifies and collects."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from icl_kinetics.errors import ParameterError
from icl_kinetics.validate.schema import COLUMNS, WD_ATTN_FLOOR, read_table, read_tables

try:  # the DataFrame path is tested with a stand-in always, and with pandas where installed
    import pandas
except ImportError:  # pragma: no cover - pandas is an optional extra
    pandas = None

ROOT = Path(__file__).resolve().parents[1]

#: a table with every kind of cell: text and integer seeds, K = inf, a missing accuracy, text
#: columns, a column outside the schema, floats that need all their digits
ROWS = [
    {"run_id": "r1", "seed": 0, "iteration": 0, "model": "transformer", "N": 9, "K": 1000, "contexts": "iid",
     "lr": 0.01, "wd_attn": 0.0, "icl_acc": 0.5, "iwl_acc": 0.5, "c1": 0.5, "w": -0.1234567890123, "note": "x"},
    {"run_id": "r1", "seed": 0, "iteration": 500, "model": "transformer", "N": 9, "K": 1000, "contexts": "iid",
     "lr": 0.01, "wd_attn": 0.0, "icl_acc": 0.97, "iwl_acc": math.nan, "c1": 0.1 / 3, "w": 2.5, "note": "y"},
    {"run_id": "r2", "seed": 1, "iteration": 0, "model": "transformer", "N": 19, "K": math.inf,
     "contexts": "equalized", "lr": 0.01, "wd_attn": 1e-4, "icl_acc": 0.25, "iwl_acc": 1.0, "c1": 1e-9,
     "w": 0.0, "note": "z"},
]


def _write(path, rows, keys=None):
    keys = keys or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:  # floats written with all their digits (repr), as Python's csv does
            w.writerow(r)
    return path


def _columns(rows):
    return {k: [r[k] for r in rows] for k in rows[0]}


class StandInFrame:
    """The part of ``pandas.DataFrame`` that ``read_table`` may use (``columns``, ``index``,
    ``to_dict("list")``), so the DataFrame path is tested where pandas is not installed."""

    def __init__(self, data: dict, index=None):
        self._data = {k: list(v) for k, v in data.items()}
        n = len(next(iter(self._data.values()))) if self._data else 0
        self.index = list(index) if index is not None else list(range(n))

    @property
    def columns(self):
        return list(self._data)

    def to_dict(self, orient="dict"):
        assert orient == "list", orient
        return {k: list(v) for k, v in self._data.items()}


def _same(a: dict, b: dict):
    """Two typed tables are equal: the same columns in the same order, and cell for cell
    the same value and type (NaN equal to NaN)."""
    assert list(a) == list(b)
    for k in a:
        assert len(a[k]) == len(b[k]), k
        for x, y in zip(a[k], b[k]):
            assert type(x) is type(y), (k, x, y)
            assert (x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), (k, x, y)


def _sources(tmp_path):
    """The same table as a CSV, a list of row dicts, a dict of columns and a stand-in
    DataFrame (and a real one read back from the CSV by pandas, where installed)."""
    path = _write(tmp_path / "runs.csv", ROWS)
    out = {"rows": ROWS, "columns": _columns(ROWS), "stand-in frame": StandInFrame(_columns(ROWS))}
    if pandas is not None:
        out["pandas from the CSV"] = pandas.read_csv(path)
        out["pandas from rows"] = pandas.DataFrame(ROWS)
    return path, out


def test_every_source_gives_the_table_the_csv_gives(tmp_path):
    path, sources = _sources(tmp_path)
    ref = read_table(path)
    # the CSV itself is read as the schema says (an independent check of the reference)
    assert ref["seed"] == ["0", "0", "1"] and ref["iteration"] == [0.0, 500.0, 0.0]
    assert ref["K"][:2] == [1000.0, 1000.0] and ref["K"][2] == math.inf and math.isnan(ref["iwl_acc"][1])
    assert ref["c1"][1] == 0.1 / 3 and ref["w"][0] == -0.1234567890123 and ref["note"] == ["x", "y", "z"]
    assert ref["contexts"] == ["iid", "iid", "equalized"] and ref["wd_attn"][2] == 1e-4
    for what, src in sources.items():
        _same(read_table(src), ref)
        _same(read_tables(src), ref)  # one source, not a list of sources
        _same(read_tables([src]), ref)


def test_numpy_arrays_and_torch_tensors_as_columns(tmp_path):
    import numpy as np

    path, _ = _sources(tmp_path)
    cols = _columns(ROWS)
    arr = {k: (np.asarray(v) if k not in ("seed", "run_id", "model", "contexts", "note") else v)
           for k, v in cols.items()}
    _same(read_table(arr), read_table(path))
    torch = pytest.importorskip("torch")
    ten = {**cols, "icl_acc": torch.tensor(cols["icl_acc"], dtype=torch.float64),
           "iteration": torch.tensor(cols["iteration"])}
    _same(read_table(ten), read_table(path))


def test_a_bad_value_in_memory_is_refused_naming_column_row_and_value(tmp_path):
    bad = [dict(r) for r in ROWS]
    bad[2]["icl_acc"] = 97.0  # a percentage
    frames = {"rows": bad, "columns": _columns(bad),
              "stand-in frame": StandInFrame(_columns(bad), index=["a", "b", "c"])}
    if pandas is not None:
        frames["pandas"] = pandas.DataFrame(bad, index=["a", "b", "c"])
    for what, src in frames.items():
        with pytest.raises(ParameterError) as e:
            read_table(src)
        msg = str(e.value)
        assert e.value.name == "icl_acc" and "97" in msg, (what, msg)
        assert "row 2" in msg and "column icl_acc" in msg and "not a percentage" in msg, (what, msg)
        if "frame" in what or what == "pandas":
            assert "DataFrame" in msg and "index 'c'" in msg, msg
    # the same rule as in a CSV (the same words after the value)
    _write(tmp_path / "bad.csv", bad)
    with pytest.raises(ParameterError) as e:
        read_table(tmp_path / "bad.csv")
    assert e.value.name == "icl_acc" and "line 4" in str(e.value) and "not a percentage" in str(e.value)


@pytest.mark.parametrize("column,value,rule", [
    ("seed", "", "non-empty"), ("seed", None, "non-empty"), ("iteration", 2.5, "whole number"),
    ("iteration", None, "every row needs one"), ("N", 0, ">= 1"), ("K", 1, ">= 2"), ("lr", 0.0, "> 0"),
    ("contexts", "equalised", "'iid' or 'equalized'"), ("c1", -0.1, "[0, 1]"), ("wd_attn", -1e-4, ">= 0"),
    ("icl_acc", [0.5], "one number or text per cell"), ("icl_acc", "high", "a number"),
    ("K", math.nan, "NaN is ambiguous here"),
])
def test_each_rule_holds_for_a_list_of_rows(column, value, rule):
    rows = [dict(r) for r in ROWS]
    rows[1][column] = value
    with pytest.raises(ParameterError) as e:
        read_table(rows)
    assert e.value.name == column and rule in str(e.value) and "row 1" in str(e.value), str(e.value)


def test_missing_values_in_memory_read_as_in_a_csv():
    rows = [dict(r) for r in ROWS]
    rows[0].update(iwl_acc=None, contexts=None, note=None, K=None, w=math.nan)
    t = read_table(rows)
    assert math.isnan(t["iwl_acc"][0]) and math.isnan(t["w"][0])
    assert t["contexts"][0] == "" and t["note"][0] == ""
    assert t["K"][0] == math.inf  # None is TrainConfig's K for fresh items, as an empty CSV cell
    if pandas is not None:  # pandas' markers of missing values
        t = read_table(pandas.DataFrame({"seed": ["a", "b"], "iteration": [0, 1],
                                         "N": pandas.array([9, None], dtype="Int64"),
                                         "contexts": ["iid", None]}))
        assert t["N"][0] == 9.0 and math.isnan(t["N"][1]) and t["contexts"] == ["iid", ""]


def test_a_nan_k_from_pandas_is_refused_with_the_fix(tmp_path):
    """pandas reads an empty CSV cell as NaN; an empty K in a CSV means K = inf, a NaN K
    'not given'.  Given as a DataFrame, that NaN is refused, never guessed."""
    rows = [{"seed": "a", "iteration": 0, "K": 1000, "icl_acc": 0.5}, {"seed": "b", "iteration": 0, "K": math.nan,
                                                                        "icl_acc": 0.5}]
    for src in (StandInFrame(_columns(rows)), rows):
        with pytest.raises(ParameterError) as e:
            read_table(src)
        assert e.value.name == "K" and "row 1" in str(e.value) and "fillna(float('inf'))" in str(e.value)
    if pandas is not None:
        (tmp_path / "k.csv").write_text("seed,iteration,K,icl_acc\na,0,1000,0.5\nb,0,,0.5\n")
        assert read_table(tmp_path / "k.csv")["K"] == [1000.0, math.inf]
        df = pandas.read_csv(tmp_path / "k.csv")
        with pytest.raises(ParameterError, match="ambiguous"):
            read_table(df)
        df["K"] = df["K"].fillna(float("inf"))
        assert read_table(df)["K"] == [1000.0, math.inf]


def test_shapes_of_tables_in_memory_are_checked():
    def refused(src, name, *words):
        with pytest.raises(ParameterError) as e:
            read_table(src)
        assert e.value.name == name and all(w in str(e.value) for w in words), str(e.value)

    refused({"seed": ["a", "b"], "iteration": [0]}, "iteration", "as many values as column seed (2)")
    refused({"seed": "a", "iteration": [0]}, "seed", "a list (or array) of values")
    refused([{"seed": "a", "iteration": 0}, {"seed": "a", "iteration": 1, "icl_ac": 0.5}], "runs",
            "same keys as row 0", "adds icl_ac")
    refused([{"seed": "a", "iteration": 0}, {"seed": "a"}], "runs", "lacks iteration")
    refused({"iteration": [0]}, "runs", "required columns", "missing: seed")
    refused({"seed": [], "iteration": []}, "runs", "at least one row")
    refused(StandInFrame({"seed": ["a"], "iteration": [0], 3: [1]}), "runs", "column names are text")
    refused(42, "runs", "a pandas DataFrame, a list of row dicts or a dict of columns")
    refused(None, "runs", "a CSV file's path")
    with pytest.raises(ParameterError, match="given twice"):
        read_tables([ROWS, ROWS])
    with pytest.raises(ParameterError) as e:
        read_tables([])
    assert e.value.name == "runs"


def test_a_stand_in_frame_does_not_import_pandas():
    code = ("import sys\nsys.path.insert(0, 'tests')\nfrom test_tables_any_source import StandInFrame, ROWS, "
            "_columns\nsys.modules.pop('pandas', None)\nimport icl_kinetics.validate.schema as s\n"
            "t = s.read_table(StandInFrame(_columns(ROWS)))\nassert len(t['seed']) == 3\n"
            "assert 'pandas' not in sys.modules, 'read_table imported pandas'\n")
    # the test module imports pandas where installed: make the child unable to see it
    code = "import sys\nsys.modules['pandas'] = None\n" + code.replace("sys.modules.pop('pandas', None)\n", "") \
        .replace("'pandas' not in sys.modules", "sys.modules.get('pandas') is None")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# -- column_map, iterations_per_epoch, K = -1 ---------------------------------------------
def test_column_map_renames_before_the_checks(tmp_path):
    theirs = [{"step": r["iteration"], "seed": r["seed"], "icl_val_acc": r["icl_acc"], "K": r["K"]} for r in ROWS]
    ours = [{"iteration": r["iteration"], "seed": r["seed"], "icl_acc": r["icl_acc"], "K": r["K"]} for r in ROWS]
    ref = read_table(_write(tmp_path / "ours.csv", ours))
    m = {"step": "iteration", "icl_val_acc": "icl_acc"}
    t = read_table(_write(tmp_path / "theirs.csv", theirs), column_map=m)
    assert sorted(t) == sorted(ref) and all(t[k] == ref[k] for k in ref)
    t2 = read_table(theirs, column_map=m)
    assert all(t2[k] == ref[k] for k in ref)
    # a bad value is named by the schema's column, and the column it was read from
    bad = [dict(r) for r in theirs]
    bad[1]["icl_val_acc"] = 1.5
    with pytest.raises(ParameterError) as e:
        read_table(bad, column_map=m)
    assert e.value.name == "icl_acc" and "read from column icl_val_acc" in str(e.value)


@pytest.mark.parametrize("column_map,words", [
    ({"nope": "icl_acc"}, ["nope", "a column of the table"]),
    ({"step": "iteration", "icl_val_acc": "iteration"}, ["step and icl_val_acc", "onto iteration"]),
    ({"icl_val_acc": "seed"}, ["seed is one"]),
    ({"step": ""}, ["non-empty"]),
    (["step", "iteration"], ["a dict"]),
])
def test_a_bad_column_map_is_refused_naming_it(column_map, words):
    theirs = [{"step": 0, "seed": "a", "icl_val_acc": 0.5}]
    with pytest.raises(ParameterError) as e:
        read_table(theirs, column_map=column_map)
    assert e.value.name == "column_map" and all(w in str(e.value) for w in words), str(e.value)


def test_iterations_per_epoch_converts_an_epoch_column(tmp_path):
    rows = [{"seed": "a", "epoch": e, "icl_acc": 0.5} for e in (0, 0.5, 1.25, 3, 0.125)]
    p = _write(tmp_path / "epochs.csv", rows)
    for src in (p, rows, StandInFrame(_columns(rows))):
        t = read_table(src, iterations_per_epoch=4)
        assert "epoch" not in t and t["iteration"] == [0.0, 2.0, 5.0, 12.0, 1.0]  # 0.5 rounds up
    # with a column map ("ep" -> "epoch") too
    t = read_table([{"seed": "a", "ep": 2, "icl_acc": 0.5}], column_map={"ep": "epoch"}, iterations_per_epoch=469)
    assert t["iteration"] == [938.0]
    # without the option, the refusal says how to convert
    with pytest.raises(ParameterError) as e:
        read_table(p)
    assert e.value.name == "runs" and "iterations_per_epoch" in str(e.value)
    assert "--iterations-per-epoch" in str(e.value)
    with pytest.raises(ParameterError, match="not both"):
        read_table([{"seed": "a", "epoch": 1, "iteration": 4}], iterations_per_epoch=4)
    with pytest.raises(ParameterError, match="'epoch' column"):
        read_table([{"seed": "a", "iteration": 4}], iterations_per_epoch=4)
    with pytest.raises(ParameterError) as e:
        read_table([{"seed": "a", "epoch": -1}], iterations_per_epoch=4)
    assert e.value.name == "epoch" and ">= 0" in str(e.value)
    for bad in (0, -3, 1.5, True, "4"):
        with pytest.raises(ParameterError) as e:
            read_table(rows, iterations_per_epoch=bad)
        assert e.value.name == "iterations_per_epoch"


def test_k_minus_one_is_read_as_inf_only_when_asked(tmp_path):
    rows = [{"seed": "a", "iteration": 0, "K": -1, "icl_acc": 0.5}, {"seed": "b", "iteration": 0, "K": 500,
                                                                      "icl_acc": 0.5}]
    p = _write(tmp_path / "paper.csv", rows)
    for src in (p, rows, StandInFrame(_columns(rows))):
        with pytest.raises(ParameterError) as e:
            read_table(src)
        msg = str(e.value)
        assert e.value.name == "K" and "--k-minus-one-is-inf" in msg and "k_minus_one_is_inf=True" in msg, msg
        assert read_table(src, k_minus_one_is_inf=True)["K"] == [math.inf, 500.0]
        assert read_tables([src], k_minus_one_is_inf=True)["K"] == [math.inf, 500.0]
    (tmp_path / "f.csv").write_text("seed,iteration,K\na,0,-1.0\n")
    assert read_table(tmp_path / "f.csv", k_minus_one_is_inf=True)["K"] == [math.inf]
    for k in (1, 0, -2, -0.5, "-inf"):  # any other K < 2 is refused, with the option or without
        for opt in (False, True):
            with pytest.raises(ParameterError) as e:
                read_table([{"seed": "a", "iteration": 0, "K": k}], k_minus_one_is_inf=opt)
            assert e.value.name == "K" and ">= 2" in str(e.value) and "k-minus-one" not in str(e.value)
    with pytest.raises(ParameterError) as e:
        read_table(rows, k_minus_one_is_inf="yes")
    assert e.value.name == "k_minus_one_is_inf"


def test_the_decay_floor_is_the_stated_constant():
    assert WD_ATTN_FLOOR == 1e-8 and 1e-10 <= WD_ATTN_FLOOR  # the paper's "effectively zero" is below it


def test_a_dataframe_and_a_list_of_dicts_give_the_report_the_csv_gives(tmp_path):
    from validate_tables import cols, kstar_table, mlp_table, write_csv

    from icl_kinetics.validate import validate_runs

    mlp, ks = mlp_table(nu=0.5, T=40_000, every=400), kstar_table(slope=2.0)
    paths = [write_csv(tmp_path / "mlp.csv", mlp), write_csv(tmp_path / "ks.csv", ks)]
    rows = [[dict(zip(t, v)) for v in zip(*t.values())] for t in (mlp, ks)]

    def report(src):
        verdicts, skipped = validate_runs(src)
        return [(v.prediction, v.verdict, json.dumps(v.measured, default=str), json.dumps(v.predicted, default=str))
                for v in verdicts], skipped

    ref = report(paths)
    assert any(v[1] == "holds" for v in ref[0])  # the reference report checks something
    kinds = {"rows": rows, "stand-in frames": [StandInFrame(t) for t in (mlp, ks)]}
    if pandas is not None:
        kinds["pandas"] = [pandas.DataFrame(t) for t in (mlp, ks)]
    for what, src in kinds.items():
        assert report(src) == ref, what


# -- train writes the schema; an old sweep still collects -----------------------------------
TINY = dict(model="transformer", N=9, D=12, width=16, batch_size=16, eval_size=64, iterations=40, eval_every=20,
            lr=0.1, early_stop=None, checkpoint_every=40, workers=1)


def test_train_writes_metrics_with_the_grid_columns_that_collect_writes(tmp_path):
    pytest.importorskip("torch")
    from icl_kinetics.simulate.engine import METRIC_COLUMNS, TrainConfig
    from icl_kinetics.simulate.sweeps import COLLECT_COLUMNS, GRID_COLUMNS, SweepStore, grid, run_id, run_sweep

    spec = grid("g", "small", TrainConfig(**TINY), {"K": [None, 40]}, seeds=2, seeds_per_run=2)
    d = tmp_path / "sweep"
    run_sweep(spec, d, progress=False, processes=1)
    store = SweepStore(d)
    c = store.collect()
    assert c.ok and len(c.included) == 2
    with open(c.path, newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == COLLECT_COLUMNS  # no grid column twice
    collected = list(csv.DictReader(open(c.path, newline="")))
    for r in spec.runs:
        m = store.run_dir(r.id) / "metrics.csv"
        with open(m, newline="") as f:
            rows = list(csv.DictReader(f))
            assert tuple(rows[0]) == ("run_id",) + GRID_COLUMNS + METRIC_COLUMNS
        mine = [x for x in collected if x["run_id"] == r.id]
        assert len(mine) == len(rows) > 0
        for a, b in zip(rows, mine):  # the same cells, written the same way (K = inf as 'inf')
            assert all(a[k] == b[k] for k in a), [(k, a[k], b[k]) for k in a if a[k] != b[k]]
        assert rows[0]["run_id"] == run_id(r.config) and rows[0]["K"] == ("inf" if r.config.K is None else "40")
        # read by the schema: the grid columns are typed, K = inf for fresh items
        t = read_table(m)
        assert set(t["run_id"]) == {r.id} and t["model"][0] == "transformer" and t["N"][0] == 9.0
        assert t["K"][0] == (math.inf if r.config.K is None else 40.0) and t["lr"][0] == 0.1
        assert t["wd_attn"][0] == 0.0 and t["contexts"][0] == "iid"


def test_train_then_validate_needs_no_stitching(tmp_path, cli):
    pytest.importorskip("torch")
    code, out, err = cli(["train", "--model", "transformer", "--N", "9", "--D", "12", "--width", "16", "--K", "40",
                          "--iterations", "40", "--eval-every", "20", "--batch-size", "16", "--eval-size", "64",
                          "--seeds", "2", "--out", str(tmp_path / "t")])
    assert code == 0, err
    t = read_table(tmp_path / "t" / "metrics.csv")
    assert {"model", "N", "K", "lr", "wd_attn", "contexts", "run_id"} <= set(t)
    code, out, err = cli(["validate", "--runs", str(tmp_path / "t" / "metrics.csv"), "--out", str(tmp_path / "r")])
    assert code == 0, err
    assert (tmp_path / "r" / "report.md").is_file()


def test_a_sweep_stored_before_the_grid_columns_still_verifies_and_collects(tmp_path):
    """A run finished by the earlier version has a metrics.csv of METRIC_COLUMNS only, and a
    status recording that file's SHA-256 (or, older still, no record at all)."""
    pytest.importorskip("torch")
    from icl_kinetics.simulate.engine import METRIC_COLUMNS, TrainConfig
    from icl_kinetics.simulate.sweeps import SweepStore, grid, run_sweep
    from icl_kinetics.simulate.sweeps.store import check_metrics_csv, metrics_record

    spec = grid("g", "small", TrainConfig(**TINY), {"K": [None, 40]}, seeds=2, seeds_per_run=2)
    d = tmp_path / "sweep"
    run_sweep(spec, d, progress=False, processes=1)
    store = SweepStore(d)
    new = list(csv.DictReader(open(store.collect(tmp_path / "new.csv").path, newline="")))
    old_rid, bare_rid = spec.runs[0].id, spec.runs[1].id
    for rid in (old_rid, bare_rid):  # rewrite as the earlier version wrote it
        m = store.run_dir(rid) / "metrics.csv"
        rows = list(csv.DictReader(open(m, newline="")))
        with open(m, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        st = json.loads((store.run_dir(rid) / "status.json").read_text())
        if rid == old_rid:
            st["metrics"] = metrics_record(m)
        else:
            st.pop("metrics")
        (store.run_dir(rid) / "status.json").write_text(json.dumps(st))
        assert check_metrics_csv(m, 20, 40) == ""
    store = SweepStore(d)
    assert {rid: store.read_status(rid)["status"] for rid in store.runs} == {old_rid: "done", bare_rid: "done"}
    c = store.collect(tmp_path / "old.csv")
    assert c.ok and len(c.included) == 2
    assert list(csv.DictReader(open(c.path, newline=""))) == new  # the same table, byte for byte in its cells
    # and a new-format file with no record is checked by its shape as well
    for rid in store.runs:
        m = store.run_dir(rid) / "metrics.csv"
        assert check_metrics_csv(m, 20, 40) == ""


def test_a_list_cell_in_the_first_row_is_named_not_taken_for_a_list_of_tables():
    rows = [dict(r) for r in ROWS]
    rows[0]["icl_acc"] = [0.5, 0.6]
    with pytest.raises(ParameterError) as e:
        read_table(rows)
    assert e.value.name == "icl_acc" and "row 0" in str(e.value) and "one number or text per cell" in str(e.value)


def test_a_table_already_read_is_taken_as_it_is(tmp_path):
    """read_tables fills K with NaN ("not given") for a table without a K column; the stacked
    table given again (as validate --runs does) is not refused for that NaN."""
    with_k = _write(tmp_path / "k.csv", ROWS)
    no_k = _write(tmp_path / "nok.csv", [{k: v for k, v in r.items() if k != "K"} for r in ROWS])
    t = read_tables([with_k, no_k])
    assert math.isnan(t["K"][-1]) and t["K"][0] == 1000.0
    _same(read_tables(t), t)
    _same(read_table(t), t)
    assert read_table(t) is not t  # a copy
    # with options, read again by its cells: the NaN K stays "not given"
    _same(read_table(t, column_map={"note": "remark"}), {("remark" if k == "note" else k): v for k, v in t.items()})
    # a plain dict of the same columns is a table in memory: its NaN K is refused
    with pytest.raises(ParameterError, match="ambiguous"):
        read_table(dict(t))


def test_report_title_names_few_files_and_counts_many(tmp_path):
    from icl_kinetics.validate.report import source_names

    few = [tmp_path / "a.csv", tmp_path / "b.csv"]
    assert source_names(few) == f"{few[0]}, {few[1]}"
    many = [tmp_path / "t" / f"run{i}.csv" for i in range(5)] + [tmp_path / "u" / "x.csv"]
    assert source_names(many) == f"6 tables in {tmp_path}"


def test_cli_names_map_and_iterations_per_epoch_by_their_flags(tmp_path, cli):
    """The CLI's one-line errors name the options as typed: --map (not the API's column_map)
    and --iterations-per-epoch."""
    path = _write(tmp_path / "runs.csv", ROWS)
    argv = ["validate", "--runs", str(path), "--out", str(tmp_path / "o"), "--plan"]
    code, _, err = cli(argv + ["--map", "nosuch=icl_acc"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "argument --map: map='nosuch' is not allowed: map must be a column of the table" in err, err
    assert "column_map" not in err
    code, _, err = cli(argv + ["--iterations-per-epoch", "0"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "argument --iterations-per-epoch: iterations-per-epoch must be" in err, err
    assert "iterations_per_epoch" not in err
