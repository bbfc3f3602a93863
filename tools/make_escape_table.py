"""Regenerate theory/escape_table.npz: T*(gamma) of V'' + gamma V' + 1/V = 0, V(0)=1, V'(0)=0.

The table is checked against fresh integrations (and those against a time-domain
solve_ivp reference) by tests/test_closed_form.py.  Run: python tools/make_escape_table.py
"""
from pathlib import Path

import numpy as np

from icl_kinetics.theory.closed_form import _scaled_escape

from scipy.interpolate import CubicSpline

gamma = np.logspace(-4, 4, 321)
T = _scaled_escape(gamma, 0.0, np.inf)
# slopes d log T / d log gamma for cubic Hermite interpolation (from a dense spline)
dense = np.logspace(-4, 4, 2561)
spline = CubicSpline(np.log(dense), np.log(_scaled_escape(dense, 0.0, np.inf)))
dlogT = spline(np.log(gamma), 1)
out = Path(__file__).resolve().parents[1] / "theory" / "escape_table.npz"
np.savez(out, gamma=gamma, T=T, dlogT=dlogT)
print(f"wrote {out} ({gamma.size} points)")
