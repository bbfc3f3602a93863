"""RunLogger: rows read back by read_table exactly as logged, bad values refused by the
metric's name, and crash safety (a killed writer leaves whole rows; a torn last line is cut
when the file is opened again; a file that is not a RunLogger table is never touched)."""

import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from icl_kinetics.errors import ParameterError
from icl_kinetics.validate import read_table
from icl_kinetics.validate.logger import GRID, RunLogger, metric_columns

GRID_ARGS = dict(run_id="my-run", seed=3, N=9, K=None, lr=0.05)


def _rows(table):
    n = len(table["seed"])
    return [{k: v[i] for k, v in table.items()} for i in range(n)]


def test_round_trip_through_read_table(tmp_path):
    path = tmp_path / "runs.csv"
    logged = [(0, dict(icl_acc=0.5, c1=0.5, train_loss=0.6931471805599453)),
              (100, dict(icl_acc=0.61, w=0.1 + 0.2, beta=-1e-7, icl_loss=math.inf)),
              (200, dict(icl_acc=0.97, iwl_acc=1.0, c2=None, c3=float("nan")))]
    with RunLogger(path, model="transformer", contexts="equalized", wd_attn=3e-3, **GRID_ARGS) as log:
        for it, m in logged:
            log.log(it, **m)
    rows = _rows(read_table(path))
    assert len(rows) == 3
    for r, (it, m) in zip(rows, logged):
        assert r["iteration"] == it and r["seed"] == "3" and r["run_id"] == "my-run"
        assert r["N"] == 9 and r["K"] == math.inf and r["lr"] == 0.05 and r["wd_attn"] == 3e-3
        assert r["model"] == "transformer" and r["contexts"] == "equalized"
        for k in metric_columns():
            v = m.get(k)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                assert math.isnan(r[k]), k  # not given
            else:
                assert r[k] == v, k  # bit for bit (repr of the float)
    # numpy and torch scalars are numbers too
    np = pytest.importorskip("numpy")
    with RunLogger(tmp_path / "b.csv", K=40, **{k: v for k, v in GRID_ARGS.items() if k != "K"}) as log:
        log.log(np.int64(5), icl_acc=np.float32(0.25), c1=np.float64(0.125))
    r = _rows(read_table(tmp_path / "b.csv"))[0]
    assert (r["iteration"], r["icl_acc"], r["c1"], r["K"]) == (5, 0.25, 0.125, 40)


@pytest.mark.parametrize("metrics, name, words", [
    (dict(icl_acc=93.0), "icl_acc", "not a percentage"),
    (dict(c1=1.5), "c1", "[0, 1]"),
    (dict(icl_loss=-0.1), "icl_loss", ">= 0"),
    (dict(accuracy=0.9), "accuracy", "icl_acc"),
    (dict(N=9), "N", "grid columns are given to RunLogger"),
    (dict(w="3.0"), "w", "a number"),
    (dict(beta=True), "beta", "a number"),
    (dict(), "metrics", "at least one metric"),
])
def test_bad_metrics_are_refused_by_name(tmp_path, metrics, name, words):
    with RunLogger(tmp_path / "r.csv", **GRID_ARGS) as log:
        log.log(0, icl_acc=0.5)
        with pytest.raises(ParameterError) as e:
            log.log(10, **metrics)
        assert e.value.name == name and words in str(e.value), str(e.value)
    assert len(read_table(tmp_path / "r.csv")["seed"]) == 1  # nothing of the refused row was written


@pytest.mark.parametrize("change, name, words", [
    (dict(K=-1), "K", "K = -1 means K = inf: pass None"),
    (dict(K=1), "K", ">= 2"),
    (dict(lr=0.0), "lr", "> 0"),
    (dict(N=0), "N", ">= 1"),
    (dict(N=9.5), "N", "an integer >= 1"),
    (dict(wd_attn=-1e-3), "wd_attn", ">= 0"),
    (dict(contexts="bursty"), "contexts", "'iid' or 'equalized'"),
    (dict(run_id=""), "run_id", "non-empty"),
    (dict(seed="a\nb"), "seed", "one line"),
])
def test_bad_grid_values_are_refused_by_name(tmp_path, change, name, words):
    with pytest.raises(ParameterError) as e:
        RunLogger(tmp_path / "r.csv", **{**GRID_ARGS, **change})
    assert e.value.name == name and words in str(e.value), str(e.value)


def test_iterations_must_increase_and_a_closed_logger_refuses(tmp_path):
    log = RunLogger(tmp_path / "r.csv", **GRID_ARGS)
    log.log(100, icl_acc=0.5)
    for bad in (100, 50, -1, 1.5, True):
        with pytest.raises(ParameterError) as e:
            log.log(bad, icl_acc=0.5)
        assert e.value.name == "iteration"
    log.close()
    log.close()
    with pytest.raises(ParameterError, match="closed"):
        log.log(200, icl_acc=0.5)
    with pytest.raises(ParameterError) as e:
        RunLogger(tmp_path / "r.csv.gz", **GRID_ARGS)
    assert e.value.name == "path"


def test_a_torn_last_line_is_cut_when_the_file_is_opened_again(tmp_path):
    path = tmp_path / "runs.csv"
    with RunLogger(path, **GRID_ARGS) as log:
        log.log(0, icl_acc=0.5)
        log.log(100, icl_acc=0.75)
    whole = path.read_bytes()
    with open(path, "ab") as f:  # the machine went down mid-row
        f.write(b"my-run,3,200,transformer,9,inf,iid,0.0")
    with pytest.raises(ParameterError):  # as it is, the table is torn
        read_table(path)
    with RunLogger(path, **GRID_ARGS) as log:
        assert path.read_bytes() == whole  # cut back to the last whole row on opening
        log.log(200, icl_acc=0.875)
    t = read_table(path)
    assert t["iteration"] == [0, 100, 200] and t["icl_acc"] == [0.5, 0.75, 0.875]


def test_a_torn_header_is_rewritten_and_a_foreign_file_is_never_touched(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run_id,seed,itera")  # killed while writing the header
    with RunLogger(path, **GRID_ARGS) as log:
        log.log(0, icl_acc=0.5)
    assert read_table(path)["icl_acc"] == [0.5]
    for text in ("seed,iteration,icl_acc\n0,0,0.5\n0,10,0.6", "not a table at all " * 40):
        other = tmp_path / "other.csv"
        other.write_text(text)
        with pytest.raises(ParameterError) as e:
            RunLogger(other, **GRID_ARGS)
        assert e.value.name == "path" and "RunLogger" in str(e.value)
        assert other.read_text() == text


def test_reopening_appends_in_the_files_column_order(tmp_path):
    path = tmp_path / "runs.csv"
    cols = GRID + ("c1", "icl_acc")  # an older or hand-made RunLogger header
    path.write_text(",".join(cols) + "\n" + "r,1,0,transformer,9,inf,iid,0.05,0.0,0.5,0.5\n")
    with RunLogger(path, **GRID_ARGS) as log:
        log.log(10, icl_acc=0.625, c1=0.25)
        with pytest.raises(ParameterError) as e:  # not a column of this file
            log.log(20, w=1.0)
        assert e.value.name == "w"
    t = read_table(path)
    assert list(t) == list(cols)
    assert t["c1"] == [0.5, 0.25] and t["icl_acc"] == [0.5, 0.625] and t["seed"] == ["1", "3"]


def test_a_killed_writer_leaves_a_readable_table(tmp_path):
    """SIGKILL mid-run, without close(): every logged row is whole and the table reads."""
    path = tmp_path / "runs.csv"
    code = textwrap.dedent(f"""
        import os, signal
        from icl_kinetics.validate import RunLogger
        log = RunLogger({str(path)!r}, run_id="r", seed=0, N=9, K=40, lr=0.1, flush_every=1000)
        for it in range(500):
            log.log(it, icl_acc=it / 500, c1=0.5 - it / 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    t = read_table(path)
    assert t["iteration"] == list(range(500)) and t["c1"][-1] == 0.5 - 499 / 1000
    with RunLogger(path, run_id="r", seed=0, N=9, K=40, lr=0.1) as log:  # resumes appending
        log.log(500, icl_acc=1.0)
    assert read_table(path)["iteration"][-1] == 500
    assert os.path.getsize(path) == len(path.read_bytes())
