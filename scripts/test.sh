#!/usr/bin/env bash
# The whole test suite: lint, then pytest against a real Temporal dev server, SQLite and
# the local PostgreSQL (127.0.0.1:5432, database `test`), which is started if it is down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
fi
# The repository tests must run on PostgreSQL here, not be skipped.
export KASAL_TEST_REQUIRE_POSTGRES="${KASAL_TEST_REQUIRE_POSTGRES:-1}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # the whole tree (pyproject.toml)
exec .venv/bin/pytest "$@"
