#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install, lint, then every test (unit, CLI and
# end to end against a real xinference-local that the tests start on a free loopback port).
#   scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
venv="${XRERANK_VENV:-.venv}"
"$venv/bin/ruff" check xrerank tests scripts
"$venv/bin/ruff" format --check xrerank tests scripts
exec "$venv/bin/python" -m pytest "$@"
