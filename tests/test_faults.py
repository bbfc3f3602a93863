"""Fault injection: results folders are untrusted input.

Each test damages a finished (or running) sweep the way a colleague's copy, a damaged
disk or the OOM killer would, then checks that (1) ``sweep status`` names the problem,
(2) no code from a data file runs, (3) ``sweep run`` recovers, and (4) the collected
table equals an uninterrupted run's byte for byte.  ``sweep run`` exits 3 while
anything is unfinished.  Tiny shapes only (the ``smoke`` preset: 6 runs, seconds).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

from icl_kinetics.cli import main  # noqa: E402
from icl_kinetics.simulate.sweeps import SweepStore  # noqa: E402


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted smoke sweep, collected."""
    d = tmp_path_factory.mktemp("faults") / "ref"
    assert main(["sweep", "run", "smoke", "--out", str(d), "--quiet", "--json"]) == 0
    assert main(["sweep", "collect", str(d), "--json"]) == 0
    return d


def _copy(reference, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(reference, d)
    (d / "collected.csv").unlink()
    return d


def _run_ids(d):
    return sorted(p.name for p in (d / "runs").iterdir())


def _status(cli, d):
    code, out, err = cli(["sweep", "status", str(d), "--json"])
    assert code == 0, err
    return json.loads(out)


def _recover_and_compare(cli, d, reference):
    code, out, err = cli(["sweep", "run", "smoke", "--out", str(d), "--quiet", "--json"])
    assert code == 0, err
    code, out, err = cli(["sweep", "collect", str(d), "--json"])
    assert code == 0, err
    assert (d / "collected.csv").read_bytes() == (reference / "collected.csv").read_bytes()
    return json.loads(out)


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(path, marker):
    torch.save({"config_hash": _Evil(marker), "groups": []}, path)


def test_the_crafted_checkpoint_really_runs_code_when_unpickled(tmp_path):
    """Positive control: the payload works, so its absence below means it was never run."""
    ck, marker = tmp_path / "checkpoint.pt", tmp_path / "code_ran"
    _evil_checkpoint(ck, marker)
    torch.load(ck, weights_only=False)
    assert marker.exists()


def _flip_payload_byte(ck):
    """Damage one byte of the state inside the envelope, keeping the envelope's digest."""
    env = torch.load(ck, weights_only=True)
    env["payload"] = env["payload"].clone()
    env["payload"][len(env["payload"]) // 2] ^= 0x01
    torch.save(env, ck)


@pytest.mark.parametrize("kind", ["pickle_with_code", "random_bytes", "cut_in_half", "flipped_byte"])
def test_bad_checkpoint_is_set_aside_never_run_and_the_run_restarts(kind, reference, tmp_path, cli):
    d = _copy(reference, tmp_path)
    rid = _run_ids(d)[0]
    rd = d / "runs" / rid
    (rd / "status.json").unlink()  # make the run pending, so its checkpoint is read
    (rd / "metrics.csv").unlink()
    marker = tmp_path / "code_ran"
    ck = rd / "checkpoint.pt"
    if kind == "pickle_with_code":
        _evil_checkpoint(ck, marker)
    elif kind == "random_bytes":
        ck.write_bytes(os.urandom(4096))
    elif kind == "cut_in_half":
        ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    else:  # one flipped byte inside the payload: torch itself would load it without a word
        _flip_payload_byte(ck)
    st = _status(cli, d)
    assert st["pending"] == 1 and rid in st["checkpoint_problems"]  # status names the problem
    assert str(ck) in st["checkpoint_problems"][rid]
    if kind == "flipped_byte":
        assert "SHA-256" in st["checkpoint_problems"][rid]
    _recover_and_compare(cli, d, reference)
    assert not marker.exists()  # the pickle's code never ran
    aside = list(rd.glob("checkpoint.pt.rejected-*"))
    assert len(aside) == 1  # set aside, not deleted
    st = json.loads((rd / "status.json").read_text())
    assert st["status"] == "done" and any("set aside" in n and "checkpoint.pt" in n for n in st["notes"])
    if kind == "flipped_byte":
        assert any("SHA-256" in n for n in st["notes"])


def test_a_failed_runs_metrics_are_verified_too(reference, tmp_path, cli):
    d = _copy(reference, tmp_path)
    rid = _run_ids(d)[3]
    p, m = d / "runs" / rid / "status.json", d / "runs" / rid / "metrics.csv"
    st = json.loads(p.read_text())
    p.write_text(json.dumps({**st, "status": "failed", "reason": "seed 0: non-finite training loss at iteration 9"}))
    m.write_text("".join(m.read_text().splitlines(keepends=True)[:-2]))
    s = _status(cli, d)
    assert s["damaged"] == 1 and "metrics.csv" in s["damaged_runs"][rid]


@pytest.mark.parametrize("cut", ["middle_rows", "last_rows"])
def test_runs_finished_by_the_previous_version_are_checked_for_missing_rows(cut, reference, tmp_path, cli):
    d = _copy(reference, tmp_path)
    for p in (d / "runs").glob("*/status.json"):  # as written before the metrics record existed
        st = json.loads(p.read_text())
        p.write_text(json.dumps({k: v for k, v in st.items() if k not in ("metrics", "notes")}))
    assert _status(cli, d)["done"] == 6  # healthy old runs stay done
    rid = _run_ids(d)[4]
    m = d / "runs" / rid / "metrics.csv"
    lines = m.read_text().splitlines(keepends=True)
    m.write_text("".join(lines[:3] + lines[5:]) if cut == "middle_rows" else "".join(lines[:-1]))
    s = _status(cli, d)
    assert s["damaged"] == 1 and "rows are missing" in s["damaged_runs"][rid]
    _recover_and_compare(cli, d, reference)


def test_a_size_refused_for_memory_in_a_sweep_stays_pending(reference, tmp_path, monkeypatch):
    import icl_kinetics.resources as res
    from icl_kinetics.simulate.sweeps import execute_run

    d = _copy(reference, tmp_path)
    rid = _run_ids(d)[0]
    (d / "runs" / rid / "status.json").unlink()
    monkeypatch.setattr(res, "available_memory", lambda: 1024)  # a machine that is full right now
    st = execute_run(str(d), rid)
    assert st["status"] == "pending" and "memory" in st["reason"]
    assert SweepStore(d).read_status(rid)["status"] == "pending"  # not failed for good


def test_train_out_with_a_crafted_checkpoint_warns_in_one_line_and_runs_no_code(tmp_path, cli):
    out, marker = tmp_path / "t", tmp_path / "code_ran"
    out.mkdir()
    _evil_checkpoint(out / "checkpoint.pt", marker)
    argv = ["train", "--model", "transformer", "--K", "20", "--N", "9", "--D", "12", "--width", "16",
            "--batch-size", "16", "--eval-size", "64", "--iterations", "60", "--eval-every", "20", "--seeds", "1",
            "--out", str(out), "--json", "--quiet"]
    code, outp, err = cli(argv)
    assert code == 0, err
    assert not marker.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "checkpoint.pt" in lines[0] and "set aside" in lines[0]
    assert json.loads(outp)["notes"] and list(out.glob("checkpoint.pt.rejected-*"))


@pytest.mark.parametrize("kind", ["metrics_cut_mid_line", "metrics_rows_dropped", "metrics_deleted",
                                  "metrics_value_changed"])
def test_damaged_metrics_of_a_finished_run_are_named_left_out_and_rerun(kind, reference, tmp_path, cli):
    d = _copy(reference, tmp_path)
    rid = _run_ids(d)[1]
    m = d / "runs" / rid / "metrics.csv"
    text = m.read_text()
    if kind == "metrics_cut_mid_line":
        m.write_text(text[: len(text) - 25])
    elif kind == "metrics_rows_dropped":
        lines = text.splitlines(keepends=True)
        m.write_text("".join(lines[:-2]))
    elif kind == "metrics_deleted":
        m.unlink()
    else:  # same shape, one digit changed: only the recorded hash can tell
        i = text.rindex(",") - 1
        m.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1:])
    st = _status(cli, d)
    assert st["damaged"] == 1 and rid in st["damaged_runs"] and "metrics.csv" in st["damaged_runs"][rid]
    code, out, err = cli(["sweep", "collect", str(d), "--json"])
    assert code == 3 and rid in err and len(err.strip().splitlines()) == 1  # never silently kept or dropped
    c = json.loads(out)
    assert rid in c["left_out"] and c["included"] == 5
    _recover_and_compare(cli, d, reference)


@pytest.mark.parametrize("content", ['{"status": "done", "reason": "', '[1, 2', '"done"',
                                     '{"status": "finished"}', "\x00\xff\xfe binary"])
def test_unreadable_or_unknown_status_affects_only_that_run(content, reference, tmp_path, cli):
    d = _copy(reference, tmp_path)
    rid = _run_ids(d)[2]
    p = d / "runs" / rid / "status.json"
    p.write_bytes(content.encode("latin-1"))
    st = _status(cli, d)  # one bad file does not stop the command
    assert st["done"] == 5 and st["damaged"] == 1 and str(p) in st["damaged_runs"][rid]
    _recover_and_compare(cli, d, reference)


def test_sweep_run_exits_3_with_a_one_line_summary_while_a_run_is_failed(reference, tmp_path, cli):
    d = _copy(reference, tmp_path)
    rid = _run_ids(d)[0]
    p = d / "runs" / rid / "status.json"
    p.write_text(json.dumps({"status": "failed", "reason": "seed 0: non-finite training loss at iteration 7"}))
    code, out, err = cli(["sweep", "run", "smoke", "--out", str(d), "--quiet", "--json"])
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1 and "1 failed" in lines[0] and "--retry-failed" in lines[0]
    assert json.loads(out)["failure"]["exit_code"] == 3
    code, _, err = cli(["sweep", "run", "smoke", "--out", str(d), "--quiet", "--retry-failed"])
    assert code == 0, err


def test_slurm_executor_is_refused_without_slurm(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    code, _, err = cli(["sweep", "run", "smoke", "--out", str(tmp_path / "s"), "--executor", "slurm"])
    assert code == 2 and "executor" in err and "--executor local" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


WORKER_KILL_SCRIPT = """
import json, sys
from icl_kinetics.cli import _unfinished
from icl_kinetics.simulate.engine import TrainConfig
from icl_kinetics.simulate.sweeps import grid, run_sweep
base = TrainConfig(model="transformer", N=9, D=12, width=16, batch_size=16, eval_size=64, iterations=1200,
                   eval_every=100, lr=0.05, early_stop=None, checkpoint_every=100, workers=1)
spec = grid("wk", "small", base, {"K": [20, 40, 60, 80]}, seeds=2, seeds_per_run=2)
res = run_sweep(spec, sys.argv[1], progress=False, processes=2)
print(json.dumps(res))
f = _unfinished(res)
sys.exit(f["exit_code"] if f else 0)
"""


def test_sigkill_of_one_pool_worker_is_reported_and_the_sweep_goes_on(tmp_path):
    ref, d = tmp_path / "ref", tmp_path / "killed"
    subprocess.run([sys.executable, "-c", WORKER_KILL_SCRIPT, str(ref)], check=True, timeout=600,
                   capture_output=True)
    proc = subprocess.Popen([sys.executable, "-c", WORKER_KILL_SCRIPT, str(d)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.time() + 300
    while victim is None and time.time() < deadline:  # the first run some worker is executing
        for p in sorted((d / "runs").glob("*/status.json")) if (d / "runs").exists() else []:
            try:
                st = json.loads(p.read_text())
            except (json.JSONDecodeError, OSError):
                continue
            if st.get("status") == "running" and (p.parent / "checkpoint.pt").exists():
                victim = (p.parent.name, st["pid"])
                break
        time.sleep(0.02)
    assert victim is not None
    os.kill(victim[1], signal.SIGKILL)  # as the OOM killer would
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 3  # something is unfinished: never exit 0
    res = json.loads(out)
    assert res["done"] == 3 and res["pending"] == 1  # the other running and queued runs went on
    reason = res["pending_runs"][victim[0]]
    assert "SIGKILL" in reason and "out-of-memory" in reason
    assert victim[0] in err and "SIGKILL" in err
    again = subprocess.run([sys.executable, "-c", WORKER_KILL_SCRIPT, str(d)], timeout=600, capture_output=True)
    assert again.returncode == 0, again.stderr
    a, b = SweepStore(ref).collect(), SweepStore(d).collect()
    assert a.ok and b.ok and open(a.path, "rb").read() == open(b.path, "rb").read()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_is_one_line_and_the_sweep_resumes(reference, tmp_path, how):
    """Ctrl-C (SIGINT to the process group) and SIGTERM (to the driver alone, as `kill PID`
    or a scheduler sends it) both stop a sweep with one line on stderr and exit 130 / 143,
    leave no worker behind, and the same command resumes it to the uninterrupted table."""
    import shutil

    from icl_kinetics.cli import TERMINATED

    d = tmp_path / "c"
    cmd = [sys.executable, "-m", "icl_kinetics.cli", "sweep", "run", "smoke", "--out", str(d), "--quiet"]
    # the smoke sweep trains in about a second once its workers start: on a loaded machine this
    # process may not wake up before it ends, and then the signal came too late to test anything.
    # The first try signals once a worker trains, later ones as soon as the driver has made the
    # folder, while its workers start (a sweep that ignored the signal is caught either way: it
    # exits 0 only if it finished)
    for attempt in range(4):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        marker = "runs/*/status.json" if attempt == 0 else "sweep.json"
        deadline = time.time() + 120
        while time.time() < deadline and not list(d.glob(marker)):
            time.sleep(0.01)
        if how == "ctrl-c":
            os.killpg(p.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group, workers included
        else:
            os.kill(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=120)
        finished = p.returncode == 0 and all(st["status"] == "done" for st in SweepStore(d).statuses().values())
        if not finished:
            break
        shutil.rmtree(d)
    code, line = (130, "interrupted") if how == "ctrl-c" else (143, TERMINATED)
    assert p.returncode == code and err.strip().splitlines() == [f"icl-kinetics sweep: {line}"], (attempt, err)
    pids = {st["pid"] for st in SweepStore(d).statuses().values() if st.get("pid")}
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(q) for q in pids):
        time.sleep(0.1)
    assert not [q for q in pids if _alive(q)]  # no worker left training
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert main(["sweep", "collect", str(d), "--json"]) == 0
    assert (d / "collected.csv").read_bytes() == (reference / "collected.csv").read_bytes()


ONE_WORKER_SCRIPT = WORKER_KILL_SCRIPT.replace("iterations=1200", "iterations=300").replace(
    '{"K": [20, 40, 60, 80]}', '{"K": [20, 40, 60]}').replace("processes=2", "processes=1")


def test_a_worker_killed_between_runs_never_hangs_the_driver(tmp_path):
    """With one worker, kill it right after its first run: the driver replaces it and goes
    on (the run it may have started is named), and never waits on an empty pool."""
    d = tmp_path / "one"
    proc = subprocess.Popen([sys.executable, "-c", ONE_WORKER_SCRIPT, str(d)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid, deadline = None, time.time() + 300
    while pid is None and time.time() < deadline:
        for p in (d / "runs").glob("*/status.json") if (d / "runs").exists() else []:
            try:
                st = json.loads(p.read_text())
            except (json.JSONDecodeError, OSError):
                continue
            if st.get("status") == "done":
                pid = st["pid"]
        time.sleep(0.01)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)  # a hang fails here
    res = json.loads(out)
    assert proc.returncode in (0, 3) and res["done"] + res["pending"] == 3 and res["done"] >= 1
    again = subprocess.run([sys.executable, "-c", ONE_WORKER_SCRIPT, str(d)], timeout=600, capture_output=True)
    assert again.returncode == 0, again.stderr
