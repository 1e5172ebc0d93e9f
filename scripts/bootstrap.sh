#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtualenv with Kasal and its test tools.
# Idempotent: a second run only checks. Needs python3 (>= 3.11) and the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi
stamp=".venv/.kasal-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # Bytecode compiled now: with PYTHONDONTWRITEBYTECODE set, importing CrewAI from
    # source every time costs seconds per process.
    .venv/bin/uv pip install --quiet --python .venv/bin/python --compile-bytecode -e '.[dev]'
    touch "$stamp"
fi
# Kasal's own modules too (installed editable, so uv did not): the workflow sandbox imports
# the workflow modules afresh for every workflow run, compiling them each time without it.
.venv/bin/python -m compileall -q kasal activities workflows api cli >/dev/null
