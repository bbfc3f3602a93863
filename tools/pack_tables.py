"""Pack a preset's sweeps into the collected tables that a committed report is made from.

    python tools/pack_tables.py runs/small docs/results/validation_small/tables

For every sweep the validation report reads (``validate.report.SWEEPS_FOR``) found in
SWEEPS, the verified collected table (``SweepStore.collect``: damaged runs are left out,
and this script then fails) is written gzip-compressed to ``OUT/<sweep>.csv.gz``
(header mtime 0, so the same table gives the same bytes), and rung 1's
``rung1/summary.json`` and ``rung1/seeds.csv`` are copied.  ``icl-kinetics validate
--preset small --sweeps OUT --no-run`` then regenerates the report without training.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path


def main(argv=None) -> int:
    from icl_kinetics.io import atomic_write_bytes
    from icl_kinetics.simulate.sweeps import SweepStore
    from icl_kinetics.validate.report import preset_sweep_names

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sweeps, out = Path(argv[0]), Path(argv[1])
    names = preset_sweep_names()
    (out / "rung1").mkdir(parents=True, exist_ok=True)
    bad = 0
    for name in names:
        if not (sweeps / name / "sweep.json").is_file():
            print(f"{name}: not in {sweeps}, skipped", file=sys.stderr)
            continue
        store = SweepStore(sweeps / name)
        c = store.collect()
        if c.left_out or c.unfinished:
            print(f"{name}: {len(c.left_out)} damaged and {len(c.unfinished)} unfinished run(s); not packed",
                  file=sys.stderr)
            bad += 1
            continue
        data = gzip.compress(Path(c.path).read_bytes(), compresslevel=9, mtime=0)
        atomic_write_bytes(out / f"{name}.csv.gz", data)
        print(f"{name}: {c.rows} rows, {len(data) / 1024:.0f} KiB")
    for f in ("summary.json", "seeds.csv"):
        src = sweeps / "rung1" / f
        if src.is_file():
            atomic_write_bytes(out / "rung1" / f, src.read_bytes())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
