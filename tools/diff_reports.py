"""Compare two validation reports (report.json) verdict for verdict.

    python tools/diff_reports.py OLD/report.json NEW/report.json [--rtol 1e-9]

Prints every verdict that differs (prediction, rung, verdict), then every number in the
verdicts' fields and details that differs by more than ``--rtol`` (relative), every
string that differs, and every key present in one report only.  Figure paths are
ignored.  Exit status 0 when the verdicts are the same, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def _walk(a, b, path, out, rtol):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(("key", f"{path}.{k}", "only in " + ("new" if k not in a else "old"), ""))
            else:
                _walk(a[k], b[k], f"{path}.{k}", out, rtol)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(("length", path, len(a), len(b)))
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{path}[{i}]", out, rtol)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not (math.isfinite(a) and math.isfinite(b)):  # NaN or inf on either side: only the same is same
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                out.append(("number", path, a, b))
        elif a != b and abs(a - b) > rtol * max(abs(a), abs(b)):
            out.append(("number", path, a, b))
    elif a != b:
        out.append(("value", path, a, b))


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rtol", type=float, default=1e-9)
    a = ap.parse_args(argv)
    old, new = (_load(p) for p in (a.old, a.new))
    key = lambda v: (v["prediction"], v["rung"])  # noqa: E731
    vo, vn = {key(v): v for v in old["verdicts"]}, {key(v): v for v in new["verdicts"]}
    same = True
    for k in sorted(set(vo) | set(vn)):
        if k not in vo or k not in vn:
            print(f"VERDICT only in {'new' if k not in vo else 'old'}: {k}")
            same = False
        elif vo[k]["verdict"] != vn[k]["verdict"]:
            print(f"VERDICT differs: {k}: {vo[k]['verdict']} -> {vn[k]['verdict']}")
            same = False
    print(f"{len(vo)} verdicts old, {len(vn)} new: " + ("same verdicts" if same else "VERDICTS DIFFER"))
    for k in sorted(set(vo) & set(vn)):
        out = []
        _walk({f: vo[k][f] for f in vo[k] if f != "verdict"}, {f: vn[k][f] for f in vn[k] if f != "verdict"},
              "", out, a.rtol)
        out = [o for o in out if "plot" not in o[1] and "figure" not in o[1]]
        if out:
            print(f"\n{k[0]} | {k[1]}:")
            for kind, path, x, y in out:
                finite = kind == "number" and math.isfinite(x) and math.isfinite(y)
                rel = f"  (rel {abs(x - y) / max(abs(x), abs(y)):.2e})" if finite else ""
                print(f"  {kind:6s} {path}: {x!r} -> {y!r}{rel}")
    if old.get("skipped") != new.get("skipped"):
        print(f"\nskipped differs: {old.get('skipped')!r} -> {new.get('skipped')!r}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
