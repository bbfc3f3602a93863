"""Files given to `validate --runs` (and folders given to `validate --sweeps`) are
untrusted input: every bad one is refused before anything is computed, with a
ParameterError naming the file (and, for a bad value, its column, line and value) at the
API, and through the command line with exit code 2 and one line, never a traceback.

Each case is a file (or folder) made in tmp_path and the text the refusal must name.
"""

import gzip
import io
import math
import re
import zipfile

import numpy as np
import pytest

from icl_kinetics.errors import ParameterError, describe
from icl_kinetics.validate.report import run_validation, validate_runs
from icl_kinetics.validate.schema import read_table, read_tables

HEAD = "seed,iteration,N,K,icl_acc\n"
OK_ROW = "a,0,19,inf,0.5\n"


def _zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("sheet.csv", HEAD + OK_ROW)
    return buf.getvalue()


def _random_bytes():
    rng = np.random.default_rng(0)
    while True:  # random bytes that do not happen to start like a known file type
        b = rng.bytes(4096)
        if b[:1] not in (b"\x89", b"\x1f", b"P", b"%", b"\x93", b"\xff", b"\xfe"):
            return b


def _cell(column, value, line=3):
    """A table whose row at ``line`` (1-based, header = 1) has ``value`` in ``column``."""
    cols = ["seed", "iteration", "N", "K", "icl_acc", "iwl_acc", "lr", "wd_attn", "train_loss", "c1", "contexts"]
    good = {"seed": "a", "iteration": "0", "N": "19", "K": "inf", "icl_acc": "0.5", "iwl_acc": "0.5", "lr": "0.01",
            "wd_attn": "0", "train_loss": "0.7", "c1": "0.4", "contexts": "iid"}
    rows = [",".join(cols)]
    for i in range(2, 5):
        row = dict(good, iteration=str(10 * i))
        if i == line:
            row[column] = value
        rows.append(",".join(row[c] for c in cols))
    return ("\n".join(rows) + "\n").encode()


# (case id, file bytes, substrings the one-line refusal must contain besides the path)
FILE_CASES = [
    ("truncated mid-line", (HEAD + OK_ROW + "a,10,19").encode(), ["line 3", "3 fields", "truncated"]),
    ("short row", (HEAD + "a,0,19\n" + OK_ROW).encode(), ["line 2", "3 fields, the header has 5"]),
    ("too many fields", (HEAD + "a,0,19,inf,0.5,7\n").encode(), ["line 2", "6 fields, the header has 5"]),
    ("trailing comma", (HEAD + "a,0,19,inf,0.5,\n").encode(), ["line 2", "trailing commas"]),
    ("random bytes", _random_bytes(), ["UTF-8 text"]),
    ("a PNG image", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), ["PNG image"]),
    ("a gzip file", gzip.compress((HEAD + OK_ROW).encode()), ["gzip"]),
    ("a ZIP (xlsx) file", _zip_bytes(), ["ZIP archive"]),
    ("latin-1 text", (HEAD + "sé,0,19,inf,0.5\n").encode("latin-1"), ["byte 0xe9 at line 2", "UTF-8"]),
    ("UTF-16 text", (HEAD + OK_ROW).encode("utf-16"), ["UTF-16"]),
    ("a NUL byte", (HEAD + "a\x00,0,19,inf,0.5\n").encode(), ["NUL byte at line 2"]),
    ("a control character", (HEAD + "a\x01,0,19,inf,0.5\n").encode(), ["control character 0x01 at line 2"]),
    ("empty file", b"", ["empty"]),
    ("blank lines only", b"\n \n\r\n", ["empty"]),
    ("header only", HEAD.encode(), ["header only"]),
    ("no seed column", b"iteration,icl_acc\n0,0.5\n", ["missing: seed"]),
    ("no iteration column", b"seed,icl_acc\na,0.5\n", ["missing: iteration"]),
    ("duplicate column", b"seed,iteration,icl_acc,icl_acc\na,0,0.5,0.6\n", ["'icl_acc' more than once"]),
    ("unnamed column", b"seed,,iteration\na,1,0\n", ["column 2 of the header has no name"]),
    ("quote never closed", (HEAD + 'a,0,19,inf,"0.5\n').encode(), ["never closed"]),
    ("a field over the csv limit", (HEAD + "a" * 200_000 + ",0,19,inf,0.5\n").encode(), ["line 2", "field larger"]),
]

# (case id, column, value, what the rule must say): a bad value in line 3
CELL_CASES = [
    ("K = -1 (the paper's K = inf)", "K", "-1", "K = -1 for K = inf"),
    ("K = 1", "K", "1", ">= 2"),
    ("K = 0", "K", "0", ">= 2"),
    ("K = -inf", "K", "-inf", ">= 2"),
    ("K not a number", "K", "many", ">= 2"),
    ("negative iteration", "iteration", "-5", "whole number >= 0"),
    ("infinite iteration", "iteration", "inf", "whole number >= 0"),
    ("NaN iteration", "iteration", "nan", "every row needs one"),
    ("empty iteration", "iteration", "", "every row needs one"),
    ("fractional iteration", "iteration", "10.5", "whole number"),
    ("accuracy in percent", "icl_acc", "97", "not a percentage"),
    ("negative accuracy", "icl_acc", "-0.1", "not a percentage"),
    ("infinite accuracy", "icl_acc", "inf", "[0, 1]"),
    ("IWL accuracy in percent", "iwl_acc", "88.5", "not a percentage"),
    ("N = 0", "N", "0", "whole number >= 1"),
    ("fractional N", "N", "9.5", "whole number >= 1"),
    ("lr = 0", "lr", "0", "> 0"),
    ("negative lr", "lr", "-0.01", "> 0"),
    ("negative weight decay", "wd_attn", "-1e-4", ">= 0"),
    ("negative loss", "train_loss", "-0.3", ">= 0"),
    ("c1 above 1", "c1", "1.5", "[0, 1]"),
    ("contexts misspelled", "contexts", "equalised", "'iid' or 'equalized'"),
    ("empty seed", "seed", "", "non-empty"),
    ("blank seed", "seed", "  ", "non-empty"),
]


def _one_line_exit_2(cli, argv, *names):
    code, out, err = cli(argv)
    assert code == 2, (argv, code, out, err)
    assert len(err.strip().splitlines()) == 1 and err.endswith("\n"), err
    assert "Traceback" not in err + out, err
    for n in names:
        assert n in err, (n, err)
    return err


@pytest.mark.parametrize("case,data,expect", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_bad_file_is_refused_naming_it(tmp_path, cli, case, data, expect):
    path = tmp_path / "runs.csv"
    path.write_bytes(data)
    for read in (read_table, read_tables, validate_runs):
        with pytest.raises(ParameterError) as e:
            read(path)
        msg = str(e.value)
        assert e.value.name == "runs" and str(path) in msg, msg
        assert all(x in msg for x in expect), (expect, msg)
        assert "\n" not in msg
    with pytest.raises(ParameterError):
        run_validation(runs=[path], out=tmp_path / "report")
    assert not (tmp_path / "report").exists()  # refused before anything was written
    _one_line_exit_2(cli, ["validate", "--runs", str(path), "--out", str(tmp_path / "report")], str(path), *expect)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("case,column,value,rule", CELL_CASES, ids=[c[0] for c in CELL_CASES])
def test_a_bad_value_is_refused_naming_file_column_line_and_value(tmp_path, cli, case, column, value, rule):
    path = tmp_path / "runs.csv"
    path.write_bytes(_cell(column, value, line=3))
    with pytest.raises(ParameterError) as e:
        read_tables([path])
    msg = str(e.value)
    assert e.value.name == column and e.value.value == value
    for x in (str(path), "line 3", f"column {column}", describe(value), rule):
        assert x in msg, (x, msg)
    _one_line_exit_2(cli, ["validate", "--runs", str(path), "--out", str(tmp_path / "o")],
                     str(path), "line 3", f"column {column}", rule)
    # the same value elsewhere in the file is named at its own line
    path.write_bytes(_cell(column, value, line=4))
    with pytest.raises(ParameterError, match="line 4"):
        validate_runs(path)


def test_paths_that_are_not_files(tmp_path, cli):
    d = tmp_path / "adir"
    d.mkdir()
    good = tmp_path / "good.csv"
    good.write_text(HEAD + OK_ROW)
    cases = [([d], str(d), "not a folder"),
             ([tmp_path / "missing.csv"], str(tmp_path / "missing.csv"), "an existing CSV file"),
             ([good, good], str(good), "given once"),  # the same runs would count twice
             ([good, tmp_path / "x" / ".." / "good.csv"], "good.csv", "given once")]
    for paths, named, why in cases:
        with pytest.raises(ParameterError) as e:
            read_tables(paths)
        assert e.value.name == "runs" and named in str(e.value) and why in str(e.value), str(e.value)
        _one_line_exit_2(cli, ["validate", "--runs", *map(str, paths), "--out", str(tmp_path / "o")], named, why)


def test_the_bad_file_among_several_is_the_one_named(tmp_path, cli):
    good = tmp_path / "good.csv"
    good.write_text(HEAD + OK_ROW)
    bad = tmp_path / "bad.csv"
    bad.write_text(HEAD + "b,0,19,-1,0.5\n")
    with pytest.raises(ParameterError) as e:
        read_tables([good, bad])
    assert str(bad) in str(e.value) and str(good) not in str(e.value)
    _one_line_exit_2(cli, ["validate", "--runs", str(good), str(bad), "--out", str(tmp_path / "o")], str(bad), "K")


def test_values_that_are_fine_stay_fine(tmp_path):
    """The edges of every rule, a byte-order mark, CRLF line ends, blank lines, padded
    header names and quoted fields are read, with the values the schema gives them."""
    text = ("\ufeff seed , iteration,N,K,icl_acc,iwl_acc,lr,wd_attn,train_loss,c1,c3,w,contexts,model\r\n"
            "a,0,1,2,0,1,1e-3,0,0,0,0,-inf,iid,mlp\r\n"
            "\r\n"
            '"b",1000.0,19,inf,1,0.97,0.5,0.0,inf,1,inf,3.5,equalized,"transformer, 2 layers"\r\n'
            "c,20,,,,,,,,,,,,\r\n"
            "d,30,19,nan,NaN,None,null,,,,,,,\r\n"
            "e,40,19,1448.2,0.5,0.5,0.1,1e-4,0.69,0.3,2.0,0.1, iid ,\r\n")
    path = tmp_path / "fine.csv"
    path.write_bytes(text.encode("utf-8"))
    t = read_table(path)
    assert t["seed"] == ["a", "b", "c", "d", "e"]
    assert t["iteration"] == [0.0, 1000.0, 20.0, 30.0, 40.0]
    assert t["K"][0] == 2.0 and t["K"][1] == math.inf and t["K"][2] == math.inf  # empty K = fresh items
    assert math.isnan(t["K"][3]) and t["K"][4] == 1448.2  # nan = not given; K need not be whole
    assert t["icl_acc"][:2] == [0.0, 1.0] and t["iwl_acc"][1] == 0.97
    assert all(math.isnan(v) for v in (t["icl_acc"][3], t["iwl_acc"][3], t["lr"][3]))
    assert t["train_loss"][1] == math.inf and t["w"][0] == -math.inf
    assert t["contexts"] == ["iid", "equalized", "", "", "iid"]
    assert t["model"][1] == "transformer, 2 layers"


# ------------------------------------------------------------------ --sweeps with --no-run
def _sweeps_cases(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    (other / "mysweep").mkdir(parents=True)
    (other / "mysweep" / "sweep.json").write_text("{}")  # a sweep, but not one of the preset's
    (other / "fig5").mkdir()  # a preset's name without its sweep.json
    afile = tmp_path / "afile"
    afile.write_text("x")
    return [(tmp_path / "nonexistent", False, "an existing folder"), (empty, False, "holds none"),
            (other, False, "holds none"), (afile, False, "this is a file"), (afile, True, "this is a file")]


def test_validate_no_run_refuses_sweeps_that_hold_nothing_to_check(tmp_path, cli):
    for sweeps, run, why in _sweeps_cases(tmp_path):
        with pytest.raises(ParameterError) as e:
            run_validation(preset="small", sweeps=sweeps, out=tmp_path / "report", run=run, progress=False)
        assert e.value.name == "sweeps" and str(sweeps) in str(e.value) and why in str(e.value), str(e.value)
        argv = ["validate", "--preset", "small", "--sweeps", str(sweeps), "--out", str(tmp_path / "report")]
        _one_line_exit_2(cli, argv + ([] if run else ["--no-run"]), "sweeps", str(sweeps), why)
        assert not (tmp_path / "report").exists()
    with pytest.raises(ParameterError, match="preset"):
        run_validation(preset="huge", sweeps=tmp_path, run=False)


def test_validate_no_run_accepts_a_folder_with_one_preset_sweep(tmp_path):
    """The refusal is about an empty folder, not a partial one: a folder holding only
    rung 1's summary is read (every other check is reported as skipped)."""
    d = tmp_path / "sweeps" / "rung1"
    d.mkdir(parents=True)
    (d / "summary.json").write_text('{"N": [1], "beta0": [0.0], "seeds": 1, "lr": 0.5, "rows": []}')
    r = run_validation(preset="small", sweeps=tmp_path / "sweeps", out=tmp_path / "report", run=False,
                       progress=False)
    assert r["verdicts"] and all(v["verdict"] == "skipped" for v in r["verdicts"])
    assert (tmp_path / "report" / "report.md").is_file()


def test_validate_refuses_an_output_folder_it_cannot_write_before_reading_anything(tmp_path, cli):
    good = tmp_path / "good.csv"
    good.write_text(HEAD + OK_ROW)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(ParameterError) as e:
        run_validation(runs=good, out=blocker)
    assert e.value.name == "out" and str(blocker) in str(e.value)
    _one_line_exit_2(cli, ["validate", "--runs", str(good), "--out", str(blocker)], "out", str(blocker))


# ------------------------------------------------------------------ compare
def test_compare_refuses_output_paths_before_computing(tmp_path, cli):
    from icl_kinetics.validate.compare import compare_minimal_onset

    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    for kw, name in (({"out": blocker}, "out"), ({"out": tmp_path / "o", "plot": tmp_path / "fig.txt"}, "plot"),
                     ({"out": tmp_path / "o", "plot": blocker / "fig.png"}, "plot")):
        with pytest.raises(ParameterError) as e:
            compare_minimal_onset(Ns=[10], beta0s=[0.0], seeds=1, progress=False, **kw)
        assert e.value.name == name, str(e.value)
    assert not (tmp_path / "o" / "summary.json").exists()
    _one_line_exit_2(cli, ["compare", "--N", "10", "--seeds", "1", "--out", str(blocker)], "out", str(blocker))


def test_compare_theory_below_the_evaluation_grid_has_no_relative_error(tmp_path, cli):
    """N = 10, beta0 = 3: beta0 is past the ICL threshold, the theory's t_ICL is ~0 (the
    full flow's exactly 0), so a relative error is undefined (it divided by zero): the
    row keeps both numbers and says why, and the command exits 0."""
    import json

    from icl_kinetics.validate.compare import relative_error

    code, out, err = cli(["compare", "--N", "10", "--beta0", "3", "--seeds", "1", "--out", str(tmp_path / "c"),
                          "--json"])
    assert code == 0 and "Traceback" not in err, err
    (row,) = json.loads(out)["rows"]
    assert row["theory_exact"] < 10 and row["theory_full_flow"] == 0.0
    assert row["median_t_icl"] == 10  # acquired at the first evaluation after iteration 0
    assert row["rel_err_exact"] is None and row["rel_err_full_flow"] is None
    assert "below the evaluation grid" in row["note"]
    assert "below the evaluation grid" in (tmp_path / "c" / "table.md").read_text()
    # where the prediction is resolved, the error is the plain ratio
    assert relative_error(400, 250.0, 10) == (400 / 250.0 - 1, "")
    for predicted in (0.0, 9.99, None, math.inf, math.nan):
        assert relative_error(400, predicted, 10)[0] is None
    assert relative_error(None, 250.0, 10) == (None, "")


def test_compare_reports_diverged_seeds_and_leaves_them_out_of_the_median(tmp_path):
    from icl_kinetics.validate.compare import compare_minimal_onset

    r = compare_minimal_onset(Ns=[10], beta0s=[0.0], seeds=2, lr=1e30, out=tmp_path / "c", progress=False)
    (row,) = r["rows"]
    assert row["diverged"] == 2 and row["acquired"] == 0 and row["median_t_icl"] is None
    assert "2 of 2 seeds diverged" in row["note"]
    seeds = (tmp_path / "c" / "seeds.csv").read_text().splitlines()
    assert seeds[0].endswith(",status") and all(s.endswith(",diverged") for s in seeds[1:])
    assert re.search(r"0/2 \(2 diverged\)", (tmp_path / "c" / "table.md").read_text())


def test_compare_refuses_a_run_that_cannot_fit_before_training_any(tmp_path, monkeypatch, cli):
    """A tiny lr implies an iteration cap whose history cannot fit: refused naming lr (the
    cap is not the user's), before any N is trained or any table written."""
    from icl_kinetics import resources
    from icl_kinetics.validate.compare import compare_minimal_onset

    # beta0 = 3 keeps the theory quick; lr = 1e-12 makes its cap ~6e5 iterations, whose
    # history (~17 MB) cannot fit in the 8 MB this machine is made to have
    monkeypatch.setattr(resources, "available_memory", lambda: 8 << 20)
    with pytest.raises(ParameterError) as e:
        compare_minimal_onset(Ns=[10, 20], beta0s=[3.0], seeds=2, lr=1e-12, out=tmp_path / "c", progress=False)
    assert e.value.name == "lr" and "N = 10" in str(e.value) and "memory" in str(e.value)
    assert not (tmp_path / "c" / "summary.csv").exists()
    _one_line_exit_2(cli, ["compare", "--N", "10", "--beta0", "3", "--seeds", "2", "--lr", "1e-12", "--out",
                           str(tmp_path / "d")], "lr", "memory")


def test_a_table_too_large_to_read_is_refused_before_reading(tmp_path, monkeypatch, cli):
    from icl_kinetics import resources

    path = tmp_path / "big.csv"
    path.write_text(HEAD + OK_ROW * 1000)
    monkeypatch.setattr(resources, "available_memory", lambda: 100_000)  # bytes
    with pytest.raises(ParameterError) as e:
        read_table(path)
    assert e.value.name == "runs" and str(path) in str(e.value) and "memory" in str(e.value)
    _one_line_exit_2(cli, ["validate", "--runs", str(path), "--out", str(tmp_path / "o")], str(path), "memory")


def test_a_pipe_is_not_a_table(tmp_path, cli):
    import os

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ParameterError, match="regular CSV file"):
        read_table(fifo)
    _one_line_exit_2(cli, ["validate", "--runs", str(fifo), "--out", str(tmp_path / "o")], str(fifo), "regular")


def test_a_long_path_is_named_whole(tmp_path, cli):
    """The message's value is cut at 80 characters; the file is still named in full."""
    d = tmp_path / ("a_folder_with_a_long_name_" * 4)
    d.mkdir()
    path = d / "runs_of_a_long_experiment_name.csv"
    path.write_text(HEAD)
    assert len(str(path)) > 100
    with pytest.raises(ParameterError) as e:
        read_table(path)
    assert str(path) in str(e.value) and "header only" in str(e.value)
    _one_line_exit_2(cli, ["validate", "--runs", str(path), "--out", str(tmp_path / "o")], str(path))
    with pytest.raises(ParameterError) as e:
        run_validation(preset="small", sweeps=d / "sweeps", run=False)
    assert str(d / "sweeps") in str(e.value)


# ----------------------------------------------------------------------------- gzip-compressed tables
def test_a_gzip_table_named_gz_reads_as_its_csv(tmp_path):
    text = HEAD + OK_ROW + "b,10,19,inf,0.75\n"
    plain, packed = tmp_path / "runs.csv", tmp_path / "runs.csv.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    assert read_table(packed) == read_table(plain)


GZ_CASES = [
    ("truncated stream", lambda b: b[: len(b) // 2], ["ends early"]),
    ("flipped byte in the deflate data", lambda b: b[:12] + bytes([b[12] ^ 0xFF]) + b[13:], ["gzip"]),
    ("not gzip at all", lambda b: (HEAD + OK_ROW).encode(), ["gzip"]),
    ("a second stream after the first", lambda b: b + b, ["bytes follow the end of the stream"]),
]


@pytest.mark.parametrize("case,damage,expect", GZ_CASES, ids=[c[0] for c in GZ_CASES])
def test_a_damaged_gzip_table_is_refused_naming_it(tmp_path, case, damage, expect):
    path = tmp_path / "runs.csv.gz"
    path.write_bytes(damage(gzip.compress((HEAD + OK_ROW * 50).encode())))
    with pytest.raises(ParameterError) as e:
        read_table(path)
    msg = str(e.value)
    assert e.value.name == "runs" and str(path) in msg and "\n" not in msg, msg
    assert all(x in msg for x in expect), (expect, msg)


def test_a_gzip_bomb_is_refused_before_it_is_expanded(tmp_path, monkeypatch):
    import icl_kinetics.resources as res

    path = tmp_path / "runs.csv.gz"
    path.write_bytes(gzip.compress((HEAD + OK_ROW * 200_000).encode()))  # 3 MB of text in ~10 kB
    monkeypatch.setattr(res, "available_memory", lambda: 12 * 2**20)  # room for 1 MiB of text
    with pytest.raises(ParameterError) as e:
        read_table(path)
    assert "expands to more than 1 MiB" in str(e.value), str(e.value)
