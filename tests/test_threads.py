"""``import icl_kinetics`` sets OMP_WAIT_POLICY=PASSIVE before torch loads, and never
overrides the user's setting (icl_kinetics/_threads.py).  Each case runs in a fresh
interpreter: libgomp reads the variable once, when torch loads it."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")

CHILD = """
import os, sys
import icl_kinetics
assert "torch" not in sys.modules  # the package itself imports nothing heavy
import torch
torch.set_num_threads(2)
torch.mm(torch.randn(64, 64), torch.randn(64, 64))
print(os.environ.get("OMP_WAIT_POLICY"))
"""

# libgomp's spin count, printed at load time with OMP_DISPLAY_ENV=VERBOSE
SPIN = {"PASSIVE": "0", "ACTIVE": "30000000000", None: "300000"}  # for each policy, GOMP_SPINCOUNT unset


def _run(**env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "ICL_KINETICS_OMP")}
    env.update(env_changes, OMP_DISPLAY_ENV="VERBOSE")
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    policy = r.stdout.strip().splitlines()[-1]
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", r.stderr)  # only where torch uses GNU OpenMP
    return (None if policy == "None" else policy), (spin.group(1) if spin else None)


@pytest.mark.parametrize("env,policy,spin", [
    ({}, "PASSIVE", SPIN["PASSIVE"]),                          # the default
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE", SPIN["ACTIVE"]),  # the user's setting is kept
    ({"OMP_WAIT_POLICY": "passive"}, "passive", SPIN["PASSIVE"]),
    ({"GOMP_SPINCOUNT": "10000"}, None, "10000"),              # ... and so is a spin count
    ({"ICL_KINETICS_OMP": "default"}, None, SPIN[None]),       # opt-out: libgomp's own default
])
def test_wait_policy_before_torch_loads(env, policy, spin):
    got, libgomp_spin = _run(**env)
    assert got == policy
    if libgomp_spin is not None:  # what libgomp itself took up
        assert libgomp_spin == spin
