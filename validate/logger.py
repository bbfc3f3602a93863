"""A logger that writes the tidy-table schema from anyone's training loop.

:class:`RunLogger` appends one row per evaluation to a CSV file, with the run's grid
columns (``run_id``, ``seed``, ``model``, ``N``, ``K``, ``contexts``, ``lr``,
``wd_attn``) on every row, each value checked as it is logged against the schema's rule
for its column (:mod:`icl_kinetics.validate.schema`, docs/validation.md).  The file is
what ``icl-kinetics validate --runs FILE`` and :func:`icl_kinetics.validate.read_table`
read; ``icl-kinetics train`` (``metrics.csv``) and ``sweep collect`` write the same
schema.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np

from icl_kinetics.errors import ParameterError, describe, positive_int
from icl_kinetics.validate import schema

__all__ = ["RunLogger"]

#: the columns every row carries, in file order, before the metrics
GRID = ("run_id", "seed", "iteration", "model", "N", "K", "contexts", "lr", "wd_attn")


def metric_columns() -> tuple:
    """The metrics :meth:`RunLogger.log` accepts: every numeric schema column that is not
    a grid column (``icl_acc``, ``iwl_acc``, the losses, ``c1``, ``c2``, ``c3``, ``w``,
    ``beta``, ...), in the schema's order."""
    return tuple(c.name for c in schema.COLUMNS.values() if c.kind != "str" and c.name not in GRID)


def _check_row(row: dict, given: dict) -> None:
    """Read ``row`` (column -> the text the CSV will hold) back through the schema's typed
    checks (:func:`icl_kinetics.validate.schema.read_table`, the reader of the file); a
    refused cell raises a ParameterError naming its column, with the value as given
    (``given``: column -> the caller's value)."""
    try:
        schema.read_table([row])
    except ParameterError as e:
        allowed = re.sub(r"\s*\(in the list of rows[^()]*\)$", "", str(e.allowed))
        raise ParameterError(e.name, given.get(e.name, e.value), allowed) from None


def _plain_text(name: str, value, what: str) -> str:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, numbers.Integral)):
        raise ParameterError(name, value, f"{what}: a string or an integer")
    t = str(int(value)) if isinstance(value, numbers.Integral) else value
    if not t.strip() or any(not ch.isprintable() for ch in t):
        raise ParameterError(name, value, f"{what}: non-empty, printable, on one line")
    return t


def _number_text(name: str, value, allow_missing: bool) -> str:
    """A number as the text the CSV holds (``repr`` of its float: exact round trip); ''
    for None / NaN where ``allow_missing``."""
    if value is None and allow_missing:
        return ""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (bool, np.bool_)):
        if getattr(value, "ndim", 0) not in (0, None) and np.size(value) != 1:
            raise ParameterError(name, describe(value), "one number (got an array of shape "
                                 f"{tuple(np.shape(value))})")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ParameterError(name, value, "a number" + (", None or NaN for 'not given'" if allow_missing else ""))
    x = float(value)
    if math.isnan(x):
        if allow_missing:
            return ""
        raise ParameterError(name, value, "a number, not NaN")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return repr(x)


class RunLogger:
    """Append tidy-schema rows to a CSV file, checked as they are logged.

    One logger writes the rows of one run (one ``run_id`` and ``seed``); each
    :meth:`log` call appends one row: the grid columns given here, the ``iteration``, and
    the metrics given (the others empty, "not given").  Several runs go to several files
    (or, one after another, to one file); ``icl-kinetics validate --runs A.csv B.csv``
    and :func:`icl_kinetics.validate.read_tables` stack them.

    Crash safety: the file is opened with ``O_APPEND`` and each row is written with one
    ``os.write`` of the whole line, so a killed process leaves whole rows; the file is
    fsynced every ``flush_every`` rows and at :meth:`close`.  Opening an existing file
    appends to it: its header must be a RunLogger header (the grid columns, then metric
    columns; rows are written in that file's column order), and a torn last line (no
    trailing newline: the machine went down mid-write) is cut off first.  A file whose
    header is not one is never modified.  One logger at a time per file.

    Args (all but ``path`` by keyword):
        path: the CSV file (``.csv``); its folder is created.
        run_id: the run's name (groups rows into runs).
        seed: the seed's identifier (an integer or a string).
        N: context tokens per sequence, NOT counting the target (an integer >= 1).
        K: training items (>= 2), or None / ``math.inf`` for fresh items every sequence
            (the paper's code's K = -1 is refused: pass None).
        lr: SGD learning rate, 1/iteration (> 0; with another optimizer, the step size
            that converts iterations to learning-rate time lr * t).
        model: ``"transformer"`` (default), or ``"mlp"`` for standalone memorization runs
            (the memorization law reads those), or any other name of an ICL model.
        contexts: ``"iid"`` (default) or ``"equalized"``.
        wd_attn: weight decay on the in-context pathway (>= 0; at or below
            ``schema.WD_ATTN_FLOOR`` it counts as none).
        flush_every: fsync after this many rows (an integer >= 1; default 100).

    Raises:
        ParameterError: a grid value outside its schema rule (named by the argument), a
            path that cannot be written or does not end in ``.csv``, an existing file
            whose header is not a RunLogger header; in :meth:`log`, an unknown metric
            (the message lists the allowed ones), a value outside its column's rule
            (named by the metric), an iteration not above the previous one.
    """

    def __init__(self, path, *, run_id, seed, N, K, lr, model: str = "transformer", contexts: str = "iid",
                 wd_attn: float = 0.0, flush_every: int = 100):
        from icl_kinetics.io import check_output_file

        self.path = Path(check_output_file("path", path, suffixes=(".csv",)))
        self.flush_every = positive_int("flush_every", flush_every)
        if isinstance(N, float) and N.is_integer():
            N = int(N)
        if K is not None and isinstance(K, float) and K.is_integer():
            K = int(K)
        k_text = "inf" if K is None or (isinstance(K, float) and K == math.inf) else _number_text("K", K, False)
        if k_text.strip() == "-1":
            raise ParameterError("K", K, "an integer >= 2, or None / inf for fresh items every sequence (the "
                                 "paper's code's K = -1 means K = inf: pass None)")
        grid = {
            "run_id": _plain_text("run_id", run_id, "a run identifier"),
            "seed": _plain_text("seed", seed, "a seed identifier"),
            "model": _plain_text("model", model, "a model name ('mlp' marks standalone-MLP runs)"),
            "N": _number_text("N", N, False),
            "K": k_text,
            "contexts": contexts if isinstance(contexts, str) else _plain_text("contexts", contexts, "'iid' or "
                                                                                 "'equalized'"),
            "lr": _number_text("lr", lr, False),
            "wd_attn": _number_text("wd_attn", wd_attn, False),
        }
        if not isinstance(N, numbers.Integral) or isinstance(N, (bool, np.bool_)):
            raise ParameterError("N", N, "an integer >= 1 (context tokens, not counting the target)")
        _check_row(dict(grid, iteration="0"), {"run_id": run_id, "seed": seed, "model": model, "N": N, "K": K,
                                               "contexts": contexts, "lr": lr, "wd_attn": wd_attn})
        self._grid = grid
        self._metrics = metric_columns()
        self._last = None
        self._since_sync = 0
        self._fd = None
        self.header = self._open()

    # -- the file ------------------------------------------------------------------------
    def _open(self) -> tuple:
        """Open for appending: a new file gets its header; an existing one is checked and
        its torn last line, if any, cut off."""
        mine = GRID + self._metrics
        line = _csv_line(mine)
        p = self.path
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            header = _first_line(fd, size)
            if header is None:  # empty, or a torn header: ours only if it is a prefix of our header
                head = os.pread(fd, min(size, len(line)), 0).decode("utf-8", "replace")
                if size > len(line) or not line.startswith(head):
                    raise ParameterError("path", str(p), "a new CSV file or one written by RunLogger (this file's "
                                         "first line does not end: it is not a RunLogger table)")
                os.ftruncate(fd, 0)
                _write_all(fd, line.encode())
                os.fsync(fd)
                _sync_dir(p.parent)
                columns = mine
            else:
                columns = tuple(c.strip() for c in next(csv.reader([header])))
                extra = [c for c in columns if c not in GRID and c not in self._metrics]
                if columns[:len(GRID)] != GRID or extra:
                    raise ParameterError("path", str(p), f"a new CSV file or one written by RunLogger (its header "
                                         f"{describe(','.join(columns), 120)} is not the grid columns "
                                         f"{','.join(GRID)} followed by metric columns)")
                _cut_torn_tail(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return columns

    def log(self, iteration, **metrics) -> None:
        """Append one row at ``iteration`` (SGD steps, an integer >= 0, above the previous
        logged iteration of this logger) with the given metrics (by schema name: e.g.
        ``icl_acc=0.93, c1=0.21, w=3.1, beta=2.4``; None or NaN for "not given").

        Raises:
            ParameterError: an unknown metric name (the allowed ones are listed), a value
                outside its column's rule, named by the metric (e.g. ``icl_acc=93.0``: a
                fraction, not a percentage), no metric given, a bad iteration, a closed
                logger.
        """
        if self._fd is None:
            raise ParameterError("logger", str(self.path), "an open RunLogger (this one is closed)")
        unknown = [k for k in metrics if k not in self.header[len(GRID):]]
        if unknown:
            allowed = self.header[len(GRID):]
            raise ParameterError(unknown[0], metrics[unknown[0]], "a metric of the schema: one of "
                                 + ", ".join(allowed) + (" (the grid columns are given to RunLogger itself)"
                                                         if unknown[0] in GRID else ""))
        if not metrics:
            raise ParameterError("metrics", {}, "at least one metric, e.g. log(iteration, icl_acc=0.9)")
        if hasattr(iteration, "item") and not isinstance(iteration, (bool, np.bool_)) and np.size(iteration) == 1:
            iteration = iteration.item()  # a numpy scalar or a 0-d tensor
        if isinstance(iteration, float) and iteration.is_integer():
            iteration = int(iteration)
        if isinstance(iteration, (bool, np.bool_)) or not isinstance(iteration, numbers.Integral) or iteration < 0:
            raise ParameterError("iteration", iteration, "an integer >= 0 (SGD steps)")
        if self._last is not None and iteration <= self._last:
            raise ParameterError("iteration", iteration, f"above the previous logged iteration, {self._last}")
        row = dict(self._grid, iteration=str(int(iteration)))
        for k, v in metrics.items():
            row[k] = _number_text(k, v, True)
        _check_row(row, metrics)
        _write_all(self._fd, _csv_line([row.get(c, "") for c in self.header]).encode())
        self._last = int(iteration)
        self._since_sync += 1
        if self._since_sync >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """fsync the rows written so far to disk."""
        if self._fd is not None:
            os.fsync(self._fd)
            self._since_sync = 0

    def close(self) -> None:
        """fsync and close the file (a second call does nothing)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):  # a forgotten close still closes the descriptor
        try:
            self.close()
        except Exception:
            pass


def _csv_line(fields) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` the whole of ``data`` (one call for a line, unless the OS writes less)."""
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _first_line(fd: int, size: int) -> str | None:
    """The file's first line (without its newline), or None if it has no newline."""
    pos, chunk = 0, b""
    while pos < size:
        part = os.pread(fd, 1 << 16, pos)
        if not part:
            break
        chunk += part
        i = chunk.find(b"\n")
        if i >= 0:
            return chunk[:i].decode("utf-8", "replace").rstrip("\r").lstrip("\ufeff")
        pos += len(part)
    return None


def _cut_torn_tail(fd: int, size: int) -> None:
    """Cut the bytes after the file's last newline (a row torn by a crash), if any."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        part = os.pread(fd, end - start, start)
        i = part.rfind(b"\n")
        if i >= 0:
            os.ftruncate(fd, start + i + 1)
            os.fsync(fd)
            return
        end = start
    os.ftruncate(fd, 0)  # pragma: no cover - the header line ends, so a newline exists


def _sync_dir(d: Path) -> None:
    """fsync a folder, so a new file's name survives a crash (where the OS allows it)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
