#!/usr/bin/env bash
# The main job on the embedded default: the example crew, durably, with live progress.
# Starts the Temporal dev server (SQLite under .kasal/, Web UI on :8233) and a worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/kasal run examples/research_crew.yaml "$@"
