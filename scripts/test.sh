#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install, lint, then every test (unit, CLI and
# end to end against a real xinference-local that the tests start on a free loopback port).
# Two pytest processes, a test file to one process (its tests share servers and run in order).
#   scripts/test.sh [pytest args]           XRERANK_TEST_PROCESSES=0 for a single process
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
venv="${XRERANK_VENV:-.venv}"
"$venv/bin/ruff" check xrerank tests scripts
"$venv/bin/ruff" format --check xrerank tests scripts
exec "$venv/bin/python" -m pytest -n "${XRERANK_TEST_PROCESSES:-2}" --dist loadfile --no-loadscope-reorder "$@"
