"""The worked example docs/examples/own_model.py: a user's own
PyTorch transformer (nn.MultiheadAttention + MLP, not the engine), trained for seconds with
its own loop, measured with the probes through a forward hook, logged with RunLogger and
validated.  Every check the tables allow must run (a verdict, not a crash), every other
check must say why it did not, and the logged rows must be what the probes compute."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from icl_kinetics.validate import read_tables
from icl_kinetics.validate.requirements import REQUIREMENTS

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "own_model.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("own_model_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses and the process pool look the module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def tiny_run(example, tmp_path_factory):
    out = tmp_path_factory.mktemp("own")
    code = example.main(["--tiny", "--out", str(out), "--workers", "1"])
    return code, out


def test_tiny_example_trains_probes_logs_and_validates(tiny_run, example):
    code, out = tiny_run
    assert code == 0
    files = sorted((out / "tables").glob("*.csv"))
    assert len(files) == len(example.plan("tiny"))
    t = read_tables(files)
    # the transformer's rows carry the probes' columns, the MLP's its coefficients
    tf = [i for i, m in enumerate(t["model"]) if m == "transformer"]
    assert all(math.isfinite(t["w"][i]) and math.isfinite(t["beta"][i]) for i in tf)
    fin = [i for i in tf if math.isfinite(t["K"][i])]
    assert fin and all(0 <= t["c1"][i] <= 1 for i in fin)
    assert all(t["K"][i] == math.inf for i in tf if i not in fin)
    report = json.loads((out / "report" / "report.json").read_text())
    assert (out / "report" / "report.md").is_file()
    verdicts = report["verdicts"]
    assert verdicts, "no check ran"
    assert all(v["verdict"] in ("holds", "does not hold", "inconclusive", "skipped") for v in verdicts)
    for v in verdicts:  # a check that could not reach a verdict says what it lacks
        if v["verdict"] in ("inconclusive", "skipped"):
            assert v["reason"].strip() and v["reason"] != "-"
    # every check is accounted for: a verdict, or skipped with its reason
    named = {v["prediction"] for v in verdicts} | set(report["skipped"])
    assert set(REQUIREMENTS) <= named, set(REQUIREMENTS) - named
    for name in report["figures"].values():
        assert Path(name).is_file()


def test_logged_head_is_what_the_probe_computes(example):
    """The example's evaluate() logs head_from_attention of the recorded attention: recompute
    it from the module's own attention (average_attn_weights, a second forward pass without
    the hook) and compare (float32 forward passes: 1e-6)."""
    import torch

    from icl_kinetics.validate.probes import AttentionRecorder, head_from_attention

    torch.manual_seed(0)
    model = example.Transformer(width=16)
    task = example.Task(N=5, K=None)
    x, y, ids = example.sample(task, None, 64, torch.Generator().manual_seed(1))
    with AttentionRecorder(model.attn) as rec:
        logged = example.evaluate(model, rec, (x, y, ids), None)
    with torch.no_grad():
        h = model.norm(x)
        _, att = model.attn(h[:, -1:], h, h, need_weights=True)
        logit = model(x)
    att = att[:, 0]
    ref = head_from_attention(att[:, :-1].numpy(), (ids[:, :-1] == ids[:, -1:]).numpy(), y[:, :-1].numpy(),
                              y[:, -1].numpy(), logit.numpy(), attention_target=att[:, -1].numpy())
    assert logged["w"] == pytest.approx(ref["w"], rel=1e-6, abs=1e-9)
    assert logged["beta"] == pytest.approx(ref["beta"], rel=1e-6, abs=1e-9)
    assert logged["icl_acc"] == pytest.approx(float(((y[:, -1] * logit) > 0).float().mean()))
