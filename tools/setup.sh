#!/usr/bin/env bash
# Idempotent setup for a fresh machine: a project-local virtualenv in .venv with the
# pinned CPU torch wheel, the package in editable mode and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch==2.13.0 is pinned explicitly: on CPU machines an unpinned torch pulls a CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import icl_kinetics, torch" 
