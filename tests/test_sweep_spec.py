"""Sweep spec files (docs/sweeps.md, "Spec files"): the presets as spec files with the run ids
they always had, every key checked, and a custom spec sweep through the same store, resume,
status and collect as the presets (it survives SIGKILL and resume with an identical table and
goes straight into validate_runs).  Tiny shapes only."""

import builtins
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from icl_kinetics.errors import EnvironmentFailure, ParameterError  # noqa: E402
from icl_kinetics.simulate.engine import TrainConfig  # noqa: E402
from icl_kinetics.simulate.sweeps import grid  # noqa: E402
from icl_kinetics.simulate.sweeps.presets import PRESETS, SCALES, SPEC_DIR, preset  # noqa: E402
from icl_kinetics.simulate.sweeps.specfile import load_spec  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "preset_runs_before_specs.json"

TINY = """\
name = "tiny"
description = "a custom grid at a tiny shape"
seeds = 2
seeds_per_run = 1

[fixed]
model = "transformer"
N = 9
D = 12
width = 16
batch_size = 16
eval_size = 64
iterations = 100
eval_every = 50
lr = 0.1
early_stop = "none"
checkpoint_every = 50
workers = 1

[grid]
K = [20, inf]
wd_attn = [0, 1e-3]

[execution]
processes = 2
"""

TINY_BASE = TrainConfig(model="transformer", N=9, D=12, width=16, batch_size=16, eval_size=64, iterations=100,
                        eval_every=50, lr=0.1, early_stop=None, checkpoint_every=50, workers=1)


def _write(tmp_path, text, name="grid.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- the presets
def test_every_preset_keeps_its_run_ids_and_sweep_json():
    """Every preset at both scales gives the runs (ids, in order) and the whole sweep.json
    content that the computed presets gave before they became spec files (the fixture was
    written by that code, at the commit it names), on cpu and on cuda; at paper scale, whose
    finite-K runs now take the paper's per-seed label map, after setting the map back to shared."""
    import hashlib

    fx = json.loads(FIXTURE.read_text())["presets"]
    # presets newer than the fixture: their run ids are pinned in these tests instead
    newer = {"scale_ladder": "tests/test_ladder.py", "zipf_rung2": "tests/test_zipf.py"}
    assert set(fx) == {f"{n}/{s}" for n in PRESETS if n not in newer for s in SCALES}

    def digest(spec):
        return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()

    def as_shared(spec):  # the sweep with one shared label map (as every preset had when pinned)
        return replace(spec, runs=tuple(replace(r, config=replace(r.config, label_map="shared")) for r in spec.runs))

    for name in (n for n in PRESETS if n not in newer):
        for s in SCALES:
            sp, want = preset(name, s), fx[f"{name}/{s}"]
            if s == "paper":
                # paper scale takes the default, the paper's label map per seed: its finite-K runs
                # are new runs; with the map shared they are exactly the pinned ones
                assert all(r.config.label_map == "per-seed" for r in sp.runs), name
                finite = [r.id for r in sp.runs if r.config.K is not None]
                assert not set(finite) & set(want["run_ids"]), name
                sp = as_shared(sp)
            else:  # small scale pins the shared map its committed tables were measured with
                assert all(r.config.label_map == "shared" for r in sp.runs), name
            assert [r.id for r in sp.runs] == want["run_ids"], (name, s)
            assert digest(sp) == want["sweep_json_sha256"], (name, s)
            cuda = preset(name, s, device="cuda")
            assert digest(as_shared(cuda) if s == "paper" else cuda) == want["cuda_sweep_json_sha256"], (name, s)
            assert "spec" not in sp.to_dict()  # a preset folder keeps the sweep.json it always had


def test_the_spec_folder_holds_exactly_the_presets_and_each_runs_as_a_spec():
    assert sorted(p.stem for p in SPEC_DIR.glob("*.toml")) == sorted(PRESETS)
    for name in ("fig2bc", "kstar_slope", "figA6", "smoke"):
        for s in SCALES:
            a, b = preset(name, s), load_spec(PRESETS[name], s)
            assert [r.id for r in a.runs] == [r.id for r in b.runs] and b.source["scale"] == s
            assert [r.point for r in a.runs] == [r.point for r in b.runs]


# ----------------------------------------------------------------------------- the format
def test_a_spec_is_the_grid_it_declares(tmp_path):
    """Independent reference: the same grid built in Python with grid()."""
    spec = load_spec(_write(tmp_path, TINY))
    ref = grid("tiny", "custom", TINY_BASE, {"K": [20, None], "wd_attn": [0.0, 1e-3]}, seeds=2, seeds_per_run=1)
    assert [r.id for r in spec.runs] == [r.id for r in ref.runs] and len(spec.runs) == 8
    assert [r.point for r in spec.runs] == [r.point for r in ref.runs]
    assert spec.name == "tiny" and spec.scale == "custom" and spec.description.startswith("a custom")
    assert spec.source["execution"] == {"processes": 2} and spec.source["text"] == TINY
    # "inf" is inf, "none" is None, an integer in a float field is that float (the same run id)
    other = TINY.replace("K = [20, inf]", 'K = [20, "inf"]').replace("wd_attn = [0, 1e-3]", "wd_attn = [0.0, 0.001]")
    assert [r.id for r in load_spec(_write(tmp_path, other, "b.toml")).runs] == [r.id for r in spec.runs]
    # JSON with the same keys is the same sweep
    js = {"name": "tiny", "description": "a custom grid at a tiny shape", "seeds": 2, "seeds_per_run": 1,
          "fixed": {**{k: getattr(TINY_BASE, k) for k in ("model", "N", "D", "width", "batch_size", "eval_size",
                                                          "iterations", "eval_every", "lr", "checkpoint_every",
                                                          "workers")}, "early_stop": "none"},
          "grid": {"K": [20, "inf"], "wd_attn": [0, 1e-3]}}
    j = load_spec(_write(tmp_path, json.dumps(js), "g.json"))
    assert [r.id for r in j.runs] == [r.id for r in spec.runs]


def test_scales_axes_of_tables_and_seed_batches(tmp_path):
    text = TINY.replace("[grid]\nK = [20, inf]\nwd_attn = [0, 1e-3]\n", "[grid]\nK = [20]\n") + """
[scale.small]
seeds = 3
seeds_per_run = 2

[scale.big]
fixed = { iterations = 150 }
grid = { N_K = [{ N = 5, K = 20 }, { N = 9, K = 40 }] }
"""
    text = text.replace("N = 9\n", "", 1)
    p = _write(tmp_path, text)
    small, big = load_spec(p), load_spec(p, "big")  # the first declared scale by default
    assert small.scale == "small" and [(r.config.seed_offset, r.config.seeds) for r in small.runs] == [(0, 2), (2, 1)]
    ref = grid("tiny", "big", replace(TINY_BASE, iterations=150),
               {"x": [{"N": 5, "K": 20}, {"N": 9, "K": 40}]}, seeds=2, seeds_per_run=1)
    assert [r.id for r in big.runs] == [r.id for r in ref.runs] and len(big.runs) == 4
    with pytest.raises(ParameterError) as e:
        load_spec(p, "paper")
    assert e.value.name == "scale" and "small, big" in str(e.value)


@pytest.mark.parametrize("edit, name, words", [
    (("wd_attn = [0, 1e-3]", "wd_atn = [0, 1e-3]"), "key", ["'wd_atn'", "did you mean 'wd_attn'", "eval_every"]),
    (("lr = 0.1", "learning_rate = 0.1"), "key", ["'learning_rate'", "[fixed]", "wd_attn"]),
    (("[execution]", "[executon]"), "key", ["'executon'", "top level", "did you mean 'execution'"]),
    (("processes = 2", "procs = 2"), "key", ["'procs'", "[execution]", "processes"]),
    (("workers = 1", "workers = 1\nseed_offset = 3"), "key", ["'seed_offset'", "seeds_per_run"]),
    (("workers = 1", "workers = 1\nK = 40"), "key", ["'K'", "not both"]),
    (("K = [20, inf]", "K = []"), "[grid] of", ["non-empty list"]),
    (("K = [20, inf]", "K = [20, inf]\nNK = [{ K = 30 }]"), "[grid] of", ["one axis only"]),
    (("lr = 0.1", 'lr = "fast"'), "lr", ["not str"]),
    (("N = 9", "N = 9.5"), "N", []),
    (("early_stop = \"none\"", "early_stop = 2.0"), "early_stop", []),
    (("batch_size = 16", 'batch_size = "none"'), "batch_size", ["not None"]),
    (('name = "tiny"', 'name = "a b/c"'), "name", ["letters"]),
    (('name = "tiny"', ''), "name", []),
    (("seeds = 2", ""), "seeds", []),
    (("seeds = 2", "seeds = 0"), "seeds", []),
])
def test_bad_keys_and_values_are_refused_naming_the_key_and_the_file(tmp_path, edit, name, words):
    p = _write(tmp_path, TINY.replace(*edit, 1))
    with pytest.raises(ParameterError) as e:
        load_spec(p)
    msg = str(e.value)
    assert str(e.value.name).startswith(name), msg
    assert str(p) in msg, msg
    for w in words:
        assert w in msg, msg


def test_unreadable_files_and_python_without_tomllib(tmp_path, monkeypatch):
    for text, suffix, why in (("name = [", ".toml", "valid TOML"), ("{", ".json", "valid JSON"),
                              ("x", ".yaml", ".toml file")):
        with pytest.raises(ParameterError) as e:
            load_spec(_write(tmp_path, text, "s" + suffix))
        assert e.value.name == "spec" and why in str(e.value)
    with pytest.raises(ParameterError, match="existing"):
        load_spec(tmp_path / "missing.toml")
    # Python 3.10 without tomli: a one-line environment failure naming the way out; JSON still works
    real = builtins.__import__

    def no_toml(name, *a, **k):
        if name in ("tomllib", "tomli"):
            raise ModuleNotFoundError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_toml)
    with pytest.raises(EnvironmentFailure, match="tomli"):
        load_spec(_write(tmp_path, TINY))
    assert load_spec(_write(tmp_path, json.dumps({"name": "j", "seeds": 1, "fixed": {"N": 9}}), "j.json")).runs


# ----------------------------------------------------------------------------- the CLI
def test_cli_spec_run_status_collect_resume_and_refusals(tmp_path, cli):
    spec = _write(tmp_path, TINY.replace("K = [20, inf]", "K = [20]"))
    out = tmp_path / "s"
    code, o, err = cli(["sweep", "run", "--spec", str(spec), "--out", str(out), "--json"])
    assert code == 0, err
    r = json.loads(o)
    assert r["done"] == 4 and r["sweep"] == "tiny" and r["scale"] == "custom"
    rec = json.loads((out / "sweep.json").read_text())["spec"]
    assert rec["text"] == spec.read_text() and rec["grid"] == {"K": [20], "wd_attn": [0.0, 1e-3]}
    # status, collect and resume need only the folder
    spec.unlink()
    code, o, _ = cli(["sweep", "status", str(out), "--json"])
    assert code == 0 and json.loads(o)["done"] == 4
    code, o, _ = cli(["sweep", "resume", str(out), "--json"])
    assert code == 0 and json.loads(o)["done"] == 4
    code, o, _ = cli(["sweep", "collect", str(out), "--json"])
    c = json.loads(o)
    assert code == 0 and c["rows"] == 4 * 3 and os.path.isfile(c["table"])
    # resuming with another spec is refused, naming what differs
    other = _write(tmp_path, TINY.replace("K = [20, inf]", "K = [40]"), "other.toml")
    code, _, err = cli(["sweep", "run", "--spec", str(other), "--out", str(out)])
    assert code == 2 and "--out" in err and "not in it" in err and len(err.strip().splitlines()) == 1, err
    for argv, word in ((["sweep", "run"], "preset"), (["sweep", "run", "smoke", "--spec", str(other)], "not both"),
                       (["sweep", "run", "--spec", str(tmp_path / "nope.toml")], "spec"),
                       (["sweep", "resume", str(tmp_path)], "sweep folder")):
        code, _, err = cli(argv)
        assert code == 2 and word in err and len(err.strip().splitlines()) == 1, (argv, err)
    typo = _write(tmp_path, TINY.replace("wd_attn", "wd_atn"), "typo.toml")
    code, _, err = cli(["sweep", "run", "--spec", str(typo), "--out", str(tmp_path / "t")])
    assert code == 2 and "wd_atn" in err and str(typo) in err and "wd_attn" in err
    assert not (tmp_path / "t" / "sweep.json").exists()  # refused before anything was written


KILL_SPEC = """\
name = "killme"
seeds = 2
seeds_per_run = 2

[fixed]
model = "transformer"
D = 12
width = 16
batch_size = 16
eval_size = 64
iterations = 1200
eval_every = 100
lr = 0.05
early_stop = "none"
checkpoint_every = 100
workers = 1

[grid]
N = [5, 9]
K = [20, 60, inf]

[execution]
processes = 2
"""
RUN = "import sys; from icl_kinetics.cli import main; sys.exit(main(sys.argv[1:]))"


def _done(d):
    n = 0
    for p in (d / "runs").glob("*/status.json") if (d / "runs").exists() else ():
        try:
            n += json.loads(p.read_text())["status"] == "done"
        except (OSError, ValueError):  # pragma: no cover - files are renamed into place
            pass
    return n


def test_custom_spec_sweep_survives_sigkill_and_goes_into_validate(tmp_path):
    """A spec sweep SIGKILLed part-way (the driver; its workers die with it) and resumed from
    its folder alone runs every run exactly once: the unfinished ones are named (exit 3),
    the finished ones are not executed again, and the collected table equals an
    uninterrupted sweep's byte for byte, with no row missing or doubled; it goes straight
    into validate_runs."""
    from icl_kinetics.cli import _unfinished
    from icl_kinetics.simulate.sweeps import SweepStore

    spec = _write(tmp_path, KILL_SPEC)
    ref, d = tmp_path / "ref", tmp_path / "killed"
    cmd = [sys.executable, "-c", RUN, "sweep", "run", "--spec", str(spec), "--quiet", "--out"]
    subprocess.run(cmd + [str(ref)], check=True, timeout=600, capture_output=True)
    proc = subprocess.Popen(cmd + [str(d)], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and _done(d) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the driver; its workers die with it (PDEATHSIG)
    proc.wait()
    time.sleep(1.0)
    before = SweepStore(d).statuses()
    done_before = {k: v for k, v in before.items() if v["status"] == "done"}
    assert 2 <= len(done_before) < 6  # killed part-way
    metrics_before = {k: (d / "runs" / k / "metrics.csv").read_bytes() for k in done_before}
    summ = SweepStore(d).summary()  # every unfinished run is named, and the verdict is exit 3
    assert set(summ["pending_runs"]) == set(before) - set(done_before)
    assert _unfinished(summ)["exit_code"] == 3
    st = subprocess.run([sys.executable, "-c", RUN, "sweep", "status", str(d)], capture_output=True, text=True)
    assert st.returncode == 0 and "pending" in st.stdout
    # resume from the folder alone (the spec file is recorded there), then collect
    spec.rename(tmp_path / "gone.toml")
    subprocess.run([sys.executable, "-c", RUN, "sweep", "resume", str(d), "--quiet"], check=True, timeout=600,
                   capture_output=True)
    after = SweepStore(d).statuses()
    assert len(after) == 6 and all(v["status"] == "done" for v in after.values())
    for k, v in done_before.items():  # finished runs were not executed again
        assert after[k]["started"] == v["started"]
        assert (d / "runs" / k / "metrics.csv").read_bytes() == metrics_before[k]
    for x in (ref, d):
        r = subprocess.run([sys.executable, "-c", RUN, "sweep", "collect", str(x), "--json"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    a, b = (ref / "collected.csv").read_bytes(), (d / "collected.csv").read_bytes()
    assert a == b
    with open(d / "collected.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = {(r["run_id"], r["seed"], r["iteration"]) for r in rows}
    assert len(rows) == len(keys) == 6 * 2 * 13 and {r["sweep"] for r in rows} == {"killme"}
    from icl_kinetics.validate import validate_runs

    verdicts, skipped = validate_runs(str(d / "collected.csv"))
    assert verdicts or skipped


def test_the_example_in_docs_sweeps_md_is_the_sweep_it_describes(tmp_path):
    """docs/sweeps.md's complete example file: 4 x 3 points x 8 seeds in runs of 4 (24 runs) at
    small, 12 at quick; the same runs as grid() declares in Python."""
    import re

    doc = (Path(__file__).parent.parent / "docs" / "sweeps.md").read_text()
    text = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    p = _write(tmp_path, text, "my_grid.toml")
    small, quick = load_spec(p), load_spec(p, "quick")
    base = TrainConfig(model="transformer", N=19, width=128, batch_size=128, iterations=8000, eval_every=100,
                       eval_size=1000, early_stop=0.99, checkpoint_every=2000, workers=1)
    axes = {"K": [1024, 2048, 4096, None], "lr": [0.02, 0.05, 0.1]}
    assert small.scale == "small" and len(small.runs) == 24
    assert [r.id for r in small.runs] == [r.id for r in grid("lr_scan", "small", base, axes, 8, 4).runs]
    assert [r.id for r in quick.runs] == [r.id for r in grid("lr_scan", "quick", replace(base, iterations=2000),
                                                            axes, 2, 2).runs]
    assert len(quick.runs) == 12 and quick.source["execution"] == {"executor": "local", "processes": 2}
