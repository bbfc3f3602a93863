"""A sweep carried over machines: ``sweep run --from-table`` adopts the finished runs of a
collected table after verifying them, trains only the rest, and the collected table at the
end is the one a single uninterrupted run gives (``SweepStore.adopt``)."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

pytest.importorskip("torch")

from icl_kinetics.errors import ParameterError  # noqa: E402
from icl_kinetics.simulate.sweeps import SweepStore, run_sweep  # noqa: E402
from icl_kinetics.simulate.sweeps.specfile import load_spec  # noqa: E402

SPEC = """\
name = "adopt"
seeds = 2
seeds_per_run = 1

[fixed]
model = "transformer"
N = 5
D = 8
width = 8
batch_size = 8
eval_size = 32
iterations = 40
eval_every = 20
lr = 0.1
early_stop = "none"
checkpoint_every = 20
workers = 1

[grid]
K = [20, inf]
wd_attn = [0, 1e-3]
"""


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One sweep trained from start to end, and its collected table (gzip, as committed)."""
    d = tmp_path_factory.mktemp("adopt")
    (d / "spec.toml").write_text(SPEC)
    spec = load_spec(d / "spec.toml")
    run_sweep(spec, d / "whole", processes=1, progress=False)
    c = SweepStore(d / "whole").collect()
    assert not c.left_out and not c.unfinished and len(c.included) == 8
    table = d / "adopt.csv.gz"
    table.write_bytes(gzip.compress((d / "whole" / "collected.csv").read_bytes(), mtime=0))
    return d, spec, table


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_table(path, rows):
    with gzip.open(path, "wt", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_every_finished_run_is_adopted_and_nothing_trains(done, tmp_path):
    d, spec, table = done
    store = SweepStore.create(tmp_path / "s", spec)
    got = store.adopt(table)
    assert len(got["adopted"]) == 8 and not got["refused"] and not got["kept"] and got["not_in_sweep"] == 0
    summ = run_sweep(spec, tmp_path / "s", processes=1, progress=False)
    assert summ["done"] == 8 and summ["pending"] == 0
    for rid in store.runs:  # adopted runs record where they came from; nothing was trained here
        st = store.read_status(rid)
        assert st["status"] == "done" and st["adopted_from"]["table"] == str(table)
        assert not (store.run_dir(rid) / "checkpoint.pt").exists()
    assert _rows(store.collect().path) == _rows(d / "whole" / "collected.csv")
    # adopting again keeps what is there
    assert store.adopt(table)["kept"] == list(store.runs)


def test_damaged_or_unfinished_rows_are_refused_and_those_runs_train_again(done, tmp_path):
    d, spec, table = done
    rows = _rows(d / "whole" / "collected.csv")
    ids = list(dict.fromkeys(r["run_id"] for r in rows))
    cut = [i for i, r in enumerate(rows) if r["run_id"] == ids[0]][1]
    bad = rows[:cut] + rows[cut + 1:]  # a row of run 0 missing (a damaged copy)
    for r in bad:
        if r["run_id"] == ids[1]:
            r["status"] = "running"  # run 1 was unfinished when the table was made
        if r["run_id"] == ids[2]:
            r["lr"] = "0.2"  # run 2's rows claim another lr than its id
        if r["run_id"] == ids[3] and r["seed"] != "0":
            r["seed"] = "0"  # run 3 holds the wrong seed
    t = tmp_path / "bad.csv.gz"
    _write_table(t, bad)
    store = SweepStore.create(tmp_path / "s", spec)
    got = store.adopt(t)
    assert sorted(got["refused"]) == sorted(ids[:4]) and len(got["adopted"]) == 4
    assert "jumps from iteration" in got["refused"][ids[0]]
    assert "unfinished" in got["refused"][ids[1]]
    assert "lr" in got["refused"][ids[2]] and "0.2" in got["refused"][ids[2]]
    assert "seed" in got["refused"][ids[3]]
    assert [r.id for r in store.pending()] == [i for i in store.runs if i in ids[:4]]
    run_sweep(spec, tmp_path / "s", processes=1, progress=False)
    assert _rows(store.collect().path) == _rows(d / "whole" / "collected.csv")  # re-trained: the same numbers


def test_a_seed_cut_short_without_stopping_early_is_refused(done, tmp_path):
    d, spec, table = done
    rows = _rows(d / "whole" / "collected.csv")
    rid = rows[0]["run_id"]
    last = max(int(r["iteration"]) for r in rows if r["run_id"] == rid)
    short = [r for r in rows if not (r["run_id"] == rid and int(r["iteration"]) == last)]  # the tail lost
    t = tmp_path / "short.csv.gz"
    _write_table(t, short)
    got = SweepStore.create(tmp_path / "s", spec).adopt(t)
    assert rid in got["refused"] and "before the cap" in got["refused"][rid]


def test_rows_after_a_seeds_end_are_refused_and_adopted_files_equal_the_engines(done, tmp_path):
    d, spec, table = done
    rows = _rows(d / "whole" / "collected.csv")
    rid = rows[0]["run_id"]
    last = [r for r in rows if r["run_id"] == rid][-1]
    t = tmp_path / "dup.csv.gz"
    _write_table(t, rows + [{**last, "icl_acc": "0.5"}])  # a second row at the cap
    store = SweepStore.create(tmp_path / "s", spec)
    got = store.adopt(t)
    assert "after its end" in got["refused"][rid] and len(got["adopted"]) == 7
    # an adopted run's metrics.csv is byte for byte the one the engine wrote
    for a in got["adopted"]:
        assert (store.run_dir(a) / "metrics.csv").read_bytes() == \
            (d / "whole" / "runs" / a / "metrics.csv").read_bytes()


def test_a_table_of_another_sweep_is_refused(done, tmp_path):
    d, spec, table = done
    rows = [{**r, "run_id": "0" * 16} for r in _rows(d / "whole" / "collected.csv")]
    t = tmp_path / "other.csv.gz"
    _write_table(t, rows)
    with pytest.raises(ParameterError, match="none of its 1 runs"):
        SweepStore.create(tmp_path / "s", spec).adopt(t)


def test_hostile_timing_values_are_ignored(done, tmp_path):
    d, spec, table = done
    rid = next(iter(SweepStore(d / "whole").runs))
    tj = tmp_path / "t.json"
    tj.write_text('{"%s": {"seconds": 1e400, "started": -5, "finished": 10%s}}' % (rid, "0" * 400))
    store = SweepStore.create(tmp_path / "s", spec)
    assert rid in store.adopt(table, tj)["adopted"]
    st = store.read_status(rid)
    assert st["status"] == "done" and not {"seconds", "started", "finished"} & set(st)


@pytest.mark.parametrize("content", [b"\x1f\x8b not gzip", b"a,b\n1,2\n", b"\xff\xfe\x00",
                                     b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage-deflate"])
def test_an_unreadable_table_is_a_clear_error(done, tmp_path, cli, content):
    d, spec, table = done
    t = tmp_path / "t.csv.gz"
    t.write_bytes(content)
    with pytest.raises(ParameterError, match="--from-table"):
        SweepStore.create(tmp_path / "s", spec).adopt(t)
    code, out, err = cli(["sweep", "run", "--spec", str(d / "spec.toml"), "--out", str(tmp_path / "c"),
                          "--from-table", str(t), "--processes", "1", "--quiet"])
    assert code == 2 and "--from-table" in err and "Traceback" not in err


def test_the_cli_adopts_with_run_times_and_says_so(done, tmp_path, cli):
    d, spec, table = done
    rid = next(iter(SweepStore(d / "whole").runs))
    (d / "adopt.timing.json").write_text(json.dumps({rid: {"seconds": 12.5, "started": 1.0, "finished": 13.5},
                                                     "zzz": "not a run"}))
    try:
        code, out, err = cli(["sweep", "run", "--spec", str(d / "spec.toml"), "--out", str(tmp_path / "c"),
                              "--from-table", str(table), "--processes", "1", "--json"])
    finally:
        (d / "adopt.timing.json").unlink()
    assert code == 0, err
    res = json.loads(out)
    assert res["adopted"][str(table)]["adopted"] == 8 and res["done"] == 8
    assert res["run_seconds"] == 12.5  # the adopted run's recorded time; the others' is unknown
    code, out, err = cli(["sweep", "run", "--spec", str(d / "spec.toml"), "--out", str(tmp_path / "c"),
                          "--from-table", str(table), "--processes", "1"])
    assert code == 0 and "adopted 0 finished run(s)" in out and "8 already had a status" in out


def test_a_partial_sweep_packs_adopts_and_finishes_as_one_run_would(done, tmp_path):
    """The multi-session path: pack the finished runs of an unfinished sweep (tools/pack_tables.py
    --partial), adopt them on a new machine, train the rest: the same collected table and the
    run times carried over."""
    import importlib.util
    import shutil
    from pathlib import Path

    d, spec, table = done
    spec_ = importlib.util.spec_from_file_location("pack_tables", Path(__file__).parents[1] / "tools" / "pack_tables.py")
    pt = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(pt)
    shutil.copytree(d / "whole", tmp_path / "sweeps" / "adopt")
    store = SweepStore(tmp_path / "sweeps" / "adopt")
    rid = list(store.runs)[-1]
    shutil.rmtree(store.run_dir(rid))  # one run not trained yet
    assert pt.main([str(tmp_path / "sweeps"), str(tmp_path / "t"), "--sweep", "adopt"]) == 1  # not without --partial
    assert not (tmp_path / "t" / "adopt.csv.gz").exists()
    assert pt.main([str(tmp_path / "sweeps"), str(tmp_path / "t"), "--sweep", "adopt", "--partial"]) == 0
    timing = json.loads((tmp_path / "t" / "adopt.timing.json").read_text())
    assert len(timing) == 7 and rid not in timing
    assert all(v["seconds"] == store.read_status(k)["seconds"] for k, v in timing.items())
    new = SweepStore.create(tmp_path / "new", spec)
    got = new.adopt(tmp_path / "t" / "adopt.csv.gz", tmp_path / "t" / "adopt.timing.json")
    assert len(got["adopted"]) == 7 and rid not in got["adopted"]
    assert [r.id for r in new.pending()] == [rid]
    run_sweep(spec, tmp_path / "new", processes=1, progress=False)
    assert _rows(new.collect().path) == _rows(d / "whole" / "collected.csv")
    assert new.summary()["run_seconds"] > sum(v["seconds"] for v in timing.values())  # plus the run trained here


def test_only_trains_the_runs_asked_for_and_exits_on_them(done, tmp_path, cli):
    d, spec, table = done
    base = ["sweep", "run", "--spec", str(d / "spec.toml"), "--out", str(tmp_path / "c"), "--processes", "1",
            "--json"]
    code, out, err = cli(base + ["--only", "K=inf", "--only", "wd-attn=0.001"])
    assert code == 0, err
    res = json.loads(out)
    assert res["only"]["runs"] == 2 and res["only"]["done"] == 2 and res["done"] == 2 and res["pending"] == 6
    store = SweepStore(tmp_path / "c")
    done_ids = {r for r, st in store.statuses().items() if st["status"] == "done"}
    assert done_ids == {r.id for r in spec.runs if r.config.K is None and r.config.wd_attn == 1e-3}
    # the runs trained alone equal the whole sweep's
    whole = {(r["run_id"], r["seed"], r["iteration"]): r for r in _rows(d / "whole" / "collected.csv")}
    for r in _rows(store.collect().path):
        if r["run_id"] in done_ids:
            assert r == whole[(r["run_id"], r["seed"], r["iteration"])]
    for bad in (["--only", "K"], ["--only", "nosuch=1"], ["--only", "K=7"]):
        code, out, err = cli(base + bad)
        assert code == 2 and "only" in err and "Traceback" not in err, bad


def test_logged_every_log_every_rows_must_all_be_there(done, tmp_path):
    """With log_every the rows are the logging iterations (plus acquisitions and stops): a run
    holding them all is adopted, one missing a logging iteration is not."""
    d, spec, table = done
    (tmp_path / "spec.toml").write_text(SPEC.replace("workers = 1", "workers = 1\nlog_every = 40"))
    spec2 = load_spec(tmp_path / "spec.toml")
    ids = {(r.config.K, r.config.wd_attn): r.id for r in spec.runs if r.config.seed_offset == 0}
    ids2 = {(r.config.K, r.config.wd_attn): r.id for r in spec2.runs if r.config.seed_offset == 0}
    key = next(iter(ids))
    rows = [{**r, "run_id": ids2[key]} for r in _rows(d / "whole" / "collected.csv") if r["run_id"] == ids[key]]
    good = [r for r in rows if r["iteration"] != "20"]  # 0 and 40: the logging iterations
    bad = [r for r in good if r["iteration"] != "0"]
    for name, rs, ok in (("good", good, True), ("bad", bad, False)):
        t = tmp_path / f"{name}.csv.gz"
        _write_table(t, rs)
        got = SweepStore.create(tmp_path / name, spec2).adopt(t)
        assert (ids2[key] in got["adopted"]) == ok, got
    assert "jumps from iteration None to 40" in got["refused"][ids2[key]]


def test_the_report_sums_the_run_times_a_packed_table_carries(tmp_path):
    from icl_kinetics.validate.report import sweep_compute

    assert sweep_compute(tmp_path, "smoke") is None  # neither a folder nor a timing file
    (tmp_path / "smoke.timing.json").write_text(json.dumps(
        {"a": {"seconds": 1800.0}, "b": {"seconds": 3600}, "c": {"seconds": float("nan")}, "d": {"seconds": -1},
         "e": "x", "f": {"seconds": True}}).replace("NaN", "NaN"))
    got = sweep_compute(tmp_path, "smoke")
    assert got["timed_runs"] == 2 and got["cpu_core_hours"] == 1.5 and got["runs"] == 6
    (tmp_path / "smoke.timing.json").write_bytes(b"\xff\x00")
    assert sweep_compute(tmp_path, "smoke")["unreadable"] is True
