"""Pack sweeps into the collected tables that a committed report is made from.

    python tools/pack_tables.py SWEEPS OUT [--sweep NAME ...] [--partial]

For every sweep folder ``SWEEPS/<name>`` (default: the sweeps the validation report reads,
``validate.report.SWEEPS_FOR``; ``--sweep NAME``, repeatable, names others, such as
``scale_ladder`` or ``zipf_rung2``), the verified collected table (``SweepStore.collect``) is
written gzip-compressed to ``OUT/<name>.csv.gz`` (header mtime 0, so the same table gives
the same bytes), beside ``OUT/<name>.timing.json``: run_id -> seconds, started and finished
of every finished run whose time is known (what ``sweep run --from-table`` reads back, so
the CPU time of a sweep carried over machines is not lost).  A sweep with a damaged run is
never packed, and this script then fails.  A sweep with unfinished runs is packed only with
``--partial``: its finished runs alone (unfinished runs' rows are left out), for a sweep
that goes on in a later session (``sweep run ... --from-table OUT/<name>.csv.gz``).
Rung 1's ``rung1/summary.json`` and ``rung1/seeds.csv`` are copied.
``icl-kinetics validate --preset small --sweeps OUT --no-run`` then regenerates the report
without training.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
from pathlib import Path


def pack(store, partial: bool = False) -> tuple[bytes, dict, str, int]:
    """(gzip bytes of the collected table, run_id -> timing of every finished run whose time
    is known, '' or why it cannot be packed, the number of finished runs packed)."""
    c = store.collect()
    if c.left_out:
        return b"", {}, f"{len(c.left_out)} damaged run(s) (e.g. {next(iter(c.left_out.values()))})", 0
    if c.unfinished and not partial:
        return b"", {}, f"{len(c.unfinished)} unfinished run(s) (--partial packs the finished ones)", 0
    text = Path(c.path).read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines()))
    col, rid_col = rows[0].index("status"), rows[0].index("run_id")
    if c.unfinished:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")  # csv.DictWriter's, as collect writes
        w.writerows([rows[0]] + [r for r in rows[1:] if r[col] == "done"])
        text = buf.getvalue()
    packed = {r[rid_col] for r in rows[1:] if r[col] == "done"}  # a run that ends meanwhile is not in it
    keys = ("seconds", "started", "finished")
    timing = {rid: {k: st[k] for k in keys} for rid, st in store.statuses().items()
              if rid in packed and st["status"] == "done" and all(isinstance(st.get(k), (int, float)) for k in keys)}
    done = c.runs - len(c.unfinished)
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0), timing, "", done


def main(argv=None) -> int:
    from icl_kinetics.io import atomic_write_bytes
    from icl_kinetics.simulate.sweeps import SweepStore
    from icl_kinetics.validate.report import preset_sweep_names

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage=__doc__.split("\n\n")[1].strip())
    p.add_argument("sweeps")
    p.add_argument("out")
    p.add_argument("--sweep", action="append", default=None)
    p.add_argument("--partial", action="store_true")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    sweeps, out = Path(a.sweeps), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bad = 0
    for name in a.sweep or preset_sweep_names():
        if not (sweeps / name / "sweep.json").is_file():
            print(f"{name}: not in {sweeps}, skipped", file=sys.stderr)
            bad += bool(a.sweep)  # a sweep asked for by name must be there
            continue
        store = SweepStore(sweeps / name)
        data, timing, why, done = pack(store, a.partial)
        if why:
            print(f"{name}: {why}; not packed", file=sys.stderr)
            bad += 1
            continue
        atomic_write_bytes(out / f"{name}.csv.gz", data)
        atomic_write_bytes(out / f"{name}.timing.json", (json.dumps(timing, indent=1, sort_keys=True) + "\n").encode())
        print(f"{name}: {done} of {len(store.runs)} runs, {len(data) / 1024:.0f} KiB; run times of {len(timing)}")
    if not a.sweep:
        (out / "rung1").mkdir(parents=True, exist_ok=True)
        for f in ("summary.json", "seeds.csv"):
            src = sweeps / "rung1" / f
            if src.is_file():
                atomic_write_bytes(out / "rung1" / f, src.read_bytes())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
